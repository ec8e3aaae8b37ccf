//! The config file: TOML on disk → a validated, typed [`Config`].
//!
//! Two layers: `Raw*` structs mirror the file (serde, unknown keys rejected) and
//! [`Config`] holds checked values (durations, byte counts, URLs). Every error
//! names the key it is about. Nothing here starts a stage; it only checks that
//! each stage *can* start (for example that the spool directory can be created).
//!
//! Units: durations and sizes are always strings with a unit (`"60s"`, `"512MiB"`),
//! never bare numbers, so a file read over a bad link is never ambiguous.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::sealed::{self, SealKey};
use crate::secret::Secret;

/// Everything the gateway needs, validated. Each stage gets only its own section.
#[derive(Debug, Clone)]
pub struct Config {
    /// Names this gateway in client ids and status rows; defaults to the host name.
    pub gateway_id: String,
    pub spool: SpoolConfig,
    pub kinesis: KinesisConfig,
    pub catalog: CatalogConfig,
    pub mqtt: MqttConfig,
    pub status: StatusConfig,
    pub devices: DevicesConfig,
    pub metrics: MetricsConfig,
    pub log: LogConfig,
    /// Accepted but worth saying once the log is up (deprecated keys).
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct SpoolConfig {
    /// The SQLite spool file.
    pub path: PathBuf,
    /// Upper bound of the bytes held by records in the spool.
    pub max_bytes: u64,
    /// What happens when `max_bytes` is reached.
    pub overflow: OverflowPolicy,
    /// Longest time an accepted message waits for its commit (and so its
    /// acknowledgement) when nothing asks for an earlier one.
    pub commit_interval: Duration,
    /// Records waiting for the writer at most; sessions wait beyond it.
    pub queue_capacity: usize,
    /// Bytes of records accepted but not yet committed (queued or in the
    /// writer's group) at most; sessions wait beyond it.
    pub queue_max_bytes: u64,
    /// Upper bound of the bytes held by dead letters; the oldest go beyond it.
    pub dead_letter_max_bytes: u64,
    /// Appends pause while the spool's filesystem has less room than this;
    /// `None`: 1% of the filesystem, at least 8 MiB, at most 64 MiB
    /// ([`crate::disk::default_min_free`]).
    pub min_free_bytes: Option<u64>,
}

impl SpoolConfig {
    /// A spool at `path` with the documented defaults for everything else.
    pub fn new(path: PathBuf, max_bytes: u64, overflow: OverflowPolicy) -> SpoolConfig {
        SpoolConfig {
            path,
            max_bytes,
            overflow,
            commit_interval: DEFAULT_COMMIT_INTERVAL,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            queue_max_bytes: DEFAULT_QUEUE_MAX_BYTES,
            dead_letter_max_bytes: default_dead_letter_max_bytes(max_bytes),
            min_free_bytes: None,
        }
    }
}

/// A tenth of the spool's bound, at least 1 MiB.
fn default_dead_letter_max_bytes(max_bytes: u64) -> u64 {
    (max_bytes / 10).max(1 << 20)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverflowPolicy {
    /// Delete the oldest records to make room; each one is counted as dropped.
    DropOldest,
    /// Stop taking new records until the drain frees room; brokers keep the rest.
    Backpressure,
}

#[derive(Debug, Clone)]
pub struct KinesisConfig {
    pub stream: String,
    pub region: String,
    /// Base URL of the Kinesis API; `https://kinesis.{region}.amazonaws.com` by default.
    pub endpoint: String,
    pub record_format: RecordFormat,
    /// Per-request timeout for PutRecords.
    pub request_timeout: Duration,
    /// Longest pause between retries of a failing request.
    pub max_backoff: Duration,
    /// Longest time the oldest waiting record waits for a fuller request.
    pub linger: Duration,
    /// Where AWS credentials come from (`kinesis.credentials`).
    pub credentials: CredentialsConfig,
    /// Whether small records share Kinesis records (KPL aggregation).
    pub aggregation: Aggregation,
}

/// `kinesis.aggregation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregation {
    /// One Kinesis record per message.
    None,
    /// KPL aggregated records of at most `max_bytes` (data plus partition key).
    Kpl { max_bytes: usize },
}

/// `no aggregation` / `KPL aggregation up to 51200 bytes`, for the startup line and `check`.
impl std::fmt::Display for Aggregation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Aggregation::None => f.write_str("no aggregation"),
            Aggregation::Kpl { max_bytes } => {
                write!(f, "KPL aggregation up to {max_bytes} bytes")
            }
        }
    }
}

/// `kinesis.credentials`: where the drain gets AWS credentials.
#[derive(Debug, Clone)]
pub enum CredentialsConfig {
    /// `"auto"`: the AWS SDKs' chain (environment, shared files and
    /// `credential_process`, container endpoint, instance metadata).
    Auto,
    /// `"iot"`: the AWS IoT credentials provider, with `[kinesis.iot]`.
    Iot(IotConfig),
}

