//! When a request that is not full should go anyway. Pure.
//!
//! A request goes at once when it is full (500 records, or half of the 5 MiB
//! a request may carry: records that big fill it soon), when the drain is in
//! a hurry (retrying, isolating a refused record), or when the oldest waiting
//! record has waited `kinesis.linger`. Its age is the larger of what the wall
//! clock says (since it was received) and how long this drain has seen it
//! (monotonic), so a wall clock set back can delay a record by one linger at
//! most, never hold it.

use std::time::Duration;

use super::batch::{MAX_RECORDS, MAX_REQUEST_BYTES};

/// What the drain knows about the records waiting.
#[derive(Clone, Copy, Debug)]
pub struct Waiting {
    pub n_records: usize,
    /// Payload, topic and partition key bytes of those records.
    pub data_bytes: usize,
    /// Now minus the oldest record's `received_at_ms`, by the wall clock (may be negative).
    pub oldest_wall_age_ms: i64,
    /// How long this drain has seen the oldest record waiting.
    pub oldest_seen_for: Duration,
}

/// Enough waits for a full request: 500 records, or half of the 5 MiB a
/// request may carry (records that big fill it soon).
pub fn full(n_records: usize, data_bytes: usize) -> bool {
    n_records >= FULL_RECORDS || data_bytes >= FULL_BYTES
}

/// See [`full`].
pub const FULL_RECORDS: usize = MAX_RECORDS;
pub const FULL_BYTES: usize = MAX_REQUEST_BYTES / 2;

/// How much longer to wait for a fuller request; `None`: send now.
pub fn left(linger: Duration, waiting: Waiting, hurry: bool) -> Option<Duration> {
    if linger.is_zero() || hurry || full(waiting.n_records, waiting.data_bytes) {
        return None;
    }
    let wall_age = Duration::from_millis(waiting.oldest_wall_age_ms.max(0) as u64);
    let age = wall_age.max(waiting.oldest_seen_for);
    linger.checked_sub(age).filter(|left| !left.is_zero())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINGER: Duration = Duration::from_millis(200);

    fn waiting(n_records: usize, wall_age_ms: i64, seen_for_ms: u64) -> Waiting {
        Waiting {
            n_records,
            data_bytes: n_records * 200,
            oldest_wall_age_ms: wall_age_ms,
            oldest_seen_for: Duration::from_millis(seen_for_ms),
        }
    }

    #[test]
    fn a_young_partial_request_waits_for_the_rest_of_the_linger() {
        assert_eq!(
            left(LINGER, waiting(10, 50, 20), false),
            Some(Duration::from_millis(150))
        );
    }

    #[test]
    fn full_old_or_hurried_requests_go_at_once() {
        assert_eq!(left(LINGER, waiting(MAX_RECORDS, 0, 0), false), None);
        assert_eq!(left(LINGER, waiting(10, 200, 0), false), None);
        assert_eq!(left(LINGER, waiting(10, 5_000, 0), false), None);
        assert_eq!(left(LINGER, waiting(10, 0, 0), true), None);
        assert_eq!(left(Duration::ZERO, waiting(1, 0, 0), false), None);
        let big = Waiting {
            data_bytes: MAX_REQUEST_BYTES / 2,
            ..waiting(3, 0, 0)
        };
        assert_eq!(left(LINGER, big, false), None);
    }

    #[test]
    fn a_wall_clock_set_back_delays_by_one_linger_at_most() {
        // Received "two hours from now": the monotonic age decides.
        let two_hours_ms = 2 * 3600 * 1000;
        assert_eq!(
            left(LINGER, waiting(1, -two_hours_ms, 0), false),
            Some(LINGER)
        );
        assert_eq!(
            left(LINGER, waiting(1, -two_hours_ms, 120), false),
            Some(Duration::from_millis(80))
        );
        assert_eq!(left(LINGER, waiting(1, -two_hours_ms, 200), false), None);
    }
}
