//! Hostile and broken inputs against the real binary, its address space
//! limited (`RLIMIT_AS`, as `prlimit --as` sets it) so an input that makes it
//! allocate without bound fails inside the child instead of taking the machine
//! (a `ca_cert` of `/dev/zero` once took a gateway to 22 GiB).

use std::time::Duration;

use serde_json::Value;

use crate::gateway::Gateway;
use crate::support::kinesis::FakeKinesis;
use crate::support::mosquitto::{publish, publish_payload, BrokerSetup, Mosquitto};
use crate::support::postgres::TestDb;
use crate::support::tls::TestPki;
use crate::support::*;

const WAIT: Duration = Duration::from_secs(20);
/// Far above what the gateway needs (its address space, not its memory, is
/// counted: thread stacks and malloc arenas reserve much more than they use),
/// far below what `/dev/zero` read whole would take.
const ADDRESS_SPACE: u64 = 2 << 30;

fn broker_status(status: &Value, id: i64) -> Option<Value> {
    status["brokers"]
        .as_array()?
        .iter()
        .find(|broker| broker["broker_id"] == id)
        .cloned()
}

/// Certificate and key columns naming a device, a FIFO or a directory fail
/// their broker with the column and what the path is (no hang, no unbounded
/// read); a key written with a byte-order mark and OpenSSL's `Bag Attributes`
/// header is read as PEM and connects; a key value that is neither PEM nor a
/// path is never echoed. The good broker delivers throughout.
#[test]
fn certificate_columns_naming_devices_fifos_and_directories_fail_only_their_broker() {
    const KEY_MARKER: &str = "SECRET-KEY-MATERIAL-4e1f";
    let dir = TempDir::new("hostile-files");
    let pki_dir = TempDir::new("hostile-files-pki");
    let pki = TestPki::new(pki_dir.path());
    let db = TestDb::new();
    let plain = Mosquitto::start();
    let tls = Mosquitto::start_with(BrokerSetup {
        tls: Some(pki.tls_listener(true)),
        ..BrokerSetup::default()
    });
    let fifo = dir.join("ca.fifo");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a plain libc call on a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let key_with_header = format!(
        "\u{feff}Bag Attributes\n    localKeyID: 01 02 03\nKey Attributes: <No Attributes>\n{}",
        pki.read("client.key")
    );
    let garbage_key = format!("not a key\nbut {KEY_MARKER}\n");

    db.add_broker(1, plain.port());
    let tls_row = |id: i64, ca: &str, cert: &str, key: &str| {
        format!(
            "INSERT INTO iot_data.mqtt_broker (mqtt_id, mqtt_host, mqtt_port, use_tls, ca_cert, \
             client_cert, client_key, status) VALUES ({id}, '127.0.0.1', {}, TRUE, '{ca}', '{cert}', \
             '{key}', TRUE);",
            tls.tls_port()
        )
    };
    let ca = pki.ca_pem().display().to_string();
    let cert = pki.client_pem().display().to_string();
    let key = pki.client_key().display().to_string();
    let dir_path = dir.path().display().to_string();
    db.execute(
        &[
            tls_row(2, "/dev/zero", &cert, &key),
            tls_row(3, fifo.to_str().unwrap(), &cert, &key),
            tls_row(4, &ca, &dir_path, &key),
            tls_row(5, &ca, &cert, &key_with_header),
            tls_row(6, &ca, &cert, &garbage_key),
        ]
        .concat(),
    );
    db.add_topic(None, "hostile/#", 1);

    let kinesis = FakeKinesis::start(vec![]);
    let gateway = start(&dir, &db, &kinesis.endpoint());
    let expected_errors = [
        (
            2,
            "ca_cert: /dev/zero is not a regular file but a device".to_owned(),
        ),
        (
            3,
            format!(
                "ca_cert: {} is not a regular file but a FIFO",
                fifo.display()
            ),
        ),
        (
            4,
            format!("client_cert: {dir_path} is not a regular file but a directory"),
        ),
        (6, "client_key: neither PEM text nor a file path".to_owned()),
    ];
    wait_until(
        "brokers 1 and 5 connected, 2, 3, 4 and 6 failed naming why",
        WAIT,
        || {
            let Some(status) = gateway.try_status() else {
                return false;
            };
            let connected =
                |id| broker_status(&status, id).is_some_and(|b| b["state"] == "connected");
            connected(1)
                && connected(5)
                && expected_errors.iter().all(|(id, words)| {
                    broker_status(&status, *id).is_some_and(|broker| {
                        broker["last_error"]
                            .as_str()
                            .is_some_and(|e| e.contains(words.as_str()))
                    })
                })
        },
    );
    publish(plain.port(), "hostile/a", "ok", 10);
    wait_until("broker 1's 10 messages delivered", WAIT, || {
        kinesis.accepted().len() == 10
    });
    let log = gateway.log();
    assert!(
        !log.contains(KEY_MARKER),
        "the key value was echoed:\n{log}"
    );
    assert!(!log.contains("BEGIN PRIVATE KEY"), "{log}");
    let status_file = std::fs::read_to_string(dir.join("status.json")).unwrap_or_default();
    assert!(!status_file.contains(KEY_MARKER), "{status_file}");
    wait_until("broker 6's status row names its client_key", WAIT, || {
        db.client()
            .query_opt(
                "SELECT last_error FROM iot_data.mqtt_connection_status WHERE mqtt_id = 6",
                &[],
            )
            .ok()
            .flatten()
            .and_then(|row| row.get::<_, Option<String>>(0))
            .is_some_and(|error| error.contains("client_key: neither PEM text nor a file path"))
    });
    let table: Vec<String> = db
        .client()
        .query(
            "SELECT coalesce(last_error, '') FROM iot_data.mqtt_connection_status",
            &[],
        )
        .expect("status table")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(table.iter().all(|e| !e.contains(KEY_MARKER)), "{table:?}");
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_mqtt-kinesis-bridge"))
        .args(["check", "--json", "--config"])
        .arg(dir.join("gateway.toml"))
        .output()
        .expect("run check");
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(
        report.contains("client_key: neither PEM text nor a file path"),
        "{report}"
    );
    assert!(!report.contains(KEY_MARKER), "{report}");
    assert!(!String::from_utf8_lossy(&check.stderr).contains(KEY_MARKER));
    assert_eq!(gateway.terminate(), Some(0), "log:\n{log}");
}

