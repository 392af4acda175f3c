//! When the listener runs the sequencing step (`pgsse.sequence_step`), which gives staged events their ids:
//! on every wakeup, soon again while a writer that may have skipped the doorbell is still committing,
//! and on a slow tick so that a gateway takes over from one that died.

use std::time::Duration;

use tokio::time::Instant;

/// One step of sequencing, in a transaction of its own (a procedure that commits, so that no caller can
/// hold its lock): `moved` is -1 when another session holds the step's lock.
pub const SEQUENCE_SQL: &str = "CALL pgsse.sequence_step($1)";
/// A step that moved this many events is followed by another at once: more may have committed meanwhile.
pub const BATCH: i64 = 5000;

/// The first recheck after a step found a writer still committing: about one commit's flush.
const RECHECK_MIN: Duration = Duration::from_millis(1);
/// Rechecks back off to this while a writer stays mid-commit (a prepared transaction, say).
const RECHECK_MAX: Duration = Duration::from_millis(250);
/// Every gateway tries a step this often even when nothing wakes it: a sequencing gateway that died holds
/// nothing (its transaction ends with its session), but the doorbell may be unarmed or its last writer
/// may have rolled back.
const TAKEOVER: Duration = Duration::from_millis(500);
/// A step held by another session this long is news: a batch takes milliseconds, and only one statement
/// (pgsse.sequence_step's) can hold it, so that statement is stuck or something else holds the lock.
pub const STUCK: Duration = Duration::from_secs(10);

pub struct Sequencing {
    recheck: Option<Instant>,
    backoff: Duration,
    takeover: Instant,
    /// Since when every step found another session holding the step's lock, and whether that was said.
    held: Option<(Instant, bool)>,
}

impl Sequencing {
    pub fn new(now: Instant) -> Self {
        Self { recheck: None, backoff: RECHECK_MIN, takeover: now + TAKEOVER, held: None }
    }

    /// Records a step tried at `now`: `taken` unless another session held its lock.
    pub fn record(&mut self, now: Instant, in_flight: bool, taken: bool) {
        self.held = if taken { None } else { Some(self.held.unwrap_or((now, false))) };
        self.takeover = now + TAKEOVER;
        if in_flight {
            self.recheck = Some(now + self.backoff);
            self.backoff = (self.backoff * 2).min(RECHECK_MAX);
        } else {
            self.recheck = None;
            self.backoff = RECHECK_MIN;
        }
    }

    /// True once, when other sessions have held the step for [`STUCK`] without a break.
    pub fn stuck(&mut self, now: Instant) -> bool {
        match &mut self.held {
            Some((since, said)) if !*said && now - *since >= STUCK => {
                *said = true;
                true
            }
            _ => false,
        }
    }

    /// When the next step is due if nothing wakes the listener first.
    pub fn due(&self) -> Instant {
        self.recheck.map_or(self.takeover, |r| r.min(self.takeover))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn rechecks_back_off_while_a_writer_stays_mid_commit_and_reset_once_none_is() {
        let mut s = Sequencing::new(Instant::now());
        assert_eq!(s.due() - Instant::now(), TAKEOVER);
        let mut waits = Vec::new();
        for _ in 0..10 {
            let now = Instant::now();
            s.record(now, true, true);
            waits.push(s.due() - now);
            tokio::time::advance(s.due() - now).await;
        }
        assert_eq!(waits[..4], [1, 2, 4, 8].map(Duration::from_millis));
        assert!(waits.iter().all(|w| *w <= RECHECK_MAX));
        assert_eq!(waits[9], RECHECK_MAX);
        let now = Instant::now();
        s.record(now, false, true);
        assert_eq!(s.due() - now, TAKEOVER);
        s.record(now, true, true);
        assert_eq!(s.due() - now, RECHECK_MIN);
    }

    #[tokio::test(start_paused = true)]
    async fn a_step_held_elsewhere_for_long_is_said_once_and_again_after_a_break() {
        let mut s = Sequencing::new(Instant::now());
        s.record(Instant::now(), false, false);
        tokio::time::advance(STUCK - Duration::from_millis(1)).await;
        s.record(Instant::now(), false, false);
        assert!(!s.stuck(Instant::now()));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(s.stuck(Instant::now()));
        assert!(!s.stuck(Instant::now()), "said once");
        s.record(Instant::now(), false, true);
        s.record(Instant::now(), false, false);
        tokio::time::advance(STUCK).await;
        assert!(s.stuck(Instant::now()), "a new spell is news again");
    }
}
