//! Issue 16: a fleet of gateways sharing one catalog, each running the brokers
//! `iot_data.mqtt_broker_gateway` gives it (and the unassigned ones).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use mqtt_kinesis_bridge::catalog::snapshot;

use crate::gateway::Gateway;
use crate::support::kinesis::FakeKinesis;
use crate::support::mosquitto::{publish, Mosquitto};
use crate::support::postgres::TestDb;
use crate::support::*;

const WAIT: Duration = Duration::from_secs(30);

/// The brokers `gateway` reports connected in `status --json`.
fn connected(gateway: &Gateway) -> BTreeSet<i64> {
    let Some(status) = gateway.try_status() else {
        return BTreeSet::new();
    };
    status["brokers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|broker| broker["state"] == "connected")
        .filter_map(|broker| broker["broker_id"].as_i64())
        .collect()
}

fn wait_connected(gateway: &Gateway, name: &str, expected: &[i64]) {
    let expected: BTreeSet<i64> = expected.iter().copied().collect();
    wait_until(
        &format!("{name} connected to exactly brokers {expected:?}"),
        WAIT,
        || connected(gateway) == expected,
    );
}

/// How many times each payload text of `broker_id` reached Kinesis.
fn delivered(kinesis: &FakeKinesis, broker_id: i64) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for data in kinesis.accepted() {
        let json: Value = serde_json::from_slice(&data).expect("json envelope");
        if json["broker_id"].as_i64() == Some(broker_id) {
            let text = json["payload_text"].as_str().unwrap_or_default().to_owned();
            *counts.entry(text).or_default() += 1;
        }
    }
    counts
}

/// The broker ids in the catalog snapshot in `dir` (beside the spool).
fn snapshot_ids(dir: &TempDir) -> Vec<i64> {
    let snapshot = snapshot::load(&dir.join("catalog-snapshot.db"), None)
        .expect("read the snapshot")
        .expect("a snapshot");
    snapshot.catalog.brokers.iter().map(|b| b.id).collect()
}

/// Prints the gateways' logs when the test fails.
struct LogsOnPanic<'a>(&'a [(&'a str, &'a Gateway)]);

impl Drop for LogsOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for (name, gateway) in self.0 {
                eprintln!("--- {name} log ---\n{}", gateway.log());
            }
        }
    }
}

/// Whether `mosquitto` ever saw a client connect with `client_id`.
fn saw_client(mosquitto: &Mosquitto, client_id: &str) -> bool {
    mosquitto.log().contains(&format!(" as {client_id} "))
}

