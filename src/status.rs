//! `mqtt-kinesis-bridge status`: what the spool says, for people and scripts.
//!
//! Reads the spool file through a read-only connection, so it works while the
//! gateway runs and never blocks its writer. It does not talk to brokers,
//! PostgreSQL or Kinesis; live session state is not in the spool (yet).

use std::fmt::Write;
use std::path::Path;

use serde_json::json;

use crate::spool::{BrokerCounters, SpoolError, SpoolReader, SpoolSummary};

/// The report on the spool at `path`, as text (`json = false`) or one JSON object.
pub fn report(path: &Path, now_ms: i64, json: bool) -> Result<String, SpoolError> {
    let reader = SpoolReader::open(path)?;
    let summary = reader.summary()?;
    let counters = reader.counters()?;
    Ok(if json {
        as_json(path, now_ms, &summary, &counters)
    } else {
        as_text(path, now_ms, &summary, &counters)
    })
}

fn oldest_age_s(now_ms: i64, summary: &SpoolSummary) -> Option<i64> {
    summary
        .oldest_received_at_ms
        .map(|oldest| (now_ms - oldest).max(0) / 1000)
}

fn as_json(
    path: &Path,
    now_ms: i64,
    summary: &SpoolSummary,
    counters: &[BrokerCounters],
) -> String {
    let brokers: Vec<_> = counters
        .iter()
        .map(|c| {
            json!({
                "broker_id": c.broker_id, "spooled": c.spooled, "delivered": c.delivered,
                "retried": c.retried, "dropped": c.dropped, "dead_lettered": c.dead_lettered,
            })
        })
        .collect();
    let total = |field: fn(&BrokerCounters) -> u64| counters.iter().map(field).sum::<u64>();
    json!({
        "spool": path.display().to_string(),
        "total": {
            "spooled": total(|c| c.spooled), "delivered": total(|c| c.delivered),
            "retried": total(|c| c.retried), "dropped": total(|c| c.dropped),
            "dead_lettered": total(|c| c.dead_lettered),
        },
        "records_waiting": summary.n_records,
        "bytes_waiting": summary.bytes,
        "oldest_record_age_s": oldest_age_s(now_ms, summary),
        "dead_letters": summary.n_dead_letters,
        "brokers": brokers,
    })
    .to_string()
}

fn as_text(
    path: &Path,
    now_ms: i64,
    summary: &SpoolSummary,
    counters: &[BrokerCounters],
) -> String {
    let mut out = String::new();
    let oldest = oldest_age_s(now_ms, summary).map_or("-".to_owned(), |s| format!("{s}s"));
    let _ = writeln!(out, "spool {}", path.display());
    let _ = writeln!(
        out,
        "waiting: {} records, {} bytes, oldest {oldest}; dead letters: {}",
        summary.n_records, summary.bytes, summary.n_dead_letters
    );
    let _ = writeln!(
        out,
        "{:>8} {:>10} {:>10} {:>8} {:>8} {:>6}",
        "broker", "spooled", "delivered", "retried", "dropped", "dead"
    );
    for c in counters {
        let _ = writeln!(
            out,
            "{:>8} {:>10} {:>10} {:>8} {:>8} {:>6}",
            c.broker_id, c.spooled, c.delivered, c.retried, c.dropped, c.dead_lettered
        );
    }
    out
}
