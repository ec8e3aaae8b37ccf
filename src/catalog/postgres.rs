//! The gateway's only contact with PostgreSQL: connect, SELECT the active rows,
//! LISTEN, and write this gateway's rows of `iot_data.mqtt_connection_status`.
//!
//! Columns are read by name and by what they are, so the seed table works and
//! so does one extended with further columns (or integer columns of another
//! width). A missing optional column reads as NULL. TLS as libpq's `sslmode` says
//! (`database_url`), with rustls (`postgres_tls`).

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use postgres::config::SslMode as PgSslMode;
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::Type;
use postgres::{Client, Row};

use super::assignment::AssignmentRow;
use super::database_url::{DatabaseUrl, SslMode, Verify};
use super::postgres_tls::{Connector, Progress};
use super::rows::{BrokerRow, RowError, RowProblem, TopicRow};
use crate::secret::Secret;

const SELECT_BROKERS: &str = "SELECT * FROM iot_data.mqtt_broker WHERE status IS TRUE";
const SELECT_TOPICS: &str = "SELECT * FROM iot_data.mqtt_topic WHERE status IS TRUE";
/// The assignment table is optional: asked first, so its absence does not
/// abort the read's transaction.
const HAS_ASSIGNMENT_TABLE: &str = "SELECT to_regclass('iot_data.mqtt_broker_gateway') IS NOT NULL";
const SELECT_ASSIGNMENTS: &str = "SELECT * FROM iot_data.mqtt_broker_gateway";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A database problem, as text that never holds the connection string's password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DbError {
    kind: DbErrorKind,
    message: String,
}

/// What went wrong, by what the operator does about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DbErrorKind {
    /// TLS: a certificate or name the check refused, a failed handshake, a
    /// server without TLS where TLS is required, an unreadable `sslrootcert`,
    /// `sslcert` or `sslkey`, or an unencrypted link refused (password).
    Tls,
    /// Anything else: the server unreachable, refusing us, or a query failing.
    Database,
}

impl DbError {
    fn new(kind: DbErrorKind, message: impl Into<String>) -> DbError {
        DbError {
            kind,
            message: message.into(),
        }
    }

    pub fn kind(&self) -> DbErrorKind {
        self.kind
    }
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DbError {}

impl From<postgres::Error> for DbError {
    fn from(error: postgres::Error) -> Self {
        DbError::new(DbErrorKind::Database, describe(&error))
    }
}

/// postgres::Error's Display names only the failing step (`db error`, `error
/// connecting to server`); the reason is in its sources: the server's message,
/// an IO or a TLS error. None of them echoes the connection parameters. One
/// line: the server's DETAIL and HINT lines are joined.
fn describe(error: &postgres::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string().replace('\n', "; "));
        source = cause.source();
    }
    text
}

/// What protects the link to the database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Link {
    Unencrypted,
    Tls {
        /// `TLSv1.3`, `TLSv1.2`.
        version: &'static str,
        verify: Verify,
    },
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Link::Unencrypted => f.write_str("unencrypted"),
            Link::Tls { version, verify } => write!(f, "{version}, {verify}"),
        }
    }
}

/// Said once per process: the catalog link is unencrypted to another machine.
static WARNED_UNENCRYPTED: AtomicBool = AtomicBool::new(false);

/// Connects as `database.url` says (libpq's `sslmode`, see [`DatabaseUrl`]),
/// and subscribes to `notify_channel` when there is one.
pub fn connect(url: &Secret, notify_channel: Option<&str>) -> Result<(Client, Link), DbError> {
    let url = DatabaseUrl::parse(url)
        .map_err(|error| DbError::new(DbErrorKind::Database, format!("database.url {error}")))?;
    let (mut client, link) = open(&url)?;
    if link == Link::Unencrypted
        && !url.is_loopback()
        && !WARNED_UNENCRYPTED.swap(true, Ordering::Relaxed)
    {
        log::warn!(
            "catalog: the link to the database at {} is not encrypted: the catalog, its broker \
             passwords and keys included, crosses the network in clear; set sslmode=verify-full \
             and sslrootcert in database.url",
            url.hosts()
        );
    }
    if let Some(channel) = notify_channel {
        // Quoted as an identifier, so the name is taken as written (pg_notify's
        // channel is case-sensitive; unquoted, `LISTEN MyChannel` would listen
        // on mychannel) and a reserved word is no syntax error. Config admits
        // [A-Za-z0-9_] only, so there is no quote to escape.
        client.batch_execute(&format!("LISTEN \"{channel}\""))?;
    }
    Ok((client, link))
}

