//! Hostile and broken inputs against the real binary, its address space
//! limited (`RLIMIT_AS`, as `prlimit --as` sets it) so an input that makes it
//! allocate without bound fails inside the child instead of taking the machine
//! (a `ca_cert` of `/dev/zero` once took a gateway to 22 GiB).

use std::time::Duration;

use serde_json::Value;

use crate::gateway::Gateway;
use crate::support::kinesis::FakeKinesis;
use crate::support::mosquitto::{publish, BrokerSetup, Mosquitto};
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
    let gateway =
        Gateway::start_with_memory_limit(&dir, &db, &kinesis.endpoint(), &[], ADDRESS_SPACE);
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
    assert_eq!(gateway.terminate(), Some(0), "log:\n{log}");
}
