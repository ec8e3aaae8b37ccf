//! What each session is doing right now: connected or not, since when, why not, counts.
//!
//! The supervisor owns one [`StatusBoard`]; sessions update their own entry.
//! It is a snapshot for people and tests (a later `status` command and the
//! status table read it), not a channel: nothing waits on it. Entries live as
//! long as the broker is in the catalog, across restarts. Each session writes
//! with the [`SessionTicket`] it was started with, so a retiring session's last
//! words never overwrite its successor's entry or revive a removed one.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::ids::BrokerId;

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
    /// UNSUBACKs received: an unsubscription is done once this moves.
    pub n_unsubacks: u64,
    /// Messages handed to the spool.
    pub n_received: u64,
    /// Messages received but refused by a closed spool (lost: logged as errors).
    pub n_lost: u64,
    /// The endpoint (`host:port`) connected to, or being tried.
    pub endpoint: Option<String>,
    /// Its index in the broker's endpoint list (0: the primary).
    pub endpoint_index: usize,
    pub n_endpoints: usize,
    /// When the last message was handed to the spool.
    pub last_message_at: Option<SystemTime>,
    /// Filters the broker accepted on the current connection.
    pub n_subscribed: usize,
    /// Since when every connection dies on the same unreadable message.
    pub wedged_since: Option<SystemTime>,
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
            n_unsubacks: 0,
            n_received: 0,
            n_lost: 0,
            endpoint: None,
            endpoint_index: 0,
            n_endpoints: 0,
            last_message_at: None,
            n_subscribed: 0,
            wedged_since: None,
        }
    }
}

/// Shared map BrokerId → [`SessionStatus`]. Clone freely; every clone sees the same map.
#[derive(Clone, Default)]
pub struct StatusBoard {
    /// Each entry with the generation of the session allowed to write it.
    sessions: Arc<Mutex<BTreeMap<BrokerId, (u64, SessionStatus)>>>,
    generations: Arc<std::sync::atomic::AtomicU64>,
}

/// The right of one session to write its broker's entry.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SessionTicket {
    id: BrokerId,
    generation: u64,
}

impl StatusBoard {
    pub fn new() -> StatusBoard {
        StatusBoard::default()
    }

    /// A copy of every entry, sorted by broker id.
    pub fn snapshot(&self) -> BTreeMap<BrokerId, SessionStatus> {
        self.lock()
            .iter()
            .map(|(id, (_, status))| (*id, status.clone()))
            .collect()
    }

    /// A copy of one broker's entry.
    pub fn get(&self, id: BrokerId) -> Option<SessionStatus> {
        self.lock().get(&id).map(|(_, status)| status.clone())
    }

    /// Hands `id`'s entry to a new session (creating the entry, or keeping its
    /// counters across a restart); earlier sessions' tickets stop working.
    pub(crate) fn issue_ticket(&self, id: BrokerId) -> SessionTicket {
        use std::sync::atomic::Ordering;
        let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        let mut sessions = self.lock();
        let entry = sessions
            .entry(id)
            .or_insert_with(|| (generation, SessionStatus::new()));
        entry.0 = generation;
        entry.1.connected = false;
        entry.1.since = SystemTime::now();
        SessionTicket { id, generation }
    }

    /// Applies `change` to the entry, if `ticket` still owns it. Never blocks for
    /// long: the lock is held only for `change`, which must not await or do IO.
    pub(crate) fn update(&self, ticket: SessionTicket, change: impl FnOnce(&mut SessionStatus)) {
        if let Some((generation, status)) = self.lock().get_mut(&ticket.id) {
            if *generation == ticket.generation {
                change(status);
            }
        }
    }

    pub(crate) fn remove(&self, id: BrokerId) {
        self.lock().remove(&id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<BrokerId, (u64, SessionStatus)>> {
        // A panic while holding the lock leaves plain counters behind: still usable.
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }
}