/// `[kinesis.iot]`: the AWS IoT credentials provider and the device certificate.
#[derive(Debug, Clone)]
pub struct IotConfig {
    /// `https://host[:port]`: a bare host name gets `https://`.
    pub endpoint: String,
    pub role_alias: String,
    /// Sent as `x-amzn-iot-thingname`; `gateway_id` by default.
    pub thing_name: String,
    /// The device certificate (chain), PEM.
    pub cert_pem: String,
    /// The certificate's file, or "the PEM in kinesis.iot.cert", for messages.
    pub cert_label: String,
    /// The device's private key, PEM (opened if it was sealed).
    pub key_pem: Secret,
    /// The CA(s) the endpoint's certificate must chain to; `None`: the system's roots.
    pub ca_pem: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordFormat {
    /// One JSON envelope per message (broker, topic, time, id, payload).
    Json,
    /// The payload bytes unchanged.
    Raw,
}

#[derive(Debug, Clone)]
pub struct CatalogConfig {
    /// This gateway's `gateway_id`: picks its brokers in `iot_data.mqtt_broker_gateway`.
    pub gateway_id: String,
    /// PostgreSQL connection string; may hold a password, hence [`Secret`].
    pub database_url: Secret,
    /// Local SQLite copy of the last good read.
    pub snapshot_path: PathBuf,
    /// How often the database is polled even when no NOTIFY arrives.
    pub refresh_interval: Duration,
    /// PostgreSQL channel to LISTEN on; `None` turns NOTIFY off (poll only).
    pub notify_channel: Option<String>,
    /// Where the key for `enc:v1:` values comes from; `None`: `MKB_PASSWORD_KEY`, if set.
    pub password_key_file: Option<PathBuf>,
    /// The key itself, read at load time so a bad key stops the start.
    pub password_key: Option<SealKey>,
    /// Free bytes the snapshot's filesystem keeps for the spool: the snapshot
    /// is not written when it would leave less (`run` sets the spool's floor).
    pub snapshot_keep_free: u64,
}

#[derive(Debug, Clone)]
pub struct MqttConfig {
    /// How the Kinesis partition key is made from a message.
    pub partition_key: PartitionKeyScheme,
    /// First pause after a failed connection; doubles up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    pub keep_alive: Duration,
    /// How often a session connected to a secondary endpoint probes the primary.
    pub primary_recheck: Duration,
    /// A session asks for an immediate commit once this many of its QoS 1/2
    /// messages wait for their acknowledgement: below the broker's in-flight
    /// window, so a broker never stops sending to wait for a timer.
    pub commit_at_unacked: usize,
    /// The largest MQTT packet a session reads; a larger one kills the
    /// connection (and, redelivered, wedges the broker: README "A wedged broker").
    pub max_packet_size: usize,
    /// After a read that emptied a broker's socket, the session reads it again
    /// at the next tick of this period (shared by all sessions), not at every
    /// message: a few wake-ups per second instead of one per message. Zero:
    /// read at once. A full read, or acks just written, read again at once.
    pub read_pause: Duration,
}

/// `mqtt.read_pause` by default: half of `spool.commit_interval`'s default,
/// so a message's wait for its commit grows by at most that.
pub const DEFAULT_READ_PAUSE: Duration = Duration::from_millis(50);

/// `mqtt.max_packet_size` by default: a 1 MiB payload (Kinesis's record limit)
/// with its topic and headers.
pub const DEFAULT_MAX_PACKET_SIZE: usize = 1024 * 1024 + 64 * 1024;

/// Where the live session status goes: a local file and the central database.
#[derive(Debug, Clone)]
pub struct StatusConfig {
    /// JSON file the gateway rewrites when its state changes; `status` reads it.
    pub file: PathBuf,
    /// `iot_data.mqtt_connection_status` rows are rewritten at least this often.
    pub report_interval: Duration,
}

/// Per-device counts (issue 16): `iot_data.mqtt_device_seen`.
#[derive(Debug, Clone)]
pub struct DevicesConfig {
    /// (broker, device) pairs held in memory at most (default 100,000);
    /// messages of further devices are only counted as untracked.
    pub max_tracked: usize,
}

/// `devices.max_tracked` by default.
pub const DEFAULT_MAX_TRACKED_DEVICES: usize = 100_000;
/// Upper bound of `devices.max_tracked`: about 100 bytes each, 1 GB.
pub const MAX_MAX_TRACKED_DEVICES: usize = 10_000_000;

/// Prometheus metrics: an HTTP endpoint, a file for node_exporter, both, or neither.
#[derive(Debug, Clone)]
pub struct MetricsConfig {
    /// Address `/metrics` and `/health` are served on; `None` (the default): not served.
    pub listen: Option<std::net::SocketAddr>,
    /// File the exposition is written to (node_exporter's textfile collector); `None`: none.
    pub textfile: Option<PathBuf>,
    /// How often the textfile is rewritten (default 15 s).
    pub interval: Duration,
}

impl MetricsConfig {
    pub fn is_enabled(&self) -> bool {
        self.listen.is_some() || self.textfile.is_some()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionKeyScheme {
    /// The MQTT topic (the default: keeps each topic's order within a shard).
    Topic,
    /// The broker id.
    Broker,
    /// `{broker id}/{topic}`.
    BrokerTopic,
    /// The device id (`device_id_level` of the topic row); the topic when the
    /// message has none. Keeps each device's order within a shard.
    Device,
    /// `{broker id}/{device id}`; `{broker id}/{topic}` when the message has none.
    BrokerDevice,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub level: log::LevelFilter,
}

/// A config file that cannot be used, naming the key and what is wrong.
#[derive(Debug)]
pub enum ConfigError {
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    /// TOML syntax, an unknown key, a wrong type, a missing key.
    Parse {
        path: PathBuf,
        message: String,
    },
    Invalid {
        key: &'static str,
        message: String,
    },
    /// A required key is absent (`spool.max_bytes`).
    Missing {
        key: String,
    },
    /// A key's value is not TOML of the right type.
    Syntax {
        key: String,
        message: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { path, error } => {
                write!(f, "cannot read config file {}: {error}", path.display())
            }
            ConfigError::Parse { path, message } => {
                write!(f, "config file {}: {message}", path.display())
            }
            // A value in the wrong key may be a URL with its password.
            ConfigError::Invalid { key, message } => {
                write!(f, "config key `{key}`: {}", redact_urls(message))
            }
            ConfigError::Missing { key } => write!(f, "config key `{key}`: is required"),
            ConfigError::Syntax { key, message } => write!(f, "config key `{key}`: {message}"),
        }
    }
}

impl std::error::Error for ConfigError {}

fn invalid(key: &'static str, message: impl fmt::Display) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.to_string(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    gateway_id: Option<String>,
    spool: RawSpool,
    kinesis: RawKinesis,
    database: RawDatabase,
    #[serde(default)]
    mqtt: RawMqtt,
    #[serde(default)]
    status: RawStatus,
    #[serde(default)]
    devices: RawDevices,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    log: RawLog,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpool {
    path: PathBuf,
    max_bytes: String,
    overflow: Option<String>,
    commit_interval: Option<String>,
    queue_capacity: Option<usize>,
    queue_max_bytes: Option<String>,
    dead_letter_max_bytes: Option<String>,
    min_free_bytes: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKinesis {
    stream: String,
    region: Option<String>,
    endpoint: Option<String>,
    record_format: Option<String>,
    request_timeout: Option<String>,
    max_backoff: Option<String>,
    linger: Option<String>,
    credentials: Option<String>,
    iot: Option<RawIot>,
    aggregation: Option<String>,
    aggregation_max_bytes: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIot {
    endpoint: String,
    role_alias: String,
    thing_name: Option<String>,
    cert: String,
    key: String,
    ca: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatabase {
    url: String,
    snapshot_path: Option<PathBuf>,
    refresh_interval: Option<String>,
    notify_channel: Option<String>,
    password_key_file: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMqtt {
    partition_key: Option<String>,
    min_backoff: Option<String>,
    max_backoff: Option<String>,
    keep_alive: Option<String>,
    /// Deprecated name of `spool.queue_capacity`.
    channel_capacity: Option<usize>,
    primary_recheck: Option<String>,
    commit_at_unacked: Option<usize>,
    max_packet_size: Option<String>,
    read_pause: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStatus {
    file: Option<PathBuf>,
    report_interval: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDevices {
    max_tracked: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Option<String>,
    textfile: Option<PathBuf>,
    interval: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLog {
    level: Option<String>,
}

pub const DEFAULT_NOTIFY_CHANNEL: &str = "mqtt_catalog_changed";

impl Config {
    /// Reads and validates the file at `path`. Creates the spool's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
        })?;
        Config::parse(&text, path, |name| std::env::var(name).ok())
    }

    /// Validates `text`; `env` looks up environment variables (`AWS_REGION`).
    pub fn parse(
        text: &str,
        path: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let raw: RawConfig =
            toml::from_str(text).map_err(|error| parse_error(text, path, &error))?;
        Config::validate(raw, env)
    }

    fn validate(
        raw: RawConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let gateway_id = match raw.gateway_id {
            Some(id) => id,
            None => default_gateway_id(),
        };
        if gateway_id.is_empty()
            || !gateway_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(invalid(
                "gateway_id",
                format!("{gateway_id:?} must be non-empty and use only letters, digits, '-', '_' or '.'"),
            ));
        }

        let mut warnings = Vec::new();
        let queue_capacity = match (raw.spool.queue_capacity, raw.mqtt.channel_capacity) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "mqtt.channel_capacity",
                    "is the old name of spool.queue_capacity: set only spool.queue_capacity",
                ))
            }
            (Some(capacity), None) => capacity,
            (None, Some(capacity)) => {
                warnings.push(
                    "config key mqtt.channel_capacity is deprecated: it is spool.queue_capacity now"
                        .to_owned(),
                );
                capacity
            }
            (None, None) => DEFAULT_QUEUE_CAPACITY,
        };
        let spool = validate_spool(raw.spool, queue_capacity)?;
        let catalog = validate_database(raw.database, &gateway_id, &spool.path, &env)?;
        let kinesis = validate_kinesis(
            raw.kinesis,
            &env,
            &gateway_id,
            catalog.password_key.as_ref(),
        )?;
        let mqtt = validate_mqtt(raw.mqtt)?;
        let status = validate_status(raw.status, &spool.path)?;
        let devices = validate_devices(raw.devices)?;
        let metrics = validate_metrics(raw.metrics)?;
        let beside = |path: &Path, suffix: &str| {
            let mut name = path.as_os_str().to_owned();
            name.push(suffix);
            PathBuf::from(name)
        };
        distinct_files(&[
            (
                "spool.path",
                vec![
                    spool.path.clone(),
                    beside(&spool.path, "-wal"),
                    beside(&spool.path, "-shm"),
                    beside(&spool.path, "-journal"),
                    // The full-disk reserve (spool::space).
                    beside(&spool.path, ".reserve"),
                ],
            ),
            (
                "database.snapshot_path",
                vec![
                    catalog.snapshot_path.clone(),
                    beside(&catalog.snapshot_path, "-journal"),
                    // What snapshot::save and status::file write first, then rename.
                    catalog.snapshot_path.with_extension("db.new"),
                ],
            ),
            (
                "status.file",
                vec![status.file.clone(), status.file.with_extension("json.new")],
            ),
            (
                "metrics.textfile",
                metrics
                    .textfile
                    .iter()
                    .flat_map(|path| [path.clone(), crate::metrics::textfile_temporary(path)])
                    .collect(),
            ),
        ])?;
        let level = match raw.log.level {
            None => log::LevelFilter::Info,
            Some(text) => text.parse().map_err(|_| {
                invalid(
                    "log.level",
                    format!("{text:?} is not one of off, error, warn, info, debug, trace"),
                )
            })?,
        };
        Ok(Config {
            gateway_id,
            spool,
            kinesis,
            catalog,
            mqtt,
            status,
            devices,
            metrics,
            log: LogConfig { level },
            warnings,
        })
    }
}

/// Records waiting for the spool writer at most, by default. The queue's slots
/// are allocated up front (about 0.5 KiB each), and at saturation a broker has
/// at most its in-flight window (Mosquitto: 20) outstanding, so 256 keeps up
/// with a dozen saturated brokers; more only wait their turn.
pub const DEFAULT_QUEUE_CAPACITY: usize = 256;
/// How long an accepted message waits for its commit at most, by default.
pub const DEFAULT_COMMIT_INTERVAL: Duration = Duration::from_millis(100);
/// Lower bound of `spool.min_free_bytes`: below it a delete could find no room.
const MIN_MIN_FREE_BYTES: u64 = 1 << 20;
/// Bytes of accepted, uncommitted records at most, by default: a few
/// maximum-size messages, or thousands of small ones.
pub const DEFAULT_QUEUE_MAX_BYTES: u64 = 8 << 20;
/// Upper bound of `spool.queue_capacity`: each queued record may hold a large payload.
const MAX_QUEUE_CAPACITY: usize = 65_536;
/// Upper bound of `spool.commit_interval` and `kinesis.linger`: beyond it the
/// latency buys no more savings.
const MAX_BATCHING_WAIT: Duration = Duration::from_secs(10);

fn validate_spool(raw: RawSpool, queue_capacity: usize) -> Result<SpoolConfig, ConfigError> {
    if raw.path.as_os_str().is_empty() {
        return Err(invalid("spool.path", "must not be empty"));
    }
    let max_bytes = parse_bytes(&raw.max_bytes).map_err(|m| invalid("spool.max_bytes", m))?;
    if max_bytes < 1024 * 1024 {
        return Err(invalid(
            "spool.max_bytes",
            format!("{:?} is below the minimum of 1MiB", raw.max_bytes),
        ));
    }
    let overflow = match raw.overflow.as_deref() {
        None | Some("drop_oldest") => OverflowPolicy::DropOldest,
        Some("backpressure") => OverflowPolicy::Backpressure,
        Some(other) => {
            return Err(invalid(
                "spool.overflow",
                format!("{other:?} is not one of \"drop_oldest\", \"backpressure\""),
            ))
        }
    };
    let commit_interval = optional_duration(
        "spool.commit_interval",
        raw.commit_interval,
        DEFAULT_COMMIT_INTERVAL,
    )?;
    if commit_interval > MAX_BATCHING_WAIT {
        return Err(invalid("spool.commit_interval", "must be at most 10s"));
    }
    if !(1..=MAX_QUEUE_CAPACITY).contains(&queue_capacity) {
        return Err(invalid(
            "spool.queue_capacity",
            format!("must be between 1 and {MAX_QUEUE_CAPACITY}"),
        ));
    }
    let queue_max_bytes = match raw.queue_max_bytes {
        None => DEFAULT_QUEUE_MAX_BYTES,
        Some(text) => {
            let bytes = parse_bytes(&text).map_err(|m| invalid("spool.queue_max_bytes", m))?;
            if !(64 * 1024..=1 << 30).contains(&bytes) {
                return Err(invalid(
                    "spool.queue_max_bytes",
                    format!("{text:?} is outside 64KiB..1GiB"),
                ));
            }
            bytes
        }
    };
    let dead_letter_max_bytes = match raw.dead_letter_max_bytes {
        None => default_dead_letter_max_bytes(max_bytes),
        Some(text) => {
            let bytes =
                parse_bytes(&text).map_err(|m| invalid("spool.dead_letter_max_bytes", m))?;
            if bytes < 64 * 1024 {
                return Err(invalid(
                    "spool.dead_letter_max_bytes",
                    format!("{text:?} is below the minimum of 64KiB"),
                ));
            }
            bytes
        }
    };
    let min_free_bytes = match raw.min_free_bytes {
        None => None,
        Some(text) => {
            let bytes = parse_bytes(&text).map_err(|m| invalid("spool.min_free_bytes", m))?;
            if bytes < MIN_MIN_FREE_BYTES {
                return Err(invalid(
                    "spool.min_free_bytes",
                    format!("{text:?} is below the minimum of 1MiB"),
                ));
            }
            Some(bytes)
        }
    };
    ensure_parent_dir("spool.path", &raw.path)?;
    Ok(SpoolConfig {
        path: raw.path,
        max_bytes,
        overflow,
        commit_interval,
        queue_capacity,
        queue_max_bytes,
        dead_letter_max_bytes,
        min_free_bytes,
    })
}

fn validate_kinesis(
    raw: RawKinesis,
    env: &impl Fn(&str) -> Option<String>,
    gateway_id: &str,
    password_key: Option<&SealKey>,
) -> Result<KinesisConfig, ConfigError> {
    let stream = raw.stream;
    // Kinesis: 1..128 characters of [a-zA-Z0-9_.-].
    if stream.is_empty()
        || stream.len() > 128
        || !stream
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
    {
        return Err(invalid(
            "kinesis.stream",
            format!("{stream:?} is not a Kinesis stream name (1-128 of a-z A-Z 0-9 _ . -)"),
        ));
    }
    let region = match raw.region.or_else(|| env("AWS_REGION")) {
        Some(region) => region,
        None => {
            return Err(invalid(
                "kinesis.region",
                "missing: set it in the file or in AWS_REGION",
            ))
        }
    };
    if region.is_empty()
        || !region
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(invalid(
            "kinesis.region",
            format!("{region:?} is not an AWS region name such as \"eu-west-1\""),
        ));
    }
    let endpoint = match raw.endpoint {
        None => format!("https://kinesis.{region}.amazonaws.com"),
        Some(url) => {
            let rest = url
                .strip_prefix("https://")
                .or_else(|| url.strip_prefix("http://"));
            match rest {
                Some(host) if !host.is_empty() && !host.contains('@') => {
                    url.trim_end_matches('/').to_owned()
                }
                Some(host) if host.contains('@') => {
                    // Not echoed: what is before '@' may be a password.
                    return Err(invalid(
                        "kinesis.endpoint",
                        "holds user info (before '@'), which is never sent: credentials \
                         come from the AWS credential chain; give the URL without it",
                    ));
                }
                _ => {
                    return Err(invalid(
                        "kinesis.endpoint",
                        format!("{url:?} is not an http:// or https:// URL"),
                    ))
                }
            }
        }
    };
    let record_format = match raw.record_format.as_deref() {
        None | Some("json") => RecordFormat::Json,
        Some("raw") => RecordFormat::Raw,
        Some(other) => {
            return Err(invalid(
                "kinesis.record_format",
                format!("{other:?} is not one of \"json\", \"raw\""),
            ))
        }
    };
    let request_timeout = optional_duration(
        "kinesis.request_timeout",
        raw.request_timeout,
        Duration::from_secs(30),
    )?;
    let max_backoff = optional_duration(
        "kinesis.max_backoff",
        raw.max_backoff,
        Duration::from_secs(30),
    )?;
    let linger = optional_duration("kinesis.linger", raw.linger, Duration::from_millis(250))?;
    if linger > MAX_BATCHING_WAIT {
        return Err(invalid("kinesis.linger", "must be at most 10s"));
    }
    let aggregation_max_bytes = match raw.aggregation_max_bytes {
        None => crate::drain::kpl::DEFAULT_MAX_BYTES,
        Some(text) => {
            let bytes =
                parse_bytes(&text).map_err(|m| invalid("kinesis.aggregation_max_bytes", m))?;
            // A Kinesis record is at most 1 MiB with its partition key (256 bytes at most).
            if !(1024..=(1 << 20) - 256).contains(&bytes) {
                return Err(invalid(
                    "kinesis.aggregation_max_bytes",
                    format!("{text:?} is outside 1KiB..1MiB less 256 bytes (the partition key)"),
                ));
            }
            bytes as usize
        }
    };
    let aggregation = match raw.aggregation.as_deref() {
        None | Some("none") => Aggregation::None,
        Some("kpl") => Aggregation::Kpl {
            max_bytes: aggregation_max_bytes,
        },
        Some(other) => {
            return Err(invalid(
                "kinesis.aggregation",
                format!("{other:?} is not one of \"none\", \"kpl\""),
            ))
        }
    };
    let credentials = match (raw.credentials.as_deref(), raw.iot) {
        (None | Some("auto"), None) => CredentialsConfig::Auto,
        (Some("iot"), Some(iot)) => {
            CredentialsConfig::Iot(validate_iot(iot, gateway_id, password_key)?)
        }
        (Some("iot"), None) => {
            return Err(invalid(
                "kinesis.iot",
                "is required with kinesis.credentials = \"iot\" (endpoint, role_alias, cert, key)",
            ))
        }
        (None | Some("auto"), Some(_)) => return Err(invalid(
            "kinesis.credentials",
            "is \"auto\" but [kinesis.iot] is given: set kinesis.credentials = \"iot\" to use it",
        )),
        (Some(other), _) => {
            return Err(invalid(
                "kinesis.credentials",
                format!("{other:?} is not one of \"auto\", \"iot\""),
            ))
        }
    };
    Ok(KinesisConfig {
        stream,
        region,
        endpoint,
        record_format,
        request_timeout,
        max_backoff,
        linger,
        credentials,
        aggregation,
    })
}

fn validate_iot(
    raw: RawIot,
    gateway_id: &str,
    password_key: Option<&SealKey>,
) -> Result<IotConfig, ConfigError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let endpoint = match raw.endpoint.strip_prefix("https://") {
        _ if raw.endpoint.contains('@') => {
            return Err(invalid(
                "kinesis.iot.endpoint",
                "holds user info (before '@'); give the host name AWS IoT gives (describe-endpoint)",
            ))
        }
        Some(rest) if !rest.is_empty() => raw.endpoint.trim_end_matches('/').to_owned(),
        None if !raw.endpoint.is_empty()
            && !raw.endpoint.contains("://")
            && !raw.endpoint.contains('/') =>
        {
            format!("https://{}", raw.endpoint)
        }
        _ => {
            return Err(invalid(
                "kinesis.iot.endpoint",
                format!(
                    "{:?} is neither a host name (aws iot describe-endpoint --endpoint-type iot:CredentialProvider) \
                     nor an https:// URL",
                    raw.endpoint
                ),
            ))
        }
    };
    let role_alias = raw.role_alias;
    if role_alias.is_empty()
        || role_alias.len() > 128
        || !role_alias
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_=,@-".contains(c))
    {
        return Err(invalid(
            "kinesis.iot.role_alias",
            format!("{role_alias:?} is not a role alias name (1-128 of a-z A-Z 0-9 _ = , @ -)"),
        ));
    }
    let (thing_name, thing_key) = match raw.thing_name {
        Some(name) => (name, "kinesis.iot.thing_name"),
        None => (
            gateway_id.to_owned(),
            "kinesis.iot.thing_name (here gateway_id)",
        ),
    };
    if thing_name.is_empty()
        || thing_name.len() > 128
        || !thing_name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ":_-".contains(c))
    {
        return Err(invalid(
            thing_key,
            format!("{thing_name:?} is not a thing name (1-128 of a-z A-Z 0-9 : _ -)"),
        ));
    }
    let (cert_pem, cert_label) = pem_or_file("kinesis.iot.cert", &raw.cert)?;
    if !CertificateDer::pem_slice_iter(cert_pem.as_bytes()).any(|cert| cert.is_ok()) {
        return Err(invalid(
            "kinesis.iot.cert",
            format!("{cert_label} holds no PEM certificate"),
        ));
    }
    let key_pem = iot_key(&raw.key, password_key)?;
    if PrivateKeyDer::from_pem_slice(key_pem.expose().as_bytes()).is_err() {
        // Never echo the value: it is the private key.
        return Err(invalid(
            "kinesis.iot.key",
            "holds no PEM private key (PKCS#8, PKCS#1 or SEC1)",
        ));
    }
    let ca_pem = match raw.ca {
        None => None,
        Some(ca) => {
            let (pem, label) = pem_or_file("kinesis.iot.ca", &ca)?;
            if !CertificateDer::pem_slice_iter(pem.as_bytes()).any(|cert| cert.is_ok()) {
                return Err(invalid(
                    "kinesis.iot.ca",
                    format!("{label} holds no PEM certificate"),
                ));
            }
            Some(pem)
        }
    };
    Ok(IotConfig {
        endpoint,
        role_alias,
        thing_name,
        cert_pem,
        cert_label,
        key_pem,
        ca_pem,
    })
}

