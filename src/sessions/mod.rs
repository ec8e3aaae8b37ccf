//! One MQTT session per broker, supervised: the catalog says which brokers
//! exist, this module keeps exactly one session running for each.
//!
//! The supervisor holds a map BrokerId → `SessionHandle` (the broker as
//! running, a command sender, the task). On every [`Catalog`] it asks
//! `reconcile` for a plan and applies it; on shutdown (or when the catalog
//! channel closes) it stops every session and awaits every task, bounded.
//! A session that fails (refused, unreachable, garbage bytes, a panic) only
//! affects its own broker. Not here: the protocol and backoff of one broker
//! (`session`), the spool, the database.

mod backoff;
mod connect;
mod connection;
mod partition_key;
mod probe;
mod reconcile;
mod session;
mod state;
mod tick;
pub mod tls;
mod walk;
mod wedge;
mod wire;

pub use partition_key::partition_key;
pub(crate) use probe::{probe, BrokerProbe, ConnectFailure};

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::FutureExt;

use crate::catalog::{Broker, BrokerId, Catalog};
use crate::config::MqttConfig;
use crate::devices::Devices;
use crate::shutdown::Shutdown;
use crate::spool::Appender;
use crate::status::StatusBoard;
use backoff::Backoff;
use reconcile::{reconcile, Change};
use session::{Command, Session};

/// How long shutdown waits for all sessions together, beyond each one's own
/// DISCONNECT timeout; a session still running then is cancelled and named in the log.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Keeps one session per broker in the latest catalog until shutdown, then
/// disconnects every session and returns once none is left. Every session
/// reports its state into `status` (the status file, the status table, tests)
/// and counts each message with a device id into `devices`.
// One argument more than clippy likes: each is a handle `lib.rs::run` wires
// in (the device counts joined last); a struct would only rename them.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    executor: Arc<smol::Executor<'static>>,
    catalogs: async_channel::Receiver<Catalog>,
    appender: Appender,
    config: MqttConfig,
    gateway_id: String,
    shutdown: Shutdown,
    status: StatusBoard,
    devices: Devices,
) {
    let mut supervisor = Supervisor {
        executor,
        appender,
        ticks: Arc::new(tick::Ticks::new(config.read_pause)),
        config,
        gateway_id,
        status,
        devices,
        sessions: BTreeMap::new(),
        retiring: Vec::new(),
    };
    loop {
        match next_event(&catalogs, &shutdown).await {
            Event::Catalog(catalog) => supervisor.apply(&catalog),
            Event::CatalogsClosed => {
                log::info!("catalog channel closed: stopping sessions");
                break;
            }
            Event::Shutdown => break,
        }
    }
    supervisor.stop_all().await;
}

/// What the supervisor loop reacts to.
enum Event {
    Catalog(Catalog),
    CatalogsClosed,
    Shutdown,
}

async fn next_event(catalogs: &async_channel::Receiver<Catalog>, shutdown: &Shutdown) -> Event {
    let stop = async {
        shutdown.wait().await;
        Event::Shutdown
    };
    let catalog = async {
        match catalogs.recv().await {
            Ok(catalog) => Event::Catalog(catalog),
            Err(_) => Event::CatalogsClosed,
        }
    };
    // Shutdown first: a stream of catalogs must not delay it.
    stop.or(catalog).await
}

/// One running session, as the supervisor sees it.
struct SessionHandle {
    /// The broker as the session was started or last updated.
    broker: Broker,
    commands: async_channel::Sender<Command>,
    task: smol::Task<()>,
}

struct Supervisor {
    executor: Arc<smol::Executor<'static>>,
    appender: Appender,
    /// The read tick every session shares (`mqtt.read_pause`).
    ticks: Arc<tick::Ticks>,
    config: MqttConfig,
    gateway_id: String,
    status: StatusBoard,
    devices: Devices,
    sessions: BTreeMap<BrokerId, SessionHandle>,
    /// Sessions told to stop (removed or restarted) that may still be disconnecting.
    retiring: Vec<(BrokerId, smol::Task<()>)>,
}

