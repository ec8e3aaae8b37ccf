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
/// Written into one buffer of the exact size: each record's bytes are copied once.
pub fn encode<'a>(key: &str, records: impl Iterator<Item = &'a [u8]> + Clone) -> Vec<u8> {
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
    let digest = md5(&out[MAGIC.len()..]);
    out.extend_from_slice(&digest);
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
        md5_block(&mut state, block.try_into().expect("64 bytes"));
    }
    let mut tail = [0u8; 128];
    let rest = &input[whole..];
    tail[..rest.len()].copy_from_slice(rest);
    tail[rest.len()] = 0x80;
    let tail_len = if rest.len() < 56 { 64 } else { 128 };
    tail[tail_len - 8..tail_len]
        .copy_from_slice(&(input.len() as u64).wrapping_mul(8).to_le_bytes());
    for block in tail[..tail_len].chunks_exact(64) {
        md5_block(&mut state, block.try_into().expect("64 bytes"));
    }
    let mut digest = [0u8; 16];
    for (i, word) in state.iter().enumerate() {
        digest[4 * i..4 * i + 4].copy_from_slice(&word.to_le_bytes());
    }
    digest
}

/// RFC 1321's table: `T[i] = floor(abs(sin(i + 1)) * 2^32)`.
const MD5_K: [u32; 64] = [
    0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501,
    0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821,
    0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
    0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a,
    0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70,
    0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
    0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
    0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391,
];

/// One 64-byte block, RFC 1321's 64 steps written out: at the release
/// profile's `opt-level = "s"` a loop is not unrolled, and the rotation
/// amounts and word indexes must be constants for this to be cheap (it runs
/// over every aggregated byte).
fn md5_block(state: &mut [u32; 4], block: &[u8; 64]) {
    let mut m = [0u32; 16];
    for (word, bytes) in m.iter_mut().zip(block.chunks_exact(4)) {
        *word = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    }
    let [mut a, mut b, mut c, mut d] = *state;
    // F and G as the RFC's selections, in three operations instead of four.
    let f = |x: u32, y: u32, z: u32| z ^ (x & (y ^ z));
    let g = |x: u32, y: u32, z: u32| y ^ (z & (x ^ y));
    let h = |x: u32, y: u32, z: u32| x ^ y ^ z;
    let i = |x: u32, y: u32, z: u32| y ^ (x | !z);
    // [abcd k s i] of RFC 1321: a = b + ((a + F(b,c,d) + X[k] + T[i]) <<< s).
    macro_rules! step {
        ($fun:ident, $a:ident, $b:ident, $c:ident, $d:ident, $k:literal, $s:literal, $i:literal) => {
            $a = $b.wrapping_add(
                $a.wrapping_add($fun($b, $c, $d))
                    .wrapping_add(m[$k])
                    .wrapping_add(MD5_K[$i])
                    .rotate_left($s),
            );
        };
    }
    step!(f, a, b, c, d, 0, 7, 0);
    step!(f, d, a, b, c, 1, 12, 1);
    step!(f, c, d, a, b, 2, 17, 2);
    step!(f, b, c, d, a, 3, 22, 3);
    step!(f, a, b, c, d, 4, 7, 4);
    step!(f, d, a, b, c, 5, 12, 5);
    step!(f, c, d, a, b, 6, 17, 6);
    step!(f, b, c, d, a, 7, 22, 7);
    step!(f, a, b, c, d, 8, 7, 8);
    step!(f, d, a, b, c, 9, 12, 9);
    step!(f, c, d, a, b, 10, 17, 10);
    step!(f, b, c, d, a, 11, 22, 11);
    step!(f, a, b, c, d, 12, 7, 12);
    step!(f, d, a, b, c, 13, 12, 13);
    step!(f, c, d, a, b, 14, 17, 14);
    step!(f, b, c, d, a, 15, 22, 15);
    step!(g, a, b, c, d, 1, 5, 16);
    step!(g, d, a, b, c, 6, 9, 17);
    step!(g, c, d, a, b, 11, 14, 18);
    step!(g, b, c, d, a, 0, 20, 19);
    step!(g, a, b, c, d, 5, 5, 20);
    step!(g, d, a, b, c, 10, 9, 21);
    step!(g, c, d, a, b, 15, 14, 22);
    step!(g, b, c, d, a, 4, 20, 23);
    step!(g, a, b, c, d, 9, 5, 24);
    step!(g, d, a, b, c, 14, 9, 25);
    step!(g, c, d, a, b, 3, 14, 26);
    step!(g, b, c, d, a, 8, 20, 27);
    step!(g, a, b, c, d, 13, 5, 28);
    step!(g, d, a, b, c, 2, 9, 29);
    step!(g, c, d, a, b, 7, 14, 30);
    step!(g, b, c, d, a, 12, 20, 31);
    step!(h, a, b, c, d, 5, 4, 32);
    step!(h, d, a, b, c, 8, 11, 33);
    step!(h, c, d, a, b, 11, 16, 34);
    step!(h, b, c, d, a, 14, 23, 35);
    step!(h, a, b, c, d, 1, 4, 36);
    step!(h, d, a, b, c, 4, 11, 37);
    step!(h, c, d, a, b, 7, 16, 38);
    step!(h, b, c, d, a, 10, 23, 39);
    step!(h, a, b, c, d, 13, 4, 40);
    step!(h, d, a, b, c, 0, 11, 41);
    step!(h, c, d, a, b, 3, 16, 42);
    step!(h, b, c, d, a, 6, 23, 43);
    step!(h, a, b, c, d, 9, 4, 44);
    step!(h, d, a, b, c, 12, 11, 45);
    step!(h, c, d, a, b, 15, 16, 46);
    step!(h, b, c, d, a, 2, 23, 47);
    step!(i, a, b, c, d, 0, 6, 48);
    step!(i, d, a, b, c, 7, 10, 49);
    step!(i, c, d, a, b, 14, 15, 50);
    step!(i, b, c, d, a, 5, 21, 51);
    step!(i, a, b, c, d, 12, 6, 52);
    step!(i, d, a, b, c, 3, 10, 53);
    step!(i, c, d, a, b, 10, 15, 54);
    step!(i, b, c, d, a, 1, 21, 55);
    step!(i, a, b, c, d, 8, 6, 56);
    step!(i, d, a, b, c, 15, 10, 57);
    step!(i, c, d, a, b, 6, 15, 58);
    step!(i, b, c, d, a, 13, 21, 59);
    step!(i, a, b, c, d, 4, 6, 60);
    step!(i, d, a, b, c, 11, 10, 61);
    step!(i, c, d, a, b, 2, 15, 62);
    step!(i, b, c, d, a, 9, 21, 63);
    for (word, add) in state.iter_mut().zip([a, b, c, d]) {
        *word = word.wrapping_add(add);
    }
}

#[cfg(test)]
mod tests;
