//! mqtt-kinesis-bridge: MQTT brokers → durable SQLite spool → AWS Kinesis Data Streams.
//!
//! Modules in the order data flows through them:
//! [`catalog`] (which brokers exist) → [`sessions`] (one MQTT session each) →
//! [`spool`] (the durable queue) → [`drain`] (signed PutRecords calls).
//! [`run`] is the only place that wires the stages together.

pub(crate) mod check;
pub mod cli;
pub mod clock;
pub mod config;
pub mod devices;
pub mod disk;
pub(crate) mod files;
pub(crate) mod histogram;
pub(crate) mod ids;
pub(crate) mod limits;
pub mod logger;
pub(crate) mod metrics;
pub(crate) mod repeating;
pub mod sealed;
pub mod secret;
pub mod shutdown;
pub mod status;
pub(crate) mod systemd;
pub(crate) mod trust;
pub(crate) mod watchdog;

pub mod catalog;
pub mod drain;
pub mod sessions;
pub mod spool;

use std::fmt;
use std::sync::Arc;
use std::thread::JoinHandle;

use config::Config;
use shutdown::Shutdown;
use spool::Spool;
use watchdog::Heartbeat;

/// Why the gateway could not start or had to stop.
#[derive(Debug)]
pub enum RunError {
    Spool(spool::SpoolError),
    Drain(drain::DrainError),
    Thread(std::io::Error),
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Spool(error) => error.fmt(f),
            RunError::Drain(error) => error.fmt(f),
            RunError::Thread(error) => write!(f, "cannot start a thread: {error}"),
        }
    }
}

impl std::error::Error for RunError {}

impl From<spool::SpoolError> for RunError {
    fn from(error: spool::SpoolError) -> Self {
        RunError::Spool(error)
    }
}

impl From<drain::DrainError> for RunError {
    fn from(error: drain::DrainError) -> Self {
        RunError::Drain(error)
    }
}

