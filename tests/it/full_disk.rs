//! Issue 21: a full disk must not wedge the gateway. Each test mounts a small
//! tmpfs of its own for the spool (skipped, saying so, where mounting is not
//! permitted) and fills it: through the gateway while Kinesis refuses, or
//! from the test itself, as another program filling the disk would.
//! Conditions are waited for with deadlines; nothing asserts on timing.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use mqtt_kinesis_bridge::config::{OverflowPolicy, SpoolConfig};
use mqtt_kinesis_bridge::spool::space::reserve_path;
use mqtt_kinesis_bridge::spool::{NewRecord, PartitionKey, Settlement, Spool, SpoolReader};
use serde_json::Value;

use crate::gateway::Gateway;
use crate::support::kinesis::FakeKinesis;
use crate::support::mosquitto::{publish, Mosquitto};
use crate::support::postgres::TestDb;
use crate::support::tmpfs::Tmpfs;
use crate::support::*;

const MIB: u64 = 1 << 20;
/// The spool keys of the gateway tests: a bound far above the 16 MiB
/// filesystem (as on a card smaller than the config assumes), a 2 MiB floor.
const SPOOL_KEYS: &str = "max_bytes = \"64MiB\"\nmin_free_bytes = \"2MiB\"";

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

fn wal_size(spool: &Path) -> u64 {
    file_size(&spool.with_file_name("spool.db-wal"))
}

/// The distinct payloads starting with `tag` that Kinesis accepted: at least
/// once means a message may arrive twice, so messages are counted by their text.
fn delivered(kinesis: &FakeKinesis, tag: &str) -> BTreeSet<String> {
    kinesis
        .accepted()
        .iter()
        .filter_map(|data| {
            let json: Value = serde_json::from_slice(data).ok()?;
            let text = json["payload_text"].as_str()?;
            text.starts_with(tag).then(|| text.to_owned())
        })
        .collect()
}

/// Publishes `n` QoS 1 messages `{tag}{padding}-{i}` of about `size` bytes to `topic`.
fn publish_sized(port: u16, tag: &str, size: usize, n: usize) {
    let padded = format!("{tag}{}", "x".repeat(size.saturating_sub(tag.len())));
    publish(port, "fd/n", &padded, n);
}

/// The spool's line of `check --json` on `dir`'s config.
fn spool_check(dir: &TempDir) -> Value {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_mqtt-kinesis-bridge"))
        .args(["check", "--json", "--config"])
        .arg(dir.join("gateway.toml"))
        .output()
        .expect("run check");
    let report: Value = serde_json::from_slice(&output.stdout).expect("check --json prints JSON");
    report["checks"]
        .as_array()
        .and_then(|checks| checks.iter().find(|check| check["area"] == "spool"))
        .cloned()
        .expect("a spool check")
}

fn paused(gateway: &Gateway) -> bool {
    gateway.status()["disk"]["appends_paused"] == true
}

/// A gateway with its spool on a 16 MiB tmpfs, one broker, Kinesis the fake.
struct Rig {
    // Dropped in this order: the gateway before the filesystem before the directory.
    gateway: Gateway,
    fs: Tmpfs,
    kinesis: FakeKinesis,
    broker: Mosquitto,
    db: TestDb,
    dir: TempDir,
}

impl Rig {
    fn start(name: &str, kinesis_down: bool) -> Option<Rig> {
        let dir = TempDir::new(name);
        let fs = Tmpfs::mount(&dir, 16)?;
        let db = TestDb::new();
        let broker = Mosquitto::start();
        db.add_broker(1, broker.port());
        db.add_topic(None, "fd/#", 1);
        let kinesis = FakeKinesis::start(vec![]);
        kinesis.set_down(kinesis_down);
        let gateway = Gateway::start_with_spool(
            &dir,
            &fs.join("spool.db"),
            &db,
            &kinesis.endpoint(),
            SPOOL_KEYS,
        );
        gateway.wait_log("broker 1 subscribed", |log| {
            log.contains("connected, subscribed")
        });
        Some(Rig {
            gateway,
            fs,
            kinesis,
            broker,
            db,
            dir,
        })
    }

