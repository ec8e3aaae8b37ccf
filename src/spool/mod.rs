//! The durable queue between the MQTT sessions and the Kinesis drain, and the source of truth.
//!
//! One SQLite file in WAL mode. A single writer thread (`writer`) owns the
//! only connection that writes: sessions hand it records through a bounded
//! channel ([`Appender`]), the drain hands it settlements ([`Spool::settle`]).
//! It commits them in groups, so one fsync covers many messages. Readers
//! ([`SpoolReader`]) use their own connections and never block the writer.
//!
//! Invariants: only this module opens the spool file; a record leaves
//! `records` only when the drain settles it as delivered or dead, or when the
//! `drop_oldest` policy drops it (counted in `broker_counters.dropped`).

mod budget;
mod migrate;
mod receipt;
pub mod space;
mod writer;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::config::SpoolConfig;
use crate::ids::{BrokerId, DeviceId};
use crate::watchdog::Heartbeat;

pub use receipt::CommitReceipt;
pub use space::SpaceStatus;
/// The spool's probe for `check`: one per stage, like `catalog::probe`.
pub use space::{probe, SpoolProbe};
/// The most appends one commit carries: with `spool.queue_capacity`, the most
/// records accepted and not yet committed.
pub use writer::MAX_GROUP;

/// Kinesis allows partition keys of 1 to 256 Unicode characters; we keep 256 bytes of ASCII-safe text.
pub type PartitionKey = heapless::String<256>;

/// A message on its way into the spool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewRecord {
    pub broker_id: BrokerId,
    pub topic: String,
    pub payload: Vec<u8>,
    pub partition_key: PartitionKey,
    /// The device the topic names (`device_id_level`); `None`: none.
    pub device_id: Option<DeviceId>,
    pub qos: u8,
    /// UTC milliseconds since the Unix epoch.
    pub received_at_ms: i64,
}

impl NewRecord {
    /// What the record counts against `spool.max_bytes`: its data plus a fixed
    /// allowance for the row and index, so a flood of empty messages is bounded too.
    pub fn spool_bytes(&self) -> u64 {
        const ROW_OVERHEAD: u64 = 64;
        let device_id_len = self.device_id.as_ref().map_or(0, |id| id.len());
        (self.payload.len() + self.topic.len() + self.partition_key.len() + device_id_len) as u64
            + ROW_OVERHEAD
    }
}

/// A record as stored, read back for the drain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Spool row id: increasing, never reused within one spool file.
    pub id: i64,
    pub broker_id: BrokerId,
    pub topic: String,
    pub payload: Vec<u8>,
    pub partition_key: String,
    pub device_id: Option<String>,
    pub qos: u8,
    pub received_at_ms: i64,
    /// PutRecords attempts so far.
    pub attempts: u32,
}

impl Record {
    /// Payload, topic, partition key and device id: what the record's request entry is made of.
    pub fn data_bytes(&self) -> usize {
        let device_id_len = self.device_id.as_ref().map_or(0, String::len);
        self.payload.len() + self.topic.len() + self.partition_key.len() + device_id_len
    }
}

/// What the drain learned about records it sent; applied in one transaction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settlement {
    /// Kinesis holds these: delete them.
    pub delivered: Vec<i64>,
    /// Failed this time, will be sent again: count the attempt.
    pub retry: Vec<i64>,
    /// Never deliverable: move to dead letters with the reason.
    pub dead: Vec<(i64, String)>,
}

impl Settlement {
    pub fn is_empty(&self) -> bool {
        self.delivered.is_empty() && self.retry.is_empty() && self.dead.is_empty()
    }
}

#[derive(Debug)]
pub enum SpoolError {
    Sqlite {
        path: PathBuf,
        error: rusqlite::Error,
    },
    /// The file was written by a newer gateway; opening it could damage it.
    TooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    /// `user_version` is no version any gateway writes (a damaged or foreign file).
    UnknownVersion { path: PathBuf, found: i64 },
    /// spool.path is not a file the gateway can take (a symbolic link, a directory).
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The writer has stopped (shutdown, or it failed and logged why).
    Closed,
}