/// PEM text given inline (it holds `-----BEGIN`), or the file it names; with
/// a label for messages (the path, or "the PEM in {key}").
fn pem_or_file(key: &'static str, value: &str) -> Result<(String, String), ConfigError> {
    if crate::catalog::is_pem(value) {
        return Ok((value.to_owned(), format!("the PEM in {key}")));
    }
    let path = Path::new(value);
    let text = read_small_file(key, path)?;
    Ok((text, path.display().to_string()))
}

/// A certificate or key file named in the config: a regular file of at most
/// 1 MiB (a FIFO must not hang the start), as the catalog's are.
fn read_small_file(key: &'static str, path: &Path) -> Result<String, ConfigError> {
    let cannot_read = |why: String| invalid(key, format!("cannot read {}: {why}", path.display()));
    let bytes = crate::files::read_regular(path, crate::files::MAX_PEM_FILE_BYTES)
        .map_err(|error| cannot_read(error.to_string()))?;
    String::from_utf8(bytes).map_err(|_| cannot_read("it is not UTF-8 text".into()))
}

/// `kinesis.iot.key`: PEM, a file holding PEM, or an `enc:v1:` value (inline
/// or in the file) opened with the gateway's key. `enc:v2:` values are bound
/// to a catalog row and column, which a config value has not: refused.
fn iot_key(value: &str, password_key: Option<&SealKey>) -> Result<Secret, ConfigError> {
    const KEY: &str = "kinesis.iot.key";
    let text = if crate::catalog::is_pem(value) || sealed::is_sealed(value) {
        Secret::new(value)
    } else {
        Secret::new(read_small_file(KEY, Path::new(value))?)
    };
    let trimmed = text.expose().trim();
    if trimmed.starts_with(sealed::PREFIX_V2) {
        return Err(invalid(
            KEY,
            "is sealed as enc:v2:, which binds a value to a catalog row; seal the key for the \
             config with `mqtt-kinesis-bridge encrypt-password --v1 < key.pem`",
        ));
    }
    if !trimmed.starts_with(sealed::PREFIX) {
        return Ok(text);
    }
    let Some(password_key) = password_key else {
        return Err(invalid(
            KEY,
            "is sealed (enc:v1:) but no key is configured: set database.password_key_file or MKB_PASSWORD_KEY",
        ));
    };
    password_key
        .open(trimmed)
        .map_err(|error| invalid(KEY, format!("sealed value cannot be opened: {error}")))
}

