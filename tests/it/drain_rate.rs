//! Opt-in measurement of the drain rate (records/s, 256-byte JSON payloads, JSON format):
//! `cargo test --release --test it drain_rate -- --ignored --nocapture --test-threads 1`.
//! It asserts only that everything arrived; the figure is printed, not checked.

use std::time::{Duration, Instant};

use mqtt_kinesis_bridge::config::RecordFormat;
use mqtt_kinesis_bridge::drain;
use mqtt_kinesis_bridge::shutdown::Shutdown;

use crate::drain::{append_all, counts, kinesis_config, new_record, open_spool, stop};
use crate::support::kinesis::{test_credentials, FakeKinesis, KinesisLocal};
use crate::support::*;

fn payload(n: usize) -> Vec<u8> {
    let mut payload = format!(r#"{{"n":{n},"pad":""#).into_bytes();
    payload.resize(254, b'x');
    payload.extend_from_slice(b"\"}");
    payload
}

/// Fills a spool with `n_records`, then times the drain emptying it.
fn measure(name: &str, endpoint: String, n_records: usize) -> f64 {
    test_credentials();
    let dir = TempDir::new("drain-rate");
    let (spool, _writer) = open_spool(&dir);
    append_all(
        &spool,
        (0..n_records)
            .map(|n| new_record(1 + n as i64 % 8, &format!("site/{}", n % 16), payload(n)))
            .collect(),
    );
    let shutdown = Shutdown::new();
    let started = Instant::now();
    let handle = drain::start(
        kinesis_config(endpoint, RecordFormat::Json),
        spool.clone(),
        shutdown.clone(),
        Default::default(),
    )
    .expect("drain starts");
    wait_until("the spool to be drained", Duration::from_secs(600), || {
        counts(&spool) == (0, 0)
    });
    let elapsed = started.elapsed();
    stop(&shutdown, handle);
    let rate = n_records as f64 / elapsed.as_secs_f64();
    println!("drain rate to {name}: {n_records} records in {elapsed:.2?} = {rate:.0} records/s");
    rate
}

#[test]
#[ignore = "measurement; run with --release --ignored --nocapture"]
fn drain_rate_kinesis_local() {
    // kinesis-local slows down past ~25k records: stay below.
    let emulator = KinesisLocal::start("telemetry");
    measure("kinesis-local", emulator.endpoint(), 15_000);
    assert_eq!(emulator.read_all("telemetry").len(), 15_000);
}

#[test]
#[ignore = "measurement; run with --release --ignored --nocapture"]
fn drain_rate_fake() {
    let fake = FakeKinesis::start(Vec::new());
    measure("the instant fake", fake.endpoint(), 100_000);
    assert_eq!(fake.accepted().len(), 100_000);
}
