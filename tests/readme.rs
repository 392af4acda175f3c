//! The README's walk-through, run as written: its shell block against a fresh database (only the
//! database's address, the gateway role's name and the listen address are this test's own), then its
//! token-minting snippet and curl line, and its psql insert: the row reaches that curl.

mod common;

use common::empty_db;
use tokio::io::{AsyncBufReadExt, BufReader};

const BIN: &str = env!("CARGO_BIN_EXE_pgsse");

#[tokio::test]
async fn the_walk_through_runs_as_written() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme.split("## Walk-through with your own database").nth(1).expect("the walk-through");
    let block = section.split("```sh\n").nth(1).unwrap().split("```").next().unwrap();
    let minting = section.split("```sh\n").nth(2).unwrap().split("```").next().unwrap();
    let inserting = section.split("```sh\n").nth(3).unwrap().split("```").next().unwrap();
    let url = empty_db().await;
    let (server, database) = url.strip_prefix("postgres://postgres@").unwrap().split_once('/').unwrap();
    let role = format!("gw_{database}");
    let script = block
        .replace("postgres://admin@db.internal/app", &url)
        .replace("gw:change-me@db.internal/app", &format!("{role}:change-me@{server}/{database}"))
        .replace("create role gw login", &format!("create role {role} login"))
        .replace("0.0.0.0:4000", "127.0.0.1:0");
    // The secret the script made, for the minting snippet to sign with: written just before the gateway
    // starts. `exec`: the gateway takes the shell's place, so stopping the child stops the gateway.
    let secret_file = std::env::temp_dir().join(format!("pgsse-readme-{database}"));
    let script = script.replace(
        &format!("DATABASE_URL=postgres://{role}:change-me"),
        &format!(
            "echo \"$PGSSE_JWT_SECRET\" > {}\nexec env DATABASE_URL=postgres://{role}:change-me",
            secret_file.display()
        ),
    );
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
    // The minting snippet and its curl line, as written but for the address.
    let mut curl = tokio::process::Command::new("sh")
        .args(["-ec", &minting.replace("localhost:4000", &listen.to_string())])
        .env("PGSSE_JWT_SECRET", secret.trim())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut received = BufReader::new(curl.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(common::TIMEOUT, received.next_line()).await.unwrap().unwrap();
    assert!(first.is_some_and(|line| line.starts_with("retry:")), "curl's stream opened");
    // The insert, as written, with the walk-through's DATABASE_URL (the admin's, here this test's).
    let insert = std::process::Command::new("sh").args(["-ec", inserting]).env("DATABASE_URL", &url).output().unwrap();
    assert!(insert.status.success(), "{}", String::from_utf8_lossy(&insert.stderr));
    let data = tokio::time::timeout(common::TIMEOUT, async {
        while let Ok(Some(line)) = received.next_line().await {
            if let Some(data) = line.strip_prefix("data: ") {
                return Some(data.to_string());
            }
        }
        None
    })
    .await
    .unwrap()
    .expect("an event on curl's stream");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&data).unwrap(), serde_json::json!({"id": 1, "item": "book"}));
    curl.start_kill().unwrap();
    let _ = std::fs::remove_file(secret_file);
    gateway.start_kill().unwrap();
    let _ = gateway.wait().await;
}
