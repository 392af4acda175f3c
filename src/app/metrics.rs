//! `GET /metrics` in Prometheus text format (prometheus-client): read at scrape time from the counters the
//! hub, the listener and the limits keep anyway, so serving events costs nothing extra.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use prometheus_client::registry::Unit;

use crate::api::events::Events;
use crate::auth::Denials;
use crate::fanout::hub::Hub;
use crate::limits::Limits;
use crate::pg::replica::ReplicaStatus;
use crate::pg::status::ListenerStatus;

pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub struct Metrics {
    hub: Arc<Hub>,
    listener: Arc<ListenerStatus>,
    limits: Arc<Limits>,
    /// Whether `pgsse_streams_open` carries a series per channel.
    channel_labels: bool,
    events: Arc<Events>,
    denials: Arc<Denials>,
    /// How the hot standby keeps up, under `--replica-database-url`.
    replica: Option<Arc<ReplicaStatus>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    pub fn new(
        hub: Arc<Hub>,
        listener: Arc<ListenerStatus>,
        limits: Arc<Limits>,
        events: Arc<Events>,
        denials: Arc<Denials>,
        (channel_labels, replica): (bool, Option<Arc<ReplicaStatus>>),
    ) -> Arc<Self> {
        Arc::new(Self { hub, listener, limits, channel_labels, events, denials, replica })
    }

    pub fn render(self: &Arc<Self>) -> Result<String, std::fmt::Error> {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self.clone()));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry)?;
        Ok(out)
    }
}