/// Two gateways, three brokers: 1 assigned to gw-a, 2 to gw-b, 3 to nobody.
/// Each runs its own and the unassigned one; moving broker 1 to gw-b loses
/// no message published before, during or after the move; deleting every
/// assignment row returns to every gateway running every broker.
#[test]
fn gateways_run_their_brokers_and_a_broker_moves_live() {
    let db = TestDb::new();
    let kinesis = FakeKinesis::start(Vec::new());
    let brokers = [Mosquitto::start(), Mosquitto::start(), Mosquitto::start()];
    for (idx, broker) in brokers.iter().enumerate() {
        db.add_broker(idx as i32 + 1, broker.port());
    }
    db.add_topic(None, "fleet/#", 1);
    // Broker 1 moves: a client id of its own (not the gateway's) and a
    // persistent session, so Mosquitto queues for it while it changes gateway.
    db.execute(
        "UPDATE iot_data.mqtt_broker SET client_id = 'fleet-1' WHERE mqtt_id = 1;
         INSERT INTO iot_data.mqtt_broker_gateway (mqtt_id, gateway_id)
         VALUES (1, 'gw-a'), (2, 'gw-b')",
    );
    let (dir_a, dir_b) = (TempDir::new("fleet-a"), TempDir::new("fleet-b"));
    let gw_a = Gateway::start_as(&dir_a, &db, &kinesis.endpoint(), "gw-a");
    let gw_b = Gateway::start_as(&dir_b, &db, &kinesis.endpoint(), "gw-b");
    let gateways = [("gw-a", &gw_a), ("gw-b", &gw_b)];
    let _logs = LogsOnPanic(&gateways);

    wait_connected(&gw_a, "gw-a", &[1, 3]);
    wait_connected(&gw_b, "gw-b", &[2, 3]);
    assert_eq!(snapshot_ids(&dir_a), vec![1, 3]);
    for (gateway, other) in [(&gw_a, 2), (&gw_b, 1)] {
        let log = gateway.log();
        assert!(!log.contains(&format!("broker {other} added")), "{log}");
        assert!(log.contains("runs 2 of 3 brokers"), "{log}");
    }
    assert!(saw_client(&brokers[1], "gw-b-2"));
    assert!(
        !saw_client(&brokers[1], "gw-a-2"),
        "gw-a connected to broker 2"
    );
    assert!(saw_client(&brokers[2], "gw-a-3") && saw_client(&brokers[2], "gw-b-3"));

    // The unassigned broker reaches Kinesis through both gateways; broker 2 through gw-b only.
    publish(brokers[1].port(), "fleet/two", "two", 10);
    publish(brokers[2].port(), "fleet/three", "three", 10);
    wait_until("brokers 2 and 3 delivered", WAIT, || {
        delivered(&kinesis, 2).len() == 10
            && delivered(&kinesis, 3).values().filter(|n| **n == 2).count() == 10
    });
    assert!(delivered(&kinesis, 2).values().all(|n| *n == 1));

    // Publish to broker 1 without pause while it moves from gw-a to gw-b.
    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(Mutex::new(BTreeSet::new()));
    let publisher = {
        let (stop, published) = (Arc::clone(&stop), Arc::clone(&published));
        let port = brokers[0].port();
        std::thread::spawn(move || {
            let mut batch = 0;
            while !stop.load(Ordering::SeqCst) {
                let tag = format!("move{batch}");
                publish(port, "fleet/one", &tag, 10);
                let mut published = published.lock().unwrap();
                published.extend((0..10).map(|i| format!("{tag}-{i}")));
                batch += 1;
            }
        })
    };
    let n_published = || published.lock().unwrap().len();
    wait_until("messages published before the move", WAIT, || {
        n_published() >= 50
    });
    db.execute("UPDATE iot_data.mqtt_broker_gateway SET gateway_id = 'gw-b' WHERE mqtt_id = 1");
    // The stop. Both gateways hear the NOTIFY at once: when gw-b connects
    // first, Mosquitto hands it the session and drops gw-a's connection (no
    // "disconnected (stopped)" line then); what gw-a had not acknowledged is
    // redelivered to gw-b, so nothing is lost either way.
    gw_a.wait_log("gw-a stops broker 1", |log| {
        log.contains("broker 1 removed")
    });
    gw_b.wait_log("gw-b connects broker 1", |log| {
        log.contains("broker 1 added")
            && log.contains(&format!(
                "broker 1 (127.0.0.1:{}): connected, subscribed",
                brokers[0].port()
            ))
    });
    wait_connected(&gw_a, "gw-a", &[3]);
    wait_connected(&gw_b, "gw-b", &[1, 2, 3]);
    let log_a = gw_a.log();
    let after_stop = &log_a[log_a.find("broker 1 removed").unwrap()..];
    assert!(!after_stop.contains("connected, subscribed"), "{log_a}");
    // The snapshot is written before the sessions hear of a change.
    assert_eq!(snapshot_ids(&dir_a), vec![3]);
    assert_eq!(snapshot_ids(&dir_b), vec![1, 2, 3]);
    let n_at_move = n_published();
    wait_until("messages published after the move", WAIT, || {
        n_published() >= n_at_move + 50
    });
    stop.store(true, Ordering::SeqCst);
    publisher.join().expect("publisher");
    let published = published.lock().unwrap().clone();
    wait_until(
        &format!("all {} messages of broker 1 in Kinesis", published.len()),
        WAIT,
        || delivered(&kinesis, 1).len() >= published.len(),
    );
    let delivered_1: BTreeSet<String> = delivered(&kinesis, 1).into_keys().collect();
    assert_eq!(
        delivered_1, published,
        "a message of broker 1 was lost or invented"
    );

    // No rows: every gateway runs every broker again (broker 1 back on a
    // per-gateway client id, as two gateways must not share one).
    db.execute(
        "BEGIN;
         UPDATE iot_data.mqtt_broker SET client_id = NULL WHERE mqtt_id = 1;
         DELETE FROM iot_data.mqtt_broker_gateway;
         COMMIT;",
    );
    wait_connected(&gw_a, "gw-a", &[1, 2, 3]);
    wait_connected(&gw_b, "gw-b", &[1, 2, 3]);
    assert!(saw_client(&brokers[1], "gw-a-2"));
    assert!(saw_client(&brokers[0], "gw-a-1") && saw_client(&brokers[0], "gw-b-1"));
}

