//! When the listener runs the sequencing step (`pgsse.sequence_step`), which gives staged events their ids:
//! by the one gateway that steps, while the others read the batches it announces; a follower steps again
//! when no batch comes.

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
/// A gateway steps this often even when nothing wakes it, and one that follows another's batches steps once
/// it has seen none for this long: a sequencing gateway that died holds nothing (its transaction ends with
/// its session), but the doorbell may be unarmed or its last writer may have rolled back.
const TAKEOVER: Duration = Duration::from_millis(500);
/// A follower steps when a writer's ring is followed by no batch for this long: the stepping gateway is
/// gone. Above the widest read spacing (pacing's 25 ms) plus a batch's commit.
const WATCH: Duration = Duration::from_millis(100);
/// A step held by another session this long is news: a batch takes milliseconds, and only one statement
/// (pgsse.sequence_step's) can hold it, so that statement is stuck or something else holds the lock.
pub const STUCK: Duration = Duration::from_secs(10);

/// What a wakeup asks of the listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// Run the step, then read the log.
    Step,
    /// Read what other sessions' steps made visible.
    Read,
}

/// Every gateway is woken by every commit that rings, and one step serves them all: a gateway that tried
/// the step on each wakeup would cost the primary a step per gateway per commit (docs/operations.md). So a
/// gateway that finds events it did not move in the log follows: it reads when a batch is announced and
/// leaves rings to the session that steps. It steps again once it has seen no batch for [`TAKEOVER`], or
/// [`WATCH`] after a ring that no batch followed. Announcements alone decide nothing: a session that knows
/// the channel could send them, and a follower that read nothing after one steps as before.
pub struct Sequencing {
    /// This gateway runs the step on a wakeup; otherwise it follows another session's batches.
    stepping: bool,
    /// The next step on the clock: [`TAKEOVER`] after the last step, or (a follower) after the last read
    /// that found another's batch.
    quiet: Instant,
    /// A ring that no batch followed yet: a follower steps at this time.
    watch: Option<Instant>,
    recheck: Option<Instant>,
    backoff: Duration,
    /// Since when every step found another session holding the step's lock, and whether that was said.
    held: Option<(Instant, bool)>,
}

impl Sequencing {
    pub fn new(now: Instant) -> Self {
        Self { stepping: true, quiet: now + TAKEOVER, watch: None, recheck: None, backoff: RECHECK_MIN, held: None }
    }

    /// What to do on a wakeup at `now`: `rung` by a writer, `announced` by another session's batch, or
    /// on the `clock` (a listener that is not notified, or that must look anyway). A step reads what any
    /// announcement said, so a step that is due comes first: announcements, which anyone who knows the
    /// channel can send, never hold one back.
    pub fn wake(&mut self, now: Instant, rung: bool, announced: bool, clock: bool) -> Option<Work> {
        if !self.stepping && rung {
            self.watch.get_or_insert(now + WATCH);
        }
        let step = match self.stepping {
            true => rung || clock || now >= self.due(),
            false => now >= self.due(),
        };
        if step {
            Some(Work::Step)
        } else {
            (announced || clock).then_some(Work::Read)
        }
    }

    /// Whether this gateway is the one stepping.
    pub fn stepping(&self) -> bool {
        self.stepping
    }

    /// What a step passes as `p_listening`: a follower's step leaves the doorbell as the stepping
    /// gateway set it.
    pub fn arms(&self, listening: bool) -> Option<bool> {
        self.stepping.then_some(listening)
    }

    /// Records a read without a step that found `events`: another session's batches, so that session is
    /// the one stepping.
    pub fn read(&mut self, now: Instant, events: u64) {
        if events > 0 {
            self.stepping = false;
            self.quiet = now + TAKEOVER;
            self.watch = None;
        }
    }

