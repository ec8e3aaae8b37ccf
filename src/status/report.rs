//! `mqtt-kinesis-bridge status`: the gateway's state, for people and scripts.
//!
//! Two sources, both readable while the gateway runs: the spool file (depth,
//! oldest record, per-broker spooled/delivered/dropped/dead-lettered counters;
//! read-only connection, never blocks the writer) and the status file the
//! running gateway keeps ([`super::file`], a [`StatusDocument`]: per-broker
//! connection state, endpoint, last error, drain rate). A status file older than three rewrite
//! periods means the gateway is not running, and the report says so.
//! The spool's filesystem is measured here (statvfs); whether appends are
//! paused for room, and the floor in force, come from the status file.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use serde_json::{json, Value};

use super::document::{BrokerLine, DiskLine, StatusDocument};
use super::file::REWRITE_EVERY;
use crate::disk::{self, describe_bytes, Filesystem};
use crate::spool::{BrokerCounters, SpoolError, SpoolReader, SpoolSummary};

/// The report on the spool at `spool_path` and the status file at
/// `status_file`, as text (`json = false`) or one JSON object.
pub fn report(
    spool_path: &Path,
    status_file: &Path,
    now_ms: i64,
    json: bool,
) -> Result<String, SpoolError> {
    let reader = SpoolReader::open(spool_path)?;
    let summary = reader.summary()?;
    let counters = reader.counters()?;
    let spool_free = reader.free_page_bytes().unwrap_or(0);
    let live = Live::read(status_file, now_ms);
    let report = Report {
        spool_path,
        now_ms,
        summary: &summary,
        counters: &counters,
        live: &live,
        filesystem: disk::filesystem(spool_path).ok(),
        spool_free,
    };
    Ok(if json {
        report.as_json()
    } else {
        report.as_text()
    })
}

/// What the status file says, if anything current.
struct Live {
    /// `None`: no file, or it cannot be read.
    document: Option<StatusDocument>,
    /// Written recently by a gateway that had not stopped.
    running: bool,
}

impl Live {
    fn read(path: &Path, now_ms: i64) -> Live {
        let document: Option<StatusDocument> = std::fs::read(path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok());
        let running = document.as_ref().is_some_and(|document| {
            let fresh = now_ms - document.written_at_ms < 3 * REWRITE_EVERY.as_millis() as i64;
            fresh && document.running
        });
        Live { document, running }
    }

    /// The document, only while the gateway runs (stale values would mislead).
    fn current(&self) -> Option<&StatusDocument> {
        self.document.as_ref().filter(|_| self.running)
    }

    /// Per-broker lines, only while the gateway runs.
    fn brokers(&self) -> BTreeMap<i64, &BrokerLine> {
        self.current()
            .map(|document| document.brokers.iter().map(|b| (b.broker_id, b)).collect())
            .unwrap_or_default()
    }

    fn written_at_ms(&self) -> Option<i64> {
        Some(self.document.as_ref()?.written_at_ms)
    }

    /// The running gateway's word on the spool's filesystem.
    fn disk(&self) -> Option<DiskLine> {
        self.current()?.disk
    }
}

struct Report<'a> {
    spool_path: &'a Path,
    now_ms: i64,
    summary: &'a SpoolSummary,
    counters: &'a [BrokerCounters],
    live: &'a Live,
    /// The spool's filesystem now; `None` when it cannot be read.
    filesystem: Option<Filesystem>,
    /// Bytes of free pages in the spool file.
    spool_free: u64,
}

