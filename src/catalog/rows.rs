//! Pure: catalog rows as read from the database → a validated [`Catalog`] and the problems found.
//!
//! Partial success is the normal result: a bad row is skipped with a
//! [`RowProblem`] naming it, and every good row still runs. Nothing here does IO.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use std::time::Duration;

use super::{Broker, BrokerId, Catalog, Endpoint, TlsSettings, Topic};
use crate::devices::MAX_LEVEL;
use crate::sealed::{self, SealKey};
use crate::secret::Secret;
pub use error::{EndpointProblem, RowError, StoredFilterProblem};

mod error;

/// One `iot_data.mqtt_broker` row with `status = TRUE`, columns as read (any
/// may be NULL; an optional column the table lacks reads as NULL).
#[derive(Clone, Debug, Default)]
pub struct BrokerRow {
    pub mqtt_id: i64,
    pub host: Option<String>,
    pub port: Option<i64>,
    pub username: Option<String>,
    /// Plain, or `enc:v1:` sealed with the gateway's key.
    pub password: Option<Secret>,
    /// Further `host[:port]` entries after the primary, comma separated.
    pub failover: Option<String>,
    pub use_tls: Option<bool>,
    pub verify_cert: Option<bool>,
    pub ca_cert: Option<String>,
    pub client_cert: Option<String>,
    /// Plain PEM, a path, or `enc:v1:` sealed PEM.
    pub client_key: Option<Secret>,
    pub client_id: Option<String>,
    /// Seconds.
    pub keep_alive: Option<i64>,
    pub clean_session: Option<bool>,
    /// QoS for this broker's topic rows whose `qos` is NULL.
    pub qos: Option<i64>,
    pub topic_prefix: Option<String>,
    pub use_shared_subscriptions: Option<bool>,
    pub shared_group: Option<String>,
}

/// One `iot_data.mqtt_topic` row with `status = TRUE`.
#[derive(Clone, Debug, Default)]
pub struct TopicRow {
    pub topic_id: i64,
    /// `None`: the topic applies to every broker.
    pub mqtt_id: Option<i64>,
    pub topic: Option<String>,
    pub qos: Option<i64>,
    /// The topic level naming the device (NULL, or a catalog without the column: none).
    pub device_id_level: Option<i64>,
}

/// A row that was skipped, and why. Never holds a password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RowProblem {
    Broker {
        mqtt_id: BrokerId,
        error: RowError,
    },
    Topic {
        topic_id: i64,
        error: RowError,
    },
    /// A row that cannot even be named (its `mqtt_id` is NULL).
    Unnamed {
        table: &'static str,
        error: RowError,
    },
}

impl RowProblem {
    /// `mqtt_broker mqtt_id=7`: the row, without the message.
    pub fn target(&self) -> String {
        match self {
            RowProblem::Broker { mqtt_id, .. } => format!("mqtt_broker mqtt_id={mqtt_id}"),
            RowProblem::Topic { topic_id, .. } => format!("mqtt_topic topic_id={topic_id}"),
            RowProblem::Unnamed { table, .. } => format!("{table} row"),
        }
    }
}

impl fmt::Display for RowProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RowProblem::Broker { mqtt_id, error } => {
                write!(f, "mqtt_broker row mqtt_id={mqtt_id}: {error}")
            }
            RowProblem::Topic { topic_id, error } => {
                write!(f, "mqtt_topic row topic_id={topic_id}: {error}")
            }
            RowProblem::Unnamed { table, error } => write!(f, "{table} row: {error}, skipped"),
        }
    }
}

/// The group shared subscriptions use when `shared_group` is NULL.
pub const DEFAULT_SHARED_GROUP: &str = "mqtt-kinesis-bridge";

