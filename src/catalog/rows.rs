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
        message: String,
    },
    Topic {
        topic_id: i64,
        message: String,
    },
    /// A row that cannot even be named (its `mqtt_id` is NULL).
    Unnamed {
        table: &'static str,
        message: String,
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
            RowProblem::Broker { mqtt_id, message } => {
                write!(f, "mqtt_broker row mqtt_id={mqtt_id}: {message}")
            }
            RowProblem::Topic { topic_id, message } => {
                write!(f, "mqtt_topic row topic_id={topic_id}: {message}")
            }
            RowProblem::Unnamed { table, message } => write!(f, "{table} row: {message}"),
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
            message: format!("mqtt_id appears in {n_rows} active rows; all are skipped"),
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
            Err(message) => problems.push(RowProblem::Broker {
                mqtt_id: row.mqtt_id,
                message,
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
            Err(message) => {
                problems.push(RowProblem::Topic {
                    topic_id: row.topic_id,
                    message,
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
            .collect::<Result<Vec<(i64, Topic)>, String>>()
        {
            Ok(topics) => {
                broker.topics = merge_topics(topics);
                catalog.brokers.push(broker);
            }
            Err(message) => problems.push(RowProblem::Broker {
                mqtt_id: broker.id,
                message,
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
    fn apply(&self, topic: Topic) -> Result<Topic, String> {
        let mut filter = format!("{}{}", self.prefix, topic.filter);
        check_filter(&filter).map_err(|why| {
            format!(
                "topic_prefix {:?} + topic {:?} is not a valid MQTT topic filter: {why}",
                Excerpt(&self.prefix),
                Excerpt(&topic.filter)
            )
        })?;
        if let Some(group) = &self.share_group {
            filter = format!("$share/{group}/{filter}");
            // The limit holds for what goes into SUBSCRIBE (found by fuzz/ topic_filter).
            if filter.len() > MAX_FILTER_BYTES {
                return Err(format!(
                    "$share/{:?}/ + topic_prefix {:?} + topic {:?} is longer than 1024 bytes, \
                     the gateway's limit for a topic filter",
                    Excerpt(group),
                    Excerpt(&self.prefix),
                    Excerpt(&topic.filter)
                ));
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
) -> Result<(Broker, Subscriptions), String> {
    let host = match row.host.as_deref().map(str::trim) {
        None => return Err("mqtt_host is NULL".into()),
        Some("") => return Err("mqtt_host is empty".into()),
        Some(host) => check_host(host).map_err(|why| format!("mqtt_host {why}"))?,
    };
    let port = match row.port {
        // The seed table defaults the column; NULL means the MQTT default.
        None => 1883,
        Some(port) => u16::try_from(port)
            .ok()
            .filter(|port| *port != 0)
            .ok_or_else(|| format!("mqtt_port {port} is out of range 1..65535"))?,
    };
    let mut endpoints = vec![Endpoint { host, port }];
    for entry in row
        .failover
        .as_deref()
        .unwrap_or_default()
        .split([',', ' ', '\n', '\t'])
        .filter(|entry| !entry.is_empty())
    {
        let endpoint = parse_endpoint(entry, port)
            .map_err(|why| format!("mqtt_failover entry {:?} {why}", Excerpt(entry)))?;
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
        Ok::<Secret, String>(secret)
    };
    let password = row
        .password
        .as_ref()
        .filter(|password| !password.expose().is_empty())
        .map(|password| open("mqtt_password", password))
        .transpose()?;
    if password.is_some() && username.is_none() {
        return Err("mqtt_password is set but mqtt_username is empty".into());
    }
    let tls = if row.use_tls == Some(true) {
        Some(validate_tls(row, &mut open)?)
    } else {
        None
    };
    let client_id = row.client_id.clone().filter(|id| !id.trim().is_empty());
    if let Some(id) = &client_id {
        if id.len() > 128 || id.chars().any(char::is_control) {
            return Err(format!(
                "client_id {:?} is not a usable MQTT client id (at most 128 printable characters)",
                Excerpt(id)
            ));
        }
    }
    let keep_alive = match row.keep_alive {
        None => None,
        Some(seconds @ 1..=65535) => Some(Duration::from_secs(seconds as u64)),
        Some(seconds) => return Err(format!("keep_alive {seconds} is not 1..65535 seconds")),
    };
    let default_qos = match row.qos {
        None => 1,
        Some(qos @ 0..=2) => qos as u8,
        Some(qos) => return Err(format!("qos {qos} is not 0, 1 or 2")),
    };
    let prefix = row.topic_prefix.clone().unwrap_or_default();
    if prefix.contains(['+', '#', '\0']) {
        return Err(format!(
            "topic_prefix {:?} must not hold the wildcards + or #",
            Excerpt(&prefix)
        ));
    }
    let share_group = if row.use_shared_subscriptions == Some(true) {
        let group = row
            .shared_group
            .clone()
            .filter(|group| !group.is_empty())
            .unwrap_or_else(|| DEFAULT_SHARED_GROUP.to_owned());
        if group.contains(['/', '+', '#', '\0']) {
            return Err(format!(
                "shared_group {:?} must not hold '/', '+' or '#'",
                Excerpt(&group)
            ));
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
    open: &mut impl FnMut(&'static str, &Secret) -> Result<Secret, String>,
) -> Result<TlsSettings, String> {
    let text = |value: &Option<String>| value.clone().filter(|text| !text.trim().is_empty());
    let client_cert = text(&row.client_cert);
    let client_key = row
        .client_key
        .as_ref()
        .filter(|key| !key.expose().trim().is_empty())
        .map(|client_key| open("client_key", client_key))
        .transpose()?;
    match (&client_cert, &client_key) {
        (Some(_), None) => return Err("client_cert is set but client_key is empty".into()),
        (None, Some(_)) => return Err("client_key is set but client_cert is empty".into()),
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
/// with the format it was sealed in (`None`: it was plain); errors start
/// with `column`.
pub(super) fn unseal(
    broker_id: BrokerId,
    column: &'static str,
    value: &Secret,
    key: Option<&SealKey>,
) -> Result<(Secret, Option<sealed::Format>), String> {
    if !sealed::is_sealed(value.expose()) {
        return Ok((value.clone(), None));
    }
    match key {
        None => Err(format!(
            "{column} is encrypted ({}) but the gateway has no key: set database.password_key_file or {}",
            &value.expose()[..7],
            sealed::KEY_ENV
        )),
        Some(key) => key
            .open_for(value.expose(), sealed::Binding { broker_id, column })
            .map(|(secret, format)| (secret, Some(format)))
            .map_err(|error| format!("{column}: {error}")),
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

/// A host name or address as given, or why it is not one.
fn check_host(host: &str) -> Result<String, String> {
    if host.is_empty()
        || host
            .chars()
            .any(|c| c.is_whitespace() || "/[]@".contains(c))
    {
        return Err(format!("{:?} is not a host name or address", Excerpt(host)));
    }
    Ok(host.to_owned())
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`; the port defaults to `default_port`.
fn parse_endpoint(entry: &str, default_port: u16) -> Result<Endpoint, String> {
    let (host, port) = if let Some(rest) = entry.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or("lacks the closing ']'")?;
        match after {
            "" => (host, None),
            _ => (
                host,
                Some(after.strip_prefix(':').ok_or("is not [address]:port")?),
            ),
        }
    } else {
        match entry.rsplit_once(':') {
            Some((host, _)) if host.contains(':') => {
                return Err("is an IPv6 address: write it as [address]:port".into())
            }
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
            .ok_or("has a port outside 1..65535")?,
    };
    if host.contains(':') {
        // A bracketed IPv6 address.
        return Ok(Endpoint {
            host: host.to_owned(),
            port,
        });
    }
    let host = check_host(host).map_err(|why| format!("has host {why}"))?;
    Ok(Endpoint { host, port })
}

fn validate_topic(row: &TopicRow) -> Result<Topic, String> {
    let filter = row.topic.as_deref().ok_or("topic is NULL")?;
    check_filter(filter).map_err(|why| {
        format!(
            "topic {:?} is not a valid MQTT topic filter: {why}",
            Excerpt(filter)
        )
    })?;
    let qos = match row.qos {
        None => QOS_UNSET,
        Some(qos @ 0..=2) => qos as u8,
        Some(qos) => return Err(format!("qos {qos} is not 0, 1 or 2")),
    };
    let device_id_level = match row.device_id_level {
        None => None,
        Some(level) => Some(
            u8::try_from(level)
                .ok()
                .filter(|level| (1..=MAX_LEVEL).contains(level))
                .ok_or_else(|| format!("device_id_level {level} is not 1..{MAX_LEVEL}"))?,
        ),
    };
    Ok(Topic {
        filter: filter.to_owned(),
        qos,
        device_id_level,
    })
}

/// A value from a row as a log line shows it: the first 100 characters, and
/// the length when there is more, so one huge cell cannot flood the log
/// (every quoted value, found by fuzz/ catalog_rows).
struct Excerpt<'a>(&'a str);

impl fmt::Debug for Excerpt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 100;
        match self.0.char_indices().nth(SHOWN) {
            None => write!(f, "{:?}", self.0),
            Some((cut, _)) => write!(f, "{:?}… ({} bytes)", &self.0[..cut], self.0.len()),
        }
    }
}

/// The row rules, applied again to a broker that did not come from a row
/// (the snapshot, a file anyone with the gateway's rights could have edited):
/// endpoints, client id, keep-alive, filters and QoS as [`validate`]
/// would have let them through.
pub fn check_broker(broker: &Broker) -> Result<(), String> {
    if broker.endpoints.is_empty() {
        return Err("no endpoint".into());
    }
    for endpoint in &broker.endpoints {
        check_host(&endpoint.host).map_err(|why| format!("endpoint host {why}"))?;
        if endpoint.port == 0 {
            return Err(format!("endpoint {endpoint} has port 0"));
        }
    }
    if let Some(id) = &broker.client_id {
        if id.trim().is_empty() || id.len() > 128 || id.chars().any(char::is_control) {
            return Err(format!(
                "client_id {:?} is not a usable MQTT client id (1 to 128 printable characters)",
                Excerpt(id)
            ));
        }
    }
    if let Some(keep_alive) = broker.keep_alive {
        if !(1..=65_535).contains(&keep_alive.as_secs()) {
            return Err(format!(
                "keep_alive {}s is not 1..65535 seconds",
                keep_alive.as_secs()
            ));
        }
    }
    // Found by fuzz/ snapshot_restore: these too, as the rows would have them.
    if broker.password.is_some() && broker.username.is_none() {
        return Err("a password without a user name".into());
    }
    for topic in &broker.topics {
        if topic.filter.len() > MAX_FILTER_BYTES {
            return Err(format!(
                "topic filter {:?} is longer than 1024 bytes",
                Excerpt(&topic.filter)
            ));
        }
        let filter = match topic.filter.strip_prefix("$share/") {
            Some(rest) => match rest.split_once('/') {
                Some((group, filter)) if !group.is_empty() && !group.contains(['+', '#', '\0']) => {
                    filter
                }
                _ => {
                    return Err(format!(
                        "topic filter {:?} lacks a usable share group",
                        Excerpt(&topic.filter)
                    ))
                }
            },
            None => &topic.filter,
        };
        check_filter(filter).map_err(|why| {
            format!(
                "topic filter {:?} is not usable: {why}",
                Excerpt(&topic.filter)
            )
        })?;
        if topic.qos > 2 {
            return Err(format!("topic qos {} is not 0, 1 or 2", topic.qos));
        }
        if let Some(level) = topic.device_id_level {
            if !(1..=MAX_LEVEL).contains(&level) {
                return Err(format!(
                    "topic device_id_level {level} is not 1..{MAX_LEVEL}"
                ));
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
