//! Which brokers exist: the desired state, read from PostgreSQL, kept in a local snapshot.
//!
//! The catalog thread reads `iot_data.mqtt_broker` and `iot_data.mqtt_topic`,
//! validates the rows (bad rows are logged and skipped, good rows still run),
//! keeps the brokers this gateway runs (`iot_data.mqtt_broker_gateway`, see
//! `assignment`), writes every good read to the SQLite snapshot, and sends
//! each *changed* [`Catalog`] to the sessions supervisor. When the database is unreachable it
//! serves the snapshot. It never talks MQTT and never touches the spool.

mod assignment;
pub mod database_url;
mod device_upload;
pub mod postgres;
mod postgres_tls;
mod probe;
pub mod rows;
pub mod snapshot;
mod source;
mod status_upload;

pub(crate) use assignment::Assignment;
pub(crate) use postgres::DbErrorKind;
pub(crate) use probe::probe;
pub(crate) use rows::RowProblem;
pub use source::{CatalogState, Source};
pub use status_upload::StatusUpload;

use std::fmt;
use std::time::{Duration, Instant};

use crate::config::CatalogConfig;
use crate::secret::Secret;
use crate::shutdown::Shutdown;

/// `iot_data.mqtt_broker.mqtt_id`.
pub use crate::ids::BrokerId;

/// One active broker and everything a session needs to connect to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Broker {
    pub id: BrokerId,
    /// In priority order: the first is the primary (`mqtt_host`, `mqtt_port`),
    /// then the `mqtt_failover` entries. Never empty.
    pub endpoints: Vec<Endpoint>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// `None`: plain TCP.
    pub tls: Option<TlsSettings>,
    /// `None`: `{gateway_id}-{mqtt_id}`.
    pub client_id: Option<String>,
    /// `None`: `mqtt.keep_alive` from the config.
    pub keep_alive: Option<Duration>,
    /// False (the default) keeps the broker's queue for us while we are away.
    pub clean_session: bool,
    /// The password or client key was sealed in the catalog: someone meant it
    /// to stay secret, so sending it without TLS is worth a warning.
    pub sealed_secret: bool,
    /// Sorted by filter, no duplicate filters; `topic_prefix` and
    /// `$share/{group}/` already applied.
    pub topics: Vec<Topic>,
}

impl Broker {
    /// A broker with one plain endpoint and the defaults for everything else.
    pub fn plain(id: BrokerId, host: impl Into<String>, port: u16, topics: Vec<Topic>) -> Broker {
        Broker {
            id,
            endpoints: vec![Endpoint {
                host: host.into(),
                port,
            }],
            username: None,
            password: None,
            tls: None,
            client_id: None,
            keep_alive: None,
            clean_session: false,
            sealed_secret: false,
            topics,
        }
    }

    /// The first endpoint, the one every connection walk starts with.
    pub fn primary(&self) -> &Endpoint {
        &self.endpoints[0]
    }

    /// True when a session for `self` must reconnect to become `other`
    /// (anything but the topic list changed).
    pub fn connection_differs(&self, other: &Broker) -> bool {
        let without_topics = |broker: &Broker| Broker {
            topics: Vec::new(),
            ..broker.clone()
        };
        without_topics(self) != without_topics(other)
    }
}

/// One `host:port` a broker can be reached at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

/// `localhost` or a loopback address: traffic to it never crosses a network.
pub fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl Endpoint {
    /// This machine: `localhost` or a loopback address. Traffic to it never
    /// crosses a network.
    pub fn is_loopback(&self) -> bool {
        is_loopback_host(&self.host)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// True when a certificate or key value is PEM text rather than a file path.
pub fn is_pem(value: &str) -> bool {
    // Anywhere, not only at the start: a byte-order mark or OpenSSL's
    // `Bag Attributes` lines before it still make it PEM text, never a path
    // (a path is echoed in errors; a key must not be).
    value.contains("-----BEGIN")
}

/// How to speak TLS to a broker. Certificates and keys are each a file path
/// or PEM text (told apart by `-----BEGIN`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    /// False accepts any server certificate (test benches only; logged as a warning).
    pub verify_cert: bool,
    /// `None`: the system's trusted roots.
    pub ca: Option<String>,
    /// Client certificate chain for mutual TLS; goes with `client_key`.
    pub client_cert: Option<String>,
    pub client_key: Option<Secret>,
}

/// One subscription: an MQTT topic filter and the QoS to subscribe with.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Topic {
    pub filter: String,
    /// 0, 1 or 2.
    pub qos: u8,
    /// The topic level (1 = the first) that names the device a message on
    /// this subscription came from; `None`: no device id.
    pub device_id_level: Option<u8>,
}

