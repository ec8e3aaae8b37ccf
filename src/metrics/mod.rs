//! Metrics a fleet can scrape (issue 15): `GET /metrics` in Prometheus's text
//! format and `GET /health` on `metrics.listen`, and the same exposition
//! written to `metrics.textfile` every `metrics.interval` for node_exporter.
//!
//! Everything happens on the `metrics` thread, with its own small async-io
//! executor: the per-broker counters come from a read-only spool connection
//! (a blocking SQLite read per scrape, which must never run on the sessions'
//! executor), and a hostile client ties up only this thread's slots.
//!
//! Nothing here is on the per-message path. The values already exist: the
//! status board (per session), the spool's `broker_counters` table (per commit)
//! and [`Depth`], the drain's [`DrainStats`] (per request), the catalog's
//! [`CatalogState`]. They are read and folded when a scrape or the textfile
//! asks, never pushed.

mod exposition;
mod http;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::catalog::{CatalogState, Source};
use crate::clock::{unix_ms, AwsOffset};
use crate::config::MetricsConfig;
use crate::devices::Devices;
use crate::disk;
use crate::drain::stats::{DrainStats, RequestOutcome};
use crate::shutdown::Shutdown;
use crate::spool::{BrokerCounters, Depth, SpaceStatus, SpoolReader};
use crate::status::StatusBoard;
use crate::watchdog::{self, Stage};
use exposition::{Exposition, Kind, CONTENT_TYPE};
use http::{plain, Response, Route};

/// The textfile's mode: node_exporter runs as another user and must read it.
const TEXTFILE_MODE: u32 = 0o644;

/// Where the gateway's state is read from at each scrape.
pub struct Sources {
    pub board: StatusBoard,
    pub spool_path: PathBuf,
    pub depth: Arc<Depth>,
    pub space: Arc<SpaceStatus>,
    pub spool_max_bytes: u64,
    pub drain: Arc<DrainStats>,
    pub catalog: CatalogState,
    pub aws_offset: AwsOffset,
    /// The per-device counts (issue 16).
    pub devices: Devices,
    /// The systemd watchdog's stages and limits: `/health` applies the same rule.
    pub stages: Vec<Stage>,
}

/// The file written beside `textfile` and renamed over it: not `*.prom`, so
/// node_exporter never reads it half-written.
pub fn textfile_temporary(textfile: &Path) -> PathBuf {
    let mut name = textfile.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

/// Starts the metrics thread if `config` asks for anything; it stops at shutdown.
pub fn start(
    config: MetricsConfig,
    sources: Sources,
    shutdown: Shutdown,
) -> std::io::Result<Option<JoinHandle<()>>> {
    if !config.is_enabled() {
        return Ok(None);
    }
    let handle = std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || run(config, sources, shutdown))?;
    Ok(Some(handle))
}

fn run(config: MetricsConfig, sources: Sources, shutdown: Shutdown) {
    let scraper = Scraper {
        sources,
        reader: std::cell::RefCell::new(None),
    };
    let answer = |route: Route| scraper.answer(route);
    let server = async {
        match config.listen {
            Some(address) => http::serve(address, &answer).await,
            None => future_pending().await,
        }
    };
    let textfile = async {
        match &config.textfile {
            Some(path) => keep_textfile(path, config.interval, &scraper).await,
            None => future_pending().await,
        }
    };
    // Woken by the request itself: no polling, no idle wake-ups.
    let stop = shutdown.wait();
    async_io::block_on(futures_lite::future::or(
        stop,
        futures_lite::future::or(server, textfile),
    ));
    log::debug!("metrics: stopped");
}

async fn future_pending() {
    futures_lite::future::pending::<()>().await
}

