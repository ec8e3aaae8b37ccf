//! Exponential backoff with full jitter: how long to pause before retrying a failing request.
//!
//! Pure: the caller supplies the random number, so tests are deterministic.
//! It does not sleep; the drain loop waits on the shutdown handle instead.

use std::time::Duration;

/// The first retry waits up to this long; each further failure doubles the ceiling.
pub const BASE: Duration = Duration::from_millis(100);

/// The pause before retry number `attempt` (0 for the first retry).
///
/// The ceiling is `BASE * 2^attempt`, capped at `max`; the pause is `unit`
/// (a random number in `[0, 1)`) times the ceiling ("full jitter"), so many
/// gateways that lost the uplink together do not retry in lockstep.
pub fn delay(attempt: u32, max: Duration, unit: f64) -> Duration {
    let ceiling = BASE
        .checked_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX))
        .unwrap_or(max)
        .min(max);
    ceiling.mul_f64(unit.clamp(0.0, 1.0))
}

/// [`delay`] with a fresh random number.
pub fn jittered(attempt: u32, max: Duration) -> Duration {
    delay(attempt, max, fastrand::f64())
}

#[cfg(test)]
mod tests;