impl fmt::Display for SpoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpoolError::Sqlite { path, error } => write!(f, "spool {}: {error}", path.display()),
            SpoolError::TooNew {
                path,
                found,
                supported,
            } => write!(
                f,
                "spool {} has schema version {found}, this gateway supports up to {supported}: upgrade the gateway or move the file away",
                path.display()
            ),
            SpoolError::UnknownVersion { path, found } => write!(
                f,
                "spool {} has schema version {found}, which no gateway writes: the file is damaged or not a spool; move it away",
                path.display()
            ),
            SpoolError::Io { path, error } => write!(f, "spool {}: {error}", path.display()),
            SpoolError::Closed => f.write_str("spool writer has stopped"),
        }
    }
}

impl std::error::Error for SpoolError {}

/// Live totals the writer keeps; cheap to read from any thread.
#[derive(Debug, Default)]
pub struct Depth {
    n_records: AtomicU64,
    bytes: AtomicU64,
    n_commits: AtomicU64,
    /// How long each commit took, its fsync included.
    commit_durations: crate::histogram::Histogram,
}

impl Depth {
    pub fn n_records(&self) -> u64 {
        self.n_records.load(Ordering::Relaxed)
    }
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
    /// Transactions committed since the spool was opened: one fsync each.
    pub fn n_commits(&self) -> u64 {
        self.n_commits.load(Ordering::Relaxed)
    }
    /// Durations of the commits since the spool was opened, for the metrics.
    pub fn commit_durations(&self) -> &crate::histogram::Histogram {
        &self.commit_durations
    }
}

/// Handed to each session: puts records into the spool, in order.
///
/// Each appender is its own stream: its receipts resolve in the order of its
/// appends. [`Appender::fork`] makes another one for another sender.
pub struct Appender {
    appends: async_channel::Sender<writer::Append>,
    bell: Arc<writer::Bell>,
    budget: Arc<budget::ByteBudget>,
    tracker: Arc<receipt::Tracker>,
    /// Appends handed to the writer so far; the next one's sequence number is one more.
    n_sent: u64,
}

// The error is the record itself, handed back on the rare closed-spool path;
// boxing it would cost an allocation on every append.
#[allow(clippy::result_large_err)]
impl Appender {
    fn new(
        appends: async_channel::Sender<writer::Append>,
        bell: Arc<writer::Bell>,
        budget: Arc<budget::ByteBudget>,
    ) -> Appender {
        Appender {
            appends,
            bell,
            budget,
            tracker: receipt::Tracker::new(),
            n_sent: 0,
        }
    }

    /// A new appender into the same spool, with its own receipts.
    pub fn fork(&self) -> Appender {
        Appender::new(
            self.appends.clone(),
            Arc::clone(&self.bell),
            Arc::clone(&self.budget),
        )
    }

    /// Queues `record` for the writer; waits while the queue is full (backpressure).
    /// `urgent`: commit without waiting for `spool.commit_interval`, because
    /// the sender cannot go on until it is committed.
    /// On a closed spool the record comes back, so nothing is dropped silently.
    pub async fn append(
        &mut self,
        record: NewRecord,
        urgent: bool,
    ) -> Result<CommitReceipt, NewRecord> {
        // Memory: wait while accepted, uncommitted records hold the budget;
        // the writer is asked to commit (which gives it back) before the wait.
        let bytes = record.spool_bytes();
        self.budget.take(bytes, || self.bell.ring()).await;
        let (append, receipt) = writer::Append::new(record, urgent, &self.tracker, self.n_sent + 1);
        match self.appends.send(append).await {
            Ok(()) => {
                self.n_sent += 1;
                // A filling queue wakes the writer too (QoS 0 floods are
                // never urgent, and no sender may wait for the interval): at
                // half its capacity, or every 256 records, so the group
                // reaches its size while the queue holds only part of it.
                let capacity = self.appends.capacity().unwrap_or(usize::MAX);
                let filling = self.appends.len() >= (capacity / 2).clamp(1, 256);
                if urgent || filling {
                    self.bell.ring();
                }
                Ok(receipt)
            }
            Err(async_channel::SendError(append)) => {
                self.budget.give(bytes);
                Err(append.into_record())
            }
        }
    }