async fn keep_textfile(path: &Path, interval: Duration, scraper: &Scraper) {
    let mut n_failures: u32 = 0;
    loop {
        let text = scraper.exposition();
        match write_textfile(path, &text, scraper.sources.space.min_free_bytes()) {
            Ok(()) => {
                if n_failures > 0 {
                    log::info!("metrics: textfile {} written again", path.display());
                }
                n_failures = 0;
            }
            Err(error) => {
                n_failures += 1;
                if n_failures == 1 {
                    log::warn!(
                        "metrics: cannot write the textfile {}: {error}; trying again every {interval:?}",
                        path.display()
                    );
                }
            }
        }
        async_io::Timer::after(interval).await;
    }
}

/// Replaces `path` with `text` atomically: a new temporary file (a link
/// planted at its name is removed, never followed), mode 0644 whatever the
/// umask, then renamed over `path` (which replaces a link there rather than
/// writing through it). Not fsynced: it describes the moment. Not written
/// while it would take the room the spool's floor keeps.
fn write_textfile(path: &Path, text: &str, keep_free: u64) -> std::io::Result<()> {
    if !disk::leaves_room(path, 2 * text.len() as u64, keep_free) {
        return Err(std::io::Error::other(
            "its filesystem is below the spool's free-space floor",
        ));
    }
    let temporary = textfile_temporary(path);
    crate::files::replace(path, &temporary, text.as_bytes(), TEXTFILE_MODE)
}

/// A per-broker counter from the spool file: name, help, which field.
type SpoolCounter = (&'static str, &'static str, fn(&BrokerCounters) -> u64);

/// Reads the sources; lives on the metrics thread.
struct Scraper {
    sources: Sources,
    /// Opened at the first scrape, dropped after an error and opened again.
    reader: std::cell::RefCell<Option<SpoolReader>>,
}

impl Scraper {
    fn answer(&self, route: Route) -> Response {
        match route {
            Route::Metrics => Response {
                status: 200,
                content_type: CONTENT_TYPE,
                body: self.exposition(),
            },
            Route::Health => match watchdog::wedged(&self.sources.stages) {
                None => plain(
                    200,
                    "ok: the spool writer and the drain are making progress\n",
                ),
                Some((stage, busy)) => plain(
                    503,
                    format!("{stage} has been stuck for {}s\n", busy.as_secs()),
                ),
            },
            Route::NotFound => plain(404, "not found: try /metrics or /health\n"),
        }
    }

    /// What the spool file says: per-broker counters and the oldest record's time.
    fn read_spool(&self) -> Option<(Vec<BrokerCounters>, Option<i64>)> {
        let mut reader = self.reader.borrow_mut();
        if reader.is_none() {
            *reader = SpoolReader::open(&self.sources.spool_path).ok();
        }
        let read = reader.as_ref().map(|reader| {
            let counters = reader.counters()?;
            Ok::<_, crate::spool::SpoolError>((counters, reader.oldest_received_at_ms()?))
        })?;
        match read {
            Ok(read) => Some(read),
            Err(error) => {
                log::debug!("metrics: cannot read the spool: {error}");
                *reader = None;
                None
            }
        }
    }

