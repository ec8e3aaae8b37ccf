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