/// The desired state: every active broker this gateway runs, sorted by id, ids unique.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Catalog {
    pub brokers: Vec<Broker>,
}

/// Starts the catalog thread. The receiver yields the first catalog (from the
/// database, or else the snapshot) and then every change. The thread ends on
/// shutdown or when the receiver is dropped.
/// With `upload` it also writes the sessions' status to the database; `state`
/// says where the catalog came from (for the metrics).
pub fn start(
    config: CatalogConfig,
    shutdown: Shutdown,
    upload: Option<StatusUpload>,
    state: CatalogState,
) -> std::io::Result<(
    async_channel::Receiver<Catalog>,
    std::thread::JoinHandle<()>,
)> {
    let (sender, receiver) = async_channel::bounded(4);
    let handle = std::thread::Builder::new()
        .name("catalog".into())
        .spawn(move || {
            let mut refresher = Refresher::new(config, sender, shutdown);
            refresher.device_uploader = upload.as_ref().map(|upload| {
                device_upload::DeviceUploader::new(
                    upload.devices.clone(),
                    upload.gateway_id.clone(),
                    upload.interval,
                )
            });
            refresher.uploader = upload.map(status_upload::Uploader::new);
            refresher.state = state;
            refresher.run()
        })?;
    Ok((receiver, handle))
}

/// The first retry after a failed database read; doubles up to the refresh interval.
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// How often a wait for NOTIFY looks at shutdown (and at the uploads due).
/// The blocking client cannot be woken, so this is what the catalog thread
/// adds to a shutdown at most; each look is a few wake-ups of an idle gateway.
const SHUTDOWN_CHECK: Duration = Duration::from_secs(1);

struct Refresher {
    config: CatalogConfig,
    sender: async_channel::Sender<Catalog>,
    shutdown: Shutdown,
    client: Option<::postgres::Client>,
    /// The link the last connection made, logged when it changes.
    link: Option<postgres::Link>,
    /// What the sessions were last given.
    sent: Option<Catalog>,
    /// What the snapshot holds, so an unchanged catalog is not rewritten (flash wear).
    saved: Option<Catalog>,
    problems: Vec<RowProblem>,
    /// Consecutive failed reads; state changes are logged once, not every retry.
    n_failures: u32,
    uploader: Option<status_upload::Uploader>,
    device_uploader: Option<device_upload::DeviceUploader>,
    /// The last snapshot was not written for want of room (said once).
    snapshot_deferred: bool,
    /// Whether `iot_data.mqtt_broker_gateway` existed at the last read
    /// (`None` before the first): its absence is said once, not every read.
    assignment_table: Option<bool>,
    /// The last split of the catalog between gateways, logged when it changes.
    assignment: Option<Assignment>,
    /// Whether `iot_data.mqtt_topic` had `device_id_level` at the last read
    /// (`None` before the first): said once, and again when it changes.
    device_id_level_column: Option<bool>,
    /// Where the catalog came from, for the metrics.
    state: CatalogState,
}

impl Refresher {
    fn new(
        config: CatalogConfig,
        sender: async_channel::Sender<Catalog>,
        shutdown: Shutdown,
    ) -> Self {
        Refresher {
            config,
            sender,
            shutdown,
            client: None,
            link: None,
            sent: None,
            saved: None,
            problems: Vec::new(),
            n_failures: 0,
            uploader: None,
            device_uploader: None,
            snapshot_deferred: false,
            assignment_table: None,
            assignment: None,
            device_id_level_column: None,
            state: CatalogState::default(),
        }
    }

    fn run(mut self) {
        let mut retry_delay = FIRST_RETRY;
        while !self.shutdown.is_requested() {
            match self.read_database() {
                Ok((catalog, problems)) => {
                    self.state.database_read();
                    retry_delay = FIRST_RETRY;
                    if self.n_failures > 0 {
                        log::info!("catalog: database reachable again");
                        self.n_failures = 0;
                    }
                    self.report_problems(problems);
                    self.save_snapshot(&catalog);
                    if !self.send(catalog) {
                        return;
                    }
                    self.wait_for_change();
                }
                Err(error) => {
                    self.state.database_failed();
                    self.client = None;
                    self.n_failures += 1;
                    if !self.on_database_error(&error, retry_delay) {
                        return;
                    }
                    self.shutdown.wait_timeout(retry_delay);
                    retry_delay = (retry_delay * 2).min(self.config.refresh_interval);
                }
            }
        }
        // The counts since the last interval, so a clean stop loses none.
        if let (Some(uploader), Some(client)) = (&mut self.device_uploader, &mut self.client) {
            uploader.upload(client);
        }
        log::debug!("catalog: stopped");
    }

