//! One handle that tells every stage to stop: SIGINT/SIGTERM or a test's request.
//!
//! Stages poll [`Shutdown::is_requested`], or wait on it (async, or from a
//! blocking thread with a timeout), or have their own wait woken by it
//! ([`Shutdown::on_request`]). A second signal exits the process at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_lite::FutureExt;

/// Cloneable; every clone sees the same request.
#[derive(Clone)]
pub struct Shutdown {
    requested: Arc<AtomicBool>,
    /// Closed (never sent on) when shutdown is requested: closing wakes every waiter.
    trigger: async_channel::Sender<()>,
    waiter: async_channel::Receiver<()>,
    /// Run once, when shutdown is requested (see [`Shutdown::on_request`]).
    wakes: Arc<Mutex<Vec<Wake>>>,
}

type Wake = Box<dyn Fn() + Send + Sync>;

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::new()
    }
}

impl Shutdown {
    pub fn new() -> Shutdown {
        let (trigger, waiter) = async_channel::bounded(1);
        Shutdown {
            requested: Arc::new(AtomicBool::new(false)),
            trigger,
            waiter,
            wakes: Arc::default(),
        }
    }

    pub fn request(&self) {
        self.requested.store(true, Ordering::SeqCst);
        self.trigger.close();
        let wakes = std::mem::take(&mut *self.wakes.lock().unwrap_or_else(PoisonError::into_inner));
        for wake in wakes {
            wake();
        }
    }

    /// Runs `wake` when shutdown is requested, or at once if it already was.
    /// For a thread that sleeps on a condition variable of its own: `wake`
    /// notifies it (holding its mutex, so the notice cannot slip between the
    /// sleeper's look at [`Shutdown::is_requested`] and its wait), and the
    /// thread need not wake now and then to look.
    pub fn on_request(&self, wake: impl Fn() + Send + Sync + 'static) {
        let mut wakes = self.wakes.lock().unwrap_or_else(PoisonError::into_inner);
        if self.is_requested() {
            drop(wakes);
            wake();
        } else {
            wakes.push(Box::new(wake));
        }
    }

    pub fn is_requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    /// Resolves once shutdown has been requested.
    pub async fn wait(&self) {
        // recv fails only when the channel is closed, which `request` does.
        let _ = self.waiter.recv().await;
    }

    /// Blocks up to `timeout`; true when shutdown was requested. For blocking threads.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        if self.is_requested() {
            return true;
        }
        smol::block_on(
            async {
                self.wait().await;
                true
            }
            .or(async {
                async_io::Timer::after(timeout).await;
                false
            }),
        )
    }

    /// Requests shutdown on the first SIGINT/SIGTERM; exits with code 130 on the second.
    pub fn on_signals(&self) -> std::io::Result<()> {
        use std::io::Read;
        use std::os::unix::net::UnixStream;

        use signal_hook::consts::{SIGINT, SIGTERM};
        // Registered before the flag, so it sees the flag as the first signal left it:
        // false on the first signal, true on the second, which exits.
        let seen_one = Arc::new(AtomicBool::new(false));
        // signal-hook writes a byte into this pipe; a plain thread blocks on it.
        let (mut read_end, write_end) = UnixStream::pair()?;
        for signal in [SIGINT, SIGTERM] {
            signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(&seen_one))?;
            signal_hook::flag::register(signal, Arc::clone(&seen_one))?;
            signal_hook::low_level::pipe::register(signal, write_end.try_clone()?)?;
        }
        let shutdown = self.clone();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                let mut byte = [0u8; 1];
                if read_end.read(&mut byte).is_ok() {
                    log::info!("signal received: shutting down (a second signal exits at once)");
                    shutdown.request();
                }
            })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    #[test]
    fn a_request_runs_each_wake_once_and_a_late_one_at_once() {
        let shutdown = Shutdown::new();
        let n_woken = Arc::new(AtomicUsize::new(0));
        let count = |n_woken: &Arc<AtomicUsize>| {
            let n_woken = Arc::clone(n_woken);
            move || {
                n_woken.fetch_add(1, Ordering::SeqCst);
            }
        };
        shutdown.on_request(count(&n_woken));
        shutdown.clone().on_request(count(&n_woken));
        assert_eq!(n_woken.load(Ordering::SeqCst), 0);
        shutdown.request();
        assert_eq!(n_woken.load(Ordering::SeqCst), 2);
        shutdown.request();
        assert_eq!(n_woken.load(Ordering::SeqCst), 2, "each wake runs once");
        shutdown.on_request(count(&n_woken));
        assert_eq!(
            n_woken.load(Ordering::SeqCst),
            3,
            "registered after the request"
        );
    }

    #[test]
    fn a_wake_ends_a_sleep_on_another_condition_variable() {
        let shutdown = Shutdown::new();
        let pair = Arc::new((Mutex::new(()), std::sync::Condvar::new()));
        shutdown.on_request({
            let pair = Arc::clone(&pair);
            move || {
                let _guard = pair.0.lock().unwrap();
                pair.1.notify_all();
            }
        });
        let sleeper = {
            let (pair, shutdown) = (Arc::clone(&pair), shutdown.clone());
            std::thread::spawn(move || {
                let guard = pair.0.lock().unwrap();
                // An hour, unless the wake ends it.
                let (_guard, timeout) = pair
                    .1
                    .wait_timeout_while(guard, Duration::from_secs(3600), |_| {
                        !shutdown.is_requested()
                    })
                    .unwrap();
                timeout.timed_out()
            })
        };
        shutdown.request();
        assert!(
            !sleeper.join().unwrap(),
            "woken by the request, not the hour"
        );
    }
}
