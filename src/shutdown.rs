//! One handle that tells every stage to stop: SIGINT/SIGTERM or a test's request.
//!
//! Stages poll [`Shutdown::is_requested`], or wait on it (async, or from a
//! blocking thread with a timeout). A second signal exits the process at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_lite::FutureExt;

/// Cloneable; every clone sees the same request.
#[derive(Clone)]
pub struct Shutdown {
    requested: Arc<AtomicBool>,
    /// Closed (never sent on) when shutdown is requested: closing wakes every waiter.
    trigger: async_channel::Sender<()>,
    waiter: async_channel::Receiver<()>,
}

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
        }
    }

    pub fn request(&self) {
        self.requested.store(true, Ordering::SeqCst);
        self.trigger.close();
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
