//! The TLS fixtures themselves: the openssl-made [`TestPki`] and Mosquitto
//! with a TLS listener, mutual TLS, passwords and a chosen port. Checked with
//! `mosquitto_pub`/`mosquitto_sub`, `openssl` and a bare rustls client (what
//! the gateway's TLS stack thinks of the certs), never with the gateway.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::support::mosquitto::{BrokerSetup, Mosquitto};
use crate::support::tls::TestPki;
use crate::support::*;

const WAIT: Duration = Duration::from_secs(10);

/// `mosquitto_pub` (or `_sub`) gets this long before `timeout` kills it (exit 124).
const CLIENT_TIMEOUT_SECS: &str = "10";

/// The outcome of one `mosquitto_pub`.
struct Published {
    output: Output,
    command: String,
}

impl Published {
    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    #[track_caller]
    fn assert_ok(&self) {
        assert!(
            self.output.status.success(),
            "expected success: {}\n{}\n{}",
            self.command,
            self.output.status,
            self.stderr()
        );
    }

    /// Failed quickly (not killed by `timeout`), saying `why` on stderr.
    #[track_caller]
    fn assert_refused(&self, why: &str) {
        assert!(
            !self.output.status.success() && self.output.status.code() != Some(124),
            "expected a refusal ({why}): {}\n{}\n{}",
            self.command,
            self.output.status,
            self.stderr()
        );
        assert!(
            self.stderr().contains(why),
            "expected {why:?} on stderr: {}\n{}",
            self.command,
            self.stderr()
        );
    }
}

/// One QoS 1 `mosquitto_pub` of `x` to topic `t`: exits 0 only once the broker acked it.
fn mosquitto_pub(host: &str, port: u16, extra: &[&str]) -> Published {
    let port = port.to_string();
    let mut args = vec![
        CLIENT_TIMEOUT_SECS,
        "mosquitto_pub",
        "-h",
        host,
        "-p",
        &port,
        "-q",
        "1",
        "-t",
        "t",
        "-m",
        "x",
    ];
    args.extend_from_slice(extra);
    let output = Command::new("timeout")
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .expect("run timeout mosquitto_pub");
    Published {
        output,
        command: format!("timeout {}", args.join(" ")),
    }
}

fn path(p: std::path::PathBuf) -> String {
    p.to_string_lossy().into_owned()
}