    /// Blocking form of [`Appender::append`], committed at once.
    pub fn append_blocking(&mut self, record: NewRecord) -> Result<CommitReceipt, NewRecord> {
        futures_lite::future::block_on(self.append(record, true))
    }
}

/// A settlement handed to the writer; [`PendingSettlement::wait`] until it is committed.
pub struct PendingSettlement {
    done: Option<async_channel::Receiver<Result<(), SpoolError>>>,
}

impl PendingSettlement {
    /// Blocks until the settlement is committed (or the writer stopped).
    pub fn wait(self) -> Result<(), SpoolError> {
        match self.done {
            None => Ok(()),
            Some(done) => done.recv_blocking().map_err(|_| SpoolError::Closed)?,
        }
    }
}

/// The spool: owns the writer thread. Clone freely; see [`Spool::close`].
#[derive(Clone)]
pub struct Spool {
    path: PathBuf,
    uid: String,
    appends: async_channel::Sender<writer::Append>,
    settlements: async_channel::Sender<writer::Settle>,
    bell: Arc<writer::Bell>,
    depth: Arc<Depth>,
    commits: Arc<CommitSignal>,
    writer_heartbeat: Heartbeat,
    space: Arc<SpaceStatus>,
    budget: Arc<budget::ByteBudget>,
}

/// Bumped after every commit that added records, so the drain can sleep until there is work.
#[derive(Default)]
struct CommitSignal {
    generation: Mutex<u64>,
    changed: Condvar,
    /// A waiter of [`Spool::wait_for_depth`] is woken by a commit only once
    /// this many records, or bytes, wait in the spool (0: by every commit).
    wake_at_records: AtomicU64,
    wake_at_bytes: AtomicU64,
}

impl CommitSignal {
    /// Whether a commit that leaves this much in the spool wakes the waiters.
    pub(super) fn wakes_at(&self, n_records: u64, bytes: u64) -> bool {
        n_records >= self.wake_at_records.load(Ordering::Relaxed)
            || bytes >= self.wake_at_bytes.load(Ordering::Relaxed)
    }
}

