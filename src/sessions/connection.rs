//! One connection to a broker's endpoint, owned by the session: TCP (and
//! TLS), CONNECT/CONNACK, and rumqttc's packet codec over a read and a write
//! buffer, with rumqttc's protocol state ([`MqttState`]).
//!
//! rumqttc's event loop keeps its socket to itself. Owning it lets a session
//! that pauses between reads (`mqtt.read_pause`) raise the socket's receive
//! low-water mark ([`Connection::set_wake_threshold`]): messages arriving
//! during the pause then no longer wake the sessions' thread each (tokio
//! watches sockets edge-triggered, so every arrival did), while a flood or a
//! closed connection still does; the read at the tick takes them without
//! lowering the mark ([`Socket`]).

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures_lite::future::poll_once;
use rumqttc::mqttbytes::Error as CodecError;
use rumqttc::tokio_rustls::client::TlsStream;
use rumqttc::tokio_rustls::TlsConnector;
use rumqttc::{
    ConnAck, Connect, ConnectReturnCode, ConnectionError, Login, MqttState, Packet, StateError,
    TlsError,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};

use super::connect::{ConnectSettings, MAX_OUTGOING_PACKET};
use crate::catalog::{Broker, Endpoint};

/// How long connecting (DNS, TCP, TLS, CONNECT/CONNACK) and each flush may
/// take: rumqttc's default `connection_timeout`.
pub(super) const NETWORK_TIMEOUT: Duration = Duration::from_secs(5);

/// The most packets one [`Connection::read`] takes, so one busy broker
/// cannot hold the sessions' thread; rumqttc's `readb` took as many. A read
/// that returns fewer found the socket empty.
pub(super) const READ_BATCH: usize = 9;

/// Room kept free in the read buffer before each read from the socket.
const READ_CHUNK: usize = 8 * 1024;

/// Where and how to connect: one endpoint of a broker, with its settings.
/// Owned, so a connection attempt in progress borrows nothing of the session.
/// No `Debug`: it holds the password.
pub(super) struct Target {
    host: String,
    port: u16,
    client_id: String,
    keep_alive: Duration,
    clean_session: bool,
    login: Option<(String, String)>,
    tls: Option<Arc<rustls::ClientConfig>>,
    max_incoming: usize,
}

impl Target {
    pub fn new(broker: &Broker, endpoint: &Endpoint, settings: &ConnectSettings) -> Target {
        // MQTT 3.1.1 has no password without a user name; a lone password is ignored.
        let login = broker.username.as_ref().map(|username| {
            let password = broker.password.as_ref().map(|secret| secret.expose());
            (username.clone(), password.unwrap_or_default().to_owned())
        });
        Target {
            host: endpoint.host.clone(),
            port: endpoint.port,
            client_id: settings.client_id.clone(),
            keep_alive: settings.keep_alive,
            clean_session: settings.clean_session,
            login,
            tls: settings.tls.clone(),
            max_incoming: settings.max_packet_size,
        }
    }
}

/// The protocol state of a session's connections and the connection, if up.
pub(super) struct Mqtt {
    /// rumqttc's: packet ids, the ping awaiting its answer, and the events
    /// of the last read (`state.events`).
    pub state: MqttState,
    pub connection: Option<Connection>,
}

impl Mqtt {
    pub fn new() -> Mqtt {
        // The gateway never publishes: one slot for our own in-flight publishes;
        // manual acks: a message is acknowledged after the spool committed it.
        let mut state = MqttState::new(1, true);
        // rumqttc reserves room for 100 events (14 KiB) per broker; a read
        // holds at most READ_BATCH, so let the queue grow to what is used.
        state.events = std::collections::VecDeque::new();
        Mqtt {
            state,
            connection: None,
        }
    }

