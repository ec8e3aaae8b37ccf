//! The single writer thread: group commit of appends and settlements.
//!
//! It blocks for the first command, then keeps collecting until one of:
//! - the first command has waited `spool.commit_interval`;
//! - a command is *urgent*: a session whose broker may be about to stop
//!   sending (its messages awaiting acknowledgement reached
//!   `mqtt.commit_at_unacked`), or the drain settling while a backlog waits;
//! - the group holds [`MAX_GROUP`] appends, or the backpressure bound is reached;
//! - the spool is closing.
//!
//! Then it commits everything in one transaction: one fsync per group, not per
//! message. Only after the commit does it tell the senders (their
//! [`super::CommitReceipt`]s resolve), so a caller that waits
//! for its receipt knows the record is on disk.
//!
//! Settlements never wait behind appends. Appends that cannot commit (the
//! spool's filesystem is below its floor, see [`super::space`], or their
//! commit failed) are *held*: settlements commit without them, and the writer
//! takes no new appends (their senders wait, unacknowledged) until the held
//! ones are in. A full disk releases the spool's reserve so deletes commit.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

use futures_lite::FutureExt;
use rusqlite::{params, Connection, Transaction};

use super::receipt::{CommitReceipt, Pending, Tracker};
use super::space::Space;
use super::{sqlite_error, CommitSignal, Depth, NewRecord, Settlement, SpoolError};
use crate::clock;
use crate::config::{OverflowPolicy, SpoolConfig};
use crate::ids::BrokerId;
use crate::repeating::{Repeating, Report};
use crate::watchdog::{Busy, Heartbeat};

/// Pauses between retries of a failed commit, doubling from the first to the last.
const COMMIT_RETRY_MIN: Duration = Duration::from_millis(50);
const COMMIT_RETRY_MAX: Duration = Duration::from_secs(5);

/// Appends committed together at most; bounds the time a commit holds the lock.
pub const MAX_GROUP: usize = 2048;

pub(super) struct Append {
    record: NewRecord,
    /// Commit without waiting for the interval: the sender may be blocked otherwise.
    urgent: bool,
    pending: Pending,
}

impl Append {
    pub(super) fn new(
        record: NewRecord,
        urgent: bool,
        tracker: &Arc<Tracker>,
        seq: u64,
    ) -> (Append, CommitReceipt) {
        let append = Append {
            record,
            urgent,
            pending: Pending::new(Arc::clone(tracker), seq),
        };
        (append, CommitReceipt::new(Arc::clone(tracker), seq))
    }

    /// The record back, for a sender whose append never reached the writer.
    pub(super) fn into_record(self) -> NewRecord {
        self.pending.disarm();
        self.record
    }
}

pub(super) struct Settle {
    settlement: Settlement,
    urgent: bool,
    done: async_channel::Sender<Result<(), SpoolError>>,
}

impl Settle {
    pub(super) fn new(
        settlement: Settlement,
        urgent: bool,
    ) -> (Settle, async_channel::Receiver<Result<(), SpoolError>>) {
        let (done, receiver) = async_channel::bounded(1);
        (
            Settle {
                settlement,
                urgent,
                done,
            },
            receiver,
        )
    }
}

/// The columns of an appended record, in the order [`bind_record`] binds them.
macro_rules! record_columns {
    () => {
        "(broker_id, topic, payload, partition_key, qos, received_at_ms, size, device_id)"
    };
}
const COLUMNS_PER_ROW: usize = 8;
const INSERT_RECORD: &str = concat!(
    "INSERT INTO records ",
    record_columns!(),
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
);
/// Records inserted by one statement of [`insert_rows`]: AUTOINCREMENT reads
/// and rewrites `sqlite_sequence` once per statement run, not per row, and
/// the statement's own setup is shared too.
const ROWS_PER_INSERT: usize = 16;

/// `INSERT OR FAIL INTO records (…) VALUES (?,…),(?,…),…` for
/// [`ROWS_PER_INSERT`] rows. OR FAIL: a failing statement keeps the rows it
/// wrote, so SQLite needs no statement journal (a copy of each page the
/// statement touches) to undo them; the writer rolls the whole transaction
/// back on any error.
fn insert_rows() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| {
        let row = format!("({})", ["?"; COLUMNS_PER_ROW].join(","));
        let rows = vec![row; ROWS_PER_INSERT].join(",");
        format!(
            "INSERT OR FAIL INTO records {} VALUES {rows}",
            record_columns!()
        )
    })
}
/// What a run of consecutive ids holds, then its deletion; delivered records
/// mostly come in runs. Two statements, not one `DELETE … RETURNING`: SQLite
/// runs RETURNING through a temporary table, a row written and read back per
/// record.
const SELECT_RUN: &str = "SELECT broker_id, size FROM records WHERE id BETWEEN ?1 AND ?2";
const DELETE_RUN: &str = "DELETE FROM records WHERE id BETWEEN ?1 AND ?2";
const COUNT_ATTEMPT: &str =
    "UPDATE records SET attempts = attempts + 1 WHERE id = ?1 RETURNING broker_id";
