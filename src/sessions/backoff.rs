//! Pure: how long a session waits before it tries to connect again.
//!
//! Exponential with "full jitter": the n-th consecutive failure waits a random
//! time between `min` and `min * 2^n` (capped at `max`), so gateways that lost
//! the same broker do not all come back in the same instant. The sequence
//! starts over only once a connection has stayed up for [`STABLE_AFTER`]: a
//! broker that accepts and then drops us at once keeps backing off.
//! No clock and no timer here; the caller measures and sleeps.

use std::time::Duration;

/// A connection that lasted this long counts as healthy and resets the backoff.
pub const STABLE_AFTER: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    /// Consecutive failures since the last stable connection.
    n_failures: u32,
}

impl Backoff {
    /// `min` is raised to 1ms and `max` to `min`, so every delay is positive and bounded.
    pub fn new(min: Duration, max: Duration) -> Backoff {
        let min = min.max(Duration::from_millis(1));
        Backoff {
            min,
            max: max.max(min),
            n_failures: 0,
        }
    }

    /// The wait after a failure. `up_for` is how long the connection that just
    /// failed had been up (`None` when connecting failed). `random` is uniform in `0.0..1.0`.
    pub fn after_failure(&mut self, up_for: Option<Duration>, random: f64) -> Duration {
        if up_for.is_some_and(|up_for| up_for >= STABLE_AFTER) {
            self.n_failures = 0;
        }
        let ceiling = self.ceiling();
        self.n_failures = self.n_failures.saturating_add(1);
        let span = ceiling.saturating_sub(self.min);
        self.min + span.mul_f64(random.clamp(0.0, 1.0))
    }

    /// The wait after the broker refused our credentials: they will not fix
    /// themselves, and a catalog change restarts the session anyway, so go straight to `max`.
    pub fn after_refusal(&mut self) -> Duration {
        self.n_failures = u32::MAX;
        self.max
    }

    /// The upper bound of the next wait: `min * 2^n_failures`, at most `max`.
    fn ceiling(&self) -> Duration {
        let factor = 1u32
            .checked_shl(self.n_failures.min(31))
            .unwrap_or(u32::MAX);
        self.min.saturating_mul(factor).min(self.max)
    }
}

#[cfg(test)]
mod tests;
