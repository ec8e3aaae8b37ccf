use std::time::Duration;

use super::{Backoff, STABLE_AFTER};

const MS: Duration = Duration::from_millis(1);

/// Runs `n` failures with the given `random` and returns the waits.
fn waits(backoff: &mut Backoff, n: usize, random: f64) -> Vec<Duration> {
    (0..n)
        .map(|_| backoff.after_failure(None, random))
        .collect()
}

#[test]
fn ceilings_double_up_to_max() {
    let mut backoff = Backoff::new(100 * MS, 1000 * MS);
    assert_eq!(
        waits(&mut backoff, 6, 1.0),
        [100 * MS, 200 * MS, 400 * MS, 800 * MS, 1000 * MS, 1000 * MS]
    );
}

#[test]
fn jitter_stays_between_min_and_ceiling() {
    let mut backoff = Backoff::new(100 * MS, 1000 * MS);
    assert_eq!(waits(&mut backoff, 3, 0.0), [100 * MS; 3]);
    let mut rng = fastrand::Rng::with_seed(7);
    let mut backoff = Backoff::new(100 * MS, 1000 * MS);
    for _ in 0..1000 {
        let wait = backoff.after_failure(None, rng.f64());
        assert!((100 * MS..=1000 * MS).contains(&wait), "{wait:?}");
    }
}

#[test]
fn many_failures_do_not_overflow() {
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    let last = waits(&mut backoff, 200, 1.0).pop();
    assert_eq!(last, Some(Duration::from_secs(60)));
}

#[test]
fn only_a_stable_connection_resets() {
    let mut backoff = Backoff::new(100 * MS, 10_000 * MS);
    waits(&mut backoff, 3, 1.0);
    // Up for a moment only: keep growing.
    assert_eq!(backoff.after_failure(Some(MS), 1.0), 800 * MS);
    assert_eq!(backoff.after_failure(Some(STABLE_AFTER), 1.0), 100 * MS);
}

#[test]
fn refusal_waits_max_then_stays_there() {
    let mut backoff = Backoff::new(100 * MS, 5000 * MS);
    assert_eq!(backoff.after_refusal(), 5000 * MS);
    assert_eq!(backoff.after_failure(None, 1.0), 5000 * MS);
}

#[test]
fn bad_bounds_are_repaired() {
    let mut backoff = Backoff::new(Duration::ZERO, Duration::ZERO);
    assert_eq!(backoff.after_failure(None, 1.0), MS);
}