fn validate_database(
    raw: RawDatabase,
    gateway_id: &str,
    spool_path: &Path,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<CatalogConfig, ConfigError> {
    let url = raw.url;
    if !(url.starts_with("postgres://")
        || url.starts_with("postgresql://")
        || url.contains("host="))
    {
        // The URL may hold a password: never echo it.
        return Err(invalid(
            "database.url",
            "is not a PostgreSQL URL (postgres://user@host/db) or key=value string with host=",
        ));
    }
    let url = Secret::new(url);
    crate::catalog::database_url::DatabaseUrl::parse(&url)
        .map_err(|error| invalid("database.url", error.to_string()))?;
    let snapshot_path = match raw.snapshot_path {
        Some(path) => {
            ensure_parent_dir("database.snapshot_path", &path)?;
            path
        }
        None => spool_path.with_file_name("catalog-snapshot.db"),
    };
    let refresh_interval = optional_duration(
        "database.refresh_interval",
        raw.refresh_interval,
        Duration::from_secs(60),
    )?;
    if refresh_interval < Duration::from_secs(1) {
        return Err(invalid("database.refresh_interval", "must be at least 1s"));
    }
    let notify_channel = match raw.notify_channel {
        None => Some(DEFAULT_NOTIFY_CHANNEL.to_owned()),
        Some(name) if name.is_empty() => None,
        Some(name) => {
            if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') || name.len() > 63 {
                return Err(invalid(
                    "database.notify_channel",
                    format!("{name:?} must be 1-63 of a-z A-Z 0-9 _ (or \"\" to turn NOTIFY off)"),
                ));
            }
            Some(name)
        }
    };
    let password_key = SealKey::load(raw.password_key_file.as_deref(), env(sealed::KEY_ENV))
        .map_err(|error| {
            let key = if raw.password_key_file.is_some() {
                "database.password_key_file"
            } else {
                "database.password_key_file (here from MKB_PASSWORD_KEY)"
            };
            invalid(key, error.to_string())
        })?;
    Ok(CatalogConfig {
        gateway_id: gateway_id.to_owned(),
        database_url: url,
        snapshot_path,
        refresh_interval,
        notify_channel,
        password_key_file: raw.password_key_file,
        password_key,
        snapshot_keep_free: 0,
    })
}

