//! The catalog's only contact with PostgreSQL: connect, SELECT the active rows, LISTEN.
//!
//! Columns are read by name and by what they are, so the seed table works and
//! so does one extended with further columns (or integer columns of another
//! width). A missing optional column reads as NULL. No TLS to the database yet.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use postgres::fallible_iterator::FallibleIterator;
use postgres::types::Type;
use postgres::{Client, NoTls, Row};

use super::rows::{BrokerRow, TopicRow};
use crate::secret::Secret;

const SELECT_BROKERS: &str = "SELECT * FROM iot_data.mqtt_broker WHERE status IS TRUE";
const SELECT_TOPICS: &str = "SELECT * FROM iot_data.mqtt_topic WHERE status IS TRUE";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A database problem, as text that never holds the connection string's password.
#[derive(Debug)]
pub struct DbError(String);

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DbError {}

impl From<postgres::Error> for DbError {
    fn from(error: postgres::Error) -> Self {
        // postgres::Error's Display names the failing step and the server's
        // message; it does not echo the connection parameters.
        DbError(error.to_string())
    }
}

/// Connects, and subscribes to `notify_channel` when there is one.
pub fn connect(url: &Secret, notify_channel: Option<&str>) -> Result<Client, DbError> {
    let mut config = postgres::Config::from_str(url.expose()).map_err(|_| {
        DbError("database.url cannot be parsed as a PostgreSQL connection string".into())
    })?;
    config.connect_timeout(CONNECT_TIMEOUT);
    if config.get_application_name().is_none() {
        config.application_name("mqtt-kinesis-bridge");
    }
    let mut client = config.connect(NoTls)?;
    if let Some(channel) = notify_channel {
        // The channel name was checked to be [A-Za-z0-9_] by config.
        client.batch_execute(&format!("LISTEN {channel}"))?;
    }
    Ok(client)
}

/// The active broker and topic rows.
pub fn read_rows(client: &mut Client) -> Result<(Vec<BrokerRow>, Vec<TopicRow>), DbError> {
    let mut transaction = client.build_transaction().read_only(true).start()?;
    let brokers = transaction
        .query(SELECT_BROKERS, &[])?
        .iter()
        .map(broker_row)
        .collect::<Result<Vec<_>, _>>()?;
    let topics = transaction
        .query(SELECT_TOPICS, &[])?
        .iter()
        .map(topic_row)
        .collect::<Result<Vec<_>, _>>()?;
    transaction.commit()?;
    Ok((brokers, topics))
}

/// Waits up to `timeout` for a NOTIFY; true when one (or more) arrived.
pub fn wait_for_notification(client: &mut Client, timeout: Duration) -> Result<bool, DbError> {
    let mut notifications = client.notifications();
    let arrived = notifications.timeout_iter(timeout).next()?.is_some();
    if arrived {
        // Coalesce a burst (one statement per table, a script of many) into one refresh.
        let settle_until = Instant::now() + Duration::from_millis(100);
        while let Some(remaining) = settle_until.checked_duration_since(Instant::now()) {
            if notifications.timeout_iter(remaining).next()?.is_none() {
                break;
            }
        }
    }
    Ok(arrived)
}

fn broker_row(row: &Row) -> Result<BrokerRow, DbError> {
    let mqtt_id = int(row, "mqtt_id")?
        .ok_or_else(|| DbError("mqtt_broker has a row with mqtt_id NULL".into()))?;
    Ok(BrokerRow {
        mqtt_id,
        host: text(row, "mqtt_host")?,
        port: int(row, "mqtt_port")?,
        username: text(row, "mqtt_username")?,
        password: text(row, "mqtt_password")?.map(Secret::new),
    })
}

fn topic_row(row: &Row) -> Result<TopicRow, DbError> {
    Ok(TopicRow {
        topic_id: int(row, "topic_id")?.unwrap_or(0),
        mqtt_id: int(row, "mqtt_id")?,
        topic: text(row, "topic")?,
        qos: int(row, "qos")?,
    })
}

/// An integer column of any width; `None` when NULL or absent.
fn int(row: &Row, name: &str) -> Result<Option<i64>, DbError> {
    let Some(column) = row.columns().iter().find(|c| c.name() == name) else {
        return Ok(None);
    };
    let value = match *column.type_() {
        Type::INT2 => row.try_get::<_, Option<i16>>(name)?.map(i64::from),
        Type::INT4 => row.try_get::<_, Option<i32>>(name)?.map(i64::from),
        Type::INT8 => row.try_get::<_, Option<i64>>(name)?,
        ref other => {
            return Err(DbError(format!(
                "column {name} has type {other}, expected an integer type"
            )))
        }
    };
    Ok(value)
}

/// A text column; `None` when NULL or absent.
fn text(row: &Row, name: &str) -> Result<Option<String>, DbError> {
    if !row.columns().iter().any(|c| c.name() == name) {
        return Ok(None);
    }
    Ok(row.try_get::<_, Option<String>>(name)?)
}
