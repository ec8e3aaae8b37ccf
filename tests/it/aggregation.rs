//! KPL aggregation end to end: the real gateway with `kinesis.aggregation =
//! "kpl"`, a Mosquitto broker, kinesis-local; the stored records are
//! de-aggregated by awslabs' own Python module (aws-kinesis-agg, which checks
//! the magic and the MD5 as KCL does), not by our code.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine;
use serde_json::Value;

use crate::gateway::Gateway;
use crate::support::kinesis::KinesisLocal;
use crate::support::mosquitto::{publish, publish_payload, Mosquitto};
use crate::support::postgres::TestDb;
use crate::support::*;

const STREAM: &str = "e2e";
const WAIT: Duration = Duration::from_secs(60);

/// The user records in `records` (GetRecords' form), by awslabs' deaggregator.
pub(crate) fn deaggregate(records: &[Value]) -> Vec<Value> {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/it/support/deaggregate.py"
    );
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(records).unwrap().as_bytes())
        .unwrap();
    let output = child.wait_with_output().expect("deaggregate.py ran");
    assert!(
        output.status.success(),
        "deaggregate.py failed (pip install aws-kinesis-agg: .ci/setup does)"
    );
    serde_json::from_slice(&output.stdout).expect("deaggregate.py prints JSON")
}

/// The JSON envelope a de-aggregated user record carries.
fn envelope(user: &Value) -> Value {
    let data = base64::engine::general_purpose::STANDARD
        .decode(user["data"].as_str().expect("data"))
        .expect("base64");
    serde_json::from_slice(&data).expect("a JSON envelope")
}

/// Every message arrives once, byte for byte, with its own partition key (the
/// topic), in far fewer Kinesis records; a message too large to share (60 KB,
/// over the 51,200-byte bound) goes as a plain record the deaggregator passes through.
#[test]
fn kpl_aggregated_records_deaggregate_to_every_message_once() {
    let dir = TempDir::new("aggregation");
    let db = TestDb::new();
    let broker = Mosquitto::start();
    db.add_broker(1, broker.port());
    db.add_topic(None, "agg/#", 1);
    let kinesis = KinesisLocal::start(STREAM);
    let gateway = Gateway::start_with_kinesis(
        &dir,
        &db,
        &kinesis.endpoint(),
        "aggregation = \"kpl\"",
        "",
        &[],
    );
    wait_until("broker 1 subscribed", WAIT, || {
        gateway.log().contains("connected, subscribed")
    });
    assert!(gateway.log().contains("KPL aggregation up to 51200 bytes"));
    wait_until("status says aggregation is on", WAIT, || {
        gateway
            .try_status()
            .is_some_and(|s| s["gateway"]["aggregation"] == "KPL aggregation up to 51200 bytes")
    });
    publish(broker.port(), "agg/a", "a", 200);
    publish(broker.port(), "agg/b", "b", 100);
    let big = vec![b'z'; 60_000];
    publish_payload(broker.port(), "agg/big", &big);
    wait_until("301 messages delivered", WAIT, || {
        gateway
            .try_status()
            .is_some_and(|s| s["total"]["delivered"] == 301 && s["records_waiting"] == 0)
    });

    let stored = kinesis.read_all_records(STREAM);
    let users = deaggregate(&stored);
    let stored_bytes: usize = stored
        .iter()
        .map(|r| r["Data"].as_str().map_or(0, |d| d.len() * 3 / 4))
        .sum();
    eprintln!(
        "aggregation: {} Kinesis records ({stored_bytes} bytes) for {} messages",
        stored.len(),
        users.len()
    );
    assert!(
        stored.len() <= 10,
        "{} Kinesis records for 301 messages",
        stored.len()
    );
    assert_eq!(users.len(), 301, "{} Kinesis records", stored.len());
    let mut by_topic: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut record_ids = std::collections::BTreeSet::new();
    for user in &users {
        let envelope = envelope(user);
        let topic = envelope["topic"].as_str().expect("topic").to_owned();
        assert_eq!(user["partition_key"], topic.as_str(), "its own key");
        assert!(record_ids.insert(envelope["record_id"].as_str().unwrap().to_owned()));
        let payload = envelope["payload_text"]
            .as_str()
            .or(envelope["payload"].as_str())
            .map(str::to_owned)
            .unwrap_or_else(|| envelope["payload"].to_string());
        by_topic.entry(topic).or_default().push(payload);
    }
    let expect = |tag: &str, n: usize| (0..n).map(|i| format!("{tag}-{i}")).collect::<Vec<_>>();
    assert_eq!(
        by_topic["agg/a"],
        expect("a", 200),
        "in order, byte for byte"
    );
    assert_eq!(by_topic["agg/b"], expect("b", 100));
    assert_eq!(by_topic["agg/big"], [String::from_utf8(big).unwrap()]);
    let plain: Vec<&Value> = users.iter().filter(|u| u["aggregated"] == false).collect();
    assert_eq!(plain.len(), 1, "only the 60 KB message goes plain");
    assert_eq!(plain[0]["partition_key"], "agg/big");
    // Messages and Kinesis records are counted apart: the same numbers the
    // stream holds (the status file is rewritten at least every 10 s).
    let n_kinesis = stored.len() as u64;
    wait_until(
        "status counts Kinesis records apart from messages",
        WAIT,
        || {
            gateway.try_status().is_some_and(|s| {
                s["gateway"]["stored"]["messages"] == 301
                    && s["gateway"]["stored"]["kinesis_records"] == n_kinesis
            })
        },
    );
    let text = gateway.status_text();
    assert!(
        text.contains(&format!(
            "stored since start: 301 messages in {n_kinesis} Kinesis records"
        )),
        "{text}"
    );
    assert_eq!(gateway.terminate(), Some(0));
}