const MOVE_TO_DEAD_LETTERS: &str = "INSERT INTO dead_letters \
    (id, broker_id, topic, payload, partition_key, qos, received_at_ms, attempts, error, dead_at_ms, size, device_id) \
    SELECT id, broker_id, topic, payload, partition_key, qos, received_at_ms, attempts + 1, ?2, ?3, size, device_id \
    FROM records WHERE id = ?1";
/// One at a time: a DELETE deletes all it selects at its first step, so a
/// batch could not stop where the bound is met. Evictions are rare.
const EVICT_OLDEST_DEAD_LETTER: &str = "DELETE FROM dead_letters WHERE id = \
    (SELECT min(id) FROM dead_letters) RETURNING broker_id, size";
const DEAD_BYTES: &str = "SELECT coalesce(sum(size), 0) FROM dead_letters";
const DROP_OLDEST: &str = "DELETE FROM records WHERE id IN \
    (SELECT id FROM records ORDER BY id LIMIT ?1) RETURNING broker_id, size";
const ADD_COUNTERS: &str = "INSERT INTO broker_counters \
    (broker_id, spooled, delivered, retried, dropped, dead_lettered, dead_evicted) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
    ON CONFLICT (broker_id) DO UPDATE SET spooled = spooled + ?2, delivered = delivered + ?3, \
    retried = retried + ?4, dropped = dropped + ?5, dead_lettered = dead_lettered + ?6, \
    dead_evicted = dead_evicted + ?7";
const TOTALS: &str = "SELECT count(*), coalesce(sum(size), 0) FROM records";

/// Counter increments of one broker in one transaction.
#[derive(Default, Clone, Copy)]
struct Increments {
    spooled: i64,
    delivered: i64,
    retried: i64,
    dropped: i64,
    dead_lettered: i64,
    dead_evicted: i64,
}

/// What one transaction changes: the spool's totals and the per-broker counters.
struct Tally {
    n_records: i64,
    bytes: i64,
    /// Bytes held by dead letters.
    dead_bytes: i64,
    per_broker: HashMap<BrokerId, Increments>,
}

impl Tally {
    fn starting_at(n_records: u64, bytes: u64, dead_bytes: u64) -> Tally {
        Tally {
            n_records: n_records as i64,
            bytes: bytes as i64,
            dead_bytes: dead_bytes as i64,
            per_broker: HashMap::new(),
        }
    }

    fn broker(&mut self, broker_id: BrokerId) -> &mut Increments {
        self.per_broker.entry(broker_id).or_default()
    }

    fn added(&mut self, broker_id: BrokerId, size: i64) {
        self.broker(broker_id).spooled += 1;
        self.n_records += 1;
        self.bytes += size;
    }

    fn removed(&mut self, size: i64) {
        self.n_records -= 1;
        self.bytes -= size;
    }

    fn dropped(&self) -> i64 {
        self.per_broker.values().map(|i| i.dropped).sum()
    }

    fn dead_evicted(&self) -> i64 {
        self.per_broker.values().map(|i| i.dead_evicted).sum()
    }
}

/// The commands of one transaction.
#[derive(Default)]
struct Group {
    appends: Vec<Append>,
    settles: Vec<Settle>,
    /// Bytes the appends add to the spool.
    bytes: u64,
    urgent: bool,
    /// Failed commits of these appends so far (they were held).
    n_failures: u32,
}

impl Group {
    fn add(&mut self, command: Command) {
        match command {
            Command::Append(append) => {
                self.urgent |= append.urgent;
                self.bytes += append.record.spool_bytes();
                self.appends.push(append);
            }
            Command::Settle(settle) => {
                self.urgent |= settle.urgent;
                self.settles.push(settle);
            }
        }
    }

    /// Starts with the appends held back from an earlier group, urgently:
    /// their senders have waited already.
    fn from_held(held: Held) -> Group {
        Group {
            appends: held.appends,
            settles: Vec::new(),
            bytes: held.bytes,
            urgent: true,
            n_failures: held.n_failures,
        }
    }
}

