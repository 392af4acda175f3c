//! The gateway under test as its own process, so its CPU time and RSS are its alone (read from /proc).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const CLOCK_TICKS_PER_SEC: f64 = 100.0;

pub struct Gateway {
    pub addr: SocketAddr,
    child: Child,
}

impl Gateway {
    /// Starts the gateway on a port it binds itself (`--listen 127.0.0.1:0`) and reads the address from
    /// its `serving` log line: a port picked here and released first could be taken in between.
    pub fn start(binary: &Path, database_url: &str, extra: &[&str]) -> Self {
        let mut child = Command::new(binary)
            .args(["serve", "--database-url", database_url, "--listen", "127.0.0.1:0"])
            // The load comes from eight addresses: lift the per-client and total limits above it.
            .args(["--max-connections", "20000", "--max-streams", "20000", "--max-streams-per-client", "20000"])
            .args(["--max-connections-per-client", "20000"])
            .args(extra)
            .env("PGSSE_LOG", "pgsse::server=info,warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the pgsse binary");
        let stdout = child.stdout.take().expect("piped");
        let (found, addr) = std::sync::mpsc::channel();
        // Reads the log to its end, so the gateway never blocks on a full pipe; its warnings go to stderr.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                match line.split(" serving addr=").nth(1).and_then(|rest| rest.split_whitespace().next()) {
                    Some(addr) => {
                        let _ = found.send(addr.parse::<SocketAddr>().expect("an address"));
                    }
                    None if line.contains(" WARN ") || line.contains(" ERROR ") => eprintln!("{line}"),
                    None => {}
                }
            }
        });
        let addr = addr.recv_timeout(Duration::from_secs(30)).expect("the gateway logged the address it serves");
        let gw = Self { addr, child };
        gw.wait_healthy();
        gw
    }

    fn get(&self, path: &str) -> Option<String> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(self.addr).ok()?;
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n").as_bytes()).ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        out.starts_with("HTTP/1.1 200").then_some(out)
    }

    fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.get("/healthz").is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("gateway did not become healthy");
    }

    /// Mean commit-to-broadcast lag in milliseconds, from the gateway's own histogram (database clock).
    pub fn broadcast_lag_mean_ms(&self) -> Option<f64> {
        let metrics = self.get("/metrics")?;
        let value = |name: &str| -> Option<f64> {
            metrics.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        };
        let (sum, count) = (value("pgsse_broadcast_lag_seconds_sum")?, value("pgsse_broadcast_lag_seconds_count")?);
        (count > 0.0).then(|| sum / count * 1000.0)
    }

    /// A gauge of the gateway's own `/metrics` (under `--auth none`), if it has it.
    pub fn metric(&self, name: &str) -> Option<f64> {
        let metrics = self.get("/metrics")?;
        metrics.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }

    /// The sum of a metric's series, labelled or not (`pgsse_streams_open` has one per channel).
    pub fn metric_sum(&self, name: &str) -> Option<f64> {
        let metrics = self.get("/metrics")?;
        let value = |l: &str| {
            let rest = l.strip_prefix(name)?;
            let rest = if rest.starts_with('{') { &rest[rest.find('}')? + 1..] } else { rest };
            rest.strip_prefix(' ')?.trim().parse::<f64>().ok()
        };
        Some(metrics.lines().filter_map(value).sum())
    }

    /// CPU seconds (user + system) the gateway has used so far.
    pub fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the parenthesised command name; utime and stime are the 12th and 13th of those.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        (ticks(11) + ticks(12)) / CLOCK_TICKS_PER_SEC
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident set size in bytes.
    pub fn rss_bytes(&self) -> u64 {
        rss_of(&format!("/proc/{}/status", self.child.id())).unwrap_or(0)
    }
}

/// VmRSS from a `/proc/<pid>/status` file, in bytes.
pub fn rss_of(status_path: &str) -> Option<u64> {
    let status = std::fs::read_to_string(status_path).ok()?;
    let kb = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().trim_end_matches("kB").trim().parse::<u64>();
    kb.ok().map(|kb| kb * 1024)
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}