/// Validates the active rows, opening `enc:v1:` values with `key`; returns the
/// brokers that can run and what was skipped.
pub fn validate(
    broker_rows: &[BrokerRow],
    topic_rows: &[TopicRow],
    key: Option<&SealKey>,
) -> (Catalog, Vec<RowProblem>) {
    let mut problems = Vec::new();
    let mut n_rows_by_id: HashMap<BrokerId, usize> = HashMap::new();
    for row in broker_rows {
        *n_rows_by_id.entry(row.mqtt_id).or_default() += 1;
    }
    let mut duplicates: Vec<(BrokerId, usize)> = n_rows_by_id
        .iter()
        .filter(|(_, n_rows)| **n_rows > 1)
        .map(|(id, n_rows)| (*id, *n_rows))
        .collect();
    duplicates.sort_unstable();
    for (mqtt_id, n_rows) in duplicates {
        // Which of the duplicates is meant is unknowable: run none of them.
        problems.push(RowProblem::Broker {
            mqtt_id,
            error: RowError::DuplicateId { n_rows },
        });
    }
    let mut brokers: BTreeMap<BrokerId, (Broker, Subscriptions)> = BTreeMap::new();
    for row in broker_rows
        .iter()
        .filter(|row| n_rows_by_id[&row.mqtt_id] == 1)
    {
        match validate_broker(row, key) {
            Ok(broker) => {
                brokers.insert(broker.0.id, broker);
            }
            Err(error) => problems.push(RowProblem::Broker {
                mqtt_id: row.mqtt_id,
                error,
            }),
        }
    }

    // With the row's topic_id: a filter in several rows takes the
    // device_id_level of the lowest topic_id that sets one.
    let mut shared_topics: Vec<(i64, Topic)> = Vec::new();
    let mut own_topics: HashMap<BrokerId, Vec<(i64, Topic)>> = HashMap::new();
    for row in topic_rows {
        let topic = match validate_topic(row) {
            Ok(topic) => topic,
            Err(error) => {
                problems.push(RowProblem::Topic {
                    topic_id: row.topic_id,
                    error,
                });
                continue;
            }
        };
        match row.mqtt_id {
            None => shared_topics.push((row.topic_id, topic)),
            // A topic of an inactive or unknown broker is simply not used.
            Some(id) => own_topics
                .entry(id)
                .or_default()
                .push((row.topic_id, topic)),
        }
    }
    let mut catalog = Catalog::default();
    for (mut broker, subscriptions) in brokers.into_values() {
        let mut topics = shared_topics.clone();
        topics.extend(own_topics.remove(&broker.id).unwrap_or_default());
        match topics
            .into_iter()
            .map(|(topic_id, topic)| Ok((topic_id, subscriptions.apply(topic)?)))
            .collect::<Result<Vec<(i64, Topic)>, RowError>>()
        {
            Ok(topics) => {
                broker.topics = merge_topics(topics);
                catalog.brokers.push(broker);
            }
            Err(error) => problems.push(RowProblem::Broker {
                mqtt_id: broker.id,
                error,
            }),
        }
    }
    (catalog, problems)
}

/// How a broker turns topic rows into subscriptions.
struct Subscriptions {
    /// For topic rows whose qos is NULL (marked by [`QOS_UNSET`]).
    default_qos: u8,
    prefix: String,
    share_group: Option<String>,
}

/// A topic row's qos when the column is NULL, until the broker's default applies.
const QOS_UNSET: u8 = u8::MAX;

impl Subscriptions {
    fn apply(&self, topic: Topic) -> Result<Topic, RowError> {
        let mut filter = format!("{}{}", self.prefix, topic.filter);
        check_filter(&filter).map_err(|why| RowError::PrefixedFilter {
            prefix: self.prefix.clone(),
            topic: topic.filter.clone(),
            why,
        })?;
        if let Some(group) = &self.share_group {
            filter = format!("$share/{group}/{filter}");
            // The limit holds for what goes into SUBSCRIBE (found by fuzz/ topic_filter).
            if filter.len() > MAX_FILTER_BYTES {
                return Err(RowError::SharedFilterTooLong {
                    group: group.clone(),
                    prefix: self.prefix.clone(),
                    topic: topic.filter,
                });
            }
        }
        let qos = if topic.qos == QOS_UNSET {
            self.default_qos
        } else {
            topic.qos
        };
        Ok(Topic {
            filter,
            qos,
            device_id_level: topic.device_id_level,
        })
    }
}

