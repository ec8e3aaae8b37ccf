//! Spool → Kinesis: the drain loop, on its own thread "drain".
//!
//! Each round reads the oldest spool records, picks a batch within the
//! Kinesis limits (`batch`), encodes it ([`record_format`],
//! [`put_records`]), signs and sends it ([`sign`], `client`) and settles
//! the outcome in the spool.
//!
//! Requests are full or old: a round sends at once when 500 records wait (or
//! enough bytes for a full request), or when the oldest waiting record has
//! waited `kinesis.linger`; otherwise it waits for more. So a backlog goes
//! back to back, and a trickle costs one request per linger, not one per
//! message. Its settlement rides on the spool's next group commit, unless a
//! backlog waits; the next round waits for it before reading again, so a
//! delivered record is never read twice. Records leave the spool only once Kinesis
//! accepted them, or into dead letters when Kinesis can never take them.
//! Per-record failures stay in the spool and lead the next batch, alone:
//! delivered records are never sent again. With nothing to send, the loop
//! sleeps on [`Spool::wait_for_commit`].
//!
//! It does not reorder across retries beyond what Kinesis does (a retried
//! record may land after newer ones of the same partition key), and it gives
//! at-least-once delivery: a response lost after Kinesis stored the records
//! makes them go again.

mod backoff;
mod batch;
mod client;
pub mod credentials;
pub(crate) mod kpl;
mod linger;
mod md5;
mod probe;
pub mod put_records;
pub mod record_format;
pub mod refresher;
mod resolver;
mod roots;
pub mod sign;
mod skew;
pub(crate) mod stats;

use std::fmt;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::clock;
use crate::config::{Aggregation, KinesisConfig};
use crate::shutdown::Shutdown;
use crate::spool::{
    PendingSettlement, ReadLimits, Record, Settlement, Spool, SpoolError, SpoolReader,
};
use crate::watchdog::Heartbeat;
use client::Client;
use credentials::Credentials;
pub(crate) use probe::{probe, DescribeFailureKind, KinesisProbe, CLOCK_WARN_MS};
use put_records::{FailureKind, Outcome, RequestFailure};
pub use refresher::{CredentialsHandle, CredentialsStatus};

/// Why the drain could not start.
#[derive(Debug)]
pub enum DrainError {
    /// No usable AWS credentials at start-up, or a `kinesis.iot` key that does not parse.
    Credentials(credentials::CredentialsError),
    /// The spool cannot be read.
    Spool(SpoolError),
    /// A thread of the drain (`drain`, `drain-credentials`) could not be started.
    Thread {
        name: &'static str,
        error: std::io::Error,
    },
}

impl fmt::Display for DrainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DrainError::Credentials(error) => write!(f, "aws credentials: {error}"),
            DrainError::Spool(error) => write!(f, "drain: {error}"),
            DrainError::Thread { name, error } => {
                write!(f, "cannot start the {name} thread: {error}")
            }
        }
    }
}

impl std::error::Error for DrainError {}

/// With nothing to send, look again at least this often. Shutdown and commits
/// wake the drain themselves: this is only a backstop.
const IDLE_WAIT: Duration = Duration::from_secs(60);
/// Without usable credentials, look at the shutdown flag this often.
const CREDENTIALS_WAIT: Duration = Duration::from_millis(200);
/// Refused single records in a row, without a delivery between them, before
/// the drain stops blaming the records and treats the refusal as systemic.
const MAX_REFUSED_IN_A_ROW: u32 = 3;
/// Slow retries (each `kinesis.max_backoff` apart) the systemic mode lasts
/// before the drain blames single records again: a run of more than
/// [`MAX_REFUSED_IN_A_ROW`] bad records must not stall the spool for good.
const SYSTEMIC_RETRIES: u32 = 5;