/// One connection, trying unencrypted and TLS in libpq's order for the sslmode.
///
/// `allow` and `prefer` try the second kind only when the first reached the
/// server and failed there (libpq retries too when a server refuses the
/// first kind in pg_hba.conf). An unencrypted attempt is left out when the URL
/// holds a password and a host is another machine, unless `sslmode=disable`
/// says so ([`DatabaseUrl::may_go_unencrypted`]). As libpq, a Unix socket is
/// never encrypted.
fn open(url: &DatabaseUrl) -> Result<(Client, Link), DbError> {
    let mut config = url.config.clone();
    config.connect_timeout(CONNECT_TIMEOUT);
    if config.get_application_name().is_none() {
        config.application_name("mqtt-kinesis-bridge");
    }
    if url.is_unix_socket() {
        return unencrypted(&config).map_err(|failure| failure.error);
    }
    let may_go_unencrypted = url.may_go_unencrypted();
    let result = match url.tls.mode {
        SslMode::Disable => unencrypted(&config),
        SslMode::Allow if may_go_unencrypted => unencrypted(&config).or_else(|failure| {
            if failure.reached_server {
                encrypted(&config, url)
            } else {
                Err(failure)
            }
        }),
        SslMode::Prefer if may_go_unencrypted => encrypted(&config, url).or_else(|failure| {
            if failure.reached_server {
                unencrypted(&config)
            } else {
                Err(failure)
            }
        }),
        SslMode::Allow | SslMode::Prefer => encrypted(&config, url).map_err(|failure| {
            if !failure.reached_server {
                return failure;
            }
            Failure {
                error: DbError::new(
                    DbErrorKind::Tls,
                    format!(
                        "{}; database.url's sslmode={} would go on unencrypted, but the URL holds \
                         a password and {} is not this machine: make the server offer TLS \
                         (and use sslmode=verify-full), or set sslmode=disable to accept an \
                         unencrypted link",
                        failure.error,
                        url.tls.mode.as_str(),
                        url.hosts()
                    ),
                ),
                reached_server: true,
            }
        }),
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => encrypted(&config, url),
    };
    result.map_err(|failure| failure.error)
}

/// A failed attempt, and whether it got as far as the server.
struct Failure {
    error: DbError,
    reached_server: bool,
}

fn unencrypted(config: &postgres::Config) -> Result<(Client, Link), Failure> {
    let mut config = config.clone();
    config.ssl_mode(PgSslMode::Disable);
    let connector = Connector::unencrypted();
    config
        .connect(connector.clone())
        .map(|client| (client, Link::Unencrypted))
        .map_err(|error| Failure {
            error: error.into(),
            reached_server: connector.progress() != Progress::NotConnected,
        })
}

fn encrypted(config: &postgres::Config, url: &DatabaseUrl) -> Result<(Client, Link), Failure> {
    let connector = Connector::new(&url.tls).map_err(|error| Failure {
        error: DbError::new(DbErrorKind::Tls, error.to_string()),
        reached_server: false,
    })?;
    let mut config = config.clone();
    config.ssl_mode(PgSslMode::Require);
    match config.connect(connector.clone()) {
        Ok(client) => {
            let version = match connector.progress() {
                Progress::Encrypted(version) => version,
                _ => "TLS",
            };
            let verify = url.tls.verify();
            Ok((client, Link::Tls { version, verify }))
        }
        Err(error) => {
            let progress = connector.progress();
            // A server that answers the TLS request with "no" fails inside
            // tokio-postgres, before our handshake starts; its error kind is
            // not public, so its fixed text tells it.
            let tls = matches!(progress, Progress::HandshakeFailed(_))
                || (progress == Progress::Connected
                    && error
                        .to_string()
                        .starts_with("error performing TLS handshake"));
            let kind = if tls {
                DbErrorKind::Tls
            } else {
                DbErrorKind::Database
            };
            Err(Failure {
                error: DbError::new(kind, describe(&error)),
                reached_server: progress != Progress::NotConnected,
            })
        }
    }
}

