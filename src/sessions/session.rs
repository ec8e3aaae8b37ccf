//! One broker: connect, subscribe, receive into the spool, back off, disconnect.
//!
//! The session owns its connection ([`super::connection`]: TCP, TLS,
//! CONNECT/CONNACK, rumqttc's codec and protocol state); [`super::wire`]
//! writes what is queued (the acks of one commit in one write) and reads.
//! Sockets and timers are tokio's: the sessions' executor runs inside a
//! current-thread tokio runtime (see `lib.rs`), and each session runs inside
//! [`async_compat::Compat`] (`sessions/mod.rs`), so everything here is polled
//! in a tokio context.
//!
//! This file is the shell: every protocol decision of a connection (what to
//! subscribe, when to ack, how a stop or the move back to the primary ends,
//! what the log and the status board say) is [`super::state`]'s, as data. The
//! shell runs the futures (the poll, the socket, timers, commit receipts, the
//! primary probe), feeds that state machine and applies its outputs.
//!
//! Backpressure: each received PUBLISH is awaited into [`Appender::append`]
//! before the socket is read again, so when the spool queue is full we
//! stop reading the socket and the broker's TCP window fills up. Nothing is
//! buffered here.
//!
//! Connecting is never cancelled: commands from the supervisor are raced
//! against the *same* pinned connect future. Once connected, the read
//! is cancelled when something else wins, which is safe only because every
//! write is flushed before the next read (see [`super::wire`]).
//!
//! Not here: deciding which brokers run (the supervisor), retrying forever on
//! bad credentials without the catalog's help (we back off to the maximum).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_compat::Compat;
use futures_lite::FutureExt;
use rumqttc::{ConnectReturnCode, ConnectionError, Outgoing, Packet, Publish, QoS};

use super::connect::{self, ConnectSettings};
use super::connection::{Mqtt, Target, READ_BATCH};
use super::partition_key::partition_key;
use super::state::{Input, LinkState, Output, Place};
use super::tick::Ticks;
use super::tls::TlsError;
use super::walk;
use super::wedge::{self, WedgeWatch};
use super::wire::{self, Ack};
use crate::catalog::{Broker, Topic};
use crate::config::MqttConfig;
use crate::devices::{self, Devices, Extracted};
use crate::ids::DeviceId;
use crate::spool::{Appender, CommitReceipt, NewRecord, SpoolError};
use crate::status::{SessionTicket, StatusBoard};

/// The receive low-water mark of a paused session's socket. Up to 64 KiB it
/// leaves the socket's buffer and window as they are (Linux grows the buffer
/// and clamps the window to a higher mark); a burst that big wakes the thread
/// once, which is harmless.
const PAUSED_WAKE_THRESHOLD: usize = 32 * 1024;

/// How long a probe of the primary endpoint waits for its CONNACK.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the supervisor tells a running session.
#[derive(Debug)]
pub enum Command {
    /// The topic list changed; the connection settings did not.
    UpdateTopics {
        subscribe: Vec<Topic>,
        unsubscribe: Vec<String>,
        /// The whole desired list (with each topic's `device_id_level`).
        topics: Vec<Topic>,
    },
    /// Disconnect cleanly and end. Closing the command channel means the same.
    Stop,
}

/// Everything one session needs; outlives a panicking [`run`] so it can start over.
pub struct Session {
    /// Connection settings and the *desired* topics, kept current by [`Command::UpdateTopics`].
    pub broker: Broker,
    /// Makes the client id (see [`connect::client_id`]): stable across
    /// restarts, unique per gateway and broker.
    pub gateway_id: String,
    /// Index into `broker.endpoints` of the endpoint connected to or being tried.
    pub endpoint_idx: usize,
    pub config: MqttConfig,
    pub appender: Appender,
    pub status: StatusBoard,
    /// This session's right to write its status entry.
    pub ticket: SessionTicket,
    pub commands: async_channel::Receiver<Command>,
    /// False once the command channel closed or said Stop.
    pub running: bool,
    /// Whether one unreadable message keeps killing the connection.
    pub wedge: WedgeWatch,
    /// Per-device counts, shared by every session and the catalog thread.
    pub devices: Devices,
    /// The read tick all sessions share (`mqtt.read_pause`).
    pub ticks: Arc<Ticks>,
}

