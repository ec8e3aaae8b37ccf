//! Pure: the protocol decisions of one connection, as data transitions.
//!
//! In the spirit of rumqttc's `state.rs` ("methods … without doing any
//! network operations"): [`LinkState`] takes what happened ([`Input`]: a
//! CONNACK, SUBACK codes, a commit receipt resolved, a command, the primary's
//! probe answered, the DISCONNECT written, the stop deadline passed, the
//! connection lost) and answers with data: packets queued for the next write
//! (`wire::Queued`), and [`Output`]s (log lines with their level, status
//! changes, start a primary probe, stop). Time comes in as `Instant`s; there is
//! no IO, no async, no clock read here.
//!
//! The shell (`session.rs`) runs the futures (rumqttc's connecting poll,
//! `wire::read`/`write` while connected, timers, commit receipts, the probe),
//! feeds this machine and applies its outputs. Where to go after a connection
//! error is the walk's ([`super::walk`]), held here across the run's errors.
//!
//! Not here: receiving a PUBLISH into the spool, the wedge watch, the
//! keep-alive timer, TLS and connect options.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

use rumqttc::{QoS, SubscribeFilter, SubscribeReasonCode};

use super::connect;
use super::walk::{self, Walk};
use super::wire::{Ack, Outbound, Queued};
use crate::catalog::{Endpoint, Topic};
use crate::ids::BrokerId;
use crate::status::SessionStatus;

/// How long a stopping session waits for its DISCONNECT to be written.
pub(super) const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Where the session stands, as the machine reads it: the broker, the
/// endpoint connected to (or being tried), the desired topics.
#[derive(Clone, Copy, Debug)]
pub(super) struct Place<'a> {
    pub broker_id: BrokerId,
    /// In priority order, the primary first; never empty.
    pub endpoints: &'a [Endpoint],
    /// Index into `endpoints`.
    pub endpoint_idx: usize,
    pub topics: &'a [Topic],
}

impl<'a> Place<'a> {
    pub fn endpoint(&self) -> &'a Endpoint {
        &self.endpoints[self.endpoint_idx.min(self.endpoints.len() - 1)]
    }

    /// `broker 7 (10.0.0.5:1883)`, the prefix of every log line about this session.
    pub fn label(&self) -> String {
        format!("broker {} ({})", self.broker_id, self.endpoint())
    }

    /// `endpoint 2/3 10.0.0.6:1883`.
    pub fn endpoint_words(&self) -> String {
        format!(
            "endpoint {}/{} {}",
            self.endpoint_idx + 1,
            self.endpoints.len(),
            self.endpoint()
        )
    }
}

/// What happened to the connection, in plain values.
#[derive(Debug)]
pub(super) enum Input<R> {
    /// The broker accepted the CONNECT.
    ConnAck,
    /// A QoS 1 or 2 message went to the spool; its ack waits for receipt `R`.
    Received(Ack, R),
    /// The broker answered the oldest SUBSCRIBE, one code per filter.
    SubAck(Vec<SubscribeReasonCode>),
    UnsubAck,
    /// The oldest `n` (at least one) receipts resolved as committed.
    Committed(usize),
    /// The spool stopped before committing what waits: its error in words.
    SpoolLost(String),
    /// The topic list changed: what to add, what to drop. The shell keeps the list.
    UpdateTopics {
        subscribe: Vec<Topic>,
        unsubscribe: Vec<String>,
    },
    /// Told to stop (or the command channel closed).
    Stop,
    /// A probe of the primary endpoint finished: true when it answered.
    PrimaryProbed(bool),
    /// The keep-alive interval passed.
    Ping,
    /// Our DISCONNECT went out.
    DisconnectWritten,
    /// The DISCONNECT did not get out in time.
    StopDeadlinePassed,
}

/// What the shell does about it, in order.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Output {
    Log(log::Level, String),
    Status(StatusChange),
    /// Probe the primary endpoint (after `mqtt.primary_recheck`).
    StartPrimaryProbe,
    /// End this run now.
    Done,
}

/// A change to this session's entry on the status board.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum StatusChange {
    /// About to try an endpoint.
    Attempt {
        endpoint: String,
        endpoint_idx: usize,
        n_endpoints: usize,
    },
    /// A CONNACK: connected, nothing subscribed yet.
    Connected,
    /// A SUBACK that accepted `n_accepted` filters.
    SubAcked {
        n_accepted: usize,
    },
    UnsubAcked,
    /// The run ended: not connected.
    Ended,
}

