//! A private Mosquitto broker on a free port, killed on drop; and a QoS 1 publisher.
//!
//! Each [`Mosquitto`] writes its own config file into a [`TempDir`] (listeners
//! on 127.0.0.1 only, optionally a password file made with `mosquitto_passwd`,
//! optionally a second, TLS listener), starts `mosquitto -c`, and waits until
//! every port accepts connections. It can be killed and started again on the
//! same ports. Its log is `mosquitto.log` in the temp dir, kept when a test
//! fails.
//!
//! With a [`TlsListener`] the broker has two listeners: the plain one on
//! [`Mosquitto::port`] (tests publish there without TLS) and the TLS one on
//! [`Mosquitto::tls_port`]. `per_listener_settings false`: the password file
//! and `allow_anonymous` apply to both. Client certs, when required, only
//! authenticate the TLS connection; the MQTT username still comes from
//! CONNECT (no `use_identity_as_username`).

use std::fs::File;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, MqttOptions, Outgoing, Packet, QoS};

use super::{free_port, TempDir};

const MOSQUITTO: &str = "/usr/sbin/mosquitto";
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How to set up a broker for [`Mosquitto::start_with`]. `Default` is
/// [`Mosquitto::start`]: anonymous, plain TCP only, a free port.
#[derive(Clone, Debug, Default)]
pub struct BrokerSetup {
    /// Admit only this `(user, password)` (on every listener); `None` lets anyone in.
    pub login: Option<(String, String)>,
    /// Add a TLS listener on [`Mosquitto::tls_port`].
    pub tls: Option<TlsListener>,
    /// The plain listener's port; `None` picks a free one. Lets a test reserve
    /// a port with [`free_port`], leave it dead, and start a broker on it later.
    pub port: Option<u16>,
    /// The TLS listener's port, likewise; ignored without `tls`.
    pub tls_port: Option<u16>,
}

/// A TLS listener's files (see [`super::tls::TestPki::tls_listener`]). The
/// files must outlive the broker: a restart reads them again.
#[derive(Clone, Debug)]
pub struct TlsListener {
    /// CA cert(s) that client certs must chain to (`cafile`).
    pub cafile: PathBuf,
    /// The server's cert chain, PEM (`certfile`).
    pub certfile: PathBuf,
    /// The server's private key, PEM (`keyfile`).
    pub keyfile: PathBuf,
    /// Mutual TLS: refuse clients without a cert issued by `cafile` (`require_certificate true`).
    pub require_client_cert: bool,
}

pub struct Mosquitto {
    dir: TempDir,
    port: u16,
    tls_port: Option<u16>,
    config_path: PathBuf,
    child: Option<Child>,
}

impl Mosquitto {
    /// A broker that lets anyone in.
    pub fn start() -> Mosquitto {
        Mosquitto::start_with(BrokerSetup::default())
    }

    /// A broker that admits only `user` with `password`.
    pub fn start_with_password(user: &str, password: &str) -> Mosquitto {
        Mosquitto::start_with(BrokerSetup {
            login: Some((user.into(), password.into())),
            ..BrokerSetup::default()
        })
    }

    /// A broker that lets anyone in, on `port` (e.g. reserved earlier with [`free_port`]).
    pub fn start_on_port(port: u16) -> Mosquitto {
        Mosquitto::start_with(BrokerSetup {
            port: Some(port),
            ..BrokerSetup::default()
        })
    }

    /// A broker set up as `setup` says; returns once every listener accepts
    /// connections, panics with the broker's log if it exits instead.
    pub fn start_with(setup: BrokerSetup) -> Mosquitto {
        let dir = TempDir::new("mosquitto");
        let port = setup.port.unwrap_or_else(free_port);
        let tls_port = setup
            .tls
            .as_ref()
            .map(|_| setup.tls_port.unwrap_or_else(free_port));
        // `per_listener_settings` must come before the listeners; `false` (also
        // the default) makes the security settings below global.
        let mut config = String::from(
            "per_listener_settings false\npersistence false\nlog_dest stderr\nlog_type all\nmax_queued_messages 100000\n",
        );
        if running_as_root() {
            // Mosquitto drops root for the `mosquitto` user, who could not read our files.
            config.push_str("user root\n");
        }
        match &setup.login {
            None => config.push_str("allow_anonymous true\n"),
            Some((user, password)) => {
                let password_path = dir.join("passwords");
                let status = Command::new("mosquitto_passwd")
                    .args(["-b", "-c"])
                    .arg(&password_path)
                    .args([user, password])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .expect("run mosquitto_passwd");
                assert!(status.success(), "mosquitto_passwd failed: {status}");
                config.push_str(&format!(
                    "allow_anonymous false\npassword_file {}\n",
                    password_path.display()
                ));
            }
        }
        config.push_str(&format!("listener {port} 127.0.0.1\n"));
        if let (Some(tls), Some(tls_port)) = (&setup.tls, tls_port) {
            // Everything after a `listener` line configures that listener.
            config.push_str(&format!(
                "listener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate {}\n",
                tls.cafile.display(),
                tls.certfile.display(),
                tls.keyfile.display(),
                tls.require_client_cert,
            ));
        }
        let config_path = dir.join("mosquitto.conf");
        std::fs::write(&config_path, config).expect("write mosquitto.conf");
        let mut mosquitto = Mosquitto {
            dir,
            port,
            tls_port,
            config_path,
            child: None,
        };
        mosquitto.spawn();
        mosquitto
    }