fn validate_broker(
    row: &BrokerRow,
    key: Option<&SealKey>,
) -> Result<(Broker, Subscriptions), RowError> {
    let host = match row.host.as_deref().map(str::trim) {
        None => {
            return Err(RowError::Null {
                column: "mqtt_host",
            })
        }
        Some("") => {
            return Err(RowError::Empty {
                column: "mqtt_host",
            })
        }
        Some(host) => check_host("mqtt_host", host)?,
    };
    let port = match row.port {
        // The seed table defaults the column; NULL means the MQTT default.
        None => 1883,
        Some(port) => {
            u16::try_from(port)
                .ok()
                .filter(|port| *port != 0)
                .ok_or(RowError::OutOfRange {
                    column: "mqtt_port",
                    value: port,
                    accepted: PORT_RANGE,
                })?
        }
    };
    let mut endpoints = vec![Endpoint { host, port }];
    for entry in row
        .failover
        .as_deref()
        .unwrap_or_default()
        .split([',', ' ', '\n', '\t'])
        .filter(|entry| !entry.is_empty())
    {
        let endpoint = parse_endpoint(entry, port).map_err(|problem| RowError::Failover {
            entry: entry.to_owned(),
            problem,
        })?;
        if !endpoints.contains(&endpoint) {
            endpoints.push(endpoint);
        }
    }
    let username = row.username.clone().filter(|name| !name.is_empty());
    let mut sealed_secret = false;
    let mut open = |column: &'static str, value: &Secret| {
        let (secret, format) = unseal(row.mqtt_id, column, value, key)?;
        sealed_secret |= format.is_some();
        if format == Some(sealed::Format::V1) {
            warn_v1_once(row.mqtt_id, column);
        }
        Ok::<Secret, RowError>(secret)
    };
    let password = row
        .password
        .as_ref()
        .filter(|password| !password.expose().is_empty())
        .map(|password| open("mqtt_password", password))
        .transpose()?;
    if password.is_some() && username.is_none() {
        return Err(RowError::Unpaired {
            column: "mqtt_password",
            missing: "mqtt_username",
        });
    }
    let tls = if row.use_tls == Some(true) {
        Some(validate_tls(row, &mut open)?)
    } else {
        None
    };
    let client_id = row.client_id.clone().filter(|id| !id.trim().is_empty());
    if let Some(id) = &client_id {
        if id.len() > 128 || id.chars().any(char::is_control) {
            return Err(RowError::ClientId {
                client_id: id.clone(),
            });
        }
    }
    let keep_alive = match row.keep_alive {
        None => None,
        Some(seconds @ 1..=65535) => Some(Duration::from_secs(seconds as u64)),
        Some(seconds) => {
            return Err(RowError::OutOfRange {
                column: "keep_alive",
                value: seconds,
                accepted: KEEP_ALIVE_RANGE,
            })
        }
    };
    let default_qos = match row.qos {
        None => 1,
        Some(qos @ 0..=2) => qos as u8,
        Some(qos) => {
            return Err(RowError::OutOfRange {
                column: "qos",
                value: qos,
                accepted: QOS_RANGE,
            })
        }
    };
    let prefix = row.topic_prefix.clone().unwrap_or_default();
    if prefix.contains(['+', '#', '\0']) {
        return Err(RowError::Forbidden {
            column: "topic_prefix",
            value: prefix,
            forbidden: "the wildcards + or #",
        });
    }
    let share_group = if row.use_shared_subscriptions == Some(true) {
        let group = row
            .shared_group
            .clone()
            .filter(|group| !group.is_empty())
            .unwrap_or_else(|| DEFAULT_SHARED_GROUP.to_owned());
        if group.contains(['/', '+', '#', '\0']) {
            return Err(RowError::Forbidden {
                column: "shared_group",
                value: group,
                forbidden: "'/', '+' or '#'",
            });
        }
        Some(group)
    } else {
        None
    };
    let broker = Broker {
        id: row.mqtt_id,
        endpoints,
        username,
        password,
        tls,
        client_id,
        keep_alive,
        clean_session: row.clean_session == Some(true),
        sealed_secret,
        topics: Vec::new(),
    };
    let subscriptions = Subscriptions {
        default_qos,
        prefix,
        share_group,
    };
    Ok((broker, subscriptions))
}