/// Runs the gateway until `shutdown` is requested, then stops every stage in
/// data-flow order so nothing accepted is lost: sessions stop taking messages,
/// the spool commits what is queued, the drain finishes its request in flight.
pub fn run(config: Config, shutdown: Shutdown) -> Result<(), RunError> {
    for warning in &config.warnings {
        log::warn!("{warning}");
    }
    // Before any thread starts: their allocations then share two arenas.
    if !limits::cap_malloc_arenas() {
        log::debug!("malloc did not take the arena cap");
    }
    match limits::raise_open_files() {
        Ok((before, after)) if after > before => {
            log::info!(
                "open files limit raised from {before} to {after} (one per broker connection)"
            )
        }
        Ok(_) => {}
        Err(error) => log::warn!("cannot raise the open files limit: {error}"),
    }
    let (spool, spool_writer) = Spool::open(&config.spool)?;
    log::info!(
        "mqtt-kinesis-bridge {} starting: gateway {}, spool {} ({} records waiting), stream {} in {} via {}",
        env!("CARGO_PKG_VERSION"),
        config.gateway_id,
        config.spool.path.display(),
        spool.depth().n_records(),
        config.kinesis.stream,
        config.kinesis.region,
        config.kinesis.endpoint,
    );
    let drain_heartbeat = Heartbeat::default();
    let aws_offset = clock::AwsOffset::default();
    let credentials = drain::CredentialsHandle::new();
    let drain_stats = Arc::new(drain::stats::DrainStats::default());
    let drain = drain::start(
        config.kinesis.clone(),
        spool.clone(),
        shutdown.clone(),
        drain::Shared {
            heartbeat: drain_heartbeat.clone(),
            aws_offset: aws_offset.clone(),
            credentials: credentials.clone(),
            stats: Arc::clone(&drain_stats),
        },
    )?;
    // The systemd watchdog's rule, which /health applies too (with the
    // unit's WatchdogSec when systemd did not set one).
    let watchdog_timeout = systemd::watchdog_timeout();
    let stages = {
        let timeout = watchdog_timeout.unwrap_or(watchdog::DEFAULT_TIMEOUT);
        // A drain round may legitimately take a whole request timeout.
        let drain_limit = timeout.max(config.kinesis.request_timeout * 2);
        vec![
            ("spool writer", spool.writer_heartbeat(), timeout),
            ("drain", drain_heartbeat, drain_limit),
        ]
    };
    let board = status::StatusBoard::new();
    let devices = devices::Devices::new(config.devices.max_tracked);
    let upload = catalog::StatusUpload {
        board: board.clone(),
        gateway_id: config.gateway_id.clone(),
        interval: config.status.report_interval,
        aws_offset: aws_offset.clone(),
        devices: devices.clone(),
    };
    // The snapshot is not essential: it leaves the spool's floor free.
    let catalog_config = config::CatalogConfig {
        snapshot_keep_free: spool.space().min_free_bytes(),
        ..config.catalog.clone()
    };
    let catalog_state = catalog::CatalogState::default();
    let (catalogs, catalog) = catalog::start(
        catalog_config,
        shutdown.clone(),
        Some(upload),
        catalog_state.clone(),
    )
    .map_err(RunError::Thread)?;
    let metrics = metrics::start(
        config.metrics.clone(),
        metrics::Sources {
            board: board.clone(),
            spool_path: config.spool.path.clone(),
            depth: spool.shared_depth(),
            space: spool.space(),
            spool_max_bytes: config.spool.max_bytes,
            drain: Arc::clone(&drain_stats),
            catalog: catalog_state,
            aws_offset: aws_offset.clone(),
            devices: devices.clone(),
            stages: stages.clone(),
        },
        shutdown.clone(),
    )
    .map_err(RunError::Thread)?;

    let executor = Arc::new(smol::Executor::new());
    let notifier = systemd::Notifier::from_env();
    if let Some(notifier) = &notifier {
        // The spool is open and every stage has started.
        notifier.notify("READY=1");
        if let Some(timeout) = watchdog_timeout {
            log::info!("systemd watchdog: pinging every {:?}", timeout / 2);
            executor
                .spawn(watchdog::run(
                    notifier.clone(),
                    timeout,
                    stages,
                    shutdown.clone(),
                ))
                .detach();
        }
    }
    let status_file = status::file::start(
        config.status.file.clone(),
        status::file::Sources {
            gateway_id: config.gateway_id.clone(),
            board: board.clone(),
            space: spool.space(),
            aws_offset,
            credentials: {
                let credentials = credentials.clone();
                Box::new(move || credentials_line(&credentials))
            },
            aggregation: config.kinesis.aggregation.to_string(),
            stored: {
                let stats = Arc::clone(&drain_stats);
                Box::new(move || {
                    let stored = stats.stored();
                    status::document::StoredLine {
                        kinesis_records: stored.kinesis_records,
                        messages: stored.messages,
                    }
                })
            },
        },
        shutdown.clone(),
    )
    .map_err(RunError::Thread)?;
    let sessions = sessions::run(
        Arc::clone(&executor),
        catalogs,
        spool.appender(),
        config.mqtt.clone(),
        config.gateway_id.clone(),
        shutdown.clone(),
        board,
        devices,
    );
    // Sessions are IO-bound and light: one executor thread runs them all.
    // rumqttc's sockets and timers are tokio's; inside this current-thread
    // runtime async-compat serves them on this same thread, so a message
    // wakes one thread, not two (async-compat's own tokio thread, then this).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(RunError::Thread)?;
    runtime.block_on(executor.run(sessions));
    drop(runtime);
    // Sessions end on shutdown (or if the catalog thread died): either way, stop.
    shutdown.request();
    // Its last write says the gateway stopped.
    join("status file", status_file);
    if let Some(metrics) = metrics {
        join("metrics", metrics);
    }
    if let Some(notifier) = &notifier {
        notifier.notify("STOPPING=1");
    }

    // Sessions have disconnected: commit what they handed over, then let the
    // drain finish and the writer exit.
    spool.close();
    join("catalog", catalog);
    join("drain", drain);
    drop(spool);
    join("spool writer", spool_writer);
    log::info!("stopped");
    Ok(())
}

fn join(name: &str, handle: JoinHandle<()>) {
    if handle.join().is_err() {
        log::error!("{name} thread panicked");
    }
}

/// The drain's credentials as the status file shows them: the expiry in this
/// machine's clock (now plus the time left), to the second, so a few ms
/// between rewrites do not rewrite the file.
fn credentials_line(credentials: &drain::CredentialsHandle) -> status::document::CredentialsLine {
    let status = credentials.status();
    let now_ms = clock::unix_ms();
    status::document::CredentialsLine {
        source: status.source,
        valid: status.valid,
        expires_at_ms: status
            .expires_in
            .map(|left| (now_ms + left.as_millis() as i64) / 1000 * 1000),
        last_error: status.last_error,
    }
}