/// No secret in any output: the database password, the AWS secret key and a
/// wrong sealing key pass through an unreachable database, a config with a
/// syntax error next to the URL, and `check`; none of them appears in stderr,
/// `check --json` or the status file.
#[test]
fn secrets_stay_out_of_errors_logs_and_reports() {
    const DB_PASSWORD: &str = "db-pw-Zq81x";
    const AWS_SECRET: &str = "aws-secret-Mf02k";
    let dir = TempDir::new("hostile-secrets");
    let wrong_key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let url = format!("postgres://gw:{DB_PASSWORD}@127.0.0.1:1/x");
    let run = |args: &[&str], config: &std::path::Path| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_mqtt-kinesis-bridge"))
            .args(args)
            .arg("--config")
            .arg(config)
            .env("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
            .env("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
            .env("MKB_PASSWORD_KEY", wrong_key)
            .env_remove("RUST_LOG")
            .output()
            .expect("run the binary");
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    };
    let spool = dir.join("spool.db");
    let good = dir.join("good.toml");
    std::fs::write(
        &good,
        format!(
            "[spool]\npath = \"{}\"\nmax_bytes = \"64MiB\"\n\
             [kinesis]\nstream = \"s\"\nregion = \"us-east-1\"\nendpoint = \"http://127.0.0.1:1\"\n\
             [database]\nurl = \"{url}\"\n",
            spool.display()
        ),
    )
    .unwrap();
    let inline = dir.join("inline.toml");
    std::fs::write(
        &inline,
        format!(
            "database = {{ url = \"{url}\", 5 }}\n[spool]\npath = \"{}\"\n",
            spool.display()
        ),
    )
    .unwrap();
    let mut outputs = vec![
        run(&["check", "--json"], &good),
        run(&["check"], &good),
        run(&["check"], &inline),
        run(&["run"], &inline),
    ];
    // The gateway itself with the database unreachable, until its status file shows.
    let log = dir.join("run.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mqtt-kinesis-bridge"))
        .args(["run", "--config"])
        .arg(&good)
        .env("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
        .env("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
        .env("MKB_PASSWORD_KEY", wrong_key)
        .env_remove("RUST_LOG")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start the gateway");
    wait_until("the gateway says the database is unreachable", WAIT, || {
        std::fs::read_to_string(&log).is_ok_and(|text| text.contains("database"))
            && dir.join("status.json").exists()
    });
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait().expect("wait for the gateway");
    outputs.push(std::fs::read_to_string(&log).unwrap());
    outputs.push(std::fs::read_to_string(dir.join("status.json")).unwrap());
    assert!(
        outputs[0].contains("\"area\":\"database\""),
        "{}",
        outputs[0]
    );
    assert!(
        outputs[2].contains("config key `database`"),
        "{}",
        outputs[2]
    );
    for output in &outputs {
        for secret in [DB_PASSWORD, AWS_SECRET, wrong_key] {
            assert!(!output.contains(secret), "{secret} in:\n{output}");
        }
    }
}

/// The real binary with the harness's config, its address space limited.
fn start(dir: &TempDir, db: &TestDb, endpoint: &str) -> Gateway {
    Gateway::start_with_memory_limit(dir, db, endpoint, &[], ADDRESS_SPACE)
}

/// Whether `status --json` shows broker `id` in `state` (false until it answers).
fn in_state(gateway: &Gateway, id: i64, state: &str) -> bool {
    gateway
        .try_status()
        .and_then(|status| broker_status(&status, id))
        .is_some_and(|broker| broker["state"] == state)
}

/// The peak resident memory of process `pid`, in bytes (VmHWM).
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// A 1 MiB + 1 byte message is read and dead-lettered (Kinesis cannot take
/// it); a 2 MiB + 1 byte message, over `mqtt.max_packet_size`, kills the
/// connection and the broker redelivers it at every reconnect: that broker is
/// reported wedged (log, `status`, status table) while the two healthy brokers
/// keep delivering, and the gateway's memory stays small.
#[test]
fn an_unreadable_message_wedges_only_its_broker_and_says_so() {
    /// The peak resident memory allowed (a gateway with three brokers runs in ~15 MiB).
    const RSS_BOUND: u64 = 64 << 20;
    let dir = TempDir::new("hostile-wedge");
    let db = TestDb::new();
    let healthy = [Mosquitto::start(), Mosquitto::start()];
    let hostile = Mosquitto::start();
    db.add_broker(1, healthy[0].port());
    db.add_broker(2, healthy[1].port());
    db.add_broker(3, hostile.port());
    db.add_topic(None, "hostile/#", 1);
    let kinesis = FakeKinesis::start(vec![]);
    let gateway = start(&dir, &db, &kinesis.endpoint());
    wait_until("three brokers connected", WAIT, || {
        gateway.try_status().is_some_and(|status| {
            (1..=3).all(|id| broker_status(&status, id).is_some_and(|b| b["state"] == "connected"))
        })
    });

    publish_payload(hostile.port(), "hostile/big", &vec![b'x'; (1 << 20) + 1]);
    wait_until("the 1 MiB + 1 message dead-lettered", WAIT, || {
        gateway
            .try_status()
            .and_then(|status| broker_status(&status, 3))
            .is_some_and(|broker| broker["dead_lettered"] == 1)
    });
    publish_payload(hostile.port(), "hostile/huge", &vec![b'y'; (2 << 20) + 1]);
    for (i, broker) in healthy.iter().enumerate() {
        publish(broker.port(), &format!("hostile/healthy{i}"), "ok", 10);
    }
    wait_until("broker 3 wedged in status --json", WAIT, || {
        gateway.try_status().is_some_and(|status| {
            broker_status(&status, 3).is_some_and(|broker| {
                broker["state"] == "wedged" && broker["wedged_since_ms"].as_i64().is_some()
            })
        })
    });
    wait_until("the healthy brokers' 20 messages delivered", WAIT, || {
        kinesis.accepted().len() == 20
    });
    publish(healthy[0].port(), "hostile/after", "later", 5);
    wait_until("and 5 more after the wedge", WAIT, || {
        kinesis.accepted().len() == 25
    });
    let log = gateway.log();
    assert_eq!(log.matches("broker 3: wedged").count(), 1, "{log}");
    assert!(log.contains("payload size limit exceeded"), "{log}");
    assert!(log.contains("raise mqtt.max_packet_size"), "{log}");
    assert!(
        !log.contains("broker 1: wedged") && !log.contains("broker 2: wedged"),
        "{log}"
    );
    wait_until("the status table says broker 3 is wedged", WAIT, || {
        db.client()
            .query_opt(
                "SELECT last_error FROM iot_data.mqtt_connection_status WHERE mqtt_id = 3",
                &[],
            )
            .ok()
            .flatten()
            .and_then(|row| row.get::<_, Option<String>>(0))
            .is_some_and(|error| error.starts_with("wedged: "))
    });
    let peak = peak_rss(gateway.pid());
    assert!(peak > 0 && peak < RSS_BOUND, "peak RSS {peak} bytes");
    assert_eq!(gateway.terminate(), Some(0), "log:\n{log}");
}

/// A broker row whose `mqtt_id` is NULL (a catalog without the shipped
/// primary key) is skipped and named; the other brokers run, and `check`
/// lists it as a catalog row problem.
#[test]
fn a_broker_row_without_an_id_skips_only_that_row() {
    let dir = TempDir::new("hostile-null-id");
    let db = TestDb::new();
    let broker = Mosquitto::start();
    db.execute(
        "ALTER TABLE iot_data.mqtt_broker DROP CONSTRAINT mqtt_broker_pkey CASCADE; \
         ALTER TABLE iot_data.mqtt_broker ALTER COLUMN mqtt_id DROP NOT NULL;",
    );
    db.add_broker(1, broker.port());
    db.execute(&format!(
        "INSERT INTO iot_data.mqtt_broker (mqtt_id, mqtt_host, mqtt_port, status) \
         VALUES (NULL, '127.0.0.1', {}, TRUE)",
        broker.port()
    ));
    db.add_topic(None, "hostile/#", 1);
    let kinesis = FakeKinesis::start(vec![]);
    let gateway = start(&dir, &db, &kinesis.endpoint());
    wait_until("broker 1 connected", WAIT, || {
        in_state(&gateway, 1, "connected")
    });
    publish(broker.port(), "hostile/a", "ok", 5);
    wait_until("5 messages delivered", WAIT, || {
        kinesis.accepted().len() == 5
    });
    let log = gateway.log();
    assert!(
        log.contains("catalog: skipped mqtt_broker row: mqtt_id is NULL"),
        "{log}"
    );
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_mqtt-kinesis-bridge"))
        .args(["check", "--json", "--config"])
        .arg(dir.join("gateway.toml"))
        .output()
        .expect("run check");
    let report: Value = serde_json::from_slice(&check.stdout).expect("check --json");
    let rows: Vec<&Value> = report["checks"]
        .as_array()
        .expect("checks[]")
        .iter()
        .filter(|c| c["area"] == "catalog row")
        .collect();
    assert_eq!(rows.len(), 1, "{report:#}");
    assert_eq!(rows[0]["target"], "mqtt_broker row", "{report:#}");
    assert_eq!(gateway.terminate(), Some(0), "log:\n{log}");
}

/// 1,000 NOTIFYs in a burst cost a handful of catalog re-reads (a burst is
/// coalesced for 100 ms), and a real change after them still arrives.
#[test]
fn a_flood_of_notifies_is_coalesced() {
    let dir = TempDir::new("hostile-notify");
    let db = TestDb::new();
    let broker = Mosquitto::start();
    db.add_broker(1, broker.port());
    db.add_topic(None, "hostile/#", 1);
    let kinesis = FakeKinesis::start(vec![]);
    let gateway = Gateway::start_with_env(
        &dir,
        &db,
        &kinesis.endpoint(),
        "max_bytes = \"64MiB\"\n[log]\nlevel = \"debug\"",
        &[],
    );
    wait_until("broker 1 subscribed", WAIT, || {
        gateway.log().contains("connected, subscribed to 1 topics")
    });
    let mut client = db.client();
    let flood_started = std::time::Instant::now();
    for n in 0..1000 {
        // One transaction each: PostgreSQL folds equal NOTIFYs of one transaction.
        client
            .batch_execute(&format!("NOTIFY mqtt_catalog_changed, 'flood {n}'"))
            .expect("notify");
    }
    db.add_topic(None, "after/flood", 1);
    wait_until("the change after the flood applied", WAIT, || {
        gateway.log().contains("subscribed to 2 topics")
            || gateway.log().contains("2 subscriptions")
    });
    let log = gateway.log();
    let n_reads = log.matches("catalog: change notified").count();
    // Each re-read follows a 100 ms window: however slow this machine, the
    // 1,000 notifications cannot cost more reads than windows fit in the time.
    let max_reads = flood_started.elapsed().as_millis() as usize / 100 + 2;
    assert!(
        (1..=max_reads).contains(&n_reads) && n_reads < 1000,
        "{n_reads} re-reads, at most {max_reads}:\n{log}"
    );
    assert_eq!(gateway.terminate(), Some(0));
}

/// A Kinesis endpoint answering nonsense: an empty body, `{}`, `"Records":
/// null`, one result too many and one too few, a body over the 4 MiB the drain
/// reads, a redirect, a ValidationException. None of it counts as delivered,
/// nothing is lost: every message of the two brokers arrives (at least once)
/// once the endpoint answers properly, and the gateway stays up and small.
#[test]
fn a_kinesis_answering_nonsense_loses_nothing() {
    use crate::support::kinesis::Fault;
    const RSS_BOUND: u64 = 64 << 20;
    let dir = TempDir::new("hostile-kinesis");
    let db = TestDb::new();
    let brokers = [Mosquitto::start(), Mosquitto::start()];
    db.add_broker(1, brokers[0].port());
    db.add_broker(2, brokers[1].port());
    db.add_topic(None, "hostile/#", 1);
    let huge = format!("{{\"Records\": [], \"x\": \"{}\"}}", " ".repeat(4 << 20));
    let kinesis = FakeKinesis::start(vec![
        Fault::Raw(200, String::new()),
        Fault::Raw(200, "{}".into()),
        Fault::Raw(200, r#"{"FailedRecordCount": 0, "Records": null}"#.into()),
        Fault::ResultsOffBy(1),
        Fault::ResultsOffBy(-1),
        Fault::Raw(200, huge),
        Fault::Redirect,
        Fault::Error("ValidationException"),
    ]);
    let gateway = start(&dir, &db, &kinesis.endpoint());
    wait_until("both brokers connected", WAIT, || {
        gateway.try_status().is_some_and(|status| {
            (1..=2).all(|id| broker_status(&status, id).is_some_and(|b| b["state"] == "connected"))
        })
    });
    for (i, broker) in brokers.iter().enumerate() {
        publish(broker.port(), &format!("hostile/{i}"), "m", 15);
    }
    let ids = |kinesis: &FakeKinesis| {
        kinesis
            .accepted()
            .iter()
            .map(|blob| {
                let record: Value = serde_json::from_slice(blob).expect("a JSON record");
                record["record_id"].as_str().expect("record_id").to_owned()
            })
            .collect::<std::collections::BTreeSet<String>>()
    };
    wait_until(
        "every fault answered and all 30 messages accepted",
        WAIT,
        || kinesis.script_done() && ids(&kinesis).len() == 30,
    );
    wait_until("the spool empty", WAIT, || {
        gateway
            .try_status()
            .is_some_and(|status| status["records_waiting"] == 0)
    });
    let status = gateway.status();
    let delivered: u64 = (1..=2)
        .filter_map(|id| broker_status(&status, id))
        .map(|b| b["delivered"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(delivered, 30, "{status:#}");
    let peak = peak_rss(gateway.pid());
    assert!(peak > 0 && peak < RSS_BOUND, "peak RSS {peak} bytes");
    let log = gateway.log();
    assert!(log.contains("unreadable PutRecords response"), "{log}");
    assert!(log.contains("larger than request limit"), "{log}");
    assert!(log.contains("kinesis answers again"), "{log}");
    assert_eq!(gateway.terminate(), Some(0), "log:\n{log}");
}

/// A PUBLISH whose topic is not UTF-8 (sent by a raw-socket broker: Mosquitto
/// refuses such a topic from any publisher) fails the decoder at every
/// reconnect: that broker is reported wedged naming why; a healthy broker
/// next to it delivers.
#[test]
fn a_topic_that_is_not_utf8_wedges_only_its_broker() {
    use crate::support::fake_broker::{publish_packet, FakeBroker};
    let dir = TempDir::new("hostile-utf8");
    let db = TestDb::new();
    let healthy = Mosquitto::start();
    let hostile = FakeBroker::start(publish_packet(b"hostile/\xff\xfe", b"{}"));
    db.add_broker(1, healthy.port());
    db.add_broker(2, hostile.port());
    db.add_topic(None, "hostile/#", 1);
    let kinesis = FakeKinesis::start(vec![]);
    let gateway = start(&dir, &db, &kinesis.endpoint());
    wait_until("broker 2 wedged", WAIT, || in_state(&gateway, 2, "wedged"));
    assert!(hostile.n_connections() >= 3, "{}", hostile.n_connections());
    publish(healthy.port(), "hostile/ok", "fine", 10);
    wait_until("broker 1's 10 messages delivered", WAIT, || {
        kinesis.accepted().len() == 10
    });
    let log = gateway.log();
    assert_eq!(log.matches("broker 2: wedged").count(), 1, "{log}");
    assert!(log.to_lowercase().contains("utf"), "{log}");
    assert_eq!(gateway.terminate(), Some(0), "log:\n{log}");
}

/// A 70 KB topic filter row (over every SUBSCRIBE packet) and 3,000 ordinary
/// rows for one broker: the long row is skipped naming it, the rest are
/// subscribed without a reconnect loop, and messages flow.
#[test]
fn a_70_kb_filter_row_and_3000_topic_rows_for_one_broker() {
    let dir = TempDir::new("hostile-filters");
    let db = TestDb::new();
    let broker = Mosquitto::start();
    db.add_broker(1, broker.port());
    db.add_topic(Some(1), &format!("long/{}", "x".repeat(70_000)), 1);
    db.execute(
        "INSERT INTO iot_data.mqtt_topic (mqtt_id, topic, qos, status) \
         SELECT 1, 'many/' || n, 1, TRUE FROM generate_series(1, 3000) AS n",
    );
    let kinesis = FakeKinesis::start(vec![]);
    let gateway = start(&dir, &db, &kinesis.endpoint());
    wait_until("3,000 filters subscribed", WAIT, || {
        gateway
            .try_status()
            .and_then(|status| broker_status(&status, 1))
            .is_some_and(|b| b["state"] == "connected" && b["subscribed_topics"] == 3000)
    });
    publish(broker.port(), "many/3000", "last", 5);
    wait_until("5 messages on the last filter delivered", WAIT, || {
        kinesis.accepted().len() == 5
    });
    let log = gateway.log();
    assert!(
        log.lines()
            .any(|l| l.contains("skipped mqtt_topic row") && l.contains("longer than 1024 bytes")),
        "{log}"
    );
    assert_eq!(
        log.matches("connected, subscribed").count(),
        1,
        "no reconnect loop: {log}"
    );
    let peak = peak_rss(gateway.pid());
    assert!(peak > 0 && peak < 64 << 20, "peak RSS {peak} bytes");
    assert_eq!(gateway.terminate(), Some(0), "log:\n{log}");
}

/// A catalog column of an unexpected type (`keep_alive` made text) skips the
/// rows that hold a value there, naming row and column; a NULL in it is just
/// NULL, so the other brokers run. The read as a whole goes on.
#[test]
fn a_column_of_an_unexpected_type_skips_only_the_rows_with_a_value() {
    let dir = TempDir::new("hostile-column-type");
    let db = TestDb::new();
    let brokers = [Mosquitto::start(), Mosquitto::start()];
    db.add_broker(1, brokers[0].port());
    db.add_broker(2, brokers[1].port());
    db.add_topic(None, "hostile/#", 1);
    db.execute(
        "ALTER TABLE iot_data.mqtt_broker ALTER COLUMN keep_alive TYPE text USING keep_alive::text; \
         UPDATE iot_data.mqtt_broker SET keep_alive = 'sixty' WHERE mqtt_id = 2;",
    );
    let kinesis = FakeKinesis::start(vec![]);
    let gateway = start(&dir, &db, &kinesis.endpoint());
    wait_until("broker 1 connected", WAIT, || {
        in_state(&gateway, 1, "connected")
    });
    publish(brokers[0].port(), "hostile/ok", "fine", 5);
    wait_until("5 messages delivered", WAIT, || {
        kinesis.accepted().len() == 5
    });
    let log = gateway.log();
    assert!(
        log.contains("skipped mqtt_broker row mqtt_id=2: column keep_alive has type text, expected an integer type"),
        "{log}"
    );
    let status = gateway.status();
    assert!(broker_status(&status, 2).is_none(), "{status:#}");
    assert_eq!(gateway.terminate(), Some(0), "log:\n{log}");
}
