//! The sessions' probe for the `check` command: every endpoint of every
//! broker, connect + CONNACK, timed, concurrently. The client id is the
//! session's with `-check`, so a running gateway's sessions are not
//! disturbed (a broker drops the older of two connections with one id).
//!
//! It returns what it found as values; the wording of `check`'s lines is `check`'s.

use std::time::Duration;

use super::connect::{self, ConnectSettings};
pub use super::connect::{ConnectFailure, ProbeFailure};
use super::tls::TlsError;
use crate::catalog::{Broker, BrokerId, Endpoint};
use crate::config::MqttConfig;

/// How long one endpoint gets to answer CONNECT with CONNACK.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// What one broker's probe found.
#[derive(Debug)]
pub enum BrokerProbe {
    /// The broker's TLS settings (its certificate and key files) cannot be used:
    /// none of its endpoints was tried.
    Settings {
        broker_id: BrokerId,
        error: TlsError,
    },
    /// One endpoint tried.
    Endpoint {
        broker_id: BrokerId,
        /// Its index (0: the primary) in a list of `n_endpoints`.
        endpoint_idx: usize,
        n_endpoints: usize,
        endpoint: Endpoint,
        /// The time to the CONNACK, or the failure in words and kind.
        answer: Result<Duration, ProbeFailure>,
    },
}

/// Probes every endpoint of `brokers` (blocking, on an executor of its own):
/// the brokers whose settings fail first, then every endpoint in catalog order.
pub fn probe(brokers: &[Broker], gateway_id: &str, config: &MqttConfig) -> Vec<BrokerProbe> {
    let executor = smol::Executor::new();
    let mut tasks = Vec::new();
    let mut probes = Vec::new();
    for broker in brokers {
        let settings = match settings_for(broker, gateway_id, config) {
            Ok(settings) => settings,
            Err(error) => {
                probes.push(BrokerProbe::Settings {
                    broker_id: broker.id,
                    error,
                });
                continue;
            }
        };
        let n_endpoints = broker.endpoints.len();
        for (endpoint_idx, endpoint) in broker.endpoints.iter().enumerate() {
            let broker = broker.clone();
            let endpoint = endpoint.clone();
            let settings = settings.clone();
            tasks.push(executor.spawn(async move {
                let answer = connect::probe(&broker, &endpoint, &settings, PROBE_TIMEOUT).await;
                BrokerProbe::Endpoint {
                    broker_id: broker.id,
                    endpoint_idx,
                    n_endpoints,
                    endpoint,
                    answer,
                }
            }));
        }
    }
    probes.extend(smol::block_on(executor.run(async {
        let mut results = Vec::with_capacity(tasks.len());
        for task in tasks {
            results.push(task.await);
        }
        results
    })));
    probes
}

fn settings_for(
    broker: &Broker,
    gateway_id: &str,
    config: &MqttConfig,
) -> Result<ConnectSettings, TlsError> {
    let mut settings = ConnectSettings::for_broker(broker, gateway_id, config)?;
    // Not the running session's id, or the broker would drop that session.
    settings.client_id = format!("{}-check", settings.client_id);
    Ok(settings)
}
