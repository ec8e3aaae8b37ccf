use super::*;

fn entry(id: i64, key: &str, data: &[u8]) -> Entry {
    Entry {
        id,
        data: data.to_vec(),
        partition_key: key.into(),
    }
}

#[test]
fn an_aggregated_record_is_magic_protobuf_and_md5_of_it() {
    let data = encode("k", [b"ab".as_slice(), b"c".as_slice()].into_iter());
    // partition_key_table: 0a 01 'k'
    // record 1: 1a 06 [08 00 1a 02 'a' 'b']; record 2: 1a 05 [08 00 1a 01 'c']
    let message: Vec<u8> = vec![
        0x0a, 0x01, b'k', 0x1a, 0x06, 0x08, 0x00, 0x1a, 0x02, b'a', b'b', 0x1a, 0x05, 0x08, 0x00,
        0x1a, 0x01, b'c',
    ];
    assert_eq!(&data[..4], &MAGIC);
    assert_eq!(&data[4..data.len() - 16], &message[..]);
    assert_eq!(&data[data.len() - 16..], &md5(&message));
}

#[test]
fn records_with_the_same_key_share_an_aggregate_and_others_stay_apart() {
    let entries = vec![
        entry(1, "a", b"1"),
        entry(2, "b", b"2"),
        entry(3, "a", b"3"),
        entry(4, "c", b"4"),
        entry(5, "a", b"5"),
    ];
    let (wire, carried) = aggregate(&entries, DEFAULT_MAX_BYTES);
    let keys: Vec<&str> = wire.iter().map(|e| e.partition_key.as_str()).collect();
    assert_eq!(keys, ["a", "b", "c"]);
    assert_eq!(carried.get(&1), Some(&vec![1, 3, 5]));
    assert!(wire[0].data.starts_with(&MAGIC));
    // Groups of one go plain.
    assert_eq!(wire[1], entries[1]);
    assert_eq!(wire[2], entries[3]);
    assert_eq!(carried.len(), 1);
}

#[test]
fn an_aggregate_that_exactly_fits_stays_one_and_one_byte_more_splits() {
    let key = "k";
    let data = [b'x'; 100];
    let two = empty_size(key) + 2 * record_size(100);
    // Exactly two records' worth: one aggregate, of exactly that size.
    let (wire, carried) = aggregate(&[entry(1, key, &data), entry(2, key, &data)], two);
    assert_eq!(wire.len(), 1);
    assert_eq!(wire[0].kinesis_bytes(), two, "size accounting is exact");
    assert_eq!(carried[&1], vec![1, 2]);
    // One byte less: the second record starts another group (of one: plain).
    let (wire, carried) = aggregate(&[entry(1, key, &data), entry(2, key, &data)], two - 1);
    assert_eq!(wire.len(), 2);
    assert!(carried.is_empty(), "each group of one goes plain");
    // A record that cannot share at all goes plain, alone.
    let big = [b'y'; 500];
    let (wire, carried) = aggregate(
        &[
            entry(1, key, &data),
            entry(2, key, &big),
            entry(3, key, &data),
            entry(4, key, &data),
        ],
        300,
    );
    // In order: what came before it (a group of one: plain), it, then an aggregate.
    assert_eq!(wire.iter().map(|e| e.id).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(wire[1].data, big.to_vec());
    assert_eq!(carried[&3], vec![3, 4]);
}

/// A measurement, not a test: the drain's CPU per message for one full
/// request with and without aggregation — everything `kinesis.aggregation`
/// changes (aggregating with its MD5s, the request body with base64, SigV4
/// with the SHA-256 of the body, reading a Kinesis-sized answer), and nothing
/// the end-to-end bench's noise (the spool, the sessions, the brokers) adds.
/// `cargo test --release --lib -- --ignored --nocapture aggregation_cost`
#[test]
#[ignore = "measurement; prints figures"]
fn aggregation_cost_per_message_against_none() {
    use std::time::{Instant, SystemTime};

    use crate::drain::credentials::Credentials;
    use crate::drain::{put_records, sign};
    use crate::secret::Secret;

    // As the backlog bench: 500 messages of four topics, interleaved, each a
    // JSON envelope of about 390 bytes.
    let entries: Vec<Entry> = (0..500)
        .map(|id| entry(id, &format!("bench/b{}", id % 4), &[b'x'; 390]))
        .collect();
    let credentials = Credentials::new("AKIDEXAMPLE", Secret::new("secret"), None, "test");
    let answer = |n: usize| {
        let record = r#"{"SequenceNumber":"49590338271490256608559692538361571095921575989136588898","ShardId":"shardId-000000000000"}"#;
        format!(
            r#"{{"FailedRecordCount":0,"Records":[{}]}}"#,
            vec![record; n].join(",")
        )
    };
    let send = |wire: &[Entry]| {
        let body = put_records::request_body("stream", wire);
        let headers = sign::action_headers(
            put_records::TARGET,
            "https://kinesis.eu-west-1.amazonaws.com/",
            &body,
            &credentials,
            "eu-west-1",
            SystemTime::now(),
        )
        .expect("signed");
        assert!(!headers.is_empty());
        let ids: Vec<i64> = wire.iter().map(|entry| entry.id).collect();
        put_records::parse_response(200, answer(wire.len()).as_bytes(), &ids).expect("an answer")
    };
    let none = || assert_eq!(send(&entries).delivered.len(), 500);
    let kpl = || {
        let (wire, carried) = aggregate(&entries, DEFAULT_MAX_BYTES);
        assert_eq!(send(&wire).expand(&carried).delivered.len(), 500);
    };
    // Interleaved rounds; the fastest round of each is the least disturbed.
    let per_message = |run: &dyn Fn(), requests: u32| {
        let started = Instant::now();
        for _ in 0..requests {
            run();
        }
        started.elapsed().as_nanos() as f64 / f64::from(requests * 500)
    };
    let (mut best_none, mut best_kpl) = (f64::MAX, f64::MAX);
    for _ in 0..10 {
        best_none = best_none.min(per_message(&none, 50));
        best_kpl = best_kpl.min(per_message(&kpl, 50));
    }
    // Of kpl's own work: aggregating (with the MD5s), and the MD5s alone.
    let (wire, _) = aggregate(&entries, DEFAULT_MAX_BYTES);
    let protobufs: Vec<&[u8]> = wire.iter().map(|entry| protobuf(&entry.data)).collect();
    let aggregating = || assert_eq!(aggregate(&entries, DEFAULT_MAX_BYTES).0.len(), wire.len());
    let in_lanes = || {
        std::hint::black_box(md5_each(&protobufs));
    };
    let one_by_one = || {
        std::hint::black_box(protobufs.iter().map(|p| md5(p)).collect::<Vec<_>>());
    };
    let (mut best_aggregating, mut best_lanes, mut best_one_by_one) =
        (f64::MAX, f64::MAX, f64::MAX);
    for _ in 0..10 {
        best_aggregating = best_aggregating.min(per_message(&aggregating, 50));
        best_lanes = best_lanes.min(per_message(&in_lanes, 50));
        best_one_by_one = best_one_by_one.min(per_message(&one_by_one, 50));
    }
    println!(
        "drain CPU per message, one 500-message request: none {best_none:.0} ns, \
         kpl {best_kpl:.0} ns ({:+.1} %); of kpl, aggregating {best_aggregating:.0} ns \
         into {} records, their MD5s {best_lanes:.0} ns in lanes ({best_one_by_one:.0} ns \
         one by one)",
        (best_kpl / best_none - 1.0) * 100.0,
        wire.len(),
    );
}
