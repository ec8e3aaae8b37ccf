//! Issue 16 part 2: devices. A topic row's `device_id_level` names the topic
//! level holding the device id: the real gateway puts it in each envelope,
//! keys Kinesis by it, and writes per-device rows to `iot_data.mqtt_device_seen`.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use base64::Engine;
use serde_json::Value;

use crate::gateway::Gateway;
use crate::support::kinesis::KinesisLocal;
use crate::support::mosquitto::{publish, Mosquitto};
use crate::support::postgres::TestDb;
use crate::support::*;

/// The stream `Gateway` sends to.
const STREAM: &str = "e2e";
const WAIT: Duration = Duration::from_secs(60);
const N_DEVICES: usize = 50;
const N_PER_DEVICE: usize = 20;

/// Every record in the stream: (envelope, partition key).
fn records(kinesis: &KinesisLocal) -> Vec<(Value, String)> {
    kinesis
        .read_all_records(STREAM)
        .iter()
        .map(|record| {
            let data = base64::engine::general_purpose::STANDARD
                .decode(record["Data"].as_str().expect("Data"))
                .expect("base64 Data");
            let envelope: Value = serde_json::from_slice(&data).expect("json envelope");
            let key = record["PartitionKey"].as_str().expect("key").to_owned();
            (envelope, key)
        })
        .collect()
}

/// `iot_data.mqtt_device_seen`: device → (messages, first_seen_at, last_seen_at).
fn device_rows(db: &TestDb) -> BTreeMap<String, (i64, SystemTime, SystemTime)> {
    db.client()
        .query(
            "SELECT device_id, messages, first_seen_at, last_seen_at \
             FROM iot_data.mqtt_device_seen WHERE gateway_id = 'it-gw' AND mqtt_id = 1",
            &[],
        )
        .map(|rows| {
            rows.iter()
                .map(|row| (row.get(0), (row.get(1), row.get(2), row.get(3))))
                .collect()
        })
        .unwrap_or_default()
}

/// One metric's value from the textfile.
fn metric(dir: &TempDir, name: &str) -> Option<f64> {
    let text = std::fs::read_to_string(dir.join("metrics.prom")).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("mqtt_kinesis_bridge_{name} ")))
        .and_then(|value| value.trim().parse().ok())
}

/// Prints the gateway's log when the test fails.
struct LogOnPanic<'a>(&'a Gateway);

impl Drop for LogOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- gateway log ---\n{}", self.0.log());
        }
    }
}

fn start(dir: &TempDir, db: &TestDb, kinesis: &KinesisLocal, mqtt_and_more: &str) -> Gateway {
    let tables = format!(
        "{mqtt_and_more}\n[status]\nreport_interval = \"1s\"\n\
         [metrics]\ntextfile = \"{}\"\ninterval = \"1s\"\n",
        dir.join("metrics.prom").display()
    );
    Gateway::start_with_kinesis(dir, db, &kinesis.endpoint(), "", &tables, &[])
}

fn publish_devices(port: u16) {
    for device in 0..N_DEVICES {
        publish(
            port,
            &format!("plant/dev-{device:02}/temp"),
            &format!("d{device:02}"),
            N_PER_DEVICE,
        );
    }
}

/// 50 devices × 20 messages with `device_id_level = 2`: one row each with
/// 20 messages and plausible times, the id in every envelope, the device id
/// as partition key (`partition_key = "device"`); messages on a topic too
/// short for the level, or on a topic without a level, keep the topic as key.
#[test]
fn devices_get_rows_envelopes_and_partition_keys() {
    let db = TestDb::new();
    let kinesis = KinesisLocal::start(STREAM);
    let broker = Mosquitto::start();
    db.add_broker(1, broker.port());
    db.execute(
        "INSERT INTO iot_data.mqtt_topic (mqtt_id, topic, qos, status, device_id_level) \
         VALUES (1, 'plant/#', 1, TRUE, 2), (1, 'other/#', 1, TRUE, NULL)",
    );
    let dir = TempDir::new("devices");
    let gateway = start(&dir, &db, &kinesis, "partition_key = \"device\"");
    let _log = LogOnPanic(&gateway);
    gateway.wait_log("the subscription", |log| {
        log.contains("connected, subscribed to 2 topics")
    });
    let before = SystemTime::now() - Duration::from_secs(1);
    publish_devices(broker.port());
    publish(broker.port(), "plant", "short", 5);
    publish(broker.port(), "other/a", "plain", 5);
    let after = SystemTime::now() + Duration::from_secs(1);

    let n_expected = N_DEVICES * N_PER_DEVICE + 10;
    wait_until("every record in Kinesis", WAIT, || {
        records(&kinesis).len() >= n_expected
    });
    let records = records(&kinesis);
    assert_eq!(records.len(), n_expected);
    for (envelope, key) in &records {
        let topic = envelope["topic"].as_str().unwrap();
        match topic.split('/').collect::<Vec<_>>()[..] {
            ["plant", device, "temp"] => {
                assert_eq!(envelope["device_id"], device, "{envelope}");
                assert_eq!(key, device);
            }
            _ => {
                assert!(envelope.get("device_id").is_none(), "{envelope}");
                assert_eq!(key, topic, "no device id: the topic is the key");
            }
        }
    }

    wait_until("a row per device with all its messages", WAIT, || {
        let rows = device_rows(&db);
        rows.len() == N_DEVICES && rows.values().all(|(n, _, _)| *n == N_PER_DEVICE as i64)
    });
    for (device, (_, first, last)) in device_rows(&db) {
        assert!(
            before <= first && first <= last && last <= after,
            "{device}: first {first:?}, last {last:?} not within the publishing"
        );
    }
    // The metrics textfile is rewritten every interval: wait for one written
    // after the last device was counted.
    wait_until("the textfile counts every device", WAIT, || {
        metric(&dir, "devices_tracked") == Some(N_DEVICES as f64)
    });
    assert_eq!(metric(&dir, "devices_untracked_messages_total"), Some(0.0));
    let log = gateway.log();
    assert!(
        log.contains("iot_data.mqtt_topic has device_id_level"),
        "{log}"
    );
    // Counts are deltas: more messages add to the rows, they do not replace them.
    publish(broker.port(), "plant/dev-00/temp", "more", 5);
    wait_until("dev-00's row counts 25", WAIT, || {
        device_rows(&db).get("dev-00").map(|row| row.0) == Some(25)
    });
}

