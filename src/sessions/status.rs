//! What each session is doing right now: connected or not, since when, why not, counts.
//!
//! The supervisor owns one [`StatusBoard`]; sessions update their own entry.
//! It is a snapshot for people and tests (a later `status` command and the
//! status table read it), not a channel: nothing waits on it. Entries live as
//! long as the broker is in the catalog, across restarts.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::catalog::BrokerId;

/// One broker's session, as last reported by the session itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionStatus {
    /// True between a CONNACK and the next connection error.
    pub connected: bool,
    /// When `connected` last changed (or the session started).
    pub since: SystemTime,
    /// The most recent connection error, in words; kept after reconnecting.
    pub last_error: Option<String>,
    /// True while the last error was the broker refusing our credentials.
    pub auth_refused: bool,
    /// Successful CONNACKs since the broker entered the catalog.
    pub n_connects: u64,
    /// SUBACKs received: a subscription is live once this moves.
    pub n_subacks: u64,
    /// Messages handed to the spool.
    pub n_received: u64,
    /// Messages received but refused by a closed spool (lost: logged as errors).
    pub n_lost: u64,
}

impl SessionStatus {
    fn new() -> SessionStatus {
        SessionStatus {
            connected: false,
            since: SystemTime::now(),
            last_error: None,
            auth_refused: false,
            n_connects: 0,
            n_subacks: 0,
            n_received: 0,
            n_lost: 0,
        }
    }
}

/// Shared map BrokerId → [`SessionStatus`]. Clone freely; every clone sees the same map.
#[derive(Clone, Default)]
pub struct StatusBoard {
    sessions: Arc<Mutex<BTreeMap<BrokerId, SessionStatus>>>,
}

impl StatusBoard {
    pub fn new() -> StatusBoard {
        StatusBoard::default()
    }

    /// A copy of every entry, sorted by broker id.
    pub fn snapshot(&self) -> BTreeMap<BrokerId, SessionStatus> {
        self.lock().clone()
    }

    /// A copy of one broker's entry.
    pub fn get(&self, id: BrokerId) -> Option<SessionStatus> {
        self.lock().get(&id).cloned()
    }

    /// Applies `change` to `id`'s entry, creating it if missing. Never blocks for
    /// long: the lock is held only for `change`, which must not await or do IO.
    pub(crate) fn update(&self, id: BrokerId, change: impl FnOnce(&mut SessionStatus)) {
        change(self.lock().entry(id).or_insert_with(SessionStatus::new));
    }

    pub(crate) fn remove(&self, id: BrokerId) {
        self.lock().remove(&id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<BrokerId, SessionStatus>> {
        // A panic while holding the lock leaves plain counters behind: still usable.
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }
}
