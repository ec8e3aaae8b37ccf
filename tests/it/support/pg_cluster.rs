//! A throw-away PostgreSQL cluster on a free port, for the TLS tests: its own
//! `postgresql.conf` (TLS on or off) and `pg_hba.conf`, stopped and removed on drop.
//!
//! Made with the machine's `initdb`/`pg_ctl` (the newest under
//! `/usr/lib/postgresql/*/bin`), run as user `postgres` when the tests run as
//! root (PostgreSQL refuses to run as root). The data directory lives under
//! `/tmp`, which that user can reach. Start-up takes a second or two.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use postgres::{Client, NoTls};

use super::tls::TestPki;
use super::{free_port, wait_until};

/// What to start.
pub struct ClusterSetup<'a> {
    /// `Some`: `ssl = on` with the PKI's `server.pem`, and its `ca.pem` for
    /// client certificates; `None`: `ssl = off`.
    pub tls: Option<&'a TestPki>,
    /// The `host`/`hostssl` lines of `pg_hba.conf`; local socket access is always `trust`.
    pub hba: &'a str,
    /// `listen_addresses`.
    pub listen: &'a str,
}

pub struct PgCluster {
    dir: PathBuf,
    port: u16,
    bin: PathBuf,
}

impl PgCluster {
    /// initdb, configure, start; waits until it accepts connections.
    pub fn start(setup: ClusterSetup<'_>) -> PgCluster {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = PathBuf::from(format!("/tmp/mkb-pg-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the cluster dir");
        let cluster = PgCluster {
            dir,
            port: free_port(),
            bin: postgres_bin(),
        };
        cluster.chown(&cluster.dir);
        cluster.run(
            "initdb",
            &[
                "-D",
                &cluster.data().to_string_lossy(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
                "--no-instructions",
            ],
        );
        let mut conf = format!(
            "listen_addresses = '{}'\nport = {}\nunix_socket_directories = '{}'\n\
             fsync = off\nmax_connections = 20\nshared_buffers = 16MB\nlog_connections = on\n",
            setup.listen,
            cluster.port,
            cluster.dir.display()
        );
        match setup.tls {
            Some(pki) => {
                for (from, to) in [
                    (pki.server_pem(), "server.pem"),
                    (pki.server_key(), "server.key"),
                    (pki.ca_pem(), "ca.pem"),
                ] {
                    let path = cluster.data().join(to);
                    std::fs::copy(&from, &path).expect("copy the server certificate");
                    cluster.chown(&path);
                }
                std::fs::set_permissions(
                    cluster.data().join("server.key"),
                    std::os::unix::fs::PermissionsExt::from_mode(0o600),
                )
                .expect("chmod server.key");
                conf.push_str(
                    "ssl = on\nssl_cert_file = 'server.pem'\nssl_key_file = 'server.key'\n\
                     ssl_ca_file = 'ca.pem'\n",
                );
            }
            None => conf.push_str("ssl = off\n"),
        }
        append(&cluster.data().join("postgresql.conf"), &conf);
        std::fs::write(
            cluster.data().join("pg_hba.conf"),
            format!("local all all trust\n{}\n", setup.hba),
        )
        .expect("write pg_hba.conf");
        cluster.run(
            "pg_ctl",
            &[
                "-D",
                &cluster.data().to_string_lossy(),
                "-l",
                &cluster.dir.join("server.log").to_string_lossy(),
                "-w",
                "-t",
                "30",
                "start",
            ],
        );
        wait_until(
            "the cluster accepts connections",
            Duration::from_secs(30),
            || cluster.try_admin().is_ok(),
        );
        cluster
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A superuser connection over the Unix socket (trust, never TLS).
    pub fn admin(&self) -> Client {
        self.try_admin().expect("connect to the test cluster")
    }

    fn try_admin(&self) -> Result<Client, postgres::Error> {
        Client::connect(
            &format!(
                "host={} port={} user=postgres dbname=postgres",
                self.dir.display(),
                self.port
            ),
            NoTls,
        )
    }

    /// Runs SQL statements as the superuser.
    pub fn execute(&self, sql: &str) {
        self.admin()
            .batch_execute(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// The catalog tables, triggers and the status table, in database `postgres`.
    pub fn apply_catalog_schema(&self) {
        for sql in [
            include_str!("../../../buffer-schema/catalog/0001_iot_data.sql"),
            include_str!("../../../buffer-schema/catalog/0002_notify_trigger.sql"),
            include_str!("../../../buffer-schema/catalog/0003_broker_options.sql"),
            include_str!("../../../buffer-schema/catalog/0004_connection_status.sql"),
        ] {
            self.execute(sql);
        }
    }

    /// `(ssl, version)` of every session whose application_name is `name`.
    pub fn ssl_of(&self, application_name: &str) -> Vec<(bool, Option<String>)> {
        self.admin()
            .query(
                "SELECT s.ssl, s.version FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
                 WHERE a.application_name = $1",
                &[&application_name],
            )
            .expect("read pg_stat_ssl")
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect()
    }

    /// The server's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn chown(&self, path: &Path) {
        if is_root() {
            let status = Command::new("chown")
                .arg("postgres:postgres")
                .arg(path)
                .status()
                .expect("run chown");
            assert!(status.success(), "chown postgres {}", path.display());
        }
    }

    /// `tool` from the PostgreSQL bin dir, as user postgres when we are root.
    fn run(&self, tool: &str, args: &[&str]) {
        let program = self.bin.join(tool);
        let mut command = if is_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&program);
            command
        } else {
            Command::new(&program)
        };
        let output = command
            .args(args)
            .current_dir(&self.dir)
            .output()
            .unwrap_or_else(|error| panic!("run {}: {error}", program.display()));
        assert!(
            output.status.success(),
            "{tool} {args:?} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let program = self.bin.join("pg_ctl");
        let data = self.data();
        let mut command = if is_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&program);
            command
        } else {
            Command::new(&program)
        };
        let _ = command
            .arg("-D")
            .arg(&data)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The newest `/usr/lib/postgresql/<version>/bin` with an initdb.
fn postgres_bin() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL's server binaries under /usr/lib/postgresql")
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("no /usr/lib/postgresql/*/bin/initdb")
        .1
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    file.write_all(text.as_bytes())
        .unwrap_or_else(|e| panic!("append to {}: {e}", path.display()));
}

/// An IPv4 address of this machine that is not loopback (`hostname -I`), for
/// a link the gateway must treat as crossing the network.
pub fn non_loopback_ipv4() -> std::net::Ipv4Addr {
    let output = Command::new("hostname")
        .arg("-I")
        .output()
        .expect("run hostname -I");
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .filter_map(|word| word.parse::<std::net::Ipv4Addr>().ok())
        .find(|ip| !ip.is_loopback())
        .expect("this test needs a non-loopback IPv4 address on the machine (hostname -I)")
}
