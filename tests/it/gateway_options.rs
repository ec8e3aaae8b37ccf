//! The real binary's operator-facing options end to end: `check` (every failure
//! kind a config can meet), the session status in PostgreSQL and `status`, and
//! sealed broker passwords with the right and the wrong key.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::gateway::{status_json, Gateway, SECRET_ACCESS_KEY};
use crate::support::kinesis::KinesisLocal;
use crate::support::mosquitto::{publish, publish_lines, BrokerSetup, Mosquitto};
use crate::support::postgres::TestDb;
use crate::support::tls::TestPki;
use crate::support::*;

/// The stream the harness's config names.
const STREAM: &str = "e2e";
const WAIT: Duration = Duration::from_secs(20);
/// The `[spool]` lines of a gateway that writes its status rows every second.
const REPORT_EVERY_SECOND: &str = "max_bytes = \"64MiB\"\n[status]\nreport_interval = \"1s\"";

fn bin() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mqtt-kinesis-bridge"));
    command
        .env_remove("RUST_LOG")
        .env_remove("MKB_PASSWORD_KEY")
        .env("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
        .env("AWS_SECRET_ACCESS_KEY", "options-secret-key");
    command
}

/// A config for `check`, in `dir/name`.
fn check_config(dir: &TempDir, name: &str, db_url: &str, endpoint: &str, stream: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "gateway_id = \"it-gw\"\n\
             [spool]\npath = \"{}\"\nmax_bytes = \"64MiB\"\n\
             [kinesis]\nstream = \"{stream}\"\nregion = \"us-east-1\"\nendpoint = \"{endpoint}\"\nrequest_timeout = \"5s\"\n\
             [database]\nurl = \"{db_url}\"\n",
            dir.join("spool.db").display()
        ),
    )
    .expect("write config");
    path
}

/// `check --config FILE [--json]`: exit code, stdout, stderr.
fn run_check(config: &Path, json: bool) -> (Option<i32>, String, String) {
    run_check_with_env(config, json, &[])
}

/// [`run_check`] with extra environment variables.
fn run_check_with_env(
    config: &Path,
    json: bool,
    env: &[(&str, String)],
) -> (Option<i32>, String, String) {
    let mut command = bin();
    command.arg("check").arg("--config").arg(config);
    command.envs(env.iter().map(|(key, value)| (key, value)));
    if json {
        command.arg("--json");
    }
    let output = command.output().expect("run check");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `check --json`, parsed, with its exit code.
fn check_json(config: &Path) -> (Option<i32>, Value) {
    let (code, stdout, stderr) = run_check(config, true);
    let report: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|error| {
        panic!("check --json printed no JSON ({error}):\n{stdout}\nstderr:\n{stderr}")
    });
    (code, report)
}

/// The one check of area `kinesis` in a `check --json` report.
fn kinesis_check(report: &Value) -> Value {
    report["checks"]
        .as_array()
        .expect("checks[]")
        .iter()
        .find(|check| check["area"] == "kinesis")
        .expect("a kinesis check")
        .clone()
}

/// The report's checks of `area`: target → kind (`None` when it passed).
fn kinds(report: &Value, area: &str) -> BTreeMap<String, Option<String>> {
    report["checks"]
        .as_array()
        .expect("checks[]")
        .iter()
        .filter(|check| check["area"] == area)
        .map(|check| {
            let target = check["target"].as_str().expect("target").to_owned();
            let kind = check["kind"].as_str().map(str::to_owned);
            assert_eq!(
                check["ok"].as_bool(),
                Some(kind.is_none()),
                "ok and kind disagree: {check}"
            );
            (target, kind)
        })
        .collect()
}