/// Appends taken from the queue that could not commit yet: no room, or their
/// commit failed. No new appends are taken until these are in, so every
/// sender's receipts still resolve in order.
struct Held {
    appends: Vec<Append>,
    bytes: u64,
    n_failures: u32,
    /// Not before then (a failed commit backs off).
    retry_at: Instant,
}

/// What ends the wait for the first command of a group.
// Like `Command`: appends are moved once each; boxing them would add an allocation per message.
#[allow(clippy::large_enum_variant)]
enum Woken {
    Command(Command),
    /// The deadline passed: time to look at the room again, or to retry held appends.
    Timeout,
}

/// Wakes the writer while it collects a group: rung for an urgent command, a
/// filling queue or the spool closing, so quiet appends cost no wake-up each.
#[derive(Default)]
pub(super) struct Bell {
    writer: OnceLock<Thread>,
}

impl Bell {
    pub(super) fn ring(&self) {
        if let Some(writer) = self.writer.get() {
            writer.unpark();
        }
    }
}

/// Drops by the `drop_oldest` policy are summarized this often while they go on.
const DROP_SUMMARY_INTERVAL: Duration = Duration::from_secs(60);

pub(super) struct Writer {
    bell: Arc<Bell>,
    /// `drop_oldest` at work: logged when it starts, each minute, and when it ends.
    drops: Repeating,
    /// Dead letters evicted to keep within their bound, logged the same way.
    evictions: Repeating,
    dead_bytes: u64,
    connection: Connection,
    config: SpoolConfig,
    depth: Arc<Depth>,
    commits: Arc<CommitSignal>,
    heartbeat: Heartbeat,
    n_records: u64,
    bytes: u64,
    /// Room on the spool's filesystem, the floor and the reserve.
    space: Space,
    budget: Arc<super::budget::ByteBudget>,
    held: Option<Held>,
    /// Set while held appends keep failing for another reason than a full
    /// disk (an I/O error, a lock held elsewhere): the writer is then wedged
    /// to the watchdog, which restarts the gateway if it never ends. Waiting
    /// for room is not being wedged: a restart would not make any.
    stuck: Option<Busy>,
}

// Appends dominate and are moved once each; boxing them would add an allocation per message.
#[allow(clippy::large_enum_variant)]
enum Command {
    Append(Append),
    Settle(Settle),
}

/// Drops what is still queued when the writer ends, even by a panic, so every
/// receipt still waiting resolves as lost instead of waiting forever.
struct DropQueued<'a>(&'a async_channel::Receiver<Append>);

impl Drop for DropQueued<'_> {
    fn drop(&mut self) {
        self.0.close();
        while self.0.try_recv().is_ok() {}
    }
}

/// What the writer shares with the spool's other handles.
pub(super) struct Shared {
    pub(super) depth: Arc<Depth>,
    pub(super) commits: Arc<CommitSignal>,
    pub(super) heartbeat: Heartbeat,
    pub(super) bell: Arc<Bell>,
    pub(super) space: Arc<super::space::SpaceStatus>,
    /// The bytes of accepted, uncommitted records; given back after each commit.
    pub(super) budget: Arc<super::budget::ByteBudget>,
}

