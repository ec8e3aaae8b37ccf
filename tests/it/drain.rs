//! The drain against kinesis-local (real PutRecords, records read back) and
//! against an in-process fake for faults: throttling, 5xx, cut connections,
//! refused requests, records too large. Nothing may vanish: every record ends
//! up delivered exactly once per success, or in dead letters.

use std::collections::HashMap;
use std::thread::JoinHandle;
use std::time::Duration;

use mqtt_kinesis_bridge::config::{
    CredentialsConfig, KinesisConfig, OverflowPolicy, RecordFormat, SpoolConfig,
};
use mqtt_kinesis_bridge::drain;
use mqtt_kinesis_bridge::shutdown::Shutdown;
use mqtt_kinesis_bridge::spool::{NewRecord, Spool};
use serde_json::Value;

use crate::support::kinesis::{test_credentials, FakeKinesis, Fault, KinesisLocal};
use crate::support::*;

const STREAM: &str = "telemetry";
const DEADLINE: Duration = Duration::from_secs(60);

pub fn open_spool(dir: &TempDir) -> (Spool, JoinHandle<()>) {
    let config = SpoolConfig::new(dir.join("spool.db"), 1 << 30, OverflowPolicy::DropOldest);
    Spool::open(&config).expect("open spool")
}

pub fn kinesis_config(endpoint: String, record_format: RecordFormat) -> KinesisConfig {
    KinesisConfig {
        stream: STREAM.to_owned(),
        region: "us-east-1".to_owned(),
        endpoint,
        record_format,
        request_timeout: Duration::from_secs(10),
        // Short, so retries in tests take milliseconds, not seconds.
        max_backoff: Duration::from_millis(50),
        // Each test's records go at once: these tests are about what is sent, not when.
        linger: Duration::ZERO,
        aggregation: mqtt_kinesis_bridge::config::Aggregation::None,
        credentials: CredentialsConfig::Auto,
    }
}

pub fn new_record(broker_id: i64, topic: &str, payload: Vec<u8>) -> NewRecord {
    NewRecord {
        broker_id,
        topic: topic.to_owned(),
        payload,
        partition_key: heapless::String::try_from(topic).expect("short topic"),
        device_id: None,
        qos: 1,
        received_at_ms: 1_700_000_000_000,
    }
}

/// Appends every record and waits until the last one is committed (commits are in order).
pub fn append_all(spool: &Spool, records: Vec<NewRecord>) {
    let mut appender = spool.appender();
    let mut last = None;
    for record in records {
        last = Some(appender.append_blocking(record).expect("spool open"));
    }
    if let Some(receipt) = last {
        receipt.wait().expect("committed");
    }
}

/// Records and dead letters in the spool file.
pub fn counts(spool: &Spool) -> (u64, u64) {
    spool.reader().and_then(|r| r.counts()).expect("counts")
}

pub fn wait_until_empty(spool: &Spool, dead: u64) {
    wait_until("the spool to be drained", DEADLINE, || {
        counts(spool) == (0, dead)
    });
}

/// Requests shutdown and waits for the drain thread to return.
pub fn stop(shutdown: &Shutdown, drain: JoinHandle<()>) {
    shutdown.request();
    wait_until("the drain thread to stop", DEADLINE, || drain.is_finished());
    drain.join().expect("drain thread did not panic");
}