/// `check --json` on `gateway`'s config: the checks, by target.
fn check_lines(dir: &TempDir) -> BTreeMap<String, Value> {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_mqtt-kinesis-bridge"))
        .args(["check", "--json", "--config"])
        .arg(dir.join("gateway.toml"))
        .output()
        .expect("run check");
    let report: Value = serde_json::from_slice(&output.stdout).expect("check --json prints JSON");
    report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .map(|check| (check["target"].as_str().unwrap().to_owned(), check.clone()))
        .collect()
}

/// A catalog without the assignment table runs every broker and says so once
/// (not at every read); the table created live takes effect; `check` shows
/// the split and fails a broker two gateways run without shared subscriptions,
/// which the running gateway warns about.
#[test]
fn the_assignment_table_is_optional_and_check_shows_the_split() {
    let db = TestDb::new();
    db.execute("DROP TABLE iot_data.mqtt_broker_gateway");
    let kinesis = FakeKinesis::start(Vec::new());
    let brokers = [Mosquitto::start(), Mosquitto::start()];
    db.add_broker(1, brokers[0].port());
    db.add_topic(Some(1), "site/a", 1);
    let dir = TempDir::new("fleet-optional");
    let gateway = Gateway::start_as(&dir, &db, &kinesis.endpoint(), "gw-a");
    let gateways = [("gw-a", &gateway)];
    let _logs = LogsOnPanic(&gateways);
    wait_connected(&gateway, "gw-a", &[1]);
    let absent = "no iot_data.mqtt_broker_gateway table: every broker runs on every gateway";
    // Two more reads (NOTIFY on each topic change).
    for (n, filter) in [(1, "site/b"), (2, "site/c")] {
        db.add_topic(Some(1), filter, 1);
        gateway.wait_log("the topic change applied", |log| {
            log.matches("subscribing to 1 and unsubscribing from 0 topics")
                .count()
                == n
        });
    }
    assert_eq!(
        gateway.log().matches(absent).count(),
        1,
        "{}",
        gateway.log()
    );
    let lines = check_lines(&dir);
    let line = &lines["iot_data.mqtt_broker_gateway"];
    assert_eq!(line["ok"], true);
    assert_eq!(
        line["detail"],
        "absent: gateway gw-a runs all 1 brokers, as every gateway does"
    );

    // The table appears with broker 1 on two gateways, broker 2 on another.
    db.execute(include_str!(
        "../../buffer-schema/catalog/0006_broker_gateway.sql"
    ));
    db.add_broker(2, brokers[1].port());
    db.execute(
        "INSERT INTO iot_data.mqtt_broker_gateway (mqtt_id, gateway_id)
         VALUES (1, 'gw-a'), (1, 'gw-b'), (2, 'gw-b')",
    );
    let warning = "broker 1 is assigned to gateways gw-a, gw-b without shared subscriptions";
    gateway.wait_log("the shared-broker warning", |log| log.contains(warning));
    wait_connected(&gateway, "gw-a", &[1]);
    assert!(!gateway.log().contains("broker 2 added"));
    let lines = check_lines(&dir);
    assert_eq!(
        lines["iot_data.mqtt_broker_gateway"]["detail"],
        "gateway gw-a runs 1 of 2 brokers: assigned here 1; unassigned (every gateway) none"
    );
    let shared = &lines["mqtt_broker_gateway mqtt_id=1"];
    assert_eq!(
        (&shared["ok"], &shared["kind"]),
        (&Value::Bool(false), &Value::from("shared"))
    );
    assert!(
        !lines.keys().any(|target| target.starts_with("broker 2 ")),
        "check probed broker 2: {lines:?}"
    );

    // Shared subscriptions: no more complaint from check.
    db.execute("UPDATE iot_data.mqtt_broker SET use_shared_subscriptions = TRUE WHERE mqtt_id = 1");
    gateway.wait_log("the shared subscriptions applied", |log| {
        log.matches("subscribing to 3 and unsubscribing from 3 topics")
            .count()
            == 1
    });
    assert!(!check_lines(&dir).contains_key("mqtt_broker_gateway mqtt_id=1"));
    assert_eq!(gateway.log().matches(warning).count(), 1);
}
