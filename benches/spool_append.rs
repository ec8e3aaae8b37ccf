//! Spool append rate: how many records per second the writer commits.
//!
//! `cargo bench --bench spool_append` prints records/s for 256-byte payloads,
//! (a) with many appends in flight (what sessions do), and (b) one producer
//! that waits for each commit before the next (the worst case: an fsync each).

use std::time::Instant;

use mqtt_kinesis_bridge::config::{OverflowPolicy, SpoolConfig};
use mqtt_kinesis_bridge::spool::{NewRecord, PartitionKey, Spool};

fn record(n: u64) -> NewRecord {
    NewRecord {
        broker_id: (n % 4) as i64,
        topic: format!("plant/line{}/sensor", n % 16),
        payload: vec![b'x'; 256],
        partition_key: PartitionKey::try_from("plant/line/sensor").unwrap(),
        device_id: None,
        qos: 1,
        received_at_ms: n as i64,
    }
}

fn main() {
    let dir = std::env::temp_dir().join(format!("mkb-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = SpoolConfig::new(dir.join("spool.db"), 4 << 30, OverflowPolicy::DropOldest);
    let (spool, writer) = Spool::open(&config).unwrap();
    let mut appender = spool.appender();

    let n_pipelined = 200_000;
    let started = Instant::now();
    let mut receipts = Vec::with_capacity(n_pipelined as usize);
    for n in 0..n_pipelined {
        receipts.push(appender.append_blocking(record(n)).unwrap());
    }
    for receipt in receipts {
        receipt.wait().unwrap();
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "spool append, pipelined: {n_pipelined} records in {seconds:.2}s = {:.0} records/s",
        n_pipelined as f64 / seconds
    );

    let n_sequential = 500;
    let started = Instant::now();
    for n in 0..n_sequential {
        appender.append_blocking(record(n)).unwrap().wait().unwrap();
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "spool append, one at a time (commit each): {n_sequential} records in {seconds:.2}s = {:.0} records/s",
        n_sequential as f64 / seconds
    );

    drop(appender);
    spool.close();
    drop(spool);
    writer.join().unwrap();
    let _ = std::fs::remove_dir_all(dir);
}