/// Payloads of every kind: JSON, text, binary, empty.
fn mixed_payload(n: usize) -> Vec<u8> {
    match n % 4 {
        0 => format!(r#"{{"n":{n},"t":21.5}}"#).into_bytes(),
        1 => format!("reading {n} °C").into_bytes(),
        2 => (0..=255u8).rev().chain([n as u8]).collect(),
        _ => Vec::new(),
    }
}

fn record_id(blob: &[u8]) -> String {
    let envelope: Value = serde_json::from_slice(blob).expect("JSON envelope");
    envelope["record_id"]
        .as_str()
        .expect("record_id")
        .to_owned()
}

#[test]
fn delivers_to_kinesis_local_byte_for_byte() -> TestResult {
    test_credentials();
    let emulator = KinesisLocal::start(STREAM);
    let dir = TempDir::new("drain-emulator");
    let (spool, _writer) = open_spool(&dir);
    let payloads: Vec<Vec<u8>> = (0..300).map(mixed_payload).collect();
    append_all(
        &spool,
        payloads
            .iter()
            .enumerate()
            .map(|(n, payload)| new_record(1 + n as i64 % 3, "plant/line", payload.clone()))
            .collect(),
    );

    let shutdown = Shutdown::new();
    let config = kinesis_config(emulator.endpoint(), RecordFormat::Raw);
    let handle = drain::start(config, spool.clone(), shutdown.clone(), Default::default())?;
    wait_until_empty(&spool, 0);
    stop(&shutdown, handle);
    assert_eq!(
        emulator.read_all(STREAM),
        payloads,
        "raw: byte for byte, in order"
    );
    let counters = spool.reader()?.counters()?;
    assert_eq!(counters.iter().map(|c| c.delivered).sum::<u64>(), 300);
    assert_eq!(counters.iter().map(|c| c.dead_lettered).sum::<u64>(), 0);

    // Again in JSON, with the drain already waiting when the records arrive.
    let shutdown = Shutdown::new();
    let config = kinesis_config(emulator.endpoint(), RecordFormat::Json);
    let handle = drain::start(config, spool.clone(), shutdown.clone(), Default::default())?;
    append_all(
        &spool,
        vec![
            new_record(7, "a/b", br#"{"v": [1, 2]}"#.to_vec()),
            new_record(7, "a/b", b"text".to_vec()),
        ],
    );
    wait_until_empty(&spool, 0);
    stop(&shutdown, handle);
    let stored = emulator.read_all(STREAM);
    assert_eq!(stored.len(), 302);
    let first: Value = serde_json::from_slice(&stored[300])?;
    assert_eq!(first["record_id"], format!("{}-301", spool.uid()));
    assert_eq!(first["broker_id"], 7);
    assert_eq!(first["topic"], "a/b");
    assert_eq!(first["payload"], serde_json::json!({"v": [1, 2]}));
    let second: Value = serde_json::from_slice(&stored[301])?;
    assert_eq!(second["payload_text"], "text");
    Ok(())
}

#[test]
fn faults_lose_nothing_and_duplicate_nothing() -> TestResult {
    test_credentials();
    let fake = FakeKinesis::start(vec![
        Fault::Status(500),
        Fault::Status(503),
        Fault::Status(503),
        Fault::ThrottleEveryOther,
        Fault::DropConnection,
        Fault::Error("ProvisionedThroughputExceededException"),
        Fault::ThrottleEveryOther,
        Fault::Error("ExpiredTokenException"),
        Fault::Error("LimitExceededException"),
        Fault::ThrottleEveryOther,
    ]);
    fake.refuse_topic("poison");
    let dir = TempDir::new("drain-faults");
    let (spool, _writer) = open_spool(&dir);
    let mut records: Vec<NewRecord> = (0..1200)
        .map(|n| new_record(1 + n as i64 % 2, "plant/line", mixed_payload(n)))
        .collect();
    // 1 MiB of payload is more than 1 MiB once in a JSON envelope.
    records.insert(100, new_record(1, "plant/big", vec![b'x'; 1024 * 1024]));
    // Refused by Kinesis whichever batch carries it: the drain must find it.
    records.insert(700, new_record(2, "poison", b"{}".to_vec()));
    let n_records = records.len() as u64;
    append_all(&spool, records);

    let shutdown = Shutdown::new();
    let config = kinesis_config(fake.endpoint(), RecordFormat::Json);
    let handle = drain::start(config, spool.clone(), shutdown.clone(), Default::default())?;
    wait_until_empty(&spool, 2);
    stop(&shutdown, handle);
    assert!(fake.script_done(), "every fault was exercised");

    let mut accepted: HashMap<String, usize> = HashMap::new();
    for blob in fake.accepted() {
        *accepted.entry(record_id(&blob)).or_default() += 1;
    }
    let dead = spool.reader()?.dead_letters()?;
    let dead_ids: Vec<i64> = dead.iter().map(|(id, _)| *id).collect();
    assert_eq!(dead_ids, [101, 701]);
    assert!(dead[0].1.contains("bytes"), "{}", dead[0].1);
    assert!(dead[1].1.contains("ValidationException"), "{}", dead[1].1);
    for id in 1..=n_records as i64 {
        let n_accepted = accepted
            .get(&format!("{}-{id}", spool.uid()))
            .copied()
            .unwrap_or(0);
        let expected = if dead_ids.contains(&id) { 0 } else { 1 };
        assert_eq!(
            n_accepted, expected,
            "record {id} accepted {n_accepted} times"
        );
    }
    let counters = spool.reader()?.counters()?;
    let sum = |field: fn(&mqtt_kinesis_bridge::spool::BrokerCounters) -> u64| {
        counters.iter().map(field).sum::<u64>()
    };
    assert_eq!(sum(|c| c.spooled), n_records);
    assert_eq!(sum(|c| c.delivered), n_records - 2);
    assert_eq!(sum(|c| c.dead_lettered), 2);
    assert!(
        sum(|c| c.retried) > 0,
        "throttled records were counted as retried"
    );
    Ok(())
}

#[test]
fn missing_stream_keeps_records_until_it_exists() -> TestResult {
    test_credentials();
    let fake = FakeKinesis::start(vec![Fault::Error("ResourceNotFoundException"); 3]);
    let dir = TempDir::new("drain-no-stream");
    let (spool, _writer) = open_spool(&dir);
    let shutdown = Shutdown::new();
    let config = kinesis_config(fake.endpoint(), RecordFormat::Json);
    let handle = drain::start(config, spool.clone(), shutdown.clone(), Default::default())?;
    append_all(
        &spool,
        (0..10)
            .map(|n| new_record(1, "t", mixed_payload(n)))
            .collect(),
    );
    wait_until_empty(&spool, 0);
    stop(&shutdown, handle);
    assert!(fake.script_done());
    assert_eq!(fake.accepted().len(), 10);
    Ok(())
}

#[test]
fn shutdown_during_backoff_keeps_records() -> TestResult {
    test_credentials();
    let fake = FakeKinesis::start(vec![Fault::Status(503); 1000]);
    let dir = TempDir::new("drain-shutdown");
    let (spool, _writer) = open_spool(&dir);
    append_all(
        &spool,
        (0..5)
            .map(|n| new_record(1, "t", mixed_payload(n)))
            .collect(),
    );
    let shutdown = Shutdown::new();
    let mut config = kinesis_config(fake.endpoint(), RecordFormat::Json);
    // Long pauses: shutdown must not wait for them.
    config.max_backoff = Duration::from_secs(3600);
    let handle = drain::start(config, spool.clone(), shutdown.clone(), Default::default())?;
    wait_until("a few failed requests", DEADLINE, || fake.n_requests() >= 2);
    stop(&shutdown, handle);
    assert_eq!(counts(&spool), (5, 0));
    assert!(fake.accepted().is_empty());
    Ok(())
}

/// `new_record`, received now (the linger counts from then).
fn fresh_record(n: usize) -> NewRecord {
    NewRecord {
        received_at_ms: mqtt_kinesis_bridge::clock::unix_ms(),
        ..new_record(1, "plant/line", mixed_payload(n))
    }
}

#[test]
fn a_trickle_shares_one_request_and_a_full_batch_goes_at_once() -> TestResult {
    test_credentials();
    let fake = FakeKinesis::start(vec![]);
    let dir = TempDir::new("drain-linger");
    let (spool, _writer) = open_spool(&dir);
    let shutdown = Shutdown::new();
    let mut config = kinesis_config(fake.endpoint(), RecordFormat::Json);
    config.linger = Duration::from_secs(10);
    let handle = drain::start(config, spool.clone(), shutdown.clone(), Default::default())?;

    // 1,000 records: two full requests, which do not wait for the linger.
    append_all(&spool, (0..1000).map(fresh_record).collect());
    wait_until(
        "two full requests, well within the 10 s linger",
        Duration::from_secs(5),
        || counts(&spool) == (0, 0),
    );
    assert_eq!(fake.n_requests(), 2);

    // Three records committed one by one: one request carries them, after the linger.
    for n in 0..3 {
        append_all(&spool, vec![fresh_record(n)]);
    }
    wait_until_empty(&spool, 0);
    stop(&shutdown, handle);
    assert_eq!(fake.n_requests(), 3, "one more request for the three");
    assert_eq!(fake.accepted().len(), 1003);
    Ok(())
}

/// `n` fresh records through a drain into `fake` (after `damage` has had its
/// way with the spool), until the spool holds nothing but `n_dead` dead letters.
fn drain_into(
    fake: &FakeKinesis,
    name: &str,
    n: usize,
    n_dead: u64,
    damage: impl FnOnce(&Spool),
) -> (TempDir, Spool) {
    test_credentials();
    let dir = TempDir::new(name);
    let (spool, _writer) = open_spool(&dir);
    append_all(&spool, (0..n).map(fresh_record).collect());
    damage(&spool);
    let shutdown = Shutdown::new();
    let config = kinesis_config(fake.endpoint(), RecordFormat::Json);
    let handle = drain::start(config, spool.clone(), shutdown.clone(), Default::default())
        .expect("start the drain");
    wait_until_empty(&spool, n_dead);
    stop(&shutdown, handle);
    (dir, spool)
}

#[test]
fn a_redirect_is_reported_not_followed() -> TestResult {
    let fake = FakeKinesis::start(vec![Fault::Redirect]);
    drain_into(&fake, "drain-redirect", 10, 0, |_| {});
    // The 307 was retried where it came from; the signed records never went to /redirected.
    let paths = fake.paths();
    assert!(paths.iter().all(|path| path == "/"), "{paths:?}");
    assert!(paths.len() >= 2, "{paths:?}");
    assert_eq!(fake.accepted().len(), 10);
    Ok(())
}

#[test]
fn a_spool_row_that_does_not_decode_goes_to_dead_letters_alone() -> TestResult {
    let fake = FakeKinesis::start(vec![]);
    let (_dir, spool) = drain_into(&fake, "drain-damaged", 5, 1, |spool| {
        // A damaged file: a QoS no record can have (the field is a u8).
        rusqlite::Connection::open(spool.path())
            .and_then(|db| db.execute("UPDATE records SET qos = 300 WHERE id = 3", []))
            .expect("damage the spool");
    });
    let dead = spool.reader()?.dead_letters()?;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].0, 3);
    assert!(dead[0].1.contains("does not decode"), "{}", dead[0].1);
    assert_eq!(fake.accepted().len(), 4, "the other four delivered");
    Ok(())
}