/// The active rows of both catalog tables, and the assignment table's, as read.
pub struct CatalogRows {
    pub brokers: Vec<BrokerRow>,
    pub topics: Vec<TopicRow>,
    /// `None`: there is no `iot_data.mqtt_broker_gateway` (every broker runs everywhere).
    pub assignments: Option<Vec<AssignmentRow>>,
    /// Broker rows skipped before validation: they cannot be named.
    pub unnamed: Vec<RowProblem>,
    /// Whether `iot_data.mqtt_topic` has `device_id_level` (0007_devices.sql).
    pub device_id_level_column: bool,
}

/// Rows that cannot be named (a NULL `mqtt_id`) are skipped as problems, and
/// so is a row with a value of an unexpected type (a `use_tls` column of type
/// text holding 'yes' skips that broker: it never runs without its TLS); a
/// NULL in such a column is just NULL.
pub fn read_rows(client: &mut Client) -> Result<CatalogRows, DbError> {
    let mut transaction = client.build_transaction().read_only(true).start()?;
    let mut brokers = Vec::new();
    let mut unnamed = Vec::new();
    for row in transaction.query(SELECT_BROKERS, &[])?.iter() {
        let mqtt_id = match int(row, "mqtt_id") {
            Ok(Some(mqtt_id)) => mqtt_id,
            Ok(None) => {
                unnamed.push(RowProblem::Unnamed {
                    table: "mqtt_broker",
                    error: RowError::NullId,
                });
                continue;
            }
            Err(error) => {
                unnamed.push(RowProblem::Unnamed {
                    table: "mqtt_broker",
                    error: RowError::Unreadable(error),
                });
                continue;
            }
        };
        // A value of an unexpected type skips its row, not the whole read.
        match broker_row(row) {
            Ok(broker) => brokers.push(broker),
            Err(error) => unnamed.push(RowProblem::Broker {
                mqtt_id,
                error: RowError::Unreadable(error),
            }),
        }
    }
    let mut topics = Vec::new();
    // Prepared first: its columns say whether the catalog has device_id_level
    // (0007), even when no row is active.
    let select_topics = transaction.prepare(SELECT_TOPICS)?;
    let device_id_level_column = select_topics
        .columns()
        .iter()
        .any(|column| column.name() == "device_id_level");
    for row in transaction.query(&select_topics, &[])?.iter() {
        match topic_row(row) {
            Ok(topic) => topics.push(topic),
            Err(error) => unnamed.push(match int(row, "topic_id") {
                Ok(Some(topic_id)) => RowProblem::Topic {
                    topic_id,
                    error: RowError::Unreadable(error),
                },
                _ => RowProblem::Unnamed {
                    table: "mqtt_topic",
                    error: RowError::Unreadable(error),
                },
            }),
        }
    }
    let assignments = if transaction
        .query_one(HAS_ASSIGNMENT_TABLE, &[])?
        .get::<_, bool>(0)
    {
        let mut assignments = Vec::new();
        for row in transaction.query(SELECT_ASSIGNMENTS, &[])?.iter() {
            match (int(row, "mqtt_id")?, text(row, "gateway_id")?) {
                (Some(mqtt_id), Some(gateway_id)) => assignments.push(AssignmentRow {
                    mqtt_id,
                    gateway_id,
                }),
                _ => unnamed.push(RowProblem::Unnamed {
                    table: "mqtt_broker_gateway",
                    error: RowError::NullAssignment,
                }),
            }
        }
        Some(assignments)
    } else {
        None
    };
    transaction.commit()?;
    Ok(CatalogRows {
        brokers,
        topics,
        assignments,
        unnamed,
        device_id_level_column,
    })
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
    let mqtt_id = int(row, "mqtt_id")?.ok_or_else(|| {
        DbError::new(
            DbErrorKind::Database,
            "mqtt_broker has a row with mqtt_id NULL",
        )
    })?;
    Ok(BrokerRow {
        mqtt_id,
        host: text(row, "mqtt_host")?,
        port: int(row, "mqtt_port")?,
        username: text(row, "mqtt_username")?,
        password: text(row, "mqtt_password")?.map(Secret::new),
        failover: text(row, "mqtt_failover")?,
        use_tls: boolean(row, "use_tls")?,
        verify_cert: boolean(row, "verify_cert")?,
        ca_cert: text(row, "ca_cert")?,
        client_cert: text(row, "client_cert")?,
        client_key: text(row, "client_key")?.map(Secret::new),
        client_id: text(row, "client_id")?,
        keep_alive: int(row, "keep_alive")?,
        clean_session: boolean(row, "clean_session")?,
        qos: int(row, "qos")?,
        topic_prefix: text(row, "topic_prefix")?,
        use_shared_subscriptions: boolean(row, "use_shared_subscriptions")?,
        shared_group: text(row, "shared_group")?,
    })
}