impl Session {
    /// `broker 7 (10.0.0.5:1883)`, the prefix of every log line about this session.
    pub fn label(&self) -> String {
        self.place().label()
    }

    /// What the state machine reads of the session.
    fn place(&self) -> Place<'_> {
        Place {
            broker_id: self.broker.id,
            endpoints: &self.broker.endpoints,
            endpoint_idx: self.endpoint_idx,
            topics: &self.broker.topics,
        }
    }

    fn endpoint(&self) -> &crate::catalog::Endpoint {
        self.place().endpoint()
    }

    async fn connect_settings(&self) -> Result<ConnectSettings, TlsError> {
        if self.broker.tls.as_ref().is_some_and(|tls| !tls.verify_cert) {
            log::warn!(
                "broker {}: verify_cert is false: any server certificate is accepted",
                self.broker.id
            );
        }
        if self.broker.sealed_secret && self.broker.tls.is_none() {
            if let Some(remote) = self.broker.endpoints.iter().find(|e| !e.is_loopback()) {
                log::warn!(
                    "broker {}: its password is sealed in the catalog but goes to {remote} \
                     without TLS, readable on the way; set use_tls",
                    self.broker.id
                );
            }
        }
        let reads_files = self.broker.tls.as_ref().is_some_and(|tls| {
            [tls.ca.as_ref(), tls.client_cert.as_ref()]
                .into_iter()
                .flatten()
                .any(|value| !crate::catalog::is_pem(value))
                || tls
                    .client_key
                    .as_ref()
                    .is_some_and(|key| !crate::catalog::is_pem(key.expose()))
                || tls.ca.is_none()
        });
        if !reads_files {
            return ConnectSettings::for_broker(&self.broker, &self.gateway_id, &self.config);
        }
        // Certificate and key files (and the system's roots, the first time)
        // are read on a blocking-pool thread: a slow or stuck file stalls this
        // broker, not every session on this thread.
        let (broker, gateway_id, config) = (
            self.broker.clone(),
            self.gateway_id.clone(),
            self.config.clone(),
        );
        smol::unblock(move || ConnectSettings::for_broker(&broker, &gateway_id, &config)).await
    }
}

/// Runs the session until it is told to stop; then disconnects (bounded by
/// [`super::state::DISCONNECT_TIMEOUT`]) and returns. Every PUBLISH read from the socket has
/// been handed to the spool by then.
pub async fn run(session: &mut Session) {
    if !session.running {
        return;
    }
    // Every run walks the endpoints from the primary.
    session.endpoint_idx = 0;
    let settings = match session.connect_settings().await {
        Ok(settings) => settings,
        Err(error) => {
            let message = error.to_string();
            // Logged once; the retries (after each pause) only at debug.
            let repeated = session
                .status
                .get(session.broker.id)
                .and_then(|status| status.last_error)
                .is_some_and(|last| last == message);
            let level = if repeated {
                log::Level::Debug
            } else {
                log::Level::Error
            };
            log::log!(
                level,
                "broker {}: {message}; fix the broker row; retrying in {:?}",
                session.broker.id,
                session.config.max_backoff
            );
            session.status.update(session.ticket, |status| {
                status.last_error = Some(message.clone());
            });
            let delay = session.config.max_backoff;
            pause(session, delay).await;
            return;
        }
    };
    let mut target = Target::new(&session.broker, session.endpoint(), &settings);
    // Inside Compat, the socket and timers are also dropped in tokio's context.
    let mut mqtt = Compat::new(Mqtt::new());
    let mut link = Link::new(session, settings);
    link.on_attempt(session);
    loop {
        let polled = poll_once(mqtt.get_mut(), &target, &mut link, session).await;
        let Some(polled) = polled else { break };
        match polled {
            Ok(event) => {
                if link.on_event(event, session).await == Flow::Done {
                    break;
                }
            }
            Err(error) => {
                if link.state.stop_deadline().is_some() {
                    break;
                }
                let delay = link.on_error(&error, session);
                if !pause(session, delay).await {
                    break;
                }
                // The next attempt goes where the walk points.
                target = Target::new(&session.broker, session.endpoint(), &link.settings);
                link.on_attempt(session);
            }
        }
    }
    let outputs = link.state.on_end(session.running, &session.place());
    link.apply(outputs, session);
}

