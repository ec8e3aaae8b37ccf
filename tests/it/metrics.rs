//! Issue 15: the gateway's metrics against real parts: a real Prometheus
//! (Debian's `prometheus` package) scraping `/metrics`, `promtool check
//! metrics` on the exposition and the textfile, `/health` against the
//! watchdog's rule with the spool's write lock held by another process, and
//! hostile clients on the metrics port.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::gateway::Gateway;
use crate::support::kinesis::FakeKinesis;
use crate::support::mosquitto::{publish, Mosquitto};
use crate::support::postgres::TestDb;
use crate::support::*;

/// The `[spool]` keys the harness takes, then a `[metrics]` section.
fn metrics_keys(port: u16, textfile: Option<&Path>) -> String {
    let mut keys = format!("max_bytes = \"8MiB\"\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n");
    if let Some(path) = textfile {
        keys.push_str(&format!(
            "textfile = \"{}\"\ninterval = \"1s\"\n",
            path.display()
        ));
    }
    keys
}

/// An HTTP GET on the gateway's metrics port: (status, body); `None` when
/// the connection fails or closes without an answer.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// `/metrics`, which must answer 200.
fn scrape(port: u16) -> String {
    let mut body = None;
    wait_until("a scrape of /metrics", Duration::from_secs(30), || {
        body = get(port, "/metrics").filter(|(status, _)| *status == 200);
        body.is_some()
    });
    body.unwrap().1
}

/// The value of the sample `series` (name with labels, as printed) in `text`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.parse().ok())
}

/// Every line is a comment or `name{labels} value`: a whole exposition, not a piece.
fn parses(text: &str) -> bool {
    !text.is_empty()
        && text.ends_with('\n')
        && text.lines().all(|line| {
            line.starts_with("# HELP ")
                || line.starts_with("# TYPE ")
                || line.rsplit_once(' ').is_some_and(|(series, value)| {
                    series.starts_with("mqtt_kinesis_bridge_")
                        && (value.parse::<f64>().is_ok() || value == "+Inf" || value == "NaN")
                })
        })
}

/// `promtool check metrics` on `text`: its complaints, if any.
fn promtool_check(text: &str) -> Result<(), String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool (Debian's prometheus package)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() && said.trim().is_empty() {
        Ok(())
    } else {
        Err(format!("{:?}: {said}\n{text}", output.status))
    }
}

/// A real Prometheus scraping the gateway every second; killed on drop.
struct Prometheus {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Prometheus {
    fn start(dir: &TempDir, target_port: u16) -> Prometheus {
        let dir = dir.join("prometheus");
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: mqtt-kinesis-bridge\n    static_configs:\n      \
                 - targets: ['127.0.0.1:{target_port}']\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
            .spawn()
            .expect("run prometheus (Debian's prometheus package)");
        let prometheus = Prometheus { child, port, dir };
        wait_until("prometheus ready", Duration::from_secs(60), || {
            ureq::get(format!("http://127.0.0.1:{port}/-/ready"))
                .call()
                .is_ok()
        });
        prometheus
    }

