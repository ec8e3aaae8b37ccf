//! How to reach one endpoint of a broker: the settings, what a failure was,
//! and a one-off probe (connect, CONNACK, disconnect) that measures it.
//!
//! Sessions use [`ConnectSettings`] for every attempt and [`probe`] to see
//! whether a primary endpoint is back; `mqtt-kinesis-bridge check` uses
//! [`probe`] for every endpoint. Connecting itself is [`super::connection`]'s.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_compat::Compat;
use futures_lite::FutureExt;
use rumqttc::{ConnectReturnCode, ConnectionError, Packet, StateError};

use super::connection::{Mqtt, Target};
use crate::catalog::{Broker, Endpoint};
use crate::config::MqttConfig;

/// We only send CONNECT, SUBSCRIBE, UNSUBSCRIBE, PINGREQ, acks and DISCONNECT.
pub(super) const MAX_OUTGOING_PACKET: usize = 64 * 1024;

/// Everything about a connection that is the same for each of a broker's endpoints.
#[derive(Clone)]
pub struct ConnectSettings {
    pub client_id: String,
    pub keep_alive: Duration,
    pub clean_session: bool,
    /// `mqtt.max_packet_size`: the largest packet read (rumqttc's default is 10 KiB).
    pub max_packet_size: usize,
    /// Built once from the broker's TLS settings; `None`: plain TCP.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl ConnectSettings {
    /// How gateway `gateway_id` connects to `broker`: the row's values, or the
    /// defaults from `mqtt`. Reads the TLS files.
    pub fn for_broker(
        broker: &Broker,
        gateway_id: &str,
        mqtt: &MqttConfig,
    ) -> Result<ConnectSettings, super::tls::TlsError> {
        let tls = match &broker.tls {
            Some(tls) => Some(super::tls::client_config(tls)?),
            None => None,
        };
        Ok(ConnectSettings {
            client_id: client_id(broker, gateway_id),
            keep_alive: broker.keep_alive.unwrap_or(mqtt.keep_alive),
            clean_session: broker.clean_session,
            max_packet_size: mqtt.max_packet_size,
            tls,
        })
    }
}

/// The row's `client_id` with `{gateway_id}` filled in (one catalog row serves
/// many gateways), else `{gateway_id}-{mqtt_id}`.
pub fn client_id(broker: &Broker, gateway_id: &str) -> String {
    match &broker.client_id {
        Some(template) => template.replace("{gateway_id}", gateway_id),
        None => format!("{gateway_id}-{}", broker.id),
    }
}

/// What kind of failure a connection attempt met; `check` reports these words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectFailure {
    /// The host name did not resolve.
    Dns,
    /// Nothing listens on the port (TCP RST), or the network said no route.
    Refused,
    /// No answer in time (TCP, TLS or CONNACK).
    Timeout,
    /// The TLS handshake failed: certificate, name, protocol.
    Tls,
    /// The broker refused our user name, password or client certificate identity.
    Auth,
    /// The broker answered, but not with a usable CONNACK.
    Protocol,
    /// Anything else on the network (reset, closed).
    Network,
}

impl ConnectFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectFailure::Dns => "dns",
            ConnectFailure::Refused => "refused",
            ConnectFailure::Timeout => "timeout",
            ConnectFailure::Tls => "tls",
            ConnectFailure::Auth => "auth",
            ConnectFailure::Protocol => "protocol",
            ConnectFailure::Network => "network",
        }
    }
}

impl fmt::Display for ConnectFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kind of a connection error.
pub fn classify(error: &ConnectionError) -> ConnectFailure {
    match error {
        ConnectionError::Io(error) | ConnectionError::MqttState(StateError::Io(error)) => {
            io_kind(error)
        }
        ConnectionError::ConnectionRefused(
            ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized,
        ) => ConnectFailure::Auth,
        ConnectionError::ConnectionRefused(_) => ConnectFailure::Refused,
        ConnectionError::NetworkTimeout | ConnectionError::FlushTimeout => ConnectFailure::Timeout,
        ConnectionError::Tls(_) => ConnectFailure::Tls,
        ConnectionError::MqttState(StateError::ConnectionAborted) => ConnectFailure::Network,
        _ => ConnectFailure::Protocol,
    }
}

fn io_kind(error: &std::io::Error) -> ConnectFailure {
    use std::io::ErrorKind;
    if is_lookup_failure(error) {
        return ConnectFailure::Dns;
    }
    match error.kind() {
        ErrorKind::ConnectionRefused
        | ErrorKind::HostUnreachable
        | ErrorKind::NetworkUnreachable => ConnectFailure::Refused,
        ErrorKind::TimedOut => ConnectFailure::Timeout,
        _ => ConnectFailure::Network,
    }
}

/// Whether `error` is a failed name lookup.
///
/// Told by its text, and only here, because nothing else tells it: rumqttc
/// resolves with tokio's `lookup_host`, which hands back the error of std's
/// `ToSocketAddrs`, and std turns getaddrinfo's `EAI_*` code into text
/// ("failed to lookup address information: Name or service not known") with
/// `ErrorKind::Uncategorized` (unstable, so not matchable) and no OS error.
fn is_lookup_failure(error: &std::io::Error) -> bool {
    let text = error.to_string();
    text.contains("lookup address") || text.contains("Name or service not known")
}