/// The gateway's clock two hours behind (and ahead of) AWS's, as on a
/// Raspberry Pi without RTC: the first request is refused as expired, the
/// answer's Date corrects the clock, and every record is delivered.
#[test]
fn a_clock_hours_off_is_corrected_from_the_answers() -> TestResult {
    for offset_s in [2 * 3600, -2 * 3600] {
        let fake = FakeKinesis::start(vec![]);
        fake.set_clock_offset(offset_s);
        drain_into(&fake, "drain-skew", 40, 0, |_| {});
        assert_eq!(fake.accepted().len(), 40, "offset {offset_s}s");
        assert_eq!(
            fake.n_refused_for_time(),
            1,
            "offset {offset_s}s: one refusal, then corrected"
        );
    }
    Ok(())
}

/// With a correct clock nothing is refused and nothing changes.
#[test]
fn a_correct_clock_is_left_alone() -> TestResult {
    let fake = FakeKinesis::start(vec![]);
    drain_into(&fake, "drain-no-skew", 20, 0, |_| {});
    assert_eq!(fake.n_refused_for_time(), 0);
    assert_eq!(fake.accepted().len(), 20);
    Ok(())
}

/// More bad records in a row than the drain blames before it calls the
/// refusal systemic: after a few slow retries it blames single records again,
/// so the run of bad records ends in dead letters and the good ones behind it
/// are delivered (the spool never stalls on them for good).
#[test]
fn a_run_of_refused_records_does_not_stall_the_spool() -> TestResult {
    test_credentials();
    let fake = FakeKinesis::start(vec![]);
    fake.refuse_topic("poison");
    let dir = TempDir::new("drain-refused-run");
    let (spool, _writer) = open_spool(&dir);
    let mut records: Vec<NewRecord> = (0..5)
        .map(|_| new_record(1, "poison", b"{}".to_vec()))
        .collect();
    records.extend((0..5).map(|n| new_record(1, "plant/line", mixed_payload(n))));
    append_all(&spool, records);

    let shutdown = Shutdown::new();
    let config = kinesis_config(fake.endpoint(), RecordFormat::Json);
    let handle = drain::start(config, spool.clone(), shutdown.clone(), Default::default())?;
    wait_until_empty(&spool, 5);
    stop(&shutdown, handle);
    let dead: Vec<i64> = spool
        .reader()?
        .dead_letters()?
        .iter()
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(dead, [1, 2, 3, 4, 5]);
    let accepted: Vec<String> = fake.accepted().iter().map(|blob| record_id(blob)).collect();
    let expected: Vec<String> = (6..=10).map(|id| format!("{}-{id}", spool.uid())).collect();
    assert_eq!(accepted, expected);
    Ok(())
}