/// Waits until the broker's log holds `needle` `n` times or more.
#[track_caller]
fn wait_log(broker: &Mosquitto, needle: &str, n: usize) {
    let deadline = Instant::now() + WAIT;
    loop {
        let log = broker.log();
        if log.matches(needle).count() >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "broker log never had {needle:?} {n} times:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn pki(name: &str) -> (TempDir, TestPki) {
    let dir = TempDir::new(name);
    let pki = TestPki::new(dir.path());
    (dir, pki)
}

fn tls_broker(pki: &TestPki, require_client_cert: bool) -> Mosquitto {
    Mosquitto::start_with(BrokerSetup {
        tls: Some(pki.tls_listener(require_client_cert)),
        ..BrokerSetup::default()
    })
}

fn openssl_text(pki: &TestPki, cert: &str) -> String {
    let output = Command::new("/usr/bin/openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(pki.path(cert))
        .output()
        .expect("run openssl x509");
    assert!(output.status.success(), "openssl x509 -text {cert}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn openssl_verify(pki: &TestPki, ca: &str, cert: &str) -> bool {
    Command::new("/usr/bin/openssl")
        .args(["verify", "-x509_strict", "-CAfile"])
        .arg(pki.path(ca))
        .arg(pki.path(cert))
        .output()
        .expect("run openssl verify")
        .status
        .success()
}

#[test]
fn pki_has_v3_certs_with_the_right_extensions() -> TestResult {
    let dir = TempDir::new("pki");
    let started = Instant::now();
    let pki = TestPki::new(dir.path());
    eprintln!("TestPki::new took {:?}", started.elapsed());

    for key in ["ca.key", "server.key", "client.key", "other-client.key"] {
        assert!(
            pki.read(key).starts_with("-----BEGIN PRIVATE KEY-----"),
            "{key} is PKCS#8"
        );
    }
    for cert in [
        "ca.pem",
        "server.pem",
        "client.pem",
        "other-ca.pem",
        "other-client.pem",
    ] {
        let text = openssl_text(&pki, cert);
        assert!(text.contains("Version: 3 (0x2)"), "{cert} is v3:\n{text}");
        assert!(
            text.contains("ecdsa-with-SHA256"),
            "{cert} SHA-256:\n{text}"
        );
    }
    for ca in ["ca.pem", "other-ca.pem"] {
        let text = openssl_text(&pki, ca);
        assert!(text.contains("CA:TRUE"), "{ca}:\n{text}");
        assert!(text.contains("Certificate Sign"), "{ca}:\n{text}");
    }
    let server = openssl_text(&pki, "server.pem");
    assert!(server.contains("CA:FALSE"), "{server}");
    assert!(
        server.contains("DNS:localhost, IP Address:127.0.0.1"),
        "{server}"
    );
    assert!(server.contains("TLS Web Server Authentication"), "{server}");
    for client in ["client.pem", "other-client.pem"] {
        let text = openssl_text(&pki, client);
        assert!(text.contains("CA:FALSE"), "{client}:\n{text}");
        assert!(
            text.contains("Subject: CN = gateway-test"),
            "{client}:\n{text}"
        );
        assert!(
            text.contains("TLS Web Client Authentication"),
            "{client}:\n{text}"
        );
    }
    // Valid for 10 days from now (give or take the clock's second).
    let end = Command::new("/usr/bin/openssl")
        .args(["x509", "-noout", "-checkend"])
        .arg((9 * 24 * 3600).to_string())
        .arg("-in")
        .arg(pki.server_pem())
        .output()?
        .status;
    assert!(end.success(), "server.pem still valid in 9 days");
    let end = Command::new("/usr/bin/openssl")
        .args(["x509", "-noout", "-checkend"])
        .arg((11 * 24 * 3600).to_string())
        .arg("-in")
        .arg(pki.server_pem())
        .output()?
        .status;
    assert!(!end.success(), "server.pem expired in 11 days");

    assert!(openssl_verify(&pki, "ca.pem", "server.pem"));
    assert!(openssl_verify(&pki, "ca.pem", "client.pem"));
    assert!(openssl_verify(&pki, "other-ca.pem", "other-client.pem"));
    assert!(!openssl_verify(&pki, "ca.pem", "other-client.pem"));
    assert!(!openssl_verify(&pki, "other-ca.pem", "server.pem"));
    Ok(())
}

#[test]
fn tls_listener_verifies_against_the_ca_and_shares_the_broker() -> TestResult {
    let (_dir, pki) = pki("tls-listener");
    let broker = tls_broker(&pki, false);
    assert_ne!(broker.port(), broker.tls_port());
    let ca = path(pki.ca_pem());
    let other_ca = path(pki.other_ca_pem());

    // A subscriber on the plain port sees what arrives over TLS: one broker.
    let sub = Command::new("timeout")
        .args([
            CLIENT_TIMEOUT_SECS,
            "mosquitto_sub",
            "-h",
            "127.0.0.1",
            "-p",
        ])
        .arg(broker.port().to_string())
        .args(["-t", "t", "-C", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    wait_log(&broker, "Received SUBSCRIBE", 1);

    mosquitto_pub("localhost", broker.tls_port(), &["--cafile", &ca]).assert_ok();
    let delivered = wait_child(sub)?;
    assert_eq!(String::from_utf8_lossy(&delivered.stdout), "x\n");

    // The IP SAN.
    mosquitto_pub("127.0.0.1", broker.tls_port(), &["--cafile", &ca]).assert_ok();
    // A CA that did not issue the server cert.
    mosquitto_pub("localhost", broker.tls_port(), &["--cafile", &other_ca])
        .assert_refused("TLS error");
    wait_log(&broker, "tlsv1 alert unknown ca", 1);
    // Plain MQTT on the TLS port gets nowhere; TLS on the plain port neither.
    mosquitto_pub("127.0.0.1", broker.tls_port(), &[]).assert_refused("");
    mosquitto_pub("localhost", broker.port(), &["--cafile", &ca]).assert_refused("");
    // And plain MQTT on the plain port still works.
    mosquitto_pub("127.0.0.1", broker.port(), &[]).assert_ok();
    Ok(())
}

/// Waits for `child` with a deadline (it runs under `timeout` anyway).
fn wait_child(mut child: Child) -> std::io::Result<Output> {
    let deadline = Instant::now() + WAIT + WAIT;
    while child.try_wait()?.is_none() {
        assert!(Instant::now() < deadline, "child did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output()
}

#[test]
fn mutual_tls_requires_a_client_cert_from_the_ca() -> TestResult {
    let (_dir, pki) = pki("mtls");
    let broker = tls_broker(&pki, true);
    let ca = path(pki.ca_pem());
    let (cert, key) = (path(pki.client_pem()), path(pki.client_key()));
    let (other_cert, other_key) = (path(pki.other_client_pem()), path(pki.other_client_key()));
    let port = broker.tls_port();

    mosquitto_pub("localhost", port, &["--cafile", &ca]).assert_refused("");
    wait_log(&broker, "peer did not return a certificate", 1);

    mosquitto_pub(
        "localhost",
        port,
        &["--cafile", &ca, "--cert", &other_cert, "--key", &other_key],
    )
    .assert_refused("");
    wait_log(&broker, "certificate verify failed", 1);

    mosquitto_pub(
        "localhost",
        port,
        &["--cafile", &ca, "--cert", &cert, "--key", &key],
    )
    .assert_ok();
    mosquitto_pub(
        "127.0.0.1",
        port,
        &["--cafile", &ca, "--cert", &cert, "--key", &key],
    )
    .assert_ok();
    wait_log(&broker, "Received PUBLISH", 2);
    // The cert does not become the username (no use_identity_as_username).
    assert!(!broker.log().contains("gateway-test"), "{}", broker.log());
    // The plain listener asks for no cert.
    mosquitto_pub("127.0.0.1", broker.port(), &[]).assert_ok();
    Ok(())
}

#[test]
fn password_applies_to_the_tls_listener_too() -> TestResult {
    let (_dir, pki) = pki("tls-password");
    let broker = Mosquitto::start_with(BrokerSetup {
        login: Some(("gateway".into(), "s3cret".into())),
        tls: Some(pki.tls_listener(true)),
        ..BrokerSetup::default()
    });
    let ca = path(pki.ca_pem());
    let (cert, key) = (path(pki.client_pem()), path(pki.client_key()));
    let tls = ["--cafile", &ca, "--cert", &cert, "--key", &key];
    let with = |user: &[&'static str]| -> Vec<&str> {
        let mut args = tls.to_vec();
        args.extend_from_slice(user);
        args
    };

    mosquitto_pub(
        "localhost",
        broker.tls_port(),
        &with(&["-u", "gateway", "-P", "wrong"]),
    )
    .assert_refused("not authorised");
    mosquitto_pub("localhost", broker.tls_port(), &with(&[])).assert_refused("not authorised");
    mosquitto_pub(
        "localhost",
        broker.tls_port(),
        &with(&["-u", "gateway", "-P", "s3cret"]),
    )
    .assert_ok();
    // Same rules on the plain listener.
    mosquitto_pub(
        "127.0.0.1",
        broker.port(),
        &["-u", "gateway", "-P", "wrong"],
    )
    .assert_refused("not authorised");
    mosquitto_pub(
        "127.0.0.1",
        broker.port(),
        &["-u", "gateway", "-P", "s3cret"],
    )
    .assert_ok();
    Ok(())
}

#[test]
fn start_on_port_brings_a_dead_port_to_life() -> TestResult {
    let port = free_port();
    let refused = TcpStream::connect(("127.0.0.1", port)).expect_err("nobody listens yet");
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    mosquitto_pub("127.0.0.1", port, &[]).assert_refused("Connection refused");

    let broker = Mosquitto::start_on_port(port);
    assert_eq!(broker.port(), port);
    TcpStream::connect(("127.0.0.1", port))?;
    mosquitto_pub("127.0.0.1", port, &[]).assert_ok();
    Ok(())
}

#[test]
fn restart_keeps_both_ports() -> TestResult {
    let (_dir, pki) = pki("tls-restart");
    let (port, tls_port) = (free_port(), free_port());
    let mut broker = Mosquitto::start_with(BrokerSetup {
        tls: Some(pki.tls_listener(false)),
        port: Some(port),
        tls_port: Some(tls_port),
        ..BrokerSetup::default()
    });
    assert_eq!((broker.port(), broker.tls_port()), (port, tls_port));
    let ca = path(pki.ca_pem());

    broker.kill();
    for p in [port, tls_port] {
        let refused = TcpStream::connect(("127.0.0.1", p)).expect_err("killed");
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    }
    broker.restart();
    assert_eq!((broker.port(), broker.tls_port()), (port, tls_port));
    mosquitto_pub("localhost", tls_port, &["--cafile", &ca]).assert_ok();
    mosquitto_pub("127.0.0.1", port, &[]).assert_ok();
    Ok(())
}

#[test]
#[should_panic(expected = "has no TLS listener")]
fn tls_port_panics_without_a_tls_listener() {
    Mosquitto::start().tls_port();
}

/// A rustls client (ring, like the gateway) against the mutual-TLS listener:
/// webpki must accept the whole PKI, and reject the other CA's certs.
#[test]
fn rustls_accepts_the_pki() -> TestResult {
    let (_dir, pki) = pki("tls-rustls");
    let broker = tls_broker(&pki, true);
    let port = broker.tls_port();
    let client = (pki.client_pem(), pki.client_key());
    let other = (pki.other_client_pem(), pki.other_client_key());

    for host in ["localhost", "127.0.0.1"] {
        let connack = rustls_connect(port, host, &pki.ca_pem(), &client)?;
        assert_eq!(
            connack,
            [0x20, 0x02, 0x00, 0x00],
            "CONNACK accepted via {host}"
        );
    }

    let error = rustls_connect(port, "localhost", &pki.other_ca_pem(), &client)
        .expect_err("a server cert from an unknown issuer");
    assert!(
        matches!(
            rustls_error(&error),
            Some(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer
            ))
        ),
        "{error:?}"
    );

    let error = rustls_connect(port, "localhost", &pki.ca_pem(), &other)
        .expect_err("a client cert from the other CA");
    assert!(
        matches!(
            rustls_error(&error),
            Some(rustls::Error::AlertReceived(
                rustls::AlertDescription::UnknownCA
            ))
        ),
        "{error:?}"
    );
    Ok(())
}

fn rustls_error(error: &std::io::Error) -> Option<&rustls::Error> {
    error.get_ref()?.downcast_ref::<rustls::Error>()
}

/// TLS to `127.0.0.1:port` naming the server `host`, MQTT 3.1.1 CONNECT, returns the 4-byte CONNACK.
fn rustls_connect(
    port: u16,
    host: &str,
    ca: &std::path::Path,
    (cert, key): &(std::path::PathBuf, std::path::PathBuf),
) -> std::io::Result<[u8; 4]> {
    let mut roots = rustls::RootCertStore::empty();
    for der in CertificateDer::pem_file_iter(ca).expect("read the CA") {
        roots.add(der.expect("parse the CA")).expect("add the CA");
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .expect("read the client cert")
        .collect::<Result<_, _>>()
        .expect("parse the client cert");
    let key = PrivateKeyDer::from_pem_file(key).expect("read the client key");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .expect("client cert and key");
    let name = ServerName::try_from(host.to_string()).expect("server name");
    let connection =
        rustls::ClientConnection::new(Arc::new(config), name).expect("client connection");
    let tcp = TcpStream::connect(("127.0.0.1", port))?;
    tcp.set_read_timeout(Some(WAIT))?;
    tcp.set_write_timeout(Some(WAIT))?;
    let mut tls = rustls::StreamOwned::new(connection, tcp);
    // CONNECT: MQTT 3.1.1, clean session, keep-alive 60 s, client id "r".
    tls.write_all(&[
        0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 1, b'r',
    ])?;
    tls.flush()?;
    let mut connack = [0u8; 4];
    tls.read_exact(&mut connack)?;
    Ok(connack)
}
