//! Per-broker connection options against real Mosquitto brokers, through the
//! sessions supervisor: TLS, mutual TLS with a password, failover endpoints and
//! the return to the primary, shared subscriptions split between two gateways.

use std::collections::BTreeSet;
use std::time::Instant;

use mqtt_kinesis_bridge::catalog::{Broker, Endpoint, TlsSettings};
use mqtt_kinesis_bridge::secret::Secret;

use crate::sessions::{broker, count, Gateway, WAIT};
use crate::support::mosquitto::{publish, publish_lines, BrokerSetup, Mosquitto};
use crate::support::tls::TestPki;
use crate::support::*;

fn tls(ca: Option<String>) -> TlsSettings {
    TlsSettings {
        verify_cert: true,
        ca,
        client_cert: None,
        client_key: None,
    }
}

/// `broker(id, port, filters)` on the TLS port of `mosquitto`, with `tls`.
fn tls_broker(id: i64, mosquitto: &Mosquitto, host: &str, settings: TlsSettings) -> Broker {
    let mut broker = broker(id, mosquitto.tls_port(), &["t/#"]);
    broker.endpoints[0].host = host.into();
    broker.tls = Some(settings);
    broker
}

#[test]
fn tls_brokers_deliver_and_a_wrong_ca_fails_only_its_broker() {
    let dir = TempDir::new("tls-brokers");
    let pki = TestPki::new(dir.path());
    let mosquitto = Mosquitto::start_with(BrokerSetup {
        tls: Some(pki.tls_listener(false)),
        ..BrokerSetup::default()
    });
    let path = pki.ca_pem().display().to_string();
    let gateway = Gateway::start("tls-brokers");
    let mut insecure = tls(None);
    insecure.verify_cert = false;
    gateway.send(vec![
        // The CA as a path, checked against the IP SAN.
        tls_broker(1, &mosquitto, "127.0.0.1", tls(Some(path))),
        // The CA as PEM text, checked against the DNS SAN.
        tls_broker(2, &mosquitto, "localhost", tls(Some(pki.read("ca.pem")))),
        // A CA that did not sign the server's certificate.
        tls_broker(
            3,
            &mosquitto,
            "127.0.0.1",
            tls(Some(pki.read("other-ca.pem"))),
        ),
        // No verification at all (test benches).
        tls_broker(4, &mosquitto, "127.0.0.1", insecure),
        // A CA file that is not there: that broker's row is wrong, nobody else's.
        tls_broker(
            5,
            &mosquitto,
            "127.0.0.1",
            tls(Some("/nonexistent/ca.pem".into())),
        ),
    ]);
    for id in [1, 2, 4] {
        gateway.wait_subscribed(id, 1);
    }
    wait_until("broker 3 failing on TLS", WAIT, || {
        gateway
            .status(3)
            .and_then(|s| s.last_error)
            .is_some_and(|e| e.starts_with("tls:"))
    });
    wait_until("broker 5 naming its unreadable ca_cert", WAIT, || {
        gateway
            .status(5)
            .and_then(|s| s.last_error)
            .is_some_and(|e| e.starts_with("ca_cert: cannot read /nonexistent/ca.pem"))
    });
    let failing = gateway.status(3).expect("status of broker 3");
    assert!(!failing.connected && failing.n_connects == 0);
    let error = failing.last_error.unwrap_or_default();
    assert!(
        error.contains("UnknownIssuer") || error.contains("issuer"),
        "{error}"
    );

    publish(mosquitto.port(), "t/x", "over-tls", 5);
    for id in [1, 2, 4] {
        gateway.wait_records(id, "over-tls", 5);
    }
    let records = gateway.stop();
    assert_eq!(count(&records, 3, ""), 0, "broker 3 never connected");
}