    /// Connects to `target`, bounded by [`NETWORK_TIMEOUT`]: the CONNACK as
    /// rumqttc's event loop reports it.
    pub async fn connect(&mut self, target: &Target) -> Result<rumqttc::Event, ConnectionError> {
        let (connection, connack) = tokio::time::timeout(NETWORK_TIMEOUT, open(target))
            .await
            .unwrap_or(Err(ConnectionError::NetworkTimeout))?;
        self.connection = Some(connection);
        Ok(rumqttc::Event::Incoming(Packet::ConnAck(connack)))
    }

    /// Drops the connection and the protocol state that belonged to it
    /// (unanswered pings, packet ids); nothing is replayed: acks of a lost
    /// connection are void, the broker sends those messages again.
    pub fn clean(&mut self) {
        self.connection = None;
        let _ = self.state.clean();
    }
}

/// An open connection: the stream and rumqttc's framing.
pub(super) struct Connection {
    stream: Stream,
    read: BytesMut,
    write: BytesMut,
    max_incoming: usize,
}

impl Connection {
    /// Encodes `packet` into the write buffer; [`Connection::flush`] sends it.
    pub fn write(&mut self, packet: Packet) -> Result<(), StateError> {
        packet
            .write(&mut self.write, MAX_OUTGOING_PACKET)
            .map(drop)
            .map_err(StateError::Deserialization)
    }

    /// Sends everything written (and, over TLS, what the handshake or a
    /// read left to send).
    pub async fn flush(&mut self) -> Result<(), StateError> {
        if !self.write.is_empty() {
            self.stream.write_all(&self.write).await?;
            self.write.clear();
        }
        self.stream.flush().await?;
        Ok(())
    }

    /// Waits for the first packet, then takes what is already there, up to
    /// [`READ_BATCH`] packets, into `state` (their events wait in
    /// `state.events`; a PUBCOMP it answers waits in the write buffer).
    /// Cancel-safe: bytes read stay in the read buffer, a partial packet too.
    pub async fn read(&mut self, state: &mut MqttState) -> Result<(), StateError> {
        self.stream.socket_mut().drained = false;
        let mut n_packets = 0;
        loop {
            while n_packets < READ_BATCH {
                let Some(packet) = self.next_buffered()? else {
                    break;
                };
                if let Some(answer) = state.handle_incoming_packet(packet)? {
                    self.write(answer)?;
                }
                n_packets += 1;
            }
            if n_packets == READ_BATCH {
                return Ok(());
            }
            let n_read = if n_packets == 0 {
                // What waits is read at once, even under a raised mark (see
                // `Socket`); only a read that must wait lowers the mark, so
                // that the next arrival wakes it.
                match poll_once(self.fill()).await {
                    Some(n_read) => n_read?,
                    None => {
                        self.set_wake_threshold(1);
                        self.fill().await?
                    }
                }
            } else {
                // Some were read: take more only if they are there already.
                match poll_once(self.fill()).await {
                    Some(n_read) => n_read?,
                    None => return Ok(()),
                }
            };
            if n_read == 0 {
                // Closed: what was read is handed over first, the next read says so.
                return match n_packets {
                    0 => Err(StateError::ConnectionAborted),
                    _ => Ok(()),
                };
            }
        }
    }

    /// The next whole packet in the read buffer; `None`: it holds none (a
    /// partial one stays for the next [`Connection::fill`]).
    fn next_buffered(&mut self) -> Result<Option<Packet>, StateError> {
        match Packet::read(&mut self.read, self.max_incoming) {
            Ok(packet) => Ok(Some(packet)),
            Err(CodecError::InsufficientBytes(_)) => Ok(None),
            Err(error) => Err(StateError::Deserialization(error)),
        }
    }

    /// Reads from the socket into the read buffer, keeping room for a chunk;
    /// 0: the broker closed the connection. Cancel-safe.
    async fn fill(&mut self) -> std::io::Result<usize> {
        if self.read.capacity() - self.read.len() < READ_CHUNK / 2 {
            self.read.reserve(READ_CHUNK);
        }
        self.stream.read_buf(&mut self.read).await
    }

