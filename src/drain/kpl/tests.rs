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
