//! `post`: the HTTP write path (the article's `/send`) against a direct insert, side by side in one run:
//! 100 clients, 200 writes/s each way. Reports write-to-client latency and PostgreSQL's CPU per write
//! (all of the cluster's processes, read from /proc; only on the bench's own cluster).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use super::{account, Bench, Clients, Load, Report};
use crate::gateway::Gateway;

const CLIENTS: usize = 100;
const RATE: f64 = 200.0;
const WRITERS: usize = 2;
const PHASE: Duration = Duration::from_secs(8);

impl Bench {
    pub(super) async fn post(&self) -> Vec<Report> {
        let gw = Gateway::start(&self.gateway, &self.url, &[]);
        let mut reports = Vec::new();
        let mut cpu_per_write = Vec::new();
        for via_http in [false, true, false, true] {
            let t0 = Instant::now();
            let clients = Clients::connect(gw.addr, CLIENTS, t0).await;
            let start_id = self.head().await;
            let cpu0 = self.postgres_cpu_seconds();
            let started = Instant::now();
            let (writes, failed) = if via_http {
                post_at_rate(gw.addr, &self.payload, t0).await
            } else {
                let load = Load { clients: CLIENTS, rate: Some(RATE), writers: WRITERS, duration: PHASE, stalled: 0 };
                (self.write(&load, t0).await.0, 0)
            };
            let wrote_for = started.elapsed();
            let end_id = self.head().await;
            let cpu = self.postgres_cpu_seconds().zip(cpu0).map(|(after, before)| (after - before) / writes as f64);
            let all_seen = clients.drain(end_id).await;
            let expected = self.ids_between(start_id, end_id).await;
            let name = if via_http { "post: POST" } else { "post: INSERT" };
            let mut report = Report {
                scenario: name.into(),
                clients: CLIENTS,
                writers: WRITERS,
                target_rate: Some(RATE),
                inserts: writes,
                inserts_per_s: writes as f64 / wrote_for.as_secs_f64(),
                note: format!(
                    "PostgreSQL CPU per write {}{}",
                    cpu.map_or("- (not the bench's own cluster)".into(), |s| format!("{:.3} ms", s * 1000.0)),
                    if failed > 0 { format!("; {failed} POSTs failed") } else { String::new() }
                ),
                ..Report::default()
            };
            account(&mut report, &expected, all_seen, start_id, wrote_for);
            cpu_per_write.push((via_http, cpu));
            reports.push(report);
        }
        let mean = |http: bool| {
            let of: Vec<f64> = cpu_per_write.iter().filter(|(h, _)| *h == http).filter_map(|(_, c)| *c).collect();
            (!of.is_empty()).then(|| of.iter().sum::<f64>() / of.len() as f64)
        };
        let p50 = |http: bool| {
            let of: Vec<f64> = reports
                .iter()
                .filter(|r| r.scenario.ends_with("POST") == http)
                .filter_map(|r| r.latency_ms.map(|l| l.p50))
                .collect();
            of.iter().sum::<f64>() / of.len().max(1) as f64
        };
        let mut summary =
            format!("; p50 POST {:.2} ms, INSERT {:.2} ms (target: within 0.5 ms)", p50(true), p50(false));
        if let (Some(post), Some(insert)) = (mean(true), mean(false)) {
            summary += &format!("; PostgreSQL CPU per POST {:.1}x an INSERT's (target <= 3x)", post / insert);
        }
        if let Some(last) = reports.last_mut() {
            last.note += &summary;
        }
        reports
    }

    /// CPU seconds used so far by the bench's own cluster: the postmaster and every process it started.
    pub(super) fn postgres_cpu_seconds(&self) -> Option<f64> {
        let pid_file = std::fs::read_to_string(self.cluster.as_ref()?.data_dir.join("postmaster.pid")).ok()?;
        let postmaster: u32 = pid_file.lines().next()?.trim().parse().ok()?;
        let mut ticks = 0u64;
        for entry in std::fs::read_dir("/proc").ok()?.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else { continue };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
            // Fields after the command's closing parenthesis: state, ppid, ... utime (14th), stime (15th).
            let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) else { continue };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            if pid == postmaster || fields.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(postmaster) {
                ticks += fields.get(11).and_then(|t| t.parse::<u64>().ok()).unwrap_or(0);
                ticks += fields.get(12).and_then(|t| t.parse::<u64>().ok()).unwrap_or(0);
            }
        }
        Some(ticks as f64 / crate::gateway::CLOCK_TICKS_PER_SEC)
    }
}

/// POSTs rows to the gateway at [`RATE`] over [`WRITERS`] keep-alive connections for a [`PHASE`], each
/// stamped like an INSERT's; returns how many were answered 201 and how many were not.
async fn post_at_rate(addr: std::net::SocketAddr, pad: &str, t0: Instant) -> (u64, u64) {
    let (done, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let started = tokio::time::Instant::now();
    let period = Duration::from_secs_f64(WRITERS as f64 / RATE);
    let mut tasks = Vec::new();
    for i in 0..WRITERS as u32 {
        let (done, failed, pad) = (done.clone(), failed.clone(), pad.to_string());
        tasks.push(tokio::spawn(async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
            tokio::spawn(conn);
            let mut tick = tokio::time::interval_at(started + period * i / WRITERS as u32, period);
            while started.elapsed() < PHASE {
                tick.tick().await;
                let body = format!("{{\"sent\": {}, \"pad\": \"{pad}\"}}", t0.elapsed().as_micros());
                let req = hyper::Request::post(format!("http://{addr}/bench"))
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(body)))
                    .unwrap();
                let ok = match sender.send_request(req).await {
                    Ok(resp) => resp.status() == 201 && resp.into_body().collect().await.is_ok(),
                    Err(_) => false,
                };
                if ok { &done } else { &failed }.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    (done.load(Ordering::Relaxed), failed.load(Ordering::Relaxed))
}
