//! The spool survives kill -9: a child process appends, is killed, and every
//! record it was told had committed is in the file afterwards.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use mqtt_kinesis_bridge::config::{OverflowPolicy, SpoolConfig};
use mqtt_kinesis_bridge::spool::{NewRecord, PartitionKey, Spool, SpoolReader};

use crate::support::*;

fn spool_config(path: std::path::PathBuf) -> SpoolConfig {
    SpoolConfig::new(path, 256 << 20, OverflowPolicy::DropOldest)
}

/// One QoS 1 record of `broker_id` on `topic`.
fn qos1_record(broker_id: i64, topic: &str, payload: &[u8]) -> NewRecord {
    NewRecord {
        broker_id,
        topic: topic.into(),
        payload: payload.to_vec(),
        partition_key: PartitionKey::try_from("t").unwrap(),
        device_id: None,
        qos: 1,
        received_at_ms: 0,
    }
}

/// The crash tests' child process: `examples/spool_appender.rs`, which
/// `cargo test` builds beside this test binary (target/…/examples/).
fn spool_appender_program() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let examples = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("examples"))
        .expect("the test binary is under target/<profile>/deps");
    let example = examples.join("spool_appender");
    assert!(
        example.exists(),
        "{} is missing: `cargo test` builds it (all targets); with `--test it` alone, \
         run `cargo build --example spool_appender` first",
        example.display()
    );
    example
}

fn spool_appender(path: &std::path::Path, round: &str) -> std::io::Result<std::process::Child> {
    Command::new(spool_appender_program())
        .arg(path)
        .arg(round)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
}

#[test]
fn survives_kill_9() -> TestResult {
    let dir = TempDir::new("spool-kill");
    let path = dir.join("spool.db");
    for round in 0..3 {
        let mut child = spool_appender(&path, &round.to_string())?;
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut last_committed = None;
        for line in stdout.lines() {
            if let Some(n) = line?.strip_prefix("committed ") {
                let n: u64 = n.parse()?;
                last_committed = Some(n);
                // Kill at a different point each round, mid-stream.
                if n >= 1000 + round * 700 {
                    break;
                }
            }
        }
        child.kill()?; // SIGKILL
        child.wait()?;
        let last_committed = last_committed.expect("child committed something");

        let reader = SpoolReader::open(&path)?;
        let payloads: std::collections::HashSet<Vec<u8>> = reader
            .oldest(0, 1_000_000)?
            .into_iter()
            .map(|r| r.payload)
            .collect();
        for n in 0..=last_committed {
            assert!(
                payloads.contains(format!("{round}:{n}").as_bytes()),
                "round {round}: record {n} was reported committed before kill -9 but is missing"
            );
        }
    }
    Ok(())
}

#[test]
fn reopens_after_kill_and_keeps_appending() -> TestResult {
    let dir = TempDir::new("spool-reopen");
    let path = dir.join("spool.db");
    let (spool, writer) = Spool::open(&spool_config(path.clone()))?;
    let mut appender = spool.appender();
    let record = |n: u64| NewRecord {
        broker_id: 2,
        topic: "t".into(),
        payload: n.to_string().into_bytes(),
        partition_key: PartitionKey::try_from("t").unwrap(),
        device_id: None,
        qos: 0,
        received_at_ms: 0,
    };
    appender
        .append_blocking(record(1))
        .map_err(|_| "spool closed")?
        .wait()?;
    drop(appender);
    spool.close();
    drop(spool);
    writer.join().map_err(|_| "writer panicked")?;
    let (spool, writer) = Spool::open(&spool_config(path))?;
    assert_eq!(spool.depth().n_records(), 1);
    spool
        .appender()
        .append_blocking(record(2))
        .map_err(|_| "spool closed")?
        .wait()?;
    wait_until("two records", Duration::from_secs(5), || {
        spool.depth().n_records() == 2
    });
    spool.close();
    drop(spool);
    writer.join().map_err(|_| "writer panicked")?;
    Ok(())
}

/// Issue 4: a torn write (power cut mid-append: the WAL's tail half written)
/// does not stop the spool from opening; SQLite drops the incomplete frames and
/// the gateway goes on appending.
#[test]
fn opens_after_a_torn_wal_write() -> TestResult {
    let dir = TempDir::new("spool-torn");
    let path = dir.join("spool.db");
    let mut child = spool_appender(&path, "torn")?;
    let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    for line in stdout.lines() {
        if line?
            .strip_prefix("committed ")
            .is_some_and(|n| n.parse::<u64>().unwrap_or(0) >= 500)
        {
            break;
        }
    }
    child.kill()?;
    child.wait()?;

    // Tear the WAL's tail: cut into the last frame and leave garbage after it.
    let wal = dir.join("spool.db-wal");
    let len = std::fs::metadata(&wal)?.len();
    assert!(len > 8192, "the killed writer left a WAL to tear");
    let file = std::fs::OpenOptions::new().write(true).open(&wal)?;
    file.set_len(len - 3000)?;
    drop(file);
    let mut file = std::fs::OpenOptions::new().append(true).open(&wal)?;
    std::io::Write::write_all(&mut file, &[0xA5; 1500])?;
    drop(file);

    let (spool, writer) = Spool::open(&spool_config(path.clone()))?;
    let n_before = spool.depth().n_records();
    assert!(n_before > 0, "records before the torn frame survive");
    spool
        .appender()
        .append_blocking(qos1_record(9, "after/tear", b"ok"))
        .map_err(|_| "spool closed")?
        .wait()?;
    assert_eq!(spool.depth().n_records(), n_before + 1);
    // A fresh reader sees what the writer counts.
    assert_eq!(SpoolReader::open(&path)?.counts()?.0, n_before + 1);
    spool.close();
    drop(spool);
    writer.join().map_err(|_| "writer panicked")?;
    Ok(())
}