    fn restart(&mut self) {
        // Drop kills it (SIGKILL) first.
        self.gateway = Gateway::start_with_spool(
            &self.dir,
            &self.fs.join("spool.db"),
            &self.db,
            &self.kinesis.endpoint(),
            SPOOL_KEYS,
        );
    }

    fn wait_delivered(&self, tag: &str, n: usize, timeout: Duration) {
        wait_until(
            &format!("{n} distinct {tag} messages in Kinesis"),
            timeout,
            || delivered(&self.kinesis, tag).len() == n,
        );
    }
}

/// (a) Kinesis refuses while the broker floods the gateway: the spool fills
/// its filesystem to the floor and appends pause (the broker keeps the rest).
/// Kinesis answers again: every message is delivered, from the spool or from
/// the broker, the spool's free pages are reused, and new messages flow.
#[test]
fn filled_through_the_gateway_every_message_is_delivered_once_kinesis_answers() {
    let Some(rig) = Rig::start("full-disk-fill", true) else {
        return;
    };
    rig.gateway
        .wait_log("the warning about spool.max_bytes", |log| {
            log.contains("spool.max_bytes (64.0 MiB) is more than the spool's filesystem can hold")
        });
    let spool = rig.gateway.spool().to_owned();
    // 6,000 × 2 KB: more than the 10 MiB the filesystem has for the spool.
    let n = 6000;
    let started = Instant::now();
    publish_sized(rig.broker.port(), "fill", 2000, n);
    wait_until("appends paused for room", Duration::from_secs(60), || {
        paused(&rig.gateway)
    });
    let filled_in = started.elapsed();
    let status = rig.gateway.status();
    let spooled = status["brokers"][0]["spooled"].as_u64().unwrap();
    assert!(spooled < n as u64, "16 MiB cannot hold {n} × 2 KB");
    let free_when_full = rig.fs.free_bytes();
    assert!(
        free_when_full < 2 * MIB + 2 * MIB,
        "paused with {free_when_full} free, far above the floor"
    );
    let files_when_full = file_size(&spool) + wal_size(&spool);
    assert!(rig.kinesis.accepted().is_empty());

    let answering = Instant::now();
    rig.kinesis.set_down(false);
    rig.wait_delivered("fill", n, Duration::from_secs(120));
    let recovered_in = answering.elapsed();
    wait_until("the spool empty", Duration::from_secs(30), || {
        rig.gateway.status()["records_waiting"] == 0
    });
    wait_until("appends running", Duration::from_secs(30), || {
        !paused(&rig.gateway)
    });
    let status = rig.gateway.status();
    assert_eq!(
        status["total"]["dropped"], 0,
        "the disk, not the bound, was the limit"
    );
    let spool_size = file_size(&spool);
    let free_pages = SpoolReader::open(&spool)
        .unwrap()
        .free_page_bytes()
        .unwrap();
    assert!(
        free_pages > MIB,
        "the delivered records' pages are free: {free_pages}"
    );

    // New messages flow, into the free pages: the file does not grow.
    publish_sized(rig.broker.port(), "again", 2000, 300);
    rig.wait_delivered("again", 300, Duration::from_secs(60));
    let spool_size_after = file_size(&spool);
    assert!(
        spool_size_after <= spool_size,
        "the spool grew from {spool_size} to {spool_size_after} bytes with {free_pages} bytes of free pages"
    );
    let log = rig.gateway.log();
    assert_eq!(
        log.matches("new messages are not taken").count(),
        1,
        "the pause is said once:\n{log}"
    );
    assert!(log.contains("appends resumed after"), "{log}");
    println!(
        "full disk (16 MiB tmpfs, 2 MiB floor): {spooled} of {n} messages spooled before the pause \
         ({:.1}s), spool + WAL {files_when_full} bytes, {free_when_full} bytes free; \
         every message delivered {:.1}s after Kinesis answered; spool file {spool_size} bytes \
         ({free_pages} in free pages), {spool_size_after} after 300 more",
        filled_in.as_secs_f64(),
        recovered_in.as_secs_f64()
    );
}

