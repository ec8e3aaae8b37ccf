//! TLS to PostgreSQL (issue #13, item 1): libpq's sslmodes against throw-away
//! clusters with TLS (a per-test CA, `hostssl` only) and without, and the
//! machine's server (`ssl = on`, a self-signed certificate). The library's
//! `catalog::postgres::connect` for the modes; the real binary for the
//! gateway's link, the status table over TLS, the snapshot after a
//! certificate failure, and `check`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use mqtt_kinesis_bridge::catalog::database_url::Verify;
use mqtt_kinesis_bridge::catalog::postgres::{self, DbErrorKind, Link};
use mqtt_kinesis_bridge::secret::Secret;
use serde_json::Value;

use crate::gateway::Gateway;
use crate::support::mosquitto::Mosquitto;
use crate::support::pg_cluster::{non_loopback_ipv4, ClusterSetup, PgCluster};
use crate::support::postgres::TestDb;
use crate::support::tls::TestPki;
use crate::support::*;

const WAIT: Duration = Duration::from_secs(30);
/// The `[spool]` lines of a gateway that writes its status rows every second.
const REPORT_EVERY_SECOND: &str = "max_bytes = \"64MiB\"\n[status]\nreport_interval = \"1s\"";
/// Nothing listens there: the drain fails, which these tests do not look at.
const NO_KINESIS: &str = "http://127.0.0.1:1";

/// The link `url` makes, or the failure's kind and text.
fn connect(url: &str) -> Result<Link, (DbErrorKind, String)> {
    postgres::connect(&Secret::new(url), None)
        .map(|(_client, link)| link)
        .map_err(|error| (error.kind(), error.to_string()))
}

#[track_caller]
fn assert_tls_failure(url: &str, expected: &str) -> String {
    match connect(url) {
        Ok(link) => panic!("{url}: connected ({link}), expected a TLS failure"),
        Err((kind, message)) => {
            assert_eq!(kind, DbErrorKind::Tls, "{url}: {message}");
            assert!(
                message.contains(expected),
                "{url}: {message:?} lacks {expected:?}"
            );
            message
        }
    }
}

fn tls13(verify: Verify) -> Link {
    Link::Tls {
        version: "TLSv1.3",
        verify,
    }
}

/// `check --json` on a config naming `database_url`: the report and stderr.
fn check_json(dir: &TempDir, database_url: &str) -> (Value, String) {
    let config = dir.join("check.toml");
    std::fs::write(
        &config,
        format!(
            "gateway_id = \"it-gw\"\n\
             [spool]\npath = \"{}\"\nmax_bytes = \"64MiB\"\n\
             [kinesis]\nstream = \"e2e\"\nregion = \"us-east-1\"\nendpoint = \"{NO_KINESIS}\"\nrequest_timeout = \"1s\"\n\
             [database]\nurl = \"{database_url}\"\n",
            dir.join("check-spool.db").display()
        ),
    )
    .expect("write the check config");
    let output = Command::new(env!("CARGO_BIN_EXE_mqtt-kinesis-bridge"))
        .args(["check", "--json", "--config"])
        .arg(&config)
        .env_remove("RUST_LOG")
        .env("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
        .env("AWS_SECRET_ACCESS_KEY", "tls-secret-key")
        .output()
        .expect("run check");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let report = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|error| panic!("check --json: {error}:\n{stdout}\n{stderr}"));
    (report, stderr)
}

/// The first `database` check of a report.
fn database_check(report: &Value) -> Value {
    report["checks"]
        .as_array()
        .expect("checks[]")
        .iter()
        .find(|check| check["area"] == "database")
        .unwrap_or_else(|| panic!("no database check: {report:#}"))
        .clone()
}

