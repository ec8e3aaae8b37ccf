use std::time::Duration;

use super::{delay, BASE};

#[test]
fn ceiling_doubles_then_caps() {
    let max = Duration::from_secs(30);
    assert_eq!(delay(0, max, 1.0), BASE);
    assert_eq!(delay(1, max, 1.0), BASE * 2);
    assert_eq!(delay(4, max, 1.0), BASE * 16);
    assert_eq!(delay(10, max, 1.0), max);
    assert_eq!(delay(u32::MAX, max, 1.0), max);
}

#[test]
fn jitter_scales_the_ceiling() {
    let max = Duration::from_secs(30);
    assert_eq!(delay(3, max, 0.0), Duration::ZERO);
    assert_eq!(delay(3, max, 0.5), BASE * 4);
    // Out-of-range random numbers are clamped, never panic.
    assert_eq!(delay(3, max, 7.0), BASE * 8);
}

#[test]
fn small_max_wins_over_base() {
    let max = Duration::from_millis(10);
    assert_eq!(delay(0, max, 1.0), max);
}