/// (b) Another program fills the disk while the gateway runs: appends pause
/// (`status` says so) while delivery goes on; the file is removed and appends
/// resume, every message delivered.
#[test]
fn a_disk_filled_by_another_program_pauses_appends_until_it_is_freed() {
    let Some(rig) = Rig::start("full-disk-other", false) else {
        return;
    };
    publish_sized(rig.broker.port(), "before", 500, 100);
    rig.wait_delivered("before", 100, Duration::from_secs(30));
    // Deleted too: nothing the gateway writes is under way when the disk fills.
    wait_until("the spool empty", Duration::from_secs(30), || {
        rig.gateway.status()["records_waiting"] == 0
    });
    assert!(!paused(&rig.gateway));

    rig.fs.fill("filler");
    publish_sized(rig.broker.port(), "during", 500, 200);
    wait_until("appends paused for room", Duration::from_secs(30), || {
        paused(&rig.gateway)
    });
    let text = rig.gateway.status_text();
    assert!(text.contains("APPENDS PAUSED"), "{text}");
    assert!(text.contains("disk: 0 B free of 16.0 MiB"), "{text}");
    let status = rig.gateway.status();
    assert_eq!(status["disk"]["free_bytes"], 0);
    assert_eq!(status["disk"]["min_free_bytes"], 2 * MIB);
    assert_eq!(
        status["disk"]["reserve_in_place"], true,
        "nothing needed it"
    );
    // Paused appends are not acknowledged: the broker keeps them.
    assert!(delivered(&rig.kinesis, "during").len() < 200);
    let check = spool_check(&rig.dir);
    assert_eq!(check["kind"], "disk_full", "{check}");

    std::fs::remove_file(rig.fs.join("filler")).unwrap();
    rig.wait_delivered("during", 200, Duration::from_secs(60));
    wait_until("appends running", Duration::from_secs(30), || {
        !paused(&rig.gateway)
    });
    let log = rig.gateway.log();
    assert_eq!(
        log.matches("new messages are not taken").count(),
        1,
        "{log}"
    );
    assert!(log.contains("appends resumed after"), "{log}");
    assert!(
        rig.gateway.status_text().contains("appends running"),
        "{}",
        rig.gateway.status_text()
    );
    let check = spool_check(&rig.dir);
    assert_eq!(check["ok"], true, "{check}");
    assert!(
        check["detail"]
            .as_str()
            .unwrap()
            .contains("spool.min_free_bytes 2.0 MiB"),
        "{check}"
    );
}

/// (c) kill -9 while the disk is full (filled by another program, the spool
/// holding what Kinesis refused): the gateway starts again on the full disk,
/// delivers what the spool holds, and once the file is removed every message
/// is delivered, those the broker kept included.
#[test]
fn kill_9_on_a_full_disk_then_the_spool_opens_and_recovers() {
    let Some(mut rig) = Rig::start("full-disk-kill", true) else {
        return;
    };
    publish_sized(rig.broker.port(), "held", 1000, 500);
    wait_until("500 spooled", Duration::from_secs(30), || {
        rig.gateway.status()["brokers"][0]["spooled"] == 500
    });
    rig.fs.fill("filler");
    publish_sized(rig.broker.port(), "blocked", 1000, 100);
    wait_until("appends paused for room", Duration::from_secs(30), || {
        paused(&rig.gateway)
    });

    let reserve_before = rig.gateway.status()["disk"]["reserve_in_place"] == true;
    rig.kinesis.set_down(false);
    rig.restart();
    rig.gateway.wait_log("the gateway started again", |log| {
        log.contains("starting: gateway")
    });
    // On the full disk: what the spool held is delivered and deleted.
    rig.wait_delivered("held", 500, Duration::from_secs(60));
    wait_until("the spool empty", Duration::from_secs(30), || {
        rig.gateway.status()["records_waiting"] == 0
    });
    let log = rig.gateway.log();
    let reserve_released = log.contains("released the spool's reserve");

    std::fs::remove_file(rig.fs.join("filler")).unwrap();
    rig.wait_delivered("blocked", 100, Duration::from_secs(60));
    wait_until("the reserve in place", Duration::from_secs(30), || {
        rig.gateway.status()["disk"]["reserve_in_place"] == true
    });
    publish_sized(rig.broker.port(), "after", 1000, 50);
    rig.wait_delivered("after", 50, Duration::from_secs(60));
    println!(
        "kill -9 on a full disk: reserve in place at the kill: {reserve_before}; \
         released after the restart: {reserve_released}"
    );
}