    /// How many bytes must wait in the socket before it reads as ready
    /// (`SO_RCVLOWAT`; 1 is the usual). A paused session raises it so that
    /// arrivals do not wake its thread one by one; a closed connection
    /// signals whatever the threshold. A read under a raised mark still takes
    /// what waits at once, and lowers the mark only if it must wait (see
    /// [`Socket`]). Best effort: on failure, reads only wake more often.
    pub fn set_wake_threshold(&mut self, bytes: usize) {
        self.stream.socket_mut().set_wake_threshold(bytes);
    }
}

/// DNS, TCP to the first address that answers, TLS if configured, CONNECT,
/// and the CONNACK.
async fn open(target: &Target) -> Result<(Connection, ConnAck), ConnectionError> {
    let tcp = Socket {
        tcp: connect_tcp(&target.host, target.port).await?,
        wake_threshold: 1,
        drained: false,
    };
    let stream = match &target.tls {
        None => Stream::Plain(tcp),
        Some(config) => {
            let name = rustls::pki_types::ServerName::try_from(target.host.clone())
                .map_err(|error| ConnectionError::Tls(TlsError::DNSName(error)))?;
            let tls = TlsConnector::from(Arc::clone(config))
                .connect(name, tcp)
                .await
                .map_err(|error| ConnectionError::Tls(TlsError::Io(error)))?;
            Stream::Tls(Box::new(tls))
        }
    };
    let mut connection = Connection {
        stream,
        read: BytesMut::with_capacity(READ_CHUNK),
        write: BytesMut::new(),
        max_incoming: target.max_incoming,
    };
    let mut connect = Connect::new(target.client_id.clone());
    // Whole seconds, at least one (as rumqttc asserts).
    connect.keep_alive = u16::try_from(target.keep_alive.as_secs().max(1)).unwrap_or(u16::MAX);
    connect.clean_session = target.clean_session;
    connect.login = target
        .login
        .as_ref()
        .map(|(username, password)| Login::new(username, password));
    connection.write(Packet::Connect(connect))?;
    connection.flush().await?;
    let packet = loop {
        if let Some(packet) = connection.next_buffered()? {
            break packet;
        }
        if connection.fill().await? == 0 {
            return Err(StateError::ConnectionAborted.into());
        }
    };
    match packet {
        Packet::ConnAck(connack) if connack.code == ConnectReturnCode::Success => {
            Ok((connection, connack))
        }
        Packet::ConnAck(connack) => Err(ConnectionError::ConnectionRefused(connack.code)),
        packet => Err(ConnectionError::NotConnAck(packet)),
    }
}

/// Every address of `host` in turn; the last one's error if none answers.
async fn connect_tcp(host: &str, port: u16) -> Result<TcpStream, ConnectionError> {
    let mut last_error = None;
    for address in tokio::net::lookup_host((host, port)).await? {
        let socket = if address.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        match socket.connect(address).await {
            Ok(stream) => return Ok(stream),
            Err(error) => last_error = Some(error),
        }
    }
    Err(ConnectionError::Io(last_error.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "could not resolve to any address",
        )
    })))
}

/// The TCP socket, with its receive low-water mark (`SO_RCVLOWAT`).
///
/// tokio learns that a socket is readable from the kernel, which under a
/// raised mark says so only once the mark's bytes wait. So a read under a
/// raised mark first takes what waits with a non-blocking `recv` of its own,
/// and only if nothing waits goes through tokio (which then wakes it at the
/// mark, or when the connection closes). A session reading at its tick
/// thereby needs no `setsockopt` to lower the mark and none to raise it
/// again, nor the wake-up that lowering it causes.
struct Socket {
    tcp: TcpStream,
    /// The socket's `SO_RCVLOWAT` as last set: unchanged, not set again.
    wake_threshold: usize,
    /// A `recv` of this read took less than it had room for: nothing more
    /// waited, so the read does not look again (as tokio itself does).
    drained: bool,
}

