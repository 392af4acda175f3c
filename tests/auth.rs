//! JWT access control over real HTTP: every way a token can be missing or wrong, grants per channel,
//! filters from the token that the client cannot escape (live, replay, history), writes, and expiry.

mod common;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use common::{call, get, Gateway, SseStream, TestDb};
use jsonwebtoken::{encode, EncodingKey, Header};
use pgsse::auth::{Auth, Jwt, DEFAULT_COOKIE};
use serde_json::{json, Value};

const SECRET: &[u8] = b"a test secret that is long enough";

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn token(grant: Value, exp: u64) -> String {
    encode(&Header::default(), &json!({"exp": exp, "pgsse": grant}), &EncodingKey::from_secret(SECRET)).unwrap()
}

async fn gateway(url: &str) -> Gateway {
    Gateway::start_with(jwt_config(url)).await
}

fn jwt_config(url: &str) -> pgsse::config::Config {
    let mut config = common::gateway_config(url);
    config.auth = Arc::new(Auth::Jwt(Box::new(Jwt::hs256(SECRET, DEFAULT_COOKIE))));
    config
}

async fn orders_db() -> TestDb {
    let db = TestDb::new().await;
    db.admin
        .batch_execute(
            "CREATE TABLE orders (id serial PRIMARY KEY, user_id bigint NOT NULL, item text);
         SELECT pgsse.publish_table('orders', writable => true);
         SELECT pgsse.create_channel('public.news'); SELECT pgsse.create_channel('alerts.eu');",
        )
        .await
        .unwrap();
    db
}

/// `/metrics` shows who is online (a stream per user channel): under auth it leaves the public address,
/// and its channel labels can go.
#[tokio::test]
async fn under_auth_metrics_are_only_on_their_own_address() {
    let TestDb { url, .. } = orders_db().await;
    let mut config = jwt_config(&url);
    let gw = Gateway::start_with(config.clone()).await;
    let public = get(gw.addr, "/metrics", &[]).await.unwrap();
    assert_eq!(public.status, 404, "{}", public.body);
    assert!(public.body.contains("--metrics-listen"), "{}", public.body);
    drop(gw);

    config.server.metrics_channel_labels = false;
    let (gw, metrics_addr) = Gateway::start_with_metrics(config).await;
    let reader = format!("Bearer {}", token(json!({"subscribe": ["orders"]}), now() + 600));
    let _stream = SseStream::ok(gw.addr, "/orders/events", &[("authorization", &reader)]).await;
    let metrics = get(metrics_addr, "/metrics", &[]).await.unwrap().body;
    assert!(metrics.lines().any(|l| l == "pgsse_streams_open 1"), "{metrics}");
    assert!(!metrics.contains("channel=\"orders\""), "{metrics}");
}

/// Without a token nothing is learned, not even which channels exist, and no query is spent on it.
#[tokio::test]
async fn a_stranger_cannot_tell_which_channels_exist() {
    let TestDb { url, .. } = orders_db().await;
    let gw = gateway(&url).await;
    for path in ["/orders/events", "/no.such.channel/events", "/events?channel=orders&channel=nope"] {
        let resp = get(gw.addr, path, &[]).await.unwrap();
        assert_eq!(resp.status, 401, "{path}: {}", resp.body);
    }
}