fn counter(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> Result<(), std::fmt::Error> {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn counter_of(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: &AtomicU64,
) -> Result<(), std::fmt::Error> {
    counter(encoder, name, help, value.load(Ordering::Relaxed))
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: i64) -> Result<(), std::fmt::Error> {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

impl Collector for Metrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let streams = ConstGauge::new(0i64);
        let mut family = encoder.encode_descriptor(
            "pgsse_streams_open",
            "Open live subscriptions by channel (a stream on several channels counts in each).",
            None,
            streams.metric_type(),
        )?;
        let counts = self.hub.subscriber_counts();
        // Present at 0 too: a dashboard or alert on it then sees "no streams", not "no data".
        if counts.is_empty() {
            ConstGauge::new(0i64).encode(family)?;
        } else if self.channel_labels {
            for (channel, n) in counts {
                let labels = [("channel", channel)];
                ConstGauge::new(n as i64).encode(family.encode_family(&labels)?)?;
            }
        } else {
            let total: usize = counts.iter().map(|(_, n)| n).sum();
            ConstGauge::new(total as i64).encode(family)?;
        }
        counter(
            &mut encoder,
            "pgsse_heap_trims",
            "Times the gateway gave memory freed by a storm of connections back to the system.",
            self.limits.scavenger.trims(),
        )?;
        counter(
            &mut encoder,
            "pgsse_log_lines_dropped",
            "Log lines dropped because the log's output (stdout) did not keep up.",
            crate::logging::dropped(),
        )?;
        let listener = &self.listener;
        counter(
            &mut encoder,
            "pgsse_events_received",
            "Events read from the log by the listener.",
            listener.events_received(),
        )?;
        let skipped = ConstCounter::new(0u64);
        let mut family = encoder.encode_descriptor(
            "pgsse_events_skipped",
            "Rows of the log that were not delivered: beyond_sequence (an id the sequence never issued), \
             undecodable (a payload that is not UTF-8).",
            None,
            skipped.metric_type(),
        )?;
        for (reason, n) in
            [("beyond_sequence", listener.skipped_beyond_sequence()), ("undecodable", listener.skipped_undecodable())]
        {
            ConstCounter::new(n).encode(family.encode_family(&[("reason", reason)])?)?;
        }
        counter(
            &mut encoder,
            "pgsse_sequencing_steps",
            "Sequencing steps this gateway ran; one gateway steps, the others read the batches it announces.",
            listener.sequencing_steps(),
        )?;
        gauge(
            &mut encoder,
            "pgsse_sequencing",
            "1 while this gateway is the one running the sequencing step.",
            i64::from(listener.is_stepping() && listener.is_up()),
        )?;
        counter(
            &mut encoder,
            "pgsse_subscribers_cut",
            "Streams ended for falling behind (they resume from the log).",
            self.hub.cut_slow_total(),
        )?;
        counter(
            &mut encoder,
            "pgsse_listener_reconnects",
            "Times the LISTEN connection was lost while serving (outages, not retries).",
            listener.reconnects(),
        )?;
        counter(
            &mut encoder,
            "pgsse_listener_failed_attempts",
            "Tries to connect the LISTEN connection (or catch it up) that failed.",
            listener.failed_attempts(),
        )?;
        gauge(
            &mut encoder,
            "pgsse_listener_up",
            "1 while the LISTEN connection is up and caught up.",
            i64::from(listener.is_up()),
        )?;
        gauge(
            &mut encoder,
            "pgsse_listener_polling",
            "1 while commits come so fast that the listener reads the log every few ms instead of per NOTIFY.",
            i64::from(listener.is_polling()),
        )?;
        gauge(&mut encoder, "pgsse_last_event_id", "Highest event id broadcast.", self.hub.last_id().unwrap_or(0))?;
        gauge(
            &mut encoder,
            "pgsse_mercure_subscribers",
            "Open Mercure subscriptions (/.well-known/mercure), live.",
            self.hub.update_subscribers() as i64,
        )?;
        let usage = ConstGauge::new(listener.notification_queue_usage());
        usage.encode(encoder.encode_descriptor(
            "pgsse_notification_queue_usage",
            "pg_notification_queue_usage() at the listener's last liveness probe (0 to 1).",
            None,
            usage.metric_type(),
        )?)?;
        gauge(
            &mut encoder,
            "pgsse_pending_events",
            "Events committed but not yet given ids (staged), at the listener's last probe.",
            listener.pending_events() as i64,
        )?;
        if let Some(replica) = &self.replica {
            gauge(
                &mut encoder,
                "pgsse_replica_lag_bytes",
                "WAL the standby had still to replay at the listener's last read (--replica-database-url).",
                replica.lag_bytes.load(Ordering::Relaxed) as i64,
            )?;
            let waited = ConstGauge::new(replica.lag_seconds());
            waited.encode(encoder.encode_descriptor(
                "pgsse_replica_lag_seconds",
                "How long the last read on the standby waited for it to replay what it must see.",
                None,
                waited.metric_type(),
            )?)?;
            counter_of(
                &mut encoder,
                "pgsse_replica_barrier_waits",
                "Reads that waited for the standby.",
                &replica.waits,
            )?;
            let total = ConstCounter::new(replica.waited_us.load(Ordering::Relaxed) as f64 / 1e6);
            total.encode(encoder.encode_descriptor(
                "pgsse_replica_barrier_wait_seconds",
                "Time reads spent waiting for the standby, in all.",
                None,
                total.metric_type(),
            )?)?;
        }
        let oldest = ConstGauge::new(listener.oldest_pending_seconds());
        oldest.encode(encoder.encode_descriptor(
            "pgsse_oldest_pending_seconds",
            "Age of the oldest event committed but not yet given an id, at the listener's last probe (0: none).",
            None,
            oldest.metric_type(),
        )?)?;
        let lag = self.listener.lag();
        lag.encode(encoder.encode_descriptor(
            "pgsse_broadcast_lag",
            "Time from an event's commit to its broadcast, on the database's clock.",
            Some(&Unit::Seconds),
            lag.metric_type(),
        )?)?;
        let (sent, opened) = (self.events.sent(), self.events.counters());
        for (name, help, counter) in [
            ("pgsse_frames_sent", "Live event frames handed to client connections.", &sent.frames),
            (
                "pgsse_bytes_sent",
                "Bytes of SSE handed to client connections, replays and heartbeats included.",
                &sent.bytes,
            ),
            ("pgsse_replays", "Streams that resumed from the log (Last-Event-ID).", &opened.replays),
            ("pgsse_events_replayed", "Events sent from the log to resuming streams.", &opened.events_replayed),
            ("pgsse_snapshots", "Streams that started with a snapshot of their tables.", &opened.snapshots),
            (
                "pgsse_snapshot_queries",
                "Snapshots read from the database (identical requests arriving together share one).",
                &opened.snapshot_queries,
            ),
        ] {
            counter_of(&mut encoder, name, help, counter)?;
        }
        gauge(
            &mut encoder,
            "pgsse_streams_parked",
            "Quiet plain-HTTP/1.1 streams handed to the parking thread (--park-idle-streams).",
            sent.parked.load(Ordering::Relaxed) as i64,
        )?;
        let denied = ConstCounter::new(0u64);
        let mut family = encoder.encode_descriptor(
            "pgsse_auth_denials",
            "Requests refused by access control.",
            None,
            denied.metric_type(),
        )?;
        for (reason, value) in
            [("unauthenticated", &self.denials.unauthenticated), ("forbidden", &self.denials.forbidden)]
        {
            ConstCounter::new(value.load(Ordering::Relaxed)).encode(family.encode_family(&[("reason", reason)])?)?;
        }
        let rejections = &self.limits.rejections;
        let refused = ConstCounter::new(0u64);
        let mut family = encoder.encode_descriptor(
            "pgsse_limit_rejections",
            "Requests refused by a limit, by kind.",
            None,
            refused.metric_type(),
        )?;
        for (kind, value) in [
            ("streams_total", &rejections.streams_total),
            ("streams_per_client", &rejections.streams_per_client),
            ("connections_per_client", &rejections.connections_per_client),
            ("url_too_long", &rejections.url_too_long),
            ("body_too_large", &rejections.body_too_large),
            ("snapshots", &rejections.snapshots),
        ] {
            ConstCounter::new(value.load(Ordering::Relaxed)).encode(family.encode_family(&[("kind", kind)])?)?;
        }
        Ok(())
    }
}
