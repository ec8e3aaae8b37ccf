//! Identifiers every stage shares, so the spool and the drain can store and
//! count them without knowing what a broker is.

/// `iot_data.mqtt_broker.mqtt_id`: names a broker in the catalog, the spool and the status.
pub type BrokerId = i64;

/// The device a message came from: one level of its topic (`device_id_level`
/// on the topic row). Bounded, so it lives inline (no allocation per
/// message) and `{mqtt_id}/{device_id}` still fits Kinesis's 256-character
/// partition key; a longer level is no device id.
pub type DeviceId = heapless::String<MAX_DEVICE_ID_BYTES>;

/// The longest device id, in bytes.
pub const MAX_DEVICE_ID_BYTES: usize = 128;