impl Writer {
    pub(super) fn new(
        connection: Connection,
        config: SpoolConfig,
        shared: Shared,
    ) -> Result<Writer, SpoolError> {
        let Shared {
            depth,
            commits,
            heartbeat,
            bell,
            space,
            budget,
        } = shared;
        let (n_records, bytes): (i64, i64) = connection
            .query_row(TOTALS, [], |row| Ok((row.get(0)?, row.get(1)?)))
            .map_err(|error| sqlite_error(&config.path, error))?;
        let dead_bytes: i64 = connection
            .query_row(DEAD_BYTES, [], |row| row.get(0))
            .map_err(|error| sqlite_error(&config.path, error))?;
        let space = Space::open(
            &config.path,
            config.min_free_bytes,
            config.max_bytes,
            &connection,
            space,
        );
        let writer = Writer {
            space,
            budget,
            held: None,
            stuck: None,
            bell,
            drops: Repeating::new(DROP_SUMMARY_INTERVAL),
            evictions: Repeating::new(DROP_SUMMARY_INTERVAL),
            dead_bytes: dead_bytes.max(0) as u64,
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
        let _drop_queued = DropQueued(&appends);
        // Set before the first park: an urgent append queued earlier is found by
        // the look at the queue that precedes every park.
        let _ = self.bell.writer.set(std::thread::current());
        while let Some(group) = self.collect_group(&appends, &settlements) {
            self.commit(group);
        }
        if let Some(held) = &self.held {
            // Their senders see them lost and do not acknowledge: the brokers keep them.
            log::warn!(
                "spool writer: stopping with {} records not committed (no room); the brokers send them again",
                held.appends.len()
            );
        }
        log::debug!("spool writer: every sender closed, exiting");
    }

    /// Waits for the next group to commit (see the module docs for when a
    /// group is complete); `None` when no more commands can come.
    fn collect_group(
        &mut self,
        appends: &async_channel::Receiver<Append>,
        settlements: &async_channel::Receiver<Settle>,
    ) -> Option<Group> {
        let (mut group, intake_open) = loop {
            if let Some(held) = self.held.take() {
                if !self.space.paused() && Instant::now() >= held.retry_at {
                    break (Group::from_held(held), false);
                }
                let settlements_done = settlements.is_closed() && settlements.is_empty();
                if !self.space.paused() && settlements_done {
                    // Stopping, and nothing else to wait for: retry them when due.
                    std::thread::sleep(held.retry_at.saturating_duration_since(Instant::now()));
                    self.held = Some(held);
                    continue;
                }
                self.held = Some(held);
            }
            let intake_open = self.held.is_none() && !self.space.paused();
            // Held: retry them then. Otherwise look at the room again now and
            // then, so a disk filled by another program shows while idle.
            let deadline = match &self.held {
                Some(held) if !self.space.paused() => held.retry_at,
                _ => self.space.next_check(),
            };
            match self.next_command(appends, settlements, intake_open, deadline)? {
                Woken::Command(command) => {
                    let mut group = Group::default();
                    group.add(command);
                    break (group, intake_open);
                }
                Woken::Timeout => {
                    self.space.check(&self.connection);
                }
            }
        };
        let deadline = Instant::now() + self.config.commit_interval;
        loop {
            while let Ok(settle) = settlements.try_recv() {
                group.add(Command::Settle(settle));
            }
            // Under backpressure the group stops at the record that reaches the
            // bound, so the spool overshoots it by one record, not by a group.
            // Near the floor a group is cut to what the filesystem can take
            // (at least one record, or nothing would move).
            let budget = self.space.group_budget();
            while intake_open
                && group.appends.len() < MAX_GROUP
                && !self.would_be_full(self.bytes + group.bytes)
                && (group.appends.is_empty() || group.bytes < budget)
            {
                match appends.try_recv() {
                    Ok(append) => group.add(Command::Append(append)),
                    Err(_) => break,
                }
            }
            if self.complete(&group, appends) {
                return Some(group);
            }
            // Sleep through quiet appends: only an urgent one (or the
            // spool closing) rings the bell before the interval is up.
            match deadline.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => std::thread::park_timeout(left),
                _ => return Some(group),
            }
        }
    }

    /// Whether `group` should be committed now rather than wait for more. The
    /// queue itself never fills while the writer waits: it takes every append
    /// into the group, up to [`MAX_GROUP`].
    fn complete(&self, group: &Group, appends: &async_channel::Receiver<Append>) -> bool {
        group.urgent
            || group.appends.len() >= MAX_GROUP
            || (!group.appends.is_empty() && group.bytes >= self.space.group_budget())
            // Half the memory budget in one group: commit, so senders never
            // wait for an interval with the budget full.
            || group.bytes >= self.budget.max() / 2
            || appends.is_closed()
            || self.would_be_full(self.bytes + group.bytes)
            || self.config.commit_interval.is_zero()
    }

