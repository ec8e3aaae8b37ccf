//! Where the catalog in use came from, for the metrics: the database or the
//! local snapshot, whether the database answers, and how old the snapshot is.
//!
//! The catalog thread writes it, any thread reads it; atomics only.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use crate::clock::epoch_ms;

/// The catalog the sessions were last given came from…
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// nowhere yet: no database read and no snapshot so far.
    None,
    /// a read of the database.
    Database,
    /// the snapshot, while the database could not be read.
    Snapshot,
}

impl Source {
    pub const LABELLED: [Source; 2] = [Source::Database, Source::Snapshot];

    pub fn label(self) -> &'static str {
        match self {
            Source::None => "none",
            Source::Database => "database",
            Source::Snapshot => "snapshot",
        }
    }
}

/// Shared view of the catalog thread's state. Clone freely.
#[derive(Clone, Debug, Default)]
pub struct CatalogState(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    /// 0 none, 1 database, 2 snapshot.
    source: AtomicU8,
    database_up: AtomicBool,
    /// When the catalog the snapshot holds was read from the database (Unix
    /// ms); 0 while this run has neither written nor loaded one.
    snapshot_taken_at_ms: AtomicI64,
}

impl CatalogState {
    pub fn source(&self) -> Source {
        match self.0.source.load(Ordering::Relaxed) {
            1 => Source::Database,
            2 => Source::Snapshot,
            _ => Source::None,
        }
    }

    /// True after a successful read, false after a failed one.
    pub fn database_up(&self) -> bool {
        self.0.database_up.load(Ordering::Relaxed)
    }

    /// When the snapshot's catalog was read from the database, if known.
    pub fn snapshot_taken_at_ms(&self) -> Option<i64> {
        Some(self.0.snapshot_taken_at_ms.load(Ordering::Relaxed)).filter(|ms| *ms != 0)
    }

    pub(crate) fn database_read(&self) {
        self.0.source.store(1, Ordering::Relaxed);
        self.0.database_up.store(true, Ordering::Relaxed);
    }

    pub(crate) fn database_failed(&self) {
        self.0.database_up.store(false, Ordering::Relaxed);
    }

    pub(crate) fn running_from_snapshot(&self, taken_at: SystemTime) {
        self.0.source.store(2, Ordering::Relaxed);
        self.snapshot_taken(taken_at);
    }

    pub(crate) fn snapshot_taken(&self, taken_at: SystemTime) {
        self.0
            .snapshot_taken_at_ms
            .store(epoch_ms(taken_at).max(1), Ordering::Relaxed);
    }
}
