//! End-to-end: what operators watch and do: `/healthz`, `/readyz`, `/metrics` (on the main address or
//! its own), a LISTEN connection on its own URL, and graceful shutdown.

mod common;

use common::{fresh_db, Fixture, Gateway, SseStream};
use pgsse::config::Config;

#[tokio::test]
async fn healthz_reports_listener_and_pool() {
    let url = fresh_db().await;
    let gw = Gateway::start(&url).await;
    let ok = common::get(gw.addr, "/healthz", &[]).await.unwrap();
    assert_eq!(ok.status, 200);
    assert_eq!(ok.json()["status"], "ok");

    let mut config = Config::new("postgres://postgres@127.0.0.1:1/none").unwrap();
    config.pool.pool_size = 1;
    let gateway = Gateway::spawn(config).await;
    let addr = gateway.addr;
    let down = common::get(addr, "/healthz", &[]).await.unwrap();
    assert_eq!(down.status, 503);
    let reason = down.json()["error"].as_str().unwrap().to_string();
    assert!(reason.contains("listener") && reason.contains("pool"), "{reason}");
    let refused = common::get(addr, "/messages/events", &[]).await.unwrap();
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert!(!refused.body.contains("127.0.0.1"), "no internals leak: {}", refused.body);
    gateway.shutdown().await;
}

#[tokio::test]
async fn graceful_shutdown_ends_streams_and_returns_promptly() {
    let Fixture { app, gw, .. } = Fixture::messages("").await;
    let addr = gw.addr;
    let mut a = SseStream::ok(addr, "/messages/events", &[]).await;
    let mut b = SseStream::ok(addr, "/messages/events", &[("last-event-id", "0")]).await;
    app.execute("INSERT INTO messages (body) VALUES ('before')", &[]).await.unwrap();
    a.expect().await;
    b.expect().await;

    let took = gw.shutdown().await;
    assert!(took < std::time::Duration::from_secs(3), "run returned after {took:?}");
    assert!(a.next().await.is_none(), "stream a ended");
    assert!(b.next().await.is_none(), "stream b ended");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "no longer accepting");
}

#[tokio::test]
async fn readyz_waits_for_the_schema_and_the_listener() {
    let url = common::empty_db().await;
    let gateway = Gateway::spawn(Config::new(&url).unwrap()).await;
    let addr = gateway.addr;
    let before = common::get(addr, "/readyz", &[]).await.unwrap();
    assert_eq!(before.status, 503);
    assert!(before.json()["error"].as_str().unwrap().contains("run pgsse migrate"), "{}", before.body);

    pgsse::migrate(&url).await.unwrap();
    common::wait_for("ready once migrated", || async {
        common::get(addr, "/readyz", &[]).await.is_ok_and(|r| r.status == 200)
    })
    .await;
    let ready = common::get(addr, "/readyz", &[]).await.unwrap().json();
    assert_eq!(ready["schema_version"], pgsse::SCHEMA_VERSION, "{ready}");
    gateway.shutdown().await;
}

#[tokio::test]
async fn the_listen_connection_can_use_its_own_url() {
    let url = fresh_db().await;
    let mut config = common::gateway_config(&url);
    config.listener.listen_database_url = Some("postgres://postgres@127.0.0.1:1/nowhere".into());
    let gateway = Gateway::spawn(config).await;
    let addr = gateway.addr;
    let health = common::get(addr, "/healthz", &[]).await.unwrap();
    assert_eq!(health.status, 503);
    let reason = health.json()["error"].as_str().unwrap().to_string();
    assert!(reason.contains("listener") && !reason.contains("pool"), "only the LISTEN side is down: {reason}");
    gateway.shutdown().await;
}

