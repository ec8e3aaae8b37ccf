//! Picks the next PutRecords batch from the oldest spool records, within the Kinesis limits.
//!
//! Pure. Limits: at most 500 records, at most 5 MiB of data blobs and partition
//! keys per request, at most 1 MiB per record. A record that can never fit
//! (too large, or a partition key Kinesis refuses) is handed back as rejected,
//! so the caller moves it to dead letters instead of retrying it forever.
//! It does not encode the request body; [`super::put_records`] does.

use crate::spool::Record;

/// Records per PutRecords request, at most.
pub const MAX_RECORDS: usize = 500;
/// Data blobs plus partition keys of one request, at most.
pub const MAX_REQUEST_BYTES: usize = 5 * 1024 * 1024;
/// Data blob plus partition key of one record, at most.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;
/// Partition key length in Unicode characters, at most (and at least 1).
pub const MAX_PARTITION_KEY_CHARS: usize = 256;

/// One record as it goes on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Spool record id.
    pub id: i64,
    /// The encoded data blob (before base64).
    pub data: Vec<u8>,
    pub partition_key: String,
}

impl Entry {
    /// What counts against the Kinesis size limits.
    pub fn kinesis_bytes(&self) -> usize {
        self.data.len() + self.partition_key.len()
    }
}

/// The next request's records, in spool order, and the records that can never be sent.
#[derive(Debug, Default)]
pub struct Batch {
    pub entries: heapless::Vec<Entry, MAX_RECORDS>,
    /// (record id, why): for dead letters.
    pub rejected: Vec<(i64, String)>,
}

/// Takes records from `records` (oldest first) while they fit in one request
/// of at most `max_records` records and `max_request_bytes` of data blobs and
/// keys (less than Kinesis's 5 MiB when aggregation adds a few bytes per
/// record); `encode` makes each data blob.
///
/// Stops at the first record that does not fit, so order is kept: it leads the
/// next batch (read again from the spool). Takes the records, so each entry
/// keeps its record's partition key rather than a copy.
pub fn pick_within(
    records: Vec<Record>,
    max_records: usize,
    max_request_bytes: usize,
    mut encode: impl FnMut(&Record) -> Vec<u8>,
) -> Batch {
    let max_records = max_records.clamp(1, MAX_RECORDS);
    let mut batch = Batch::default();
    let mut request_bytes = 0;
    for record in records {
        if batch.entries.len() >= max_records {
            break;
        }
        if let Some(reason) = partition_key_problem(&record.partition_key) {
            batch.rejected.push((record.id, reason));
            continue;
        }
        let entry = Entry {
            id: record.id,
            data: encode(&record),
            partition_key: record.partition_key,
        };
        let size = entry.kinesis_bytes();
        if size > MAX_RECORD_BYTES {
            batch.rejected.push((
                record.id,
                format!(
                    "record is {size} bytes after encoding (data blob {} + partition key {}), Kinesis accepts at most {MAX_RECORD_BYTES}",
                    entry.data.len(),
                    entry.partition_key.len()
                ),
            ));
            continue;
        }
        if request_bytes + size > max_request_bytes {
            break;
        }
        request_bytes += size;
        // Cannot fail: the length was checked against max_records <= MAX_RECORDS above.
        let _ = batch.entries.push(entry);
    }
    batch
}

fn partition_key_problem(partition_key: &str) -> Option<String> {
    let n_chars = partition_key.chars().count();
    if n_chars == 0 {
        Some("partition key is empty, Kinesis needs 1 to 256 characters".to_owned())
    } else if n_chars > MAX_PARTITION_KEY_CHARS {
        Some(format!(
            "partition key has {n_chars} characters, Kinesis accepts at most {MAX_PARTITION_KEY_CHARS}"
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests;