    /// Commits the group. Appends go in only while the spool's filesystem has
    /// room; otherwise, or when their commit fails, they are held (retried
    /// later, with backoff after a failure) and the settlements commit alone.
    /// A failed transaction rolled back and nobody was acknowledged for it, so
    /// retrying loses nothing.
    fn commit(&mut self, group: Group) {
        let mut busy = self.stuck.is_none().then(|| self.heartbeat.busy());
        let Group {
            appends,
            settles,
            bytes,
            n_failures,
            ..
        } = group;
        if appends.is_empty() {
            self.commit_settlements(settles);
            return;
        }
        if !self.space.recheck(&self.connection, bytes) {
            // Waiting for room, not wedged.
            self.stuck = None;
            self.held = Some(Held {
                appends,
                bytes,
                n_failures,
                retry_at: Instant::now(),
            });
            self.commit_settlements(settles);
            return;
        }
        match self.commit_group(&settles, &appends) {
            Ok(()) => {
                if n_failures > 0 {
                    log::info!("spool commit succeeded after {n_failures} failures");
                }
                self.stuck = None;
                resolve_appends(&appends);
                resolve_settles(settles);
                // Their bytes leave memory with them: senders may go on.
                self.budget.give(bytes);
                self.after_commit();
            }
            Err(error) => {
                let n_failures = n_failures + 1;
                if is_disk_full(&error) {
                    self.stuck = None;
                    self.space.disk_full(&error);
                } else {
                    if self.stuck.is_none() {
                        self.stuck = busy.take();
                    }
                    // One line per power of two: a dead disk must not flood the log.
                    if n_failures.is_power_of_two() {
                        log::error!(
                            "{error}; {} records wait, unacknowledged, for the commit to succeed \
                             (failure {n_failures}, retrying)",
                            appends.len()
                        );
                    }
                }
                self.held = Some(Held {
                    appends,
                    bytes,
                    n_failures,
                    retry_at: Instant::now() + retry_pause(n_failures),
                });
                self.commit_settlements(settles);
            }
        }
    }

    /// Commits settlements alone, retrying until they are in: the drain
    /// waits for them. On a full disk the reserve is released first.
    fn commit_settlements(&mut self, settles: Vec<Settle>) {
        if settles.is_empty() {
            return;
        }
        let mut n_failures: u32 = 0;
        loop {
            match self.commit_group(&settles, &[]) {
                Ok(()) => break,
                Err(error) => {
                    n_failures += 1;
                    let full = is_disk_full(&error);
                    let released = full && self.space.disk_full(&error);
                    if full {
                        // What the WAL holds may fit the spool file's free pages: its room comes back.
                        self.checkpoint("TRUNCATE");
                    }
                    if n_failures.is_power_of_two() {
                        log::error!(
                            "{error}; {} settlements wait for the commit to succeed \
                             (failure {n_failures}, retrying)",
                            settles.len()
                        );
                    }
                    if !released {
                        std::thread::sleep(retry_pause(n_failures));
                    }
                }
            }
        }
        if n_failures > 0 {
            log::info!("spool commit of settlements succeeded after {n_failures} failures");
        }
        resolve_settles(settles);
        self.after_commit();
    }

    /// After a commit: where room is tight the WAL is checkpointed and
    /// truncated, so what deletes freed shows as room (free pages in the
    /// spool file, the WAL file's blocks given back to the filesystem), and
    /// neither appends nor the drain's retry counts (500 rows rewritten per
    /// refused request) grow the WAL toward its automatic checkpoint into the
    /// room the floor keeps. Then the room is measured again, for the next
    /// group's budget (that may pause or resume appends), unless a measurement
    /// of the last second found plenty (see `Space::recheck`).
    fn after_commit(&mut self) {
        if self.space.tight() {
            self.checkpoint("TRUNCATE");
            self.space.check(&self.connection);
        } else {
            self.space.recheck(&self.connection, 0);
        }
    }

    fn checkpoint(&self, mode: &str) {
        let pragma = format!("PRAGMA wal_checkpoint({mode})");
        if let Err(error) = self.connection.query_row(&pragma, [], |_| Ok(())) {
            log::debug!("spool: wal_checkpoint({mode}): {error}");
        }
    }

    /// Backpressure policy: no appends are taken while the spool is at its bound.
    fn is_full(&self) -> bool {
        self.would_be_full(self.bytes)
    }

    fn would_be_full(&self, bytes: u64) -> bool {
        self.config.overflow == OverflowPolicy::Backpressure && bytes >= self.config.max_bytes
    }

    /// The next command to apply, or [`Woken::Timeout`] at `deadline`; `None`
    /// when no more can come. `intake_open`: appends may be taken.
    fn next_command(
        &self,
        appends: &async_channel::Receiver<Append>,
        settlements: &async_channel::Receiver<Settle>,
        intake_open: bool,
        deadline: Instant,
    ) -> Option<Woken> {
        loop {
            let appends_done = appends.is_closed() && appends.is_empty();
            let take_appends = intake_open && !self.is_full() && !appends_done;
            let settlements_open = !(settlements.is_closed() && settlements.is_empty());
            // Each future yields None when its channel closes; the loop then looks again.
            let settle = async {
                let settle = settlements.recv().await.ok()?;
                Some(Command::Settle(settle))
            };
            let append = async {
                let append = appends.recv().await.ok()?;
                Some(Command::Append(append))
            };
            let never = std::future::pending::<Option<Command>>();
            let woken = match (take_appends, settlements_open) {
                (true, true) => park_until(settle.or(append), deadline),
                (true, false) => park_until(append.or(never), deadline),
                (false, true) => park_until(settle.or(never), deadline),
                // Nobody left to free room (or to take appends): queued appends stay unacknowledged.
                (false, false) => return None,
            };
            match woken {
                None => return Some(Woken::Timeout),
                Some(Some(command)) => return Some(Woken::Command(command)),
                Some(None) => {}
            }
        }
    }