/// EMFILE: the process has used up its open-files limit (not the broker's fault).
pub fn is_out_of_descriptors(error: &ConnectionError) -> bool {
    let io = match error {
        ConnectionError::Io(io) | ConnectionError::MqttState(StateError::Io(io)) => io,
        _ => return false,
    };
    io.raw_os_error() == Some(libc::EMFILE)
}

/// A connection error in words, lowercase, without packet contents.
pub fn describe(error: &ConnectionError) -> String {
    match error {
        ConnectionError::Io(error) => lowercase_first(&error.to_string()),
        ConnectionError::ConnectionRefused(code) => {
            let reason = match code {
                ConnectReturnCode::Success => "no reason",
                ConnectReturnCode::RefusedProtocolVersion => "protocol version not supported",
                ConnectReturnCode::BadClientId => "client id rejected",
                ConnectReturnCode::ServiceUnavailable => "service unavailable",
                ConnectReturnCode::BadUserNamePassword => "bad user name or password",
                ConnectReturnCode::NotAuthorized => "not authorized",
            };
            format!("broker refused the connection: {reason}")
        }
        ConnectionError::NetworkTimeout => "connect timed out".to_owned(),
        ConnectionError::FlushTimeout => "write timed out".to_owned(),
        ConnectionError::MqttState(StateError::ConnectionAborted) => {
            "connection closed by the broker".to_owned()
        }
        ConnectionError::MqttState(StateError::Io(error)) => lowercase_first(&error.to_string()),
        ConnectionError::MqttState(StateError::AwaitPingResp) => {
            "no answer to keep-alive ping".to_owned()
        }
        ConnectionError::MqttState(StateError::Deserialization(error)) => {
            format!("malformed data from the broker: {error}")
        }
        ConnectionError::MqttState(error) => format!("protocol error: {error}"),
        ConnectionError::NotConnAck(_) => "broker answered CONNECT with another packet".to_owned(),
        ConnectionError::RequestsDone => "request channel closed".to_owned(),
        ConnectionError::Tls(error) => format!("tls: {error}"),
    }
}

fn lowercase_first(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Why a probe failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeFailure {
    pub kind: ConnectFailure,
    pub message: String,
}

/// Connects to `endpoint` with a clean session, waits for the CONNACK and
/// disconnects. Ok: the time from the start to the CONNACK (DNS, TCP, TLS,
/// CONNECT). `settings.client_id` must differ from the running session's, or
/// the broker would drop that session for the probe.
pub async fn probe(
    broker: &Broker,
    endpoint: &Endpoint,
    settings: &ConnectSettings,
    timeout: Duration,
) -> Result<Duration, ProbeFailure> {
    let mut settings = settings.clone();
    settings.clean_session = true;
    let target = Target::new(broker, endpoint, &settings);
    // Inside Compat, the socket is also dropped in tokio's context.
    let mut mqtt = Compat::new(Mqtt::new());
    let started = Instant::now();
    let connack = async {
        match Compat::new(mqtt.get_mut().connect(&target)).await {
            Ok(_) => Ok(started.elapsed()),
            Err(error) => Err(ProbeFailure {
                kind: classify(&error),
                message: describe(&error),
            }),
        }
    };
    let deadline = async {
        async_io::Timer::after(timeout).await;
        Err(ProbeFailure {
            kind: ConnectFailure::Timeout,
            message: format!("no CONNACK within {timeout:?}"),
        })
    };
    let result = connack.or(deadline).await;
    if let Some(connection) = mqtt.get_mut().connection.as_mut() {
        // Best effort: a polite DISCONNECT, bounded; the socket closes on drop anyway.
        if connection.write(Packet::Disconnect).is_ok() {
            let goodbye = async {
                let _ = Compat::new(connection.flush()).await;
            };
            let give_up = async {
                async_io::Timer::after(Duration::from_secs(1)).await;
            };
            goodbye.or(give_up).await;
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_descriptors_is_told_by_the_error_not_its_text() {
        let emfile = ConnectionError::Io(std::io::Error::from_raw_os_error(libc::EMFILE));
        assert!(is_out_of_descriptors(&emfile));
        let refused = ConnectionError::Io(std::io::Error::from_raw_os_error(libc::ECONNREFUSED));
        assert!(!is_out_of_descriptors(&refused));
        assert!(!is_out_of_descriptors(&ConnectionError::NetworkTimeout));
    }

    #[test]
    fn a_failed_lookup_is_dns_and_a_refusal_is_told_by_its_kind() {
        // What std builds from getaddrinfo's EAI_NONAME (its kind is unstable).
        let lookup = std::io::Error::other(
            "failed to lookup address information: Name or service not known",
        );
        assert_eq!(classify(&ConnectionError::Io(lookup)), ConnectFailure::Dns);
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(
            classify(&ConnectionError::Io(refused)),
            ConnectFailure::Refused
        );
        let timeout = std::io::Error::from(std::io::ErrorKind::TimedOut);
        assert_eq!(
            classify(&ConnectionError::MqttState(StateError::Io(timeout))),
            ConnectFailure::Timeout
        );
    }
}