/// What the drain shares with the rest of the gateway; `Default` for a
/// drain on its own (tests).
#[derive(Clone, Default)]
pub struct Shared {
    /// Marked busy for each round (read, send, settle), so the watchdog sees a drain that hangs.
    pub heartbeat: Heartbeat,
    /// AWS's clock minus ours, as learned from the answers.
    pub aws_offset: clock::AwsOffset,
    /// The credentials the drain signs with, kept fresh by the refresher.
    pub credentials: CredentialsHandle,
    /// Requests and refused records, counted for the metrics.
    pub stats: Arc<stats::DrainStats>,
}

/// Starts the drain thread. It sends the oldest records until shutdown, then
/// finishes the request in flight and returns.
pub fn start(
    config: KinesisConfig,
    spool: Spool,
    shutdown: Shutdown,
    shared: Shared,
) -> Result<JoinHandle<()>, DrainError> {
    let Shared {
        heartbeat,
        aws_offset,
        credentials,
        stats,
    } = shared;
    let reader = spool.reader().map_err(DrainError::Spool)?;
    // The drain sleeps on commits; shutdown wakes it too.
    shutdown.on_request(spool.commit_waker());
    // Not joined: see the refresher's module docs.
    let _refresher = refresher::start(
        &config.credentials,
        &credentials,
        aws_offset.clone(),
        config.max_backoff,
        shutdown.clone(),
    )?;
    log::info!(
        "drain: stream {} in {} via {}, {:?} records, {}, credentials from {}",
        config.stream,
        config.region,
        config.endpoint,
        config.record_format,
        config.aggregation,
        credentials.status().source
    );
    let drain = Drain {
        client: Client::new(&config),
        config,
        spool,
        reader,
        credentials,
        shutdown,
        max_records: batch::MAX_RECORDS,
        refused_through: 0,
        n_failures: 0,
        refused_in_a_row: 0,
        uplink: Uplink::Up,
        heartbeat,
        pending_settlement: None,
        oldest_seen: None,
        aws_offset,
        waiting_for_credentials: None,
        stats,
    };
    std::thread::Builder::new()
        .name("drain".into())
        .spawn(move || drain.run())
        .map_err(|error| DrainError::Thread {
            name: "drain",
            error,
        })
}

/// The loop's state; lives on the drain thread.
struct Drain {
    config: KinesisConfig,
    spool: Spool,
    reader: SpoolReader,
    client: Client,
    /// The current credentials, kept fresh by the credentials thread.
    credentials: CredentialsHandle,
    shutdown: Shutdown,
    /// Records per request; below 500 only while isolating a refused record.
    max_records: usize,
    /// The last record id of the request Kinesis refused; once the drain is
    /// past it, the search is over and batches grow back to 500.
    refused_through: i64,
    /// Requests in a row that delivered nothing; drives the backoff.
    n_failures: u32,
    refused_in_a_row: u32,
    uplink: Uplink,
    heartbeat: Heartbeat,
    /// Handed to the spool writer, maybe not committed yet.
    pending_settlement: Option<PendingSettlement>,
    /// The oldest waiting record and when this drain first saw it: the linger
    /// runs on the monotonic clock too, so a wall clock set back cannot hold
    /// records forever.
    oldest_seen: Option<(i64, Instant)>,
    /// Where the clock offset the client learned is shown (status file).
    aws_offset: clock::AwsOffset,
    /// Since when no valid credentials were at hand (records wait
    /// meanwhile), and whether the log said so.
    waiting_for_credentials: Option<(Instant, bool)>,
    /// Requests and refused records, counted for the metrics.
    stats: Arc<stats::DrainStats>,
}

/// What the loop does after a round.
enum Step {
    Next,
    Pause(Duration),
    Stop,
}

/// For logging state changes once, not per request.
enum Uplink {
    Up,
    Down {
        since: Instant,
        kind: FailureKind,
        n_requests: u32,
    },
}