fn topic_row(row: &Row) -> Result<TopicRow, DbError> {
    Ok(TopicRow {
        topic_id: int(row, "topic_id")?.unwrap_or(0),
        mqtt_id: int(row, "mqtt_id")?,
        topic: text(row, "topic")?,
        qos: int(row, "qos")?,
        device_id_level: int(row, "device_id_level")?,
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
        // A NULL is a NULL whatever the column's type; a value is not read.
        _ if is_null(row, name)? => None,
        ref other => {
            return Err(DbError::new(
                DbErrorKind::Database,
                format!("column {name} has type {other}, expected an integer type"),
            ))
        }
    };
    Ok(value)
}

/// Whether the cell `name` is NULL, whatever the column's type.
fn is_null(row: &Row, name: &str) -> Result<bool, DbError> {
    /// Accepts any type and looks only at NULL-ness.
    struct Null(bool);
    impl<'a> postgres::types::FromSql<'a> for Null {
        fn from_sql(
            _: &Type,
            _: &'a [u8],
        ) -> Result<Null, Box<dyn std::error::Error + Sync + Send>> {
            Ok(Null(false))
        }
        fn from_sql_null(_: &Type) -> Result<Null, Box<dyn std::error::Error + Sync + Send>> {
            Ok(Null(true))
        }
        fn accepts(_: &Type) -> bool {
            true
        }
    }
    Ok(row.try_get::<_, Null>(name)?.0)
}

/// A boolean column; `None` when NULL or absent.
fn boolean(row: &Row, name: &str) -> Result<Option<bool>, DbError> {
    let Some(column) = row.columns().iter().find(|c| c.name() == name) else {
        return Ok(None);
    };
    if *column.type_() != Type::BOOL {
        if is_null(row, name)? {
            return Ok(None);
        }
        return Err(DbError::new(
            DbErrorKind::Database,
            format!(
                "column {name} has type {}, expected boolean",
                column.type_()
            ),
        ));
    }
    Ok(row.try_get::<_, Option<bool>>(name)?)
}

/// A text column; `None` when NULL or absent.
fn text(row: &Row, name: &str) -> Result<Option<String>, DbError> {
    let Some(column) = row.columns().iter().find(|c| c.name() == name) else {
        return Ok(None);
    };
    if !matches!(
        *column.type_(),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME
    ) {
        if is_null(row, name)? {
            return Ok(None);
        }
        return Err(DbError::new(
            DbErrorKind::Database,
            format!("column {name} has type {}, expected text", column.type_()),
        ));
    }
    Ok(row.try_get::<_, Option<String>>(name)?)
}

/// Reads nothing from `iot_data.mqtt_connection_status`, to prove it exists and may be read.
pub fn status_table_readable(client: &mut Client) -> Result<(), DbError> {
    client.batch_execute("SELECT 1 FROM iot_data.mqtt_connection_status LIMIT 0")?;
    Ok(())
}

/// The database's clock minus ours, in ms: its `clock_timestamp()` against
/// the middle of the round trip (one simple query, so one round trip).
pub fn clock_offset_ms(client: &mut Client) -> Result<i64, DbError> {
    let before = crate::clock::unix_ms();
    let messages =
        client.simple_query("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::int8")?;
    let after = crate::clock::unix_ms();
    let server = messages
        .iter()
        .find_map(|message| match message {
            postgres::SimpleQueryMessage::Row(row) => row.get(0),
            _ => None,
        })
        .and_then(|text| text.parse::<i64>().ok())
        .ok_or_else(|| DbError::new(DbErrorKind::Database, "the database did not say its time"))?;
    Ok(server - before - (after - before) / 2)
}

/// One `iot_data.mqtt_connection_status` row, as the gateway writes it.
pub struct StatusRow {
    pub mqtt_id: i64,
    pub connected: bool,
    pub endpoint: Option<String>,
    /// 1-based.
    pub endpoint_index: i64,
    pub endpoint_count: i64,
    pub since: SystemTime,
    pub last_error: Option<String>,
    pub messages_received: i64,
    pub last_message_at: Option<SystemTime>,
    pub subscribed_topics: i64,
}

const UPSERT_STATUS: &str = "
    INSERT INTO iot_data.mqtt_connection_status (gateway_id, mqtt_id, connected, endpoint,
        endpoint_index, endpoint_count, since, last_error, messages_received, last_message_at,
        subscribed_topics, updated_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, now())
    ON CONFLICT (gateway_id, mqtt_id) DO UPDATE SET connected = EXCLUDED.connected,
        endpoint = EXCLUDED.endpoint, endpoint_index = EXCLUDED.endpoint_index,
        endpoint_count = EXCLUDED.endpoint_count, since = EXCLUDED.since,
        last_error = EXCLUDED.last_error, messages_received = EXCLUDED.messages_received,
        last_message_at = EXCLUDED.last_message_at,
        subscribed_topics = EXCLUDED.subscribed_topics, updated_at = now()";
/// Brokers this gateway no longer runs leave the table.
const DELETE_OTHER_STATUS: &str = "
    DELETE FROM iot_data.mqtt_connection_status WHERE gateway_id = $1 AND mqtt_id <> ALL($2)";

/// Whether the status table has the clock column (0005): catalogs made
/// before it keep working without it.
const HAS_CLOCK_COLUMN: &str = "
    SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = 'iot_data'
        AND table_name = 'mqtt_connection_status' AND column_name = 'clock_offset_ms')";
