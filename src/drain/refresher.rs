//! The drain's credentials thread, "drain-credentials": fetches AWS
//! credentials, refreshes temporary ones before they expire, and hands the
//! current ones to the drain through a [`CredentialsHandle`].
//!
//! - Credentials with an expiration are fetched again 5–7 minutes before it
//!   (jittered, so a fleet does not refresh in step); lifetimes under 15
//!   minutes are refreshed after 50–60% of their lifetime.
//! - A failed refresh keeps the current credentials until they expire and
//!   retries with backoff (0.5 s doubling, jittered, at most
//!   `kinesis.max_backoff`, and at most a third of the time they have left).
//! - The drain never signs with expired credentials: [`CredentialsHandle::usable`]
//!   gives none from a few seconds before expiry (at most 5 s, a quarter of
//!   a short lifetime), and records wait in the spool meanwhile.
//! - `ExpiredTokenException` from Kinesis drops the current ones and asks for
//!   new ones at once ([`CredentialsHandle::expired`]).
//!
//! Fetching is blocking IO (HTTP, a `credential_process`), so it has its own
//! thread on the drain's side: it never runs on the sessions' executor, and a
//! slow credentials provider never holds a `PutRecords` round. The thread is
//! not joined at shutdown: a fetch in flight must not hold the gateway's exit.
//! Secrets stay inside [`Credentials`]; the status shows the source and expiry only.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::credentials::iot::IotProvider;
use super::credentials::{self, Credentials, CredentialsError};
use super::DrainError;
use crate::clock::{self, AwsOffset};
use crate::config::CredentialsConfig;
use crate::shutdown::Shutdown;

/// Credentials expiring later than this are refreshed [`LEAD`] (+ jitter) before expiry.
const LONG_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// How long before expiry long-lived credentials are refreshed, at least.
const LEAD: Duration = Duration::from_secs(5 * 60);
/// Up to this much earlier still, at random.
const LEAD_JITTER: Duration = Duration::from_secs(2 * 60);
/// First pause after a failed fetch; doubles.
const RETRY_BASE: Duration = Duration::from_millis(500);
/// The shortest pause between fetches after a failure.
const RETRY_MIN: Duration = Duration::from_millis(100);
/// Credentials are not used for signing this close to their expiry (or a
/// quarter of their lifetime, if less): a request takes time to arrive.
const SIGNING_MARGIN: Duration = Duration::from_secs(5);
/// The longest the thread sleeps without a fetch due; a refresh asked for and
/// shutdown wake it earlier.
const TICK: Duration = Duration::from_secs(60);

/// When to fetch again after credentials valid for `lifetime` arrived.
/// `unit` is a random number in `[0, 1)`.
pub fn refresh_after(lifetime: Duration, unit: f64) -> Duration {
    let unit = unit.clamp(0.0, 1.0);
    if lifetime >= LONG_LIFETIME {
        lifetime - LEAD - LEAD_JITTER.mul_f64(unit)
    } else {
        lifetime.mul_f64(0.5 + 0.1 * unit)
    }
}

/// The pause before fetch number `n_failures + 1` after `n_failures` failures
/// in a row, with `left` the time the current credentials still have (if any).
pub fn retry_after(n_failures: u32, max: Duration, left: Option<Duration>, unit: f64) -> Duration {
    let ceiling = RETRY_BASE
        .saturating_mul(1u32 << n_failures.saturating_sub(1).min(20))
        .min(max)
        .min(left.map_or(Duration::MAX, |left| left / 3));
    // Half fixed, half random: no two gateways in step, never a busy loop.
    ceiling
        .mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
        .max(RETRY_MIN)
}

/// How long before expiry credentials valid for `lifetime` stop being used.
pub fn signing_margin(lifetime: Duration) -> Duration {
    SIGNING_MARGIN.min(lifetime / 4)
}

/// Where the credentials come from, ready to fetch.
enum Source {
    Auto,
    Iot(IotProvider),
}

impl Source {
    fn fetch(&self, aws_offset_ms: i64) -> Result<Credentials, CredentialsError> {
        match self {
            Source::Auto => credentials::load(aws_offset_ms),
            Source::Iot(provider) => provider.fetch(aws_offset_ms),
        }
    }

