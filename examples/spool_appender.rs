//! The child process of the spool's crash tests (`tests/it/spool.rs`): opens
//! the spool at `argv[1]`, appends numbered records (`{round}:{n}`, round =
//! `argv[2]`) forever in batches of 50, and prints `committed N` after each
//! batch's commit, until it is killed (with -9, by the test).
//!
//!     cargo run --example spool_appender -- /tmp/spool.db 0

use mqtt_kinesis_bridge::config::{OverflowPolicy, SpoolConfig};
use mqtt_kinesis_bridge::spool::{NewRecord, PartitionKey, Spool};

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: spool_appender SPOOL_PATH ROUND");
    let round = args.next().unwrap_or_default();
    let config = SpoolConfig::new(path.into(), 256 << 20, OverflowPolicy::DropOldest);
    let (spool, _writer) = Spool::open(&config).expect("open spool");
    let mut appender = spool.appender();
    for batch in 0u64.. {
        let receipts: Vec<_> = (0..50)
            .map(|i| {
                let n = batch * 50 + i;
                let record = NewRecord {
                    broker_id: 1,
                    topic: "crash/test".into(),
                    payload: format!("{round}:{n}").into_bytes(),
                    partition_key: PartitionKey::try_from("crash").unwrap(),
                    device_id: None,
                    qos: 1,
                    received_at_ms: n as i64,
                };
                appender.append_blocking(record).expect("append")
            })
            .collect();
        for receipt in receipts {
            receipt.wait().expect("commit");
        }
        println!("committed {}", batch * 50 + 49);
    }
}
