//! The one place that reads the wall clock as Unix milliseconds.
//!
//! Durations and deadlines use [`std::time::Instant`] (monotonic); only
//! timestamps that leave the process (records, files, tables) use this.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in milliseconds since the Unix epoch (UTC); 0 for a clock before 1970.
pub fn unix_ms() -> i64 {
    epoch_ms(SystemTime::now())
}

/// `time` in milliseconds since the Unix epoch; 0 for a time before 1970.
pub fn epoch_ms(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as i64)
}

/// AWS's clock minus ours, in ms, as the drain last learned it; the status
/// file reads it. Cheap to share: one atomic.
#[derive(Clone, Debug, Default)]
pub struct AwsOffset(std::sync::Arc<std::sync::atomic::AtomicI64>);

impl AwsOffset {
    pub fn set(&self, offset_ms: i64) {
        self.0
            .store(offset_ms, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn get(&self) -> i64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// `2h0m13s behind` / `5m2s ahead of`: how our clock stands to AWS's.
pub fn describe_offset(offset_ms: i64) -> String {
    // To the nearest second: the offset comes from a Date with whole seconds.
    let secs = (offset_ms.unsigned_abs() + 500) / 1000;
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let amount = match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    };
    // AWS ahead of us: our clock is behind.
    let direction = if offset_ms > 0 { "behind" } else { "ahead of" };
    format!("{amount} {direction}")
}

/// `45s`, `54m`, `2h5m`: how long something has left, for logs and `status`.
pub fn describe_duration(duration: std::time::Duration) -> String {
    let secs = duration.as_secs();
    match secs {
        0..=119 => format!("{secs}s"),
        120..=7199 => format!("{}m", secs / 60),
        _ => format!("{}h{}m", secs / 3600, secs / 60 % 60),
    }
}