    fn describe(&self) -> String {
        match self {
            Source::Auto => "the AWS credential chain (auto)".into(),
            Source::Iot(provider) => provider.source().to_owned(),
        }
    }
}

/// What `status` and `check` show of the credentials: never a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialsStatus {
    /// Where the current credentials came from; else what is configured.
    pub source: String,
    /// How long the current ones have left; `None` when they do not expire
    /// (or there are none: see `valid`).
    pub expires_in: Option<Duration>,
    /// Whether the drain may sign with them now.
    pub valid: bool,
    /// The last failed fetch, until one succeeds.
    pub last_error: Option<String>,
}

/// The current credentials, shared by the credentials thread (writes), the
/// drain (signs) and the status file (shows). Cheap to clone.
#[derive(Clone, Default)]
pub struct CredentialsHandle {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// Rung when credentials arrive or a refresh is asked for.
    changed: Condvar,
}

#[derive(Default)]
struct State {
    current: Option<Held>,
    /// What is configured, until something was fetched.
    configured: String,
    refresh_requested: bool,
    last_error: Option<String>,
}

struct Held {
    credentials: Credentials,
    /// The drain stops signing with them here (before they expire).
    usable_until: Option<Instant>,
}

impl CredentialsHandle {
    pub fn new() -> CredentialsHandle {
        CredentialsHandle::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Credentials the drain may sign with now, if any.
    pub fn usable(&self) -> Option<Credentials> {
        usable_in(&self.lock(), Instant::now())
    }

    /// [`Self::usable`], waiting up to `timeout` for some to arrive.
    pub fn wait_usable(&self, timeout: Duration) -> Option<Credentials> {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        loop {
            let now = Instant::now();
            if let Some(credentials) = usable_in(&state, now) {
                return Some(credentials);
            }
            let left = deadline.checked_duration_since(now)?;
            state = self
                .shared
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }

    /// Asks the credentials thread to fetch again now (Kinesis refused them).
    pub fn refresh_now(&self) {
        self.lock().refresh_requested = true;
        self.shared.changed.notify_all();
    }

    /// Kinesis said `credentials` expired: they are not used again, and new
    /// ones are fetched at once.
    pub fn expired(&self, credentials: &Credentials) {
        let mut state = self.lock();
        if let Some(held) = &mut state.current {
            if held.credentials.access_key_id() == credentials.access_key_id() {
                held.usable_until = Some(Instant::now());
            }
        }
        state.refresh_requested = true;
        drop(state);
        self.shared.changed.notify_all();
    }

    /// The source, expiry and last error, for the status file and `check`.
    pub fn status(&self) -> CredentialsStatus {
        let state = self.lock();
        let now = Instant::now();
        match &state.current {
            Some(held) => CredentialsStatus {
                source: held.credentials.source().to_owned(),
                expires_in: held.credentials.expires_in(now),
                valid: usable_in(&state, now).is_some(),
                last_error: state.last_error.clone(),
            },
            None => CredentialsStatus {
                source: state.configured.clone(),
                expires_in: None,
                valid: false,
                last_error: state.last_error.clone(),
            },
        }
    }

    fn store(&self, credentials: Credentials) {
        let now = Instant::now();
        let usable_until = credentials
            .expires_in(now)
            .map(|lifetime| now + lifetime.saturating_sub(signing_margin(lifetime)));
        let mut state = self.lock();
        state.current = Some(Held {
            credentials,
            usable_until,
        });
        state.last_error = None;
        drop(state);
        self.shared.changed.notify_all();
    }
}

fn usable_in(state: &State, now: Instant) -> Option<Credentials> {
    let held = state.current.as_ref()?;
    match held.usable_until {
        Some(until) if until <= now => None,
        _ => Some(held.credentials.clone()),
    }
}

/// One fetch from the configured source, as `check` tries it.
pub fn fetch_once(config: &CredentialsConfig) -> Result<Credentials, CredentialsError> {
    match config {
        CredentialsConfig::Auto => credentials::load(0),
        CredentialsConfig::Iot(iot) => IotProvider::new(iot)?.fetch(0),
    }
}

/// `{source}` or `{source}, expires in 54m`: where credentials came from, for people.
pub fn describe(credentials: &Credentials) -> String {
    match credentials.expires_in(Instant::now()) {
        Some(left) => format!(
            "{}, expires in {}",
            credentials.source(),
            clock::describe_duration(left)
        ),
        None => credentials.source().to_owned(),
    }
}

/// Loads the first credentials (for `auto`, an error stops the start: nothing
/// anywhere) and starts the thread that keeps them fresh, publishing them in `handle`.
pub fn start(
    config: &CredentialsConfig,
    handle: &CredentialsHandle,
    aws_offset: AwsOffset,
    max_backoff: Duration,
    shutdown: Shutdown,
) -> Result<JoinHandle<()>, DrainError> {
    let source = match config {
        CredentialsConfig::Auto => Source::Auto,
        CredentialsConfig::Iot(iot) => {
            Source::Iot(IotProvider::new(iot).map_err(DrainError::Credentials)?)
        }
    };
    handle.lock().configured = source.describe();
    let first_fetch = match &source {
        Source::Auto => {
            let credentials = source
                .fetch(aws_offset.get())
                .map_err(DrainError::Credentials)?;
            log_arrival(&credentials);
            handle.store(credentials);
            false
        }
        // A gateway booting without its uplink still starts, and spools:
        // the first fetch is the thread's, retried until it succeeds.
        Source::Iot(_) => true,
    };
    // The thread sleeps until a fetch is due: shutdown wakes it.
    shutdown.on_request({
        let handle = handle.clone();
        move || {
            let _state = handle.lock();
            handle.shared.changed.notify_all();
        }
    });
    let keeper = Keeper {
        handle: handle.clone(),
        source,
        aws_offset,
        max_backoff,
        shutdown,
        n_failures: 0,
        next_fetch: if first_fetch {
            Some(Instant::now())
        } else {
            next_refresh(handle)
        },
    };
    std::thread::Builder::new()
        .name("drain-credentials".into())
        .spawn(move || keeper.run())
        .map_err(|error| DrainError::Thread {
            name: "drain-credentials",
            error,
        })
}

fn log_arrival(credentials: &Credentials) {
    match credentials.expires_in(Instant::now()) {
        Some(left) => log::info!(
            "drain: aws credentials from {}, valid for {}",
            credentials.source(),
            clock::describe_duration(left)
        ),
        None => log::info!("drain: aws credentials from {}", credentials.source()),
    }
}

/// When the current credentials should be fetched again; `None`: they do not expire.
fn next_refresh(handle: &CredentialsHandle) -> Option<Instant> {
    let state = handle.lock();
    let held = state.current.as_ref()?;
    let now = Instant::now();
    let lifetime = held.credentials.expires_in(now)?;
    Some(now + refresh_after(lifetime, fastrand::f64()))
}

/// The thread's state.
struct Keeper {
    handle: CredentialsHandle,
    source: Source,
    aws_offset: AwsOffset,
    max_backoff: Duration,
    shutdown: Shutdown,
    n_failures: u32,
    /// When to fetch next; `None`: only when asked.
    next_fetch: Option<Instant>,
}

impl Keeper {
    fn run(mut self) {
        while !self.shutdown.is_requested() {
            if !self.due() {
                continue;
            }
            match self.source.fetch(self.aws_offset.get()) {
                Ok(credentials) => {
                    if self.n_failures > 0 {
                        log::info!(
                            "drain: aws credentials fetched again after {} failed attempts",
                            self.n_failures
                        );
                    }
                    self.n_failures = 0;
                    log_arrival(&credentials);
                    self.handle.store(credentials);
                    self.next_fetch = next_refresh(&self.handle);
                }
                Err(error) => self.failed(error),
            }
        }
    }

    /// Waits (a tick at most) until a fetch is due; true when it is.
    fn due(&mut self) -> bool {
        let mut state = self.handle.lock();
        let now = Instant::now();
        if state.refresh_requested || self.next_fetch.is_some_and(|at| at <= now) {
            state.refresh_requested = false;
            return true;
        }
        // Looked at under the lock shutdown's wake takes, so it cannot slip by.
        if self.shutdown.is_requested() {
            return false;
        }
        let wait = self
            .next_fetch
            .map_or(TICK, |at| at.saturating_duration_since(now).min(TICK));
        drop(
            self.handle
                .shared
                .changed
                .wait_timeout(state, wait)
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        false
    }

    fn failed(&mut self, error: CredentialsError) {
        self.n_failures = self.n_failures.saturating_add(1);
        let now = Instant::now();
        let (left, valid) = {
            let state = self.handle.lock();
            let left = state
                .current
                .as_ref()
                .and_then(|held| held.usable_until)
                .map(|until| until.saturating_duration_since(now));
            (left, usable_in(&state, now).is_some())
        };
        let pause = retry_after(
            self.n_failures,
            self.max_backoff,
            left.filter(|left| !left.is_zero()),
            fastrand::f64(),
        );
        self.next_fetch = Some(now + pause);
        if self.n_failures.is_power_of_two() {
            match (valid, left) {
                (true, Some(left)) => log::warn!(
                    "drain: cannot fetch aws credentials ({} failures): {error}; the current ones \
                     serve {} more, retrying",
                    self.n_failures,
                    clock::describe_duration(left)
                ),
                (true, None) => log::warn!(
                    "drain: cannot fetch aws credentials again ({} failures): {error}; keeping the current ones",
                    self.n_failures
                ),
                (false, _) => log::error!(
                    "drain: no valid aws credentials ({} failures): {error}; records wait in the spool, retrying",
                    self.n_failures
                ),
            }
        }
        self.handle.lock().last_error = Some(error.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn an_hour_is_refreshed_five_to_seven_minutes_ahead() {
        let hour = 60 * MINUTE;
        assert_eq!(refresh_after(hour, 0.0), 55 * MINUTE);
        assert_eq!(refresh_after(hour, 0.5), 54 * MINUTE);
        assert!(refresh_after(hour, 0.999) > 53 * MINUTE);
        assert_eq!(refresh_after(15 * MINUTE, 0.0), 10 * MINUTE);
    }

    #[test]
    fn short_lifetimes_are_refreshed_at_half_to_sixty_percent() {
        let lifetime = Duration::from_secs(20);
        assert_eq!(refresh_after(lifetime, 0.0), Duration::from_secs(10));
        assert_eq!(refresh_after(lifetime, 1.0), Duration::from_secs(12));
        assert!(refresh_after(14 * MINUTE, 0.5) < 14 * MINUTE - LEAD);
    }

    #[test]
    fn retries_back_off_within_the_time_left() {
        let max = Duration::from_secs(30);
        assert_eq!(retry_after(1, max, None, 1.0), Duration::from_millis(500));
        assert_eq!(retry_after(2, max, None, 1.0), Duration::from_secs(1));
        assert_eq!(retry_after(4, max, None, 0.0), Duration::from_secs(2));
        assert_eq!(retry_after(40, max, None, 1.0), max);
        // Nine seconds left: retried at least three times before they run out.
        assert_eq!(
            retry_after(40, max, Some(Duration::from_secs(9)), 1.0),
            Duration::from_secs(3)
        );
        assert_eq!(
            retry_after(3, max, Some(Duration::from_millis(1)), 0.0),
            RETRY_MIN
        );
    }

    #[test]
    fn expired_credentials_are_never_handed_out() {
        let handle = CredentialsHandle::new();
        assert!(handle.usable().is_none());
        let now = Instant::now();
        let fresh = Credentials::new("ASIA1", crate::secret::Secret::new("s"), None, "test")
            .expiring(Some(now + Duration::from_secs(3600)));
        handle.store(fresh.clone());
        assert_eq!(handle.usable().unwrap().access_key_id(), "ASIA1");
        let status = handle.status();
        assert!(status.valid && status.source == "test", "{status:?}");
        assert!(status.expires_in.unwrap() > Duration::from_secs(3590));
        handle.expired(&fresh);
        assert!(handle.usable().is_none(), "Kinesis said they expired");
        assert!(handle.lock().refresh_requested);
        // Already expired when they arrive (a gateway clock far behind AWS's is
        // corrected by the answer's Date): not used.
        let stale = Credentials::new("ASIA2", crate::secret::Secret::new("s"), None, "test")
            .expiring(Some(Instant::now()));
        handle.store(stale);
        assert!(handle.usable().is_none());
        assert!(!handle.status().valid);
        assert_eq!(signing_margin(Duration::from_secs(3600)), SIGNING_MARGIN);
        assert_eq!(
            signing_margin(Duration::from_secs(8)),
            Duration::from_secs(2)
        );
    }
}