    fn exposition(&self) -> String {
        let sources = &self.sources;
        let now_ms = unix_ms();
        let mut out = Exposition::default();
        let spool = self.read_spool();

        out.family(
            "build_info",
            Kind::Gauge,
            "Always 1; the version in a label.",
        );
        out.sample("build_info", &[("version", env!("CARGO_PKG_VERSION"))], 1.0);

        // Per broker: only brokers in the catalog now (the board's entries),
        // so a removed broker's series end with it.
        let board = sources.board.snapshot();
        let ids: Vec<String> = board.keys().map(|id| id.to_string()).collect();
        let per_broker = |out: &mut Exposition,
                          name: &str,
                          kind: Kind,
                          help: &str,
                          value: &dyn Fn(usize) -> Option<f64>| {
            out.family(name, kind, help);
            for (broker_idx, id) in ids.iter().enumerate() {
                if let Some(value) = value(broker_idx) {
                    out.sample(name, &[("broker_id", id)], value);
                }
            }
        };
        let statuses: Vec<_> = board.values().collect();
        let bit = |b: bool| if b { 1.0 } else { 0.0 };
        per_broker(
            &mut out,
            "broker_connected",
            Kind::Gauge,
            "1 while the broker's session is connected, else 0.",
            &|i| Some(bit(statuses[i].connected)),
        );
        per_broker(
            &mut out,
            "broker_endpoint_index",
            Kind::Gauge,
            "The endpoint connected to or being tried: 0 the primary, 1.. the failovers.",
            &|i| Some(statuses[i].endpoint_index as f64),
        );
        per_broker(
            &mut out,
            "broker_wedged",
            Kind::Gauge,
            "1 while every connection to the broker dies on the same unreadable message.",
            &|i| Some(bit(statuses[i].wedged_since.is_some())),
        );
        per_broker(
            &mut out,
            "messages_received_total",
            Kind::Counter,
            "Messages handed to the spool since the gateway started (or the broker joined the catalog).",
            &|i| Some(statuses[i].n_received as f64),
        );
        per_broker(
            &mut out,
            "messages_lost_total",
            Kind::Counter,
            "Messages received while the spool was closed (lost) since the gateway started.",
            &|i| Some(statuses[i].n_lost as f64),
        );
        // Each broker's counters from the spool (zero before its first record);
        // none at all when the spool could not be read.
        let counters: Vec<Option<BrokerCounters>> = board
            .keys()
            .map(|id| {
                let (all, _) = spool.as_ref()?;
                Some(
                    all.iter()
                        .find(|c| c.broker_id == *id)
                        .cloned()
                        .unwrap_or_default(),
                )
            })
            .collect();
        let spool_counters: [SpoolCounter; 5] = [
            (
                "records_spooled_total",
                "Records committed to the spool, since the spool file was created.",
                |c| c.spooled,
            ),
            (
                "records_delivered_total",
                "Records Kinesis accepted, since the spool file was created.",
                |c| c.delivered,
            ),
            (
                "records_retried_total",
                "Record sends Kinesis asked to retry, since the spool file was created.",
                |c| c.retried,
            ),
            (
                "records_dropped_total",
                "Records deleted by the drop_oldest overflow policy, since the spool file was created.",
                |c| c.dropped,
            ),
            (
                "records_dead_lettered_total",
                "Records moved to dead letters, since the spool file was created.",
                |c| c.dead_lettered,
            ),
        ];
        for (name, help, field) in spool_counters {
            per_broker(&mut out, name, Kind::Counter, help, &|i| {
                counters[i].as_ref().map(|c| field(c) as f64)
            });
        }

        let gauge = |out: &mut Exposition, name: &str, help: &str, value: f64| {
            out.family(name, Kind::Gauge, help);
            out.sample(name, &[], value);
        };
        gauge(
            &mut out,
            "spool_records",
            "Records waiting in the spool.",
            sources.depth.n_records() as f64,
        );
        gauge(
            &mut out,
            "spool_bytes",
            "Bytes of the records waiting in the spool (as spool.max_bytes counts them).",
            sources.depth.bytes() as f64,
        );
        if let Some((_, oldest)) = &spool {
            let age = oldest.map_or(0.0, |at| (now_ms - at).max(0) as f64 / 1000.0);
            gauge(
                &mut out,
                "spool_oldest_record_age_seconds",
                "Age of the oldest waiting record; 0 when none waits.",
                age,
            );
        }
        gauge(
            &mut out,
            "spool_max_bytes",
            "spool.max_bytes: the bound of spool_bytes.",
            sources.spool_max_bytes as f64,
        );
        out.family(
            "spool_commits_total",
            Kind::Counter,
            "Spool transactions committed (one fsync each) since the gateway started.",
        );
        out.sample("spool_commits_total", &[], sources.depth.n_commits() as f64);
        out.histogram(
            "spool_commit_duration_seconds",
            "How long each spool commit took, fsync included.",
            &sources.depth.commit_durations().fold(),
        );
        let space = &sources.space;
        gauge(
            &mut out,
            "spool_filesystem_free_bytes",
            "Free bytes on the spool's filesystem, as the writer last measured.",
            space.fs_free() as f64,
        );
        gauge(
            &mut out,
            "spool_filesystem_size_bytes",
            "Size of the spool's filesystem.",
            space.fs_total() as f64,
        );
        gauge(
            &mut out,
            "spool_min_free_bytes",
            "spool.min_free_bytes in force: appends pause below it.",
            space.min_free_bytes() as f64,
        );
        gauge(
            &mut out,
            "spool_appends_paused",
            "1 while appends wait for room on the spool's filesystem.",
            bit(space.appends_paused()),
        );

        let drain = &sources.drain;
        out.family(
            "kinesis_requests_total",
            Kind::Counter,
            "PutRecords requests by outcome: ok (answered 2xx), throttled, error (any other answer), network (no answer).",
        );
        for outcome in RequestOutcome::ALL {
            out.sample(
                "kinesis_requests_total",
                &[("outcome", outcome.label())],
                drain.requests(outcome) as f64,
            );
        }
        out.family(
            "kinesis_failed_records_total",
            Kind::Counter,
            "Records Kinesis refused inside answered requests, by error code (retried or dead-lettered).",
        );
        for (code, n) in drain.failed_records() {
            out.sample(
                "kinesis_failed_records_total",
                &[("error_code", code)],
                n as f64,
            );
        }
        let stored = drain.stored();
        out.family(
            "kinesis_records_stored_total",
            Kind::Counter,
            "Kinesis records the stream accepted since start; with KPL aggregation each carries many messages.",
        );
        out.sample(
            "kinesis_records_stored_total",
            &[],
            stored.kinesis_records as f64,
        );
        out.family(
            "kinesis_messages_stored_total",
            Kind::Counter,
            "Messages (spool records) those Kinesis records carried, since start.",
        );
        out.sample("kinesis_messages_stored_total", &[], stored.messages as f64);
        out.histogram(
            "kinesis_request_duration_seconds",
            "How long each PutRecords request took, connect to last byte.",
            &drain.request_durations().fold(),
        );
        gauge(
            &mut out,
            "clock_offset_seconds",
            "AWS's clock minus the gateway's, as the answers' Date said (0 until known).",
            sources.aws_offset.get() as f64 / 1000.0,
        );

        let devices = sources.devices.counts();
        gauge(
            &mut out,
            "devices_tracked",
            "(broker, device) pairs counted in memory for iot_data.mqtt_device_seen; at most devices.max_tracked.",
            devices.n_tracked as f64,
        );
        for (name, help, value) in [
            (
                "devices_untracked_messages_total",
                "Messages of devices beyond devices.max_tracked (not in iot_data.mqtt_device_seen) since the gateway started.",
                devices.n_untracked_messages,
            ),
            (
                "devices_id_too_long_messages_total",
                "Messages whose device_id_level named a level too long for a device id since the gateway started.",
                devices.n_too_long,
            ),
        ] {
            out.family(name, Kind::Counter, help);
            out.sample(name, &[], value as f64);
        }

        let catalog = &sources.catalog;
        out.family(
            "catalog_source",
            Kind::Gauge,
            "1 for where the running catalog came from: database or snapshot (both 0 before the first).",
        );
        let source = catalog.source();
        for labelled in Source::LABELLED {
            out.sample(
                "catalog_source",
                &[("source", labelled.label())],
                bit(source == labelled),
            );
        }
        gauge(
            &mut out,
            "catalog_database_up",
            "1 when the last read of the database succeeded, else 0.",
            bit(catalog.database_up()),
        );
        if let Some(taken_at) = catalog.snapshot_taken_at_ms() {
            gauge(
                &mut out,
                "catalog_snapshot_age_seconds",
                "Age of the catalog the snapshot holds (it is rewritten only when the catalog changes).",
                (now_ms - taken_at).max(0) as f64 / 1000.0,
            );
        }
        out.into_text()
    }
}

#[cfg(test)]
mod tests;
