//! Devices (issue 16): which device a message came from, and when each device
//! was last seen.
//!
//! A topic row may name the level of the topic that holds the device id
//! (`device_id_level`, 1 = the first level). The sessions ask
//! [`filter_matches`] and [`device_id_at`] on receipt (pure, no allocation) and
//! count each message into [`Devices`]: per (broker, device) the first and
//! last time seen and the messages since the last write. The catalog thread
//! takes the counts every `status.report_interval` ([`Devices::take_deltas`])
//! and upserts them into `iot_data.mqtt_device_seen`; a failed write puts
//! them back ([`Devices::restore`]), so the next successful one catches up.
//!
//! Memory is bounded by `devices.max_tracked`: further devices are not
//! tracked, their messages only counted (`untracked`), said once.
//! Not here: the database (the catalog's `device_upload`), the partition key
//! (`sessions::partition_key`), the envelope (the drain).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::ids::{BrokerId, DeviceId, MAX_DEVICE_ID_BYTES};

/// The highest `device_id_level` (the catalog's CHECK says the same).
pub const MAX_LEVEL: u8 = 32;

/// What level `level` (1-based) of `topic` says about the device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Extracted {
    Device(DeviceId),
    /// The topic has fewer levels, or that level is empty.
    Absent,
    /// Longer than `MAX_DEVICE_ID_BYTES`: no device id (counted, said once).
    TooLong,
}

/// The device id at `level` (1 = the first level) of `topic`, split on '/'.
pub fn device_id_at(topic: &str, level: u8) -> Extracted {
    let Some(text) = topic.split('/').nth(usize::from(level).wrapping_sub(1)) else {
        return Extracted::Absent;
    };
    // PostgreSQL's text cannot hold NUL: such an id could never be written.
    if text.is_empty() || text.contains('\0') {
        return Extracted::Absent;
    }
    match DeviceId::try_from(text) {
        Ok(id) => Extracted::Device(id),
        Err(_) => Extracted::TooLong,
    }
}

/// MQTT 3.1.1 §4.7 matching of a received topic name against a subscription
/// filter (`$share/{group}/` is not part of the filter); wildcards at the
/// first level do not match topics starting with `$`.
pub fn filter_matches(filter: &str, topic: &str) -> bool {
    let filter = match filter.strip_prefix("$share/") {
        Some(rest) => rest.split_once('/').map_or(rest, |(_, filter)| filter),
        None => filter,
    };
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut topic_levels = topic.split('/');
    for filter_level in filter.split('/') {
        if filter_level == "#" {
            return true;
        }
        match topic_levels.next() {
            Some(_) if filter_level == "+" => {}
            Some(level) if level == filter_level => {}
            _ => return false,
        }
    }
    topic_levels.next().is_none()
}

/// One (broker, device) in memory: 24 bytes beside its key.
#[derive(Clone, Copy, Debug)]
struct Seen {
    first_seen_ms: i64,
    last_seen_ms: i64,
    /// Messages since the last successful write.
    pending: u32,
}

/// What one device did since the last successful write: one upserted row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceDelta {
    pub broker_id: BrokerId,
    pub device_id: String,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub messages: u32,
}

/// The tracker's counters, for the status file and the metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceCounts {
    /// Devices held in memory (at most `devices.max_tracked`).
    pub n_tracked: u64,
    /// Messages of devices beyond the bound, since the start.
    pub n_untracked_messages: u64,
    /// Messages whose device level was longer than `MAX_DEVICE_ID_BYTES`.
    pub n_too_long: u64,
}

#[derive(Debug, Default)]
struct Tracker {
    max_tracked: usize,
    /// Keyed per broker first, so a lookup needs no owned key (`&str` finds a `Box<str>`).
    by_broker: HashMap<BrokerId, HashMap<Box<str>, Seen>>,
    counts: DeviceCounts,
}

/// The per-device counts shared by the sessions (one short lock per
/// message, never across an await) and the catalog thread (one lock per
/// write interval). Cloning shares them.
#[derive(Clone, Debug, Default)]
pub struct Devices {
    tracker: Arc<Mutex<Tracker>>,
}

impl Devices {
    /// Tracks at most `max_tracked` (broker, device) pairs.
    pub fn new(max_tracked: usize) -> Devices {
        Devices {
            tracker: Arc::new(Mutex::new(Tracker {
                max_tracked,
                ..Tracker::default()
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tracker> {
        // The data stays consistent across a panic (plain counters).
        self.tracker.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One message from `device_id` on broker `broker_id`, received at `at_ms`.
    pub fn seen(&self, broker_id: BrokerId, device_id: &str, at_ms: i64) {
        let mut tracker = self.lock();
        let tracker = &mut *tracker;
        let devices = tracker.by_broker.entry(broker_id).or_default();
        if let Some(seen) = devices.get_mut(device_id) {
            seen.last_seen_ms = seen.last_seen_ms.max(at_ms);
            seen.pending = seen.pending.saturating_add(1);
            return;
        }
        if tracker.counts.n_tracked >= tracker.max_tracked as u64 {
            tracker.counts.n_untracked_messages += 1;
            if tracker.counts.n_untracked_messages == 1 {
                log::warn!(
                    "devices: {} devices tracked, the bound (devices.max_tracked): messages of further devices (first: broker {broker_id} device {:?}) are counted as untracked only, without a row in iot_data.mqtt_device_seen",
                    tracker.counts.n_tracked,
                    device_id
                );
            }
            return;
        }
        tracker.counts.n_tracked += 1;
        devices.insert(
            device_id.into(),
            Seen {
                first_seen_ms: at_ms,
                last_seen_ms: at_ms,
                pending: 1,
            },
        );
    }

    /// A message whose device level was too long to be an id; said once.
    pub fn too_long(&self, broker_id: BrokerId, topic: &str) {
        let mut tracker = self.lock();
        tracker.counts.n_too_long += 1;
        if tracker.counts.n_too_long == 1 {
            log::warn!(
                "devices: broker {broker_id}: topic {:?}: the level device_id_level names is longer than {MAX_DEVICE_ID_BYTES} bytes: no device id (the topic is the partition key); further such messages are counted only",
                topic.chars().take(100).collect::<String>()
            );
        }
    }

    /// Every device heard since the last call, its pending count reset.
    pub fn take_deltas(&self) -> Vec<DeviceDelta> {
        let mut tracker = self.lock();
        let mut deltas = Vec::new();
        for (broker_id, devices) in tracker.by_broker.iter_mut() {
            for (device_id, seen) in devices.iter_mut().filter(|(_, s)| s.pending > 0) {
                deltas.push(DeviceDelta {
                    broker_id: *broker_id,
                    device_id: device_id.to_string(),
                    first_seen_ms: seen.first_seen_ms,
                    last_seen_ms: seen.last_seen_ms,
                    messages: std::mem::take(&mut seen.pending),
                });
            }
        }
        deltas
    }

    /// Puts back what a failed write took, so the next write sends it.
    pub fn restore(&self, deltas: &[DeviceDelta]) {
        let mut tracker = self.lock();
        for delta in deltas {
            if let Some(seen) = tracker
                .by_broker
                .get_mut(&delta.broker_id)
                .and_then(|devices| devices.get_mut(delta.device_id.as_str()))
            {
                seen.pending = seen.pending.saturating_add(delta.messages);
            }
        }
    }

    pub fn counts(&self) -> DeviceCounts {
        self.lock().counts
    }
}

#[cfg(test)]
mod tests;
