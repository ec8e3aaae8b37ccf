//! The running gateway's state, written where other processes can read it:
//! the [`StatusDocument`] as a small JSON file (`status.file`, read by
//! `mqtt-kinesis-bridge status`).
//!
//! The file is rewritten when something changes and at least every
//! [`REWRITE_EVERY`], so `status` can tell a live gateway from a dead one by
//! its `written_at_ms`. It is replaced by rename and never fsynced: it
//! describes the moment, and a power cut loses nothing worth keeping. Its own
//! thread does the file and spool IO, so the executor never blocks on it.
//!
//! It is not essential, so it never takes the spool's room: while its
//! filesystem is below `spool.min_free_bytes` it is overwritten in place
//! (the blocks it has, padded with spaces), not written anew beside the old
//! one; a failed write is logged once and tried again a second later.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use super::board::StatusBoard;
use super::document::CredentialsLine;
use super::document::{BrokerLine, DiskLine, StatusDocument, StoredLine};
use crate::clock::{epoch_ms, AwsOffset};
use crate::disk;
use crate::shutdown::Shutdown;
use crate::spool::SpaceStatus;

/// How often the board is looked at.
const TICK: Duration = Duration::from_secs(1);
/// The file is rewritten at least this often, changed or not.
pub const REWRITE_EVERY: Duration = Duration::from_secs(10);
/// The window the drain rate is averaged over.
const RATE_WINDOW: Duration = Duration::from_secs(60);

/// What the status file is made from.
pub struct Sources {
    pub gateway_id: String,
    pub board: StatusBoard,
    pub space: std::sync::Arc<SpaceStatus>,
    pub aws_offset: AwsOffset,
    /// The drain's credentials, as the file shows them (the status part
    /// imports no stage: the caller turns the drain's handle into a line).
    pub credentials: Box<dyn Fn() -> CredentialsLine + Send>,
    /// How records go to Kinesis (`kinesis.aggregation`, in words).
    pub aggregation: String,
    /// Kinesis records and messages stored since start (the drain's counters).
    pub stored: Box<dyn Fn() -> StoredLine + Send>,
}

/// Starts the thread that keeps the status file current until shutdown; its
/// last write marks the gateway stopped.
pub fn start(
    path: PathBuf,
    sources: Sources,
    shutdown: Shutdown,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("status-file".into())
        .spawn(move || keep_file(path, sources, shutdown))
}

fn keep_file(path: PathBuf, sources: Sources, shutdown: Shutdown) {
    let mut drain_rate = DrainRate::default();
    let mut last_written: Option<(StatusDocument, Instant)> = None;
    let mut n_failures: u32 = 0;
    loop {
        let stopping = shutdown.is_requested();
        let stored = (sources.stored)();
        let state = StatusDocument {
            gateway_id: sources.gateway_id.clone(),
            pid: std::process::id(),
            running: !stopping,
            // Set at the write; left out of the comparison with the last one.
            written_at_ms: 0,
            drain_records_per_s: drain_rate.sample(stored.messages, Instant::now()),
            clock_offset_ms: sources.aws_offset.get(),
            disk: Some(DiskLine::new(&sources.space)),
            credentials: Some((sources.credentials)()),
            aggregation: Some(sources.aggregation.clone()),
            // Set at the write: a count alone does not make a write due.
            stored: None,
            brokers: sources
                .board
                .snapshot()
                .iter()
                .map(|(id, status)| BrokerLine::new(*id, status))
                .collect(),
        };
        let due = match &last_written {
            None => true,
            Some((written, at)) => *written != state || at.elapsed() >= REWRITE_EVERY,
        };
        if due || stopping {
            let document = StatusDocument {
                written_at_ms: epoch_ms(SystemTime::now()),
                stored: Some(stored),
                ..state.clone()
            };
            let text = serde_json::to_string(&document).expect("a status document serializes");
            let space = &sources.space;
            let low = space.appends_paused()
                || !disk::leaves_room(&path, 2 * text.len() as u64, space.min_free_bytes());
            let written = if low {
                write_in_place(&path, &text)
            } else {
                write_atomically(&path, &text).or_else(|_| write_in_place(&path, &text))
            };
            match written {
                Ok(()) => {
                    if n_failures > 0 {
                        log::info!("status file {} written again", path.display());
                    }
                    n_failures = 0;
                    last_written = Some((state, Instant::now()));
                }
                // Not written: tried again at the next tick.
                Err(error) => {
                    n_failures += 1;
                    if n_failures == 1 {
                        log::warn!(
                            "cannot write the status file {}: {error}; trying again every second",
                            path.display()
                        );
                    } else {
                        log::debug!("cannot write the status file {}: {error}", path.display());
                    }
                }
            }
        }
        if stopping {
            return;
        }
        shutdown.wait_timeout(TICK);
    }
}

fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let temporary = path.with_extension("json.new");
    crate::files::replace(
        path,
        &temporary,
        text.as_bytes(),
        crate::files::PRIVATE_MODE,
    )
}

/// Overwrites the existing file in the blocks it has: a shorter text is
/// padded with spaces (JSON ignores them), so no reader sees a longer old
/// tail and the file needs no new block unless the text outgrows it.
fn write_in_place(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(crate::files::PRIVATE_MODE)
        // Never through a link someone planted at the status file's name.
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    let old_len = file.metadata()?.len() as usize;
    let mut bytes = text.as_bytes().to_vec();
    bytes.resize(bytes.len().max(old_len), b' ');
    file.write_all(&bytes)
}

/// Messages delivered per second over the last [`RATE_WINDOW`], from the
/// drain's count of messages stored: a counter in memory, so the status file
/// reads nothing from the spool for it every second.
#[derive(Default)]
struct DrainRate {
    samples: VecDeque<(Instant, u64)>,
}

impl DrainRate {
    /// The rate with `delivered` (messages stored since start) at `now`;
    /// `None` until the samples span a second.
    fn sample(&mut self, delivered: u64, now: Instant) -> Option<f64> {
        self.samples.push_back((now, delivered));
        while self
            .samples
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > RATE_WINDOW)
        {
            self.samples.pop_front();
        }
        let (first_at, first) = *self.samples.front()?;
        let seconds = now.duration_since(first_at).as_secs_f64();
        if seconds < 1.0 {
            return None;
        }
        let rate = delivered.saturating_sub(first) as f64 / seconds;
        Some((rate * 10.0).round() / 10.0)
    }
}

#[cfg(test)]
mod tests;
