//! Identical snapshot requests arriving together share one read, when it is small enough to hold whole.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde_json::json;
use tokio::time::Instant;

use super::{Shape, Snapshot, SnapshotError, SHARED_ROWS};
use crate::filter::ChannelFilters;
use crate::limits::{SnapshotGate, SnapshotSlot};
use crate::pg::store::Store;
use crate::shared_read::SharedRead;

/// A snapshot read whole: its encoded rows and `snapshot-end`, and where its stream goes on.
pub struct Taken {
    pub chunks: Vec<Bytes>,
    pub head: i64,
    pub pending: Vec<i64>,
}

/// A snapshot ready to send: read whole and shared, or to be streamed as it is read (holding its place
/// among the snapshots being read until it is).
pub enum Begun {
    Shared(Arc<Taken>),
    Streaming(Box<Snapshot>, SnapshotSlot),
}

/// A slot's last read: the snapshot, or `None` when it was too large in bytes to share (those who waited
/// for it then read their own).
type Slot = Arc<SharedRead<Option<Arc<Taken>>>>;

/// Identical snapshot requests (same channels, filters with the grant's, order and limit) arriving
/// together share one query, as fresh streams share their head read: a request that finds the slot busy
/// waits, and takes the result of a read that began after it arrived. Each snapshot stands at its own
/// head, so any such read is exact; a page reloaded by many browsers at once costs a few queries.
#[derive(Default)]
pub struct Shared {
    slots: Mutex<HashMap<String, Slot>>,
}

impl Shared {
    pub async fn begin(
        &self,
        store: &Store,
        channels: &[String],
        filters: &ChannelFilters,
        shape: &Shape,
        queries: &AtomicU64,
        gate: &SnapshotGate,
    ) -> Result<Begun, SnapshotError> {
        let asked = Instant::now();
        let key = json!([
            channels,
            channels.iter().map(|c| filters.get(c).map(|f| f.to_sql_json())).collect::<Vec<_>>(),
            shape.order,
            shape.limit
        ])
        .to_string();
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            // A slot nobody holds has nothing left to share.
            slots.retain(|_, slot| Arc::strong_count(slot) > 1);
            slots.entry(key).or_default().clone()
        };
        // A place among the snapshots being read is waited for with the slot free: identical requests
        // queued behind one that waits would otherwise wait too, though they may share a read.
        let mut place = None;
        let (mut turn, shareable, reading) = loop {
            let turn = slot.turn(asked).await;
            let shareable = match turn.shared() {
                Some(Some(taken)) => return Ok(Begun::Shared(taken.clone())),
                Some(None) => false,
                None => true,
            };
            if let Some(reading) = place.take().or_else(|| gate.try_enter()) {
                break (turn, shareable, reading);
            }
            drop(turn);
            place = Some(gate.enter().await?);
        };
        let began = Instant::now();
        queries.fetch_add(1, Ordering::Relaxed);
        let snapshot = Snapshot::begin(store, channels, filters, shape).await?;
        if !shareable || snapshot.rows > SHARED_ROWS {
            return Ok(Begun::Streaming(Box::new(snapshot), reading));
        }
        match snapshot.take().await? {
            Some(taken) => {
                let taken = Arc::new(taken);
                turn.set(began, Some(taken.clone()));
                Ok(Begun::Shared(taken))
            }
            None => {
                turn.set(began, None);
                drop(turn);
                queries.fetch_add(1, Ordering::Relaxed);
                let snapshot = Snapshot::begin(store, channels, filters, shape).await?;
                Ok(Begun::Streaming(Box::new(snapshot), reading))
            }
        }
    }
}
