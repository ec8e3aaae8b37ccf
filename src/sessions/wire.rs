//! The connection while it is up: reads and writes rumqttc's packets in bulk.
//!
//! rumqttc's `EventLoop::poll` takes one queued request per call and flushes
//! the socket after each, so every PUBACK cost a `writev` of its own. While
//! connected, the session therefore drives rumqttc's pieces itself: its
//! protocol state (`MqttState`: packet ids, the ping that awaits its answer)
//! and its codec (`Network`: `readb`, `write`, `flush`). Everything queued
//! (the acks of one commit, SUBSCRIBE, UNSUBSCRIBE, DISCONNECT, a ping) is
//! encoded into the write buffer and goes out with one flush. Connecting (TCP,
//! TLS, CONNECT/CONNACK) stays rumqttc's own `poll`.
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
//! the write buffer is flushed empty before every read: `readb` can then only
//! be waiting for the socket (nothing read is lost, the codec keeps partial
//! frames); the few packets it writes itself (a PUBCOMP) fit the buffer.

use std::collections::VecDeque;
use std::time::Duration;

use rumqttc::{
    ConnectionError, Disconnect, EventLoop, PingReq, PubAck, PubRec, QoS, Request, StateError,
    Subscribe, SubscribeFilter, Unsubscribe,
};

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
/// rumqttc's network timeout. The filters of each SUBSCRIBE written go to
/// `subscribed` (brokers answer them in order). On error the connection is
/// cleaned up as rumqttc's own poll does, so its next poll reconnects.
pub(super) async fn write(
    eventloop: &mut EventLoop,
    queued: &mut Queued,
    subscribed: &mut VecDeque<Vec<String>>,
) -> Result<(), ConnectionError> {
    let timeout = Duration::from_secs(eventloop.network_options.connection_timeout());
    // tokio's timer, served by the sessions' own thread: an async-io timer per
    // write would wake async-io's thread to register it.
    let result = tokio::time::timeout(timeout, encode_and_flush(eventloop, queued, subscribed))
        .await
        .unwrap_or(Err(ConnectionError::FlushTimeout));
    if result.is_err() {
        eventloop.clean();
    }
    result
}

async fn encode_and_flush(
    eventloop: &mut EventLoop,
    queued: &mut Queued,
    subscribed: &mut VecDeque<Vec<String>>,
) -> Result<(), ConnectionError> {
    let Some(network) = eventloop.network.as_mut() else {
        return Ok(());
    };
    let state = &mut eventloop.state;
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
            network.write(packet).await?;
        }
    }
    // Also after a read: what readb wrote (a PUBCOMP), or TLS records, go now.
    network.flush().await?;
    Ok(())
}

/// The most packets one [`read`] takes: rumqttc's `readb` stops at its
/// `max_readb_count` of 10 counting from 1, so 9. A read that returns fewer
/// found the socket empty. (Were this too high, a flood would be paced: the
/// backlog bench would show it.)
pub(super) const READ_BATCH: usize = 9;

/// Waits until the socket has data, then reads up to rumqttc's batch of
/// packets into its state; their events wait in `eventloop.state.events`.
/// Cancel-safe while the write buffer is empty (see the module comment).
pub(super) async fn read(eventloop: &mut EventLoop) -> Result<(), StateError> {
    match eventloop.network.as_mut() {
        Some(network) => network.readb(&mut eventloop.state).await,
        None => std::future::pending().await,
    }
}