/// Issue: `check` names each failure kind per endpoint, exits 1 on any failure and 0 on none.
#[test]
fn check_reports_each_failure_kind() {
    let dir = TempDir::new("options-check");
    let pki_dir = TempDir::new("options-check-pki");
    let pki = TestPki::new(pki_dir.path());
    let db = TestDb::new();
    let kinesis = KinesisLocal::start(STREAM);
    let good = Mosquitto::start();
    let tls = Mosquitto::start_with(BrokerSetup {
        tls: Some(pki.tls_listener(false)),
        ..BrokerSetup::default()
    });
    let locked = Mosquitto::start_with_password("gw", "right-password");
    let dead = free_port();
    let dead_primary = free_port();

    db.add_broker(1, good.port());
    db.add_broker(2, dead);
    db.execute(&format!(
        "INSERT INTO iot_data.mqtt_broker (mqtt_id, mqtt_host, mqtt_port, status) \
         VALUES (3, 'no-such-host.invalid', 1883, TRUE);\
         INSERT INTO iot_data.mqtt_broker (mqtt_id, mqtt_host, mqtt_port, use_tls, ca_cert, status) \
         VALUES (4, '127.0.0.1', {}, TRUE, '{}', TRUE);\
         INSERT INTO iot_data.mqtt_broker (mqtt_id, mqtt_host, mqtt_port, mqtt_username, mqtt_password, status) \
         VALUES (5, '127.0.0.1', {}, 'gw', 'wrong-password', TRUE);\
         INSERT INTO iot_data.mqtt_broker (mqtt_id, mqtt_host, mqtt_port, mqtt_failover, status) \
         VALUES (6, '127.0.0.1', {dead_primary}, '127.0.0.1:{}', TRUE);",
        tls.tls_port(),
        pki.other_ca_pem().display(),
        locked.port(),
        good.port(),
    ));
    db.add_topic(None, "chk/#", 1);

    let config = check_config(&dir, "check.toml", &db.url(), &kinesis.endpoint(), STREAM);
    let (code, report) = check_json(&config);
    let expected: BTreeMap<String, Option<String>> = [
        (
            format!("broker 1 endpoint 1/1 127.0.0.1:{}", good.port()),
            None,
        ),
        (
            format!("broker 2 endpoint 1/1 127.0.0.1:{dead}"),
            Some("refused"),
        ),
        (
            "broker 3 endpoint 1/1 no-such-host.invalid:1883".to_owned(),
            Some("dns"),
        ),
        (
            format!("broker 4 endpoint 1/1 127.0.0.1:{}", tls.tls_port()),
            Some("tls"),
        ),
        (
            format!("broker 5 endpoint 1/1 127.0.0.1:{}", locked.port()),
            Some("auth"),
        ),
        (
            format!("broker 6 endpoint 1/2 127.0.0.1:{dead_primary}"),
            Some("refused"),
        ),
        (
            format!("broker 6 endpoint 2/2 127.0.0.1:{}", good.port()),
            None,
        ),
    ]
    .into_iter()
    .map(|(target, kind)| (target, kind.map(str::to_owned)))
    .collect();
    assert_eq!(kinds(&report, "broker"), expected, "{report:#}");
    assert!(
        kinds(&report, "database").values().all(Option::is_none),
        "{report:#}"
    );
    assert!(
        kinds(&report, "catalog row").is_empty(),
        "no bad rows: {report:#}"
    );
    assert_eq!(
        kinds(&report, "kinesis").into_values().collect::<Vec<_>>(),
        vec![None],
        "{report:#}"
    );
    assert_eq!(
        kinds(&report, "spool").into_values().collect::<Vec<_>>(),
        vec![None],
        "{report:#}"
    );
    assert_eq!(report["ok"], false, "{report:#}");
    assert_eq!(code, Some(1), "{report:#}");
    // The probe used its own client id, not the running session's.
    assert!(good.log().contains("as it-gw-1-check"), "{}", good.log());

    // The same as text.
    let checks = report["checks"].as_array().unwrap();
    let n_failed = checks.iter().filter(|check| check["ok"] == false).count();
    assert_eq!(n_failed, 5, "{report:#}");
    let (code, text, stderr) = run_check(&config, false);
    assert_eq!(code, Some(1), "{text}{stderr}");
    for (target, kind) in &expected {
        let line = text
            .lines()
            .find(|line| line.contains(target.as_str()))
            .unwrap_or_else(|| panic!("no line for {target}:\n{text}"));
        match kind {
            Some(kind) => assert!(line.contains(&format!("FAIL {kind}")), "{line}"),
            None => assert!(line.contains(" ok ") && !line.contains("FAIL"), "{line}"),
        }
    }
    for kind in ["FAIL refused", "FAIL dns", "FAIL tls", "FAIL auth"] {
        assert!(text.contains(kind), "{kind} missing:\n{text}");
    }
    assert!(
        text.contains(&format!("{n_failed} of {} checks failed", checks.len())),
        "{text}"
    );

    // Only the good broker active: everything passes.
    db.execute("UPDATE iot_data.mqtt_broker SET status = FALSE WHERE mqtt_id <> 1");
    let (code, report) = check_json(&config);
    assert_eq!(report["ok"], true, "{report:#}");
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(
        kinds(&report, "broker").into_keys().collect::<Vec<_>>(),
        vec![format!("broker 1 endpoint 1/1 127.0.0.1:{}", good.port())],
    );
    let (code, text, _) = run_check(&config, false);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("checks passed") && !text.contains("FAIL"),
        "{text}"
    );

    // A stream that does not exist.
    let config = check_config(
        &dir,
        "no-stream.toml",
        &db.url(),
        &kinesis.endpoint(),
        "no-such-stream",
    );
    let (code, report) = check_json(&config);
    assert_eq!(
        kinds(&report, "kinesis").into_values().collect::<Vec<_>>(),
        vec![Some("not_found".to_owned())],
        "{report:#}"
    );
    assert_eq!(report["ok"], false);
    assert_eq!(code, Some(1), "{report:#}");

    // A database nobody listens for.
    let closed = format!("postgres://postgres@127.0.0.1:{}/x", free_port());
    let config = check_config(&dir, "no-db.toml", &closed, &kinesis.endpoint(), STREAM);
    let (code, report) = check_json(&config);
    let database = kinds(&report, "database");
    assert!(
        database
            .values()
            .any(|kind| kind.as_deref() == Some("unreachable")),
        "{report:#}"
    );
    assert_eq!(
        kinds(&report, "kinesis").into_values().collect::<Vec<_>>(),
        vec![None],
        "{report:#}"
    );
    assert_eq!(code, Some(1), "{report:#}");
}