fn validate_tls(
    row: &BrokerRow,
    open: &mut impl FnMut(&'static str, &Secret) -> Result<Secret, RowError>,
) -> Result<TlsSettings, RowError> {
    let text = |value: &Option<String>| value.clone().filter(|text| !text.trim().is_empty());
    let client_cert = text(&row.client_cert);
    let client_key = row
        .client_key
        .as_ref()
        .filter(|key| !key.expose().trim().is_empty())
        .map(|client_key| open("client_key", client_key))
        .transpose()?;
    match (&client_cert, &client_key) {
        (Some(_), None) => {
            return Err(RowError::Unpaired {
                column: "client_cert",
                missing: "client_key",
            })
        }
        (None, Some(_)) => {
            return Err(RowError::Unpaired {
                column: "client_key",
                missing: "client_cert",
            })
        }
        _ => {}
    }
    Ok(TlsSettings {
        verify_cert: row.verify_cert != Some(false),
        ca: text(&row.ca_cert),
        client_cert,
        client_key,
    })
}

/// The plain value of a column of broker `broker_id` that may be sealed,
/// with the format it was sealed in (`None`: it was plain); errors name
/// `column`.
pub(super) fn unseal(
    broker_id: BrokerId,
    column: &'static str,
    value: &Secret,
    key: Option<&SealKey>,
) -> Result<(Secret, Option<sealed::Format>), RowError> {
    if !sealed::is_sealed(value.expose()) {
        return Ok((value.clone(), None));
    }
    match key {
        None => Err(RowError::NoKey {
            column,
            format: if value.expose().starts_with(sealed::PREFIX_V2) {
                sealed::PREFIX_V2
            } else {
                sealed::PREFIX
            },
        }),
        Some(key) => key
            .open_for(value.expose(), sealed::Binding { broker_id, column })
            .map(|(secret, format)| (secret, Some(format)))
            .map_err(|error| RowError::Sealed { column, error }),
    }
}

/// An `enc:v1:` value opens in any row: said once per row and column per
/// process (the catalog is read again on every change).
fn warn_v1_once(broker_id: BrokerId, column: &'static str) {
    static WARNED: std::sync::Mutex<std::collections::BTreeSet<(BrokerId, &str)>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut warned = WARNED.lock().unwrap_or_else(|e| e.into_inner());
    if warned.insert((broker_id, column)) {
        log::warn!(
            "catalog: mqtt_broker mqtt_id={broker_id}: {column} is sealed as enc:v1, which \
             is not bound to its row (a copy in another row would open too): seal it again \
             with `encrypt-password --broker {broker_id} --column {column}`"
        );
    }
}

/// What a port, keep-alive and QoS column accept, as [`RowError::OutOfRange`] says it.
const PORT_RANGE: &str = "is out of range 1..65535";
const KEEP_ALIVE_RANGE: &str = "is not 1..65535 seconds";
const QOS_RANGE: &str = "is not 0, 1 or 2";
/// The words for `devices::MAX_LEVEL`.
const LEVEL_RANGE: &str = "is not 1..32";
const _: () = assert!(MAX_LEVEL == 32, "LEVEL_RANGE names the bound");

/// Whether `host` can be a host name or address.
fn is_host(host: &str) -> bool {
    !host.is_empty()
        && !host
            .chars()
            .any(|c| c.is_whitespace() || "/[]@".contains(c))
}

/// The host name or address in `column` as given, or why it is not one.
fn check_host(column: &'static str, host: &str) -> Result<String, RowError> {
    if !is_host(host) {
        return Err(RowError::NotHost {
            column,
            host: host.to_owned(),
        });
    }
    Ok(host.to_owned())
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`; the port defaults to `default_port`.
fn parse_endpoint(entry: &str, default_port: u16) -> Result<Endpoint, EndpointProblem> {
    let (host, port) = if let Some(rest) = entry.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or(EndpointProblem::NoClosingBracket)?;
        match after {
            "" => (host, None),
            _ => (
                host,
                Some(
                    after
                        .strip_prefix(':')
                        .ok_or(EndpointProblem::NotBracketedPort)?,
                ),
            ),
        }
    } else {
        match entry.rsplit_once(':') {
            Some((host, _)) if host.contains(':') => return Err(EndpointProblem::BareIpv6),
            Some((host, port)) => (host, Some(port)),
            None => (entry, None),
        }
    };
    let port = match port {
        None => default_port,
        Some(port) => port
            .parse::<u16>()
            .ok()
            .filter(|port| *port != 0)
            .ok_or(EndpointProblem::Port)?,
    };
    if host.contains(':') {
        // A bracketed IPv6 address.
        return Ok(Endpoint {
            host: host.to_owned(),
            port,
        });
    }
    if !is_host(host) {
        return Err(EndpointProblem::Host {
            host: host.to_owned(),
        });
    }
    Ok(Endpoint {
        host: host.to_owned(),
        port,
    })
}

fn validate_topic(row: &TopicRow) -> Result<Topic, RowError> {
    let filter = row
        .topic
        .as_deref()
        .ok_or(RowError::Null { column: "topic" })?;
    check_filter(filter).map_err(|why| RowError::TopicFilter {
        topic: filter.to_owned(),
        why,
    })?;
    let qos = match row.qos {
        None => QOS_UNSET,
        Some(qos @ 0..=2) => qos as u8,
        Some(qos) => {
            return Err(RowError::OutOfRange {
                column: "qos",
                value: qos,
                accepted: QOS_RANGE,
            })
        }
    };
    let device_id_level = match row.device_id_level {
        None => None,
        Some(level) => Some(
            u8::try_from(level)
                .ok()
                .filter(|level| (1..=MAX_LEVEL).contains(level))
                .ok_or(RowError::OutOfRange {
                    column: "device_id_level",
                    value: level,
                    accepted: LEVEL_RANGE,
                })?,
        ),
    };
    Ok(Topic {
        filter: filter.to_owned(),
        qos,
        device_id_level,
    })
}

/// The row rules, applied again to a broker that did not come from a row
/// (the snapshot, a file anyone with the gateway's rights could have edited):
/// endpoints, client id, keep-alive, filters and QoS as [`validate`]
/// would have let them through.
pub fn check_broker(broker: &Broker) -> Result<(), RowError> {
    if broker.endpoints.is_empty() {
        return Err(RowError::NoEndpoint);
    }
    for endpoint in &broker.endpoints {
        check_host("endpoint host", &endpoint.host)?;
        if endpoint.port == 0 {
            return Err(RowError::PortZero {
                endpoint: endpoint.to_string(),
            });
        }
    }
    if let Some(id) = &broker.client_id {
        if id.trim().is_empty() || id.len() > 128 || id.chars().any(char::is_control) {
            return Err(RowError::ClientId {
                client_id: id.clone(),
            });
        }
    }
    if let Some(keep_alive) = broker.keep_alive {
        if !(1..=65_535).contains(&keep_alive.as_secs()) {
            return Err(RowError::OutOfRange {
                column: "keep_alive",
                value: i64::try_from(keep_alive.as_secs()).unwrap_or(i64::MAX),
                accepted: KEEP_ALIVE_RANGE,
            });
        }
    }
    // Found by fuzz/ snapshot_restore: these too, as the rows would have them.
    if broker.password.is_some() && broker.username.is_none() {
        return Err(RowError::PasswordWithoutUser);
    }
    for topic in &broker.topics {
        let refused = |problem| RowError::StoredFilter {
            filter: topic.filter.clone(),
            problem,
        };
        if topic.filter.len() > MAX_FILTER_BYTES {
            return Err(refused(StoredFilterProblem::TooLong));
        }
        let filter = match topic.filter.strip_prefix("$share/") {
            Some(rest) => match rest.split_once('/') {
                Some((group, filter)) if !group.is_empty() && !group.contains(['+', '#', '\0']) => {
                    filter
                }
                _ => return Err(refused(StoredFilterProblem::NoShareGroup)),
            },
            None => &topic.filter,
        };
        check_filter(filter).map_err(|why| refused(StoredFilterProblem::Invalid(why)))?;
        if topic.qos > 2 {
            return Err(RowError::OutOfRange {
                column: "topic qos",
                value: i64::from(topic.qos),
                accepted: QOS_RANGE,
            });
        }
        if let Some(level) = topic.device_id_level {
            if !(1..=MAX_LEVEL).contains(&level) {
                return Err(RowError::OutOfRange {
                    column: "topic device_id_level",
                    value: i64::from(level),
                    accepted: LEVEL_RANGE,
                });
            }
        }
    }
    Ok(())
}

/// The longest topic filter the gateway subscribes to, prefix and share group included.
pub const MAX_FILTER_BYTES: usize = 1024;

/// MQTT 3.1.1 §4.7 rules for a subscription filter.
pub fn check_filter(filter: &str) -> Result<(), &'static str> {
    if filter.is_empty() {
        return Err("it is empty");
    }
    // MQTT allows 65535 bytes; no real filter comes near 1 KiB, and a few
    // very long ones could not share a SUBSCRIBE packet.
    if filter.len() > MAX_FILTER_BYTES {
        return Err("it is longer than 1024 bytes, the gateway's limit for a topic filter");
    }
    if filter.contains('\0') {
        return Err("it contains a NUL character");
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (level_idx, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || level_idx + 1 != levels.len()) {
            return Err("'#' must be a whole level and the last one");
        }
        if level.contains('+') && *level != "+" {
            return Err("'+' must be a whole level");
        }
    }
    Ok(())
}

/// Sorted by filter, one entry per filter, keeping the highest QoS asked for
/// and the `device_id_level` of the lowest topic_id that sets one.
fn merge_topics(mut topics: Vec<(i64, Topic)>) -> Vec<Topic> {
    topics.sort_by_key(|(topic_id, _)| *topic_id);
    let mut by_filter: BTreeMap<String, (u8, Option<u8>)> = BTreeMap::new();
    for (_, topic) in topics {
        let (qos, level) = by_filter
            .entry(topic.filter)
            .or_insert((topic.qos, topic.device_id_level));
        *qos = (*qos).max(topic.qos);
        *level = level.or(topic.device_id_level);
    }
    by_filter
        .into_iter()
        .map(|(filter, (qos, device_id_level))| Topic {
            filter,
            qos,
            device_id_level,
        })
        .collect()
}

#[cfg(test)]
mod tests;