    /// One transaction: `settles` and `appends`, the overflow policy, the counters.
    fn commit_group(&mut self, settles: &[Settle], appends: &[Append]) -> Result<(), SpoolError> {
        let path = self.config.path.clone();
        let started = Instant::now();
        let transaction = self
            .connection
            .transaction()
            .map_err(|error| sqlite_error(&path, error))?;
        let mut tally = Tally::starting_at(self.n_records, self.bytes, self.dead_bytes);
        let result = (|| {
            for settle in settles {
                apply_settlement(&transaction, &settle.settlement, &mut tally)?;
            }
            insert_appends(&transaction, appends, &mut tally)?;
            if self.config.overflow == OverflowPolicy::DropOldest {
                drop_oldest(&transaction, self.config.max_bytes as i64, &mut tally)?;
            }
            evict_dead_letters(
                &transaction,
                self.config.dead_letter_max_bytes as i64,
                &mut tally,
            )?;
            write_counters(&transaction, &tally)?;
            transaction.commit()
        })();
        result.map_err(|error| sqlite_error(&path, error))?;
        self.depth.commit_durations.observe(started.elapsed());
        self.n_records = tally.n_records.max(0) as u64;
        self.bytes = tally.bytes.max(0) as u64;
        self.dead_bytes = tally.dead_bytes.max(0) as u64;
        self.log_evictions(tally.dead_evicted());
        self.depth.n_commits.fetch_add(1, Ordering::Relaxed);
        self.publish_depth();
        self.log_drops(tally.dropped());
        if !appends.is_empty() {
            let mut generation = self
                .commits
                .generation
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            *generation += 1;
            if self.commits.wakes_at(self.n_records, self.bytes) {
                self.commits.changed.notify_all();
            }
        }
        Ok(())
    }

    /// Dead letters evicted by their bound, said as [`log_repeating`] says.
    fn log_evictions(&mut self, evicted: i64) {
        let max = self.config.dead_letter_max_bytes;
        log_repeating(
            &mut self.evictions,
            evicted,
            "oldest dead letters deleted",
            || format!("dead letters full (spool.dead_letter_max_bytes = {max})"),
        );
    }

    /// Records dropped by `drop_oldest`, said as [`log_repeating`] says.
    fn log_drops(&mut self, dropped: i64) {
        let max = self.config.max_bytes;
        log_repeating(
            &mut self.drops,
            dropped,
            "oldest records dropped to make room",
            || format!("spool full (spool.max_bytes = {max})"),
        );
    }

    fn publish_depth(&self) {
        self.depth
            .n_records
            .store(self.n_records, Ordering::Relaxed);
        self.depth.bytes.store(self.bytes, Ordering::Relaxed);
    }
}

/// Polls `future` on this thread, parked in between, until it resolves
/// (`Some`) or `deadline` passes (`None`). The writer's own timer: an
/// async-io timer would wake async-io's thread to arm it and again to disarm
/// it, once per group.
fn park_until<T>(future: impl Future<Output = T>, deadline: Instant) -> Option<T> {
    struct Unpark(Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }
    let mut future = std::pin::pin!(future);
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut context = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(value) = future.as_mut().poll(&mut context) {
            return Some(value);
        }
        match deadline.checked_duration_since(Instant::now()) {
            // Woken early (a command, or the bell): polled again.
            Some(left) if !left.is_zero() => std::thread::park_timeout(left),
            _ => return None,
        }
    }
}

/// Tells each sender its append is committed.
fn resolve_appends(appends: &[Append]) {
    for append in appends {
        append
            .pending
            .tracker()
            .mark_committed(append.pending.seq());
    }
    for append in appends {
        append.pending.tracker().ring();
    }
}

fn resolve_settles(settles: Vec<Settle>) {
    for settle in settles {
        let _ = settle.done.try_send(Ok(()));
    }
}