#[tokio::test]
async fn missing_bad_expired_and_foreign_tokens_are_refused() {
    let TestDb { url, .. } = orders_db().await;
    let (gw, metrics_addr) = Gateway::start_with_metrics(jwt_config(&url)).await;
    let good = token(json!({"subscribe": ["orders"]}), now() + 600);
    let forged = encode(
        &Header::default(),
        &json!({"exp": now() + 600, "pgsse": {"subscribe": ["*"]}}),
        &EncodingKey::from_secret(b"guess"),
    )
    .unwrap();
    let bearer = |t: &str| format!("Bearer {t}");
    // The grant's keys at the top level, not under the claim pgsse reads.
    let misplaced = encode(
        &Header::default(),
        &json!({"exp": now() + 600, "subscribe": ["orders"]}),
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap();
    type Case<'a> = (Vec<(&'a str, String)>, &'a str, u16, &'a str);
    let cases: Vec<Case> = vec![
        (vec![], "/orders/events", 401, "authentication required"),
        (vec![("authorization", "Bearer".into())], "/orders/events", 401, "authentication required"),
        (vec![("authorization", bearer("not-a-jwt"))], "/orders/events", 401, "invalid token"),
        (vec![("authorization", bearer(&forged))], "/orders/events", 401, "invalid token"),
        (
            vec![("authorization", bearer(&misplaced))],
            "/orders/events",
            401,
            "it has no pgsse claim, where its grant goes",
        ),
        (
            vec![("authorization", bearer(&token(json!({"subscribe": ["*"]}), now() - 10)))],
            "/orders/events",
            401,
            "expired",
        ),
        // Within its exp's own second: expired, though a comparison of whole seconds would let it in.
        (vec![("authorization", bearer(&token(json!({"subscribe": ["*"]}), now())))], "/orders/events", 401, "expired"),
        (vec![("authorization", bearer(&good))], "/public.news/events", 403, "not allowed to subscribe"),
        (vec![("authorization", bearer(&good))], "/events?channel=orders&channel=public.news", 403, "public.news"),
    ];
    for (headers, path, status, text) in &cases {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let resp = get(gw.addr, path, &headers).await.unwrap();
        assert_eq!(resp.status, *status, "{path} {headers:?}: {}", resp.body);
        assert!(resp.json()["error"].as_str().unwrap().contains(text), "{path}: {}", resp.body);
        assert!(!resp.body.contains(std::str::from_utf8(SECRET).unwrap()), "never echoes the secret");
        if *status == 401 {
            assert_eq!(resp.headers["www-authenticate"], "Bearer");
        }
    }
    let metrics = get(metrics_addr, "/metrics", &[]).await.unwrap().body;
    for line in
        ["pgsse_auth_denials_total{reason=\"unauthenticated\"} 7", "pgsse_auth_denials_total{reason=\"forbidden\"} 2"]
    {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
    for how in ["header", "cookie", "query"] {
        let (path, headers) = match how {
            "header" => ("/orders/events".to_string(), vec![("authorization", bearer(&good))]),
            "cookie" => ("/orders/events".to_string(), vec![("cookie", format!("other=1; {DEFAULT_COOKIE}={good}"))]),
            _ => (format!("/orders/events?access_token={good}"), vec![]),
        };
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(SseStream::open(gw.addr, &path, &headers).await.status, 200, "token by {how}");
    }
}

#[tokio::test]
async fn a_users_filter_cannot_be_escaped_live_on_replay_or_in_history() {
    filter_holds_live_on_replay_and_in_history(42, 7).await;
}

/// Snowflake-sized ids one apart round to the same f64: the grant must still tell them apart.
#[tokio::test]
async fn a_grant_on_a_bigint_id_tells_neighbours_apart() {
    filter_holds_live_on_replay_and_in_history(1234567890123456789, 1234567890123456790).await;
    filter_holds_live_on_replay_and_in_history(9007199254740992, 9007199254740993).await;
}