impl Spool {
    /// Opens (creating and migrating as needed) the spool and starts its writer
    /// thread, with a queue of `spool.queue_capacity` records: the bound that
    /// makes sessions wait when the disk is slow.
    pub fn open(config: &SpoolConfig) -> Result<(Spool, std::thread::JoinHandle<()>), SpoolError> {
        let queue_capacity = config.queue_capacity;
        let mut connection = open_connection(&config.path)?;
        migrate::apply(&mut connection, &config.path)?;
        // The spool file and its WAL exist now. SQLite syncs a directory with
        // the data-only sync it uses for its files (fdatasync, see
        // .cargo/config.toml), which not every filesystem applies to a new
        // name: a full fsync here, once, so both names survive power loss.
        crate::files::sync_parent_dir(&config.path).map_err(|error| SpoolError::Io {
            path: config.path.clone(),
            error: std::io::Error::new(error.kind(), format!("cannot sync its directory: {error}")),
        })?;
        let uid = migrate::spool_uid(&connection, &config.path)?;
        let depth = Arc::new(Depth::default());
        let commits = Arc::new(CommitSignal::default());
        let writer_heartbeat = Heartbeat::default();
        let (appends, append_rx) = async_channel::bounded(queue_capacity.max(1));
        let (settlements, settle_rx) = async_channel::bounded(16);
        let bell = Arc::new(writer::Bell::default());
        let space = Arc::new(SpaceStatus::default());
        let budget = Arc::new(budget::ByteBudget::new(config.queue_max_bytes));
        let context = writer::Writer::new(
            connection,
            config.clone(),
            writer::Shared {
                depth: Arc::clone(&depth),
                commits: Arc::clone(&commits),
                heartbeat: writer_heartbeat.clone(),
                bell: Arc::clone(&bell),
                space: Arc::clone(&space),
                budget: Arc::clone(&budget),
            },
        )?;
        let handle = std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || context.run(append_rx, settle_rx))
            .map_err(|error| SpoolError::Sqlite {
                path: config.path.clone(),
                error: rusqlite::Error::ToSqlConversionFailure(Box::new(error)),
            })?;
        Ok((
            Spool {
                path: config.path.clone(),
                uid,
                appends,
                settlements,
                bell,
                depth,
                commits,
                writer_heartbeat,
                space,
                budget,
            },
            handle,
        ))
    }

    /// A new appender, with its own receipts (one per sender).
    pub fn appender(&self) -> Appender {
        Appender::new(
            self.appends.clone(),
            Arc::clone(&self.bell),
            Arc::clone(&self.budget),
        )
    }

    /// A new read-only view, for one thread.
    pub fn reader(&self) -> Result<SpoolReader, SpoolError> {
        SpoolReader::open(&self.path)
    }

    /// Random id of this spool file; with a record id it names a record uniquely.
    pub fn uid(&self) -> &str {
        &self.uid
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Busy while the writer commits a group, for the watchdog.
    pub fn writer_heartbeat(&self) -> Heartbeat {
        self.writer_heartbeat.clone()
    }

    pub fn depth(&self) -> &Depth {
        &self.depth
    }

    /// The same totals as [`Spool::depth`], for a reader that must not keep the
    /// spool open (holding a [`Spool`] would keep its writer running).
    pub fn shared_depth(&self) -> Arc<Depth> {
        Arc::clone(&self.depth)
    }

    /// Room on the spool's filesystem and whether appends wait for it, as the writer last measured.
    pub fn space(&self) -> Arc<SpaceStatus> {
        Arc::clone(&self.space)
    }

    /// Applies `settlement` in one transaction; returns once it is committed.
    pub fn settle(&self, settlement: Settlement) -> Result<(), SpoolError> {
        self.submit_settlement(settlement, true)?.wait()
    }

    /// Hands `settlement` to the writer without waiting for its commit.
    /// `urgent`: commit at once (a backlog waits) rather than with the next
    /// group, within `spool.commit_interval`.
    pub fn submit_settlement(
        &self,
        settlement: Settlement,
        urgent: bool,
    ) -> Result<PendingSettlement, SpoolError> {
        if settlement.is_empty() {
            return Ok(PendingSettlement { done: None });
        }
        let (settle, done) = writer::Settle::new(settlement, urgent);
        self.settlements
            .send_blocking(settle)
            .map_err(|_| SpoolError::Closed)?;
        if urgent {
            self.bell.ring();
        }
        Ok(PendingSettlement { done: Some(done) })
    }

    /// Blocks until records have been committed since `seen`, `timeout`
    /// passes, or `stop()` (looked at after each [`Spool::commit_waker`] call).
    /// Returns the new generation; start with [`Spool::commit_generation`].
    pub fn wait_for_commit(&self, seen: u64, timeout: Duration, stop: impl Fn() -> bool) -> u64 {
        let guard = self
            .commits
            .generation
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let (guard, _) = self
            .commits
            .changed
            .wait_timeout_while(guard, timeout, |generation| *generation == seen && !stop())
            .unwrap_or_else(|e| e.into_inner());
        *guard
    }

    /// Like [`Spool::wait_for_commit`], but a commit wakes it only once at
    /// least `n_records` records or `bytes` bytes wait in the spool: the
    /// drain lingering for a full request is not woken by every group commit
    /// in between. For one waiter at a time (the drain).
    pub fn wait_for_depth(
        &self,
        seen: u64,
        timeout: Duration,
        n_records: u64,
        bytes: u64,
        stop: impl Fn() -> bool,
    ) -> u64 {
        let signal = &self.commits;
        signal.wake_at_records.store(n_records, Ordering::Relaxed);
        signal.wake_at_bytes.store(bytes, Ordering::Relaxed);
        let generation = self.wait_for_commit(seen, timeout, stop);
        signal.wake_at_records.store(0, Ordering::Relaxed);
        signal.wake_at_bytes.store(0, Ordering::Relaxed);
        generation
    }

    /// Wakes every [`Spool::wait_for_commit`] to look at its `stop` (for
    /// shutdown). Holds only the commit signal, not the spool, so it never
    /// keeps the writer from exiting.
    pub fn commit_waker(&self) -> impl Fn() + Send + Sync + 'static {
        let commits = Arc::clone(&self.commits);
        move || {
            // Under the lock: a waiter is either before its look at `stop` or waiting.
            let _generation = commits.generation.lock().unwrap_or_else(|e| e.into_inner());
            commits.changed.notify_all();
        }
    }

    pub fn commit_generation(&self) -> u64 {
        *self
            .commits
            .generation
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Stops taking new records. What is queued is still committed, and the
    /// writer exits once every [`Spool`] clone is dropped.
    pub fn close(&self) {
        self.appends.close();
        self.bell.ring();
    }
}