    fn read_database(&mut self) -> Result<(Catalog, Vec<RowProblem>), postgres::DbError> {
        let client = match &mut self.client {
            Some(client) => client,
            None => {
                let (client, link) = postgres::connect(
                    &self.config.database_url,
                    self.config.notify_channel.as_deref(),
                )?;
                if self.link.as_ref() != Some(&link) {
                    log::info!("catalog: database link: {link}");
                    self.link = Some(link);
                }
                self.client.insert(client)
            }
        };
        let read = postgres::read_rows(client)?;
        let (catalog, mut problems) = rows::validate(
            &read.brokers,
            &read.topics,
            self.config.password_key.as_ref(),
        );
        problems.extend(read.unnamed);
        if self.device_id_level_column != Some(read.device_id_level_column) {
            if read.device_id_level_column {
                log::info!("catalog: iot_data.mqtt_topic has device_id_level: topics that set it carry device ids");
            } else {
                log::info!("catalog: iot_data.mqtt_topic has no device_id_level column: no device ids (buffer-schema/catalog/0007_devices.sql adds it)");
            }
            self.device_id_level_column = Some(read.device_id_level_column);
        }
        let table_present = read.assignments.is_some();
        let (catalog, assignment) = assignment::assign(
            catalog,
            read.assignments.as_deref().unwrap_or_default(),
            &self.config.gateway_id,
        );
        self.report_assignment(table_present, assignment);
        Ok((catalog, problems))
    }

    /// Says when the assignment table appears or goes, and when this
    /// gateway's share of the brokers changes; warns once per change about
    /// brokers several gateways would each forward in full.
    fn report_assignment(&mut self, table_present: bool, assignment: Assignment) {
        if self.assignment_table != Some(table_present) {
            if table_present {
                log::info!("catalog: iot_data.mqtt_broker_gateway present: brokers with rows there run only on the gateways they name");
            } else {
                log::info!("catalog: no iot_data.mqtt_broker_gateway table: every broker runs on every gateway");
            }
            self.assignment_table = Some(table_present);
        }
        if self.assignment.as_ref() == Some(&assignment) {
            return;
        }
        if table_present {
            log::info!("catalog: {}", assignment.describe(&self.config.gateway_id));
        }
        let before = self.assignment.as_ref().map(|a| a.duplicated.as_slice());
        for (id, gateways) in &assignment.duplicated {
            if !before.is_some_and(|before| before.iter().any(|(b, g)| b == id && g == gateways)) {
                log::warn!(
                    "catalog: broker {id} is assigned to gateways {} without shared subscriptions: each of them forwards every message, so Kinesis gets duplicates; set use_shared_subscriptions on mqtt_broker row mqtt_id={id}, or assign it to one gateway",
                    gateways.join(", ")
                );
            }
        }
        self.assignment = Some(assignment);
    }

    /// Logs the bad rows when the set of them changes, not on every poll.
    fn report_problems(&mut self, problems: Vec<RowProblem>) {
        if problems == self.problems {
            return;
        }
        for problem in &problems {
            if !self.problems.contains(problem) {
                log::warn!("catalog: skipped {problem}");
            }
        }
        self.problems = problems;
    }

    fn save_snapshot(&mut self, catalog: &Catalog) {
        if self.saved.as_ref() == Some(catalog) {
            return;
        }
        // Not essential: it never takes the spool's room. Written with the
        // next read (poll or NOTIFY) once there is room again.
        let path = &self.config.snapshot_path;
        let needed = std::fs::metadata(path).map_or(0, |m| m.len()).max(64 << 10) * 2;
        if !crate::disk::leaves_room(path, needed, self.config.snapshot_keep_free) {
            if !self.snapshot_deferred {
                log::warn!(
                    "catalog snapshot {} not written: its filesystem is below the spool's free-space floor; written once there is room",
                    path.display()
                );
                self.snapshot_deferred = true;
            }
            return;
        }
        self.snapshot_deferred = false;
        match snapshot::save(
            &self.config.snapshot_path,
            catalog,
            self.config.password_key.as_ref(),
        ) {
            Ok(withheld) => {
                self.state.snapshot_taken(std::time::SystemTime::now());
                if !withheld.broker_ids.is_empty() {
                    log::warn!(
                        "catalog snapshot: the passwords (or inline client keys) of brokers {:?} are not kept: there is no key to seal them with (database.password_key_file or {}); from the snapshot those brokers connect without them",
                        withheld.broker_ids,
                        crate::sealed::KEY_ENV
                    );
                }
                self.saved = Some(catalog.clone());
            }
            Err(error) => {
                log::warn!("{error}; the gateway runs on, but cannot start offline from it")
            }
        }
    }