impl Socket {
    fn set_wake_threshold(&mut self, bytes: usize) {
        if bytes == self.wake_threshold {
            return;
        }
        self.wake_threshold = bytes;
        let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
        let fd = self.tcp.as_raw_fd();
        // SAFETY: `fd` is this connection's open socket (borrowed for the
        // call); the option value is a c_int of the size passed.
        let result = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVLOWAT,
                std::ptr::from_ref(&value).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if result != 0 {
            log::debug!("SO_RCVLOWAT {bytes}: {}", std::io::Error::last_os_error());
        }
    }

    /// A non-blocking `recv` into `buf`: what waits, 0 bytes at the end of
    /// the stream, `WouldBlock` if nothing waits.
    fn recv_waiting(&mut self, buf: &mut ReadBuf<'_>) -> std::io::Result<()> {
        // SAFETY: `recv` only writes into the unfilled part (never
        // de-initialises it), and `assume_init` below covers exactly the
        // bytes it wrote. Not zeroed first: the read buffer's untouched
        // pages stay unmapped.
        let unfilled = unsafe { buf.unfilled_mut() };
        let room = unfilled.len();
        // SAFETY: `fd` is this connection's open socket; `recv` writes at most
        // `room` bytes into `unfilled`, which it borrows for the call.
        let n = unsafe {
            libc::recv(
                self.tcp.as_raw_fd(),
                unfilled.as_mut_ptr().cast(),
                room,
                libc::MSG_DONTWAIT,
            )
        };
        match usize::try_from(n) {
            Ok(n) => {
                self.drained = n < room;
                // SAFETY: `recv` initialised the first `n` unfilled bytes.
                unsafe { buf.assume_init(n) };
                buf.advance(n);
                Ok(())
            }
            Err(_) => Err(std::io::Error::last_os_error()),
        }
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let socket = self.get_mut();
        if socket.wake_threshold > 1 && !socket.drained {
            match socket.recv_waiting(buf) {
                Err(error)
                    if matches!(
                        error.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                    ) => {}
                done => return std::task::Poll::Ready(done),
            }
        }
        std::pin::Pin::new(&mut socket.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

/// Plain TCP or TLS over it.
enum Stream {
    Plain(Socket),
    Tls(Box<TlsStream<Socket>>),
}

impl Stream {
    fn socket_mut(&mut self) -> &mut Socket {
        match self {
            Stream::Plain(socket) => socket,
            Stream::Tls(tls) => tls.get_mut().0,
        }
    }

    #[cfg(test)]
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(socket) => &socket.tcp,
            Stream::Tls(tls) => &tls.get_ref().0.tcp,
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => std::pin::Pin::new(tcp).poll_read(cx, buf),
            Stream::Tls(tls) => std::pin::Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(tcp) => std::pin::Pin::new(tcp).poll_write(cx, buf),
            Stream::Tls(tls) => std::pin::Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => std::pin::Pin::new(tcp).poll_flush(cx),
            Stream::Tls(tls) => std::pin::Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => std::pin::Pin::new(tcp).poll_shutdown(cx),
            Stream::Tls(tls) => std::pin::Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::{Publish, QoS};
    use tokio::net::TcpListener;

    /// A connection to `127.0.0.1:port` as client `test`, plain TCP.
    fn target(port: u16) -> Target {
        Target {
            host: "127.0.0.1".to_owned(),
            port,
            client_id: "test".to_owned(),
            keep_alive: Duration::from_secs(30),
            clean_session: true,
            login: None,
            tls: None,
            max_incoming: 1024,
        }
    }

    fn publish_bytes(pkid: u16) -> Vec<u8> {
        let mut publish = Publish::new("t", QoS::AtLeastOnce, vec![pkid as u8; 40]);
        publish.pkid = pkid;
        let mut bytes = BytesMut::new();
        Packet::Publish(publish).write(&mut bytes, 1024).unwrap();
        bytes.to_vec()
    }

    fn published(mqtt: &mut Mqtt) -> Vec<u16> {
        mqtt.state
            .events
            .drain(..)
            .filter_map(|event| match event {
                rumqttc::Event::Incoming(Packet::Publish(publish)) => Some(publish.pkid),
                _ => None,
            })
            .collect()
    }

    /// Runs `test` with a listener on a free port, in a runtime like the sessions'.
    fn with_listener<F: std::future::Future<Output = ()>>(test: impl FnOnce(TcpListener) -> F) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            tokio::time::timeout(Duration::from_secs(30), test(listener))
                .await
                .expect("the test finished within its deadline");
        });
    }

