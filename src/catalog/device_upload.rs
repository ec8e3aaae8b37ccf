//! This gateway's per-device counts → `iot_data.mqtt_device_seen` (issue 16).
//!
//! Runs on the catalog thread beside the status upload, over the same
//! connection, every `status.report_interval`. Only what changed since the
//! last successful write is sent ([`Devices::take_deltas`]): messages are
//! added to the row's count and `last_seen_at` only moves forward, so a
//! write that fails (database away, table missing) is put back and the next
//! successful one catches up. Rows go in multi-row statements
//! ([`DEVICE_ROWS_PER_STATEMENT`] each, arrays through `unnest`), all in one
//! transaction. The sessions never wait for any of it.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::postgres::{self, DeviceWrite};
use crate::devices::{DeviceDelta, Devices};

/// Rows per INSERT: a few hundred kB of parameters, one round trip each.
pub const DEVICE_ROWS_PER_STATEMENT: usize = 1000;

/// One statement's rows, column by column (`unnest` takes one array per column).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DeviceColumns {
    pub mqtt_ids: Vec<i32>,
    pub device_ids: Vec<String>,
    pub first_seen_at: Vec<SystemTime>,
    pub last_seen_at: Vec<SystemTime>,
    pub messages: Vec<i64>,
}

/// Pure: the deltas as statements of at most `rows_per_statement` rows, and
/// how many were left out because their broker id does not fit the table's
/// integer column.
pub fn statements(
    deltas: &[DeviceDelta],
    rows_per_statement: usize,
) -> (Vec<DeviceColumns>, usize) {
    let mut statements: Vec<DeviceColumns> = Vec::new();
    let mut n_wide = 0;
    for delta in deltas {
        let Ok(mqtt_id) = i32::try_from(delta.broker_id) else {
            n_wide += 1;
            continue;
        };
        if statements
            .last()
            .is_none_or(|columns| columns.mqtt_ids.len() >= rows_per_statement)
        {
            statements.push(DeviceColumns::default());
        }
        let Some(columns) = statements.last_mut() else {
            continue;
        };
        columns.mqtt_ids.push(mqtt_id);
        columns.device_ids.push(delta.device_id.clone());
        columns.first_seen_at.push(time(delta.first_seen_ms));
        columns.last_seen_at.push(time(delta.last_seen_ms));
        columns.messages.push(i64::from(delta.messages));
    }
    (statements, n_wide)
}

fn time(unix_ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(unix_ms.max(0) as u64)
}

pub(super) struct DeviceUploader {
    devices: Devices,
    gateway_id: String,
    interval: Duration,
    last_attempt: Option<Instant>,
    /// The last failure, said once until a write succeeds or the error changes.
    failing: Option<String>,
    /// The table was missing at the last attempt (said once).
    table_missing: bool,
    /// A broker id too wide for the table was said.
    warned_wide: bool,
}

impl DeviceUploader {
    pub(super) fn new(devices: Devices, gateway_id: String, interval: Duration) -> DeviceUploader {
        DeviceUploader {
            devices,
            gateway_id,
            interval,
            last_attempt: None,
            failing: None,
            table_missing: false,
            warned_wide: false,
        }
    }

    /// Writes what changed since the last write, once per interval.
    pub(super) fn upload_if_due(&mut self, client: &mut ::postgres::Client) {
        if self
            .last_attempt
            .is_some_and(|at| at.elapsed() < self.interval)
        {
            return;
        }
        self.upload(client);
    }

    /// Writes what changed since the last write, now (at shutdown too).
    pub(super) fn upload(&mut self, client: &mut ::postgres::Client) {
        // Counted from the attempt: a failing table is retried at the interval.
        self.last_attempt = Some(Instant::now());
        let deltas = self.devices.take_deltas();
        if deltas.is_empty() {
            return;
        }
        let (statements, n_wide) = statements(&deltas, DEVICE_ROWS_PER_STATEMENT);
        if n_wide > 0 && !self.warned_wide {
            log::warn!("devices: {n_wide} devices of brokers whose mqtt_id does not fit iot_data.mqtt_device_seen's integer column have no row there");
            self.warned_wide = true;
        }
        match postgres::write_devices(client, &self.gateway_id, &statements) {
            Ok(DeviceWrite::Written) => {
                if self.failing.take().is_some() || self.table_missing {
                    log::info!(
                        "devices: iot_data.mqtt_device_seen written again ({} devices caught up)",
                        deltas.len()
                    );
                }
                self.table_missing = false;
            }
            Ok(DeviceWrite::NoTable) => {
                self.devices.restore(&deltas);
                if !self.table_missing {
                    log::warn!(
                        "devices: no iot_data.mqtt_device_seen table: the counts of {} devices wait in memory; retrying every {:?} (buffer-schema/catalog/0007_devices.sql creates it)",
                        deltas.len(),
                        self.interval
                    );
                    self.table_missing = true;
                }
            }
            Err(error) => {
                self.devices.restore(&deltas);
                let message = error.to_string();
                if self.failing.as_ref() != Some(&message) {
                    log::warn!(
                        "devices: cannot write iot_data.mqtt_device_seen ({message}); the counts wait in memory, retrying every {:?}",
                        self.interval
                    );
                }
                self.failing = Some(message);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delta(broker_id: i64, n: usize) -> DeviceDelta {
        DeviceDelta {
            broker_id,
            device_id: format!("d{n}"),
            first_seen_ms: 1_000,
            last_seen_ms: 2_500,
            messages: 3,
        }
    }

    #[test]
    fn deltas_go_in_statements_of_bounded_rows() {
        assert!(statements(&[], 1000).0.is_empty());
        let deltas: Vec<DeviceDelta> = (0..2500).map(|n| delta(7, n)).collect();
        let (batches, n_wide) = statements(&deltas, 1000);
        assert_eq!(n_wide, 0);
        let sizes: Vec<usize> = batches.iter().map(|b| b.mqtt_ids.len()).collect();
        assert_eq!(sizes, [1000, 1000, 500]);
        for batch in &batches {
            let n = batch.mqtt_ids.len();
            assert_eq!(
                [
                    batch.device_ids.len(),
                    batch.first_seen_at.len(),
                    batch.last_seen_at.len(),
                    batch.messages.len()
                ],
                [n; 4]
            );
        }
        assert_eq!(
            batches[2].device_ids.last().map(String::as_str),
            Some("d2499")
        );
        assert_eq!(
            batches[0].first_seen_at[0],
            UNIX_EPOCH + Duration::from_millis(1_000)
        );
        assert_eq!(
            batches[0].last_seen_at[0],
            UNIX_EPOCH + Duration::from_millis(2_500)
        );
        assert_eq!(batches[0].messages[0], 3);
    }

    #[test]
    fn ids_too_wide_for_the_table_are_left_out_and_counted() {
        let deltas = [delta(7, 1), delta(1 << 40, 2), delta(8, 3)];
        let (batches, n_wide) = statements(&deltas, 1000);
        assert_eq!(n_wide, 1);
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].mqtt_ids, [7, 8]);
    }
}
