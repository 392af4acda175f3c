//! What a scenario measured: the report, its latency percentiles, how deliveries are accounted for, and
//! the printed table (or JSON).

use std::time::Duration;

use serde_json::json;

use crate::client::Seen;

#[derive(Default, serde::Serialize)]
pub(crate) struct Report {
    pub(crate) scenario: String,
    pub(crate) clients: usize,
    pub(crate) writers: usize,
    pub(crate) target_rate: Option<f64>,
    pub(crate) inserts: u64,
    pub(crate) inserts_per_s: f64,
    pub(crate) deliveries: u64,
    pub(crate) deliveries_per_s: f64,
    pub(crate) lost: u64,
    /// Streams cut for falling behind that resumed from their last id (each counted once per cut).
    pub(crate) resumed: u64,
    pub(crate) duplicated: u64,
    pub(crate) out_of_order: u64,
    pub(crate) latency_ms: Option<Percentiles>,
    pub(crate) gateway_cpu_pct: f64,
    pub(crate) gateway_rss_idle_mb: f64,
    pub(crate) gateway_rss_peak_mb: f64,
    pub(crate) note: String,
}

#[derive(serde::Serialize, Clone, Copy)]
pub(crate) struct Percentiles {
    pub(crate) p50: f64,
    pub(crate) p90: f64,
    pub(crate) p99: f64,
    pub(crate) p999: f64,
    pub(crate) max: f64,
}

impl Percentiles {
    pub(crate) fn of(mut samples: Vec<u32>) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let at = |q: f64| f64::from(samples[((samples.len() - 1) as f64 * q).round() as usize]) / 1000.0;
        Some(Self { p50: at(0.5), p90: at(0.9), p99: at(0.99), p999: at(0.999), max: at(1.0) })
    }
}

/// Inserts per second of a `write`.
pub(crate) fn rate((count, took, _): (u64, Duration, Vec<u32>)) -> f64 {
    count as f64 / took.as_secs_f64()
}

/// Sorts each client's ids against the log: what is missing, repeated, or out of order.
pub(crate) fn account(report: &mut Report, expected: &[i64], seen: Vec<Seen>, start_id: i64, wrote_for: Duration) {
    let mut latencies = Vec::new();
    for s in seen {
        latencies.extend(tally(report, expected, s, start_id));
    }
    report.deliveries_per_s = report.deliveries as f64 / wrote_for.as_secs_f64();
    report.latency_ms = Percentiles::of(latencies);
}

/// Adds what one client saw after `start_id` against what it should have (`expected`); returns its
/// latencies.
pub(crate) fn tally(report: &mut Report, expected: &[i64], s: Seen, start_id: i64) -> Vec<u32> {
    let ids: Vec<i64> = s.ids.iter().copied().filter(|id| *id > start_id).collect();
    let mut last = i64::MIN;
    let mut distinct = std::collections::HashSet::with_capacity(ids.len());
    for id in &ids {
        if !distinct.insert(*id) {
            report.duplicated += 1;
        } else if *id < last {
            report.out_of_order += 1;
        }
        last = last.max(*id);
    }
    report.lost += expected.iter().filter(|id| !distinct.contains(id)).count() as u64;
    report.resumed += u64::from(s.resumed);
    report.deliveries += ids.len() as u64;
    s.latencies_us
}

pub(crate) fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

pub(crate) fn print(reports: &[Report], as_json: bool) {
    if as_json {
        for r in reports {
            println!("{}", json!(r));
        }
        return;
    }
    println!(
        "{:<20} {:>7} {:>5} {:>9} {:>11} {:>5} {:>4} {:>4} {:>7} {:>7} {:>7} {:>7} {:>7} {:>6} {:>8} {:>8}",
        "scenario",
        "clients",
        "wrtr",
        "insert/s",
        "deliver/s",
        "lost",
        "dup",
        "ooo",
        "p50ms",
        "p90ms",
        "p99ms",
        "p999ms",
        "maxms",
        "cpu%",
        "rssIdleM",
        "rssPeakM"
    );
    for r in reports {
        let l = r.latency_ms;
        let ms = |f: fn(&Percentiles) -> f64| l.as_ref().map_or("-".to_string(), |p| format!("{:.2}", f(p)));
        println!(
            "{:<20} {:>7} {:>5} {:>9.0} {:>11.0} {:>5} {:>4} {:>4} {:>7} {:>7} {:>7} {:>7} {:>7} {:>6.1} {:>8.1} {:>8.1}",
            r.scenario,
            r.clients,
            r.writers,
            r.inserts_per_s,
            r.deliveries_per_s,
            r.lost,
            r.duplicated,
            r.out_of_order,
            ms(|p| p.p50),
            ms(|p| p.p90),
            ms(|p| p.p99),
            ms(|p| p.p999),
            ms(|p| p.max),
            r.gateway_cpu_pct,
            r.gateway_rss_idle_mb,
            r.gateway_rss_peak_mb,
        );
        if !r.note.is_empty() {
            println!("{:<20} {}", "", r.note);
        }
    }
}