impl Drain {
    fn run(mut self) {
        while !self.shutdown.is_requested() {
            let busy = self.heartbeat.busy();
            let step = self.round();
            drop(busy);
            match step {
                Step::Next => {}
                Step::Pause(pause) => {
                    if self.shutdown.wait_timeout(pause) {
                        break;
                    }
                }
                Step::Stop => break,
            }
        }
        if let Err(error) = self.settled() {
            log::error!("drain: cannot settle with the spool: {error}");
        }
        log::info!("drain: stopped");
    }

    /// Hands `settlement` to the spool writer (the next round waits for it);
    /// false when the spool has stopped, and the drain must stop too.
    fn hand_over(&mut self, settlement: Settlement, urgent: bool) -> bool {
        match self.spool.submit_settlement(settlement, urgent) {
            Ok(pending) => {
                self.pending_settlement = Some(pending);
                true
            }
            Err(error) => {
                // Unsettled records stay in the spool and go again next start.
                log::error!("drain: cannot settle with the spool, stopping: {error}");
                false
            }
        }
    }

    /// Waits until the last settlement is committed.
    fn settled(&mut self) -> Result<(), SpoolError> {
        match self.pending_settlement.take() {
            Some(pending) => pending.wait(),
            None => Ok(()),
        }
    }

    /// How much longer the oldest record should wait for company, with
    /// `n_records` waiting and `data_bytes` of them (the spool's counts when
    /// only the oldest was read; they include each row's small overhead):
    /// `None` when a request should go now.
    fn linger_left(
        &mut self,
        oldest: &Record,
        n_records: usize,
        data_bytes: usize,
    ) -> Option<Duration> {
        let seen_at = match self.oldest_seen {
            Some((id, at)) if id == oldest.id => at,
            _ => {
                let now = Instant::now();
                self.oldest_seen = Some((oldest.id, now));
                now
            }
        };
        let waiting = linger::Waiting {
            n_records,
            data_bytes,
            oldest_wall_age_ms: clock::unix_ms().saturating_sub(oldest.received_at_ms),
            oldest_seen_for: seen_at.elapsed(),
        };
        linger::left(self.config.linger, waiting, self.hurry())
    }

    /// Retrying or isolating a refused record: no waiting.
    fn hurry(&self) -> bool {
        self.n_failures > 0 || self.max_records < batch::MAX_RECORDS
    }

    /// The oldest records within `limits`. Rows that do not decode go to dead
    /// letters first (`Err(step)`: what the round returns meanwhile).
    fn read(&mut self, limits: ReadLimits) -> Result<Vec<Record>, Step> {
        let (records, damaged) = match self.reader.read_oldest(0, limits) {
            Ok(oldest) => (oldest.records, oldest.damaged),
            Err(error) => {
                log::error!("drain: cannot read the spool: {error}");
                return Err(Step::Pause(self.config.max_backoff));
            }
        };
        if damaged.is_empty() {
            return Ok(records);
        }
        // Never sendable and never readable: out of the way, by id, first.
        for (id, reason) in &damaged {
            log::warn!("drain: record {id} moved to dead letters: {reason}");
        }
        let settlement = Settlement {
            dead: damaged,
            ..Settlement::default()
        };
        Err(if self.hand_over(settlement, true) {
            Step::Next
        } else {
            Step::Stop
        })
    }