    /// Hands `catalog` to the sessions if it differs from the last one; false once nobody listens.
    fn send(&mut self, catalog: Catalog) -> bool {
        if self.sent.as_ref() == Some(&catalog) {
            return true;
        }
        let n_topics: usize = catalog.brokers.iter().map(|b| b.topics.len()).sum();
        let n_elsewhere = self
            .assignment
            .as_ref()
            .map_or(0, |a| a.n_brokers_total - a.n_running());
        if catalog.brokers.is_empty() && n_elsewhere > 0 {
            log::warn!("catalog: no brokers for gateway {}: all {n_elsewhere} active brokers are assigned to other gateways (iot_data.mqtt_broker_gateway); polling on", self.config.gateway_id);
        } else if catalog.brokers.is_empty() {
            log::warn!("catalog: no active brokers (iot_data.mqtt_broker has no valid row with status = TRUE); polling on");
        } else {
            log::info!(
                "catalog: {} active brokers, {n_topics} subscriptions",
                catalog.brokers.len()
            );
        }
        self.sent = Some(catalog.clone());
        self.sender.send_blocking(catalog).is_ok()
    }

    /// Sleeps until a NOTIFY, the poll interval, or shutdown.
    fn wait_for_change(&mut self) {
        let deadline = Instant::now() + self.config.refresh_interval;
        while let Some(remaining) = deadline.checked_duration_since(Instant::now()) {
            if self.shutdown.is_requested() {
                return;
            }
            if let (Some(uploader), Some(client)) = (&mut self.uploader, &mut self.client) {
                uploader.upload_if_due(client);
            }
            if let (Some(uploader), Some(client)) = (&mut self.device_uploader, &mut self.client) {
                uploader.upload_if_due(client);
            }
            let slice = remaining.min(SHUTDOWN_CHECK);
            match (&mut self.client, self.config.notify_channel.is_some()) {
                (Some(client), true) => match postgres::wait_for_notification(client, slice) {
                    Ok(true) => {
                        log::debug!("catalog: change notified");
                        return;
                    }
                    Ok(false) => {}
                    Err(error) => {
                        log::warn!("catalog: database connection lost: {error}");
                        self.client = None;
                        return;
                    }
                },
                _ => {
                    if self.shutdown.wait_timeout(slice) {
                        return;
                    }
                }
            }
        }
    }

    /// Falls back to the snapshot when nothing was sent yet; false once nobody listens.
    fn on_database_error(&mut self, error: &postgres::DbError, retry_delay: Duration) -> bool {
        if self.sent.is_some() {
            if self.n_failures == 1 {
                log::warn!("catalog: database unreachable ({error}); keeping the current catalog, retrying");
            } else {
                log::debug!(
                    "catalog: database still unreachable ({error}); next try in {retry_delay:?}"
                );
            }
            return true;
        }
        match snapshot::load(
            &self.config.snapshot_path,
            self.config.password_key.as_ref(),
        ) {
            Ok(Some(snapshot)) => {
                log::warn!(
                    "catalog: database unreachable ({error}): running from the snapshot taken {} ago ({} brokers)",
                    human_age(snapshot.age()),
                    snapshot.catalog.brokers.len()
                );
                for skipped in &snapshot.skipped {
                    log::warn!("catalog: snapshot: skipped {skipped}");
                }
                self.state.running_from_snapshot(snapshot.taken_at);
                self.saved = Some(snapshot.catalog.clone());
                self.send(snapshot.catalog)
            }
            Ok(None) => {
                if self.n_failures == 1 || self.n_failures.is_power_of_two() {
                    log::error!(
                        "catalog: database unreachable ({error}) and no snapshot at {} yet: no broker can run until the database answers; retrying in {retry_delay:?}",
                        self.config.snapshot_path.display()
                    );
                }
                true
            }
            Err(snapshot_error) => {
                if self.n_failures == 1 || self.n_failures.is_power_of_two() {
                    log::error!(
                        "catalog: database unreachable ({error}) and {snapshot_error}; retrying in {retry_delay:?}"
                    );
                }
                true
            }
        }
    }
}

/// `3h12m`, `45s`: an age for a log line.
fn human_age(age: Duration) -> String {
    let seconds = age.as_secs();
    match seconds {
        0..=59 => format!("{seconds}s"),
        60..=3599 => format!("{}m{}s", seconds / 60, seconds % 60),
        3600..=86399 => format!("{}h{}m", seconds / 3600, seconds % 3600 / 60),
        _ => format!("{}d{}h", seconds / 86400, seconds % 86400 / 3600),
    }
}
