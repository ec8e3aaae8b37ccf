//! Pure: the Kinesis partition key of a message, by the configured scheme.
//!
//! Kinesis accepts 1 to 256 Unicode characters. We keep at most 256 bytes
//! (never more than 256 characters), cut at a character boundary, and never
//! return an empty key.

use std::fmt::Write;

use crate::catalog::BrokerId;
use crate::config::PartitionKeyScheme;
use crate::spool::PartitionKey;

/// The key for a message on `topic` from broker `broker_id`.
pub fn partition_key(scheme: PartitionKeyScheme, broker_id: BrokerId, topic: &str) -> PartitionKey {
    let text = match scheme {
        // MQTT forbids empty topic names; if one slips through, the broker id keeps the key valid.
        PartitionKeyScheme::Topic if !topic.is_empty() => topic.to_owned(),
        PartitionKeyScheme::Topic | PartitionKeyScheme::Broker => broker_id.to_string(),
        PartitionKeyScheme::BrokerTopic => format!("{broker_id}/{topic}"),
    };
    let mut key = PartitionKey::new();
    // Only the capacity can make write_str fail; truncate first so it cannot.
    let _ = key.write_str(truncate(&text, key.capacity()));
    key
}

/// The longest prefix of `text` of at most `max_bytes` that ends on a char boundary.
fn truncate(text: &str, max_bytes: usize) -> &str {
    if text.len() <= max_bytes {
        return text;
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests;