/// The payloads that reached kinesis-local, de-aggregated: (topic, payload text).
fn delivered_messages(kinesis: &KinesisLocal) -> Vec<(String, String)> {
    deaggregate(&kinesis.read_all_records(STREAM))
        .iter()
        .map(|user| {
            let envelope = envelope(user);
            (
                envelope["topic"].as_str().unwrap_or_default().to_owned(),
                envelope["payload_text"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect()
}

/// At least once with aggregation on: kill -9 mid-stream twice and restart;
/// every message is among the de-aggregated records in the end.
#[test]
fn kill_9_with_aggregation_loses_nothing() {
    let dir = TempDir::new("aggregation-kill");
    let db = TestDb::new();
    let broker = Mosquitto::start();
    db.add_broker(1, broker.port());
    db.add_topic(None, "agg/#", 1);
    let kinesis = KinesisLocal::start(STREAM);
    let start = || {
        Gateway::start_with_kinesis(
            &dir,
            &db,
            &kinesis.endpoint(),
            "aggregation = \"kpl\"",
            "",
            &[],
        )
    };
    let mut gateway = start();
    let n_rounds = 3;
    let n_per_round = 150;
    for round in 0..n_rounds {
        gateway.wait_log("subscribed", |log| log.contains("connected, subscribed"));
        publish(
            broker.port(),
            &format!("agg/{}", round % 2),
            &format!("r{round}"),
            n_per_round,
        );
        if round + 1 < n_rounds {
            drop(gateway); // SIGKILL, mid-stream
            gateway = start();
        }
    }
    wait_until("every message in Kinesis", WAIT, || {
        let delivered: std::collections::HashSet<_> =
            delivered_messages(&kinesis).into_iter().collect();
        (0..n_rounds).all(|round| {
            (0..n_per_round).all(|i| {
                delivered.contains(&(format!("agg/{}", round % 2), format!("r{round}-{i}")))
            })
        })
    });
    assert_eq!(gateway.terminate(), Some(0));
}