/// The pause before the next try after `n_failures` failed commits: 50 ms doubling to 5 s.
fn retry_pause(n_failures: u32) -> Duration {
    let pause = COMMIT_RETRY_MIN * 2u32.saturating_pow(n_failures.saturating_sub(1).min(16));
    pause.min(COMMIT_RETRY_MAX)
}

/// SQLITE_FULL: the filesystem (or the database's size limit) has no room.
fn is_disk_full(error: &SpoolError) -> bool {
    matches!(
        error,
        SpoolError::Sqlite {
            error: rusqlite::Error::SqliteFailure(failure, _),
            ..
        } if failure.code == rusqlite::ErrorCode::DiskFull
    )
}

fn insert_appends(
    transaction: &Transaction<'_>,
    appends: &[Append],
    tally: &mut Tally,
) -> rusqlite::Result<()> {
    // Ids follow the order of the rows, in one statement as in many.
    let mut chunks = appends.chunks_exact(ROWS_PER_INSERT);
    if chunks.len() > 0 {
        let mut insert = transaction.prepare_cached(insert_rows())?;
        for chunk in chunks.by_ref() {
            for (row, append) in chunk.iter().enumerate() {
                bind_record(&mut insert, row * COLUMNS_PER_ROW, &append.record, tally)?;
            }
            insert.raw_execute()?;
        }
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut insert = transaction.prepare_cached(INSERT_RECORD)?;
        for append in rest {
            bind_record(&mut insert, 0, &append.record, tally)?;
            insert.raw_execute()?;
        }
    }
    Ok(())
}

/// Binds `record`'s columns in [`record_columns!`]'s order, after `offset`
/// parameters, and counts it in `tally` (which a failed transaction drops).
fn bind_record(
    insert: &mut rusqlite::CachedStatement<'_>,
    offset: usize,
    record: &NewRecord,
    tally: &mut Tally,
) -> rusqlite::Result<()> {
    let size = record.spool_bytes() as i64;
    insert.raw_bind_parameter(offset + 1, record.broker_id)?;
    insert.raw_bind_parameter(offset + 2, record.topic.as_str())?;
    insert.raw_bind_parameter(offset + 3, &record.payload[..])?;
    insert.raw_bind_parameter(offset + 4, record.partition_key.as_str())?;
    insert.raw_bind_parameter(offset + 5, record.qos)?;
    insert.raw_bind_parameter(offset + 6, record.received_at_ms)?;
    insert.raw_bind_parameter(offset + 7, size)?;
    insert.raw_bind_parameter(offset + 8, record.device_id.as_deref())?;
    tally.added(record.broker_id, size);
    Ok(())
}

fn apply_settlement(
    transaction: &Transaction<'_>,
    settlement: &Settlement,
    tally: &mut Tally,
) -> rusqlite::Result<()> {
    let mut delete = Deletion {
        select: transaction.prepare_cached(SELECT_RUN)?,
        delete: transaction.prepare_cached(DELETE_RUN)?,
    };
    let mut count_attempt = transaction.prepare_cached(COUNT_ATTEMPT)?;
    let mut move_dead = transaction.prepare_cached(MOVE_TO_DEAD_LETTERS)?;
    for (first, last) in runs(&settlement.delivered) {
        delete_run(&mut delete, first, last, tally, |tally, broker_id, _| {
            tally.broker(broker_id).delivered += 1;
        })?;
    }
    let now_ms = clock::unix_ms();
    for (id, error) in &settlement.dead {
        if move_dead.execute(params![id, error, now_ms])? == 1 {
            delete_run(&mut delete, *id, *id, tally, |tally, broker_id, size| {
                tally.broker(broker_id).dead_lettered += 1;
                tally.dead_bytes += size;
            })?;
        }
    }
    for &id in &settlement.retry {
        let mut rows = count_attempt.query([id])?;
        if let Some(row) = rows.next()? {
            let broker_id: BrokerId = row.get(0)?;
            tally.broker(broker_id).retried += 1;
        }
    }
    Ok(())
}

/// The statements of [`delete_run`].
struct Deletion<'a> {
    select: rusqlite::CachedStatement<'a>,
    delete: rusqlite::CachedStatement<'a>,
}

/// Deletes the records `first..=last`, and `count`s each one deleted (ids
/// already gone, dropped by policy meanwhile, are not there: nothing to count).
fn delete_run(
    deletion: &mut Deletion<'_>,
    first: i64,
    last: i64,
    tally: &mut Tally,
    mut count: impl FnMut(&mut Tally, BrokerId, i64),
) -> rusqlite::Result<()> {
    let mut rows = deletion.select.query([first, last])?;
    while let Some(row) = rows.next()? {
        let broker_id: BrokerId = row.get(0)?;
        let size: i64 = row.get(1)?;
        tally.removed(size);
        count(tally, broker_id, size);
    }
    drop(rows);
    deletion.delete.execute([first, last])?;
    Ok(())
}

