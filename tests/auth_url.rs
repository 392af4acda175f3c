//! `--auth auth-url` against a small backend run by the test: allow with a grant, deny, cache, and a
//! backend that goes down while a stream it allowed stays open.

mod common;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{call, get, Gateway, SseStream, TestDb};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use pgsse::auth::Auth;
use pgsse::auth::AuthUrl;
use tokio::task::JoinSet;

/// The legacy backend: knows a few sessions by cookie, counts questions, remembers the last query.
struct Backend {
    url: String,
    calls: Arc<AtomicUsize>,
    last_query: Arc<Mutex<String>>,
    task: tokio::task::JoinHandle<()>,
}

impl Backend {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/pgsse/auth", listener.local_addr().unwrap());
        let calls = Arc::new(AtomicUsize::new(0));
        let last_query = Arc::new(Mutex::new(String::new()));
        let (c, q) = (calls.clone(), last_query.clone());
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (c, q) = (c.clone(), q.clone());
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    c.fetch_add(1, Ordering::SeqCst);
                    *q.lock().unwrap() = req.uri().query().unwrap_or_default().to_string();
                    let cookie = req.headers().get("cookie").map(|v| v.as_bytes()).unwrap_or_default();
                    let (status, body) = match cookie {
                        b"session=alice" => (
                            200,
                            r#"{"pgsse": {"subscribe": ["orders"], "publish": ["orders"], "filter": {"orders": "user_id=eq.42"}}}"#,
                        ),
                        // Known by its raw bytes: a lossy conversion would make it equal to \xfe's.
                        b"session=bare" | b"session=\xffok" => (200, ""),
                        b"session=bob" => (403, ""),
                        _ => (401, ""),
                    };
                    let resp = Response::builder().status(status).body(Full::new(Bytes::from(body))).unwrap();
                    async move { Ok::<_, Infallible>(resp) }
                });
                connections.spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
            }
        });
        Self { url, calls, last_query, task }
    }
}

async fn setup(backend: &Backend) -> (Gateway, tokio_postgres::Client) {
    let TestDb { url, admin, app } = TestDb::new().await;
    admin
        .batch_execute(
            "CREATE TABLE orders (id serial PRIMARY KEY, user_id int); SELECT pgsse.publish_table('orders', writable => true);",
        )
        .await
        .unwrap();
    let mut config = common::gateway_config(&url);
    config.auth = Arc::new(Auth::Url(Box::new(AuthUrl::new(&backend.url, Duration::from_secs(60)).unwrap())));
    (Gateway::start_with(config).await, app)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_decides_with_its_own_session_and_is_asked_once() {
    let backend = Backend::start().await;
    let (gw, app) = setup(&backend).await;
    let alice = [("cookie", "session=alice")];

    let mut stream = SseStream::ok(gw.addr, "/orders/events?user_id=in.(7,42)", &alice).await;
    assert_eq!(*backend.last_query.lock().unwrap(), "channel=orders&method=GET");
    app.batch_execute("INSERT INTO orders (user_id) VALUES (7), (42)").await.unwrap();
    assert_eq!(stream.expect().await.json()["user_id"], 42, "the backend's filter applies");
    for _ in 0..3 {
        assert_eq!(SseStream::open(gw.addr, "/orders/events", &alice).await.status, 200);
    }
    assert_eq!(backend.calls.load(Ordering::SeqCst), 1, "one question, cached");

    let cases: [(&[(&str, &str)], u16); 3] =
        [(&[("cookie", "session=bob")], 403), (&[], 401), (&[("cookie", "session=eve")], 401)];
    for (headers, status) in cases {
        let resp = get(gw.addr, "/orders/events", headers).await.unwrap();
        assert_eq!(resp.status, status, "{headers:?}: {}", resp.body);
    }
    assert_eq!(SseStream::open(gw.addr, "/orders/events", &[("cookie", "session=bare")]).await.status, 200);
    let json = ("content-type", "application/json");
    let post = |cookie: &'static str| async move {
        call(gw.addr, "POST", "/orders", &[json, ("cookie", cookie)], Bytes::from(r#"{"user_id": 1}"#)).await
    };
    assert_eq!(post("session=bare").await.unwrap().status, 201, "an empty 2xx grants what was asked");
    assert_eq!(*backend.last_query.lock().unwrap(), "channel=orders&method=POST");
    assert_eq!(post("session=bob").await.unwrap().status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_outage_refuses_new_streams_and_spares_open_ones() {
    let backend = Backend::start().await;
    let (gw, app) = setup(&backend).await;
    let mut open = SseStream::ok(gw.addr, "/orders/events", &[("cookie", "session=alice")]).await;
    backend.task.abort();
    let _ = backend.task.await;

    let refused = get(gw.addr, "/orders/events", &[("cookie", "session=bare")]).await.unwrap();
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert!(refused.json()["error"].as_str().unwrap().contains("unavailable"));
    app.execute("INSERT INTO orders (user_id) VALUES (42)", &[]).await.unwrap();
    assert_eq!(open.expect().await.json()["user_id"], 42, "the open stream is unaffected");
}

/// A GET with a raw (non-UTF-8) cookie, over a plain socket; returns the status.
async fn raw_cookie_status(addr: std::net::SocketAddr, path: &str, cookie: &[u8]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = [format!("GET {path} HTTP/1.1\r\nhost: x\r\ncookie: ").as_bytes(), cookie, b"\r\n\r\n"].concat();
    conn.write_all(&head).await.unwrap();
    let mut got = [0u8; 12];
    tokio::time::timeout(common::TIMEOUT, conn.read_exact(&mut got)).await.unwrap().unwrap();
    std::str::from_utf8(&got[9..12]).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_is_asked_each_distinct_question_and_never_about_a_malformed_name() {
    let backend = Backend::start().await;
    let (gw, _app) = setup(&backend).await;
    let alice = [("cookie", "session=alice")];
    // One channel literally named "orders,public" is no channel: refused before the backend is asked, so
    // its answer can never be taken for /events?channel=orders&channel=public.
    for path in ["/orders,public", "/orders,public/events"] {
        assert_eq!(get(gw.addr, path, &alice).await.unwrap().status, 400, "{path}");
    }
    assert_eq!(backend.calls.load(Ordering::SeqCst), 0, "the backend was not asked");

    // Two cookies that differ only in bytes a lossy conversion folds together get their own answers.
    assert_eq!(raw_cookie_status(gw.addr, "/orders/events", b"session=\xffok").await, 200);
    assert_eq!(raw_cookie_status(gw.addr, "/orders/events", b"session=\xfeok").await, 401);
    assert_eq!(backend.calls.load(Ordering::SeqCst), 2, "each asked once");
}