/// A catalog from before 0007 (no column, no table) runs and says so once;
/// the column added live with a level turns device ids on without a
/// reconnect; with `max_tracked = 10` ten devices get rows and the other
/// 40 × 20 messages are counted as untracked; the missing table is said
/// once, and its creation later catches up every count.
/// Keys are `{mqtt_id}/{device_id}` (`broker_device`), tracked or not.
#[test]
fn an_old_catalog_the_tracking_bound_and_a_table_created_late() {
    let db = TestDb::new();
    db.execute(
        "DROP TABLE iot_data.mqtt_device_seen;
         ALTER TABLE iot_data.mqtt_topic DROP COLUMN device_id_level",
    );
    let kinesis = KinesisLocal::start(STREAM);
    let broker = Mosquitto::start();
    db.add_broker(1, broker.port());
    db.add_topic(Some(1), "plant/+/temp", 1);
    let dir = TempDir::new("devices-bound");
    let gateway = start(
        &dir,
        &db,
        &kinesis,
        "partition_key = \"broker_device\"\n[devices]\nmax_tracked = 10",
    );
    let _log = LogOnPanic(&gateway);
    gateway.wait_log("the subscription", |log| {
        log.contains("connected, subscribed to 1 topics")
    });
    let no_column = "iot_data.mqtt_topic has no device_id_level column";
    assert_eq!(gateway.log().matches(no_column).count(), 1);

    // The column alone (as 0007 adds it), then a level: a topic change the
    // session takes without reconnecting.
    db.execute("ALTER TABLE iot_data.mqtt_topic ADD COLUMN device_id_level smallint");
    db.execute("UPDATE iot_data.mqtt_topic SET device_id_level = 2");
    gateway.wait_log("the level applied", |log| {
        log.contains("broker 1 changed: device_id_level of its topics")
    });
    assert_eq!(gateway.log().matches(no_column).count(), 1);

    publish_devices(broker.port());
    let n_expected = N_DEVICES * N_PER_DEVICE;
    wait_until("every record in Kinesis", WAIT, || {
        records(&kinesis).len() >= n_expected
    });
    for (envelope, key) in records(&kinesis) {
        let device = envelope["device_id"].as_str().expect("a device id");
        assert_eq!(key, format!("1/{device}"));
    }
    wait_until("40 devices' messages counted as untracked", WAIT, || {
        metric(&dir, "devices_untracked_messages_total")
            == Some(((N_DEVICES - 10) * N_PER_DEVICE) as f64)
    });
    assert_eq!(metric(&dir, "devices_tracked"), Some(10.0));
    let missing = "no iot_data.mqtt_device_seen table";
    gateway.wait_log("the missing table said", |log| log.contains(missing));
    let bound = "10 devices tracked, the bound (devices.max_tracked)";
    assert_eq!(gateway.log().matches(bound).count(), 1, "{}", gateway.log());

    db.execute(include_str!("../../buffer-schema/catalog/0007_devices.sql"));
    wait_until("ten rows with every message of their device", WAIT, || {
        let rows = device_rows(&db);
        rows.len() == 10 && rows.values().all(|(n, _, _)| *n == N_PER_DEVICE as i64)
    });
    let log = gateway.log();
    assert_eq!(log.matches(missing).count(), 1, "{log}");
    assert!(
        log.contains("iot_data.mqtt_device_seen written again"),
        "{log}"
    );
    assert!(!log.contains("disconnected"), "{log}");
}