impl Report<'_> {
    fn oldest_age_s(&self) -> Option<i64> {
        self.summary
            .oldest_received_at_ms
            .map(|oldest| (self.now_ms - oldest).max(0) / 1000)
    }

    /// Every broker either source knows, sorted by id.
    fn broker_ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self.counters.iter().map(|c| c.broker_id).collect();
        ids.extend(self.live.brokers().keys());
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    fn counters_of(&self, id: i64) -> BrokerCounters {
        self.counters
            .iter()
            .find(|c| c.broker_id == id)
            .cloned()
            .unwrap_or(BrokerCounters {
                broker_id: id,
                ..BrokerCounters::default()
            })
    }

    /// `disk` in `--json`: measured now, with the running gateway's floor and pause.
    fn disk_json(&self) -> Value {
        let disk = self.live.disk();
        json!({
            "free_bytes": self.filesystem.map(|fs| fs.free_bytes),
            "total_bytes": self.filesystem.map(|fs| fs.total_bytes),
            "spool_free_page_bytes": self.spool_free,
            "min_free_bytes": disk.map(|d| d.min_free_bytes),
            "appends_paused": disk.map(|d| d.appends_paused),
            "reserve_in_place": disk.map(|d| d.reserve_in_place),
        })
    }

    /// The `disk:` line of the text report.
    fn disk_text(&self) -> String {
        let mut line = match self.filesystem {
            Some(fs) => format!(
                "{} free of {}",
                describe_bytes(fs.free_bytes),
                describe_bytes(fs.total_bytes)
            ),
            None => "free space unknown".to_owned(),
        };
        let _ = write!(
            line,
            ", {} reusable in the spool",
            describe_bytes(self.spool_free)
        );
        if let Some(disk) = self.live.disk() {
            let _ = write!(
                line,
                "; spool.min_free_bytes {}",
                describe_bytes(disk.min_free_bytes)
            );
            if disk.appends_paused {
                line.push_str("; APPENDS PAUSED for room (brokers keep what is not acknowledged)");
            } else {
                line.push_str("; appends running");
            }
            if !disk.reserve_in_place {
                line.push_str("; reserve released");
            }
        }
        line
    }

    fn as_json(&self) -> String {
        let live = self.live.brokers();
        let brokers: Vec<Value> = self
            .broker_ids()
            .into_iter()
            .map(|id| {
                let c = self.counters_of(id);
                let mut line = json!({
                    "broker_id": id, "spooled": c.spooled, "delivered": c.delivered,
                    "retried": c.retried, "dropped": c.dropped, "dead_lettered": c.dead_lettered,
                    "dead_evicted": c.dead_evicted,
                    "state": state(live.get(&id).copied(), self.live.running),
                });
                if let (Some(session), Some(line)) = (live.get(&id), line.as_object_mut()) {
                    let session = serde_json::to_value(session).unwrap_or_default();
                    for key in [
                        "connected",
                        "endpoint",
                        "endpoint_index",
                        "endpoint_count",
                        "since_ms",
                        "last_error",
                        "received",
                        "last_message_at_ms",
                        "subscribed_topics",
                        "wedged_since_ms",
                    ] {
                        line.insert(key.to_owned(), session[key].clone());
                    }
                }
                line
            })
            .collect();
        let total =
            |field: fn(&BrokerCounters) -> u64| self.counters.iter().map(field).sum::<u64>();
        let document = self.live.document.as_ref();
        let current = self.live.current();
        json!({
            "gateway": {
                "running": self.live.running,
                "pid": document.map(|d| d.pid),
                "status_written_at_ms": self.live.written_at_ms(),
                "drain_records_per_s": current.map(|d| d.drain_records_per_s),
                // AWS's clock minus the gateway's, as the drain last learned it.
                "clock_offset_ms": current.map(|d| d.clock_offset_ms),
                // Where the AWS credentials came from and when they expire (no secrets).
                "credentials": current.map(|d| d.credentials.clone()),
                "aggregation": current.map(|d| d.aggregation.clone()),
                // Since the gateway started: Kinesis records, and the messages they carried.
                "stored": current.map(|d| d.stored),
            },
            "spool": self.spool_path.display().to_string(),
            "total": {
                "spooled": total(|c| c.spooled), "delivered": total(|c| c.delivered),
                "retried": total(|c| c.retried), "dropped": total(|c| c.dropped),
                "dead_lettered": total(|c| c.dead_lettered),
                "dead_evicted": total(|c| c.dead_evicted),
            },
            "records_waiting": self.summary.n_records,
            "bytes_waiting": self.summary.bytes,
            "oldest_record_age_s": self.oldest_age_s(),
            "dead_letters": self.summary.n_dead_letters,
            "disk": self.disk_json(),
            "brokers": brokers,
        })
        .to_string()
    }

    fn as_text(&self) -> String {
        let mut out = String::new();
        let live = self.live.brokers();
        let gateway = match (self.live.running, self.live.written_at_ms()) {
            (true, _) => {
                let document = self.live.current();
                let rate = document
                    .and_then(|d| d.drain_records_per_s)
                    .map_or("-".to_owned(), |rate| format!("{rate}"));
                let pid = document.map_or("?".to_owned(), |d| d.pid.to_string());
                let clock = document
                    .map(|d| d.clock_offset_ms)
                    .filter(|offset| *offset != 0)
                    .map_or(String::new(), |offset| {
                        format!(
                            "; clock {} AWS (signing corrected)",
                            crate::clock::describe_offset(offset)
                        )
                    });
                let aggregation = document
                    .and_then(|d| d.aggregation.as_deref())
                    .map_or(String::new(), |words| format!("; {words}"));
                let stored = document
                    .and_then(|d| d.stored)
                    .map_or(String::new(), |stored| {
                        format!(
                            "; stored since start: {} messages in {} Kinesis records",
                            stored.messages, stored.kinesis_records
                        )
                    });
                format!("running (pid {pid}); drain {rate} records/s (average over up to a minute){aggregation}{stored}{clock}")
            }
            (false, Some(written_at)) => format!(
                "not running (status last written {} ago)",
                age((self.now_ms - written_at) / 1000)
            ),
            (false, None) => "not running (no status file)".to_owned(),
        };
        let oldest = self.oldest_age_s().map_or("-".to_owned(), age);
        let _ = writeln!(out, "gateway: {gateway}");
        if let Some(line) = self.credentials_line() {
            let _ = writeln!(out, "credentials: {line}");
        }
        let _ = writeln!(out, "spool {}", self.spool_path.display());
        let _ = writeln!(
            out,
            "waiting: {} records, {} bytes, oldest {oldest}; dead letters: {} ({} evicted to keep within spool.dead_letter_max_bytes)",
            self.summary.n_records,
            self.summary.bytes,
            self.summary.n_dead_letters,
            self.counters.iter().map(|c| c.dead_evicted).sum::<u64>()
        );
        let _ = writeln!(out, "disk: {}", self.disk_text());
        let _ = writeln!(
            out,
            "{:>6} {:<12} {:<24} {:>7} {:>9} {:>9} {:>9} {:>7} {:>5}  last error",
            "broker",
            "state",
            "endpoint",
            "since",
            "received",
            "spooled",
            "delivered",
            "dropped",
            "dead"
        );
        for id in self.broker_ids() {
            let c = self.counters_of(id);
            let session = live.get(&id).copied();
            let endpoint = session
                .and_then(|s| {
                    let endpoint = s.endpoint.as_deref()?;
                    Some(match s.endpoint_count {
                        n if n > 1 => format!("{endpoint} ({}/{n})", s.endpoint_index),
                        _ => endpoint.to_owned(),
                    })
                })
                .unwrap_or_else(|| "-".to_owned());
            let since = session.map_or("-".to_owned(), |s| age((self.now_ms - s.since_ms) / 1000));
            let received = session.map_or("-".to_owned(), |s| s.received.to_string());
            let last_error = session.and_then(|s| s.last_error.as_deref()).unwrap_or("-");
            let _ = writeln!(
                out,
                "{id:>6} {:<12} {endpoint:<24} {since:>7} {received:>9} {:>9} {:>9} {:>7} {:>5}  {last_error}",
                state(session, self.live.running),
                c.spooled,
                c.delivered,
                c.dropped,
                c.dead_lettered
            );
        }
        out
    }
}