/// What the session loop reacts to while a poll is in progress.
enum Event {
    Polled(Result<rumqttc::Event, ConnectionError>),
    /// `None`: the command channel closed.
    Command(Option<Command>),
    /// The DISCONNECT did not get out in time.
    StopDeadline,
    /// The oldest record waiting for its ack is committed, or can never be
    /// (the spool writer stopped).
    Committed(Result<(), SpoolError>),
    /// A probe of the primary endpoint finished: true when it answered.
    PrimaryProbed(bool),
    /// Connected: packets were read into rumqttc's state, or the socket failed.
    Read(Result<(), rumqttc::StateError>),
    /// Connected: the keep-alive interval passed.
    Ping,
}

#[derive(PartialEq, Eq)]
enum Flow {
    Continue,
    Done,
}

/// The next event of the connection. While connecting: TCP, TLS,
/// CONNECT/CONNACK ([`Mqtt::connect`]); once connected, [`wire`]: queued
/// writes go out in one flush, then the socket is read. Commands, commit receipts and timers
/// that arrive meanwhile are handled here. `None`: stop now (told to stop
/// while not connected, or the DISCONNECT deadline passed).
async fn poll_once(
    mqtt: &mut Mqtt,
    target: &Target,
    link: &mut Link,
    session: &mut Session,
) -> Option<Result<rumqttc::Event, ConnectionError>> {
    if mqtt.connection.is_none() {
        return connect_once(mqtt, target, link, session).await;
    }
    loop {
        while let Some(event) = mqtt.state.events.pop_front() {
            // Our own writes need no reaction, except the DISCONNECT that ends a stop.
            match event {
                rumqttc::Event::Outgoing(outgoing) if outgoing != Outgoing::Disconnect => {}
                event => return Some(Ok(event)),
            }
        }
        let n_unacked = link.state.n_unacked();
        let (queued, awaiting_subacks) = link.state.outgoing();
        if !queued.acks.is_empty()
            && queued.acks.len() + n_unacked >= session.config.commit_at_unacked
        {
            // The broker may have stopped at its in-flight window for these:
            // what it sends next is read at once, not at the next tick. With
            // fewer outstanding it had not (`mqtt.commit_at_unacked` is set
            // below the brokers' windows), and the read keeps its tick.
            link.read_pause_until = None;
        }
        if let Err(error) = wire::write(mqtt, queued, awaiting_subacks).await {
            return Some(Err(error));
        }
        if !mqtt.state.events.is_empty() {
            continue;
        }
        // Kept until a read happens: a commit or a command that wakes the
        // session meanwhile does not end the pause.
        let pause_until = link.read_pause_until;
        if let Some(connection) = mqtt.connection.as_mut() {
            // Paused: what arrives meanwhile is read at the tick, so it need
            // not wake the thread (see `Connection::set_wake_threshold`).
            let threshold = match pause_until {
                Some(_) => PAUSED_WAKE_THRESHOLD,
                None => 1,
            };
            connection.set_wake_threshold(threshold);
        }
        let ticks = &session.ticks;
        let read = async {
            if let Some(until) = pause_until {
                // The read takes what waits under the raised mark, and lowers
                // the mark only if it finds nothing and must wait.
                ticks.wait(until).await;
            }
            Event::Read(wire::read(mqtt).await)
        };
        let woken = next_event(read, link, session).await;
        if let Some(stop) = on_wake(woken, mqtt, link, session) {
            return stop;
        }
    }
}