/// The gateway's clock against AWS's, on every row of this gateway.
const SET_CLOCK_OFFSET: &str = "
    UPDATE iot_data.mqtt_connection_status SET clock_offset_ms = $2 WHERE gateway_id = $1";

/// Said once per process: a broker id too wide for the status table.
static WARNED_WIDE_ID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Writes `rows` for `gateway_id` and removes its rows of other brokers, in
/// one transaction; `clock_offset_ms` (AWS's clock minus the gateway's) goes
/// on every row where the table has the column.
pub fn write_status(
    client: &mut Client,
    gateway_id: &str,
    rows: &[StatusRow],
    clock_offset_ms: i64,
) -> Result<(), DbError> {
    let int4 = |value: i64, what: &str| {
        i32::try_from(value).map_err(|_| {
            DbError::new(
                DbErrorKind::Database,
                format!("{what} {value} does not fit the status table's integer column"),
            )
        })
    };
    let mut transaction = client.transaction()?;
    let upsert = transaction.prepare(UPSERT_STATUS)?;
    let mut ids = Vec::with_capacity(rows.len());
    for row in rows {
        // A catalog with bigint ids can name a broker the status table (integer)
        // cannot hold: that broker has no row; the others still get theirs.
        let Ok(mqtt_id) = i32::try_from(row.mqtt_id) else {
            if !WARNED_WIDE_ID.swap(true, std::sync::atomic::Ordering::Relaxed) {
                log::warn!(
                    "catalog: broker {} has no row in iot_data.mqtt_connection_status: \
                     its mqtt_id does not fit the table's integer column",
                    row.mqtt_id
                );
            }
            continue;
        };
        ids.push(mqtt_id);
        transaction.execute(
            &upsert,
            &[
                &gateway_id,
                &mqtt_id,
                &row.connected,
                &row.endpoint,
                &int4(row.endpoint_index, "endpoint_index")?,
                &int4(row.endpoint_count, "endpoint_count")?,
                &row.since,
                &row.last_error,
                &row.messages_received,
                &row.last_message_at,
                &int4(row.subscribed_topics, "subscribed_topics")?,
            ],
        )?;
    }
    transaction.execute(DELETE_OTHER_STATUS, &[&gateway_id, &ids])?;
    // Asked on every write (once a minute, or on a change), so a column added
    // while the gateway runs is filled without a restart.
    if transaction
        .query_one(HAS_CLOCK_COLUMN, &[])?
        .get::<_, bool>(0)
    {
        transaction.execute(SET_CLOCK_OFFSET, &[&gateway_id, &clock_offset_ms])?;
    }
    transaction.commit()?;
    Ok(())
}