fn validate_mqtt(raw: RawMqtt) -> Result<MqttConfig, ConfigError> {
    let partition_key = match raw.partition_key.as_deref() {
        None | Some("topic") => PartitionKeyScheme::Topic,
        Some("broker") => PartitionKeyScheme::Broker,
        Some("broker_topic") => PartitionKeyScheme::BrokerTopic,
        Some("device") => PartitionKeyScheme::Device,
        Some("broker_device") => PartitionKeyScheme::BrokerDevice,
        Some(other) => {
            return Err(invalid(
                "mqtt.partition_key",
                format!("{other:?} is not one of \"topic\", \"broker\", \"broker_topic\", \"device\", \"broker_device\""),
            ))
        }
    };
    let min_backoff =
        optional_duration("mqtt.min_backoff", raw.min_backoff, Duration::from_secs(1))?;
    let max_backoff =
        optional_duration("mqtt.max_backoff", raw.max_backoff, Duration::from_secs(60))?;
    if min_backoff.is_zero() || max_backoff < min_backoff {
        return Err(invalid(
            "mqtt.max_backoff",
            "must be at least mqtt.min_backoff, and mqtt.min_backoff above zero",
        ));
    }
    let keep_alive = optional_duration("mqtt.keep_alive", raw.keep_alive, Duration::from_secs(30))?;
    if keep_alive < Duration::from_secs(1) || keep_alive > Duration::from_secs(65535) {
        return Err(invalid("mqtt.keep_alive", "must be between 1s and 65535s"));
    }
    let commit_at_unacked = raw.commit_at_unacked.unwrap_or(16);
    if !(1..=65_535).contains(&commit_at_unacked) {
        return Err(invalid(
            "mqtt.commit_at_unacked",
            "must be between 1 and 65535",
        ));
    }
    let primary_recheck = optional_duration(
        "mqtt.primary_recheck",
        raw.primary_recheck,
        Duration::from_secs(60),
    )?;
    if primary_recheck < Duration::from_secs(1) {
        return Err(invalid("mqtt.primary_recheck", "must be at least 1s"));
    }
    let max_packet_size = match raw.max_packet_size {
        None => DEFAULT_MAX_PACKET_SIZE,
        Some(text) => {
            let bytes = parse_bytes(&text).map_err(|m| invalid("mqtt.max_packet_size", m))?;
            // MQTT's own ceiling is 256 MiB; below 16 KiB a SUBACK could not fit.
            if !(16 * 1024..=256 * 1024 * 1024).contains(&bytes) {
                return Err(invalid(
                    "mqtt.max_packet_size",
                    format!("{text:?} is outside 16KiB..256MiB"),
                ));
            }
            bytes as usize
        }
    };
    let read_pause = optional_duration("mqtt.read_pause", raw.read_pause, DEFAULT_READ_PAUSE)?;
    if read_pause > Duration::from_secs(1) {
        return Err(invalid("mqtt.read_pause", "must be at most 1s"));
    }
    Ok(MqttConfig {
        partition_key,
        min_backoff,
        max_backoff,
        keep_alive,
        primary_recheck,
        commit_at_unacked,
        max_packet_size,
        read_pause,
    })
}

