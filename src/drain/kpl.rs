//! Pure: KPL record aggregation (`kinesis.aggregation = "kpl"`). Many small
//! user records travel in one Kinesis record, in the format the Kinesis
//! Producer Library writes and KCL, Lambda's deaggregation modules and
//! Firehose unpack: the magic `F3 89 9A C2`, a protobuf `AggregatedRecord`
//! (partition key table, explicit hash key table, records), then the MD5 of
//! the protobuf bytes.
//!
//! Routing is unchanged: only records with the *same* partition key share an
//! aggregated record, whose outer partition key is that key, so every user
//! record lands on the shard its own key chooses (no shard map, no explicit
//! hash keys). With the default key (the topic) that groups a device's
//! telemetry. A group of one, or a record too large to share, goes as the
//! plain record it was.

use std::collections::HashMap;

use super::batch::Entry;
#[cfg(test)]
use super::md5::md5;
use super::md5::md5_each;

/// What every aggregated record starts with.
pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];
/// KPL's default bound of one aggregated record (data plus partition key).
pub const DEFAULT_MAX_BYTES: usize = 51_200;
const DIGEST_LEN: usize = 16;

/// The Kinesis records to send for `entries` (one request's worth, in spool
/// order), and which spool ids each aggregated one carries: its entry's `id`
/// is the first of them. Records that travel plain are not in the map.
pub fn aggregate(entries: &[Entry], max_bytes: usize) -> (Vec<Entry>, HashMap<i64, Vec<i64>>) {
    // Keys in the order they first appear; each key's records in order.
    let mut order: Vec<&str> = Vec::new();
    let mut by_key: HashMap<&str, Vec<&Entry>> = HashMap::new();
    for entry in entries {
        by_key
            .entry(entry.partition_key.as_str())
            .or_insert_with(|| {
                order.push(entry.partition_key.as_str());
                Vec::new()
            })
            .push(entry);
    }
    let mut wire = Vec::with_capacity(order.len());
    let mut carried = HashMap::new();
    for key in order {
        let mut group: Vec<&Entry> = Vec::new();
        let mut size = empty_size(key);
        for entry in &by_key[key] {
            let added = record_size(entry.data.len());
            if empty_size(key) + added > max_bytes {
                // Too large to share: alone and plain, after what came before
                // it (a key's records keep their order on its shard).
                flush(&mut group, key, &mut wire, &mut carried);
                size = empty_size(key);
                wire.push((*entry).clone());
                continue;
            }
            if !group.is_empty() && size + added > max_bytes {
                flush(&mut group, key, &mut wire, &mut carried);
                size = empty_size(key);
            }
            group.push(entry);
            size += added;
        }
        flush(&mut group, key, &mut wire, &mut carried);
    }
    write_digests(&mut wire, &carried);
    (wire, carried)
}

/// Writes the MD5 trailer of every aggregated record in `wire`, all in one
/// go: MD5 hashes several records at once far cheaper than one by one.
fn write_digests(wire: &mut [Entry], carried: &HashMap<i64, Vec<i64>>) {
    let aggregated = |entry: &&mut Entry| carried.contains_key(&entry.id);
    let digests = md5_each(
        &wire
            .iter()
            .filter(|entry| carried.contains_key(&entry.id))
            .map(|entry| protobuf(&entry.data))
            .collect::<Vec<_>>(),
    );
    for (entry, digest) in wire.iter_mut().filter(aggregated).zip(digests) {
        let len = entry.data.len();
        entry.data[len - DIGEST_LEN..].copy_from_slice(&digest);
    }
}

/// The protobuf bytes of an aggregated record: between the magic and the MD5.
fn protobuf(data: &[u8]) -> &[u8] {
    &data[MAGIC.len()..data.len() - DIGEST_LEN]
}

/// Sends `group` as one aggregated record (or plain, if it is one record).
fn flush(
    group: &mut Vec<&Entry>,
    key: &str,
    wire: &mut Vec<Entry>,
    carried: &mut HashMap<i64, Vec<i64>>,
) {
    match group.len() {
        0 => {}
        1 => wire.push(group[0].clone()),
        _ => {
            let ids: Vec<i64> = group.iter().map(|entry| entry.id).collect();
            let data = encode_unsigned(key, group.iter().map(|entry| entry.data.as_slice()));
            wire.push(Entry {
                id: ids[0],
                data,
                partition_key: key.to_owned(),
            });
            carried.insert(ids[0], ids);
        }
    }
    group.clear();
}

/// Kinesis bytes (data + outer key) of an aggregated record under `key` with no record yet.
fn empty_size(key: &str) -> usize {
    MAGIC.len() + field_size(key.len()) + DIGEST_LEN + key.len()
}

/// What one user record of `data_len` bytes adds to an aggregated record.
fn record_size(data_len: usize) -> usize {
    field_size(record_body_size(data_len))
}

/// `Record { partition_key_index = 0; data }`: two fields.
fn record_body_size(data_len: usize) -> usize {
    // partition_key_index (field 1, varint 0): 2 bytes; data (field 3).
    2 + field_size(data_len)
}

/// A length-delimited field: its tag, its length, its bytes.
fn field_size(len: usize) -> usize {
    1 + varint_size(len as u64) + len
}

fn varint_size(mut value: u64) -> usize {
    let mut n = 1;
    while value >= 0x80 {
        value >>= 7;
        n += 1;
    }
    n
}

/// One aggregated record: magic, `AggregatedRecord` with the one key and the
/// records (each `partition_key_index = 0`), MD5 of the protobuf bytes.
#[cfg(test)]
pub fn encode<'a>(key: &str, records: impl Iterator<Item = &'a [u8]> + Clone) -> Vec<u8> {
    let mut data = encode_unsigned(key, records);
    let digest = md5(protobuf(&data));
    let len = data.len();
    data[len - DIGEST_LEN..].copy_from_slice(&digest);
    data
}

/// `encode` with the MD5 trailer left zero, for [`write_digests`] to write.
/// Written into one buffer of the exact size: each record's bytes are copied once.
fn encode_unsigned<'a>(key: &str, records: impl Iterator<Item = &'a [u8]> + Clone) -> Vec<u8> {
    let message_len = field_size(key.len())
        + records
            .clone()
            .map(|data| record_size(data.len()))
            .sum::<usize>();
    let mut out = Vec::with_capacity(MAGIC.len() + message_len + DIGEST_LEN);
    out.extend_from_slice(&MAGIC);
    // partition_key_table (field 1, string)
    put_field(&mut out, 1, key.as_bytes());
    for data in records {
        // records (field 3, message): partition_key_index (field 1, varint) = 0, data (field 3)
        out.push((3 << 3) | 2);
        put_varint(&mut out, record_body_size(data.len()) as u64);
        out.extend_from_slice(&[0x08, 0x00]);
        put_field(&mut out, 3, data);
    }
    debug_assert_eq!(out.len(), MAGIC.len() + message_len);
    out.extend_from_slice(&[0; DIGEST_LEN]);
    out
}

fn put_field(out: &mut Vec<u8>, field: u8, bytes: &[u8]) {
    out.push((field << 3) | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

#[cfg(test)]
mod tests;
