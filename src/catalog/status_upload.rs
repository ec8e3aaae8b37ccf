//! The other direction: this gateway's session status → `iot_data.mqtt_connection_status`.
//!
//! Runs on the catalog thread, over its database connection (one connection
//! per gateway, not two). Rows are rewritten when a session's state changes
//! (connected, endpoint, error, subscriptions; at most once a second) and at
//! least every `interval` for the counters. While the database is unreachable
//! nothing is written; the first write after it returns catches up, since
//! every write carries every broker's current state.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::postgres::{self, StatusRow};
use super::BrokerId;
use crate::clock::AwsOffset;
use crate::devices::Devices;
use crate::status::{SessionStatus, StatusBoard};

/// What to upload and how often.
#[derive(Clone)]
pub struct StatusUpload {
    pub board: StatusBoard,
    pub gateway_id: String,
    pub interval: Duration,
    /// The drain's view of the clock, for the `clock_offset_ms` column.
    pub aws_offset: AwsOffset,
    /// The sessions' per-device counts, for `iot_data.mqtt_device_seen`
    /// (written at the same `interval`).
    pub devices: Devices,
}

/// Changes that are worth a write of their own (counters wait for the
/// interval): per broker, and the clock offset in steps of half a minute
/// (the Date header's second of jitter is no change).
#[derive(PartialEq)]
struct Fingerprint {
    brokers: BTreeMap<BrokerId, (bool, Option<String>, Option<String>, usize)>,
    clock_offset_step: i64,
}

const MIN_SPACING: Duration = Duration::from_secs(1);

pub(super) struct Uploader {
    upload: StatusUpload,
    /// What the last successful write held.
    written: Option<Fingerprint>,
    last_write: Option<Instant>,
    /// The last failure, logged once until a write succeeds or the error changes.
    failing: Option<String>,
}

impl Uploader {
    pub(super) fn new(upload: StatusUpload) -> Uploader {
        Uploader {
            upload,
            written: None,
            last_write: None,
            failing: None,
        }
    }

    /// Writes the status if it changed or the interval passed.
    pub(super) fn upload_if_due(&mut self, client: &mut ::postgres::Client) {
        let statuses = self.upload.board.snapshot();
        let clock_offset_ms = self.upload.aws_offset.get();
        let fingerprint = Fingerprint {
            brokers: fingerprint(&statuses),
            clock_offset_step: (clock_offset_ms + 15_000).div_euclid(30_000),
        };
        let since_last = self.last_write.map(|at| at.elapsed());
        let due = match since_last {
            None => true,
            Some(elapsed) if elapsed >= self.upload.interval => true,
            Some(elapsed) => self.written.as_ref() != Some(&fingerprint) && elapsed >= MIN_SPACING,
        };
        if !due {
            return;
        }
        // Counted from the attempt: a failing table is retried at the interval, not in a loop.
        self.last_write = Some(Instant::now());
        let rows: Vec<StatusRow> = statuses
            .iter()
            .map(|(id, status)| row(*id, status))
            .collect();
        match postgres::write_status(client, &self.upload.gateway_id, &rows, clock_offset_ms) {
            Ok(()) => {
                if self.failing.take().is_some() {
                    log::info!("status: iot_data.mqtt_connection_status written again");
                }
                self.written = Some(fingerprint);
            }
            Err(error) => {
                let message = error.to_string();
                if self.failing.as_ref() != Some(&message) {
                    log::warn!(
                        "status: cannot write iot_data.mqtt_connection_status ({message}); retrying every {:?}",
                        self.upload.interval
                    );
                }
                self.failing = Some(message);
                self.written = None;
            }
        }
    }
}

fn fingerprint(
    statuses: &BTreeMap<BrokerId, SessionStatus>,
) -> BTreeMap<BrokerId, (bool, Option<String>, Option<String>, usize)> {
    statuses
        .iter()
        .map(|(id, s)| {
            (
                *id,
                (
                    s.connected,
                    s.endpoint.clone(),
                    s.last_error.clone(),
                    s.n_subscribed,
                ),
            )
        })
        .collect()
}

fn row(id: BrokerId, status: &SessionStatus) -> StatusRow {
    StatusRow {
        mqtt_id: id,
        connected: status.connected,
        endpoint: status.endpoint.clone(),
        endpoint_index: status.endpoint_index as i64 + 1,
        endpoint_count: status.n_endpoints as i64,
        since: status.since,
        last_error: status.last_error.clone(),
        messages_received: status.n_received as i64,
        last_message_at: status.last_message_at,
        subscribed_topics: status.n_subscribed as i64,
    }
}