/// With KPL aggregation, a Kinesis record that fails (throttled) retries every
/// message it carries, a failed request retries all, and every message ends
/// in the stream once the faults pass (de-aggregated by awslabs' module).
#[test]
fn aggregated_records_that_fail_retry_every_message_they_carry() -> TestResult {
    use base64::Engine;
    test_credentials();
    let fake = FakeKinesis::start(vec![
        Fault::ThrottleEveryOther,
        Fault::Status(500),
        Fault::ThrottleEveryOther,
    ]);
    let dir = TempDir::new("drain-kpl-faults");
    let (spool, _writer) = open_spool(&dir);
    let records: Vec<NewRecord> = (0..1000)
        .map(|n| new_record(1, if n % 3 == 0 { "k/a" } else { "k/b" }, mixed_payload(n)))
        .collect();
    append_all(&spool, records);
    let shutdown = Shutdown::new();
    let mut config = kinesis_config(fake.endpoint(), RecordFormat::Json);
    config.aggregation = mqtt_kinesis_bridge::config::Aggregation::Kpl { max_bytes: 51_200 };
    let handle = drain::start(config, spool.clone(), shutdown.clone(), Default::default())?;
    wait_until_empty(&spool, 0);
    stop(&shutdown, handle);
    assert!(fake.script_done(), "every fault was exercised");
    let stored: Vec<Value> = fake
        .accepted()
        .iter()
        .enumerate()
        .map(|(n, blob)| {
            serde_json::json!({
                "Data": base64::engine::general_purpose::STANDARD.encode(blob),
                "PartitionKey": "k",
                "SequenceNumber": n.to_string(),
            })
        })
        .collect();
    assert!(stored.len() < 100, "{} Kinesis records", stored.len());
    let users = crate::aggregation::deaggregate(&stored);
    let ids: std::collections::HashSet<String> = users
        .iter()
        .map(|user| {
            let data = base64::engine::general_purpose::STANDARD
                .decode(user["data"].as_str().unwrap())
                .unwrap();
            record_id(&data)
        })
        .collect();
    assert_eq!(ids.len(), 1000, "every message, once or more");
    Ok(())
}
