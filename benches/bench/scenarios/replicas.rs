//! `replicas`: four gateways reading the log on two hot standbys of the bench's cluster, beside the same
//! load on four gateways reading the primary: 1,000 clients over the gateways, 500 inserts/s. Reports exact
//! delivery, latency, and the primary's CPU per delivered event (all of its processes, its WAL sender
//! included), which gateways on the standby should not raise; then 1, 4 and 16 gateways at 200 inserts/s.

use std::time::{Duration, Instant};

use super::{account, Bench, Clients, Load, Report};
use crate::gateway::Gateway;

const GATEWAYS: usize = 4;
const STANDBYS: usize = 2;
const CLIENTS: usize = 1000;
const RATE: f64 = 500.0;
const WRITERS: usize = 2;
const PHASE: Duration = Duration::from_secs(10);

impl Bench {
    pub(super) async fn replicas(&self) -> Vec<Report> {
        let Some(cluster) = &self.cluster else {
            let note = "needs the bench's own cluster (no --database-url)".to_string();
            return vec![Report { scenario: "replicas".into(), note, ..Report::default() }];
        };
        let mut standbys = Vec::new();
        for n in 0..STANDBYS {
            let dir = std::env::temp_dir().join(format!("pgsse-bench-standby-{}-{n}", std::process::id()));
            let port = {
                let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
                probe.local_addr().expect("its address").port()
            };
            match cluster.standby(&dir, port, "hot_standby_feedback = on") {
                Ok(standby) => standbys.push(standby),
                Err(err) => {
                    let note = format!("no standby: {err}");
                    return vec![Report { scenario: "replicas".into(), note, ..Report::default() }];
                }
            }
        }
        let urls: Vec<String> = standbys.iter().map(|s| s.url("postgres")).collect();
        let mut reports = vec![self.replica_phase(&[]).await, self.replica_phase(&urls).await];
        for gateways in [1, 4, 16] {
            reports.push(self.sequencing(gateways, &[]).await);
        }
        for gateways in [1, 4, 16] {
            reports.push(self.sequencing(gateways, &urls).await);
        }
        for standby in standbys {
            let _ = standby.stop("fast");
            let _ = std::fs::remove_dir_all(&standby.data_dir);
        }
        reports
    }

    /// `n` gateways reading the primary, or spread over `standbys` in turn.
    fn gateways_over(&self, n: usize, standbys: &[String]) -> Vec<Gateway> {
        (0..n)
            .map(|i| {
                let extra: Vec<&str> = match standbys {
                    [] => Vec::new(),
                    _ => vec!["--replica-database-url", &standbys[i % standbys.len()]],
                };
                Gateway::start(&self.gateway, &self.url, &extra)
            })
            .collect()
    }

    /// The primary's CPU per insert with `gateways` attached (reading the primary, or spread over
    /// `standbys`) and no client: one of them runs the sequencing step, the others read its batches.
    async fn sequencing(&self, gateways: usize, standbys: &[String]) -> Report {
        let attached = self.gateways_over(gateways, standbys);
        let steps = || attached.iter().filter_map(|gw| gw.metric("pgsse_sequencing_steps_total")).sum::<f64>();
        let (cpu0, steps0) = (self.postgres_cpu_seconds(), steps());
        let load =
            Load { clients: 0, rate: Some(200.0), writers: WRITERS, duration: Duration::from_secs(5), stalled: 0 };
        let (inserts, wrote_for, _) = self.write(&load, Instant::now()).await;
        let cpu = self.postgres_cpu_seconds().zip(cpu0).map(|(after, before)| after - before);
        let stepped = steps() - steps0;
        drop(attached);
        let on = if standbys.is_empty() { "primary" } else { "standbys" };
        Report {
            scenario: format!("replicas: {gateways} on {on}"),
            writers: WRITERS,
            target_rate: Some(200.0),
            inserts,
            inserts_per_s: inserts as f64 / wrote_for.as_secs_f64(),
            note: format!(
                "{gateways} gateways reading the {on}, no clients; primary CPU {} per insert; {:.2} steps per insert",
                cpu.map_or("-".into(), |s| format!("{:.0} µs", s * 1e6 / inserts.max(1) as f64)),
                stepped / inserts.max(1) as f64
            ),
            ..Report::default()
        }
    }

    /// `GATEWAYS` gateways reading the primary, or spread over `standbys`.
    async fn replica_phase(&self, standbys: &[String]) -> Report {
        let gateways = self.gateways_over(GATEWAYS, standbys);
        let standby = (!standbys.is_empty()).then_some(());
        let t0 = Instant::now();
        let start_id = self.head().await;
        let mut clients = Vec::with_capacity(GATEWAYS);
        for gw in &gateways {
            clients.push(Clients::connect(gw.addr, CLIENTS / GATEWAYS, t0).await);
        }
        let cpu0 = self.postgres_cpu_seconds();
        let load = Load { clients: CLIENTS, rate: Some(RATE), writers: WRITERS, duration: PHASE, stalled: 0 };
        let (inserts, wrote_for, _) = self.write(&load, t0).await;
        let end_id = self.head().await;
        let mut seen = Vec::with_capacity(CLIENTS);
        for group in clients {
            seen.extend(group.drain(end_id).await);
        }
        let cpu = self.postgres_cpu_seconds().zip(cpu0).map(|(after, before)| after - before);
        let lag: Vec<String> = gateways
            .iter()
            .filter_map(|gw| gw.metric("pgsse_replica_lag_seconds"))
            .map(|s| format!("{:.1}", s * 1000.0))
            .collect();
        let expected = self.ids_between(start_id, end_id).await;
        let mut report = Report {
            scenario: if standby.is_some() { "replicas: standby" } else { "replicas: primary" }.into(),
            clients: CLIENTS,
            writers: WRITERS,
            target_rate: Some(RATE),
            inserts,
            inserts_per_s: inserts as f64 / wrote_for.as_secs_f64(),
            ..Report::default()
        };
        account(&mut report, &expected, seen, start_id, wrote_for);
        report.note = format!(
            "{GATEWAYS} gateways reading the {}; primary CPU {} per delivered event{}",
            if standby.is_some() { "two standbys" } else { "primary" },
            cpu.map_or("-".into(), |s| format!("{:.2} µs ({:.2} s)", s * 1e6 / report.deliveries.max(1) as f64, s)),
            if lag.is_empty() {
                String::new()
            } else {
                format!("; last barrier wait per gateway {} ms", lag.join(", "))
            }
        );
        report
    }
}
