//! Liveness for the systemd watchdog: the gateway pings only while every stage
//! can still make progress, so a wedged gateway is restarted instead of sitting
//! there looking alive.
//!
//! The ping task runs on the sessions' executor, so a blocked executor stops
//! the pings by itself. The blocking stages (spool writer, drain) mark the
//! stretches where they do work with a [`Heartbeat`]; a stage that has been
//! busy for longer than the watchdog timeout is wedged (a hung disk, a request
//! that outlived its own timeout). Waiting for work is not busy.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::shutdown::Shutdown;
use crate::systemd::Notifier;

/// The watchdog timeout when systemd sets none (`WatchdogSec=` of the shipped
/// unit): what `/health` holds the stages to outside systemd.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// When a stage started its current piece of work, if it is in one.
#[derive(Debug, Clone, Default)]
pub struct Heartbeat {
    /// Milliseconds since the process's first look at the clock ([`monotonic_ms`]) plus one; 0 while idle.
    busy_since: Arc<AtomicU64>,
}

/// Marks its stage busy until dropped. Owns its handle, so it borrows nothing
/// from the stage that holds it.
pub struct Busy(Arc<AtomicU64>);

impl Heartbeat {
    /// Busy from now until the guard is dropped.
    pub fn busy(&self) -> Busy {
        self.busy_since.store(monotonic_ms() + 1, Ordering::Relaxed);
        Busy(Arc::clone(&self.busy_since))
    }

    /// How long the current piece of work has been going on, if any.
    pub fn busy_for(&self) -> Option<Duration> {
        match self.busy_since.load(Ordering::Relaxed) {
            0 => None,
            since => Some(Duration::from_millis(
                monotonic_ms().saturating_sub(since - 1),
            )),
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.store(0, Ordering::Relaxed);
    }
}

fn monotonic_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// A stage the watchdog watches: its name, its heartbeat, and how long one
/// piece of its work may take before it counts as wedged.
pub type Stage = (&'static str, Heartbeat, Duration);

/// The first stage busy for longer than its limit, with how long.
pub fn wedged(stages: &[Stage]) -> Option<(&'static str, Duration)> {
    stages.iter().find_map(|(name, heartbeat, limit)| {
        heartbeat
            .busy_for()
            .filter(|busy| busy > limit)
            .map(|busy| (*name, busy))
    })
}

/// Pings systemd every half `timeout` while no stage is wedged, until shutdown.
pub async fn run(notifier: Notifier, timeout: Duration, stages: Vec<Stage>, shutdown: Shutdown) {
    let mut withheld = false;
    while !shutdown.is_requested() {
        match wedged(&stages) {
            None => {
                if withheld {
                    log::info!("every stage is making progress again; watchdog pings resume");
                    withheld = false;
                }
                notifier.notify("WATCHDOG=1");
            }
            Some((stage, busy)) if !withheld => {
                log::error!(
                    "{stage} has been stuck for {}s: withholding watchdog pings \
                     so systemd restarts the gateway",
                    busy.as_secs(),
                );
                withheld = true;
            }
            Some(_) => {}
        }
        async_io::Timer::after(timeout / 2).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage_is_wedged_only_while_busy_past_the_limit() {
        let writer = Heartbeat::default();
        let drain = Heartbeat::default();
        let stages = |limit| {
            [
                ("spool writer", writer.clone(), limit),
                ("drain", drain.clone(), limit),
            ]
        };
        assert_eq!(wedged(&stages(Duration::ZERO)), None, "idle is not wedged");

        let busy = drain.busy();
        std::thread::sleep(Duration::from_millis(5));
        let (name, for_how_long) = wedged(&stages(Duration::from_millis(1))).unwrap();
        assert_eq!(name, "drain");
        assert!(for_how_long >= Duration::from_millis(5));
        assert_eq!(wedged(&stages(Duration::from_secs(3600))), None);

        drop(busy);
        assert_eq!(wedged(&stages(Duration::ZERO)), None);
    }
}