/// Every libpq mode against a cluster that takes TLS connections only, with
/// a certificate from the test's CA for `localhost` and 127.0.0.1 (not 127.0.0.2).
#[test]
fn sslmodes_against_a_tls_only_cluster() {
    let pki_dir = TempDir::new("pg-tls-modes-pki");
    let pki = TestPki::new(pki_dir.path());
    let cluster = PgCluster::start(ClusterSetup {
        tls: Some(&pki),
        hba: "hostssl all gateway-test 127.0.0.0/8 cert\nhostssl all all 127.0.0.0/8 trust",
        listen: "127.0.0.1,127.0.0.2",
    });
    cluster.execute("CREATE ROLE \"gateway-test\" LOGIN");
    let port = cluster.port();
    let ca = pki.ca_pem();
    let ca = ca.display();
    let url = |host: &str, app: &str, params: &str| {
        format!("postgres://postgres@{host}:{port}/postgres?application_name={app}&{params}")
    };

    // verify-full: connects, and the server sees the session encrypted.
    let verify_full = url(
        "127.0.0.1",
        "mkb-verify-full",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );
    let (_client, link) = postgres::connect(&Secret::new(&verify_full), None).unwrap();
    assert_eq!(link, tls13(Verify::ChainAndName));
    assert_eq!(link.to_string(), "TLSv1.3, verify-full");
    assert_eq!(
        cluster.ssl_of("mkb-verify-full"),
        vec![(true, Some("TLSv1.3".to_owned()))]
    );
    // The key=value form, by name.
    assert_eq!(
        connect(&format!(
            "host=localhost port={port} user=postgres sslmode=verify-full sslrootcert='{ca}'"
        )),
        Ok(tls13(Verify::ChainAndName))
    );

    // A certificate that does not name 127.0.0.2: verify-ca takes it, verify-full does not.
    assert_eq!(
        connect(&url(
            "127.0.0.2",
            "mkb-ca",
            &format!("sslmode=verify-ca&sslrootcert={ca}")
        )),
        Ok(tls13(Verify::Chain))
    );
    assert_tls_failure(
        &url(
            "127.0.0.2",
            "mkb-name",
            &format!("sslmode=verify-full&sslrootcert={ca}"),
        ),
        "certificate not valid for name \"127.0.0.2\"",
    );

    // Another CA: refused in every mode that checks the chain (libpq's
    // require checks it too once sslrootcert is given).
    let other_ca = pki.other_ca_pem();
    for mode in ["verify-full", "verify-ca", "require"] {
        assert_tls_failure(
            &url(
                "127.0.0.1",
                "mkb-other-ca",
                &format!("sslmode={mode}&sslrootcert={}", other_ca.display()),
            ),
            "UnknownIssuer",
        );
    }
    // An unreadable sslrootcert is a TLS failure too, naming the parameter.
    assert_tls_failure(
        &url(
            "127.0.0.1",
            "mkb-no-ca",
            "sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
        ),
        "sslrootcert /nonexistent/ca.pem",
    );

    // require without a root: encrypted, not verified. prefer (the default) and
    // allow (plaintext refused by pg_hba.conf, then TLS) end up the same.
    for params in ["sslmode=require", "", "sslmode=prefer", "sslmode=allow"] {
        assert_eq!(
            connect(&url("127.0.0.1", "mkb-weak", params)),
            Ok(tls13(Verify::Nothing)),
            "{params}"
        );
    }

    // disable: no TLS, which this server's pg_hba.conf refuses.
    match connect(&url("127.0.0.1", "mkb-disable", "sslmode=disable")) {
        Err((DbErrorKind::Database, message)) => {
            assert!(message.contains("no encryption"), "{message}")
        }
        other => panic!("sslmode=disable to a hostssl-only server: {other:?}"),
    }

    // A client certificate (pg_hba.conf: `cert` for this user), and its key's mode.
    let client_url = |key: &Path| {
        format!(
            "postgres://gateway-test@127.0.0.1:{port}/postgres?sslmode=verify-full&sslrootcert={ca}\
             &sslcert={}&sslkey={}",
            pki.client_pem().display(),
            key.display()
        )
    };
    let key = pki_dir.join("client-0600.key");
    std::fs::copy(pki.client_key(), &key).unwrap();
    set_mode(&key, 0o600);
    assert_eq!(connect(&client_url(&key)), Ok(tls13(Verify::ChainAndName)));
    set_mode(&key, 0o644);
    let message = assert_tls_failure(&client_url(&key), "lets others read the key");
    assert!(!message.contains("PRIVATE KEY"), "{message}");
    match connect(&format!(
        "postgres://gateway-test@127.0.0.1:{port}/postgres?sslmode=verify-full&sslrootcert={ca}"
    )) {
        Err((DbErrorKind::Database, message)) => {
            assert!(message.contains("certificate"), "{message}")
        }
        other => panic!("no client certificate for a `cert` user: {other:?}"),
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The gateway over verify-full writes its status rows over TLS; with a CA
/// that does not sign the server's certificate it runs from its snapshot,
/// and `check` says `tls`.
#[test]
fn the_gateway_over_verify_full_and_from_its_snapshot_when_the_ca_is_wrong() {
    let dir = TempDir::new("pg-tls-gateway");
    let pki_dir = TempDir::new("pg-tls-gateway-pki");
    let pki = TestPki::new(pki_dir.path());
    let cluster = PgCluster::start(ClusterSetup {
        tls: Some(&pki),
        hba: "hostssl all all 127.0.0.0/8 trust",
        listen: "127.0.0.1",
    });
    cluster.apply_catalog_schema();
    let broker = Mosquitto::start();
    cluster.execute(&format!(
        "INSERT INTO iot_data.mqtt_broker (mqtt_id, mqtt_host, mqtt_port, status) \
         VALUES (1, '127.0.0.1', {}, TRUE);\
         INSERT INTO iot_data.mqtt_topic (mqtt_id, topic, qos, status) VALUES (1, 'tls/#', 1, TRUE);",
        broker.port()
    ));
    let url = |ca: &Path| {
        format!(
            "postgres://postgres@localhost:{}/postgres?sslmode=verify-full&sslrootcert={}\
             &application_name=mkb-it-gateway",
            cluster.port(),
            ca.display()
        )
    };
    let good = url(&pki.ca_pem());

    let gateway = Gateway::start_with_database(&dir, &good, NO_KINESIS, REPORT_EVERY_SECOND, &[]);
    let status_row = || {
        cluster
            .admin()
            .query(
                "SELECT connected FROM iot_data.mqtt_connection_status \
                 WHERE gateway_id = 'it-gw' AND mqtt_id = 1",
                &[],
            )
            .expect("read the status table")
            .first()
            .is_some_and(|row| row.get::<_, bool>(0))
    };
    // The cluster takes TLS connections only, so a row written is a row written over TLS.
    wait_until("broker 1 connected in the status table", WAIT, status_row);
    assert_eq!(
        cluster.ssl_of("mkb-it-gateway"),
        vec![(true, Some("TLSv1.3".to_owned()))],
        "the gateway's one connection (catalog and status table), encrypted"
    );
    gateway.wait_log("the link logged", |log| {
        log.contains("catalog: database link: TLSv1.3, verify-full")
    });
    assert!(
        !gateway.log().contains("not encrypted"),
        "{}",
        gateway.log()
    );
    let snapshot = dir.join("catalog-snapshot.db");
    wait_until("the catalog snapshot", WAIT, || snapshot.exists());
    assert_eq!(gateway.terminate(), Some(0));

    let (report, _) = check_json(&dir, &good);
    let link = database_check(&report);
    assert_eq!(link["ok"], true, "{report:#}");
    assert_eq!(link["detail"], "TLSv1.3, verify-full", "{report:#}");
    assert_eq!(
        link["target"],
        format!("link to localhost:{}", cluster.port()),
        "{report:#}"
    );

    // The wrong CA: no catalog from the database, the snapshot runs.
    let wrong = url(&pki.other_ca_pem());
    let gateway = Gateway::start_with_database(&dir, &wrong, NO_KINESIS, REPORT_EVERY_SECOND, &[]);
    gateway.wait_log("the gateway running from its snapshot", |log| {
        log.contains("running from the snapshot") && log.contains("UnknownIssuer")
    });
    wait_until("broker 1 connected from the snapshot", WAIT, || {
        let status = gateway.status();
        status["brokers"].as_array().is_some_and(|brokers| {
            brokers
                .iter()
                .any(|b| b["broker_id"] == 1 && b["state"] == "connected")
        })
    });
    assert_eq!(gateway.terminate(), Some(0));

    let (report, _) = check_json(&dir, &wrong);
    let link = database_check(&report);
    assert_eq!(link["ok"], false, "{report:#}");
    assert_eq!(link["kind"], "tls", "{report:#}");
    assert!(
        link["detail"].as_str().unwrap().contains("UnknownIssuer"),
        "{report:#}"
    );
}

/// A cluster without TLS, password (cleartext) authentication, reachable
/// on loopback and on a non-loopback address of this machine.
#[test]
fn without_tls_on_the_server_and_the_cleartext_password_rule() {
    let ip = non_loopback_ipv4();
    let cluster = PgCluster::start(ClusterSetup {
        tls: None,
        hba: &format!("host all all 127.0.0.1/32 password\nhost all all {ip}/32 password"),
        listen: &format!("127.0.0.1,{ip}"),
    });
    const PASSWORD: &str = "it-s3cret-pw";
    cluster.execute(&format!("ALTER ROLE postgres PASSWORD '{PASSWORD}'"));
    cluster.apply_catalog_schema();
    let port = cluster.port();
    let url = |host: &str, app: &str, params: &str| {
        format!(
            "postgres://postgres:{PASSWORD}@{host}:{port}/postgres?application_name={app}&{params}"
        )
    };

    // Another machine with a password: prefer (the default, and explicit) and
    // allow would go on unencrypted, so they refuse before any password is sent.
    for params in ["", "sslmode=prefer", "sslmode=allow"] {
        let message = assert_tls_failure(&url(&ip.to_string(), "mkb-refused", params), "sslmode=");
        assert!(
            message.contains("server does not support TLS")
                && message.contains("sslmode=disable to accept an unencrypted link")
                && !message.contains(PASSWORD),
            "{params}: {message}"
        );
    }
    assert!(
        !cluster.log().contains("application_name=mkb-refused"),
        "no startup packet reached the server:\n{}",
        cluster.log()
    );

    // require: fails, the server has no TLS.
    assert_tls_failure(
        &url("127.0.0.1", "mkb-require", "sslmode=require"),
        "server does not support TLS",
    );

    // This machine: prefer goes on unencrypted, as libpq does.
    let (_client, link) =
        postgres::connect(&Secret::new(url("127.0.0.1", "mkb-prefer", "")), None).unwrap();
    assert_eq!(link, Link::Unencrypted);
    assert_eq!(cluster.ssl_of("mkb-prefer"), vec![(false, None)]);

    // An explicit sslmode=disable to the other address: taken; `check` says
    // so, and the gateway warns once.
    let other = |app: &str| url(&ip.to_string(), app, "sslmode=disable");
    assert_eq!(connect(&other("mkb-disable")), Ok(Link::Unencrypted));
    let dir = TempDir::new("pg-plain-check");
    let (report, _) = check_json(&dir, &other("mkb-check"));
    let link = database_check(&report);
    assert_eq!(link["ok"], true, "{report:#}");
    assert_eq!(link["detail"], "unencrypted", "{report:#}");
    let gateway = Gateway::start_with_database(
        &dir,
        &other("mkb-gw"),
        NO_KINESIS,
        "max_bytes = \"64MiB\"",
        &[],
    );
    gateway.wait_log("the catalog read", |log| log.contains("no active brokers"));
    let log = gateway.log();
    assert_eq!(
        log.matches("is not encrypted").count(),
        1,
        "one warning:\n{log}"
    );
    assert!(log.contains("catalog: database link: unencrypted"), "{log}");
    assert!(!log.contains(PASSWORD), "{log}");
    assert_eq!(gateway.terminate(), Some(0));

    // And the refusal as `check` reports it.
    let (report, stderr) = check_json(&dir, &url(&ip.to_string(), "mkb-check", ""));
    let link = database_check(&report);
    assert_eq!(link["kind"], "tls", "{report:#}");
    assert!(!report.to_string().contains(PASSWORD), "{report:#}");
    assert!(!stderr.contains(PASSWORD), "{stderr}");
}

/// The machine's server has `ssl = on` with a self-signed certificate:
/// prefer (the default) encrypts without verifying, disable does not encrypt.
#[test]
fn prefer_and_disable_against_the_machines_server() {
    let db = TestDb::new();
    let with = |params: &str| format!("{}?{params}", db.url());
    let (_prefer, link) = postgres::connect(
        &Secret::new(with("application_name=mkb-machine-prefer")),
        None,
    )
    .unwrap();
    assert!(
        matches!(
            link,
            Link::Tls {
                verify: Verify::Nothing,
                ..
            }
        ),
        "{link}"
    );
    let (_disable, link) = postgres::connect(
        &Secret::new(with("application_name=mkb-machine-disable&sslmode=disable")),
        None,
    )
    .unwrap();
    assert_eq!(link, Link::Unencrypted);
    let mut admin = db.client();
    let ssl_of = |admin: &mut ::postgres::Client, app: &str| -> Vec<bool> {
        admin
            .query(
                "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
                 WHERE a.application_name = $1",
                &[&app],
            )
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect()
    };
    assert_eq!(ssl_of(&mut admin, "mkb-machine-prefer"), vec![true]);
    assert_eq!(ssl_of(&mut admin, "mkb-machine-disable"), vec![false]);
}
