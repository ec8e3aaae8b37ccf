//! The gateway under systemd: the notify protocol (READY, WATCHDOG, STOPPING)
//! against a socket standing in for systemd, the watchdog withheld while a
//! stage is wedged, and the shipped unit and sysusers files checked by
//! systemd's own tools.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::gateway::Gateway;
use crate::support::mosquitto::{publish, Mosquitto};
use crate::support::postgres::TestDb;
use crate::support::*;

/// Nothing listens here: these tests never get as far as sending a record.
const NO_KINESIS: &str = "http://127.0.0.1:9";

/// Stands in for systemd's notify socket.
struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
}

impl NotifySocket {
    fn bind(dir: &TempDir) -> NotifySocket {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("set a read timeout");
        NotifySocket { socket, path }
    }

    /// What systemd would put in the service's environment.
    fn env(&self, watchdog: Duration) -> Vec<(&'static str, String)> {
        vec![
            ("NOTIFY_SOCKET", self.path.display().to_string()),
            ("WATCHDOG_USEC", watchdog.as_micros().to_string()),
        ]
    }

    /// Every message that arrives within `window` (none may be missed: this is
    /// how the tests see that pings stopped).
    fn collect_for(&self, window: Duration) -> Vec<String> {
        let deadline = Instant::now() + window;
        let mut messages = Vec::new();
        while Instant::now() < deadline {
            messages.extend(self.next());
        }
        messages
    }

    /// Waits until `count` messages equal to `what` have arrived.
    fn wait_for(&self, what: &str, count: usize) {
        let mut seen = 0;
        wait_until(
            &format!("{count} × {what}"),
            Duration::from_secs(30),
            || {
                while let Some(message) = self.next() {
                    seen += usize::from(message == what);
                }
                seen >= count
            },
        );
    }

    fn next(&self) -> Option<String> {
        let mut buffer = [0; 256];
        let n = self.socket.recv(&mut buffer).ok()?;
        Some(String::from_utf8_lossy(&buffer[..n]).into_owned())
    }
}

/// Issue 6: READY=1 once started, WATCHDOG=1 while healthy, STOPPING=1 on SIGTERM.
#[test]
fn notifies_ready_pings_the_watchdog_and_says_stopping() {
    let dir = TempDir::new("systemd-notify");
    let db = TestDb::new();
    let notify = NotifySocket::bind(&dir);
    let env = notify.env(Duration::from_millis(400));
    let gateway = Gateway::start_with_env(&dir, &db, NO_KINESIS, "max_bytes = \"8MiB\"", &env);
    notify.wait_for("READY=1", 1);
    notify.wait_for("WATCHDOG=1", 3);
    assert_eq!(gateway.terminate(), Some(0));
    // Everything the gateway sent is queued in the socket by now.
    let rest = notify.collect_for(Duration::from_millis(200));
    assert!(rest.iter().any(|m| m == "STOPPING=1"), "{rest:?}");
}

/// Issue 6: a spool writer that cannot commit (another process holds the
/// database's write lock) stops the watchdog pings, so systemd would restart the
/// gateway; once the lock goes the message is committed and the pings resume.
#[test]
fn a_wedged_spool_writer_withholds_the_watchdog_pings() {
    let dir = TempDir::new("systemd-wedged");
    let db = TestDb::new();
    let broker = Mosquitto::start();
    db.add_broker(1, broker.port());
    db.add_topic(None, "w/#", 1);
    let notify = NotifySocket::bind(&dir);
    let watchdog = Duration::from_secs(1);
    let env = notify.env(watchdog);
    let gateway = Gateway::start_with_env(&dir, &db, NO_KINESIS, "max_bytes = \"8MiB\"", &env);
    notify.wait_for("READY=1", 1);
    gateway.wait_log("broker 1 subscribed", |log| {
        log.contains("connected, subscribed")
    });

    let locker = rusqlite::Connection::open(dir.join("spool.db")).expect("open the spool");
    locker
        .execute_batch("BEGIN EXCLUSIVE")
        .expect("take the write lock");
    publish(broker.port(), "w/x", "wedged", 1);
    gateway.wait_log("the watchdog gives up on the writer", |log| {
        log.contains("spool writer has been stuck")
    });
    // Pings sent before the watchdog logged that are still queued do not count.
    while notify.next().is_some() {}
    let meanwhile = notify.collect_for(watchdog * 3);
    assert!(
        !meanwhile.iter().any(|m| m == "WATCHDOG=1"),
        "pinged while wedged: {meanwhile:?}"
    );

    locker.execute_batch("COMMIT").expect("release the lock");
    drop(locker);
    notify.wait_for("WATCHDOG=1", 1);
    gateway.wait_log("the pings resume", |log| log.contains("pings resume"));
    assert_eq!(gateway.status()["brokers"][0]["spooled"], 1);
    assert_eq!(gateway.terminate(), Some(0));
}

