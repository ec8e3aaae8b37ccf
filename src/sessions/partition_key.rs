//! Pure: the Kinesis partition key of a message, by the configured scheme.
//!
//! Kinesis accepts 1 to 256 Unicode characters. We keep at most 256 bytes
//! (never more than 256 characters), cut at a character boundary, and never
//! return an empty key.

use std::fmt::Write;

use crate::catalog::BrokerId;
use crate::config::PartitionKeyScheme;
use crate::spool::PartitionKey;

/// The key for a message on `topic` from broker `broker_id`, with the
/// device id the topic names (`device_id`, see `crate::devices`); the device
/// schemes fall back to the topic when there is none.
pub fn partition_key(
    scheme: PartitionKeyScheme,
    broker_id: BrokerId,
    topic: &str,
    device_id: Option<&str>,
) -> PartitionKey {
    let mut key = PartitionKey::new();
    // Written straight into the key, no String in between. Only the capacity
    // can make a write fail: the broker id (at most 20 bytes) and the device
    // id (at most 128) always fit; a topic is cut to what is left.
    match (scheme, device_id) {
        (PartitionKeyScheme::Device, Some(device_id)) => {
            let _ = key.write_str(device_id);
        }
        (PartitionKeyScheme::BrokerDevice, Some(device_id)) => {
            let _ = write!(key, "{broker_id}/{device_id}");
        }
        // MQTT forbids empty topic names; if one slips through, the broker id keeps the key valid.
        (PartitionKeyScheme::Topic | PartitionKeyScheme::Device, _) if !topic.is_empty() => {
            let _ = key.write_str(truncate(topic, key.capacity()));
        }
        (
            PartitionKeyScheme::Topic | PartitionKeyScheme::Device | PartitionKeyScheme::Broker,
            _,
        ) => {
            let _ = write!(key, "{broker_id}");
        }
        (PartitionKeyScheme::BrokerTopic | PartitionKeyScheme::BrokerDevice, _) => {
            let _ = write!(key, "{broker_id}/");
            let room = key.capacity() - key.len();
            let _ = key.write_str(truncate(topic, room));
        }
    }
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