fn validate_status(raw: RawStatus, spool_path: &Path) -> Result<StatusConfig, ConfigError> {
    let file = match raw.file {
        Some(path) => {
            ensure_parent_dir("status.file", &path)?;
            path
        }
        None => spool_path.with_file_name("status.json"),
    };
    let report_interval = optional_duration(
        "status.report_interval",
        raw.report_interval,
        Duration::from_secs(60),
    )?;
    if report_interval < Duration::from_secs(1) {
        return Err(invalid("status.report_interval", "must be at least 1s"));
    }
    Ok(StatusConfig {
        file,
        report_interval,
    })
}

/// How often the textfile is rewritten, by default: node_exporter's usual scrape interval.
pub const DEFAULT_METRICS_INTERVAL: Duration = Duration::from_secs(15);

fn validate_devices(raw: RawDevices) -> Result<DevicesConfig, ConfigError> {
    let max_tracked = match raw.max_tracked {
        None => DEFAULT_MAX_TRACKED_DEVICES,
        Some(n) => usize::try_from(n)
            .ok()
            .filter(|n| *n <= MAX_MAX_TRACKED_DEVICES)
            .ok_or_else(|| {
                invalid(
                    "devices.max_tracked",
                    format!("{n} is not 0..{MAX_MAX_TRACKED_DEVICES}"),
                )
            })?,
    };
    Ok(DevicesConfig { max_tracked })
}