/// Connecting, never cancelled (commands are raced against the same pinned
/// future, which keeps running afterwards).
async fn connect_once(
    mqtt: &mut Mqtt,
    target: &Target,
    link: &mut Link,
    session: &mut Session,
) -> Option<Result<rumqttc::Event, ConnectionError>> {
    let mut poll = std::pin::pin!(mqtt.connect(target));
    loop {
        let polled = async { Event::Polled(poll.as_mut().await) };
        let woken = next_event(polled, link, session).await;
        if let Event::Polled(result) = woken {
            return Some(result);
        }
        if let Some(stop) = on_wake_either(woken, link, session) {
            return stop;
        }
    }
}

/// Handles what woke the connected loop. `Some`: return that from [`poll_once`].
fn on_wake(
    woken: Event,
    mqtt: &mut Mqtt,
    link: &mut Link,
    session: &mut Session,
) -> Option<Option<Result<rumqttc::Event, ConnectionError>>> {
    match woken {
        Event::Read(Ok(())) => {
            // Fewer packets than one read takes: the socket is empty, so the
            // next read waits for the tick (see `mqtt.read_pause`). A full
            // read (a flood) reads on at once.
            link.read_pause_until = if mqtt.state.events.len() < READ_BATCH {
                session.ticks.next()
            } else {
                None
            };
            None
        }
        Event::Read(Err(error)) => {
            mqtt.clean();
            Some(Some(Err(ConnectionError::MqttState(error))))
        }
        Event::Ping => {
            link.feed(Input::Ping, session);
            link.restart_ping_timer();
            None
        }
        woken => on_wake_either(woken, link, session),
    }
}

/// What wakes a session connecting or connected alike: commit receipts,
/// commands, the primary probe, the stop deadline.
fn on_wake_either(
    woken: Event,
    link: &mut Link,
    session: &mut Session,
) -> Option<Option<Result<rumqttc::Event, ConnectionError>>> {
    let input = match woken {
        Event::Committed(Ok(())) => {
            // The front resolved (that is why we are here); the rest are checked without waiting.
            let n_committed = 1 + link
                .state
                .unacked_receipts()
                .skip(1)
                .take_while(|receipt| receipt.try_committed())
                .count();
            Input::Committed(n_committed)
        }
        Event::Committed(Err(error)) => Input::SpoolLost(error.to_string()),
        Event::PrimaryProbed(answered) => {
            // This probe is over; the machine says whether to start another.
            link.primary_probe = None;
            Input::PrimaryProbed(answered)
        }
        Event::StopDeadline => Input::StopDeadlinePassed,
        Event::Command(Some(Command::UpdateTopics {
            subscribe,
            unsubscribe,
            topics,
        })) => {
            session.broker.topics = topics;
            Input::UpdateTopics {
                subscribe,
                unsubscribe,
            }
        }
        Event::Command(Some(Command::Stop) | None) => {
            session.running = false;
            Input::Stop
        }
        Event::Polled(_) | Event::Read(_) | Event::Ping => return None,
    };
    match link.feed(input, session) {
        Flow::Done => Some(None),
        Flow::Continue => None,
    }
}

/// Waits for the first of: a command, the stop deadline, the oldest unacked
/// record's commit, the primary probe, the keep-alive (while connected), then
/// `io` (the poll or the socket).
/// Commands come first so a busy broker cannot delay a stop.
async fn next_event(io: impl Future<Output = Event>, link: &mut Link, session: &Session) -> Event {
    let commands = session.running.then_some(&session.commands);
    let stop_deadline = link.state.stop_deadline();
    let connected = link.state.is_connected();
    let oldest_unacked = link.state.unacked_receipts().next();
    let primary_probe = link.primary_probe.as_mut();
    // One timer for the connection, not one per turn; tokio's, served by
    // this thread (an async-io timer is registered by async-io's thread).
    let ping_timer = connected.then_some(&mut link.ping_timer);
    let ping = async {
        match ping_timer {
            Some(timer) => {
                timer.as_mut().await;
                Event::Ping
            }
            None => std::future::pending().await,
        }
    };
    let probed = async {
        match primary_probe {
            Some(probe) => Event::PrimaryProbed(probe.await),
            None => std::future::pending().await,
        }
    };
    let command = async {
        match commands {
            Some(commands) => Event::Command(commands.recv().await.ok()),
            None => std::future::pending().await,
        }
    };
    let deadline = async {
        match stop_deadline {
            Some(deadline) => {
                async_io::Timer::at(deadline).await;
                Event::StopDeadline
            }
            None => std::future::pending().await,
        }
    };
    let committed = async {
        match oldest_unacked {
            Some(receipt) => Event::Committed(receipt.committed().await),
            None => std::future::pending().await,
        }
    };
    command
        .or(deadline)
        .or(committed)
        .or(probed)
        .or(ping)
        .or(io)
        .await
}