    /// The instant vector `query` evaluates to: (labels, value) per series.
    fn query(&self, query: &str) -> Vec<(Value, f64)> {
        let answer: Value = ureq::get(format!("http://127.0.0.1:{}/api/v1/query", self.port))
            .query("query", query)
            .call()
            .ok()
            .and_then(|mut response| response.body_mut().read_to_string().ok())
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or(Value::Null);
        answer["data"]["result"]
            .as_array()
            .map(|series| {
                series
                    .iter()
                    .filter_map(|s| {
                        let value = s["value"][1].as_str()?.parse().ok()?;
                        Some((s["metric"].clone(), value))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Issue 15: a real Prometheus scrapes the gateway; the records delivered it
/// reports reach what was sent, per broker; promtool accepts the exposition
/// from /metrics and from the textfile; /health says ok; anything else is 404.
#[test]
fn prometheus_sees_every_record_delivered() {
    let dir = TempDir::new("metrics-prometheus");
    let db = TestDb::new();
    let brokers = [Mosquitto::start(), Mosquitto::start()];
    db.add_broker(1, brokers[0].port());
    db.add_broker(2, brokers[1].port());
    db.add_topic(None, "m/#", 1);
    let kinesis = FakeKinesis::start(vec![]);
    let port = free_port();
    let textfile = dir.join("textfile/mkb.prom");
    let keys = metrics_keys(port, Some(&textfile));
    let gateway = Gateway::start_with(&dir, &db, &kinesis.endpoint(), &keys);
    gateway.wait_log("both brokers subscribed", |log| {
        log.matches("connected, subscribed").count() >= 2
    });
    let prometheus = Prometheus::start(&dir, port);

    publish(brokers[0].port(), "m/a", "one", 40);
    publish(brokers[1].port(), "m/b", "two", 25);
    let mut by_broker = Vec::new();
    wait_until(
        "prometheus reports 65 records delivered",
        Duration::from_secs(60),
        || {
            let total = prometheus.query("sum(mqtt_kinesis_bridge_records_delivered_total)");
            if total.first().map(|(_, value)| *value) != Some(65.0) {
                return false;
            }
            by_broker = prometheus.query("mqtt_kinesis_bridge_records_delivered_total");
            true
        },
    );
    let mut by_broker: Vec<(String, f64)> = by_broker
        .into_iter()
        .map(|(labels, value)| (labels["broker_id"].as_str().unwrap().to_owned(), value))
        .collect();
    by_broker.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        by_broker,
        [("1".to_owned(), 40.0), ("2".to_owned(), 25.0)],
        "prometheus log:\n{}",
        prometheus.log()
    );
    let up = prometheus.query("up{job=\"mqtt-kinesis-bridge\"}");
    assert_eq!(up.first().map(|(_, v)| *v), Some(1.0));

    let text = scrape(port);
    promtool_check(&text).unwrap();
    assert_eq!(
        sample(
            &text,
            "mqtt_kinesis_bridge_records_spooled_total{broker_id=\"1\"}"
        ),
        Some(40.0)
    );
    // Without aggregation one Kinesis record per message.
    assert_eq!(
        sample(&text, "mqtt_kinesis_bridge_kinesis_records_stored_total"),
        Some(65.0)
    );
    assert_eq!(
        sample(&text, "mqtt_kinesis_bridge_kinesis_messages_stored_total"),
        Some(65.0)
    );
    assert_eq!(
        sample(
            &text,
            "mqtt_kinesis_bridge_messages_received_total{broker_id=\"2\"}"
        ),
        Some(25.0)
    );
    assert_eq!(
        sample(
            &text,
            "mqtt_kinesis_bridge_broker_connected{broker_id=\"1\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "mqtt_kinesis_bridge_spool_records"),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &text,
            "mqtt_kinesis_bridge_catalog_source{source=\"database\"}"
        ),
        Some(1.0)
    );
    let requests_ok = sample(
        &text,
        "mqtt_kinesis_bridge_kinesis_requests_total{outcome=\"ok\"}",
    );
    assert!(requests_ok.unwrap() >= 1.0, "{text}");
    assert_eq!(
        sample(
            &text,
            "mqtt_kinesis_bridge_kinesis_request_duration_seconds_count"
        ),
        requests_ok
    );
    assert!(
        sample(
            &text,
            "mqtt_kinesis_bridge_spool_commit_duration_seconds_count"
        )
        .unwrap()
            >= 1.0
    );

    wait_until("the textfile", Duration::from_secs(30), || {
        textfile.exists()
    });
    let written = std::fs::read_to_string(&textfile).unwrap();
    promtool_check(&written).unwrap();
    let mode = std::fs::metadata(&textfile).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o644, "node_exporter must be able to read it");

    let (status, body) = get(port, "/health").unwrap();
    assert_eq!((status, body.starts_with("ok")), (200, true), "{body}");
    assert_eq!(get(port, "/").map(|(status, _)| status), Some(404));
    assert_eq!(get(port, "/metricsx").map(|(status, _)| status), Some(404));

    // A broker removed from the catalog takes its series with it.
    db.execute("UPDATE iot_data.mqtt_broker SET status = FALSE WHERE mqtt_id = 2");
    wait_until("broker 2's series gone", Duration::from_secs(30), || {
        let text = scrape(port);
        !text.contains("broker_id=\"2\"") && text.contains("broker_id=\"1\"")
    });
    assert_eq!(gateway.terminate(), Some(0));
}

/// Issue 15: /health applies the systemd watchdog's rule: 503 while another
/// process holds the spool's write lock and a commit has waited past the
/// watchdog timeout, 200 once the lock goes (as tests/it/systemd.rs does it).
#[test]
fn health_is_503_while_the_spool_writer_is_wedged() {
    let dir = TempDir::new("metrics-health");
    let db = TestDb::new();
    let broker = Mosquitto::start();
    db.add_broker(1, broker.port());
    db.add_topic(None, "w/#", 1);
    let kinesis = FakeKinesis::start(vec![]);
    let port = free_port();
    // The watchdog timeout systemd would give, without its notify socket.
    let env = [(
        "WATCHDOG_USEC",
        Duration::from_secs(1).as_micros().to_string(),
    )];
    let keys = metrics_keys(port, None);
    let gateway = Gateway::start_with_env(&dir, &db, &kinesis.endpoint(), &keys, &env);
    gateway.wait_log("broker 1 subscribed", |log| {
        log.contains("connected, subscribed")
    });
    wait_until("/health 200", Duration::from_secs(30), || {
        get(port, "/health").is_some_and(|(status, _)| status == 200)
    });

    let locker = rusqlite::Connection::open(dir.join("spool.db")).expect("open the spool");
    locker
        .execute_batch("BEGIN EXCLUSIVE")
        .expect("take the write lock");
    publish(broker.port(), "w/x", "wedged", 1);
    let mut reason = String::new();
    wait_until("/health 503", Duration::from_secs(30), || {
        match get(port, "/health") {
            Some((503, body)) => {
                reason = body;
                true
            }
            _ => false,
        }
    });
    assert!(
        reason.starts_with("spool writer has been stuck for"),
        "{reason}"
    );
    // Scrapes go on while the writer is stuck.
    let text = scrape(port);
    assert!(
        text.contains("mqtt_kinesis_bridge_build_info{version="),
        "{text}"
    );

    locker.execute_batch("COMMIT").expect("release the lock");
    drop(locker);
    wait_until("/health 200 again", Duration::from_secs(30), || {
        get(port, "/health").is_some_and(|(status, _)| status == 200)
    });
    wait_until("the message delivered", Duration::from_secs(30), || {
        sample(
            &scrape(port),
            "mqtt_kinesis_bridge_records_delivered_total{broker_id=\"1\"}",
        ) == Some(1.0)
    });
    assert_eq!(gateway.terminate(), Some(0));
}

/// Issue 15: the textfile is replaced, never rewritten in place: every read
/// while it is rewritten each second is a whole exposition, and it is a new
/// file (inode) each time.
#[test]
fn the_textfile_is_never_seen_half_written() {
    let dir = TempDir::new("metrics-textfile");
    let db = TestDb::new();
    let kinesis = FakeKinesis::start(vec![]);
    let textfile = dir.join("mkb.prom");
    let keys = format!(
        "max_bytes = \"8MiB\"\n[metrics]\ntextfile = \"{}\"\ninterval = \"1s\"\n",
        textfile.display()
    );
    let gateway = Gateway::start_with(&dir, &db, &kinesis.endpoint(), &keys);
    let mut inodes = BTreeSet::new();
    let mut n_reads = 0u64;
    wait_until(
        "three versions of the textfile",
        Duration::from_secs(60),
        || {
            // Read as node_exporter does: open by name, read whole.
            let Ok(mut file) = std::fs::File::open(&textfile) else {
                return false;
            };
            let inode = file.metadata().unwrap().ino();
            let mut text = String::new();
            file.read_to_string(&mut text).unwrap();
            n_reads += 1;
            assert!(
                parses(&text),
                "read {n_reads} is not a whole exposition:\n{text}"
            );
            assert!(text.contains("mqtt_kinesis_bridge_build_info{"), "{text}");
            assert!(
                text.contains("mqtt_kinesis_bridge_catalog_database_up "),
                "{text}"
            );
            inodes.insert(inode);
            inodes.len() >= 3
        },
    );
    promtool_check(&std::fs::read_to_string(&textfile).unwrap()).unwrap();
    assert_eq!(gateway.terminate(), Some(0));
}

/// Issue 15: a client that connects and says nothing, and one that sends a
/// megabyte of request line, hold neither scrapes nor messages.
#[test]
fn silent_and_oversized_clients_disturb_nothing() {
    let dir = TempDir::new("metrics-hostile");
    let db = TestDb::new();
    let broker = Mosquitto::start();
    db.add_broker(1, broker.port());
    db.add_topic(None, "h/#", 1);
    let kinesis = FakeKinesis::start(vec![]);
    let port = free_port();
    let keys = metrics_keys(port, None);
    let gateway = Gateway::start_with(&dir, &db, &kinesis.endpoint(), &keys);
    gateway.wait_log("broker 1 subscribed", |log| {
        log.contains("connected, subscribed")
    });
    scrape(port);

    let silent = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let oversized = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let line = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(1 << 20));
        // The gateway stops reading at its limit, answers 431 and closes:
        // the write fails part way, which is the point.
        let written = stream.write_all(line.as_bytes());
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        (
            written.is_ok(),
            String::from_utf8_lossy(&answer).into_owned(),
        )
    });

    // While both are connected: scrapes answer and messages flow.
    let n = 30;
    publish(broker.port(), "h/x", "through", n);
    wait_until(
        "30 delivered, seen by a scrape",
        Duration::from_secs(30),
        || {
            sample(
                &scrape(port),
                "mqtt_kinesis_bridge_records_delivered_total{broker_id=\"1\"}",
            ) == Some(n as f64)
        },
    );
    assert_eq!(kinesis.accepted().len(), n);
    let (_, answer) = oversized.join().unwrap();
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "{answer}"
    );
    // The silent client is still connected (or already timed out): either way
    // it held nothing. Its slot comes back after the request timeout.
    drop(silent);
    let resident_kib = std::fs::read_to_string(format!("/proc/{}/status", gateway.pid()))
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|kib| kib.trim().trim_end_matches(" kB").parse::<u64>().ok())
        .unwrap();
    assert!(resident_kib < 64 * 1024, "{resident_kib} KiB resident");
    assert!(!gateway.log().contains("panicked"));
    assert_eq!(gateway.terminate(), Some(0));
}

