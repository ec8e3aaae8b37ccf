//! A latency histogram any thread can record into without a lock or an
//! allocation: one atomic counter per fixed bucket, folded into Prometheus's
//! cumulative buckets only when someone reads it (a scrape, the textfile).
//!
//! A leaf like `clock` and `disk`: the spool and the drain record into one,
//! the metrics module reads them. It knows nothing of the exposition format.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in seconds: from a fast fsync (1 ms) to a
/// request timeout (30 s). `+Inf` is implicit.
pub const BOUNDS_SECONDS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// The same bounds in microseconds, compared against on each observation.
const BOUNDS_MICROS: [u64; 14] = [
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000, 30_000_000,
];

/// Durations in fixed buckets. Each observation is two relaxed atomic adds.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket, not cumulative; the last one is `+Inf`.
    buckets: [AtomicU64; BOUNDS_MICROS.len() + 1],
    sum_micros: AtomicU64,
}

/// A histogram as read at one moment, in Prometheus's shape.
#[derive(Clone, Debug, PartialEq)]
pub struct Folded {
    /// Observations at or below each of [`BOUNDS_SECONDS`], cumulative.
    pub cumulative: [u64; BOUNDS_SECONDS.len()],
    /// Every observation (the `+Inf` bucket).
    pub count: u64,
    pub sum_seconds: f64,
}

impl Histogram {
    pub fn observe(&self, duration: Duration) {
        let micros = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        let bucket_idx = BOUNDS_MICROS
            .iter()
            .position(|bound| micros <= *bound)
            .unwrap_or(BOUNDS_MICROS.len());
        self.buckets[bucket_idx].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Cumulative counts; the count is the sum of the buckets, so `+Inf`
    /// always equals `_count` even while other threads record.
    pub fn fold(&self) -> Folded {
        let mut cumulative = [0; BOUNDS_SECONDS.len()];
        let mut running = 0;
        for (bucket_idx, bucket) in self.buckets.iter().enumerate() {
            running += bucket.load(Ordering::Relaxed);
            if let Some(slot) = cumulative.get_mut(bucket_idx) {
                *slot = running;
            }
        }
        Folded {
            cumulative,
            count: running,
            sum_seconds: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them_and_fold_cumulatively() {
        let histogram = Histogram::default();
        histogram.observe(Duration::from_micros(1_000)); // at the bound: <= 0.001
        histogram.observe(Duration::from_millis(3)); // <= 0.005
        histogram.observe(Duration::from_secs(60)); // +Inf only
        let folded = histogram.fold();
        assert_eq!(folded.count, 3);
        assert_eq!(folded.cumulative[0], 1);
        assert_eq!(folded.cumulative[1], 1);
        assert_eq!(folded.cumulative[2], 2);
        assert_eq!(folded.cumulative[BOUNDS_SECONDS.len() - 1], 2);
        assert!((folded.sum_seconds - 60.004).abs() < 1e-9);
        assert_eq!(
            BOUNDS_SECONDS.map(|s| (s * 1e6).round() as u64),
            BOUNDS_MICROS,
            "the two bound lists agree"
        );
    }
}