    /// Records a step tried at `now` (`moved` is -1 when another session held its lock) and how many
    /// `events` the read after it found: events the step did not move were moved by another session.
    /// Without notifications (a gateway reading on the clock) that is how stepping twice is noticed.
    pub fn record(&mut self, now: Instant, in_flight: bool, moved: i64, events: u64) {
        let taken = moved >= 0;
        if moved > 0 {
            self.stepping = true;
        } else if events > 0 {
            self.stepping = false;
        }
        self.quiet = now + TAKEOVER;
        self.watch = None;
        self.held = if taken { None } else { Some(self.held.unwrap_or((now, false))) };
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
        match self.stepping {
            true => self.recheck.map_or(self.quiet, |r| r.min(self.quiet)),
            false => self.watch.map_or(self.quiet, |w| w.min(self.quiet)),
        }
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
            s.record(now, true, 0, 0);
            waits.push(s.due() - now);
            tokio::time::advance(s.due() - now).await;
        }
        assert_eq!(waits[..4], [1, 2, 4, 8].map(Duration::from_millis));
        assert!(waits.iter().all(|w| *w <= RECHECK_MAX));
        assert_eq!(waits[9], RECHECK_MAX);
        let now = Instant::now();
        s.record(now, false, 0, 0);
        assert_eq!(s.due() - now, TAKEOVER);
        s.record(now, true, 0, 0);
        assert_eq!(s.due() - now, RECHECK_MIN);
    }

    #[tokio::test(start_paused = true)]
    async fn a_step_held_elsewhere_for_long_is_said_once_and_again_after_a_break() {
        let mut s = Sequencing::new(Instant::now());
        s.record(Instant::now(), false, -1, 0);
        tokio::time::advance(STUCK - Duration::from_millis(1)).await;
        s.record(Instant::now(), false, -1, 0);
        assert!(!s.stuck(Instant::now()));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(s.stuck(Instant::now()));
        assert!(!s.stuck(Instant::now()), "said once");
        s.record(Instant::now(), false, 0, 0);
        s.record(Instant::now(), false, -1, 0);
        tokio::time::advance(STUCK).await;
        assert!(s.stuck(Instant::now()), "a new spell is news again");
    }

    #[tokio::test(start_paused = true)]
    async fn a_gateway_that_finds_another_stepping_follows_until_no_batch_comes() {
        let mut s = Sequencing::new(Instant::now());
        assert_eq!(s.wake(Instant::now(), true, false, false), Some(Work::Step), "none known: step");
        s.record(Instant::now(), false, 0, 3);
        assert_eq!(s.arms(true), None, "events it did not move: another steps");
        assert_eq!(s.wake(Instant::now(), true, false, false), None, "a ring is for the stepping gateway");
        assert_eq!(s.wake(Instant::now(), false, true, false), Some(Work::Read), "a batch is read");
        s.read(Instant::now(), 2);
        assert_eq!(s.due() - Instant::now(), TAKEOVER, "the read cleared the ring's watch");
        assert_eq!(s.wake(Instant::now(), false, false, true), Some(Work::Read), "on the clock: read");

        // A ring that no batch follows: the stepping gateway is gone.
        assert_eq!(s.wake(Instant::now(), true, false, false), None);
        tokio::time::advance(WATCH / 2).await;
        assert_eq!(s.wake(Instant::now(), false, true, false), Some(Work::Read), "an announcement...");
        s.read(Instant::now(), 0);
        assert_eq!(s.due() - Instant::now(), WATCH / 2, "...that read nothing proves nothing");
        tokio::time::advance(WATCH / 2).await;
        assert_eq!(s.wake(Instant::now(), false, false, false), Some(Work::Step));
        assert_eq!(s.arms(true), None, "a follower's step leaves the doorbell alone");
        s.record(Instant::now(), false, 5, 5);
        assert_eq!(s.arms(true), Some(true), "it moved events: it steps now");

        // A ring that comes with an announcement is watched all the same, and a step that is due comes
        // before any announcement.
        s.record(Instant::now(), false, 0, 1);
        assert_eq!(s.wake(Instant::now(), true, true, false), Some(Work::Read));
        s.read(Instant::now(), 0);
        tokio::time::advance(WATCH).await;
        assert_eq!(s.wake(Instant::now(), false, true, false), Some(Work::Step));
        s.record(Instant::now(), false, 2, 2);
        assert_eq!(s.wake(Instant::now(), true, true, false), Some(Work::Step), "stepping: a ring is stepped on");

        // Followers step on the takeover clock when nothing at all happens.
        s.record(Instant::now(), false, -1, 1);
        assert_eq!(s.wake(Instant::now(), false, false, false), None);
        tokio::time::advance(TAKEOVER).await;
        assert_eq!(s.wake(Instant::now(), false, false, false), Some(Work::Step));
        s.record(Instant::now(), false, 0, 0);
        assert_eq!(s.arms(false), None, "an idle step changes nothing");
        assert_eq!(s.due() - Instant::now(), TAKEOVER);
    }
}