/// Issue 15: the README's example scrape config and alert rules are valid,
/// and each alert fires on the series it is for (`promtool test rules`).
#[test]
fn the_example_alert_rules_pass_promtool() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/prometheus");
    for args in [
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts_test.yml"],
        ["check", "config", "prometheus.yml"],
    ] {
        let output = Command::new("promtool")
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("run promtool (Debian's prometheus package)");
        assert!(
            output.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// The CPU one scrape costs the gateway's `metrics` thread, with 20 brokers
/// in the catalog (opt-in: `cargo test --release --test it -- --ignored
/// --nocapture measure_scrape_cost`).
#[test]
#[ignore]
fn measure_scrape_cost() {
    let dir = TempDir::new("metrics-cost");
    let db = TestDb::new();
    let broker = Mosquitto::start();
    for id in 1..=20 {
        db.add_broker(id, broker.port());
    }
    db.add_topic(None, "c/#", 1);
    let kinesis = FakeKinesis::start(vec![]);
    let port = free_port();
    let gateway = Gateway::start_with(&dir, &db, &kinesis.endpoint(), &metrics_keys(port, None));
    gateway.wait_log("20 brokers subscribed", |log| {
        log.matches("connected, subscribed").count() >= 20
    });
    publish(broker.port(), "c/x", "cost", 100);
    let text = scrape(port);
    let metrics_ticks = || -> u64 {
        let tasks = format!("/proc/{}/task", gateway.pid());
        std::fs::read_dir(tasks)
            .unwrap()
            .filter_map(|task| {
                let task = task.ok()?.path();
                let comm = std::fs::read_to_string(task.join("comm")).ok()?;
                (comm.trim() == "metrics").then(|| {
                    let stat = std::fs::read_to_string(task.join("stat")).unwrap();
                    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
                    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
                })
            })
            .sum()
    };
    let n_scrapes = 2000;
    let before = metrics_ticks();
    for _ in 0..n_scrapes {
        assert!(get(port, "/metrics").is_some_and(|(status, _)| status == 200));
    }
    let ticks = metrics_ticks() - before;
    // SAFETY: sysconf only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    println!(
        "{n_scrapes} scrapes of {} bytes: {:.0} us of the metrics thread's CPU each",
        text.len(),
        ticks as f64 / hz * 1e6 / n_scrapes as f64
    );
    assert_eq!(gateway.terminate(), Some(0));
}