/// Waits `primary_recheck`, then probes the primary endpoint; kept across
/// loop turns (boxed) so a probe in progress is not restarted by other events.
type PrimaryProbe = Pin<Box<dyn Future<Output = bool> + Send>>;

fn primary_probe(session: &Session, settings: &ConnectSettings) -> PrimaryProbe {
    let broker = session.broker.clone();
    let mut settings = settings.clone();
    // Our own client id would make the broker drop the live session.
    settings.client_id = format!("{}-probe", settings.client_id);
    let wait = session.config.primary_recheck;
    Box::pin(async move {
        async_io::Timer::after(wait).await;
        let primary = broker.primary();
        match connect::probe(&broker, primary, &settings, PROBE_TIMEOUT).await {
            Ok(_) => true,
            Err(failure) => {
                log::debug!(
                    "broker {}: primary endpoint {primary} still unusable: {}",
                    broker.id,
                    failure.message
                );
                false
            }
        }
    })
}

/// Waits `delay` with no connection (before the next attempt, or after a
/// crash), still taking commands: topic updates apply to the next CONNACK.
/// False: told to stop.
pub async fn pause(session: &mut Session, delay: Duration) -> bool {
    let deadline = Instant::now() + delay;
    while session.running {
        let command = async { Some(session.commands.recv().await.ok()) };
        let timer = async {
            async_io::Timer::at(deadline).await;
            None
        };
        match command.or(timer).await {
            None => return true,
            Some(Some(Command::UpdateTopics { topics, .. })) => session.broker.topics = topics,
            Some(Some(Command::Stop) | None) => session.running = false,
        }
    }
    false
}

/// One session run: the protocol state (pure, [`LinkState`]) and what the
/// shell runs for it: the keep-alive timer, the primary probe, the jitter.
struct Link {
    settings: ConnectSettings,
    /// Every protocol decision of this run (the walk, acks, the stop, subscriptions).
    state: LinkState<CommitReceipt>,
    rng: fastrand::Rng,
    /// When the next PINGREQ is due: from CONNACK, every keep-alive, as rumqttc does.
    ping_timer: Pin<Box<tokio::time::Sleep>>,
    /// Set after a read that emptied the socket: the next read waits until then.
    read_pause_until: Option<Instant>,
    /// Runs while connected to a secondary endpoint.
    primary_probe: Option<PrimaryProbe>,
}

impl Link {
    fn new(session: &Session, settings: ConnectSettings) -> Link {
        Link {
            settings,
            state: LinkState::new(session.config.min_backoff, session.config.max_backoff),
            rng: fastrand::Rng::new(),
            ping_timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
            read_pause_until: None,
            primary_probe: None,
        }
    }

    /// The next PINGREQ one keep-alive from now (rumqttc's: the broker's own,
    /// at least a second).
    fn restart_ping_timer(&mut self) {
        let keep_alive = self.settings.keep_alive.max(Duration::from_secs(1));
        let next = tokio::time::Instant::now() + keep_alive;
        self.ping_timer.as_mut().reset(next);
    }

    /// Logs and records the endpoint about to be tried.
    fn on_attempt(&mut self, session: &Session) {
        let outputs = self.state.on_attempt(&session.place());
        self.apply(outputs, session);
    }