fn validate_metrics(raw: RawMetrics) -> Result<MetricsConfig, ConfigError> {
    let listen = match raw.listen {
        None => None,
        Some(text) => {
            use std::net::ToSocketAddrs;
            // Any address the user gives: `127.0.0.1:9464`, `[::]:9464`, `localhost:9464`.
            let address = text
                .to_socket_addrs()
                .map_err(|error| {
                    invalid(
                        "metrics.listen",
                        format!("{text:?} is not an address with a port (like \"127.0.0.1:9464\"): {error}"),
                    )
                })?
                .next()
                .ok_or_else(|| invalid("metrics.listen", format!("{text:?} names no address")))?;
            Some(address)
        }
    };
    let textfile = match raw.textfile {
        Some(path) if path.as_os_str().is_empty() => {
            return Err(invalid("metrics.textfile", "must not be empty"))
        }
        Some(path) => {
            ensure_parent_dir("metrics.textfile", &path)?;
            Some(path)
        }
        None => None,
    };
    let interval = optional_duration("metrics.interval", raw.interval, DEFAULT_METRICS_INTERVAL)?;
    if interval < Duration::from_secs(1) {
        return Err(invalid("metrics.interval", "must be at least 1s"));
    }
    Ok(MetricsConfig {
        listen,
        textfile,
        interval,
    })
}

fn optional_duration(
    key: &'static str,
    text: Option<String>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match text {
        None => Ok(default),
        Some(text) => parse_duration(&text).map_err(|m| invalid(key, m)),
    }
}

