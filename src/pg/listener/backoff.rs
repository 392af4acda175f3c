//! How the listener waits between tries to connect: doubling from 100 ms to 5 s, each wait jittered so
//! that many gateways do not reconnect at once.

use std::time::Duration;

pub(super) const BACKOFF_MIN: Duration = Duration::from_millis(100);
pub(super) const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Spreads reconnects of many gateways over [d/2, d) so a database restart is not met by a stampede.
pub(super) fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |t| t.subsec_nanos());
    let fraction = f64::from(nanos % 1000) / 1000.0;
    d / 2 + d.mul_f64(fraction / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_half_to_full() {
        for _ in 0..100 {
            let j = jitter(Duration::from_secs(2));
            assert!(j >= Duration::from_secs(1) && j < Duration::from_secs(2), "{j:?}");
        }
    }
}