/// One gateway's rows in `iot_data.mqtt_connection_status`:
/// `(mqtt_id, connected, endpoint, subscribed_topics, messages_received)`.
type StatusRow = (i32, bool, Option<String>, i32, i64);

fn status_rows(db: &TestDb) -> Vec<StatusRow> {
    db.client()
        .query(
            "SELECT mqtt_id, connected, endpoint, subscribed_topics, messages_received \
             FROM iot_data.mqtt_connection_status WHERE gateway_id = 'it-gw' ORDER BY mqtt_id",
            &[],
        )
        .expect("read the status table")
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4)))
        .collect()
}

fn row_connected(row: &StatusRow, port: u16) -> bool {
    row.1 && row.2.as_deref() == Some(format!("127.0.0.1:{port}").as_str()) && row.3 >= 1
}

/// `status --json` on the gateway in `dir`; `None` while it cannot answer yet (no spool file).
fn status_now(dir: &TempDir) -> Option<Value> {
    let output = bin()
        .args(["status", "--json", "--config"])
        .arg(dir.join("gateway.toml"))
        .output()
        .expect("run status");
    if !output.status.success() {
        return None;
    }
    Some(serde_json::from_slice(&output.stdout).expect("status --json prints JSON"))
}

/// The `brokers[]` entry of `broker_id` in `status --json`.
fn status_broker(status: &Value, broker_id: i64) -> Option<Value> {
    status["brokers"]
        .as_array()?
        .iter()
        .find(|broker| broker["broker_id"] == broker_id)
        .cloned()
}

/// How often the broker logged client `id` going away.
fn n_disconnects(broker: &Mosquitto, id: &str) -> usize {
    let log = broker.log();
    log.matches(&format!("Client {id} disconnected")).count()
        + log
            .matches(&format!("Client {id} closed its connection"))
            .count()
}

