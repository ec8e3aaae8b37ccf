//! A private Mosquitto broker on a free port, killed on drop; and a QoS 1 publisher.
//!
//! Each [`Mosquitto`] writes its own config file into a [`TempDir`] (listener on
//! 127.0.0.1 only, optionally a password file made with `mosquitto_passwd`),
//! starts `mosquitto -c`, and waits until the port accepts connections. It can
//! be killed and started again on the same port. Its log is `mosquitto.log` in
//! the temp dir, kept when a test fails.

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

pub struct Mosquitto {
    dir: TempDir,
    port: u16,
    config_path: PathBuf,
    child: Option<Child>,
}

impl Mosquitto {
    /// A broker that lets anyone in.
    pub fn start() -> Mosquitto {
        Mosquitto::with_config(None)
    }

    /// A broker that admits only `user` with `password`.
    pub fn start_with_password(user: &str, password: &str) -> Mosquitto {
        Mosquitto::with_config(Some((user, password)))
    }

    fn with_config(login: Option<(&str, &str)>) -> Mosquitto {
        let dir = TempDir::new("mosquitto");
        let port = free_port();
        let mut config = format!(
            "listener {port} 127.0.0.1\npersistence false\nlog_dest stderr\nlog_type all\nmax_queued_messages 100000\n"
        );
        if running_as_root() {
            // Mosquitto drops root for the `mosquitto` user, who could not read our files.
            config.push_str("user root\n");
        }
        match login {
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
        let config_path = dir.join("mosquitto.conf");
        std::fs::write(&config_path, config).expect("write mosquitto.conf");
        let mut mosquitto = Mosquitto {
            dir,
            port,
            config_path,
            child: None,
        };
        mosquitto.spawn();
        mosquitto
    }

    pub fn port(&self) -> u16 {
        self.port
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

    /// Starts the broker again on the same port, after [`Mosquitto::kill`].
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
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                let log =
                    std::fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default();
                panic!(
                    "mosquitto on port {} exited with {status}:\n{log}",
                    self.port
                );
            }
            assert!(
                Instant::now() < deadline,
                "mosquitto did not accept connections on port {} within {START_TIMEOUT:?}",
                self.port
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
