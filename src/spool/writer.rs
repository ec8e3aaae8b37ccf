//! The single writer thread: group commit of appends and settlements.
//!
//! It blocks for the first command, then takes whatever else is already queued
//! (up to [`MAX_GROUP`] appends) and commits it all in one transaction: one
//! fsync per group, not per message. Only after the commit does it tell the
//! senders (their [`CommitReceipt`](super::CommitReceipt)s resolve), so a
//! caller that waits for its receipt knows the record is on disk.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_lite::FutureExt;
use rusqlite::{params, Connection, Transaction};

use super::{sqlite_error, CommitReceipt, CommitSignal, Depth, NewRecord, Settlement, SpoolError};
use crate::catalog::BrokerId;
use crate::config::{OverflowPolicy, SpoolConfig};
use crate::watchdog::Heartbeat;

/// Pauses between retries of a failed commit, doubling from the first to the last.
const COMMIT_RETRY_MIN: Duration = Duration::from_millis(50);
const COMMIT_RETRY_MAX: Duration = Duration::from_secs(5);

/// Appends committed together at most; bounds the time a commit holds the lock.
const MAX_GROUP: usize = 2048;

pub(super) struct Append {
    record: NewRecord,
    committed: async_channel::Sender<()>,
}

impl Append {
    pub(super) fn new(record: NewRecord) -> (Append, CommitReceipt) {
        let (committed, receiver) = async_channel::bounded(1);
        (
            Append { record, committed },
            CommitReceipt {
                committed: receiver,
            },
        )
    }

    pub(super) fn into_record(self) -> NewRecord {
        self.record
    }
}

pub(super) struct Settle {
    settlement: Settlement,
    done: async_channel::Sender<Result<(), SpoolError>>,
}

impl Settle {
    pub(super) fn new(
        settlement: Settlement,
    ) -> (Settle, async_channel::Receiver<Result<(), SpoolError>>) {
        let (done, receiver) = async_channel::bounded(1);
        (Settle { settlement, done }, receiver)
    }
}

const INSERT_RECORD: &str = "INSERT INTO records \
    (broker_id, topic, payload, partition_key, qos, received_at_ms, size) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
const DELETE_RECORD: &str = "DELETE FROM records WHERE id = ?1 RETURNING broker_id, size";
const COUNT_ATTEMPT: &str =
    "UPDATE records SET attempts = attempts + 1 WHERE id = ?1 RETURNING broker_id";
const MOVE_TO_DEAD_LETTERS: &str = "INSERT INTO dead_letters \
    (id, broker_id, topic, payload, partition_key, qos, received_at_ms, attempts, error, dead_at_ms) \
    SELECT id, broker_id, topic, payload, partition_key, qos, received_at_ms, attempts + 1, ?2, ?3 \
    FROM records WHERE id = ?1";
const DROP_OLDEST: &str = "DELETE FROM records WHERE id IN \
    (SELECT id FROM records ORDER BY id LIMIT ?1) RETURNING broker_id, size";
const ADD_COUNTERS: &str = "INSERT INTO broker_counters \
    (broker_id, spooled, delivered, retried, dropped, dead_lettered) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
    ON CONFLICT (broker_id) DO UPDATE SET spooled = spooled + ?2, delivered = delivered + ?3, \
    retried = retried + ?4, dropped = dropped + ?5, dead_lettered = dead_lettered + ?6";
const TOTALS: &str = "SELECT count(*), coalesce(sum(size), 0) FROM records";

/// Counter increments of one transaction, per broker.
#[derive(Default, Clone, Copy)]
struct Increments {
    spooled: i64,
    delivered: i64,
    retried: i64,
    dropped: i64,
    dead_lettered: i64,
}

pub(super) struct Writer {
    connection: Connection,
    config: SpoolConfig,
    depth: Arc<Depth>,
    commits: Arc<CommitSignal>,
    heartbeat: Heartbeat,
    n_records: u64,
    bytes: u64,
}

// Appends dominate and are moved once each; boxing them would add an allocation per message.
#[allow(clippy::large_enum_variant)]
enum Command {
    Append(Append),
    Settle(Settle),
}

impl Writer {
    pub(super) fn new(
        connection: Connection,
        config: SpoolConfig,
        depth: Arc<Depth>,
        commits: Arc<CommitSignal>,
        heartbeat: Heartbeat,
    ) -> Result<Writer, SpoolError> {
        let (n_records, bytes): (i64, i64) = connection
            .query_row(TOTALS, [], |row| Ok((row.get(0)?, row.get(1)?)))
            .map_err(|error| sqlite_error(&config.path, error))?;
        let writer = Writer {
            connection,
            config,
            depth,
            commits,
            heartbeat,
            n_records: n_records as u64,
            bytes: bytes as u64,
        };
        writer.publish_depth();
        Ok(writer)
    }

