use std::time::{Duration, Instant};

use super::*;

#[test]
fn the_drain_rate_is_unknown_until_its_samples_span_a_second() {
    let start = Instant::now();
    let mut rate = DrainRate::default();
    assert_eq!(rate.sample(0, start), None);
    assert_eq!(rate.sample(40, start + Duration::from_millis(500)), None);
    assert_eq!(rate.sample(100, start + Duration::from_secs(2)), Some(50.0));
}

#[test]
fn the_drain_rate_forgets_what_is_older_than_its_window() {
    let start = Instant::now();
    let mut rate = DrainRate::default();
    // 1,000 messages a second for a minute, then nothing for 30 seconds.
    for second in 0..=60u64 {
        rate.sample(second * 1_000, start + Duration::from_secs(second));
    }
    let after = |seconds: u64| start + Duration::from_secs(60 + seconds);
    assert_eq!(rate.sample(60_000, after(30)), Some(500.0));
    // A whole window without a delivery: the rate is zero, not the old average.
    for second in 31..=90 {
        rate.sample(60_000, after(second));
    }
    assert_eq!(rate.sample(60_000, after(91)), Some(0.0));
}