/// Issue: the session status reaches PostgreSQL and `status`; `status = FALSE` disconnects.
#[test]
fn status_rows_reach_postgres_and_status_false_disconnects() {
    let dir = TempDir::new("options-status");
    let db = TestDb::new();
    let kinesis = KinesisLocal::start(STREAM);
    let brokers = [Mosquitto::start(), Mosquitto::start()];
    let ports = [brokers[0].port(), brokers[1].port()];
    db.add_broker(1, ports[0]);
    db.add_broker(2, ports[1]);
    db.add_topic(None, "st/#", 1);
    let gateway = Gateway::start_with_env(&dir, &db, &kinesis.endpoint(), REPORT_EVERY_SECOND, &[]);
    let log = || gateway.log();

    wait_until("both status rows connected", WAIT, || {
        let rows = status_rows(&db);
        rows.len() == 2
            && rows[0].0 == 1
            && row_connected(&rows[0], ports[0])
            && rows[1].0 == 2
            && row_connected(&rows[1], ports[1])
    });

    // kinesis-local's clock is this machine's: no correction.
    wait_until("clock_offset_ms 0 on both rows", WAIT, || {
        status_clock_offsets(&db) == [Some(0), Some(0)]
    });

    publish(ports[0], "st/a", "one", 5);
    publish(ports[1], "st/b", "two", 3);
    wait_until(
        "messages_received 5 and 3 in the status table",
        WAIT,
        || {
            let rows = status_rows(&db);
            rows.len() == 2 && rows[0].4 == 5 && rows[1].4 == 3
        },
    );

    // `status --json` while it runs.
    wait_until("status --json: both brokers connected", WAIT, || {
        let Some(status) = status_now(&dir) else {
            return false;
        };
        status["gateway"]["running"] == true
            && (1..=2).all(|id| {
                status_broker(&status, id).is_some_and(|broker| {
                    broker["state"] == "connected"
                        && broker["endpoint"]
                            == format!("127.0.0.1:{}", ports[id as usize - 1]).as_str()
                })
            })
    });
    let status = gateway.status();
    assert_eq!(
        status_broker(&status, 1).unwrap()["received"],
        5,
        "{status:#}"
    );
    assert_eq!(
        status_broker(&status, 2).unwrap()["received"],
        3,
        "{status:#}"
    );

    // Broker 2 deactivated: the session ends and its row goes.
    let disconnects_before = n_disconnects(&brokers[1], "it-gw-2");
    db.execute("UPDATE iot_data.mqtt_broker SET status = FALSE WHERE mqtt_id = 2");
    wait_until("the log says broker 2 removed", WAIT, || {
        log().contains("broker 2 removed")
    });
    wait_until("Mosquitto 2 saw it-gw-2 disconnect", WAIT, || {
        n_disconnects(&brokers[1], "it-gw-2") > disconnects_before
    });
    wait_until("broker 2's status row deleted", WAIT, || {
        let rows = status_rows(&db);
        rows.len() == 1 && rows[0].0 == 1 && row_connected(&rows[0], ports[0])
    });
    wait_until("status --json: broker 2 gone", WAIT, || {
        let status = gateway.status();
        status_broker(&status, 2).is_none_or(|broker| broker["state"] == "inactive")
            && status_broker(&status, 1).is_some_and(|broker| broker["state"] == "connected")
    });
    let connects_before = brokers[1].log().matches("as it-gw-2").count();

    // Back on: the session reconnects and the row returns.
    db.execute("UPDATE iot_data.mqtt_broker SET status = TRUE WHERE mqtt_id = 2");
    wait_until("broker 2 connected again in the status table", WAIT, || {
        let rows = status_rows(&db);
        rows.len() == 2 && row_connected(&rows[1], ports[1])
    });
    assert!(
        brokers[1].log().matches("as it-gw-2").count() > connects_before,
        "Mosquitto 2 saw no new connection from it-gw-2"
    );

    let log_before = log();
    assert_eq!(gateway.terminate(), Some(0), "log:\n{log_before}");
    let status = status_json(&dir.join("gateway.toml"));
    assert_eq!(status["gateway"]["running"], false, "{status:#}");
    assert!(
        status["brokers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|broker| broker["state"] == "not running"),
        "{status:#}"
    );
}

/// Runs the binary with `args`, `stdin` fed in and `MKB_PASSWORD_KEY` = `key` if given; its stdout line.
fn run_line(args: &[&str], key: Option<&str>, stdin: &str) -> String {
    let mut command = bin();
    command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(key) = key {
        command.env("MKB_PASSWORD_KEY", key);
    }
    let mut child = command.spawn().expect("start the binary");
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    let output = child.wait_with_output().expect("wait for the binary");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("UTF-8")
        .trim()
        .to_owned()
}

/// Issue: sealed passwords open with the gateway's key in the row they were
/// sealed for (`enc:v2:`, `encrypt-password --broker`); one sealed with another
/// key, or a v2 value copied into another row, skips only its broker; `enc:v1:`
/// still opens, with one warning to seal it again; a sealed password sent
/// without TLS to a host that is not this machine is warned about; no
/// plaintext is logged or stored.
#[test]
fn sealed_password_connects_and_a_wrong_key_fails_only_that_broker() {
    const PASSWORD_1: &str = "plain-Broker1-pw-7f3a";
    const PASSWORD_2: &str = "plain-Broker2-pw-9c1e";
    let dir = TempDir::new("options-sealed");
    let db = TestDb::new();
    let kinesis = KinesisLocal::start(STREAM);
    let broker = Mosquitto::start_with_password("gw", PASSWORD_1);

    let key = run_line(&["new-key"], None, "");
    let other_key = run_line(&["new-key"], None, "");
    assert_ne!(key, other_key);
    let seal = |args: &[&str], key: &str, password: &str| {
        run_line(
            &[&["encrypt-password"], args].concat(),
            Some(key),
            &format!("{password}\n"),
        )
    };
    let sealed_1 = seal(&["--broker", "1"], &key, PASSWORD_1);
    let sealed_2 = seal(&["--broker", "2"], &other_key, PASSWORD_2);
    let sealed_v1 = seal(&["--v1"], &key, PASSWORD_1);
    let sealed_5 = seal(&["--broker", "5"], &key, PASSWORD_1);
    for sealed in [&sealed_1, &sealed_2, &sealed_5] {
        assert!(sealed.starts_with("enc:v2:"), "{sealed}");
    }
    assert!(sealed_v1.starts_with("enc:v1:"), "{sealed_v1}");
    assert!(!sealed_1.contains(PASSWORD_1));
    // 3 holds 1's value, copied: it must not open there. 5 is not this machine.
    for (mqtt_id, host, sealed) in [
        (1, "127.0.0.1", &sealed_1),
        (2, "127.0.0.1", &sealed_2),
        (3, "127.0.0.1", &sealed_1),
        (4, "127.0.0.1", &sealed_v1),
        (5, "192.0.2.1", &sealed_5),
    ] {
        db.execute(&format!(
            "INSERT INTO iot_data.mqtt_broker (mqtt_id, mqtt_host, mqtt_port, mqtt_username, mqtt_password, status) \
             VALUES ({mqtt_id}, '{host}', {}, 'gw', '{sealed}', TRUE)",
            broker.port()
        ));
    }
    db.add_topic(None, "sealed/#", 1);

    let gateway = Gateway::start_with_env(
        &dir,
        &db,
        &kinesis.endpoint(),
        "max_bytes = \"64MiB\"",
        &[("MKB_PASSWORD_KEY", key.clone())],
    );
    wait_until("status --json: broker 1 connected", WAIT, || {
        status_now(&dir)
            .and_then(|status| status_broker(&status, 1))
            .is_some_and(|broker| broker["state"] == "connected")
    });
    let n = 10;
    publish_lines(
        broker.port(),
        1,
        Some(("gw", PASSWORD_1)),
        "sealed/a",
        "s",
        n,
    );
    wait_until("broker 1's messages spooled and delivered", WAIT, || {
        let status = gateway.status();
        status_broker(&status, 1).is_some_and(|broker| {
            broker["received"] == n && broker["spooled"] == n && broker["delivered"] == n
        })
    });
    wait_until(
        "the log names mqtt_id=2 and 3, not sealed for them",
        WAIT,
        || {
            let log = gateway.log();
            [2, 3].iter().all(|id| {
                log.lines().any(|line| {
                    line.contains(&format!("mqtt_id={id}: mqtt_password"))
                        && line.contains("sealed for another broker row or column")
                })
            })
        },
    );
    wait_until("status --json: broker 4 (enc:v1) connected", WAIT, || {
        status_now(&dir)
            .and_then(|status| status_broker(&status, 4))
            .is_some_and(|broker| broker["state"] == "connected")
    });
    wait_until(
        "the warning about broker 5's password without TLS",
        WAIT,
        || {
            gateway.log().contains(&format!(
            "broker 5: its password is sealed in the catalog but goes to 192.0.2.1:{} without TLS",
            broker.port()
        ))
        },
    );
    let log = gateway.log();
    assert_eq!(
        log.matches("mqtt_id=4: mqtt_password is sealed as enc:v1")
            .count(),
        1,
        "{log}"
    );
    assert!(
        log.contains("seal it again with `encrypt-password --broker 4 --column mqtt_password`"),
        "{log}"
    );
    assert!(!log.contains("broker 1: its password is sealed"), "{log}");
    let status = gateway.status();
    assert!(status_broker(&status, 2).is_none(), "{status:#}");
    assert!(status_broker(&status, 3).is_none(), "{status:#}");
    for id in [2, 3] {
        assert!(
            !broker.log().contains(&format!("as it-gw-{id}")),
            "broker {id} connected:\n{}",
            broker.log()
        );
    }

    let snapshot = dir.join("catalog-snapshot.db");
    wait_until("the catalog snapshot written", WAIT, || snapshot.exists());
    let mode = std::fs::metadata(&snapshot).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "snapshot mode {mode:o}");
    let bytes = std::fs::read(&snapshot).unwrap();
    for secret in [PASSWORD_1, PASSWORD_2, key.as_str()] {
        assert!(
            !bytes
                .windows(secret.len())
                .any(|window| window == secret.as_bytes()),
            "the snapshot holds {secret:?} in clear"
        );
    }

    let log = gateway.log();
    for secret in [PASSWORD_1, PASSWORD_2, key.as_str(), other_key.as_str()] {
        assert!(!log.contains(secret), "{secret:?} in the log:\n{log}");
    }
    assert_eq!(gateway.terminate(), Some(0), "log:\n{log}");
}