/// A read connection: the drain's view of the queue, and the status command's.
pub struct SpoolReader {
    path: PathBuf,
    connection: Connection,
}

/// The payload only when it is at most ?2 bytes: `length()` of a blob does
/// not read it, so an oversize row is never loaded whole.
/// No `LIMIT ?`: SQLite re-prepares a statement each time a LIMIT parameter is
/// bound (its value may change the plan), so the reader stops stepping instead;
/// rows come one step at a time in id order either way.
const SELECT_OLDEST: &str =
    "SELECT id, broker_id, topic, CASE WHEN length(payload) <= ?2 THEN payload END, \
     partition_key, qos, received_at_ms, attempts, length(payload), size, device_id \
     FROM records WHERE id > ?1 ORDER BY id";
const COUNT_RECORDS_AND_DEAD_LETTERS: &str =
    "SELECT (SELECT count(*) FROM records), (SELECT count(*) FROM dead_letters)";
const SUMMARY: &str = "SELECT count(*), coalesce(sum(size), 0), min(received_at_ms), \
     (SELECT count(*) FROM dead_letters) FROM records";
/// By id, the order records arrive in: one step down the primary key, no scan.
const OLDEST_RECEIVED_AT: &str = "SELECT received_at_ms FROM records ORDER BY id LIMIT 1";
const DEAD_LETTERS: &str = "SELECT id, error FROM dead_letters ORDER BY id";
const COUNTERS: &str =
    "SELECT broker_id, spooled, delivered, retried, dropped, dead_lettered, dead_evicted \
     FROM broker_counters ORDER BY broker_id";

impl SpoolReader {
    pub fn open(path: &Path) -> Result<SpoolReader, SpoolError> {
        let connection = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .and_then(|connection| {
            connection.busy_timeout(Duration::from_secs(5))?;
            Ok(connection)
        })
        .map_err(|error| sqlite_error(path, error))?;
        Ok(SpoolReader {
            path: path.to_owned(),
            connection,
        })
    }

    /// Up to `limit` records with an id above `after_id`, oldest first;
    /// rows that do not decode are left out (see [`SpoolReader::read_oldest`]).
    pub fn oldest(&self, after_id: i64, limit: usize) -> Result<Vec<Record>, SpoolError> {
        Ok(self
            .read_oldest(after_id, ReadLimits::records(limit))?
            .records)
    }