#[test]
fn mutual_tls_with_a_password_needs_the_client_certificate() {
    let dir = TempDir::new("mtls-brokers");
    let pki = TestPki::new(dir.path());
    let mosquitto = Mosquitto::start_with(BrokerSetup {
        tls: Some(pki.tls_listener(true)),
        login: Some(("gateway".into(), "s3cret".into())),
        ..BrokerSetup::default()
    });
    let with_cert = |id: i64, cert: String, key: Secret| {
        let mut settings = tls(Some(pki.read("ca.pem")));
        settings.client_cert = Some(cert);
        settings.client_key = Some(key);
        Broker {
            username: Some("gateway".into()),
            password: Some(Secret::new("s3cret")),
            ..tls_broker(id, &mosquitto, "localhost", settings)
        }
    };
    let gateway = Gateway::start("mtls-brokers");
    let mut no_cert = tls_broker(2, &mosquitto, "localhost", tls(Some(pki.read("ca.pem"))));
    no_cert.username = Some("gateway".into());
    no_cert.password = Some(Secret::new("s3cret"));
    gateway.send(vec![
        // Certificate as a path, key as PEM text.
        with_cert(
            1,
            pki.client_pem().display().to_string(),
            Secret::new(pki.read("client.key")),
        ),
        no_cert,
        // A client certificate from a CA the broker does not trust.
        with_cert(
            3,
            pki.read("other-client.pem"),
            Secret::new(pki.other_client_key().display().to_string()),
        ),
    ]);
    gateway.wait_subscribed(1, 1);
    for id in [2, 3] {
        wait_until(&format!("broker {id} refused"), WAIT, || {
            gateway.status(id).is_some_and(|s| s.last_error.is_some())
        });
    }
    publish_lines(
        mosquitto.port(),
        1,
        Some(("gateway", "s3cret")),
        "t/m",
        "mtls",
        4,
    );
    gateway.wait_records(1, "mtls", 4);
    for id in [2, 3] {
        let status = gateway.status(id).expect("status");
        assert_eq!(status.n_connects, 0, "broker {id} must never be admitted");
    }
    gateway.stop();
}

#[test]
fn failover_to_the_second_endpoint_and_back_to_the_primary() {
    let primary_port = free_port();
    let secondary = Mosquitto::start();
    let mut failing_over = broker(1, primary_port, &["t/#"]);
    failing_over.endpoints.push(Endpoint {
        host: "127.0.0.1".into(),
        port: secondary.port(),
    });
    let gateway = Gateway::start("failover");
    gateway.send(vec![failing_over]);

    // The primary is down: the session walks on to the secondary.
    gateway.wait_subscribed(1, 1);
    let status = gateway.status(1).expect("status");
    assert_eq!(status.endpoint_index, 1, "{status:?}");
    assert_eq!(status.n_endpoints, 2);
    assert!(status.last_error.is_some(), "the primary's failure is kept");
    publish(secondary.port(), "t/a", "on-secondary", 3);
    gateway.wait_records(1, "on-secondary", 3);

    // The primary comes up: the session moves back to it (primary_recheck is 500ms here).
    let mut primary = Mosquitto::start_on_port(primary_port);
    wait_until("back on the primary", WAIT, || {
        gateway
            .status(1)
            .is_some_and(|s| s.connected && s.endpoint_index == 0 && s.n_subscribed == 1)
    });
    publish(primary_port, "t/b", "on-primary", 3);
    gateway.wait_records(1, "on-primary", 3);

    // Primary lost: from the loss to a message flowing again via the secondary.
    let lost_at = Instant::now();
    primary.kill();
    wait_until("failed over again", WAIT, || {
        gateway
            .status(1)
            .is_some_and(|s| s.connected && s.endpoint_index == 1 && s.n_subscribed == 1)
    });
    publish(secondary.port(), "t/c", "after-loss", 1);
    gateway.wait_records(1, "after-loss", 1);
    eprintln!(
        "failover: primary killed -> message via the secondary spooled in {:?}",
        lost_at.elapsed()
    );
    let status = gateway.status(1).expect("status");
    assert!(status.n_connects >= 3, "{status:?}");
    gateway.stop();
}

#[test]
fn shared_subscriptions_split_one_topic_between_two_gateways() {
    let mosquitto = Mosquitto::start();
    let shared = || {
        let mut broker = broker(1, mosquitto.port(), &[]);
        broker.topics = vec![mqtt_kinesis_bridge::catalog::Topic {
            filter: "$share/fleet/t/#".into(),
            qos: 1,
            device_id_level: None,
        }];
        broker
    };
    let north = Gateway::start_as("shared-north", "gw-north");
    let south = Gateway::start_as("shared-south", "gw-south");
    north.send(vec![shared()]);
    south.send(vec![shared()]);
    north.wait_subscribed(1, 1);
    south.wait_subscribed(1, 1);

    let n = 200;
    publish(mosquitto.port(), "t/shared", "split", n);
    wait_until("every message in one of the spools", WAIT, || {
        count(&north.records(), 1, "split") + count(&south.records(), 1, "split") >= n
    });
    let north_records = north.stop();
    let south_records = south.stop();
    let payloads = |records: &[mqtt_kinesis_bridge::spool::Record]| -> Vec<String> {
        records
            .iter()
            .map(|r| String::from_utf8_lossy(&r.payload).into_owned())
            .collect()
    };
    let (north_payloads, south_payloads) = (payloads(&north_records), payloads(&south_records));
    let distinct: BTreeSet<&String> = north_payloads.iter().chain(&south_payloads).collect();
    assert_eq!(distinct.len(), n, "every message arrived");
    assert_eq!(
        north_payloads.len() + south_payloads.len(),
        n,
        "no message went to both gateways"
    );
    assert!(
        !north_payloads.is_empty() && !south_payloads.is_empty(),
        "both gateways took a share: north {}, south {}",
        north_payloads.len(),
        south_payloads.len()
    );
}

