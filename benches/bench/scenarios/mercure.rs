//! `mercure`: the Mercure hub under load. 1,000 anonymous subscribers over 100 topics (`match=`, ten per
//! topic), 1,000 updates/s published by HTTP over 8 keep-alive connections; then the same shape natively,
//! as 100 channels of ten streams each (`POST /{channel}`), and as one table channel whose 1,000 streams
//! each filter one of 100 keys (`?k=eq.<k>`, `POST /bench_topics`); all under `--auth jwt`. Reports
//! deliveries, latency from the POST to the subscriber, and the gateway's CPU per delivery, side by side.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use super::{mb, tally, Bench, Clients, Percentiles, Report};
use crate::gateway::Gateway;

const CLIENTS: usize = 1000;
const TOPICS: usize = 100;
const RATE: f64 = 1000.0;
const PUBLISHERS: usize = 8;
const PHASE: Duration = Duration::from_secs(10);
const SECRET: &str = "a bench secret that is long enough, really";

/// How subscribers select, and publishers publish, in one phase.
#[derive(Clone, Copy, PartialEq)]
enum Shape {
    /// Mercure topics, `match=`.
    Mercure,
    /// A native channel per topic.
    Channels,
    /// One native table channel, each stream filtering one key.
    Filtered,
}

fn topic(k: usize) -> String {
    format!("https://bench.example/topics/{k}")
}

/// A Mercure publisher's token, or a native one (`pgsse` grant) that may read and write everything.
fn token(native: bool) -> String {
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 3600;
    let (header, claims) = if native {
        (
            jsonwebtoken::Header::default(),
            serde_json::json!({"exp": exp, "pgsse": {"subscribe": ["*"], "publish": ["*"]}}),
        )
    } else {
        let detail = serde_json::json!({"type": "https://mercure.rocks/authorization-detail", "actions": ["publish"],
                                        "topics": [{"match": "*"}]});
        let header = jsonwebtoken::Header { typ: Some("at+jwt".into()), ..Default::default() };
        (header, serde_json::json!({"exp": exp, "authorization_details": [detail]}))
    };
    jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
}

impl Bench {
    pub(super) async fn mercure(&self) -> Vec<Report> {
        for k in 0..TOPICS {
            self.db.execute("SELECT pgsse.create_channel($1)", &[&format!("t{k}")]).await.expect("a channel");
        }
        self.db
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS bench_topics (id bigserial PRIMARY KEY, k int NOT NULL, sent bigint, pad text);
                 SELECT pgsse.publish_table('bench_topics', writable => true);",
            )
            .await
            .expect("the filtered table");
        let mut reports = Vec::new();
        for shape in [Shape::Mercure, Shape::Channels, Shape::Filtered] {
            reports.push(self.mercure_phase(shape).await);
        }
        reports
    }

    async fn mercure_phase(&self, shape: Shape) -> Report {
        let native = shape != Shape::Mercure;
        let flags = ["--auth", "jwt", "--jwt-secret", SECRET, "--mercure", "--mercure-anonymous"];
        let gw = Gateway::start(&self.gateway, &self.url, &flags);
        let t0 = Instant::now();
        let reader = token(true);
        let path_of = move |i: usize, after: Option<i64>| {
            let after = match after {
                None => String::new(),
                Some(after) if native => format!("&last_event_id={after}"),
                Some(after) => format!("&last_event_id=%23{after}"),
            };
            if shape == Shape::Filtered {
                format!("/bench_topics/events?k=eq.{}&access_token={reader}{after}", i % TOPICS)
            } else if native {
                format!("/t{}/events?access_token={reader}{after}", i % TOPICS)
            } else {
                let query: String =
                    form_urlencoded::Serializer::new(String::new()).append_pair("match", &topic(i % TOPICS)).finish();
                format!("/.well-known/mercure?{query}{after}")
            }
        };
        let clients = Clients::connect_to(gw.addr, CLIENTS, t0, Arc::new(path_of)).await;
        let rss_idle = gw.rss_bytes();
        let cpu0 = gw.cpu_seconds();
        let started = Instant::now();
        let (published, failed) = publish_at_rate(gw.addr, &self.payload, t0, shape).await;
        let wrote_for = started.elapsed();
        let mut by_topic: Vec<Vec<i64>> = vec![Vec::new(); TOPICS];
        for (k, id) in &published {
            by_topic[*k].push(*id);
        }
        for ids in &mut by_topic {
            ids.sort_unstable();
        }
        let through: Vec<i64> = (0..CLIENTS).map(|i| by_topic[i % TOPICS].last().copied().unwrap_or(0)).collect();
        let seen = clients.drain_each(&through).await;
        let cpu_seconds = gw.cpu_seconds() - cpu0;

        let mut report = Report {
            scenario: match shape {
                Shape::Mercure => "mercure",
                Shape::Channels => "mercure: native",
                Shape::Filtered => "mercure: native filtered",
            }
            .into(),
            clients: CLIENTS,
            writers: PUBLISHERS,
            target_rate: Some(RATE),
            inserts: published.len() as u64,
            inserts_per_s: published.len() as f64 / wrote_for.as_secs_f64(),
            gateway_cpu_pct: cpu_seconds / started.elapsed().as_secs_f64() * 100.0,
            gateway_rss_idle_mb: mb(rss_idle),
            gateway_rss_peak_mb: mb(gw.rss_bytes()),
            ..Report::default()
        };
        let mut latencies = Vec::new();
        for (i, s) in seen.into_iter().enumerate() {
            latencies.extend(tally(&mut report, &by_topic[i % TOPICS], s, 0));
        }
        report.deliveries_per_s = report.deliveries as f64 / wrote_for.as_secs_f64();
        report.latency_ms = Percentiles::of(latencies);
        report.note = format!(
            "{TOPICS} {}, {} subscribers each, published by POST; gateway CPU {:.1} µs per delivery{}",
            match shape {
                Shape::Mercure => "topics",
                Shape::Channels => "channels",
                Shape::Filtered => "keys of one table channel",
            },
            CLIENTS / TOPICS,
            cpu_seconds * 1e6 / report.deliveries.max(1) as f64,
            if failed > 0 { format!("; {failed} POSTs failed") } else { String::new() }
        );
        report
    }
}

