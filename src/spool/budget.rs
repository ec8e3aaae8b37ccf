//! The bytes of records between the sessions and the disk: queued for the
//! writer or in its group, not yet committed. The queue's count bound alone
//! let 1,024 records of up to a packet's size each (gigabytes) wait in memory;
//! this bounds their bytes too. Appenders wait for room (backpressure, like
//! a full queue); the writer gives the room back once a group is committed.

use std::sync::atomic::{AtomicU64, Ordering};

use event_listener::Event;

#[derive(Debug)]
pub(super) struct ByteBudget {
    max: u64,
    used: AtomicU64,
    freed: Event,
}

impl ByteBudget {
    pub(super) fn new(max: u64) -> ByteBudget {
        ByteBudget {
            max,
            used: AtomicU64::new(0),
            freed: Event::new(),
        }
    }

    pub(super) fn max(&self) -> u64 {
        self.max
    }

    /// Takes `n` bytes, waiting while they do not fit. A record larger than
    /// the whole budget goes when nothing else is taken, so it is never stuck.
    /// `on_wait` runs once before the first wait (to ask the writer to commit).
    pub(super) async fn take(&self, n: u64, on_wait: impl FnOnce()) {
        let mut on_wait = Some(on_wait);
        loop {
            if self.try_take(n) {
                return;
            }
            let listener = self.freed.listen();
            // Freed between the try and the listen: no wake-up would come.
            if self.try_take(n) {
                return;
            }
            if let Some(on_wait) = on_wait.take() {
                on_wait();
            }
            listener.await;
        }
    }

    fn try_take(&self, n: u64) -> bool {
        let mut used = self.used.load(Ordering::Acquire);
        loop {
            if used != 0 && used.saturating_add(n) > self.max {
                return false;
            }
            match self.used.compare_exchange_weak(
                used,
                used.saturating_add(n),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(now) => used = now,
            }
        }
    }

    /// Gives `n` bytes back (a committed group, or records that will never be).
    pub(super) fn give(&self, n: u64) {
        if n == 0 {
            return;
        }
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                Some(used.saturating_sub(n))
            });
        self.freed.notify(usize::MAX);
    }

    /// Bytes taken now.
    #[cfg(test)]
    pub(super) fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn takes_until_full_then_waits_for_room_given_back() {
        use std::sync::atomic::AtomicBool;
        let budget = Arc::new(ByteBudget::new(100));
        futures_lite::future::block_on(budget.take(60, || unreachable!("fits")));
        assert!(!budget.try_take(41));
        let asked = Arc::new(AtomicBool::new(false));
        let waiter = {
            let (budget, asked) = (Arc::clone(&budget), Arc::clone(&asked));
            std::thread::spawn(move || {
                futures_lite::future::block_on(
                    budget.take(41, || asked.store(true, Ordering::SeqCst)),
                );
            })
        };
        // Room is given back only once the waiter asked for a commit: it
        // does so just before it waits, and cannot finish until then.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !asked.load(Ordering::SeqCst) {
            assert!(
                std::time::Instant::now() < deadline,
                "the waiter never asked for a commit"
            );
            std::thread::yield_now();
        }
        assert!(!waiter.is_finished(), "it took room that was not there");
        assert_eq!(budget.used(), 60);
        budget.give(60);
        waiter.join().unwrap();
        assert_eq!(budget.used(), 41);
    }

    #[test]
    fn a_record_larger_than_the_budget_goes_alone() {
        let budget = ByteBudget::new(100);
        futures_lite::future::block_on(budget.take(500, || unreachable!("nothing else taken")));
        assert_eq!(budget.used(), 500);
        assert!(!budget.try_take(1));
        budget.give(500);
        assert!(budget.try_take(1));
    }
}