/// A commit that fails (here: another process holds the write lock past the
/// writer's 5 s busy timeout) is retried, not given up: the record is committed
/// once the lock goes, and meanwhile the writer shows as busy to the watchdog.
#[test]
fn a_failed_commit_is_retried_until_it_succeeds() -> TestResult {
    let dir = TempDir::new("spool-locked");
    let path = dir.join("spool.db");
    let (spool, writer) = Spool::open(&spool_config(path.clone()))?;
    let heartbeat = spool.writer_heartbeat();

    let locker = rusqlite::Connection::open(&path)?;
    locker.execute_batch("BEGIN EXCLUSIVE")?;
    let receipt = spool
        .appender()
        .append_blocking(qos1_record(3, "locked/out", b"kept"))
        .map_err(|_| "spool closed")?;
    // Past the busy timeout the first attempt has failed; the writer goes on trying.
    wait_until(
        "the writer busy past its busy timeout",
        Duration::from_secs(30),
        || heartbeat.busy_for() > Some(Duration::from_secs(6)),
    );
    assert_eq!(spool.depth().n_records(), 0);
    locker.execute_batch("COMMIT")?;
    drop(locker);

    receipt.wait()?;
    assert_eq!(heartbeat.busy_for(), None);
    assert_eq!(SpoolReader::open(&path)?.counts()?.0, 1);
    spool.close();
    drop(spool);
    writer.join().map_err(|_| "writer panicked")?;
    Ok(())
}

/// Commits reach the disk, not only the page cache: the writer syncs the WAL
/// at least once per committed batch, data-only (`fdatasync`: SQLite is built
/// with HAVE_FDATASYNC, .cargo/config.toml), and the spool's directory is
/// fsynced once the WAL exists, so its name survives power loss too.
#[test]
fn every_commit_syncs_the_wal_and_the_directory_is_synced() -> TestResult {
    assert!(
        Command::new("strace").arg("-V").output().is_ok(),
        "strace is needed (bash .ci/setup installs it)"
    );
    let dir = TempDir::new("spool-sync");
    let path = dir.join("spool.db");
    let trace = dir.join("strace.out");
    let mut strace = Command::new("strace")
        .args(["-f", "-y", "-qq", "-e", "trace=fsync,fdatasync", "-o"])
        .arg(&trace)
        .arg(spool_appender_program())
        .arg(&path)
        .arg("0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    // Its reports, read on a thread so that a stuck child fails the test at a deadline.
    let stdout = BufReader::new(strace.stdout.take().expect("piped stdout"));
    let (reports, committed) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if line.starts_with("committed ") && reports.send(()).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut n_committed = 0;
    while n_committed < 10 {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if committed.recv_timeout(left).is_err() {
            break;
        }
        n_committed += 1;
    }
    // The appender is strace's child: kill it, and strace ends with it.
    let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", strace.id()))?;
    for pid in children.split_whitespace() {
        Command::new("kill").args(["-9", pid]).status()?;
    }
    strace.wait()?;
    assert_eq!(
        n_committed, 10,
        "the appender reported 10 committed batches"
    );

    let trace = std::fs::read_to_string(&trace)?;
    let wal = format!("{}-wal>", path.display());
    let wal_syncs = |call: &str| {
        trace
            .lines()
            .filter(|line| line.contains(&format!("{call}(")) && line.contains(&wal))
            .count()
    };
    assert!(
        wal_syncs("fdatasync") >= n_committed,
        "{} fdatasync calls on the WAL for {n_committed} committed batches:\n{trace}",
        wal_syncs("fdatasync")
    );
    assert_eq!(
        wal_syncs("fsync"),
        0,
        "the WAL is synced data-only:\n{trace}"
    );
    let spool_dir = format!("<{}>)", std::fs::canonicalize(dir.path())?.display());
    assert!(
        trace
            .lines()
            .any(|line| line.contains("fsync(") && line.contains(&spool_dir)),
        "no fsync of the spool's directory {spool_dir}:\n{trace}"
    );
    Ok(())
}