    /// Feeds the state machine one input, now, and applies what it says.
    fn feed(&mut self, input: Input<CommitReceipt>, session: &Session) -> Flow {
        let outputs = self.state.handle(input, &session.place(), Instant::now());
        self.apply(outputs, session)
    }

    /// Does what the state machine said: log, update the status board, probe the primary.
    fn apply(&mut self, outputs: Vec<Output>, session: &Session) -> Flow {
        let mut flow = Flow::Continue;
        for output in outputs {
            match output {
                Output::Log(level, line) => log::log!(level, "{line}"),
                Output::Status(change) => session.status.update(session.ticket, |status| {
                    change.apply(status, SystemTime::now());
                }),
                Output::StartPrimaryProbe => {
                    self.primary_probe = Some(primary_probe(session, &self.settings));
                }
                Output::Done => flow = Flow::Done,
            }
        }
        flow
    }

    async fn on_event(&mut self, event: rumqttc::Event, session: &mut Session) -> Flow {
        use rumqttc::Event::{Incoming, Outgoing};
        match event {
            Incoming(Packet::ConnAck(_)) => {
                self.restart_ping_timer();
                return self.feed(Input::ConnAck, session);
            }
            Incoming(Packet::Publish(publish)) => {
                // Only the packet id and QoS are needed to acknowledge it later.
                let ack = Ack {
                    pkid: publish.pkid,
                    qos: publish.qos,
                };
                // Holding the broker's window open: ask for a commit now, not at the interval.
                let urgent = ack.qos != QoS::AtMostOnce
                    && self.state.n_unacked() + 1 >= session.config.commit_at_unacked;
                let receipt = deliver(publish, urgent, session).await;
                let connected_at = self.state.connected_at();
                let up_for = || connected_at.map_or(Duration::ZERO, |at| at.elapsed());
                if let wedge::Change::Freed { n_connections } = session.wedge.on_message(up_for) {
                    log::info!(
                        "{}: messages flow again after {n_connections} connections died \
                         on unreadable data",
                        session.label()
                    );
                    session.status.update(session.ticket, |status| {
                        status.wedged_since = None;
                    });
                }
                if let (true, Some(receipt)) = (ack.qos != QoS::AtMostOnce, receipt) {
                    return self.feed(Input::Received(ack, receipt), session);
                }
            }
            Incoming(Packet::SubAck(suback)) => {
                return self.feed(Input::SubAck(suback.return_codes), session);
            }
            Incoming(Packet::UnsubAck(_)) => return self.feed(Input::UnsubAck, session),
            Outgoing(rumqttc::Outgoing::Disconnect) => {
                return self.feed(Input::DisconnectWritten, session);
            }
            _ => {}
        }
        Flow::Continue
    }