/// Each file (with the files written beside it: a journal, a temporary
/// copy) must be its own: a status file written over the spool would
/// destroy every message in it.
fn distinct_files(files: &[(&'static str, Vec<PathBuf>)]) -> Result<(), ConfigError> {
    // Directories exist by now (ensure_parent_dir): compare their real paths,
    // so `./spool.db` and `/var/lib/x/spool.db` or a linked directory match.
    let real = |path: &PathBuf| -> PathBuf {
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let name = path.file_name().unwrap_or_default();
        std::fs::canonicalize(dir).map_or_else(|_| path.clone(), |dir| dir.join(name))
    };
    for (i, (key, paths)) in files.iter().enumerate() {
        let mine: Vec<PathBuf> = paths.iter().map(real).collect();
        for (other_key, other_paths) in &files[..i] {
            if other_paths
                .iter()
                .map(real)
                .any(|file| mine.contains(&file))
            {
                return Err(invalid(
                    key,
                    format!(
                        "{} is (or is written beside) {other_key} {}: give each file its own path",
                        paths[0].display(),
                        other_paths[0].display()
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Creates `path`'s directory if missing, so a bad path fails before start-up.
fn ensure_parent_dir(key: &'static str, path: &Path) -> Result<(), ConfigError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => return Ok(()),
    };
    std::fs::create_dir_all(dir).map_err(|error| {
        invalid(
            key,
            format!("cannot create directory {}: {error}", dir.display()),
        )
    })?;
    if !dir.is_dir() {
        return Err(invalid(
            key,
            format!("{} is not a directory", dir.display()),
        ));
    }
    Ok(())
}

/// A size or duration that does not parse: quotes the input and states the accepted form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnitError {
    /// The value as written.
    pub text: String,
    pub problem: UnitProblem,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnitProblem {
    NotSize,
    /// More bytes than a u64 holds.
    SizeTooLarge,
    NotDuration,
    /// Longer than `MAX_DURATION`.
    DurationTooLong,
}

impl fmt::Display for UnitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = &self.text;
        match self.problem {
            UnitProblem::NotSize => write!(
                f,
                "{text:?} is not a size: write a whole number and a unit, such as \"512MiB\" (B, kB, KiB, MB, MiB, GB, GiB)"
            ),
            UnitProblem::SizeTooLarge => write!(f, "{text:?} is too large"),
            UnitProblem::NotDuration => write!(
                f,
                "{text:?} is not a duration: write a whole number and a unit, such as \"60s\" (ms, s, m, h)"
            ),
            UnitProblem::DurationTooLong => write!(
                f,
                "{text:?} is longer than the longest duration any key takes, 24h"
            ),
        }
    }
}

impl std::error::Error for UnitError {}

fn unit_error(text: &str, problem: UnitProblem) -> UnitError {
    UnitError {
        text: text.to_owned(),
        problem,
    }
}

/// Parses `"512MiB"`, `"10MB"`, `"4096B"`. Binary (KiB, MiB, GiB) and decimal (kB, MB, GB) units.
pub fn parse_bytes(text: &str) -> Result<u64, UnitError> {
    let (number, unit) = split_number(text);
    let multiplier: u64 = match unit {
        "B" => 1,
        "kB" | "KB" => 1_000,
        "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "GiB" => 1 << 30,
        _ => 0,
    };
    match number.parse::<u64>() {
        Ok(n) if multiplier > 0 => n
            .checked_mul(multiplier)
            .ok_or_else(|| unit_error(text, UnitProblem::SizeTooLarge)),
        _ => Err(unit_error(text, UnitProblem::NotSize)),
    }
}

/// Parses `"250ms"`, `"60s"`, `"5m"`, `"2h"`.
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    let (number, unit) = split_number(text);
    let parsed = number.parse::<u64>().ok();
    let duration = match (parsed, unit) {
        (Some(n), "ms") => Some(Duration::from_millis(n)),
        (Some(n), "s") => Some(Duration::from_secs(n)),
        (Some(n), "m") => n.checked_mul(60).map(Duration::from_secs),
        (Some(n), "h") => n.checked_mul(3600).map(Duration::from_secs),
        _ => None,
    };
    let duration = duration.ok_or_else(|| unit_error(text, UnitProblem::NotDuration))?;
    // No setting needs more, and a larger one could overflow a deadline (now + duration).
    if duration > MAX_DURATION {
        return Err(unit_error(text, UnitProblem::DurationTooLong));
    }
    Ok(duration)
}

/// The longest duration any key accepts.
const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

fn split_number(text: &str) -> (&str, &str) {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    (&text[..split], text[split..].trim_start())
}

/// toml's messages quote the offending line; a `url = ...` line may hold a password.
/// A TOML error in words that never quote the file: toml's own message
/// shows the offending line, which may hold `database.url`'s password (in an
/// inline table, say). A missing key reads like every other key's error.
fn parse_error(text: &str, path: &Path, error: &toml::de::Error) -> ConfigError {
    let message = error.message().trim_end();
    let start = error.span().map_or(0, |span| span.start.min(text.len()));
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'))
    {
        // The span is the table that lacks it: `[spool]` → `spool.max_bytes`.
        let table = text[start..]
            .strip_prefix('[')
            .and_then(|rest| rest.split_once(']'))
            .map(|(name, _)| name.trim());
        let key = match table {
            Some(table) if !table.is_empty() => format!("{table}.{field}"),
            _ => field.to_owned(),
        };
        return ConfigError::Missing { key };
    }
    let line = text[..start].matches('\n').count() + 1;
    let column = text[..start]
        .rsplit('\n')
        .next()
        .map_or(1, |before| before.chars().count() + 1);
    let message = format!("{} (line {line}, column {column})", redact_urls(message));
    // The key of that line (the text before `=`: a name, never a value),
    // with its table, when the line is `key = value`.
    let key = text.lines().nth(line - 1).and_then(|source| {
        let (key, _) = source.split_once('=')?;
        let key = key.trim();
        let bare = |c: char| c.is_ascii_alphanumeric() || "_-.".contains(c);
        (!key.is_empty() && key.chars().all(bare)).then_some(key)
    });
    match key {
        Some(key) => {
            let table = text
                .lines()
                .take(line - 1)
                .filter_map(|l| l.trim().strip_prefix('[')?.split_once(']'))
                .map(|(name, _)| name.trim())
                .last();
            ConfigError::Syntax {
                key: table.map_or_else(|| key.to_owned(), |table| format!("{table}.{key}")),
                message,
            }
        }
        None => ConfigError::Parse {
            path: path.to_owned(),
            message,
        },
    }
}

/// A URL with user info (`scheme://user:password@host`) quoted in an error
/// message, its user info replaced: serde quotes a value of the wrong type.
fn redact_urls(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        let end = after
            .find(|c: char| c.is_whitespace() || "\"'`".contains(c))
            .unwrap_or(after.len());
        let authority_end = after[..end].find('/').unwrap_or(end);
        match after[..authority_end].rfind('@') {
            Some(at) => {
                out.push_str("***");
                out.push_str(&after[at..end]);
            }
            None => out.push_str(&after[..end]),
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

fn default_gateway_id() -> String {
    let name = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "gateway".to_owned());
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
