//! The running gateway's session state, written where other processes can
//! read it: a small JSON file (`status.file`, read by `mqtt-kinesis-bridge
//! status`). The same per-broker lines feed `iot_data.mqtt_connection_status`
//! through the catalog thread, which owns the database connection.
//!
//! The file is rewritten when something changes and at least every
//! [`REWRITE_EVERY`], so `status` can tell a live gateway from a dead one by
//! its `written_at_ms`. It is replaced by rename and never fsynced: it
//! describes the moment, and a power cut loses nothing worth keeping. Its own
//! thread does the file and spool IO, so the executor never blocks on it.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};

use crate::catalog::BrokerId;
use crate::clock::{epoch_ms, AwsOffset};
use crate::drain::{CredentialsHandle, CredentialsStatus};
use crate::sessions::{SessionStatus, StatusBoard};
use crate::shutdown::Shutdown;
use crate::spool::SpoolReader;

/// How often the board is looked at.
const TICK: Duration = Duration::from_secs(1);
/// The file is rewritten at least this often, changed or not.
pub const REWRITE_EVERY: Duration = Duration::from_secs(10);
/// The window the drain rate is averaged over.
const RATE_WINDOW: Duration = Duration::from_secs(60);

/// One broker's line, as the file and the status table hold it.
pub fn broker_json(id: BrokerId, status: &SessionStatus) -> Value {
    json!({
        "broker_id": id,
        "connected": status.connected,
        "endpoint": status.endpoint,
        // 1-based, as the logs say "endpoint 2/3".
        "endpoint_index": status.endpoint_index + 1,
        "endpoint_count": status.n_endpoints,
        "since_ms": epoch_ms(status.since),
        "last_error": status.last_error,
        "received": status.n_received,
        "lost": status.n_lost,
        "last_message_at_ms": status.last_message_at.map(epoch_ms),
        "subscribed_topics": status.n_subscribed,
        "wedged_since_ms": status.wedged_since.map(epoch_ms),
    })
}

/// Starts the thread that keeps the status file current until shutdown; its
/// last write marks the gateway stopped.
pub fn start(
    path: PathBuf,
    gateway_id: String,
    board: StatusBoard,
    spool_path: PathBuf,
    aws_offset: AwsOffset,
    credentials: CredentialsHandle,
    shutdown: Shutdown,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let sources = Sources {
        board,
        spool_path,
        aws_offset,
        credentials,
    };
    std::thread::Builder::new()
        .name("status-file".into())
        .spawn(move || keep_file(path, gateway_id, sources, shutdown))
}

/// What the file is made of.
struct Sources {
    board: StatusBoard,
    spool_path: PathBuf,
    aws_offset: AwsOffset,
    credentials: CredentialsHandle,
}

/// The credentials' source and expiry (never a key or token). The expiry is
/// written in this machine's clock (now plus the time left), so `status`
/// computes "expires in" with the same clock; a change of a few ms between
/// rewrites is rounded away to the second so the file is not rewritten each tick.
pub fn credentials_json(status: &CredentialsStatus, now_ms: i64) -> Value {
    json!({
        "source": status.source,
        "valid": status.valid,
        "expires_at_ms": status
            .expires_in
            .map(|left| (now_ms + left.as_millis() as i64) / 1000 * 1000),
        "last_error": status.last_error,
    })
}

fn keep_file(path: PathBuf, gateway_id: String, sources: Sources, shutdown: Shutdown) {
    let Sources {
        board,
        spool_path,
        aws_offset,
        credentials,
    } = sources;
    let mut drain_rate = DrainRate::new(spool_path);
    let mut last_written: Option<(Value, Instant)> = None;
    let mut n_failures: u32 = 0;
    loop {
        let stopping = shutdown.is_requested();
        let brokers: Vec<Value> = board
            .snapshot()
            .iter()
            .map(|(id, status)| broker_json(*id, status))
            .collect();
        let state = json!({
            "gateway_id": gateway_id,
            "pid": std::process::id(),
            "running": !stopping,
            "drain_records_per_s": drain_rate.sample(),
            "clock_offset_ms": aws_offset.get(),
            "credentials": credentials_json(&credentials.status(), epoch_ms(SystemTime::now())),
            "brokers": brokers,
        });
        let due = match &last_written {
            None => true,
            Some((written, at)) => *written != state || at.elapsed() >= REWRITE_EVERY,
        };
        if due || stopping {
            let mut document = state.clone();
            document["written_at_ms"] = json!(epoch_ms(SystemTime::now()));
            match write_atomically(&path, &document.to_string()) {
                Ok(()) => {
                    if n_failures > 0 {
                        log::info!("status file {} written again", path.display());
                    }
                    n_failures = 0;
                }
                Err(error) => {
                    n_failures += 1;
                    if n_failures.is_power_of_two() {
                        log::warn!(
                            "cannot write the status file {}: {error} ({n_failures} failures)",
                            path.display()
                        );
                    }
                }
            }
            last_written = Some((state, Instant::now()));
        }
        if stopping {
            return;
        }
        shutdown.wait_timeout(TICK);
    }
}

fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let temporary = path.with_extension("json.new");
    // Made anew each time (a link planted at the temporary name is removed,
    // not followed), 0600, then renamed over the status file.
    let _ = std::fs::remove_file(&temporary);
    crate::files::create_private(&temporary)?.write_all(text.as_bytes())?;
    std::fs::rename(&temporary, path)
}

/// Records delivered per second over the last [`RATE_WINDOW`], from the spool's counters.
struct DrainRate {
    spool_path: PathBuf,
    reader: Option<SpoolReader>,
    samples: VecDeque<(Instant, u64)>,
}

impl DrainRate {
    fn new(spool_path: PathBuf) -> DrainRate {
        DrainRate {
            spool_path,
            reader: None,
            samples: VecDeque::new(),
        }
    }

    /// `None` until two samples exist (or while the spool cannot be read).
    fn sample(&mut self) -> Option<f64> {
        if self.reader.is_none() {
            self.reader = SpoolReader::open(&self.spool_path).ok();
        }
        let counters = self.reader.as_ref()?.counters();
        let Ok(counters) = counters else {
            self.reader = None;
            return None;
        };
        let delivered: u64 = counters.iter().map(|c| c.delivered).sum();
        let now = Instant::now();
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
