//! Real browsers for tests: Debian's Chromium driven through playwright-core (`tests/browser/driver.mjs`),
//! one JSON command per line; and where tests leave what they show (screenshots).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use super::TIMEOUT;

const DRIVER_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser");

pub struct Browser {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    /// The driver's TMPDIR, where Playwright puts Chromium's profile and its artifacts: the driver is
    /// killed when the test ends, before it could remove them, so they go here rather than into /tmp.
    scratch: PathBuf,
}

static STARTED: AtomicUsize = AtomicUsize::new(0);

impl Browser {
    /// Starts the driver, or returns why it cannot run here. Under CI that is a failure: `.ci/run` installs
    /// Chromium and the driver's package; elsewhere `cargo test` says what to install and goes on.
    pub fn start() -> Option<Self> {
        let chromium = std::env::var("PGSSE_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let missing = if !Path::new(&chromium).exists() {
            Some(format!("{chromium} not found (apt-get install chromium)"))
        } else if !Path::new(DRIVER_DIR).join("node_modules/playwright-core").exists() {
            Some(format!("playwright-core not installed (npm ci --prefix {DRIVER_DIR})"))
        } else {
            None
        };
        if let Some(why) = missing {
            assert!(std::env::var_os("CI").is_none(), "browser test cannot run under CI: {why}");
            eprintln!("SKIPPED browser test: {why}; .ci/run installs both");
            return None;
        }
        let scratch = scratch_dir();
        let mut child = Command::new("node")
            .arg(Path::new(DRIVER_DIR).join("driver.mjs"))
            .current_dir(DRIVER_DIR)
            .env("TMPDIR", &scratch)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("node runs the browser driver");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        Some(Self { child, stdin, stdout, scratch })
    }

    pub async fn run(&mut self, mut cmd: Value) -> Value {
        cmd["timeout"] = json!(TIMEOUT.as_millis() as u64);
        let line = format!("{cmd}\n");
        self.stdin.write_all(line.as_bytes()).await.unwrap();
        let answer = tokio::time::timeout(TIMEOUT * 2, self.stdout.next_line())
            .await
            .expect("driver answered")
            .unwrap()
            .expect("driver alive");
        let answer: Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(answer["ok"], true, "{cmd}: {}", answer["error"]);
        answer["value"].clone()
    }

    pub async fn goto(&mut self, page: &str, url: &str) {
        self.run(json!({"op": "goto", "page": page, "url": url})).await;
    }

    pub async fn wait(&mut self, page: &str, js: &str) {
        self.run(json!({"op": "wait", "page": page, "js": js})).await;
    }

    pub async fn eval(&mut self, page: &str, js: &str) -> Value {
        self.run(json!({"op": "eval", "page": page, "js": js})).await
    }

    /// Waits until a line of `page`'s console contains `text`.
    pub async fn logged(&mut self, page: &str, text: &str) {
        self.run(json!({"op": "logged", "page": page, "text": text})).await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

/// A new scratch directory for one driver, named by this process and a count. Those of test processes
/// that are gone are removed first: Chromium may still have been writing to one as its driver was killed.
fn scratch_dir() -> PathBuf {
    let root = artifact_dir().join("tmp");
    for entry in std::fs::read_dir(&root).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = name.split('-').next().unwrap_or_default();
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    let dir = root.join(format!("{}-{}", std::process::id(), STARTED.fetch_add(1, Ordering::Relaxed)));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn artifact_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("browser");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
