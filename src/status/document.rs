//! The status file's one typed document: written by [`super::file`], read
//! back by [`mod@super::report`] (and by anything else that wants the running
//! gateway's word: it is plain JSON). Fields added later are optional, so a
//! file written by an older gateway still reads.

use serde::{Deserialize, Serialize};

use super::board::SessionStatus;
use crate::clock::epoch_ms;
use crate::ids::BrokerId;
use crate::spool::SpaceStatus;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusDocument {
    pub gateway_id: String,
    pub pid: u32,
    /// False in the last write of a gateway that stopped.
    pub running: bool,
    /// When it was written (Unix ms): a stale file means the gateway is down.
    #[serde(default)]
    pub written_at_ms: i64,
    /// Records delivered per second over the last minute; `None` until known.
    pub drain_records_per_s: Option<f64>,
    /// AWS's clock minus the gateway's, in ms, as the drain last learned it.
    #[serde(default)]
    pub clock_offset_ms: i64,
    /// The spool's filesystem as the writer last measured it.
    #[serde(default)]
    pub disk: Option<DiskLine>,
    /// Where the AWS credentials came from and when they expire (never a key).
    #[serde(default)]
    pub credentials: Option<CredentialsLine>,
    /// `no aggregation` / `KPL aggregation up to 51200 bytes` (`kinesis.aggregation`).
    #[serde(default)]
    pub aggregation: Option<String>,
    /// What the drain stored in the stream since the gateway started.
    #[serde(default)]
    pub stored: Option<StoredLine>,
    pub brokers: Vec<BrokerLine>,
}

/// Kinesis records and the messages they carried: equal without aggregation,
/// far fewer records with `kinesis.aggregation = "kpl"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredLine {
    pub kinesis_records: u64,
    pub messages: u64,
}

/// The AWS credentials the drain signs with: their source and expiry, never
/// a key or token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialsLine {
    /// `environment`, `iot credentials provider, role alias X`, …
    pub source: String,
    /// Whether the drain may sign with them now (records wait while not).
    pub valid: bool,
    /// When they expire, in this machine's clock, to the second; `None`: they do not.
    pub expires_at_ms: Option<i64>,
    /// The last failed fetch, until one succeeds.
    pub last_error: Option<String>,
}

/// One broker's session, as the file and the status table hold it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BrokerLine {
    pub broker_id: BrokerId,
    pub connected: bool,
    pub endpoint: Option<String>,
    /// 1-based, as the logs say "endpoint 2/3".
    pub endpoint_index: usize,
    pub endpoint_count: usize,
    pub since_ms: i64,
    pub last_error: Option<String>,
    pub received: u64,
    pub lost: u64,
    pub last_message_at_ms: Option<i64>,
    pub subscribed_topics: usize,
    /// Since when every connection dies on the same unreadable message.
    #[serde(default)]
    pub wedged_since_ms: Option<i64>,
}

impl BrokerLine {
    pub fn new(broker_id: BrokerId, status: &SessionStatus) -> BrokerLine {
        BrokerLine {
            broker_id,
            connected: status.connected,
            endpoint: status.endpoint.clone(),
            endpoint_index: status.endpoint_index + 1,
            endpoint_count: status.n_endpoints,
            since_ms: epoch_ms(status.since),
            last_error: status.last_error.clone(),
            received: status.n_received,
            lost: status.n_lost,
            last_message_at_ms: status.last_message_at.map(epoch_ms),
            subscribed_topics: status.n_subscribed,
            wedged_since_ms: status.wedged_since.map(epoch_ms),
        }
    }

    /// `connected`, `disconnected` or `wedged` (every connection dies on one
    /// unreadable message).
    pub fn state(&self) -> &'static str {
        if self.wedged_since_ms.is_some() {
            "wedged"
        } else if self.connected {
            "connected"
        } else {
            "disconnected"
        }
    }
}

/// The spool's filesystem, as the writer last measured it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskLine {
    pub free_bytes: u64,
    pub total_bytes: u64,
    pub spool_free_page_bytes: u64,
    pub min_free_bytes: u64,
    pub appends_paused: bool,
    pub reserve_in_place: bool,
}

impl DiskLine {
    pub fn new(space: &SpaceStatus) -> DiskLine {
        DiskLine {
            free_bytes: space.fs_free(),
            total_bytes: space.fs_total(),
            spool_free_page_bytes: space.spool_free(),
            min_free_bytes: space.min_free_bytes(),
            appends_paused: space.appends_paused(),
            reserve_in_place: space.reserve_in_place(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_without_the_later_fields_still_reads() {
        let old = r#"{"gateway_id":"gw","pid":7,"running":true,"written_at_ms":5,
            "drain_records_per_s":null,"brokers":[{"broker_id":1,"connected":true,
            "endpoint":"h:1883","endpoint_index":1,"endpoint_count":1,"since_ms":1,
            "last_error":null,"received":3,"lost":0,"last_message_at_ms":null,
            "subscribed_topics":1}]}"#;
        let document: StatusDocument = serde_json::from_str(old).unwrap();
        assert_eq!(document.clock_offset_ms, 0);
        assert_eq!(document.disk, None);
        assert_eq!(document.brokers[0].state(), "connected");
        let again: StatusDocument =
            serde_json::from_str(&serde_json::to_string(&document).unwrap()).unwrap();
        assert_eq!(again, document);
    }
}