/// Whether `iot_data.mqtt_device_seen` (0007) exists: asked first, so its
/// absence does not abort the transaction.
const HAS_DEVICE_TABLE: &str = "SELECT to_regclass('iot_data.mqtt_device_seen') IS NOT NULL";
/// Adds the messages, keeps the earliest first and the latest last sighting:
/// a write sent twice (or late) never moves `last_seen_at` back.
const UPSERT_DEVICES: &str = "
    INSERT INTO iot_data.mqtt_device_seen AS seen
        (gateway_id, mqtt_id, device_id, first_seen_at, last_seen_at, messages)
    SELECT $1, d.mqtt_id, d.device_id, d.first_seen_at, d.last_seen_at, d.messages
    FROM unnest($2::int4[], $3::text[], $4::timestamptz[], $5::timestamptz[], $6::int8[])
        AS d(mqtt_id, device_id, first_seen_at, last_seen_at, messages)
    ON CONFLICT (gateway_id, mqtt_id, device_id) DO UPDATE SET
        first_seen_at = LEAST(seen.first_seen_at, EXCLUDED.first_seen_at),
        last_seen_at = GREATEST(seen.last_seen_at, EXCLUDED.last_seen_at),
        messages = seen.messages + EXCLUDED.messages";

/// What a device write did.
#[derive(Debug, PartialEq, Eq)]
pub enum DeviceWrite {
    Written,
    /// There is no `iot_data.mqtt_device_seen`: nothing was written.
    NoTable,
}

/// Upserts `statements` for `gateway_id` in one transaction: all or nothing,
/// so a failed write can be sent again whole.
pub fn write_devices(
    client: &mut Client,
    gateway_id: &str,
    statements: &[super::device_upload::DeviceColumns],
) -> Result<DeviceWrite, DbError> {
    let mut transaction = client.transaction()?;
    if !transaction
        .query_one(HAS_DEVICE_TABLE, &[])?
        .get::<_, bool>(0)
    {
        return Ok(DeviceWrite::NoTable);
    }
    let upsert = transaction.prepare(UPSERT_DEVICES)?;
    for columns in statements {
        transaction.execute(
            &upsert,
            &[
                &gateway_id,
                &columns.mqtt_ids,
                &columns.device_ids,
                &columns.first_seen_at,
                &columns.last_seen_at,
                &columns.messages,
            ],
        )?;
    }
    transaction.commit()?;
    Ok(DeviceWrite::Written)
}