    /// Runs until the append channel is closed and drained and every settlement sender is gone.
    pub(super) fn run(
        mut self,
        appends: async_channel::Receiver<Append>,
        settlements: async_channel::Receiver<Settle>,
    ) {
        loop {
            let Some(first) = smol::block_on(self.next_command(&appends, &settlements)) else {
                break;
            };
            let mut group_appends = Vec::new();
            let mut group_settles = Vec::new();
            match first {
                Command::Append(append) => group_appends.push(append),
                Command::Settle(settle) => group_settles.push(settle),
            }
            while let Ok(settle) = settlements.try_recv() {
                group_settles.push(settle);
            }
            // Under backpressure the group stops at the record that reaches the
            // bound, so the spool overshoots it by one record, not by a group.
            let mut projected: u64 = self.bytes
                + group_appends
                    .iter()
                    .map(|a| a.record.spool_bytes())
                    .sum::<u64>();
            while group_appends.len() < MAX_GROUP && !self.would_be_full(projected) {
                match appends.try_recv() {
                    Ok(append) => {
                        projected += append.record.spool_bytes();
                        group_appends.push(append);
                    }
                    Err(_) => break,
                }
            }
            self.commit_until_done(&group_appends, &group_settles);
            for append in group_appends {
                let _ = append.committed.try_send(());
            }
            for settle in group_settles {
                let _ = settle.done.try_send(Ok(()));
            }
        }
        log::debug!("spool writer: every sender closed, exiting");
    }

    /// Commits the group, retrying a failed commit until it succeeds. A failed
    /// transaction rolled back and nobody was acknowledged for it, so retrying
    /// loses nothing, and giving up would leave sessions with nowhere to put
    /// messages. A disk that never recovers keeps the writer busy, which the
    /// systemd watchdog sees, and the gateway is restarted.
    fn commit_until_done(&mut self, appends: &[Append], settles: &[Settle]) {
        let _busy = self.heartbeat.busy();
        let mut n_failures: u32 = 0;
        while let Err(error) = self.commit_group(appends, settles) {
            n_failures += 1;
            // One line per power of two: a dead disk must not flood the log.
            if n_failures.is_power_of_two() {
                log::error!(
                    "{error}; {} records wait, unacknowledged, for the commit to succeed \
                     (failure {n_failures}, retrying)",
                    appends.len()
                );
            }
            let pause = COMMIT_RETRY_MIN * 2u32.saturating_pow(n_failures.min(16));
            std::thread::sleep(pause.min(COMMIT_RETRY_MAX));
        }
        if n_failures > 0 {
            log::info!("spool commit succeeded after {n_failures} failures");
        }
    }

    /// Backpressure policy: no appends are taken while the spool is at its bound.
    fn is_full(&self) -> bool {
        self.would_be_full(self.bytes)
    }

    fn would_be_full(&self, bytes: u64) -> bool {
        self.config.overflow == OverflowPolicy::Backpressure && bytes >= self.config.max_bytes
    }

    /// The next command to apply, or `None` when no more can come.
    async fn next_command(
        &self,
        appends: &async_channel::Receiver<Append>,
        settlements: &async_channel::Receiver<Settle>,
    ) -> Option<Command> {
        loop {
            let appends_done = appends.is_closed() && appends.is_empty();
            let take_appends = !self.is_full() && !appends_done;
            let settlements_open = !(settlements.is_closed() && settlements.is_empty());
            // Each future yields None when its channel closes; the loop then looks again.
            let settle = async { settlements.recv().await.ok().map(Command::Settle) };
            let append = async { appends.recv().await.ok().map(Command::Append) };
            let command = match (take_appends, settlements_open) {
                (true, true) => settle.or(append).await,
                (true, false) => append.await,
                (false, true) => settle.await,
                // Full with nobody left to free room: queued appends stay unacknowledged.
                (false, false) => return None,
            };
            if command.is_some() {
                return command;
            }
        }
    }

    fn commit_group(&mut self, appends: &[Append], settles: &[Settle]) -> Result<(), SpoolError> {
        let path = self.config.path.clone();
        let before = (self.n_records, self.bytes);
        let transaction = self
            .connection
            .transaction()
            .map_err(|error| sqlite_error(&path, error))?;
        let mut increments: HashMap<BrokerId, Increments> = HashMap::new();
        let mut n_records = before.0 as i64;
        let mut bytes = before.1 as i64;
        let result = (|| {
            for settle in settles {
                apply_settlement(
                    &transaction,
                    &settle.settlement,
                    &mut increments,
                    &mut n_records,
                    &mut bytes,
                )?;
            }
            insert_appends(
                &transaction,
                appends,
                &mut increments,
                &mut n_records,
                &mut bytes,
            )?;
            if self.config.overflow == OverflowPolicy::DropOldest {
                let max = self.config.max_bytes as i64;
                drop_oldest(
                    &transaction,
                    max,
                    &mut increments,
                    &mut n_records,
                    &mut bytes,
                )?;
            }
            write_counters(&transaction, &increments)?;
            transaction.commit()
        })();
        result.map_err(|error| sqlite_error(&path, error))?;
        self.n_records = n_records.max(0) as u64;
        self.bytes = bytes.max(0) as u64;
        self.publish_depth();
        let dropped: i64 = increments.values().map(|i| i.dropped).sum();
        if dropped > 0 {
            log::warn!(
                "spool full ({} bytes, spool.max_bytes = {}): dropped the {dropped} oldest records",
                self.bytes,
                self.config.max_bytes
            );
        }
        if !appends.is_empty() {
            let mut generation = self
                .commits
                .generation
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            *generation += 1;
            self.commits.changed.notify_all();
        }
        Ok(())
    }