impl Supervisor {
    fn apply(&mut self, catalog: &Catalog) {
        self.retiring.retain(|(_, task)| !task.is_finished());
        if catalog.brokers.is_empty() {
            log::warn!("catalog has no brokers: receiving nothing");
        }
        let running: BTreeMap<BrokerId, Broker> = self
            .sessions
            .iter()
            .map(|(id, handle)| (*id, handle.broker.clone()))
            .collect();
        for change in reconcile(&running, catalog) {
            match change {
                Change::Start(broker) => {
                    log::info!(
                        "broker {} added ({}, {} topics)",
                        broker.id,
                        broker.primary(),
                        broker.topics.len()
                    );
                    self.start(broker);
                }
                Change::Stop(id) => {
                    log::info!("broker {id} removed");
                    self.retire(id);
                    self.status.remove(id);
                }
                Change::Restart(broker) => {
                    log::info!(
                        "broker {} changed: reconnecting to {}",
                        broker.id,
                        broker.primary()
                    );
                    self.retire(broker.id);
                    self.start(broker);
                }
                Change::UpdateTopics {
                    id,
                    subscribe,
                    unsubscribe,
                } => {
                    if subscribe.is_empty() && unsubscribe.is_empty() {
                        log::info!("broker {id} changed: device_id_level of its topics");
                    } else {
                        log::info!(
                            "broker {id} changed: subscribing to {} and unsubscribing from {} topics",
                            subscribe.len(),
                            unsubscribe.len()
                        );
                    }
                    if let Some(handle) = self.sessions.get_mut(&id) {
                        let Some(wanted) = catalog.brokers.iter().find(|b| b.id == id) else {
                            continue;
                        };
                        handle.broker = wanted.clone();
                        // Unbounded channel: a session stuck in backpressure never blocks the supervisor.
                        let _ = handle.commands.try_send(Command::UpdateTopics {
                            subscribe,
                            unsubscribe,
                            topics: wanted.topics.clone(),
                        });
                    }
                }
            }
        }
    }

    fn start(&mut self, broker: Broker) {
        let (commands, command_rx) = async_channel::unbounded();
        let mut session = Session {
            gateway_id: self.gateway_id.clone(),
            endpoint_idx: 0,
            broker: broker.clone(),
            config: self.config.clone(),
            appender: self.appender.fork(),
            status: self.status.clone(),
            ticket: self.status.issue_ticket(broker.id),
            commands: command_rx,
            running: true,
            wedge: Default::default(),
            devices: self.devices.clone(),
            ticks: Arc::clone(&self.ticks),
        };
        let min_backoff = self.config.min_backoff;
        let max_backoff = self.config.max_backoff;
        let task = self.executor.spawn(async move {
            // A panic is a bug; it must not take other brokers down. Start over after a pause.
            let mut backoff = Backoff::new(min_backoff, max_backoff);
            // `run` also returns while running, to walk the endpoints afresh
            // (moving back to the primary, or after a TLS setup error it waited out).
            while session.running {
                // In a tokio context throughout (the gateway's own runtime, or
                // async-compat's where there is none): rumqttc's sockets and the
                // session's timers are tokio's.
                let run = async_compat::Compat::new(session::run(&mut session));
                let attempt = AssertUnwindSafe(run).catch_unwind();
                let Err(panic) = attempt.await else { continue };
                let delay = backoff.after_failure(None, fastrand::f64());
                log::error!(
                    "{}: session crashed ({}); restarting in {delay:.1?}",
                    session.label(),
                    panic_message(&*panic),
                );
                if !session::pause(&mut session, delay).await {
                    break;
                }
            }
        });
        self.sessions.insert(
            broker.id,
            SessionHandle {
                broker,
                commands,
                task,
            },
        );
    }

    /// Tells `id`'s session to stop and keeps its task until it has.
    fn retire(&mut self, id: BrokerId) {
        if let Some(handle) = self.sessions.remove(&id) {
            let _ = handle.commands.try_send(Command::Stop);
            handle.commands.close();
            self.retiring.push((id, handle.task));
        }
    }

    /// Stops every session and awaits all tasks, at most [`STOP_TIMEOUT`].
    async fn stop_all(mut self) {
        let ids: Vec<BrokerId> = self.sessions.keys().copied().collect();
        log::info!("stopping {} sessions", ids.len());
        for id in ids {
            self.retire(id);
        }
        let deadline = std::time::Instant::now() + STOP_TIMEOUT;
        for (id, task) in self.retiring {
            let finished = async {
                // A panicked task re-raises on await; it is already logged by the task.
                let _ = AssertUnwindSafe(task).catch_unwind().await;
                true
            };
            let timeout = async {
                async_io::Timer::at(deadline).await;
                false
            };
            if !finished.or(timeout).await {
                log::warn!("broker {id}: session did not stop within {STOP_TIMEOUT:?}; cancelled");
            }
        }
        log::info!("all sessions stopped");
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    if let Some(text) = panic.downcast_ref::<&str>() {
        text
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text
    } else {
        "no message"
    }
}
