//! The hub's delivery, tested without a database: routing, filters, moves, slow subscribers, rewind.

use super::*;
use std::task::{Context, Poll, Waker};

/// A frame shown by [`take`] as `1;`, and as `a/1;` on a stream of several channels.
fn frame(id: i64) -> Frame {
    Frame { id, bytes: Bytes::from(format!("event: {id};")) }
}

fn event(channel: &str, id: i64) -> Event {
    let data = Bytes::from(format!("{{\"n\": {id}}}"));
    Event::new(channel.into(), frame(id), data, None, false)
}

/// What the stream body would take now: `Some(text)` of the ready frames, `None` when ended.
fn take(sub: &Subscription) -> Poll<Option<String>> {
    let mut cx = Context::from_waker(Waker::noop());
    let text = |bytes: Bytes| String::from_utf8(bytes.to_vec()).unwrap().replace("event: ", "");
    sub.queue.poll_chunk(&mut cx, 0, usize::MAX).map(|c| c.map(|(b, _)| text(b)))
}

fn ready(text: &str) -> Poll<Option<String>> {
    Poll::Ready(Some(text.to_string()))
}

#[test]
fn refuses_until_started_and_after_close() {
    let hub = Arc::new(Hub::new(4));
    assert_eq!(hub.subscribe(&["a".into()], &ChannelFilters::new()).err(), Some(HubError::NotStarted));
    hub.start_at(10);
    hub.start_at(99);
    let (_sub, last) = hub.subscribe(&["a".into()], &ChannelFilters::new()).unwrap();
    assert_eq!(last, 10);
    hub.close();
    assert_eq!(hub.subscribe(&["a".into()], &ChannelFilters::new()).err(), Some(HubError::Closed));
}

#[test]
fn routes_by_channel_and_shares_bytes() {
    let hub = Arc::new(Hub::new(4));
    hub.start_at(0);
    let (a, _) = hub.subscribe(&["a".into()], &ChannelFilters::new()).unwrap();
    let (ab, _) = hub.subscribe(&["a".into(), "b".into()], &ChannelFilters::new()).unwrap();
    hub.broadcast(vec![event("a", 1), event("b", 2), event("c", 3)]);
    assert_eq!(take(&a), ready("1;"));
    assert_eq!(take(&a), Poll::Pending);
    assert_eq!(take(&ab), ready("a/1;b/2;"), "a stream of several channels gets each event's channel");
    assert_eq!(hub.last_id(), Some(3));
    let (_, last) = hub.subscribe(&["c".into()], &ChannelFilters::new()).unwrap();
    assert_eq!(last, 3);
}

#[test]
fn runs_of_one_channel_wake_each_stream_once_and_keep_id_order() {
    let hub = Arc::new(Hub::new(8));
    hub.start_at(0);
    let (a, _) = hub.subscribe(&["a".into()], &ChannelFilters::new()).unwrap();
    let (ab, _) = hub.subscribe(&["a".into(), "b".into()], &ChannelFilters::new()).unwrap();
    assert_eq!((take(&a), take(&ab)), (Poll::Pending, Poll::Pending), "both wait, wakers registered");
    let woken = hub.broadcast(vec![event("a", 1), event("a", 2), event("b", 3), event("a", 4)]);
    assert_eq!(woken, 2, "one wakeup per waiting stream, not per event");
    assert_eq!(take(&a), ready("1;2;4;"));
    assert_eq!(take(&ab), ready("a/1;a/2;b/3;a/4;"));
    assert_eq!(hub.broadcast(vec![event("c", 5)]), 0, "no subscriber, no wakeup");
}

#[test]
fn full_queue_cuts_only_that_subscriber_after_its_queued_frames() {
    let hub = Arc::new(Hub::new(2));
    hub.start_at(0);
    let (slow, _) = hub.subscribe(&["a".into(), "b".into()], &ChannelFilters::new()).unwrap();
    let (fast, _) = hub.subscribe(&["a".into()], &ChannelFilters::new()).unwrap();
    for id in 1..=3 {
        hub.broadcast(vec![event("a", id)]);
        assert_eq!(take(&fast), ready(&format!("{id};")));
    }
    assert_eq!(hub.cut_slow_total(), 1);
    assert_eq!(take(&slow), ready("a/1;a/2;"));
    assert_eq!(take(&slow), Poll::Ready(None));
    assert_eq!(hub.subscriber_counts(), vec![("a".to_string(), 1)]);
}