impl StatusChange {
    /// Applies the change; `now` is the time of a change of `connected`.
    pub fn apply(&self, status: &mut SessionStatus, now: SystemTime) {
        match self {
            StatusChange::Attempt {
                endpoint,
                endpoint_idx,
                n_endpoints,
            } => {
                status.endpoint = Some(endpoint.clone());
                status.endpoint_index = *endpoint_idx;
                status.n_endpoints = *n_endpoints;
            }
            StatusChange::Connected => {
                status.connected = true;
                // Counted up again by the SUBACKs of this connection.
                status.n_subscribed = 0;
                status.since = now;
                status.auth_refused = false;
                status.n_connects += 1;
            }
            StatusChange::SubAcked { n_accepted } => {
                status.n_subacks += 1;
                status.n_subscribed += n_accepted;
            }
            StatusChange::UnsubAcked => {
                status.n_unsubacks += 1;
                status.n_subscribed = status.n_subscribed.saturating_sub(1);
            }
            StatusChange::Ended => {
                status.connected = false;
                status.n_subscribed = 0;
                status.since = now;
            }
        }
    }
}

/// The protocol state of one session run, across its connections. `R` is a
/// commit receipt: held, never looked into (the shell says when they resolve).
#[derive(Debug)]
pub(super) struct LinkState<R> {
    /// The endpoint walk and backoff, across this run's errors.
    walk: Walk,
    /// Set at CONNACK, cleared when the connection is lost.
    connected_at: Option<Instant>,
    /// Acks of committed records and requests, written together at the next turn.
    queued: Queued,
    /// Filters of each SUBSCRIBE sent and not yet acknowledged, in order (brokers ack in order).
    awaiting_subacks: VecDeque<Vec<String>>,
    /// Logged "connected, subscribed" for the current connection.
    announced: bool,
    /// Set once a stop began: end when the DISCONNECT is written or by this time.
    stop_deadline: Option<Instant>,
    /// QoS 1/2 messages of this connection handed to the spool and not yet
    /// acknowledged, oldest first; the writer commits in order, so they resolve in order.
    unacked: VecDeque<(Ack, R)>,
}

impl<R> LinkState<R> {
    pub fn new(min_backoff: Duration, max_backoff: Duration) -> LinkState<R> {
        LinkState {
            walk: Walk::new(min_backoff, max_backoff),
            connected_at: None,
            queued: Queued::default(),
            awaiting_subacks: VecDeque::new(),
            announced: false,
            stop_deadline: None,
            unacked: VecDeque::new(),
        }
    }

    pub fn is_connected(&self) -> bool {
        self.connected_at.is_some()
    }

    /// When the current connection's CONNACK arrived.
    pub fn connected_at(&self) -> Option<Instant> {
        self.connected_at
    }

    /// When a stop gives up waiting for its DISCONNECT; `Some` once stopping.
    pub fn stop_deadline(&self) -> Option<Instant> {
        self.stop_deadline
    }

    pub fn n_unacked(&self) -> usize {
        self.unacked.len()
    }

    /// The receipts of the messages awaiting their ack, oldest first.
    pub fn unacked_receipts(&self) -> impl Iterator<Item = &R> {
        self.unacked.iter().map(|(_, receipt)| receipt)
    }

    /// What the next write sends, and where it notes each SUBSCRIBE's filters.
    pub fn outgoing(&mut self) -> (&mut Queued, &mut VecDeque<Vec<String>>) {
        (&mut self.queued, &mut self.awaiting_subacks)
    }

    /// About to try the endpoint at `at`: the "trying" line (several
    /// endpoints only; info on the first walk, debug while walks keep failing).
    pub fn on_attempt(&self, at: &Place<'_>) -> Vec<Output> {
        let mut outputs = Vec::new();
        let n_endpoints = at.endpoints.len();
        if n_endpoints > 1 {
            outputs.push(Output::Log(
                self.walk.attempt_level(),
                format!("broker {}: trying {}", at.broker_id, at.endpoint_words()),
            ));
        }
        outputs.push(Output::Status(StatusChange::Attempt {
            endpoint: at.endpoint().to_string(),
            endpoint_idx: at.endpoint_idx,
            n_endpoints,
        }));
        outputs
    }

