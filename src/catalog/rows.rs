//! Pure: catalog rows as read from the database → a validated [`Catalog`] and the problems found.
//!
//! Partial success is the normal result: a bad row is skipped with a
//! [`RowProblem`] naming it, and every good row still runs. Nothing here does IO.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use super::{Broker, BrokerId, Catalog, Topic};
use crate::secret::Secret;

/// One `iot_data.mqtt_broker` row with `status = TRUE`, columns as read (any may be NULL).
#[derive(Clone, Debug, Default)]
pub struct BrokerRow {
    pub mqtt_id: i64,
    pub host: Option<String>,
    pub port: Option<i64>,
    pub username: Option<String>,
    pub password: Option<Secret>,
}

/// One `iot_data.mqtt_topic` row with `status = TRUE`.
#[derive(Clone, Debug, Default)]
pub struct TopicRow {
    pub topic_id: i64,
    /// `None`: the topic applies to every broker.
    pub mqtt_id: Option<i64>,
    pub topic: Option<String>,
    pub qos: Option<i64>,
}

/// A row that was skipped, and why. Never holds a password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RowProblem {
    Broker { mqtt_id: BrokerId, message: String },
    Topic { topic_id: i64, message: String },
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
        }
    }
}

/// Validates the active rows; returns the brokers that can run and what was skipped.
pub fn validate(broker_rows: &[BrokerRow], topic_rows: &[TopicRow]) -> (Catalog, Vec<RowProblem>) {
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
    let mut brokers: BTreeMap<BrokerId, Broker> = BTreeMap::new();
    for row in broker_rows
        .iter()
        .filter(|row| n_rows_by_id[&row.mqtt_id] == 1)
    {
        match validate_broker(row) {
            Ok(broker) => {
                brokers.insert(broker.id, broker);
            }
            Err(message) => problems.push(RowProblem::Broker {
                mqtt_id: row.mqtt_id,
                message,
            }),
        }
    }

    let mut shared_topics = Vec::new();
    let mut own_topics: HashMap<BrokerId, Vec<Topic>> = HashMap::new();
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
            None => shared_topics.push(topic),
            // A topic of an inactive or unknown broker is simply not used.
            Some(id) => own_topics.entry(id).or_default().push(topic),
        }
    }
    for broker in brokers.values_mut() {
        let mut topics = shared_topics.clone();
        topics.extend(own_topics.remove(&broker.id).unwrap_or_default());
        broker.topics = merge_topics(topics);
    }
    (
        Catalog {
            brokers: brokers.into_values().collect(),
        },
        problems,
    )
}

fn validate_broker(row: &BrokerRow) -> Result<Broker, String> {
    let host = match row.host.as_deref().map(str::trim) {
        None => return Err("mqtt_host is NULL".into()),
        Some("") => return Err("mqtt_host is empty".into()),
        Some(host) if host.chars().any(|c| c.is_whitespace() || c == '/') => {
            return Err(format!("mqtt_host {host:?} is not a host name or address"))
        }
        Some(host) => host.to_owned(),
    };
    let port = match row.port {
        // The seed table defaults the column; NULL means the MQTT default.
        None => 1883,
        Some(port) => u16::try_from(port)
            .ok()
            .filter(|port| *port != 0)
            .ok_or_else(|| format!("mqtt_port {port} is out of range 1..65535"))?,
    };
    let username = row.username.clone().filter(|name| !name.is_empty());
    let password = row
        .password
        .clone()
        .filter(|password| !password.expose().is_empty());
    if password.is_some() && username.is_none() {
        return Err("mqtt_password is set but mqtt_username is empty".into());
    }
    Ok(Broker {
        id: row.mqtt_id,
        host,
        port,
        username,
        password,
        topics: Vec::new(),
    })
}

fn validate_topic(row: &TopicRow) -> Result<Topic, String> {
    let filter = row.topic.as_deref().ok_or("topic is NULL")?;
    check_filter(filter)
        .map_err(|why| format!("topic {filter:?} is not a valid MQTT topic filter: {why}"))?;
    let qos = match row.qos {
        None => 1,
        Some(qos @ 0..=2) => qos as u8,
        Some(qos) => return Err(format!("qos {qos} is not 0, 1 or 2")),
    };
    Ok(Topic {
        filter: filter.to_owned(),
        qos,
    })
}

/// MQTT 3.1.1 §4.7 rules for a subscription filter.
pub fn check_filter(filter: &str) -> Result<(), &'static str> {
    if filter.is_empty() {
        return Err("it is empty");
    }
    if filter.len() > 65535 {
        return Err("it is longer than 65535 bytes");
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

/// Sorted by filter, one entry per filter, keeping the highest QoS asked for.
fn merge_topics(topics: Vec<Topic>) -> Vec<Topic> {
    let mut by_filter: BTreeMap<String, u8> = BTreeMap::new();
    for topic in topics {
        let qos = by_filter.entry(topic.filter).or_insert(topic.qos);
        *qos = (*qos).max(topic.qos);
    }
    by_filter
        .into_iter()
        .map(|(filter, qos)| Topic { filter, qos })
        .collect()
}

#[cfg(test)]
mod tests;