    /// Waits up to `left` for enough records for a full request.
    fn linger(&self, mut generation: u64, left: Duration) {
        let deadline = Instant::now() + left;
        let depth = self.spool.depth();
        while !linger::full(depth.n_records() as usize, depth.bytes() as usize)
            && !self.shutdown.is_requested()
        {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return;
            };
            // Woken only by a commit that fills a request (or at the deadline).
            generation = self.spool.wait_for_depth(
                generation,
                left,
                linger::FULL_RECORDS as u64,
                linger::FULL_BYTES as u64,
                || self.shutdown.is_requested(),
            );
        }
    }

    /// One batch: read, send, settle.
    fn round(&mut self) -> Step {
        // What the last round delivered must be gone before reading again.
        if let Err(error) = self.settled() {
            // Unsettled records stay in the spool and go again next start.
            log::error!("drain: cannot settle with the spool, stopping: {error}");
            return Step::Stop;
        }
        // Never sign with expired credentials: the records wait in the spool.
        let Some(credentials) = self.usable_credentials() else {
            return Step::Next;
        };
        // Read the generation first, so a commit after the read is not missed.
        let generation = self.spool.commit_generation();
        // Memory: about one request's worth, and never a payload that
        // Kinesis could not take anyway (it goes to dead letters unread).
        let limits = ReadLimits {
            records: batch::MAX_RECORDS,
            bytes: batch::MAX_REQUEST_BYTES as u64,
            max_payload_bytes: batch::MAX_RECORD_BYTES as u64,
        };
        // While the linger may hold the request, only its oldest record is read
        // to decide (with the spool's counts): the request is read whole once,
        // when it goes, not once more each time it waits.
        let peek = !self.config.linger.is_zero() && !self.hurry();
        let first = ReadLimits {
            records: if peek { 1 } else { limits.records },
            ..limits
        };
        let records = match self.read(first) {
            Ok(records) => records,
            Err(step) => return step,
        };
        let Some(oldest) = records.first() else {
            self.spool
                .wait_for_commit(generation, IDLE_WAIT, || self.shutdown.is_requested());
            return Step::Next;
        };
        let (n_records, data_bytes) = if peek {
            let depth = self.spool.depth();
            (depth.n_records() as usize, depth.bytes() as usize)
        } else {
            (records.len(), records.iter().map(Record::data_bytes).sum())
        };
        if let Some(left) = self.linger_left(oldest, n_records, data_bytes) {
            // Until the linger is up or a full request waits: then it goes.
            self.linger(generation, left);
            if self.shutdown.is_requested() {
                return Step::Next;
            }
        }
        let records = if peek {
            match self.read(limits) {
                Ok(records) if !records.is_empty() => records,
                Ok(_) => return Step::Next,
                Err(step) => return step,
            }
        } else {
            records
        };
        // More than one request's worth waits: settle at once, not with the next group.
        let backlog = records.len() >= batch::MAX_RECORDS;
        let (format, uid) = (self.config.record_format, self.spool.uid());
        let clock_offset_ms = self.client.clock_offset_ms();
        // Aggregation adds at most a few bytes per record (and saves each key
        // but one): 64 KiB of room covers a request of 500.
        let request_bytes = match self.config.aggregation {
            Aggregation::None => batch::MAX_REQUEST_BYTES,
            Aggregation::Kpl { .. } => batch::MAX_REQUEST_BYTES - (64 << 10),
        };
        let batch = batch::pick_within(records, self.max_records, request_bytes, |record| {
            record_format::encode(format, uid, record, clock_offset_ms)
        });
        let mut settlement = Settlement {
            dead: batch.rejected,
            ..Settlement::default()
        };
        for (id, reason) in &settlement.dead {
            log::warn!("drain: record {id} moved to dead letters: {reason}");
        }
        let pause = if batch.entries.is_empty() {
            None
        } else {
            let ids: Vec<i64> = batch.entries.iter().map(|entry| entry.id).collect();
            let started = Instant::now();
            let result = match self.config.aggregation {
                Aggregation::None => {
                    let result = self.client.put_records(&batch.entries, &credentials);
                    self.stats.record_request(&result, started.elapsed());
                    if let Ok(outcome) = &result {
                        let n = outcome.delivered.len();
                        self.stats.record_stored(n, n);
                    }
                    result
                }
                Aggregation::Kpl { max_bytes } => {
                    // The answer speaks of Kinesis records (and the metrics
                    // count those): each aggregated one's outcome is that of
                    // every spool record it carries.
                    let (wire, carried) = kpl::aggregate(&batch.entries, max_bytes);
                    let result = self.client.put_records(&wire, &credentials);
                    self.stats.record_request(&result, started.elapsed());
                    result.map(|outcome| {
                        let n_kinesis = outcome.delivered.len();
                        let expanded = outcome.expand(&carried);
                        self.stats
                            .record_stored(n_kinesis, expanded.delivered.len());
                        expanded
                    })
                }
            };
            self.aws_offset.set(self.client.clock_offset_ms());
            self.react(result, ids, &mut settlement, &credentials)
        };
        if !self.hand_over(settlement, backlog && pause.is_none()) {
            return Step::Stop;
        }
        pause.map_or(Step::Next, Step::Pause)
    }

    /// Turns the answer to a request into a settlement and the pause before the next.
    fn react(
        &mut self,
        result: Result<Outcome, RequestFailure>,
        ids: Vec<i64>,
        settlement: &mut Settlement,
        credentials: &Credentials,
    ) -> Option<Duration> {
        match result {
            Ok(outcome) => {
                log::debug!(
                    "drain: {} records sent: {} delivered, {} to retry, {} dead",
                    ids.len(),
                    outcome.delivered.len(),
                    outcome.retry.len(),
                    outcome.dead.len()
                );
                for (id, reason) in &outcome.dead {
                    log::warn!("drain: record {id} moved to dead letters: {reason}");
                }
                self.uplink_back();
                let delivered_some = !outcome.delivered.is_empty();
                let throttled = !outcome.retry.is_empty();
                settlement.delivered = outcome.delivered;
                settlement.retry = outcome.retry;
                settlement.dead.extend(outcome.dead);
                if delivered_some {
                    self.n_failures = 0;
                    self.refused_in_a_row = 0;
                }
                // While isolating a refused record, batches stay small: the one
                // just sent was fine, so the culprit is further on, if anywhere.
                if ids.last().is_some_and(|id| *id >= self.refused_through) {
                    self.max_records = batch::MAX_RECORDS;
                }
                match (throttled, delivered_some) {
                    (false, _) => None,
                    // Partly throttled: a short pause, then the rest go first.
                    (true, true) => Some(backoff::jittered(0, self.config.max_backoff)),
                    (true, false) => Some(self.next_backoff()),
                }
            }
            Err(failure) => self.react_to_failure(failure, ids, settlement, credentials),
        }
    }

    fn react_to_failure(
        &mut self,
        failure: RequestFailure,
        ids: Vec<i64>,
        settlement: &mut Settlement,
        credentials: &Credentials,
    ) -> Option<Duration> {
        if failure.kind == FailureKind::InvalidBatch {
            return self.isolate_refused(failure, ids, settlement);
        }
        self.uplink_down(&failure);
        settlement.retry = ids;
        match failure.kind {
            FailureKind::ExpiredCredentials => {
                // Not used again; new ones are fetched at once, and the next
                // round waits for them.
                self.credentials.expired(credentials);
                Some(self.next_backoff())
            }
            FailureKind::NotAuthorized => {
                self.credentials.refresh_now();
                Some(self.config.max_backoff)
            }
            FailureKind::StreamMissing => Some(self.config.max_backoff),
            // The answer's Date corrected the clock: sign again at once, but
            // only once in a row (an answer without Date would loop).
            FailureKind::ClockSkew if self.n_failures == 0 => {
                self.n_failures = 1;
                Some(Duration::ZERO)
            }
            _ => Some(self.next_backoff()),
        }
    }

    /// Kinesis refused the request as a whole. Halve the batch until the one
    /// record at fault is alone, then dead-letter it. If single records keep
    /// being refused, the cause is not the records: keep them and retry slowly.
    fn isolate_refused(
        &mut self,
        failure: RequestFailure,
        ids: Vec<i64>,
        settlement: &mut Settlement,
    ) -> Option<Duration> {
        if ids.len() > 1 {
            self.max_records = ids.len() / 2;
            self.refused_through = self.refused_through.max(ids.last().copied().unwrap_or(0));
            log::warn!(
                "drain: {failure}; retrying in batches of {} to find the record at fault",
                self.max_records
            );
            return None;
        }
        self.max_records = batch::MAX_RECORDS;
        if self.refused_in_a_row >= MAX_REFUSED_IN_A_ROW + SYSTEMIC_RETRIES {
            // Long enough: maybe it was the records after all.
            log::warn!(
                "drain: {failure}; still refused after {SYSTEMIC_RETRIES} slow retries: \
                 blaming single records again"
            );
            self.refused_in_a_row = 0;
        }
        if self.refused_in_a_row >= MAX_REFUSED_IN_A_ROW {
            if self.refused_in_a_row == MAX_REFUSED_IN_A_ROW {
                log::error!(
                    "drain: {failure}; every request is refused, keeping the records and retrying slowly"
                );
            }
            self.refused_in_a_row += 1;
            settlement.retry = ids;
            return Some(self.config.max_backoff);
        }
        self.refused_in_a_row += 1;
        settlement
            .dead
            .extend(ids.into_iter().map(|id| (id, failure.to_string())));
        log::warn!("drain: record moved to dead letters: {failure}");
        None
    }

    fn next_backoff(&mut self) -> Duration {
        let pause = backoff::jittered(self.n_failures, self.config.max_backoff);
        self.n_failures = self.n_failures.saturating_add(1);
        pause
    }

    /// The credentials to sign with, or `None` after waiting a little for
    /// them (state changes logged once).
    fn usable_credentials(&mut self) -> Option<Credentials> {
        let credentials = match self.credentials.usable() {
            Some(credentials) => credentials,
            None => {
                let (_, said) = self
                    .waiting_for_credentials
                    .get_or_insert((Instant::now(), false));
                if !*said {
                    // Said once, when there is something to say: not while the
                    // first fetch is simply in flight.
                    let status = self.credentials.status();
                    let why = match (status.last_error, status.expires_in) {
                        (Some(error), _) => Some(error),
                        (None, Some(_)) => Some(format!("those from {} expired", status.source)),
                        (None, None) => None,
                    };
                    if let Some(why) = why {
                        log::warn!(
                            "drain: no valid aws credentials ({why}): records wait in the spool"
                        );
                        *said = true;
                    }
                }
                self.credentials.wait_usable(CREDENTIALS_WAIT)?
            }
        };
        if let Some((since, said)) = self.waiting_for_credentials.take() {
            if said {
                log::info!(
                    "drain: valid aws credentials again after {:.1}s, from {}",
                    since.elapsed().as_secs_f64(),
                    credentials.source()
                );
            }
        }
        Some(credentials)
    }

    fn uplink_down(&mut self, failure: &RequestFailure) {
        let changed = match &mut self.uplink {
            Uplink::Up => true,
            Uplink::Down {
                kind, n_requests, ..
            } => {
                *n_requests += 1;
                *kind != failure.kind
            }
        };
        if !changed {
            log::debug!("drain: {failure}");
            return;
        }
        match failure.kind {
            FailureKind::NotAuthorized | FailureKind::StreamMissing | FailureKind::Unexpected => {
                log::error!("drain: {failure}; records are kept, retrying")
            }
            FailureKind::ClockSkew => {
                log::warn!("drain: {failure}; records are kept, retrying with the corrected time")
            }
            _ => log::warn!("drain: {failure}; records are kept, retrying with backoff"),
        }
        let (since, n_requests) = match self.uplink {
            Uplink::Down {
                since, n_requests, ..
            } => (since, n_requests),
            Uplink::Up => (Instant::now(), 1),
        };
        self.uplink = Uplink::Down {
            since,
            kind: failure.kind,
            n_requests,
        };
    }

    fn uplink_back(&mut self) {
        if let Uplink::Down {
            since, n_requests, ..
        } = self.uplink
        {
            log::info!(
                "drain: kinesis answers again, after {n_requests} failed requests over {:.1}s",
                since.elapsed().as_secs_f64()
            );
            self.uplink = Uplink::Up;
        }
    }
}