/// The real binary, a catalog row with `mqtt_failover`: the log tells each step
/// in the words the README shows, and messages flow from the primary after the move back.
#[test]
fn failover_steps_are_logged_and_the_gateway_moves_back() {
    use crate::gateway::Gateway as Binary;
    use crate::support::postgres::TestDb;

    let db = TestDb::new();
    let dir = TempDir::new("failover-binary");
    let primary_port = free_port();
    let secondary = Mosquitto::start();
    db.execute(&format!(
        "INSERT INTO iot_data.mqtt_broker (mqtt_id, mqtt_host, mqtt_port, mqtt_failover, status) \
         VALUES (1, '127.0.0.1', {primary_port}, '127.0.0.1:{}', TRUE)",
        secondary.port()
    ));
    db.add_topic(Some(1), "t/#", 1);
    // No Kinesis: the records stay in the spool, which is what is counted.
    let gateway = Binary::start_with(&dir, &db, "http://127.0.0.1:1", "max_bytes = \"64MiB\"");
    let primary = format!("127.0.0.1:{primary_port}");
    let second = format!("127.0.0.1:{}", secondary.port());
    gateway.wait_log("connected to the secondary", |log| {
        log.contains(&format!("broker 1: connected to endpoint 2/2 {second}"))
    });
    let log = gateway.log();
    for line in [
        format!("broker 1: trying endpoint 1/2 {primary}"),
        format!("broker 1: endpoint 1/2 {primary} failed: connection refused"),
        format!("broker 1: trying endpoint 2/2 {second}"),
    ] {
        assert!(log.contains(&line), "log lacks {line:?}:\n{log}");
    }

    let primary_broker = Mosquitto::start_on_port(primary_port);
    gateway.wait_log("moved back to the primary", |log| {
        log.contains(&format!(
            "broker 1: primary endpoint {primary} answers again; moving back from endpoint 2/2 {second}"
        )) && log.contains(&format!("broker 1: connected to endpoint 1/2 {primary}"))
            && log.matches("connected, subscribed").count() >= 2
    });
    publish(primary_broker.port(), "t/p", "via-primary", 3);
    // The status file is refreshed every second.
    wait_until("3 records from the primary, in the status", WAIT, || {
        let status = gateway.status();
        status["brokers"][0]["spooled"] == 3 && status["brokers"][0]["received"] == 3
    });
    let status = gateway.status();
    assert_eq!(
        status["brokers"][0]["endpoint"],
        primary.as_str(),
        "{status}"
    );
    assert_eq!(status["brokers"][0]["endpoint_index"], 1);
    assert_eq!(status["brokers"][0]["endpoint_count"], 2);
    assert_eq!(status["brokers"][0]["state"], "connected");
}

/// The row's client id (with `{gateway_id}` filled in), keep-alive and clean
/// session reach the broker's CONNECT, as Mosquitto logs it: `as ID (p2, cN, kN)`.
#[test]
fn client_id_keep_alive_and_clean_session_reach_the_broker() {
    let mosquitto = Mosquitto::start();
    let mut custom = broker(1, mosquitto.port(), &["t/#"]);
    custom.client_id = Some("{gateway_id}-line-4".into());
    custom.keep_alive = Some(std::time::Duration::from_secs(17));
    custom.clean_session = true;
    let defaults = broker(2, mosquitto.port(), &["t/#"]);
    let gateway = Gateway::start_as("client-options", "gw-7");
    gateway.send(vec![custom, defaults]);
    gateway.wait_subscribed(1, 1);
    gateway.wait_subscribed(2, 1);
    let log = mosquitto.log();
    assert!(log.contains("as gw-7-line-4 (p2, c1, k17)"), "{log}");
    // The defaults: `{gateway_id}-{mqtt_id}`, a persistent session, mqtt.keep_alive (5s here).
    assert!(log.contains("as gw-7-2 (p2, c0, k5)"), "{log}");
    gateway.stop();
}