/// The database goes away while the gateway runs: the status file keeps counting,
/// and the first write after the database is back brings the row up to date.
#[test]
fn status_rows_catch_up_after_a_database_outage() {
    use crate::support::proxy::Proxy;

    let db = TestDb::new();
    let mosquitto = Mosquitto::start();
    db.add_broker(1, mosquitto.port());
    db.add_topic(Some(1), "t/#", 1);
    let proxy = Proxy::start("127.0.0.1:5432");
    let url = db.url().replace(":5432/", &format!(":{}/", proxy.port()));
    let dir = TempDir::new("status-outage");
    let gateway =
        Gateway::start_with_database(&dir, &url, "http://127.0.0.1:1", REPORT_EVERY_SECOND, &[]);
    wait_until("the status row, connected", WAIT, || {
        status_rows(&db)
            .first()
            .is_some_and(|row| row_connected(row, mosquitto.port()))
    });

    proxy.cut();
    gateway.wait_log("the database lost", |log| {
        log.contains("catalog: database connection lost")
            || log.contains("catalog: database unreachable")
    });
    publish(mosquitto.port(), "t/x", "offline", 4);
    wait_until("4 received, in the status file", WAIT, || {
        status_now(&dir).is_some_and(|status| status["brokers"][0]["received"] == 4)
    });
    assert_eq!(
        status_rows(&db)[0].4,
        0,
        "nothing can reach the table while the database is cut off"
    );

    proxy.restore();
    wait_until("the row caught up", WAIT, || {
        status_rows(&db)
            .first()
            .is_some_and(|row| row.4 == 4 && row_connected(row, mosquitto.port()))
    });
    assert!(gateway.log().contains("catalog: database reachable again"));
}

