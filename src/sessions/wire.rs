//! The connection while it is up: reads and writes rumqttc's packets in bulk.
//!
//! Everything queued (the acks of one commit, SUBSCRIBE, UNSUBSCRIBE,
//! DISCONNECT, a ping) goes through rumqttc's protocol state (`MqttState`:
//! packet ids, the ping that awaits its answer), is encoded into the write
//! buffer and goes out with one flush ([`super::connection`]), not a write
//! per PUBACK as rumqttc's own event loop did.
//!
//! Pacing (`mqtt.read_pause`): a read that found fewer packets than a full
//! batch emptied the socket; the next one waits for the sessions' shared tick
//! ([`super::tick`]), so at field rates one wake-up reads several messages of
//! every broker. A full batch (a flood) reads on at once, and so does a
//! session that has just written acks (its broker may have been waiting at
//! its in-flight window).
//!
//! Cancel safety: the session races [`read`] against commands, commit
//! receipts and timers, and drops it when another wins. That is safe because
//! the write buffer is flushed empty before every read: a read can then only
//! be waiting for the socket (nothing read is lost, the read buffer keeps
//! partial packets); the few packets it writes itself (a PUBCOMP) wait in the
//! write buffer for the next flush.

use std::collections::VecDeque;

use rumqttc::{
    ConnectionError, Disconnect, PingReq, PubAck, PubRec, QoS, Request, StateError, Subscribe,
    SubscribeFilter, Unsubscribe,
};

use super::connection::{Mqtt, NETWORK_TIMEOUT};

/// What acknowledging one message takes: 4 bytes, not a whole `Publish`.
/// Brokers do not always hold back at their in-flight window, so thousands can
/// wait; their number is bounded by the 65,535 packet ids.
#[derive(Clone, Copy, Debug)]
pub(super) struct Ack {
    pub pkid: u16,
    pub qos: QoS,
}

impl Ack {
    fn request(self) -> Option<Request> {
        match self.qos {
            QoS::AtMostOnce => None,
            QoS::AtLeastOnce => Some(Request::PubAck(PubAck::new(self.pkid))),
            QoS::ExactlyOnce => Some(Request::PubRec(PubRec::new(self.pkid))),
        }
    }
}

/// A request that waits, after the acks, for the next write.
#[derive(Debug)]
pub(super) enum Outbound {
    Subscribe(Vec<SubscribeFilter>),
    Unsubscribe(String),
    Disconnect,
}

/// What waits to be written, in order: acknowledgements first, so a
/// DISCONNECT queued meanwhile goes after them.
#[derive(Debug, Default)]
pub(super) struct Queued {
    pub acks: VecDeque<Ack>,
    pub outbox: VecDeque<Outbound>,
    /// The keep-alive interval passed: send a PINGREQ (an error if the last
    /// one was never answered).
    pub ping: bool,
}

impl Queued {
    pub fn clear(&mut self) {
        self.acks.clear();
        self.outbox.clear();
        self.ping = false;
    }
}

/// Encodes everything queued and flushes it in one write, bounded by
/// [`NETWORK_TIMEOUT`]. The filters of each SUBSCRIBE written go to
/// `subscribed` (brokers answer them in order). On error the connection is
/// dropped, so the session connects again.
pub(super) async fn write(
    mqtt: &mut Mqtt,
    queued: &mut Queued,
    subscribed: &mut VecDeque<Vec<String>>,
) -> Result<(), ConnectionError> {
    // tokio's timer, served by the sessions' own thread: an async-io timer per
    // write would wake async-io's thread to register it.
    let result = tokio::time::timeout(NETWORK_TIMEOUT, encode_and_flush(mqtt, queued, subscribed))
        .await
        .unwrap_or(Err(ConnectionError::FlushTimeout));
    if result.is_err() {
        mqtt.clean();
    }
    result
}

async fn encode_and_flush(
    mqtt: &mut Mqtt,
    queued: &mut Queued,
    subscribed: &mut VecDeque<Vec<String>>,
) -> Result<(), ConnectionError> {
    let Some(connection) = mqtt.connection.as_mut() else {
        return Ok(());
    };
    let state = &mut mqtt.state;
    let mut requests = queued
        .acks
        .drain(..)
        .filter_map(Ack::request)
        .collect::<Vec<_>>();
    for outbound in queued.outbox.drain(..) {
        requests.push(match outbound {
            Outbound::Subscribe(filters) => {
                subscribed.push_back(filters.iter().map(|f| f.path.clone()).collect());
                Request::Subscribe(Subscribe::new_many(filters))
            }
            Outbound::Unsubscribe(filter) => Request::Unsubscribe(Unsubscribe::new(filter)),
            Outbound::Disconnect => Request::Disconnect(Disconnect),
        });
    }
    if std::mem::take(&mut queued.ping) {
        requests.push(Request::PingReq(PingReq));
    }
    for request in requests {
        if let Some(packet) = state.handle_outgoing_packet(request)? {
            connection.write(packet)?;
        }
    }
    // Also after a read: what it wrote (a PUBCOMP), or TLS records, go now.
    connection.flush().await?;
    Ok(())
}

/// Waits until the socket has data, then reads up to
/// [`super::connection::READ_BATCH`] packets into the protocol state; their
/// events wait in `mqtt.state.events`. Cancel-safe while the write buffer is
/// empty (see the module comment).
pub(super) async fn read(mqtt: &mut Mqtt) -> Result<(), StateError> {
    match mqtt.connection.as_mut() {
        Some(connection) => connection.read(&mut mqtt.state).await,
        None => std::future::pending().await,
    }
}