#[tokio::test]
async fn metrics_are_served_in_prometheus_text_format() {
    let Fixture { app, gw, .. } = Fixture::messages("").await;
    let health = common::get(gw.addr, "/healthz", &[]).await.unwrap();
    assert_eq!(health.json()["version"], env!("CARGO_PKG_VERSION"), "{}", health.body);
    let idle = common::get(gw.addr, "/metrics", &[]).await.unwrap().body;
    assert!(idle.lines().any(|l| l == "pgsse_streams_open 0"), "present before any stream:\n{idle}");
    let mut stream = SseStream::ok(gw.addr, "/messages/events", &[]).await;
    app.execute("INSERT INTO messages (body) VALUES ('counted')", &[]).await.unwrap();
    let id = stream.expect().await.id();
    let mut resumed = SseStream::ok(gw.addr, "/messages/events", &[("last-event-id", "0")]).await;
    assert_eq!(resumed.expect().await.id(), id);
    app.execute("INSERT INTO messages (body) VALUES ('live to both')", &[]).await.unwrap();
    let id = stream.expect().await.id();
    assert_eq!(resumed.expect().await.id(), id);
    let long = format!("/messages?{}", "x".repeat(9000));
    assert_eq!(common::get(gw.addr, &long, &[]).await.unwrap().status, 414);

    let resp = common::get(gw.addr, "/metrics", &[]).await.unwrap();
    assert_eq!(resp.status, 200);
    assert!(resp.headers["content-type"].starts_with("application/openmetrics-text"));
    for line in [
        "pgsse_streams_open{channel=\"messages\"} 2".to_string(),
        "pgsse_events_received_total 2".to_string(),
        "pgsse_listener_up 1".to_string(),
        "pgsse_listener_polling 0".to_string(),
        format!("pgsse_last_event_id {id}"),
        "pgsse_limit_rejections_total{kind=\"url_too_long\"} 1".to_string(),
        "pgsse_subscribers_cut_total 0".to_string(),
        "pgsse_frames_sent_total 3".to_string(),
        "pgsse_replays_total 1".to_string(),
        "pgsse_events_replayed_total 1".to_string(),
        "pgsse_broadcast_lag_seconds_count 2".to_string(),
        "pgsse_auth_denials_total{reason=\"unauthenticated\"} 0".to_string(),
    ] {
        assert!(resp.body.lines().any(|l| l == line), "{line:?} in\n{}", resp.body);
    }
    let bytes_sent: u64 =
        resp.body.lines().find_map(|l| l.strip_prefix("pgsse_bytes_sent_total ")).unwrap().parse().unwrap();
    let seen = (stream.raw.len() + resumed.raw.len()) as u64;
    assert!(bytes_sent >= seen, "{bytes_sent} bytes counted, {seen} received");
    assert!(resp.body.contains("# TYPE pgsse_notification_queue_usage gauge"));
    assert!(resp.body.ends_with("# EOF\n"));
}

#[tokio::test]
async fn metrics_can_move_to_their_own_address() {
    let url = fresh_db().await;
    let config = common::gateway_config(&url);
    let (gw, metrics_addr) = Gateway::start_with_metrics(config).await;
    assert_eq!(common::get(gw.addr, "/metrics", &[]).await.unwrap().status, 404, "not on the public address");
    let resp = common::get(metrics_addr, "/metrics", &[]).await.unwrap();
    assert_eq!(resp.status, 200);
    assert!(resp.body.contains("pgsse_listener_up 1"), "{}", resp.body);
    assert_eq!(common::get(metrics_addr, "/messages/events", &[]).await.unwrap().status, 404, "and nothing else");
}

/// `--access-log`: one structured line per request and one per stream when it ends, in the chosen log
/// format, with the query's credentials left out, even where `PGSSE_LOG` silences everything else.
#[tokio::test]
async fn the_access_log_has_a_line_per_request_and_per_ended_stream() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let common::TestDb { url, app, .. } = common::TestDb::messages("").await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgsse"))
        .args(["--database-url", &common::as_role(&url, common::GATEWAY_ROLE), "--listen", "127.0.0.1:0"])
        .args(["--access-log", "--log-format", "json"])
        .env("PGSSE_LOG", "pgsse::server=info,error")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next_json = async move || -> serde_json::Value {
        let line = tokio::time::timeout(common::TIMEOUT, lines.next_line()).await.unwrap().unwrap().unwrap();
        serde_json::from_str(&line).unwrap()
    };
    let addr: std::net::SocketAddr = loop {
        let line = next_json().await;
        if line["fields"]["message"] == "serving" {
            break line["fields"]["addr"].as_str().unwrap().parse().unwrap();
        }
    };
    let missing = common::get(addr, "/nope", &[("x-request-id", "req-1")]).await.unwrap();
    assert_eq!((missing.status, missing.headers.get("x-request-id").map(String::as_str)), (404, Some("req-1")));
    let line = next_json().await;
    assert_eq!(line["target"], "pgsse::access");
    let fields = &line["fields"];
    assert_eq!(
        (fields["method"].as_str(), fields["path"].as_str(), fields["status"].as_u64()),
        (Some("GET"), Some("/nope"), Some(404))
    );
    assert_eq!((fields["request_id"].as_str(), fields["client"].as_str()), (Some("req-1"), Some("127.0.0.1")));
    assert!(fields["bytes"].as_u64().unwrap() > 10 && fields["duration_ms"].as_f64().is_some(), "{line}");
    let refused = fields["refused"].as_str().unwrap_or_default();
    assert!(
        refused.starts_with("unknown channel \"nope\""),
        "a refusal's words, for clients that hide the body: {line}"
    );

    let mut stream = SseStream::ok(addr, "/messages/events?access_token=s3cret&body=neq.x", &[]).await;
    app.batch_execute("INSERT INTO messages (body) VALUES ('a'), ('b')").await.unwrap();
    stream.take(2).await;
    drop(stream);
    let fields = next_json().await["fields"].clone();
    assert_eq!(fields["path"], "/messages/events?body=neq.x", "no token in the log");
    assert_eq!(
        (fields["status"].as_u64(), fields["stream"].as_bool(), fields["events"].as_u64()),
        (Some(200), Some(true), Some(2))
    );
    assert!(fields["request_id"].as_str().is_some_and(|id| !id.is_empty()));
    assert!(fields.get("refused").is_none(), "only refusals say why: {fields}");
    child.start_kill().unwrap();
}