#[test]
fn rewind_moves_the_position_back_and_ends_streams() {
    let hub = Arc::new(Hub::new(2));
    hub.start_at(50);
    let (sub, _) = hub.subscribe(&["a".into()], &ChannelFilters::new()).unwrap();
    hub.rewind(20);
    assert_eq!(take(&sub), Poll::Ready(None));
    let (_, last) = hub.subscribe(&["a".into()], &ChannelFilters::new()).unwrap();
    assert_eq!(last, 20);
}

#[test]
fn updates_that_move_rows_across_a_filter_become_inserts_and_deletes() {
    let hub = Arc::new(Hub::new(16));
    hub.start_at(0);
    let open = Arc::new(Filter::parse([("status", "eq.open")]).unwrap());
    let (filtered, _) = hub.subscribe(&["a".into()], &ChannelFilters::from([("a".to_string(), open.clone())])).unwrap();
    let (all, _) = hub.subscribe(&["a".into()], &ChannelFilters::new()).unwrap();
    let both = ChannelFilters::from([("a".to_string(), open)]);
    let (named, _) = hub.subscribe(&["a".into(), "b".into()], &both).unwrap();
    let row = |status: &str| format!("{{\"status\":\"{status}\"}}");
    let update = |id: i64, old: &str, new: &str| {
        let moved = UpdateRows { old: row(old), new: None, insert_event: "ins".into(), delete_event: "del".into() };
        let frame = Frame { id, bytes: sse::encode(id, "upd", &row(new)).unwrap() };
        let moves = Some(Box::new(UpdateFrames::new(id, Bytes::from(row(new)), moved)));
        Event::new("a".into(), frame, Bytes::from(row(new)), moves, false)
    };
    hub.broadcast(vec![
        update(1, "open", "open"),
        update(2, "open", "closed"),
        update(3, "closed", "closed"),
        update(4, "closed", "open"),
    ]);
    let frame = |id: i64, event: &str, status: &str| format!("id: {id}\n{event}\ndata: {}\n\n", row(status));
    let want = [frame(1, "upd", "open"), frame(2, "del", "open"), frame(4, "ins", "open")].concat();
    assert_eq!(take(&filtered), ready(&want), "left the filter: delete with the old row; entered it: insert");
    let want = [frame(1, "upd", "open"), frame(2, "upd", "closed"), frame(3, "upd", "closed"), frame(4, "upd", "open")];
    assert_eq!(take(&all), ready(&want.concat()), "without a filter, updates stay updates");
    let want = [frame(1, "a/upd", "open"), frame(2, "a/del", "open"), frame(4, "a/ins", "open")].concat();
    assert_eq!(take(&named), ready(&want), "a stream of several channels gets them named");
}

#[test]
fn filters_choose_per_subscriber() {
    let hub = Arc::new(Hub::new(4));
    hub.start_at(0);
    let odd = Arc::new(Filter::parse([("n", "in.(1,3)")]).unwrap());
    let (filtered, _) = hub.subscribe(&["a".into()], &ChannelFilters::from([("a".to_string(), odd)])).unwrap();
    let (all, _) = hub.subscribe(&["a".into()], &ChannelFilters::new()).unwrap();
    hub.broadcast((1..=3).map(|id| event("a", id)).collect());
    assert_eq!(take(&filtered), ready("1;3;"));
    assert_eq!(take(&all), ready("1;2;3;"));
}

#[test]
fn dropping_a_subscription_unregisters_it() {
    let hub = Arc::new(Hub::new(2));
    hub.start_at(0);
    let (sub, _) = hub.subscribe(&["a".into(), "b".into()], &ChannelFilters::new()).unwrap();
    assert_eq!(hub.subscriber_counts().len(), 2);
    drop(sub);
    assert!(hub.subscriber_counts().is_empty());
}

#[test]
fn a_relocated_subscription_gets_every_later_frame_in_its_new_queue() {
    let hub = Arc::new(Hub::new(4));
    hub.start_at(0);
    let (mut ab, _) = hub.subscribe(&["a".into(), "b".into()], &ChannelFilters::new()).unwrap();
    let old = ab.queue.clone();
    let moved = ab.relocate().expect("idle: relocated");
    assert!(!Arc::ptr_eq(&old, &ab.queue));
    drop(moved);
    hub.broadcast(vec![event("a", 1), event("b", 2)]);
    assert_eq!(take(&ab), ready("a/1;b/2;"), "every channel now pushes to the new queue");
    assert!(old.is_idle(), "and none to the old one");

    hub.broadcast(vec![event("a", 3)]);
    assert!(ab.relocate().is_none(), "frames are waiting: not moved");
    assert_eq!(take(&ab), ready("a/3;"));
    hub.close();
    assert!(ab.relocate().is_none(), "closed: not moved");
    assert_eq!(take(&ab), Poll::Ready(None));
}