    /// Takes one input at `now`; what to queue goes into [`Self::outgoing`].
    pub fn handle(&mut self, input: Input<R>, at: &Place<'_>, now: Instant) -> Vec<Output> {
        let mut outputs = Vec::new();
        match input {
            Input::ConnAck => self.on_connack(at, now, &mut outputs),
            Input::Received(ack, receipt) => self.unacked.push_back((ack, receipt)),
            Input::SubAck(codes) => self.on_suback(&codes, at, &mut outputs),
            Input::UnsubAck => outputs.push(Output::Status(StatusChange::UnsubAcked)),
            Input::Committed(n_committed) => self.ack_committed(n_committed),
            Input::SpoolLost(error) => {
                outputs.push(Output::Log(
                    log::Level::Error,
                    format!(
                        "{}: {error}: {} messages stay unacknowledged",
                        at.label(),
                        self.unacked.len()
                    ),
                ));
                // Acknowledging what the spool may not have committed could
                // lose it, so none of it is; the broker sends it again next time.
                self.unacked.clear();
                if self.stop_deadline.is_some() {
                    self.queued.outbox.push_back(Outbound::Disconnect);
                }
            }
            Input::UpdateTopics {
                subscribe,
                unsubscribe,
            } => {
                // Not connected: the next CONNACK subscribes to the updated list.
                if self.is_connected() && self.stop_deadline.is_none() {
                    for filter in unsubscribe {
                        self.queued.outbox.push_back(Outbound::Unsubscribe(filter));
                    }
                    let filters = subscribe_filters(&subscribe, &mut outputs);
                    for packet in subscribe_packets(filters) {
                        self.queued.outbox.push_back(Outbound::Subscribe(packet));
                    }
                }
            }
            Input::Stop => {
                if !self.is_connected() {
                    outputs.push(Output::Done);
                } else if self.stop_deadline.is_none() {
                    self.begin_disconnect(now);
                }
            }
            Input::PrimaryProbed(false) => outputs.push(Output::StartPrimaryProbe),
            Input::PrimaryProbed(true) => {
                if self.stop_deadline.is_none() {
                    outputs.push(Output::Log(
                        log::Level::Info,
                        format!(
                            "broker {}: primary endpoint {} answers again; moving back from {}",
                            at.broker_id,
                            at.endpoints[0],
                            at.endpoint_words()
                        ),
                    ));
                    self.begin_disconnect(now);
                }
            }
            Input::Ping => self.queued.ping = true,
            Input::DisconnectWritten => {
                if self.stop_deadline.is_some() {
                    outputs.push(Output::Done);
                }
            }
            Input::StopDeadlinePassed => {
                outputs.push(Output::Log(
                    log::Level::Warn,
                    format!(
                        "{}: DISCONNECT not sent within {DISCONNECT_TIMEOUT:?}; closing anyway",
                        at.label()
                    ),
                ));
                outputs.push(Output::Done);
            }
        }
        outputs
    }

    /// The connection is gone: forget everything that belonged to it. Returns
    /// how long it had been up (`None`: it never was).
    pub fn on_connection_lost(&mut self, now: Instant) -> Option<Duration> {
        let up_for = self
            .connected_at
            .take()
            .map(|since| now.saturating_duration_since(since));
        self.queued.clear();
        self.awaiting_subacks.clear();
        // Packet ids belong to the lost connection: the broker redelivers what we
        // did not acknowledge, and the spool may then hold it twice (at least once).
        self.unacked.clear();
        up_for
    }

    /// After a connection error: the next endpoint, the wait and the log line (the walk's).
    pub fn after_error(
        &mut self,
        at: &walk::Position<'_>,
        failure: &walk::Failure,
        random: f64,
    ) -> walk::Decision {
        self.walk.after_error(at, failure, random)
    }

    /// The run ends: the "disconnected" line if a connection stood, and the status.
    /// `running`: the run ends to move back to the primary, not because it was told to stop.
    pub fn on_end(&self, running: bool, at: &Place<'_>) -> Vec<Output> {
        let mut outputs = Vec::new();
        if self.is_connected() {
            let why = if running {
                "moving to the primary endpoint"
            } else {
                "stopped"
            };
            outputs.push(Output::Log(
                log::Level::Info,
                format!("{}: disconnected ({why})", at.label()),
            ));
        }
        outputs.push(Output::Status(StatusChange::Ended));
        outputs
    }