    /// Up to `limit` rows with an id above `after_id`, oldest first: the
    /// records, and apart the rows that do not decode (a damaged file), so
    /// one bad row cannot stop every read.
    pub fn read_oldest(&self, after_id: i64, limits: ReadLimits) -> Result<Oldest, SpoolError> {
        let mut statement = self
            .connection
            .prepare_cached(SELECT_OLDEST)
            .map_err(|error| sqlite_error(&self.path, error))?;
        let max_payload = i64::try_from(limits.max_payload_bytes).unwrap_or(i64::MAX);
        let mut rows = statement
            .query(rusqlite::params![after_id, max_payload])
            .map_err(|error| sqlite_error(&self.path, error))?;
        let mut oldest = Oldest::default();
        let mut bytes = 0u64;
        let mut n_rows = 0;
        while n_rows < limits.records {
            let Some(row) = rows
                .next()
                .map_err(|error| sqlite_error(&self.path, error))?
            else {
                break;
            };
            n_rows += 1;
            let id: i64 = row
                .get(0)
                .map_err(|error| sqlite_error(&self.path, error))?;
            let sizes = row
                .get::<_, Option<i64>>(8)
                .and_then(|payload| Ok((payload, row.get::<_, i64>(9)?)));
            match sizes {
                Ok((Some(payload), _)) if payload > max_payload => oldest.damaged.push((
                    id,
                    format!(
                        "payload of {payload} bytes is over the {} a record may carry",
                        limits.max_payload_bytes
                    ),
                )),
                Ok((_, size)) => match decode_record(id, row) {
                    Ok(record) => {
                        oldest.records.push(record);
                        bytes += size.max(0) as u64;
                        // Memory: stop at the budget (the first record always comes).
                        if bytes >= limits.bytes {
                            break;
                        }
                    }
                    Err(error) => oldest
                        .damaged
                        .push((id, format!("spool row does not decode: {error}"))),
                },
                Err(error) => oldest
                    .damaged
                    .push((id, format!("spool row does not decode: {error}"))),
            }
        }
        Ok(oldest)
    }

    /// The number of records and dead letters, straight from the file.
    pub fn counts(&self) -> Result<(u64, u64), SpoolError> {
        self.connection
            .query_row(COUNT_RECORDS_AND_DEAD_LETTERS, [], |row| {
                Ok((row.get::<_, i64>(0)? as u64, row.get::<_, i64>(1)? as u64))
            })
            .map_err(|error| sqlite_error(&self.path, error))
    }

    /// Depth, bytes and the oldest record's time, straight from the file.
    pub fn summary(&self) -> Result<SpoolSummary, SpoolError> {
        self.connection
            .query_row(SUMMARY, [], |row| {
                Ok(SpoolSummary {
                    n_records: row.get::<_, i64>(0)? as u64,
                    bytes: row.get::<_, i64>(1)? as u64,
                    oldest_received_at_ms: row.get(2)?,
                    n_dead_letters: row.get::<_, i64>(3)? as u64,
                })
            })
            .map_err(|error| sqlite_error(&self.path, error))
    }

    /// When the oldest waiting record was received (Unix ms); `None` when none waits.
    /// Cheap at any depth, unlike [`SpoolReader::summary`], which counts every row.
    pub fn oldest_received_at_ms(&self) -> Result<Option<i64>, SpoolError> {
        use rusqlite::OptionalExtension;
        self.connection
            .query_row(OLDEST_RECEIVED_AT, [], |row| row.get(0))
            .optional()
            .map_err(|error| sqlite_error(&self.path, error))
    }

    /// Bytes of free pages inside the spool file, which new rows reuse.
    pub fn free_page_bytes(&self) -> Result<u64, SpoolError> {
        let free_pages: i64 = self
            .connection
            .query_row("PRAGMA freelist_count", [], |row| row.get(0))
            .map_err(|error| sqlite_error(&self.path, error))?;
        let page_size: i64 = self
            .connection
            .query_row("PRAGMA page_size", [], |row| row.get(0))
            .map_err(|error| sqlite_error(&self.path, error))?;
        Ok((free_pages.max(0) as u64).saturating_mul(page_size.max(0) as u64))
    }