    fn publish_depth(&self) {
        self.depth
            .n_records
            .store(self.n_records, Ordering::Relaxed);
        self.depth.bytes.store(self.bytes, Ordering::Relaxed);
    }
}

fn insert_appends(
    transaction: &Transaction<'_>,
    appends: &[Append],
    increments: &mut HashMap<BrokerId, Increments>,
    n_records: &mut i64,
    bytes: &mut i64,
) -> rusqlite::Result<()> {
    let mut insert = transaction.prepare_cached(INSERT_RECORD)?;
    for append in appends {
        let record = &append.record;
        let size = record.spool_bytes() as i64;
        insert.execute(params![
            record.broker_id,
            record.topic,
            record.payload,
            record.partition_key.as_str(),
            record.qos,
            record.received_at_ms,
            size
        ])?;
        increments.entry(record.broker_id).or_default().spooled += 1;
        *n_records += 1;
        *bytes += size;
    }
    Ok(())
}

fn apply_settlement(
    transaction: &Transaction<'_>,
    settlement: &Settlement,
    increments: &mut HashMap<BrokerId, Increments>,
    n_records: &mut i64,
    bytes: &mut i64,
) -> rusqlite::Result<()> {
    let mut delete = transaction.prepare_cached(DELETE_RECORD)?;
    let mut count_attempt = transaction.prepare_cached(COUNT_ATTEMPT)?;
    let mut move_dead = transaction.prepare_cached(MOVE_TO_DEAD_LETTERS)?;
    let mut delete_one = |id: i64| -> rusqlite::Result<Option<BrokerId>> {
        let mut rows = delete.query([id])?;
        match rows.next()? {
            // Already gone (dropped by policy meanwhile): nothing to count.
            None => Ok(None),
            Some(row) => {
                let broker_id: BrokerId = row.get(0)?;
                let size: i64 = row.get(1)?;
                *n_records -= 1;
                *bytes -= size;
                Ok(Some(broker_id))
            }
        }
    };
    for &id in &settlement.delivered {
        if let Some(broker_id) = delete_one(id)? {
            increments.entry(broker_id).or_default().delivered += 1;
        }
    }
    let now_ms = now_ms();
    for (id, error) in &settlement.dead {
        if move_dead.execute(params![id, error, now_ms])? == 1 {
            if let Some(broker_id) = delete_one(*id)? {
                increments.entry(broker_id).or_default().dead_lettered += 1;
            }
        }
    }
    for &id in &settlement.retry {
        let mut rows = count_attempt.query([id])?;
        if let Some(row) = rows.next()? {
            let broker_id: BrokerId = row.get(0)?;
            increments.entry(broker_id).or_default().retried += 1;
        }
    }
    Ok(())
}

/// Deletes the oldest records until the spool is within `max_bytes`, counting each per broker.
fn drop_oldest(
    transaction: &Transaction<'_>,
    max_bytes: i64,
    increments: &mut HashMap<BrokerId, Increments>,
    n_records: &mut i64,
    bytes: &mut i64,
) -> rusqlite::Result<()> {
    let mut drop = transaction.prepare_cached(DROP_OLDEST)?;
    while *bytes > max_bytes && *n_records > 0 {
        // Estimate how many rows free enough room, then check again.
        let average = (*bytes / (*n_records).max(1)).max(1);
        let n_to_drop = ((*bytes - max_bytes) / average + 1).clamp(1, 4096);
        let mut rows = drop.query([n_to_drop])?;
        let mut n_dropped = 0;
        while let Some(row) = rows.next()? {
            let broker_id: BrokerId = row.get(0)?;
            let size: i64 = row.get(1)?;
            increments.entry(broker_id).or_default().dropped += 1;
            *n_records -= 1;
            *bytes -= size;
            n_dropped += 1;
        }
        if n_dropped == 0 {
            break;
        }
    }
    Ok(())
}

fn write_counters(
    transaction: &Transaction<'_>,
    increments: &HashMap<BrokerId, Increments>,
) -> rusqlite::Result<()> {
    let mut add = transaction.prepare_cached(ADD_COUNTERS)?;
    for (broker_id, i) in increments {
        add.execute(params![
            broker_id,
            i.spooled,
            i.delivered,
            i.retried,
            i.dropped,
            i.dead_lettered
        ])?;
    }
    Ok(())
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