/// The drain's `https://` endpoint is verified against the system's roots
/// (`SSL_CERT_FILE` stands in for the system store here): a server whose CA
/// is there gets past the TLS handshake, one whose CA is not is refused.
/// The server is a Mosquitto TLS listener, so past the handshake the HTTP
/// exchange itself fails, which is all this test needs.
#[test]
fn kinesis_over_tls_trusts_the_system_roots() {
    let dir = TempDir::new("check-kinesis-tls");
    let pki = TestPki::new(dir.path());
    let broker = Mosquitto::start_with(BrokerSetup {
        tls: Some(pki.tls_listener(false)),
        ..BrokerSetup::default()
    });
    let endpoint = format!("https://localhost:{}", broker.tls_port());
    let config = check_config(
        &dir,
        "tls.toml",
        "postgres://postgres@127.0.0.1:1/x",
        &endpoint,
        STREAM,
    );
    let kinesis_detail = |trust_test_ca: bool| {
        let mut command = bin();
        command
            .arg("check")
            .arg("--json")
            .arg("--config")
            .arg(&config);
        if trust_test_ca {
            command.env("SSL_CERT_FILE", pki.ca_pem());
        } else {
            command.env_remove("SSL_CERT_FILE");
        }
        let output = command.output().expect("run check");
        let report: Value = serde_json::from_slice(&output.stdout).expect("check --json");
        kinesis_check(&report)["detail"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let untrusted = kinesis_detail(false);
    assert!(untrusted.contains("UnknownIssuer"), "{untrusted}");
    let trusted = kinesis_detail(true);
    assert!(
        !trusted.contains("certificate") && !trusted.contains("UnknownIssuer"),
        "the handshake should pass: {trusted}"
    );
}

/// A fleet whose catalog uses bigint ids: a broker whose id does not fit the
/// status table's integer column gets no row, and every other broker still does.
#[test]
fn a_broker_id_beyond_32_bits_does_not_stop_the_status_rows() {
    let dir = TempDir::new("options-wide-id");
    let db = TestDb::new();
    db.execute("ALTER TABLE iot_data.mqtt_broker ALTER COLUMN mqtt_id TYPE bigint");
    let broker = Mosquitto::start();
    db.add_broker(1, broker.port());
    db.execute(&format!(
        "INSERT INTO iot_data.mqtt_broker (mqtt_id, mqtt_host, mqtt_port, status) \
         VALUES (5000000000, '127.0.0.1', {}, TRUE)",
        broker.port()
    ));
    db.add_topic(None, "wide/#", 1);
    let kinesis = crate::support::kinesis::FakeKinesis::start(vec![]);
    let gateway = Gateway::start_with_env(&dir, &db, &kinesis.endpoint(), REPORT_EVERY_SECOND, &[]);
    wait_until("broker 1's status row, connected", WAIT, || {
        let rows = status_rows(&db);
        rows.len() == 1 && rows[0].0 == 1 && row_connected(&rows[0], broker.port())
    });
    gateway.wait_log("the wide id named once", |log| {
        log.matches("broker 5000000000 has no row in iot_data.mqtt_connection_status")
            .count()
            == 1
    });
    assert_eq!(gateway.terminate(), Some(0));
}

/// The real binary against a Kinesis whose clock is two hours ahead of the
/// machine's (the gateway two hours behind): every message arrives, the log
/// says so once, and `status --json` shows the offset.
#[test]
fn a_gateway_two_hours_behind_delivers_and_says_so() {
    let dir = TempDir::new("options-clock");
    let db = TestDb::new();
    let broker = Mosquitto::start();
    db.add_broker(1, broker.port());
    db.add_topic(None, "clock/#", 1);
    let kinesis = crate::support::kinesis::FakeKinesis::start(vec![]);
    kinesis.set_clock_offset(2 * 3600);
    kinesis.check_signatures(SECRET_ACCESS_KEY);
    let gateway =
        Gateway::start_with_env(&dir, &db, &kinesis.endpoint(), "max_bytes = \"64MiB\"", &[]);
    wait_until("broker 1 connected", WAIT, || {
        status_now(&dir)
            .and_then(|status| status_broker(&status, 1))
            .is_some_and(|broker| broker["state"] == "connected")
    });
    publish(broker.port(), "clock/a", "late", 20);
    wait_until("20 records accepted", WAIT, || {
        kinesis.accepted().len() == 20
    });
    assert_eq!(kinesis.n_refused_for_time(), 1);
    assert_eq!(kinesis.bad_signatures(), Vec::<String>::new());
    wait_until("status --json shows the offset", WAIT, || {
        status_now(&dir).is_some_and(|status| {
            status["gateway"]["clock_offset_ms"]
                .as_i64()
                .is_some_and(|offset| (offset - 7_200_000).abs() < 5_000)
        })
    });
    let log = gateway.log();
    assert_eq!(log.matches("the clock is 2h0m").count(), 1, "{log}");
    assert!(
        log.contains("behind AWS: signing with corrected time; fix NTP"),
        "{log}"
    );
    assert!(!log.contains("credentials refused"), "{log}");
    assert_eq!(gateway.terminate(), Some(0));
}

/// `check` names a clock problem as such, with how far off the clock is.
#[test]
fn check_names_a_clock_two_hours_off() {
    let dir = TempDir::new("check-clock");
    let kinesis = crate::support::kinesis::FakeKinesis::start(vec![]);
    kinesis.set_clock_offset(2 * 3600);
    let config = check_config(
        &dir,
        "clock.toml",
        "postgres://postgres@127.0.0.1:1/x",
        &kinesis.endpoint(),
        STREAM,
    );
    let (_, report) = check_json(&config);
    let check = kinesis_check(&report);
    assert_eq!(check["kind"], "clock", "{check}");
    let detail = check["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("the clock is 2h0m"), "{detail}");
    assert!(detail.contains("behind AWS"), "{detail}");
}

const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// libfaketime's variables that move this process's wall clock by `faketime`
/// (`-2h`) and leave the monotonic clock alone.
fn faketime_env(faketime: &str) -> [(&'static str, String); 3] {
    assert!(
        Path::new(LIBFAKETIME).exists(),
        "libfaketime is missing: apt-get install libfaketime (.ci/setup does)"
    );
    [
        ("LD_PRELOAD", LIBFAKETIME.to_owned()),
        ("FAKETIME", faketime.to_owned()),
        ("DONT_FAKE_MONOTONIC", "1".to_owned()),
    ]
}

/// `check` on a machine whose clock is two hours behind: the clock lines name
/// the offset against the database and AWS, and a broker certificate that is
/// "not valid yet" only because of that clock is named a clock problem, not a
/// TLS one.
#[test]
fn check_names_a_wrong_clock_against_the_database_aws_and_certificates() {
    let dir = TempDir::new("check-faketime");
    let pki_dir = TempDir::new("check-faketime-pki");
    let pki = TestPki::new(pki_dir.path());
    let db = TestDb::new();
    let tls = Mosquitto::start_with(BrokerSetup {
        tls: Some(pki.tls_listener(false)),
        ..BrokerSetup::default()
    });
    db.execute(&format!(
        "INSERT INTO iot_data.mqtt_broker (mqtt_id, mqtt_host, mqtt_port, use_tls, ca_cert, status) \
         VALUES (1, '127.0.0.1', {port}, TRUE, '{ca}', TRUE), \
                (2, '127.0.0.1', {port}, TRUE, '{other}', TRUE)",
        port = tls.tls_port(),
        ca = pki.ca_pem().display(),
        other = pki.other_ca_pem().display(),
    ));
    let kinesis = crate::support::kinesis::FakeKinesis::start(vec![]);
    let config = check_config(&dir, "check.toml", &db.url(), &kinesis.endpoint(), STREAM);

    // The right clock first: the same brokers are fine but for the wrong CA.
    let (_, report) = check_json(&config);
    let broker_kinds: Vec<_> = kinds(&report, "broker").into_values().collect();
    assert_eq!(
        broker_kinds,
        vec![None, Some("tls".to_owned())],
        "{report:#}"
    );
    assert!(
        kinds(&report, "clock").values().all(Option::is_none),
        "{report:#}"
    );
    assert_eq!(kinds(&report, "clock").len(), 2, "{report:#}");

    let (code, stdout, stderr) = run_check_with_env(&config, true, &faketime_env("-2h"));
    let report: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|error| panic!("no JSON ({error}): {stdout}\n{stderr}"));
    assert_eq!(code, Some(1), "{report:#}");
    let clocks = kinds(&report, "clock");
    assert_eq!(
        clocks.keys().cloned().collect::<Vec<_>>(),
        vec![
            "gateway vs AWS (Date of DescribeStreamSummary)".to_owned(),
            "gateway vs the database (clock_timestamp())".to_owned(),
        ],
        "{report:#}"
    );
    assert!(
        clocks.values().all(|kind| kind.as_deref() == Some("clock")),
        "{report:#}"
    );
    let details: Vec<&str> = report["checks"]
        .as_array()
        .expect("checks[]")
        .iter()
        .filter(|check| check["area"] == "clock")
        .filter_map(|check| check["detail"].as_str())
        .collect();
    assert!(
        details
            .iter()
            .any(|d| d.starts_with("the clock is 2h0m") && d.contains("behind the database")),
        "{details:?}"
    );
    assert!(
        details
            .iter()
            .any(|d| d.starts_with("the clock is 2h0m") && d.contains("behind AWS")),
        "{details:?}"
    );
    let brokers: Vec<&Value> = report["checks"]
        .as_array()
        .expect("checks[]")
        .iter()
        .filter(|check| check["area"] == "broker")
        .collect();
    assert_eq!(brokers.len(), 2, "{report:#}");
    assert_eq!(brokers[0]["kind"], "clock", "{report:#}");
    let detail = brokers[0]["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("not valid yet"), "{detail}");
    assert!(
        detail.contains("behind AWS: the certificate is probably fine, fix the clock (NTP)"),
        "{detail}"
    );
    // webpki checks the validity period before the issuer: under this clock
    // the wrong CA's answer is "not valid yet" too (the unit test covers a
    // TLS failure of another kind staying `tls`).
    assert_eq!(brokers[1]["kind"], "clock", "{report:#}");
}

/// `clock_offset_ms` of the gateway's rows in the status table; `None` where
/// the column is NULL (or there are no rows).
fn status_clock_offsets(db: &TestDb) -> Vec<Option<i64>> {
    db.client()
        .query(
            "SELECT clock_offset_ms FROM iot_data.mqtt_connection_status \
             WHERE gateway_id = 'it-gw' ORDER BY mqtt_id",
            &[],
        )
        .expect("read clock_offset_ms")
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// The same with the gateway's own clock moved by libfaketime (the monotonic
/// clock left alone), two hours back and two hours forward. The offset also
/// reaches the status table; the second gateway starts on a catalog without
/// that column (made before 0005), writes its rows anyway, and fills the
/// column once it is added, without a restart.
#[test]
fn a_gateway_under_faketime_delivers_and_says_so() {
    for (faketime, offset_ms, words) in [
        ("-2h", 7_200_000i64, "behind AWS"),
        ("+2h", -7_200_000, "ahead of AWS"),
    ] {
        let dir = TempDir::new("options-faketime");
        let db = TestDb::new();
        let broker = Mosquitto::start();
        db.add_broker(1, broker.port());
        db.add_topic(None, "clock/#", 1);
        let kinesis = crate::support::kinesis::FakeKinesis::start(vec![]);
        kinesis.check_signatures(SECRET_ACCESS_KEY);
        let env = faketime_env(faketime);
        let without_column = faketime == "+2h";
        if without_column {
            db.execute("ALTER TABLE iot_data.mqtt_connection_status DROP COLUMN clock_offset_ms");
        }
        let gateway =
            Gateway::start_with_env(&dir, &db, &kinesis.endpoint(), REPORT_EVERY_SECOND, &env);
        wait_until("broker 1 subscribed", WAIT, || {
            gateway.log().contains("connected, subscribed")
        });
        publish(broker.port(), "clock/a", "faked", 20);
        wait_until("20 records accepted", WAIT, || {
            kinesis.accepted().len() == 20
        });
        assert_eq!(kinesis.n_refused_for_time(), 1, "FAKETIME={faketime}");
        assert_eq!(kinesis.bad_signatures(), Vec::<String>::new());
        let log = gateway.log();
        assert_eq!(log.matches("the clock is 2h0m").count(), 1, "{log}");
        assert!(log.contains(words), "FAKETIME={faketime}: {log}");
        wait_until("the offset in the status file", WAIT, || {
            let Ok(text) = std::fs::read_to_string(dir.join("status.json")) else {
                return false;
            };
            let status: Value = serde_json::from_str(&text).unwrap_or_default();
            status["clock_offset_ms"]
                .as_i64()
                .is_some_and(|offset| (offset - offset_ms).abs() < 5_000)
        });
        if without_column {
            wait_until("the status row written without the column", WAIT, || {
                status_rows(&db).iter().any(|row| row.0 == 1 && row.4 == 20)
            });
            db.execute(include_str!(
                "../../buffer-schema/catalog/0005_clock_offset.sql"
            ));
        }
        wait_until("the offset in the status table", WAIT, || {
            let offsets = status_clock_offsets(&db);
            !offsets.is_empty()
                && offsets
                    .iter()
                    .all(|offset| offset.is_some_and(|o| (o - offset_ms).abs() < 5_000))
        });
        let log = gateway.log();
        assert!(
            !log.contains("cannot write iot_data.mqtt_connection_status"),
            "{log}"
        );
        assert_eq!(gateway.terminate(), Some(0));
    }
}