/// One line when `condition` starts (with `count` things `done`), a count
/// each minute while it lasts, one when a minute passed without it: never a
/// line per commit.
/// The `condition`'s words are made only when there is a line to write: this
/// runs after every commit.
fn log_repeating(
    repeating: &mut Repeating,
    count: i64,
    done: &str,
    condition: impl FnOnce() -> String,
) {
    let now = Instant::now();
    let report = if count > 0 {
        repeating.occurred(count as u64, now)
    } else {
        repeating.quiet(now)
    };
    let Some(report) = report else { return };
    let condition = condition();
    match report {
        Report::Started(n) => {
            log::warn!("{condition}: {n} {done}; counted per broker, summarized every minute")
        }
        Report::Summary { count, over } => {
            log::warn!(
                "{condition}: {count} {done} in the last {}s",
                over.as_secs()
            )
        }
        Report::Ended { total, lasted } => log::info!(
            "no longer {condition}: {total} {done} over {}s",
            lasted.as_secs()
        ),
    }
}

/// Runs of consecutive ids, as (first, last), from ids in any order.
fn runs(ids: &[i64]) -> Vec<(i64, i64)> {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut runs: Vec<(i64, i64)> = Vec::new();
    for id in sorted {
        match runs.last_mut() {
            Some((_, last)) if *last + 1 == id => *last = id,
            _ => runs.push((id, id)),
        }
    }
    runs
}

/// Deletes the oldest records until the spool is within `max_bytes`, counting each per broker.
fn drop_oldest(
    transaction: &Transaction<'_>,
    max_bytes: i64,
    tally: &mut Tally,
) -> rusqlite::Result<()> {
    let mut drop = transaction.prepare_cached(DROP_OLDEST)?;
    while tally.bytes > max_bytes && tally.n_records > 0 {
        // Estimate how many rows free enough room, then check again.
        let average = (tally.bytes / tally.n_records.max(1)).max(1);
        let n_to_drop = ((tally.bytes - max_bytes) / average + 1).clamp(1, 4096);
        let mut rows = drop.query([n_to_drop])?;
        let mut n_dropped = 0;
        while let Some(row) = rows.next()? {
            let broker_id: BrokerId = row.get(0)?;
            tally.removed(row.get(1)?);
            tally.broker(broker_id).dropped += 1;
            n_dropped += 1;
        }
        if n_dropped == 0 {
            break;
        }
    }
    Ok(())
}

/// Deletes the oldest dead letters until they are within `max_bytes`, counting each per broker.
fn evict_dead_letters(
    transaction: &Transaction<'_>,
    max_bytes: i64,
    tally: &mut Tally,
) -> rusqlite::Result<()> {
    if tally.dead_bytes <= max_bytes {
        return Ok(());
    }
    let mut evict = transaction.prepare_cached(EVICT_OLDEST_DEAD_LETTER)?;
    while tally.dead_bytes > max_bytes {
        let mut rows = evict.query([])?;
        let Some(row) = rows.next()? else {
            tally.dead_bytes = 0;
            break;
        };
        let broker_id: BrokerId = row.get(0)?;
        let size: i64 = row.get(1)?;
        tally.dead_bytes -= size;
        tally.broker(broker_id).dead_evicted += 1;
    }
    Ok(())
}

fn write_counters(transaction: &Transaction<'_>, tally: &Tally) -> rusqlite::Result<()> {
    let mut add = transaction.prepare_cached(ADD_COUNTERS)?;
    for (broker_id, i) in &tally.per_broker {
        add.execute(params![
            broker_id,
            i.spooled,
            i.delivered,
            i.retried,
            i.dropped,
            i.dead_lettered,
            i.dead_evicted
        ])?;
    }
    Ok(())
}

#[cfg(test)]
mod runs_tests {
    use super::runs;

    #[test]
    fn consecutive_ids_make_one_run_and_gaps_split_them() {
        assert_eq!(runs(&[]), vec![]);
        assert_eq!(runs(&[7]), vec![(7, 7)]);
        assert_eq!(runs(&[3, 4, 5, 9, 10, 12]), vec![(3, 5), (9, 10), (12, 12)]);
        assert_eq!(runs(&[5, 3, 4, 4]), vec![(3, 5)]);
    }
}