/// `systemd-analyze verify` finds nothing to say about the shipped unit, and
/// its hardening keeps the exposure score low.
#[test]
fn the_unit_file_passes_systemd_analyze() {
    let dir = TempDir::new("systemd-unit");
    let unit = std::fs::read_to_string(repo_path("cross/mqtt-kinesis-bridge.service"))
        .expect("read the unit");
    // verify checks that ExecStart's binary exists: point it at the one just built.
    let unit = unit.replace(
        "/usr/bin/mqtt-kinesis-bridge",
        env!("CARGO_BIN_EXE_mqtt-kinesis-bridge"),
    );
    let path = dir.join("mqtt-kinesis-bridge.service");
    std::fs::write(&path, unit).expect("write the unit");

    let verify = systemd_analyze(&["verify"], &path);
    assert!(verify.status.success(), "{verify:?}");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    assert_eq!(said.trim(), "", "systemd-analyze verify complained");

    let security = systemd_analyze(&["security", "--offline=true"], &path);
    let report = String::from_utf8_lossy(&security.stdout).into_owned();
    let exposure: f64 = report
        .lines()
        .find_map(|line| line.split("Overall exposure level for ").nth(1))
        .and_then(|rest| rest.split(": ").nth(1))
        .and_then(|score| score.split_whitespace().next())
        .and_then(|score| score.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{report}"));
    assert!(exposure <= 2.0, "exposure {exposure}:\n{report}");
}

/// The sysusers file creates the unprivileged user the unit runs as.
#[test]
fn the_sysusers_file_creates_the_service_user() {
    let root = TempDir::new("systemd-sysusers");
    std::fs::create_dir_all(root.join("etc")).expect("create etc");
    let output = Command::new("systemd-sysusers")
        .arg(format!("--root={}", root.path().display()))
        .arg(repo_path("cross/mqtt-kinesis-bridge.sysusers"))
        .output()
        .expect("run systemd-sysusers");
    assert!(output.status.success(), "{output:?}");
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).expect("read passwd");
    let entry = passwd
        .lines()
        .find(|line| line.starts_with("mqtt-kinesis-bridge:"))
        .unwrap_or_else(|| panic!("no user in:\n{passwd}"));
    let fields: Vec<&str> = entry.split(':').collect();
    let uid: u32 = fields[2].parse().expect("numeric uid");
    assert!((1..1000).contains(&uid), "a system user, not root: {entry}");
    assert_eq!(fields[5], "/var/lib/mqtt-kinesis-bridge");
    assert_eq!(fields[6], "/usr/sbin/nologin");
    let unit = std::fs::read_to_string(repo_path("cross/mqtt-kinesis-bridge.service"))
        .expect("read the unit");
    assert!(unit.contains("\nUser=mqtt-kinesis-bridge\n"));
}

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn systemd_analyze(args: &[&str], unit: &Path) -> std::process::Output {
    Command::new("systemd-analyze")
        .args(args)
        .arg(unit)
        .output()
        .expect("run systemd-analyze (Debian's systemd package)")
}