    fn on_connack(&mut self, at: &Place<'_>, now: Instant, outputs: &mut Vec<Output>) {
        self.connected_at = Some(now);
        self.announced = false;
        self.walk.on_connected();
        if at.endpoints.len() > 1 {
            outputs.push(Output::Log(
                log::Level::Info,
                format!(
                    "broker {}: connected to {}",
                    at.broker_id,
                    at.endpoint_words()
                ),
            ));
        }
        if at.endpoint_idx > 0 {
            outputs.push(Output::StartPrimaryProbe);
        }
        outputs.push(Output::Status(StatusChange::Connected));
        // Clean session: the broker remembers nothing, so subscribe to everything we want.
        let filters = subscribe_filters(at.topics, outputs);
        if filters.is_empty() {
            self.announce(at, outputs);
        }
        for packet in subscribe_packets(filters) {
            self.queued.outbox.push_back(Outbound::Subscribe(packet));
        }
        if self.stop_deadline.is_some() {
            // Told to stop while connecting; the CONNACK arrived first.
            self.queued.outbox.push_back(Outbound::Disconnect);
        }
    }

    fn on_suback(
        &mut self,
        return_codes: &[SubscribeReasonCode],
        at: &Place<'_>,
        outputs: &mut Vec<Output>,
    ) {
        let filters = self.awaiting_subacks.pop_front().unwrap_or_default();
        let mut n_accepted = 0;
        for (filter, code) in filters.iter().zip(return_codes) {
            if *code == SubscribeReasonCode::Failure {
                outputs.push(Output::Log(
                    log::Level::Warn,
                    format!(
                        "{}: broker refused the subscription to {filter:?}",
                        at.label()
                    ),
                ));
            } else {
                n_accepted += 1;
            }
        }
        outputs.push(Output::Status(StatusChange::SubAcked { n_accepted }));
        if !self.announced {
            self.announce(at, outputs);
        }
    }

    fn announce(&mut self, at: &Place<'_>, outputs: &mut Vec<Output>) {
        self.announced = true;
        outputs.push(Output::Log(
            log::Level::Info,
            format!(
                "{}: connected, subscribed to {} topics",
                at.label(),
                at.topics.len()
            ),
        ));
    }

    /// Acks what the spool is committing, then disconnects (bounded by [`DISCONNECT_TIMEOUT`]).
    fn begin_disconnect(&mut self, now: Instant) {
        self.stop_deadline = Some(now + DISCONNECT_TIMEOUT);
        // Acknowledge what the spool is committing first, so the broker
        // does not redeliver it on the next start (bounded by the deadline).
        if self.unacked.is_empty() {
            self.queued.outbox.push_back(Outbound::Disconnect);
        }
    }

    /// Acknowledges, in order, the `n_committed` oldest messages.
    fn ack_committed(&mut self, n_committed: usize) {
        for _ in 0..n_committed {
            let Some((ack, _)) = self.unacked.pop_front() else {
                break;
            };
            self.queued.acks.push_back(ack);
        }
        if self.unacked.is_empty() && self.stop_deadline.is_some() {
            self.queued.outbox.push_back(Outbound::Disconnect);
        }
    }
}

/// The filters split into SUBSCRIBE packets that each fit rumqttc's outgoing
/// packet limit: one packet over it is refused and ends the connection, so a
/// long topic list (or one long filter row) would disconnect the session in a loop.
fn subscribe_packets(filters: Vec<SubscribeFilter>) -> Vec<Vec<SubscribeFilter>> {
    // Fixed header (at most 5 bytes) and packet id (2) leave the rest for filters.
    const BUDGET: usize = connect::MAX_OUTGOING_PACKET - 16;
    let mut packets: Vec<Vec<SubscribeFilter>> = Vec::new();
    let mut used = BUDGET;
    for filter in filters {
        // Length prefix, the filter, its QoS byte.
        let size = 2 + filter.path.len() + 1;
        if used + size > BUDGET {
            packets.push(Vec::new());
            used = 0;
        }
        used += size;
        if let Some(packet) = packets.last_mut() {
            packet.push(filter);
        }
    }
    packets
}

/// rumqttc rejects a whole SUBSCRIBE if one filter is invalid, so invalid ones
/// are left out here (with a warning each).
fn subscribe_filters(topics: &[Topic], outputs: &mut Vec<Output>) -> Vec<SubscribeFilter> {
    let mut filters = Vec::with_capacity(topics.len());
    for topic in topics {
        if !rumqttc::valid_filter(&topic.filter) {
            outputs.push(Output::Log(
                log::Level::Warn,
                format!(
                    "not subscribing to {:?}: not a valid MQTT topic filter",
                    topic.filter
                ),
            ));
            continue;
        }
        filters.push(SubscribeFilter::new(topic.filter.clone(), qos(topic.qos)));
    }
    filters
}

fn qos(level: u8) -> QoS {
    // The catalog only admits 0..=2; anything else is treated as at-least-once.
    rumqttc::qos(level).unwrap_or(QoS::AtLeastOnce)
}

#[cfg(test)]
mod tests;
