//! Identifiers every stage shares, so the spool and the drain can store and
//! count them without knowing what a broker is.

/// `iot_data.mqtt_broker.mqtt_id`: names a broker in the catalog, the spool and the status.
pub type BrokerId = i64;
