use crate::spool::Record;

use super::{pick_within, Batch, MAX_RECORDS, MAX_RECORD_BYTES, MAX_REQUEST_BYTES};

/// A whole request's budget, as the drain picks without aggregation.
fn pick(records: &[Record], max_records: usize, encode: impl FnMut(&Record) -> Vec<u8>) -> Batch {
    pick_within(records.to_vec(), max_records, MAX_REQUEST_BYTES, encode)
}

fn record(id: i64, payload_len: usize) -> Record {
    Record {
        id,
        broker_id: 1,
        topic: "t".to_owned(),
        payload: vec![b'x'; payload_len],
        partition_key: "k".to_owned(),
        device_id: None,
        qos: 0,
        received_at_ms: 0,
        attempts: 0,
    }
}

fn raw(record: &Record) -> Vec<u8> {
    record.payload.clone()
}

fn ids(records: &[super::Entry]) -> Vec<i64> {
    records.iter().map(|entry| entry.id).collect()
}

#[test]
fn at_most_500_records() {
    let records: Vec<Record> = (1..=600).map(|id| record(id, 10)).collect();
    let batch = pick(&records, MAX_RECORDS, raw);
    assert_eq!(batch.entries.len(), 500);
    assert_eq!(batch.entries[0].id, 1);
    assert_eq!(batch.entries[499].id, 500);
    assert!(batch.rejected.is_empty());
}

#[test]
fn caller_can_ask_for_fewer() {
    let records: Vec<Record> = (1..=10).map(|id| record(id, 10)).collect();
    assert_eq!(ids(&pick(&records, 3, raw).entries), [1, 2, 3]);
    // Zero would never make progress: it means one.
    assert_eq!(ids(&pick(&records, 0, raw).entries), [1]);
    assert_eq!(pick(&records, 10_000, raw).entries.len(), 10);
}

#[test]
fn at_most_5_mib_per_request() {
    // Each record is 1 MiB - 1 byte of data + 1 byte of key = exactly 1 MiB.
    let records: Vec<Record> = (1..=7).map(|id| record(id, MAX_RECORD_BYTES - 1)).collect();
    let batch = pick(&records, MAX_RECORDS, raw);
    assert_eq!(ids(&batch.entries), [1, 2, 3, 4, 5]);
    let total: usize = batch.entries.iter().map(|e| e.kinesis_bytes()).sum();
    assert_eq!(total, MAX_REQUEST_BYTES);
}

#[test]
fn stops_at_the_first_that_does_not_fit_to_keep_order() {
    let mut records: Vec<Record> = (1..=4).map(|id| record(id, MAX_RECORD_BYTES - 1)).collect();
    records.push(record(5, MAX_RECORD_BYTES / 2));
    records.push(record(6, MAX_RECORD_BYTES - 1));
    // Small enough to fit, but taking it would send it before 6.
    records.push(record(7, 10));
    let batch = pick(&records, MAX_RECORDS, raw);
    assert_eq!(ids(&batch.entries), [1, 2, 3, 4, 5]);
    assert!(batch.rejected.is_empty());
}

#[test]
fn record_over_1_mib_after_encoding_is_rejected() {
    let records = vec![record(1, 10), record(2, MAX_RECORD_BYTES), record(3, 10)];
    let batch = pick(&records, MAX_RECORDS, raw);
    assert_eq!(ids(&batch.entries), [1, 3]);
    assert_eq!(batch.rejected.len(), 1);
    let (id, reason) = &batch.rejected[0];
    assert_eq!(*id, 2);
    assert!(reason.contains("1048577 bytes"), "{reason}");
    // The limit applies to the encoded blob, not the payload.
    let batch = pick(&[record(9, MAX_RECORD_BYTES - 10)], MAX_RECORDS, |r| {
        let mut data = r.payload.clone();
        data.extend_from_slice(&[b'!'; 100]);
        data
    });
    assert!(batch.entries.is_empty());
    assert_eq!(batch.rejected[0].0, 9);
}

#[test]
fn bad_partition_keys_are_rejected() {
    let mut empty = record(1, 1);
    empty.partition_key.clear();
    let mut long = record(2, 1);
    long.partition_key = "é".repeat(257);
    let mut just_right = record(3, 1);
    just_right.partition_key = "é".repeat(256);
    let batch = pick(&[empty, long, just_right], MAX_RECORDS, raw);
    assert_eq!(ids(&batch.entries), [3]);
    let rejected: Vec<i64> = batch.rejected.iter().map(|(id, _)| *id).collect();
    assert_eq!(rejected, [1, 2]);
}

#[test]
fn nothing_in_nothing_out() {
    let batch = pick(&[], MAX_RECORDS, raw);
    assert!(batch.entries.is_empty() && batch.rejected.is_empty());
}