    /// Dead letters as (record id, error), oldest first.
    pub fn dead_letters(&self) -> Result<Vec<(i64, String)>, SpoolError> {
        let mut statement = self
            .connection
            .prepare(DEAD_LETTERS)
            .map_err(|error| sqlite_error(&self.path, error))?;
        let rows = statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|error| sqlite_error(&self.path, error))?;
        Ok(rows)
    }

    /// Per-broker counters, sorted by broker id.
    pub fn counters(&self) -> Result<Vec<BrokerCounters>, SpoolError> {
        let mut statement = self
            .connection
            .prepare(COUNTERS)
            .map_err(|error| sqlite_error(&self.path, error))?;
        let rows = statement
            .query_map([], |row| {
                Ok(BrokerCounters {
                    broker_id: row.get(0)?,
                    spooled: row.get::<_, i64>(1)? as u64,
                    delivered: row.get::<_, i64>(2)? as u64,
                    retried: row.get::<_, i64>(3)? as u64,
                    dropped: row.get::<_, i64>(4)? as u64,
                    dead_lettered: row.get::<_, i64>(5)? as u64,
                    dead_evicted: row.get::<_, i64>(6)? as u64,
                })
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|error| sqlite_error(&self.path, error))?;
        Ok(rows)
    }
}

/// How much one read of the oldest records may bring into memory.
#[derive(Clone, Copy, Debug)]
pub struct ReadLimits {
    pub records: usize,
    /// The read stops once the records' spool bytes reach this (at least one record comes).
    pub bytes: u64,
    /// A row whose payload is larger is reported, not loaded: it can never be sent.
    pub max_payload_bytes: u64,
}

impl ReadLimits {
    /// Up to `records` records, whatever their size.
    pub fn records(records: usize) -> ReadLimits {
        ReadLimits {
            records,
            bytes: u64::MAX,
            max_payload_bytes: u64::MAX,
        }
    }
}

/// What [`SpoolReader::read_oldest`] found.
#[derive(Debug, Default)]
pub struct Oldest {
    pub records: Vec<Record>,
    /// (row id, why): rows that do not decode or are too large to send, for dead letters.
    pub damaged: Vec<(i64, String)>,
}

/// A row of SELECT_OLDEST, by position: a name would cost a search per field.
fn decode_record(id: i64, row: &rusqlite::Row<'_>) -> rusqlite::Result<Record> {
    Ok(Record {
        id,
        broker_id: row.get(1)?,
        topic: row.get(2)?,
        payload: row.get(3)?,
        partition_key: row.get(4)?,
        qos: row.get(5)?,
        received_at_ms: row.get(6)?,
        attempts: row.get(7)?,
        device_id: row.get(10)?,
    })
}

/// The queue as a whole, for the status command.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpoolSummary {
    pub n_records: u64,
    pub bytes: u64,
    /// `None` when the queue is empty.
    pub oldest_received_at_ms: Option<i64>,
    pub n_dead_letters: u64,
}

/// Totals for one broker since the spool file was created.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BrokerCounters {
    pub broker_id: BrokerId,
    pub spooled: u64,
    pub delivered: u64,
    pub retried: u64,
    pub dropped: u64,
    pub dead_lettered: u64,
    /// Dead letters deleted, oldest first, to keep within `spool.dead_letter_max_bytes`.
    pub dead_evicted: u64,
}

/// Opens the writer's connection with the durability settings the README documents.
fn open_connection(path: &Path) -> Result<Connection, SpoolError> {
    // SQLite would follow a link at spool.path and create the file with the
    // umask's mode; the spool holds every message, so: a regular file, 0600.
    crate::files::ensure_private_file(path).map_err(|error| SpoolError::Io {
        path: path.to_owned(),
        error,
    })?;
    let connection = Connection::open(path).map_err(|error| sqlite_error(path, error))?;
    // WAL: readers never block the writer. synchronous=FULL: every commit syncs
    // the WAL (fdatasync: its data and size, without the inode's times), so a
    // committed record survives power loss, not only a crash. Group commit
    // keeps that to one sync per batch, not per message.
    connection
        .busy_timeout(Duration::from_secs(5))
        .and_then(|()| {
            connection
                .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))
        })
        .and_then(|_| connection.pragma_update(None, "synchronous", "FULL"))
        .map_err(|error| sqlite_error(path, error))?;
    Ok(connection)
}

fn sqlite_error(path: &Path, error: rusqlite::Error) -> SpoolError {
    SpoolError::Sqlite {
        path: path.to_owned(),
        error,
    }
}

#[cfg(test)]
mod tests;