/// A token granted `user_id=eq.{mine}` sees only `mine`'s rows, even when it asks for `theirs` too.
async fn filter_holds_live_on_replay_and_in_history(mine: i64, theirs: i64) {
    let TestDb { url, app, .. } = orders_db().await;
    let gw = gateway(&url).await;
    let grant = json!({"subscribe": ["orders"], "filter": {"orders": format!("user_id=eq.{mine}")}});
    let auth = format!("Bearer {}", token(grant, now() + 600));
    let headers = [("authorization", auth.as_str())];

    let mut live = SseStream::ok(gw.addr, &format!("/orders/events?user_id=in.({theirs},{mine})"), &headers).await;
    for (user, item) in [(theirs, "theirs 1"), (mine, "mine 1"), (theirs, "theirs 2"), (mine, "mine 2")] {
        app.execute("INSERT INTO orders (user_id, item) VALUES ($1, $2)", &[&user, &item]).await.unwrap();
    }
    let items = |events: Vec<common::Event>| -> Vec<String> {
        events.iter().map(|e| e.json()["item"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(items(live.take(2).await), ["mine 1", "mine 2"]);

    let mut replay = SseStream::ok(gw.addr, "/orders/events?last_event_id=0", &headers).await;
    assert_eq!(items(replay.take(2).await), ["mine 1", "mine 2"]);
    app.execute("INSERT INTO orders (user_id, item) VALUES ($1, 'theirs 3'), ($2, 'mine 3')", &[&theirs, &mine])
        .await
        .unwrap();
    assert_eq!(items(replay.take(1).await), ["mine 3"]);
    assert_eq!(items(live.take(1).await), ["mine 3"]);

    let history = get(gw.addr, "/orders", &headers).await.unwrap();
    assert_eq!(history.status, 200);
    let rows: Vec<i64> =
        history.json().as_array().unwrap().iter().map(|e| e["data"]["user_id"].as_i64().unwrap()).collect();
    assert_eq!(rows, [mine, mine, mine]);
}

#[tokio::test]
async fn writes_need_a_publish_grant() {
    let TestDb { url, .. } = orders_db().await;
    let gw = gateway(&url).await;
    let reader = format!("Bearer {}", token(json!({"subscribe": ["*"]}), now() + 600));
    let writer = format!("Bearer {}", token(json!({"publish": ["orders", "alerts.*"]}), now() + 600));
    let body = || Bytes::from(r#"{"user_id": 1, "item": "x"}"#);
    let json = ("content-type", "application/json");

    let none = call(gw.addr, "POST", "/orders", &[json], body()).await.unwrap();
    assert_eq!(none.status, 401);
    let denied = call(gw.addr, "POST", "/orders", &[json, ("authorization", &reader)], body()).await.unwrap();
    assert_eq!(denied.status, 403, "{}", denied.body);
    let created = call(gw.addr, "POST", "/orders", &[json, ("authorization", &writer)], body()).await.unwrap();
    assert_eq!(created.status, 201, "{}", created.body);
    let event =
        call(gw.addr, "POST", "/alerts.eu", &[json, ("authorization", &writer)], Bytes::from("{}")).await.unwrap();
    assert_eq!(event.status, 201, "{}", event.body);
    let clear = call(gw.addr, "DELETE", "/orders", &[("authorization", &reader)], Bytes::new()).await.unwrap();
    assert_eq!(clear.status, 403);
    let history = get(gw.addr, "/orders", &[("authorization", &writer)]).await.unwrap();
    assert_eq!(history.status, 403, "publishing does not grant reading");
}

/// A token limited to user 42's rows writes only such rows, on table channels and ad-hoc ones alike, and
/// cannot clear a channel (that would remove other users' rows).
#[tokio::test]
async fn a_grant_filter_limits_writes_too() {
    let TestDb { url, admin, .. } = orders_db().await;
    admin.batch_execute("SELECT pgsse.publish_table('orders', writable => true, allow_clear => true)").await.unwrap();
    let gw = gateway(&url).await;
    let grant = json!({"publish": ["orders", "alerts.eu"], "filter": {"orders": "user_id=eq.42", "alerts.eu": "user_id=eq.42"}});
    let mine = format!("Bearer {}", token(grant, now() + 600));
    let json = ("content-type", "application/json");
    let post = |path: &'static str, body: &'static str| {
        let headers = [json, ("authorization", mine.as_str())];
        async move { call(gw.addr, "POST", path, &headers, Bytes::from(body)).await.unwrap() }
    };
    assert_eq!(post("/orders", r#"{"user_id": 42, "item": "mine"}"#).await.status, 201);
    for (path, body) in [
        ("/orders", r#"{"user_id": 43, "item": "theirs", "is_admin": true}"#),
        ("/orders", r#"{"item": "no owner given"}"#),
        ("/alerts.eu", r#"{"user_id": 43}"#),
    ] {
        let refused = post(path, body).await;
        assert_eq!(refused.status, 403, "{path} {body}: {}", refused.body);
        assert!(refused.json()["error"].as_str().unwrap().contains("outside this token's grant"), "{}", refused.body);
    }
    assert_eq!(post("/alerts.eu", r#"{"user_id": 42}"#).await.status, 201);
    let clear = call(gw.addr, "DELETE", "/orders", &[("authorization", &mine)], Bytes::new()).await.unwrap();
    assert_eq!(clear.status, 403, "{}", clear.body);
    assert!(clear.json()["error"].as_str().unwrap().contains("cannot clear"), "{}", clear.body);
    let owners: Vec<i64> =
        admin.query("SELECT user_id FROM orders", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(owners, [42], "only the grant's own row was written, and nothing was cleared");
}

#[tokio::test]
async fn a_stream_ends_when_its_token_expires() {
    let TestDb { url, app, .. } = orders_db().await;
    let gw = gateway(&url).await;
    let short = format!("Bearer {}", token(json!({"subscribe": ["orders"]}), now() + 2));
    let mut stream = SseStream::ok(gw.addr, "/orders/events", &[("authorization", &short)]).await;
    app.execute("INSERT INTO orders (user_id, item) VALUES (1, 'while valid')", &[]).await.unwrap();
    assert_eq!(stream.expect().await.json()["item"], "while valid");
    assert!(stream.next().await.is_none(), "the server ended the stream at exp");
}

#[tokio::test]
async fn a_parked_stream_ends_when_its_token_expires() {
    let TestDb { url, .. } = orders_db().await;
    let (gw, metrics) = Gateway::start_with_metrics(jwt_config(&url)).await;
    let opened = std::time::Instant::now();
    let short = format!("Bearer {}", token(json!({"subscribe": ["orders"]}), now() + 2));
    let mut stream = SseStream::ok(gw.addr, "/orders/events", &[("authorization", &short)]).await;
    common::wait_for("the quiet stream is parked", || async {
        common::metric(metrics, "pgsse_streams_parked").await == 1
    })
    .await;
    assert!(stream.next().await.is_none());
    let took = opened.elapsed();
    assert!(took < std::time::Duration::from_secs(8), "ended after {took:?}: at exp, not at a heartbeat (15 s)");
    assert_eq!(common::metric(metrics, "pgsse_streams_parked").await, 0);
}

/// An ES256 key pair made with the openssl command line (Debian's openssl package).
fn es256_pair(dir: &std::path::Path) -> (Vec<u8>, std::path::PathBuf) {
    let private = dir.join("private.pem");
    let public = dir.join("public.pem");
    let sh = format!(
        "openssl ecparam -genkey -name prime256v1 -noout | openssl pkcs8 -topk8 -nocrypt -out {p} && openssl ec -in {p} -pubout -out {q}",
        p = private.display(),
        q = public.display()
    );
    let out = std::process::Command::new("sh").args(["-c", &sh]).output().expect("openssl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (std::fs::read(&private).unwrap(), public)
}

#[tokio::test]
async fn es256_public_keys_verify_and_a_key_cannot_be_used_as_an_hmac_secret() {
    let TestDb { url, .. } = orders_db().await;
    let dir = std::env::temp_dir().join(format!("pgsse-es256-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (private, public) = es256_pair(&dir);
    let mut config = common::gateway_config(&url);
    let pem = std::fs::read(&public).unwrap();
    config.auth = Arc::new(Auth::Jwt(Box::new(Jwt::public_key(&pem, DEFAULT_COOKIE).unwrap())));
    let gw = Gateway::start_with(config).await;

    let claims = json!({"exp": now() + 600, "pgsse": {"subscribe": ["orders"]}});
    let signed =
        encode(&Header::new(jsonwebtoken::Algorithm::ES256), &claims, &EncodingKey::from_ec_pem(&private).unwrap())
            .unwrap();
    let ok = SseStream::open(gw.addr, &format!("/orders/events?access_token={signed}"), &[]).await;
    assert_eq!(ok.status, 200);
    // The classic confusion: an HS256 token whose secret is the (public) verification key.
    let confused = encode(&Header::default(), &claims, &EncodingKey::from_secret(&pem)).unwrap();
    let refused = get(gw.addr, &format!("/orders/events?access_token={confused}"), &[]).await.unwrap();
    assert_eq!(refused.status, 401, "{}", refused.body);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A grant's filter narrows a snapshot as it does every stream, and a row handed to another user leaves
/// the first user's view (a delete event) as it enters the other's (an insert event).
#[tokio::test]
async fn a_grant_filter_narrows_snapshots_and_rows_move_between_users() {
    let TestDb { url, admin, app } = TestDb::new().await;
    admin
        .batch_execute(
            "CREATE TABLE tasks (id int PRIMARY KEY, owner int NOT NULL, title text);
             SELECT pgsse.publish_table('tasks', operations => ARRAY['insert', 'update', 'delete']);",
        )
        .await
        .unwrap();
    app.batch_execute("INSERT INTO tasks VALUES (1, 7, 'a'), (2, 8, 'b'), (3, 7, 'c')").await.unwrap();
    let gw = gateway(&url).await;
    let bearer = |owner: i32| {
        let grant = json!({"subscribe": ["tasks"], "filter": {"tasks": format!("owner=eq.{owner}")}});
        format!("Bearer {}", token(grant, now() + 600))
    };
    let (seven, eight) = (bearer(7), bearer(8));
    let mut mine = SseStream::ok(gw.addr, "/tasks/events?snapshot=true&order=id", &[("authorization", &seven)]).await;
    let rows: Vec<(String, i64)> =
        mine.take(3).await.iter().map(|e| (e.event.clone(), e.json()["id"].as_i64().unwrap_or(-1))).collect();
    assert_eq!(rows, [("insert".into(), 1), ("insert".into(), 3), ("snapshot-end".into(), -1)]);
    let mut theirs = SseStream::ok(gw.addr, "/tasks/events?snapshot=true", &[("authorization", &eight)]).await;
    assert_eq!(theirs.take(2).await[1].event, "snapshot-end");

    app.batch_execute("UPDATE tasks SET owner = 8 WHERE id = 3").await.unwrap();
    let left = mine.expect().await;
    assert_eq!((left.event.as_str(), left.json()["owner"].as_i64()), ("delete", Some(7)), "with the old row");
    let came = theirs.expect().await;
    assert_eq!((came.event.as_str(), came.json()["owner"].as_i64()), ("insert", Some(8)));
}

/// A valid token learns nothing of channels outside its grant: not whether they exist, nor their columns.
#[tokio::test]
async fn a_channel_outside_the_grant_is_403_whatever_it_is() {
    let TestDb { url, admin, .. } = orders_db().await;
    admin.batch_execute("CREATE TABLE fat (id int, secret_col text); SELECT pgsse.publish_table('fat')").await.unwrap();
    let gw = gateway(&url).await;
    let bearer = format!("Bearer {}", token(json!({"subscribe": ["orders"]}), now() + 60));
    for path in ["/fat/events?zzz=eq.1", "/nosuch/events", "/fat/events", "/events?channel=orders&channel=nosuch"] {
        let resp = get(gw.addr, path, &[("authorization", &bearer)]).await.unwrap();
        assert_eq!(resp.status, 403, "{path}: {}", resp.body);
        assert!(!resp.body.contains("secret_col"), "{path}: {}", resp.body);
    }
    let resp = get(gw.addr, "/orders/events?zzz=eq.1", &[("authorization", &bearer)]).await.unwrap();
    assert_eq!(resp.status, 400, "within the grant, the filter's problem is told: {}", resp.body);
}

/// A grant that filters on a column its channel does not publish would make every stream silent and every
/// history page empty: its holder is told the grant must change (403), on streams and history alike.
#[tokio::test]
async fn a_grant_filter_no_row_can_match_is_403_naming_the_grant() {
    let TestDb { url, .. } = orders_db().await;
    let gw = gateway(&url).await;
    let grant = json!({"subscribe": ["orders"], "filter": {"orders": "customer_id=eq.42"}});
    let bearer = format!("Bearer {}", token(grant, now() + 60));
    for path in ["/orders/events", "/orders/events?snapshot=true", "/orders?limit=5", "/events?channel=orders"] {
        let resp = get(gw.addr, path, &[("authorization", &bearer)]).await.unwrap();
        assert_eq!(resp.status, 403, "{path}: {}", resp.body);
        let error = resp.json()["error"].as_str().unwrap().to_string();
        assert!(
            error.contains("the token's grant filters channel \"orders\"") && error.contains("customer_id"),
            "{error}"
        );
    }
    let fine = json!({"subscribe": ["orders"], "filter": {"orders": "user_id=eq.42"}});
    let bearer = format!("Bearer {}", token(fine, now() + 60));
    assert_eq!(get(gw.addr, "/orders?limit=5", &[("authorization", &bearer)]).await.unwrap().status, 200);
}