fn record(n: usize) -> NewRecord {
    NewRecord {
        broker_id: 1,
        topic: "fd/spool".into(),
        payload: vec![b'x'; 1000],
        partition_key: PartitionKey::try_from("k").unwrap(),
        device_id: None,
        qos: 1,
        received_at_ms: n as i64,
    }
}

/// The spool alone on a full disk, step by step: a delete needs room in the
/// WAL, which the reserve gives; appends wait (unacknowledged) while
/// settlements commit; once there is room appends go on and the reserve is
/// made again.
#[test]
fn a_full_disk_releases_the_reserve_so_deletes_commit_and_appends_wait() -> TestResult {
    let dir = TempDir::new("full-disk-spool");
    let Some(fs) = Tmpfs::mount(&dir, 16) else {
        return Ok(());
    };
    let path = fs.join("spool.db");
    let mut config = SpoolConfig::new(path.clone(), 64 * MIB, OverflowPolicy::DropOldest);
    config.min_free_bytes = Some(MIB);
    let (spool, writer) = Spool::open(&config)?;
    let reserve = reserve_path(&path);
    assert_eq!(file_size(&reserve), 4 * MIB, "the reserve is made at start");
    let mut appender = spool.appender();
    let receipts: Vec<_> = (0..200)
        .map(|n| appender.append_blocking(record(n)).unwrap())
        .collect();
    for receipt in receipts {
        receipt.wait()?;
    }
    // An empty WAL: the delete below must grow it.
    let connection = rusqlite::Connection::open(&path)?;
    connection.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    assert_eq!(wal_size(&path), 0);

    fs.fill("filler");
    assert_eq!(fs.free_bytes(), 0);
    let ids: Vec<i64> = spool
        .reader()?
        .oldest(0, 500)?
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids.len(), 200);
    spool.settle(Settlement {
        delivered: ids,
        ..Settlement::default()
    })?;
    assert_eq!(spool.reader()?.counts()?.0, 0, "delivered records deleted");
    assert!(!reserve.exists(), "the reserve was released for the delete");
    assert!(spool.space().appends_paused());

    // An append waits; a settlement after it still commits.
    let waiting = appender.append_blocking(record(200)).unwrap();
    spool.settle(Settlement {
        retry: vec![1],
        ..Settlement::default()
    })?;
    assert!(!waiting.try_committed(), "appended on a full disk");
    assert_eq!(spool.depth().n_records(), 0);

    std::fs::remove_file(fs.join("filler"))?;
    wait_until(
        "the waiting append committed",
        Duration::from_secs(10),
        || waiting.try_committed(),
    );
    assert!(!spool.space().appends_paused());
    assert_eq!(file_size(&reserve), 4 * MIB, "the reserve is made again");
    drop(connection);
    spool.close();
    drop(spool);
    writer.join().unwrap();

    // Opened again, the spool finds its reserve in place.
    let (spool, writer) = Spool::open(&config)?;
    assert!(spool.space().reserve_in_place());
    assert!(!spool.space().appends_paused());
    spool.close();
    drop(spool);
    writer.join().unwrap();
    Ok(())
}
