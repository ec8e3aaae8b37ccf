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
    (wire, carried)
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
            let data = encode(key, group.iter().map(|entry| entry.data.as_slice()));
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
pub fn encode<'a>(key: &str, records: impl Iterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut message = Vec::new();
    // partition_key_table (field 1, string)
    put_field(&mut message, 1, key.as_bytes());
    let mut record = Vec::new();
    for data in records {
        record.clear();
        // partition_key_index (field 1, varint) = 0
        record.extend_from_slice(&[0x08, 0x00]);
        put_field(&mut record, 3, data);
        // records (field 3, message)
        put_field(&mut message, 3, &record);
    }
    let mut out = Vec::with_capacity(MAGIC.len() + message.len() + DIGEST_LEN);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&message);
    out.extend_from_slice(&md5(&message));
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

/// MD5 (RFC 1321): the KPL format's checksum, nothing secret rests on it.
/// Written here rather than taken as a crate: 40 lines, checked against the
/// RFC's test suite below and against awslabs' deaggregator in the tests.
pub fn md5(input: &[u8]) -> [u8; 16] {
    let mut state: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];
    // Whole blocks straight from the input (no copy of a 50 KB record), then
    // the padded tail: 0x80, zeros, the bit length.
    let whole = input.len() / 64 * 64;
    for block in input[..whole].chunks_exact(64) {
        md5_block(&mut state, block);
    }
    let mut tail = [0u8; 128];
    let rest = &input[whole..];
    tail[..rest.len()].copy_from_slice(rest);
    tail[rest.len()] = 0x80;
    let tail_len = if rest.len() < 56 { 64 } else { 128 };
    tail[tail_len - 8..tail_len]
        .copy_from_slice(&(input.len() as u64).wrapping_mul(8).to_le_bytes());
    for block in tail[..tail_len].chunks_exact(64) {
        md5_block(&mut state, block);
    }
    let mut digest = [0u8; 16];
    for (i, word) in state.iter().enumerate() {
        digest[4 * i..4 * i + 4].copy_from_slice(&word.to_le_bytes());
    }
    digest
}

/// RFC 1321's per-round shift amounts.
const MD5_S: [u32; 64] = [
    7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5, 9,
    14, 20, 5, 9, 14, 20, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10, 15,
    21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
];

/// RFC 1321's table: `K[i] = floor(abs(sin(i + 1)) * 2^32)`, computed once.
fn md5_k() -> &'static [u32; 64] {
    static K: std::sync::OnceLock<[u32; 64]> = std::sync::OnceLock::new();
    K.get_or_init(|| {
        std::array::from_fn(|i| ((i as f64 + 1.0).sin().abs() * 4_294_967_296.0) as u32)
    })
}

fn md5_block(state: &mut [u32; 4], block: &[u8]) {
    let k = md5_k();
    let m: [u32; 16] = std::array::from_fn(|i| {
        u32::from_le_bytes([
            block[4 * i],
            block[4 * i + 1],
            block[4 * i + 2],
            block[4 * i + 3],
        ])
    });
    let [mut a, mut b, mut c, mut d] = *state;
    // One step: `a` moves to the back, the new word goes second.
    macro_rules! step {
        ($f:expr, $i:expr, $g:expr) => {{
            let rotated = a
                .wrapping_add($f)
                .wrapping_add(k[$i])
                .wrapping_add(m[$g])
                .rotate_left(MD5_S[$i]);
            (a, d, c, b) = (d, c, b, b.wrapping_add(rotated));
        }};
    }
    // Four rounds of sixteen, each with its own function and word order
    // (separate loops, so the compiler sees constant shapes).
    for i in 0..16 {
        step!((b & c) | (!b & d), i, i);
    }
    for i in 16..32 {
        step!((d & b) | (!d & c), i, (5 * i + 1) % 16);
    }
    for i in 32..48 {
        step!(b ^ c ^ d, i, (3 * i + 5) % 16);
    }
    for i in 48..64 {
        step!(c ^ (b | !d), i, (7 * i) % 16);
    }
    for (word, add) in state.iter_mut().zip([a, b, c, d]) {
        *word = word.wrapping_add(add);
    }
}

#[cfg(test)]
mod tests;
