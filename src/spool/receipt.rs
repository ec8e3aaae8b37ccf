//! Commit receipts without a channel per message.
//!
//! Each [`Appender`](super::Appender) numbers its appends 1, 2, 3, … and
//! shares a [`Tracker`] with the writer. The writer commits appends in the
//! order they arrive, so after a commit it only has to raise the tracker's
//! "committed through" number and ring its doorbell once; a receipt is just
//! the tracker and its sequence number. An append the writer drops without
//! committing (it stopped or died) marks the tracker lost, so no receipt
//! after it can ever be mistaken for committed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use super::SpoolError;

/// What one appender and the writer share.
#[derive(Debug)]
pub(super) struct Tracker {
    /// The highest sequence number committed so far.
    committed: AtomicU64,
    /// Set when an append of this stream was dropped uncommitted.
    lost: AtomicBool,
    /// Rung after every commit that touched this stream; capacity 1, so a
    /// ring nobody waited for costs nothing.
    doorbell: async_channel::Sender<()>,
    bell: async_channel::Receiver<()>,
}

impl Tracker {
    pub(super) fn new() -> Arc<Tracker> {
        let (doorbell, bell) = async_channel::bounded(1);
        Arc::new(Tracker {
            committed: AtomicU64::new(0),
            lost: AtomicBool::new(false),
            doorbell,
            bell,
        })
    }

    /// The writer committed every append of this stream up to `seq`.
    pub(super) fn mark_committed(&self, seq: u64) {
        self.committed.fetch_max(seq, Ordering::Release);
    }

    pub(super) fn ring(&self) {
        let _ = self.doorbell.try_send(());
    }

    fn state(&self, seq: u64) -> Option<Result<(), SpoolError>> {
        if self.committed.load(Ordering::Acquire) >= seq {
            Some(Ok(()))
        } else if self.lost.load(Ordering::Acquire) {
            Some(Err(SpoolError::Closed))
        } else {
            None
        }
    }
}

/// Marks its append's stream lost if the append is dropped before its commit.
pub(super) struct Pending {
    tracker: Arc<Tracker>,
    seq: u64,
}

impl Pending {
    pub(super) fn new(tracker: Arc<Tracker>, seq: u64) -> Pending {
        Pending { tracker, seq }
    }

    pub(super) fn tracker(&self) -> &Tracker {
        &self.tracker
    }

    pub(super) fn seq(&self) -> u64 {
        self.seq
    }

    /// The append never reached the writer; no receipt was handed out for it.
    pub(super) fn disarm(mut self) {
        self.seq = 0;
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.tracker.committed.load(Ordering::Acquire) < self.seq {
            self.tracker.lost.store(true, Ordering::Release);
            self.tracker.ring();
        }
    }
}

/// Resolves when the record it was made for is committed to disk.
///
/// One waiter at a time per appender: the receipts of one appender share a doorbell.
#[derive(Debug)]
pub struct CommitReceipt {
    tracker: Arc<Tracker>,
    seq: u64,
}

impl CommitReceipt {
    pub(super) fn new(tracker: Arc<Tracker>, seq: u64) -> CommitReceipt {
        CommitReceipt { tracker, seq }
    }

    /// Ok once the transaction holding the record has committed; an error
    /// when the writer stopped before it did (the record may be lost: never
    /// acknowledge it).
    pub async fn committed(&self) -> Result<(), SpoolError> {
        loop {
            if let Some(result) = self.tracker.state(self.seq) {
                return result;
            }
            // The tracker holds the sender too, so this only ever waits for a ring.
            let _ = self.tracker.bell.recv().await;
        }
    }

    /// True when the record has been committed; never blocks.
    pub fn try_committed(&self) -> bool {
        matches!(self.tracker.state(self.seq), Some(Ok(())))
    }

    /// Blocking form of [`CommitReceipt::committed`], for threads and tests.
    pub fn wait(self) -> Result<(), SpoolError> {
        futures_lite::future::block_on(self.committed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipts_resolve_in_order_of_their_sequence() {
        let tracker = Tracker::new();
        let first = CommitReceipt::new(Arc::clone(&tracker), 1);
        let second = CommitReceipt::new(Arc::clone(&tracker), 2);
        assert!(!first.try_committed());
        tracker.mark_committed(1);
        tracker.ring();
        assert!(first.try_committed());
        assert!(!second.try_committed());
        tracker.mark_committed(2);
        assert!(second.wait().is_ok());
    }

    #[test]
    fn an_append_dropped_uncommitted_is_never_taken_for_committed() {
        let tracker = Tracker::new();
        let receipt = CommitReceipt::new(Arc::clone(&tracker), 1);
        drop(Pending::new(Arc::clone(&tracker), 1));
        assert!(!receipt.try_committed());
        assert!(matches!(receipt.wait(), Err(SpoolError::Closed)));
    }

    #[test]
    fn a_committed_or_disarmed_append_leaves_the_stream_intact() {
        let tracker = Tracker::new();
        Pending::new(Arc::clone(&tracker), 0).disarm();
        let pending = Pending::new(Arc::clone(&tracker), 1);
        tracker.mark_committed(1);
        drop(pending);
        assert!(CommitReceipt::new(tracker, 1).wait().is_ok());
    }
}
