//! Which brokers exist: the desired state, read from PostgreSQL, kept in a local snapshot.
//!
//! The catalog thread reads `iot_data.mqtt_broker` and `iot_data.mqtt_topic`,
//! validates the rows (bad rows are logged and skipped, good rows still run),
//! writes every good read to the SQLite snapshot, and sends each *changed*
//! [`Catalog`] to the sessions supervisor. When the database is unreachable it
//! serves the snapshot. It never talks MQTT and never touches the spool.

use crate::secret::Secret;

/// `iot_data.mqtt_broker.mqtt_id`.
pub type BrokerId = i64;

/// One active broker and everything a session needs to connect to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Broker {
    pub id: BrokerId,
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// Sorted by filter, no duplicate filters.
    pub topics: Vec<Topic>,
}

impl Broker {
    /// True when a session for `self` must reconnect to become `other`
    /// (anything but the topic list changed).
    pub fn connection_differs(&self, other: &Broker) -> bool {
        self.host != other.host
            || self.port != other.port
            || self.username != other.username
            || self.password != other.password
    }
}

/// One subscription: an MQTT topic filter and the QoS to subscribe with.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Topic {
    pub filter: String,
    /// 0, 1 or 2.
    pub qos: u8,
}

/// The desired state: every active broker, sorted by id, ids unique.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Catalog {
    pub brokers: Vec<Broker>,
}

/// Starts the catalog thread (placeholder; see issue 3). The receiver yields
/// the first catalog (from the database, or else the snapshot) and every change.
pub fn start(
    config: crate::config::CatalogConfig,
    shutdown: crate::shutdown::Shutdown,
) -> std::io::Result<(
    async_channel::Receiver<Catalog>,
    std::thread::JoinHandle<()>,
)> {
    let (sender, receiver) = async_channel::bounded(4);
    let handle = std::thread::Builder::new()
        .name("catalog".into())
        .spawn(move || {
            let _ = (config, sender);
            shutdown.wait_timeout(std::time::Duration::MAX);
        })?;
    Ok((receiver, handle))
}