    /// Accepts one client, reads its CONNECT and answers `connack`.
    async fn accept(listener: &TcpListener, connack: [u8; 4]) -> TcpStream {
        let (mut broker, _) = listener.accept().await.unwrap();
        let mut connect = BytesMut::new();
        loop {
            broker.read_buf(&mut connect).await.unwrap();
            match Packet::read(&mut connect, 1024) {
                Ok(Packet::Connect(connect)) => {
                    assert_eq!(connect.client_id, "test");
                    break;
                }
                Err(CodecError::InsufficientBytes(_)) => {}
                other => panic!("expected CONNECT, got {other:?}"),
            }
        }
        broker.write_all(&connack).await.unwrap();
        broker
    }

    /// A fresh [`Mqtt`] connected to `listener`, and the broker's side.
    async fn connected(listener: &TcpListener) -> (Mqtt, TcpStream) {
        let port = listener.local_addr().unwrap().port();
        let mut mqtt = Mqtt::new();
        let (connected, broker) = futures_lite::future::zip(
            mqtt.connect(&target(port)),
            accept(listener, [0x20, 2, 0, 0]),
        )
        .await;
        assert!(
            matches!(connected, Ok(rumqttc::Event::Incoming(Packet::ConnAck(_)))),
            "{connected:?}"
        );
        (mqtt, broker)
    }

    #[test]
    fn a_read_takes_whole_packets_and_keeps_a_partial_one_for_the_next() {
        with_listener(|listener| async move {
            let (mut mqtt, mut broker) = connected(&listener).await;
            let third = publish_bytes(3);
            let mut sent = [publish_bytes(1), publish_bytes(2)].concat();
            sent.extend_from_slice(&third[..10]);
            broker.write_all(&sent).await.unwrap();
            let connection = mqtt.connection.as_mut().unwrap();
            let state = &mut mqtt.state;
            while state.events.len() < 2 {
                connection.read(state).await.unwrap();
            }
            assert_eq!(published(&mut mqtt), [1, 2]);
            broker.write_all(&third[10..]).await.unwrap();
            let connection = mqtt.connection.as_mut().unwrap();
            connection.read(&mut mqtt.state).await.unwrap();
            assert_eq!(published(&mut mqtt), [3]);
            // Closed by the broker: said by the next read.
            drop(broker);
            let connection = mqtt.connection.as_mut().unwrap();
            let closed = connection.read(&mut mqtt.state).await;
            assert!(
                matches!(closed, Err(StateError::ConnectionAborted)),
                "{closed:?}"
            );
        });
    }

    #[test]
    fn what_arrived_under_a_raised_mark_is_read_once_the_mark_is_lowered() {
        with_listener(|listener| async move {
            let (mut mqtt, mut broker) = connected(&listener).await;
            let connection = mqtt.connection.as_mut().unwrap();
            connection.set_wake_threshold(32 * 1024);
            assert_eq!(low_water_mark(connection), 32 * 1024);
            broker.write_all(&publish_bytes(7)).await.unwrap();
            // In the socket, below the mark: not yet readable for tokio.
            while bytes_waiting(connection) == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            connection.set_wake_threshold(1);
            assert_eq!(low_water_mark(connection), 1);
            // Lowering it signals the socket: the read does not wait for more.
            connection.read(&mut mqtt.state).await.unwrap();
            assert_eq!(published(&mut mqtt), [7]);
        });
    }

