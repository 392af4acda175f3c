//! The README's walk-through, run as written: its shell block against a fresh database (only the
//! database's address, the gateway role's name and the listen address are this test's own), then a row
//! inserted with psql reaches a stream opened with a token signed with the walk-through's secret.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::{empty_db, SseStream};
use tokio::io::{AsyncBufReadExt, BufReader};

const BIN: &str = env!("CARGO_BIN_EXE_pgsse");

#[tokio::test]
async fn the_walk_through_runs_as_written() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme.split("## Walk-through with your own database").nth(1).expect("the walk-through");
    let block = section.split("```sh\n").nth(1).unwrap().split("```").next().unwrap();
    let url = empty_db().await;
    let (server, database) = url.strip_prefix("postgres://postgres@").unwrap().split_once('/').unwrap();
    let role = format!("gw_{database}");
    let script = block
        .replace("postgres://admin@db.internal/app", &url)
        .replace("gw:change-me@db.internal/app", &format!("{role}:change-me@{server}/{database}"))
        .replace("create role gw login", &format!("create role {role} login"))
        .replace("0.0.0.0:4000", "127.0.0.1:0");
    // The secret the script made, for this test to sign with: written just before the gateway starts.
    let secret_file = std::env::temp_dir().join(format!("pgsse-readme-{database}"));
    // `exec`: the gateway takes the shell's place, so stopping the child stops the gateway.
    let script =
        script.replace("pgsse serve", &format!("echo \"$SECRET\" > {}\nexec pgsse serve", secret_file.display()));
    let bin_dir = std::path::Path::new(BIN).parent().unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let mut gateway = tokio::process::Command::new("sh")
        .args(["-ec", &script])
        .env("PATH", path)
        .env_remove("DATABASE_URL")
        .env("PGSSE_LOG", "pgsse::server=info,warn")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut log = BufReader::new(gateway.stdout.take().unwrap()).lines();
    let (listen, _) = common::serving_addr(&mut log).await;
    tokio::spawn(async move { while let Ok(Some(_)) = log.next_line().await {} });
    common::wait_for("the walk-through's gateway to be healthy", || async {
        common::get(listen, "/healthz", &[]).await.is_ok_and(|r| r.status == 200)
    })
    .await;
    let secret = std::fs::read_to_string(&secret_file).unwrap();
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 600;
    let claims = serde_json::json!({"exp": exp, "pgsse": {"subscribe": ["orders"]}});
    let key = jsonwebtoken::EncodingKey::from_secret(secret.trim().as_bytes());
    let token = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap();
    let bearer = format!("Bearer {token}");
    let mut stream = SseStream::ok(listen, "/orders/events", &[("authorization", &bearer)]).await;
    common::connect(&url).await.execute("INSERT INTO orders (item) VALUES ('from psql')", &[]).await.unwrap();
    let event = stream.expect().await;
    assert_eq!((event.event.as_str(), event.json()["item"].as_str()), ("insert", Some("from psql")));
    let _ = std::fs::remove_file(secret_file);
    gateway.start_kill().unwrap();
    let _ = gateway.wait().await;
}
