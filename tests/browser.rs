//! Real browser tests: headless Chromium (Debian's package) driven through playwright-core. The demo feed
//! page follows posts, psql, clears and a gateway restart (screenshots go to `target/browser/`); over HTTPS
//! one page holds more EventSources than HTTP/1.1's six per host; `live()` collections keep their keys,
//! outlive their tokens, and run as the README writes them, on the gateway's origin and across origins.

mod common;

use std::sync::Arc;

use common::{artifact_dir, Browser, Gateway, TestDb};
use pgsse::auth::{Auth, Jwt, DEFAULT_COOKIE};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

const SECRET: &str = "a test secret that is long enough";
fn feed_has(text: &str) -> String {
    format!("[...document.querySelectorAll('#feed li')].some(li => li.textContent.includes({}))", json!(text))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_feed_follows_posts_psql_clear_and_a_gateway_restart() {
    let Some(mut browser) = Browser::start() else { return };
    let TestDb { url, app, .. } = TestDb::new().await;
    pgsse::demo::install(&url).await.unwrap();
    let mut config = common::gateway_config(&url);
    config.server.demo = true;
    config.streams.retry = std::time::Duration::from_millis(300);
    let gw = Gateway::start_with(config.clone()).await;
    let addr = gw.addr;
    app.execute("INSERT INTO messages (body) VALUES ('already there')", &[]).await.unwrap();

    // The page says what it is, asks for no favicon, and shows "No messages yet" only after the snapshot.
    let page = common::get(addr, "/", &[]).await.unwrap().body;
    assert!(page.contains("appear here live") && page.contains(r#"rel="icon" href="data:,""#), "{page}");
    assert!(page.contains(r#"id="empty" class="empty" hidden"#), "{page}");
    browser.goto("feed", &format!("http://{addr}/")).await;
    browser.wait("feed", "document.getElementById('status').dataset.state === 'open'").await;
    browser.wait("feed", &feed_has("already there")).await;

    browser.goto("send", &format!("http://{addr}/send")).await;
    browser.run(json!({"op": "fill", "page": "send", "selector": "#body", "text": "hello from the send page"})).await;
    browser.run(json!({"op": "click", "page": "send", "selector": "#submit"})).await;
    browser.wait("send", "document.getElementById('result').textContent.startsWith('Sent')").await;
    browser.wait("feed", &feed_has("hello from the send page")).await;

    app.execute("INSERT INTO messages (body) VALUES ('hello from psql')", &[]).await.unwrap();
    browser.wait("feed", &feed_has("hello from psql")).await;
    let order = browser.eval("feed", "[...document.querySelectorAll('#feed li')].map(li => li.dataset.id)").await;
    assert_eq!(order, json!(["3", "2", "1"]), "newest first, each row once");

    let cleared = common::call(addr, "DELETE", "/messages", &[], bytes::Bytes::new()).await.unwrap();
    assert_eq!(cleared.status, 200);
    browser.wait("feed", "document.querySelectorAll('#feed li').length === 0").await;
    // The demo sends a TRUNCATE as `clear` too, so a page never keeps rows that no longer exist.
    app.execute("INSERT INTO messages (body) VALUES ('truncated soon')", &[]).await.unwrap();
    browser.wait("feed", &feed_has("truncated soon")).await;
    app.execute("TRUNCATE messages", &[]).await.unwrap();
    browser.wait("feed", "document.querySelectorAll('#feed li').length === 0").await;

    // A marker that a reload would lose: the rows written while the gateway is down must arrive in this page.
    browser.eval("feed", "window.__sameDocument = true").await;
    app.execute("INSERT INTO messages (body) VALUES ('before the stop')", &[]).await.unwrap();
    browser.wait("feed", &feed_has("before the stop")).await;
    gw.shutdown().await;
    browser.wait("feed", "document.getElementById('status').dataset.state === 'reconnecting'").await;
    for body in ["written while down 1", "written while down 2"] {
        app.execute("INSERT INTO messages (body) VALUES ($1)", &[&body]).await.unwrap();
    }
    let _gw = Gateway::start_on(addr, config).await;
    browser.wait("feed", &feed_has("written while down 2")).await;
    browser.wait("feed", "document.getElementById('status').dataset.state === 'open'").await;
    assert_eq!(browser.eval("feed", "window.__sameDocument === true").await, true, "the page was not reloaded");
    let shown =
        browser.eval("feed", "[...document.querySelectorAll('#feed li')].map(li => li.firstChild.textContent)").await;
    assert_eq!(shown, json!(["written while down 2", "written while down 1", "before the stop"]));

    for page in ["feed", "send"] {
        let shot = artifact_dir().join(format!("demo-{page}.png"));
        browser.run(json!({"op": "screenshot", "page": page, "path": shot})).await;
        assert!(std::fs::metadata(&shot).unwrap().len() > 1000, "screenshot written to {}", shot.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_https_one_page_holds_more_than_six_streams_on_http2() {
    const STREAMS: usize = 10;
    let Some(mut browser) = Browser::start() else { return };
    let TestDb { url, admin, app } = TestDb::new().await;
    common::messages_table(&admin, "").await;
    let dir = artifact_dir().join(format!("tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = common::self_signed(&dir);
    let mut config = common::gateway_config(&url);
    config.tls = Some(pgsse::tls::server_config(&cert, &key).unwrap());
    let gw = Gateway::spawn(config).await;

    browser.goto("tls", &format!("https://{}/healthz", gw.addr)).await;
    browser.wait("tls", "fetch('/healthz').then(r => r.ok)").await;
    let protocol = browser.eval("tls", "performance.getEntriesByType('navigation')[0].nextHopProtocol").await;
    assert_eq!(protocol, "h2", "ALPN chose HTTP/2");
    let open = format!(
        "window.got = []; window.sources = [...Array({STREAMS}).keys()].map(i => {{
            const source = new EventSource('/messages/events');
            window.got[i] = [];
            source.addEventListener('insert', e => window.got[i].push(JSON.parse(e.data).body));
            return source;
        }}); true"
    );
    browser.eval("tls", &open).await;
    // Over HTTP/1.1 Chromium would leave every stream past the sixth waiting for a connection.
    browser.wait("tls", "window.sources.every(s => s.readyState === EventSource.OPEN)").await;
    app.execute("INSERT INTO messages (body) VALUES ('to every stream')", &[]).await.unwrap();
    browser.wait("tls", "window.got.every(g => g.length === 1 && g[0] === 'to every stream')").await;
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `live()` keys rows by their key's JSON text: ids past 2^53 and keys that are objects each keep their row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_collection_keeps_ids_past_2_53_and_object_keys_apart() {
    let Some(mut browser) = Browser::start() else { return };
    let TestDb { url, admin, .. } = TestDb::new().await;
    admin
        .batch_execute(
            "CREATE TABLE big (id bigint PRIMARY KEY, ref jsonb NOT NULL, body text NOT NULL);
             SELECT pgsse.publish_table('big', operations => array['insert', 'update', 'delete']);
             INSERT INTO big VALUES (9007199254740992, '{\"k\": 1}', 'even'), (9007199254740993, '{\"k\": 2}', 'odd');",
        )
        .await
        .unwrap();
    let gw = Gateway::start(&url).await;
    browser.goto("page", &format!("http://{}/healthz", gw.addr)).await;
    browser
        .eval(
            "page",
            r#"import("/pgsse.js").then(({ live }) => {
                 window.byId = live("/big/events?snapshot=true", { key: "id" });
                 window.byRef = live("/big/events?snapshot=true", { key: "ref" });
               })"#,
        )
        .await;
    browser.wait("page", "window.byId?.ready && window.byRef?.ready && window.byId.size === 2").await;
    assert_eq!(browser.eval("page", "[...window.byRef.keys()].sort()").await, json!([r#"{"k":1}"#, r#"{"k":2}"#]));
    admin.batch_execute("UPDATE big SET body = 'odd, changed' WHERE id = 9007199254740993").await.unwrap();
    browser.wait("page", r#"window.byId.get("9007199254740993")?.body === "odd, changed""#).await;
    admin.batch_execute("DELETE FROM big WHERE id = 9007199254740992").await.unwrap();
    browser.wait("page", "window.byId.size === 1 && window.byRef.size === 1").await;
    let left =
        browser.eval("page", "[...window.byId.values()].map(r => r.body).concat([...window.byRef.keys()])").await;
    assert_eq!(left, json!(["odd, changed", r#"{"k":2}"#]), "the other row of each pair is still there");
}

/// A collection whose URL function hands out short-lived tokens stays live across three expiries and a
/// refused (expired) token: each reconnect resumes after the last event seen, so rows written while it
/// was away arrive, and no second snapshot is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_collection_stays_live_across_three_token_expiries() {
    let Some(mut browser) = Browser::start() else { return };
    let TestDb { url, app, .. } = TestDb::messages("").await;
    app.execute("INSERT INTO messages (body) VALUES ('before')", &[]).await.unwrap();
    let gw = Gateway::start_configured(&url, |c| {
        c.auth = Arc::new(Auth::Jwt(Box::new(Jwt::hs256(SECRET.as_bytes(), DEFAULT_COOKIE))));
    })
    .await;
    browser.goto("page", &format!("http://{}/healthz", gw.addr)).await;
    let page = r#"(async () => {
        const { live } = await import("/pgsse.js");
        const bytes = (text) => new TextEncoder().encode(text);
        const key = await crypto.subtle.importKey("raw", bytes(SECRET), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
        const b64 = (buf) => btoa(String.fromCharCode(...new Uint8Array(buf))).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
        const part = (value) => b64(bytes(JSON.stringify(value)));
        const mint = async (exp) => {
          const body = `${part({ alg: "HS256", typ: "JWT" })}.${part({ exp, pgsse: { subscribe: ["messages"] } })}`;
          return `${body}.${b64(await crypto.subtle.sign("HMAC", key, bytes(body)))}`;
        };
        Object.assign(window, { calls: 0, errors: [], snapshots: 0 });
        window.rows = live(async () => {
          window.calls += 1;
          const now = Math.floor(Date.now() / 1000);
          // The third connection is handed a token that has already expired: the gateway answers 401.
          const exp = window.calls === 3 ? now - 60 : now + 2;
          return `/messages/events?snapshot=true&access_token=${await mint(exp)}`;
        }, {
          key: "id",
          onError: (error) => window.errors.push(error),
          onChange: (_, change) => { if (change.type === "snapshot") window.snapshots += 1; },
        });
      })()"#
        .replace("SECRET", &format!("{SECRET:?}"));
    browser.eval("page", &page).await;
    browser.wait("page", "window.rows.ready && window.rows.size === 1").await;
    for expiry in 1..=3 {
        // Written while the collection reconnects (or just after): it must arrive either way.
        browser.wait("page", "window.rows.status === 'reconnecting'").await;
        app.execute("INSERT INTO messages (body) VALUES ($1)", &[&format!("during {expiry}")]).await.unwrap();
        browser.wait("page", &format!("window.rows.status === 'open' && window.rows.size === {}", expiry + 1)).await;
    }
    app.execute("INSERT INTO messages (body) VALUES ('after')", &[]).await.unwrap();
    browser.wait("page", "window.rows.size === 5").await;
    let seen = browser
        .eval(
            "page",
            "({ bodies: [...window.rows.values()].map(r => r.body), calls: window.calls, snapshots: window.snapshots,
                errors: window.errors.map(e => [e.status, e.message, e.retryIn > 0]) })",
        )
        .await;
    assert_eq!(seen["bodies"], json!(["before", "during 1", "during 2", "during 3", "after"]));
    assert_eq!(seen["snapshots"], json!(1), "every reconnect resumed: {seen}");
    assert!(seen["calls"].as_u64().unwrap() >= 5, "a fresh URL for every connection: {seen}");
    let errors = seen["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "only the expired token was refused: {seen}");
    assert_eq!(errors[0][0], json!(401));
    assert!(errors[0][1].as_str().unwrap().contains("expired"), "{seen}");
    assert_eq!(errors[0][2], json!(true), "and it retried");
}

/// On a stream of several channels, `live()` keys rows by channel and key: orders#2 and customers#2 are
/// two rows, and a TRUNCATE of one table empties only its channel's rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_collection_of_several_channels_keys_by_channel() {
    let Some(mut browser) = Browser::start() else { return };
    let TestDb { url, admin, .. } = TestDb::new().await;
    admin
        .batch_execute(
            "CREATE TABLE orders (id int PRIMARY KEY, item text); CREATE TABLE customers (id int PRIMARY KEY, name text);
             SELECT pgsse.publish_table('orders', operations => array['insert', 'update', 'delete']);
             SELECT pgsse.publish_table('customers', operations => array['insert', 'update', 'delete']);
             INSERT INTO orders VALUES (1, 'tea'), (2, 'cake'); INSERT INTO customers VALUES (1, 'ann'), (2, 'bo');",
        )
        .await
        .unwrap();
    let gw = Gateway::start(&url).await;
    browser.goto("page", &format!("http://{}/healthz", gw.addr)).await;
    browser
        .eval(
            "page",
            r#"import("/pgsse.js").then(({ live }) => {
                 window.rows = live("/events?channel=orders&channel=customers&snapshot=true", { key: "id" });
                 // A name spelled with an escape, and a stale resume id that would skip the snapshot.
                 window.stale = live("/events?channel=orders&chan%6Eel=customers&snapshot=true&last_event_id=999999",
                                     { key: "id" });
               })"#,
        )
        .await;
    browser.wait("page", "window.rows.ready && window.rows.size === 4").await;
    browser
        .wait("page", r#"window.stale.ready && window.stale.has('["customers",2]') && window.stale.size === 4"#)
        .await;
    // A channel that does not exist is final: no retry could make it.
    browser
        .eval(
            "page",
            r#"import("/pgsse.js").then(({ live }) => {
                 window.errors = [];
                 window.missing = live("/nosuch/events?snapshot=true", { onError: (e) => window.errors.push(e) });
               })"#,
        )
        .await;
    browser.wait("page", "window.missing.status === 'closed' && window.errors.length === 1").await;
    let first = browser.eval("page", "[window.errors[0].status, window.errors[0].retryIn]").await;
    assert_eq!(first, json!([404, null]));
    admin
        .batch_execute("UPDATE customers SET name = 'bob' WHERE id = 2; INSERT INTO orders VALUES (3, 'pie')")
        .await
        .unwrap();
    browser.wait("page", r#"window.rows.size === 5 && window.rows.get('["customers",2]')?.name === "bob""#).await;
    assert_eq!(browser.eval("page", r#"window.rows.get('["orders",2]').item"#).await, json!("cake"));
    admin.batch_execute("TRUNCATE customers").await.unwrap();
    browser.wait("page", "window.rows.size === 3").await;
    let keys = browser.eval("page", "[...window.rows.keys()].sort()").await;
    assert_eq!(keys, json!([r#"["orders",1]"#, r#"["orders",2]"#, r#"["orders",3]"#]));
}

/// The README's `live()` snippet, as written, against the walk-through's table: on the gateway's own
/// origin, then from a page on another origin (absolute stream URL, `/pgsse.js` from that site, the
/// gateway's `--cors-origin`). Its token endpoint is the page's backend, answered here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readmes_live_collection_runs_on_its_own_origin_and_across_origins() {
    let Some(mut browser) = Browser::start() else { return };
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme.split("### A live collection in the browser").nth(1).unwrap();
    let snippet = section.split("```html\n").nth(1).unwrap().split("```").next().unwrap();
    let TestDb { url, admin, .. } = TestDb::new().await;
    admin
        .batch_execute(
            "create table orders (id bigserial primary key, item text);
             select pgsse.publish_table('orders', operations => array['insert','update']);
             insert into orders (item) values ('tea');",
        )
        .await
        .unwrap();
    let mut config = common::gateway_config(&url);
    config.auth = Arc::new(Auth::Jwt(Box::new(Jwt::hs256(SECRET.as_bytes(), DEFAULT_COOKIE))));
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 3600;
    let claims = json!({"exp": exp, "pgsse": {"subscribe": ["orders"]}});
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
    let token = json!({"token": jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()});
    let pgsse_js = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/http/web/pgsse.js")).unwrap();
    // The other origin is a real site on loopback: Chromium lets no page of an unknown address reach one.
    let app = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app_origin = format!("http://localhost:{}", app.local_addr().unwrap().port());
    config.server.cors_origins = vec![app_origin.clone()];
    let gw = Gateway::start_with(config).await;
    let gateway = format!("http://{}", gw.addr);
    let across = snippet.replace("`/orders/events", &format!("`{gateway}/orders/events"));
    serve_site(
        app,
        vec![
            ("/app.html", "text/html", across),
            ("/api/pgsse-token", "application/json", token.to_string()),
            ("/pgsse.js", "text/javascript", pgsse_js),
        ],
    );
    for (route, content_type, body) in
        [("/app.html", "text/html", snippet), ("/api/pgsse-token", "application/json", &token.to_string())]
    {
        let cmd = json!({"op": "route", "page": "same", "url": format!("{gateway}{route}"), "contentType": content_type, "body": body});
        browser.run(cmd).await;
    }
    browser.goto("same", &format!("{gateway}/app.html")).await;
    browser.goto("across", &format!("{app_origin}/app.html")).await;
    for page in ["same", "across"] {
        browser.logged(page, r#"snapshot [{"id":1,"item":"tea"}]"#).await;
    }
    admin.batch_execute("insert into orders (item) values ('from psql')").await.unwrap();
    for page in ["same", "across"] {
        browser.logged(page, r#"insert [{"id":1,"item":"tea"},{"id":2,"item":"from psql"}]"#).await;
    }
}

/// A site that answers each GET of one of `files` (path, content type, body), and 404 otherwise.
fn serve_site(listener: TcpListener, files: Vec<(&'static str, &'static str, String)>) {
    let files = Arc::new(files);
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let files = files.clone();
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut lines = BufReader::new(read).lines();
                let Ok(Some(request)) = lines.next_line().await else { return };
                while let Ok(Some(line)) = lines.next_line().await {
                    if line.is_empty() {
                        break;
                    }
                }
                let path = request.split(' ').nth(1).unwrap_or_default();
                let reply = match files.iter().find(|(p, _, _)| *p == path) {
                    Some((_, content_type, body)) => format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    ),
                    None => "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".into(),
                };
                let _ = write.write_all(reply.as_bytes()).await;
            });
        }
    });
}