    #[test]
    fn what_waits_under_a_raised_mark_is_read_at_once_and_the_mark_stays_raised() {
        with_listener(|listener| async move {
            let (mut mqtt, mut broker) = connected(&listener).await;
            let connection = mqtt.connection.as_mut().unwrap();
            connection.set_wake_threshold(32 * 1024);
            broker
                .write_all(&[publish_bytes(8), publish_bytes(9)].concat())
                .await
                .unwrap();
            while bytes_waiting(connection) < 2 * publish_bytes(8).len() as libc::c_int {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            // Below the mark, so tokio was never told; the read looks itself.
            connection.read(&mut mqtt.state).await.unwrap();
            assert_eq!(published(&mut mqtt), [8, 9]);
            let connection = mqtt.connection.as_mut().unwrap();
            assert_eq!(low_water_mark(connection), 32 * 1024);
            // The end of the stream, too, is seen under the raised mark.
            drop(broker);
            let closed = connection.read(&mut mqtt.state).await;
            assert!(
                matches!(closed, Err(StateError::ConnectionAborted)),
                "{closed:?}"
            );
        });
    }

    #[test]
    fn a_read_that_finds_nothing_under_a_raised_mark_lowers_it_and_waits() {
        with_listener(|listener| async move {
            let (mut mqtt, mut broker) = connected(&listener).await;
            let connection = mqtt.connection.as_mut().unwrap();
            connection.set_wake_threshold(32 * 1024);
            let fd = connection.stream.tcp().as_raw_fd();
            let read = connection.read(&mut mqtt.state);
            let broker_side = async {
                // The read waits with the mark lowered, so one small
                // message, far below the raised mark, wakes it.
                while socket_low_water_mark(fd) != 1 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                broker.write_all(&publish_bytes(4)).await.unwrap();
            };
            let (read, ()) = futures_lite::future::zip(read, broker_side).await;
            read.unwrap();
            assert_eq!(published(&mut mqtt), [4]);
        });
    }

    #[test]
    fn a_refused_connect_and_a_silent_close_are_told_apart() {
        with_listener(|listener| async move {
            let port = listener.local_addr().unwrap().port();
            let mut mqtt = Mqtt::new();
            let (refused, _broker) = futures_lite::future::zip(
                mqtt.connect(&target(port)),
                accept(&listener, [0x20, 2, 0, 5]),
            )
            .await;
            assert!(
                matches!(
                    refused,
                    Err(ConnectionError::ConnectionRefused(
                        ConnectReturnCode::NotAuthorized
                    ))
                ),
                "{refused:?}"
            );
            let closing = async {
                let (broker, _) = listener.accept().await.unwrap();
                drop(broker);
            };
            let (closed, ()) =
                futures_lite::future::zip(mqtt.connect(&target(port)), closing).await;
            assert!(
                matches!(
                    closed,
                    Err(ConnectionError::MqttState(StateError::ConnectionAborted))
                        | Err(ConnectionError::MqttState(StateError::Io(_)))
                ),
                "{closed:?}"
            );
            assert!(mqtt.connection.is_none());
        });
    }

    fn low_water_mark(connection: &Connection) -> libc::c_int {
        socket_low_water_mark(connection.stream.tcp().as_raw_fd())
    }

    fn socket_low_water_mark(fd: std::os::fd::RawFd) -> libc::c_int {
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: an open socket, and a c_int with its size.
        let result = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVLOWAT,
                std::ptr::from_mut(&mut value).cast(),
                &mut len,
            )
        };
        assert_eq!(result, 0);
        value
    }

    fn bytes_waiting(connection: &Connection) -> libc::c_int {
        let mut n: libc::c_int = 0;
        // SAFETY: an open socket; FIONREAD writes one c_int.
        let result =
            unsafe { libc::ioctl(connection.stream.tcp().as_raw_fd(), libc::FIONREAD, &mut n) };
        assert_eq!(result, 0);
        n
    }
}