/// Publishes updates at [`RATE`] over [`PUBLISHERS`] keep-alive connections for a [`PHASE`], topics (or
/// channels) in turn, each stamped with when it was sent; returns each answered update's topic and log
/// id, and how many were not answered.
async fn publish_at_rate(addr: std::net::SocketAddr, pad: &str, t0: Instant, shape: Shape) -> (Vec<(usize, i64)>, u64) {
    let token = Arc::new(format!("Bearer {}", token(shape != Shape::Mercure)));
    let started = tokio::time::Instant::now();
    let period = Duration::from_secs_f64(PUBLISHERS as f64 / RATE);
    let mut tasks = Vec::new();
    for p in 0..PUBLISHERS {
        let (pad, token) = (pad.to_string(), token.clone());
        tasks.push(tokio::spawn(async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
            tokio::spawn(conn);
            let mut tick = tokio::time::interval_at(started + period * p as u32 / PUBLISHERS as u32, period);
            let (mut published, mut failed, mut n) = (Vec::new(), 0u64, p);
            while started.elapsed() < PHASE {
                tick.tick().await;
                let k = n % TOPICS;
                n += PUBLISHERS;
                let data = format!("{{\"sent\": {}, \"pad\": \"{pad}\"}}", t0.elapsed().as_micros());
                let (uri, kind, body) = if shape == Shape::Filtered {
                    let row = format!("{{\"k\": {k}, \"sent\": {}, \"pad\": \"{pad}\"}}", t0.elapsed().as_micros());
                    (format!("http://{addr}/bench_topics"), "application/json", row)
                } else if shape == Shape::Channels {
                    (format!("http://{addr}/t{k}"), "application/json", data)
                } else {
                    let form = form_urlencoded::Serializer::new(String::new())
                        .append_pair("topic", &topic(k))
                        .append_pair("data", &data)
                        .finish();
                    (format!("http://{addr}/.well-known/mercure"), "application/x-www-form-urlencoded", form)
                };
                let req = hyper::Request::post(uri)
                    .header("content-type", kind)
                    .header("authorization", token.as_str())
                    .body(Full::new(Bytes::from(body)))
                    .unwrap();
                let (status, event_id, body) = match sender.send_request(req).await {
                    Ok(resp) => {
                        let status = resp.status();
                        let event_id = resp.headers().get("pgsse-event-id").and_then(|v| v.to_str().ok()?.parse().ok());
                        let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        (status, event_id, body)
                    }
                    Err(err) => (hyper::StatusCode::BAD_GATEWAY, None, Bytes::from(err.to_string())),
                };
                let id: Option<i64> = match shape {
                    Shape::Mercure => std::str::from_utf8(&body).ok().and_then(|b| b.strip_prefix('#')?.parse().ok()),
                    Shape::Channels | Shape::Filtered => event_id,
                };
                if id.is_none() && failed == 0 {
                    eprintln!("a publication failed: {status} {}", String::from_utf8_lossy(&body));
                }
                match id {
                    Some(id) => published.push((k, id)),
                    None => failed += 1,
                }
            }
            (published, failed)
        }));
    }
    let (mut all, mut failed) = (Vec::new(), 0);
    for task in tasks {
        let (published, lost) = task.await.unwrap();
        all.extend(published);
        failed += lost;
    }
    (all, failed)
}