    /// Records the failure and returns how long to wait before polling again
    /// (the session then connects again).
    fn on_error(&mut self, error: &ConnectionError, session: &mut Session) -> Duration {
        let up_for = self.state.on_connection_lost(Instant::now());
        self.read_pause_until = None;
        self.primary_probe = None;
        let description = connect::describe(error);
        let auth_refused = matches!(
            error,
            ConnectionError::ConnectionRefused(
                ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized
            )
        );
        // Where next, how long to wait and what to say: decided by the walk (pure).
        let endpoints: Vec<String> = session
            .broker
            .endpoints
            .iter()
            .map(ToString::to_string)
            .collect();
        let failure = walk::Failure {
            up_for,
            description: description.clone(),
            auth_refused,
            out_of_descriptors: connect::is_out_of_descriptors(error).then(|| {
                walk::OpenFilesLimit(crate::limits::open_files().ok().map(|(soft, _)| soft))
            }),
        };
        let position = walk::Position {
            broker_id: session.broker.id,
            endpoints: &endpoints,
            index: session.endpoint_idx,
            username: session.broker.username.as_deref(),
        };
        let decision = self.state.after_error(&position, &failure, self.rng.f64());
        session.endpoint_idx = decision.next_index;
        let malformed = matches!(
            error,
            ConnectionError::MqttState(rumqttc::StateError::Deserialization(_))
        );
        let change = match up_for {
            Some(up_for) => session.wedge.on_disconnect(
                up_for,
                malformed.then_some(description.as_str()),
                SystemTime::now(),
            ),
            None => wedge::Change::None,
        };
        if let wedge::Change::Wedged { since, reason } = &change {
            log::error!(
                "broker {}: wedged: the broker redelivers, at every reconnect, a message the \
                 gateway cannot read ({reason}); {} connections in a row died on it; other \
                 brokers are unaffected. Remedy: if it is only large, raise \
                 mqtt.max_packet_size; otherwise remove it from the broker's queue for client \
                 {} (see README \"A wedged broker\")",
                session.broker.id,
                wedge::WEDGED_AFTER,
                connect::client_id(&session.broker, &session.gateway_id),
            );
            let since = *since;
            session.status.update(session.ticket, |status| {
                status.wedged_since = Some(since);
            });
        }
        let wedged = session.wedge.is_wedged();
        session.status.update(session.ticket, |status| {
            if status.connected {
                status.since = SystemTime::now();
            }
            status.connected = false;
            status.n_subscribed = 0;
            status.last_error = Some(if wedged {
                format!("wedged: {description} (redelivered at every reconnect)")
            } else {
                description.clone()
            });
            status.auth_refused = auth_refused;
        });
        log::log!(decision.level, "{}", decision.line);
        decision.delay
    }
}

/// Turns a PUBLISH into a spool record and waits until the spool queue takes it.
/// `None` when the spool is closed: the message is counted as lost and logged.
async fn deliver(publish: Publish, urgent: bool, session: &mut Session) -> Option<CommitReceipt> {
    let broker_id = session.broker.id;
    let received_at_ms = crate::clock::unix_ms();
    let device_id = device_id(session, &publish.topic);
    let record = NewRecord {
        broker_id,
        partition_key: partition_key(
            session.config.partition_key,
            broker_id,
            &publish.topic,
            device_id.as_deref(),
        ),
        device_id,
        topic: publish.topic,
        payload: publish.payload.to_vec(),
        qos: publish.qos as u8,
        received_at_ms,
    };
    // Counted before the hand-over (which takes the record): a message the
    // closed spool refuses is counted too, it was seen all the same.
    if let Some(device_id) = &record.device_id {
        session.devices.seen(broker_id, device_id, received_at_ms);
    }
    match session.appender.append(record, urgent).await {
        Ok(receipt) => {
            session.status.update(session.ticket, |status| {
                status.n_received += 1;
                status.last_message_at = Some(SystemTime::now());
            });
            Some(receipt)
        }
        Err(record) => {
            let mut n_lost = 0;
            session.status.update(session.ticket, |status| {
                status.n_lost += 1;
                n_lost = status.n_lost;
            });
            // One line per power of two: a stopped spool must not flood the log.
            if n_lost.is_power_of_two() {
                log::error!(
                    "{}: spool is closed: lost a message on {:?} ({n_lost} lost so far)",
                    session.label(),
                    record.topic
                );
            }
            None
        }
    }
}

/// The device a message on `topic` came from: the level named by the first
/// subscription (in filter order) that sets `device_id_level` and matches
/// the topic. Nothing to do, and nothing allocated, when no subscription of
/// the broker sets a level.
fn device_id(session: &Session, topic: &str) -> Option<DeviceId> {
    let level = session
        .broker
        .topics
        .iter()
        .filter_map(|t| Some((t.filter.as_str(), t.device_id_level?)))
        .find(|(filter, _)| devices::filter_matches(filter, topic))
        .map(|(_, level)| level)?;
    match devices::device_id_at(topic, level) {
        Extracted::Device(id) => Some(id),
        Extracted::Absent => None,
        Extracted::TooLong => {
            session.devices.too_long(session.broker.id, topic);
            None
        }
    }
}