    /// The plain (non-TLS) listener's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The TLS listener's port; panics if the broker was started without one.
    pub fn tls_port(&self) -> u16 {
        self.tls_port.unwrap_or_else(|| {
            panic!(
                "Mosquitto on port {} has no TLS listener: start it with Mosquitto::start_with(BrokerSetup {{ tls: Some(..), .. }})",
                self.port
            )
        })
    }

    /// Everything the broker logged so far (`log_type all`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default()
    }

    /// Kills the broker (SIGKILL) and reaps it; its port stops accepting.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the broker again on the same port(s), after [`Mosquitto::kill`].
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    fn spawn(&mut self) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("mosquitto.log"))
            .expect("open mosquitto.log");
        let child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(&self.config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log file"))
            .stderr(log)
            .spawn()
            .expect("start mosquitto");
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        let ports: Vec<u16> = std::iter::once(self.port).chain(self.tls_port).collect();
        loop {
            if ports
                .iter()
                .all(|&port| TcpStream::connect(("127.0.0.1", port)).is_ok())
            {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                let log =
                    std::fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default();
                panic!("mosquitto on port(s) {ports:?} exited with {status}:\n{log}");
            }
            assert!(
                Instant::now() < deadline,
                "mosquitto did not accept connections on port(s) {ports:?} within {START_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|status| {
            status
                .lines()
                .any(|line| line.starts_with("Uid:") && line.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Publishes `n` QoS 1 messages `{tag}-{i}` to `topic` on the broker at `port`
/// and returns once the broker has acknowledged every one.
pub fn publish(port: u16, topic: &str, tag: &str, n: usize) {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let id = format!(
        "it-publisher-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    );
    let options = MqttOptions::new(id, "127.0.0.1", port);
    let (client, mut connection) = Client::new(options, n + 2);
    for i in 0..n {
        client
            .publish(topic, QoS::AtLeastOnce, false, format!("{tag}-{i}"))
            .expect("queue a publish");
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut n_acks = 0;
    let mut disconnecting = false;
    loop {
        if n_acks == n && !disconnecting {
            client.disconnect().expect("queue the disconnect");
            disconnecting = true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "publisher on port {port}: {n_acks} of {n} acks before the deadline"
        );
        match connection.recv_timeout(left) {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => n_acks += 1,
            Ok(Ok(Event::Outgoing(Outgoing::Disconnect))) => return,
            Ok(Ok(_)) => {}
            Ok(Err(error)) => panic!("publisher on port {port}: {error}"),
            Err(error) => panic!("publisher on port {port}: {error:?}"),
        }
    }
}

/// Publishes `n` messages `{tag}-{i}` at `qos` with `mosquitto_pub -l` (one
/// connection, one message a line), logged in as `login` if given; returns once
/// the broker has taken them all. For QoS 2 and logins, which [`publish`] does not do.
pub fn publish_lines(
    port: u16,
    qos: u8,
    login: Option<(&str, &str)>,
    topic: &str,
    tag: &str,
    n: usize,
) {
    use std::io::Write;
    let mut command = Command::new("timeout");
    command
        .args(["30", "mosquitto_pub", "-h", "127.0.0.1", "-l"])
        .args(["-p", &port.to_string(), "-t", topic, "-q", &qos.to_string()]);
    if let Some((user, password)) = login {
        command.args(["-u", user, "-P", password]);
    }
    let mut publisher = command
        .stdin(Stdio::piped())
        .spawn()
        .expect("start mosquitto_pub");
    let mut lines = publisher.stdin.take().expect("mosquitto_pub stdin");
    for i in 0..n {
        writeln!(lines, "{tag}-{i}").expect("write to mosquitto_pub");
    }
    drop(lines);
    let status = publisher.wait().expect("wait for mosquitto_pub");
    assert!(status.success(), "mosquitto_pub on port {port}: {status}");
}

/// Publishes one `payload` at QoS 1 on `topic` with `mosquitto_pub`, from
/// stdin (any bytes, any size).
pub fn publish_payload(port: u16, topic: &str, payload: &[u8]) {
    use std::io::Write;
    let mut child = std::process::Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-q",
            "1",
            "-t",
            topic,
            "-s",
        ])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("mosquitto_pub");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(payload)
        .expect("write the payload");
    assert!(child.wait().expect("mosquitto_pub ran").success());
}