impl Report<'_> {
    /// `iot credentials provider, role alias X, expires in 54m`, while the gateway runs.
    fn credentials_line(&self) -> Option<String> {
        let credentials = self.live.current()?.credentials.as_ref()?;
        let mut line = credentials.source.clone();
        if let Some(expires_at) = credentials.expires_at_ms {
            let left_ms = (expires_at - self.now_ms).max(0) as u64;
            line.push_str(&format!(
                ", expires in {}",
                crate::clock::describe_duration(std::time::Duration::from_millis(left_ms))
            ));
        }
        if !credentials.valid {
            line.push_str("; not valid: records wait");
        }
        if let Some(error) = &credentials.last_error {
            line.push_str(&format!("; last fetch failed: {error}"));
        }
        Some(line)
    }
}

/// A broker's state: [`BrokerLine::state`] while the gateway runs; `not
/// running` (gateway down); `inactive` (not in the catalog now).
fn state(session: Option<&BrokerLine>, running: bool) -> &'static str {
    match (session, running) {
        (_, false) => "not running",
        (None, true) => "inactive",
        (Some(session), true) => session.state(),
    }
}

/// `45s`, `12m`, `3h`, `2d`: an age in a narrow column.
fn age(seconds: i64) -> String {
    match seconds.max(0) {
        s @ 0..=119 => format!("{s}s"),
        s @ 120..=7199 => format!("{}m", s / 60),
        s @ 7200..=172_799 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}
