//! The replay and its seam to live frames, driven through the narrow handle on a real database: the log
//! is written as production writes it, and the hub is fed by hand where the listener would feed it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::fanout::hub::Event;
use crate::fanout::queue::Frame;
use crate::testing;

const TIMEOUT: Duration = Duration::from_secs(20);

struct Log {
    admin: tokio_postgres::Client,
    events: Arc<Events>,
    hub: Arc<Hub>,
}

impl Log {
    /// A fresh database whose channel `c` holds events with data `{"n": 1}` .. `{"n": n}`, and the handle a
    /// gateway running as the gateway role would have on it.
    async fn with(n: i64) -> Self {
        let url = testing::fresh_db().await;
        let admin = testing::connect(&url).await;
        admin.batch_execute("SELECT pgsse.create_channel('c')").await.unwrap();
        for i in 1..=n {
            admin.execute("SELECT pgsse.publish('c', 'm', jsonb_build_object('n', $1::int8))", &[&i]).await.unwrap();
        }
        testing::sequence_staged(&admin).await;
        let gateway = testing::as_role(&url, testing::GATEWAY_ROLE);
        let store = Arc::new(Store::new(&gateway, 2, TIMEOUT).unwrap());
        let hub = Arc::new(Hub::new(16));
        let args = StreamArgs {
            heartbeat: Duration::from_secs(60),
            retry: Duration::from_secs(1),
            queue_capacity: 16,
            max_channels: 4,
            snapshot_max_rows: 100,
        };
        let events = Events::new(store, hub.clone(), Arc::default(), args, TIMEOUT, CancellationToken::new());
        Self { admin, events, hub }
    }

    async fn ids(&self) -> Vec<i64> {
        let rows = self.admin.query("SELECT id FROM pgsse.events ORDER BY id", &[]).await.unwrap();
        rows.iter().map(|row| row.get(0)).collect()
    }

    /// What the listener hands the hub for the logged event `id`.
    async fn broadcast(&self, id: i64) {
        let row = self.admin.query_one("SELECT payload::text FROM pgsse.events WHERE id = $1", &[&id]).await.unwrap();
        let data: String = row.get(0);
        let frame = Frame { id, bytes: sse::encode(id, "m", &data).unwrap() };
        self.hub.broadcast(vec![Event::new("c".into(), frame, Bytes::from(data), None, false)]);
    }

    async fn open(&self, resume: Option<i64>, filters: ChannelFilters) -> SseBody {
        let limits = Arc::new(crate::limits::Limits::new(&crate::config::Config::new("postgres://x").unwrap().limits));
        let gate = limits.snapshot_gate(std::net::Ipv4Addr::LOCALHOST.into());
        self.events.open(vec!["c".into()], resume, None, filters, None, &gate).await.unwrap()
    }

    async fn subscribed(&self) {
        let started = Instant::now();
        while self.hub.subscriber_counts().iter().all(|(_, n)| *n == 0) {
            assert!(started.elapsed() < TIMEOUT, "the replay never went live");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Reads the body until it holds `n` events; returns each one's `id:` and `data:` lines.
async fn read(body: &mut SseBody, n: usize) -> Vec<(i64, String)> {
    let mut text = String::new();
    let parsed = |text: &str| -> Vec<(i64, String)> {
        text.split("\n\n")
            .filter_map(|block| {
                let field = |name: &str| block.lines().find_map(|l| l.strip_prefix(name)).map(str::to_string);
                Some((field("id: ")?.parse().ok()?, field("data: ")?))
            })
            .collect()
    };
    while parsed(&text).len() < n {
        let frame = tokio::time::timeout(TIMEOUT, body.frame()).await.expect("a frame in time");
        let data = frame.expect("the stream goes on").unwrap().into_data().unwrap();
        text.push_str(std::str::from_utf8(&data).unwrap());
    }
    parsed(&text)
}

#[tokio::test]
async fn a_resumed_stream_replays_the_log_then_goes_live_with_no_gap_and_no_duplicate() {
    let log = Log::with(3).await;
    let ids = log.ids().await;
    // The listener has broadcast the first two events and not yet the third.
    log.hub.start_at(ids[1]);
    let mut body = log.open(Some(ids[0]), ChannelFilters::new()).await;
    let replayed = read(&mut body, 2).await;
    assert_eq!(replayed, [(ids[1], r#"{"n": 2}"#.into()), (ids[2], r#"{"n": 3}"#.into())]);

    log.subscribed().await;
    log.admin.execute("SELECT pgsse.publish('c', 'm', '{\"n\": 4}')", &[]).await.unwrap();
    testing::sequence_staged(&log.admin).await;
    let fourth = *log.ids().await.last().unwrap();
    // Live: the third event, which the replay already sent, then the fourth.
    log.broadcast(ids[2]).await;
    log.broadcast(fourth).await;
    assert_eq!(read(&mut body, 1).await, [(fourth, r#"{"n": 4}"#.into())]);
}

#[tokio::test]
async fn a_stream_resumed_beyond_the_log_is_reset_to_its_head() {
    let log = Log::with(2).await;
    let ids = log.ids().await;
    log.hub.start_at(ids[1]);
    let mut body = log.open(Some(ids[1] + 1000), ChannelFilters::new()).await;
    let reset = read(&mut body, 1).await;
    assert_eq!(reset, [(ids[1], format!(r#"{{"from":{},"reason":"unknown_id"}}"#, ids[1]))]);
}

#[tokio::test]
async fn a_replay_sends_only_the_rows_its_filter_matches() {
    let log = Log::with(4).await;
    let ids = log.ids().await;
    log.hub.start_at(ids[3]);
    let filter = Arc::new(Filter::parse([("n", "gte.3")]).unwrap());
    let mut body = log.open(Some(0), ChannelFilters::from([("c".to_string(), filter)])).await;
    assert_eq!(read(&mut body, 2).await, [(ids[2], r#"{"n": 3}"#.into()), (ids[3], r#"{"n": 4}"#.into())]);
    assert_eq!(log.events.counters().events_replayed.load(Ordering::Relaxed), 2);
}

#[test]
fn reset_frame_carries_its_resume_point() {
    let frame = reset_frame(40, "pruned");
    assert_eq!(&frame[..], b"id: 40\nevent: reset\ndata: {\"from\":40,\"reason\":\"pruned\"}\n\n");
}
