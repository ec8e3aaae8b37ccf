//! The sessions' shared read tick (`mqtt.read_pause`, see [`super::wire`]).
//!
//! A paused session reads again at the next instant of a grid all sessions
//! share, so one wake-up of the sessions' thread reads every paused broker.
//! The grid has one tokio timer, not one per paused session: tokio writes its
//! eventfd for every timer armed earlier than its next wake-up (a syscall and
//! one more `epoll_wait`), so a timer per session cost that once per session
//! and tick.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

/// The tick grid of one period, shared by the sessions of one gateway.
pub struct Ticks {
    period: Duration,
    origin: Instant,
    shared: Arc<Shared>,
}

/// The one timer, and the sessions waiting for it. It is polled with the
/// `Shared` waker, which wakes every waiting session when it fires.
#[derive(Default)]
struct Shared {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    waiting: Vec<Waker>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Wake for Shared {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Woken outside the lock: a session polled by its waker takes it again.
        let waiting = std::mem::take(&mut self.lock().waiting);
        for waker in waiting {
            waker.wake();
        }
    }
}

impl Ticks {
    /// `period` zero: no pause (see [`Ticks::next`]).
    pub fn new(period: Duration) -> Ticks {
        Ticks {
            period,
            origin: Instant::now(),
            shared: Arc::default(),
        }
    }

    /// The next tick after now; `None` for a zero period.
    pub fn next(&self) -> Option<Instant> {
        let period_ns = self.period.as_nanos();
        if period_ns == 0 {
            return None;
        }
        let ticks = self.origin.elapsed().as_nanos() / period_ns + 1;
        let since_origin = u64::try_from(ticks * period_ns).unwrap_or(u64::MAX);
        Some(self.origin + Duration::from_nanos(since_origin))
    }

    /// Resolves at `tick` (an instant from [`Ticks::next`]). Must be polled
    /// inside a tokio runtime: the timer is tokio's.
    pub fn wait(&self, tick: Instant) -> Tick<'_> {
        Tick { ticks: self, tick }
    }
}

/// The future of [`Ticks::wait`]. Dropping it early is fine: the timer then
/// fires for the others (or for nobody, once).
pub struct Tick<'a> {
    ticks: &'a Ticks,
    tick: Instant,
}

impl Future for Tick<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.tick {
            return Poll::Ready(());
        }
        let shared = &self.ticks.shared;
        let mut state = shared.lock();
        let deadline = tokio::time::Instant::from_std(self.tick);
        match &mut state.timer {
            // An earlier or the same tick is armed: its firing polls us again.
            Some(timer) if !timer.is_elapsed() && timer.deadline() <= deadline => {}
            Some(timer) => timer.as_mut().reset(deadline),
            None => state.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
        if !state
            .waiting
            .iter()
            .any(|waker| waker.will_wake(cx.waker()))
        {
            state.waiting.push(cx.waker().clone());
        }
        let timer_waker = Waker::from(Arc::clone(shared));
        let fired = match &mut state.timer {
            Some(timer) => timer
                .as_mut()
                .poll(&mut Context::from_waker(&timer_waker))
                .is_ready(),
            None => false,
        };
        drop(state);
        if fired {
            // Passed while we armed it: wake the others, and look again ourselves.
            shared.wake_by_ref();
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_shared_instants_after_now() {
        assert_eq!(Ticks::new(Duration::ZERO).next(), None);
        let period = Duration::from_millis(50);
        let ticks = Ticks::new(period);
        let before = Instant::now();
        let a = ticks.next().unwrap();
        let b = ticks.next().unwrap();
        assert!(a > before && a <= Instant::now() + period);
        // Every session gets an instant of the same grid: the same tick, or a
        // later one when ticks passed between the calls (a slow machine).
        assert!(b >= a, "{a:?} {b:?}");
        assert_eq!((b - a).as_nanos() % period.as_nanos(), 0, "{a:?} {b:?}");
    }

    #[test]
    fn every_waiter_of_a_tick_wakes() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let ticks = Arc::new(Ticks::new(Duration::from_millis(20)));
        runtime.block_on(async {
            for _ in 0..3 {
                let tick = ticks.next().unwrap();
                // Five tasks: five wakers, as five sessions have.
                let waiters: Vec<_> = (0..5)
                    .map(|_| {
                        let ticks = Arc::clone(&ticks);
                        tokio::spawn(async move { ticks.wait(tick).await })
                    })
                    .collect();
                for waiter in waiters {
                    tokio::time::timeout(Duration::from_secs(10), waiter)
                        .await
                        .expect("every waiter woke at its tick")
                        .unwrap();
                }
                assert!(Instant::now() >= tick);
                assert!(ticks.shared.lock().waiting.is_empty());
            }
        });
    }

    #[test]
    fn a_waiter_dropped_early_leaves_the_timer_to_the_others() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let ticks = Ticks::new(Duration::from_millis(20));
        runtime.block_on(async {
            let tick = ticks.next().unwrap();
            let mut dropped = Box::pin(ticks.wait(tick));
            // Polled once (it armed the timer), then dropped.
            assert!(futures_lite::future::poll_once(dropped.as_mut())
                .await
                .is_none());
            drop(dropped);
            tokio::time::timeout(Duration::from_secs(10), ticks.wait(tick))
                .await
                .expect("the remaining waiter woke");
        });
    }
}
