use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::config::{OverflowPolicy, SpoolConfig};

fn temp_spool_path(name: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("mkb-spool-{}-{name}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("spool.db")
}

fn config(path: PathBuf, max_bytes: u64, overflow: OverflowPolicy) -> SpoolConfig {
    SpoolConfig::new(path, max_bytes, overflow)
}

fn record(broker_id: BrokerId, n: usize, payload_len: usize) -> NewRecord {
    let mut payload = format!("{n:08}").into_bytes();
    payload.resize(payload_len.max(8), b'.');
    NewRecord {
        broker_id,
        topic: format!("sensors/{broker_id}"),
        payload,
        partition_key: PartitionKey::try_from("k").unwrap(),
        device_id: None,
        qos: 1,
        received_at_ms: 1_700_000_000_000 + n as i64,
    }
}

fn append_all(spool: &Spool, records: impl IntoIterator<Item = NewRecord>) {
    let mut appender = spool.appender();
    let receipts: Vec<_> = records
        .into_iter()
        .map(|r| appender.append_blocking(r).unwrap())
        .collect();
    for receipt in receipts {
        receipt.wait().unwrap();
    }
}

fn close(spool: Spool, writer: std::thread::JoinHandle<()>) {
    spool.close();
    drop(spool);
    writer.join().unwrap();
}

#[test]
fn appended_records_read_back_in_order_and_settle() {
    let path = temp_spool_path("roundtrip");
    let (spool, writer) = Spool::open(&config(path, 1 << 20, OverflowPolicy::DropOldest)).unwrap();
    append_all(&spool, (0..10).map(|n| record(7, n, 10)));
    let reader = spool.reader().unwrap();
    let records = reader.oldest(0, 100).unwrap();
    assert_eq!(records.len(), 10);
    assert!(records.windows(2).all(|w| w[0].id < w[1].id));
    assert_eq!(records[3].payload, b"00000003.."[..10].to_vec());
    assert_eq!(records[3].received_at_ms, 1_700_000_000_003);
    assert_eq!(spool.depth().n_records(), 10);
    // Paging after an id.
    assert_eq!(reader.oldest(records[7].id, 100).unwrap().len(), 2);

    let ids: Vec<i64> = records.iter().map(|r| r.id).collect();
    spool
        .settle(Settlement {
            delivered: ids[..6].to_vec(),
            retry: vec![ids[6], ids[7]],
            dead: vec![(ids[8], "too large".into())],
        })
        .unwrap();
    let left = reader.oldest(0, 100).unwrap();
    assert_eq!(
        left.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![ids[6], ids[7], ids[9]]
    );
    assert_eq!(left[0].attempts, 1);
    assert_eq!(
        reader.dead_letters().unwrap(),
        vec![(ids[8], "too large".to_owned())]
    );
    assert_eq!(
        reader.counters().unwrap(),
        vec![BrokerCounters {
            broker_id: 7,
            spooled: 10,
            delivered: 6,
            retried: 2,
            dropped: 0,
            dead_lettered: 1,
            dead_evicted: 0,
        }]
    );
    assert_eq!(spool.depth().n_records(), 3);
    close(spool, writer);
}

#[test]
fn drop_oldest_keeps_the_newest_and_counts_the_rest() {
    let path = temp_spool_path("drop");
    let max_bytes = 1 << 20;
    let (spool, writer) =
        Spool::open(&config(path, max_bytes, OverflowPolicy::DropOldest)).unwrap();
    // 300 records of ~10 KiB: about 3 MiB offered to a 1 MiB spool.
    let n_offered = 300;
    append_all(
        &spool,
        (0..n_offered).map(|n| record(n as i64 % 3, n, 10_000)),
    );
    let reader = spool.reader().unwrap();
    let kept = reader.oldest(0, 1000).unwrap();
    let dropped: u64 = reader.counters().unwrap().iter().map(|c| c.dropped).sum();
    assert!(spool.depth().bytes() <= max_bytes);
    assert_eq!(kept.len() as u64 + dropped, n_offered as u64);
    assert!(dropped > 0);
    // What is kept is exactly the newest tail.
    let first_kept = std::str::from_utf8(&kept[0].payload[..8])
        .unwrap()
        .parse::<u64>()
        .unwrap();
    assert_eq!(first_kept, dropped);
    assert_eq!(kept.last().unwrap().payload[..8], *b"00000299");
    close(spool, writer);
}

#[test]
fn backpressure_holds_appends_until_the_drain_frees_room() {
    let path = temp_spool_path("backpressure");
    let max_bytes = 1 << 20;
    let (spool, writer) =
        Spool::open(&config(path, max_bytes, OverflowPolicy::Backpressure)).unwrap();
    // Fill to the bound one commit at a time: the writer takes appends while
    // below the bound, so the record that crosses it is still committed.
    let mut n = 0;
    while spool.depth().bytes() < max_bytes {
        append_all(&spool, [record(1, n, 10_000)]);
        n += 1;
    }
    let mut appender = spool.appender();
    let held = appender.append_blocking(record(1, 999, 10)).unwrap();
    // The writer takes no appends while full; settle frees room and the held record commits.
    let n_before = spool.depth().n_records();
    let reader = spool.reader().unwrap();
    assert_eq!(reader.oldest(0, 1000).unwrap().len() as u64, n_before);
    let ids: Vec<i64> = reader.oldest(0, 50).unwrap().iter().map(|r| r.id).collect();
    spool
        .settle(Settlement {
            delivered: ids,
            ..Settlement::default()
        })
        .unwrap();
    held.wait().unwrap();
    let all = reader.oldest(0, 1000).unwrap();
    assert_eq!(all.last().unwrap().payload[..8], *b"00000999");
    let dropped: u64 = reader.counters().unwrap().iter().map(|c| c.dropped).sum();
    assert_eq!(dropped, 0);
    close(spool, writer);
}

#[test]
fn migrates_a_version_1_spool_keeping_its_records() {
    let path = temp_spool_path("migrate");
    {
        let mut connection = Connection::open(&path).unwrap();
        migrate::apply_up_to(&mut connection, &path, 1).unwrap();
        connection
            .execute(
                "INSERT INTO records (broker_id, topic, payload, partition_key, qos, received_at_ms, size) \
                 VALUES (3, 't', x'0102', 't', 1, 5, 100)",
                [],
            )
            .unwrap();
        let version: i64 = connection
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .unwrap();
        assert_eq!(version, 1);
    }
    let (spool, writer) =
        Spool::open(&config(path.clone(), 1 << 20, OverflowPolicy::DropOldest)).unwrap();
    let reader = spool.reader().unwrap();
    let records = reader.oldest(0, 10).unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].payload, vec![1, 2]);
    // Version 4's column: a record from before it has no device id.
    assert_eq!(records[0].device_id, None);
    assert_eq!(spool.depth().bytes(), 100);
    assert_eq!(spool.uid().len(), 16);
    // Version 2's tables work on the migrated file.
    spool
        .settle(Settlement {
            delivered: vec![records[0].id],
            ..Settlement::default()
        })
        .unwrap();
    assert_eq!(reader.counters().unwrap()[0].delivered, 1);
    let uid = spool.uid().to_owned();
    close(spool, writer);
    // The uid is stable across reopen.
    let (spool, writer) = Spool::open(&config(path, 1 << 20, OverflowPolicy::DropOldest)).unwrap();
    assert_eq!(spool.uid(), uid);
    close(spool, writer);
}

#[test]
fn refuses_a_spool_from_a_newer_gateway() {
    let path = temp_spool_path("too-new");
    {
        let connection = Connection::open(&path).unwrap();
        connection.pragma_update(None, "user_version", 99).unwrap();
    }
    let error = Spool::open(&config(path, 1 << 20, OverflowPolicy::DropOldest))
        .err()
        .expect("newer schema must be refused");
    assert!(error.to_string().contains("schema version 99"), "{error}");
}

#[test]
fn refuses_a_negative_schema_version_without_panicking() {
    let path = temp_spool_path("negative");
    {
        let connection = Connection::open(&path).unwrap();
        connection.pragma_update(None, "user_version", -3).unwrap();
    }
    let error = Spool::open(&config(path, 1 << 20, OverflowPolicy::DropOldest))
        .err()
        .expect("a negative schema version must be refused");
    assert!(error.to_string().contains("schema version -3"), "{error}");
}

#[test]
fn closed_spool_hands_the_record_back() {
    let path = temp_spool_path("closed");
    let (spool, writer) = Spool::open(&config(path, 1 << 20, OverflowPolicy::DropOldest)).unwrap();
    let mut appender = spool.appender();
    close(spool, writer);
    let returned = appender.append_blocking(record(1, 1, 10)).err();
    assert_eq!(returned, Some(record(1, 1, 10)));
}

/// A spool whose group commits wait the longest interval allowed, so only
/// urgency, a filling queue or a settlement's urgency can commit early.
fn open_patient(name: &str, queue_capacity: usize) -> (Spool, std::thread::JoinHandle<()>) {
    let mut config = config(temp_spool_path(name), 1 << 20, OverflowPolicy::DropOldest);
    config.commit_interval = std::time::Duration::from_secs(10);
    config.queue_capacity = queue_capacity;
    Spool::open(&config).unwrap()
}

fn append_quietly(appender: &mut Appender, record: NewRecord) -> CommitReceipt {
    futures_lite::future::block_on(appender.append(record, false)).unwrap()
}

/// Polls `condition` until it holds; panics after 5 s, half the patient interval.
fn within_5s(what: &str, condition: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !condition() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within 5s"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[test]
fn quiet_appends_wait_for_an_urgent_one_and_commit_as_one_group() {
    let (spool, writer) = open_patient("urgent", 1024);
    let mut appender = spool.appender();
    let quiet: Vec<_> = (0..50)
        .map(|n| append_quietly(&mut appender, record(1, n, 10)))
        .collect();
    // Nothing asked for a commit and the interval is 10 s.
    assert_eq!(spool.depth().n_commits(), 0);
    assert!(!quiet[0].try_committed());
    let urgent = futures_lite::future::block_on(appender.append(record(1, 50, 10), true)).unwrap();
    within_5s("the urgent append committed", || urgent.try_committed());
    assert!(quiet.iter().all(CommitReceipt::try_committed));
    assert_eq!(spool.depth().n_commits(), 1, "one transaction for all 51");
    assert_eq!(spool.depth().n_records(), 51);
    close(spool, writer);
}

#[test]
fn a_full_group_commits_without_waiting_for_the_interval() {
    let (spool, writer) = open_patient("group", 4096);
    let mut appender = spool.appender();
    // A full group and then some: the rest waits for the interval (or an urgent append).
    let receipts: Vec<_> = (0..super::writer::MAX_GROUP + 300)
        .map(|n| append_quietly(&mut appender, record(1, n, 10)))
        .collect();
    within_5s("a full group committed", || {
        receipts[..super::writer::MAX_GROUP]
            .iter()
            .all(CommitReceipt::try_committed)
    });
    close(spool, writer);
}

#[test]
fn a_quiet_settlement_rides_on_the_next_commit() {
    let (spool, writer) = open_patient("settle", 1024);
    append_all(&spool, (0..3).map(|n| record(1, n, 10)));
    let commits_before = spool.depth().n_commits();
    let ids: Vec<i64> = spool
        .reader()
        .unwrap()
        .oldest(0, 10)
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    let settled = spool
        .submit_settlement(
            Settlement {
                delivered: ids,
                ..Settlement::default()
            },
            false,
        )
        .unwrap();
    assert_eq!(spool.depth().n_commits(), commits_before, "not on its own");
    // An urgent append commits, and the settlement with it.
    append_all(&spool, [record(1, 3, 10)]);
    settled.wait().unwrap();
    assert_eq!(spool.depth().n_commits(), commits_before + 1);
    assert_eq!(spool.depth().n_records(), 1);
    let counters = spool.reader().unwrap().counters().unwrap();
    assert_eq!((counters[0].spooled, counters[0].delivered), (4, 3));
    close(spool, writer);
}

#[test]
fn a_filling_queue_wakes_the_writer_so_quiet_floods_keep_flowing() {
    // Eight records of queue, 10 s interval, nothing urgent (a QoS 0 flood):
    // without a wake-up the sender would wait out the interval every 8 records.
    let (spool, writer) = open_patient("flood", 8);
    let mut appender = spool.appender();
    let sender = std::thread::spawn(move || {
        for n in 0..5000 {
            append_quietly(&mut appender, record(1, n, 10));
        }
    });
    within_5s(
        "5,000 quiet records taken through an 8-record queue",
        || sender.is_finished(),
    );
    sender.join().unwrap();
    within_5s("at least two full groups committed", || {
        spool.depth().n_commits() >= 2
    });
    close(spool, writer);
}

#[test]
fn dead_letters_beyond_their_bound_evict_the_oldest_and_count_them() {
    let mut config = config(
        temp_spool_path("dead-bound"),
        1 << 30,
        OverflowPolicy::DropOldest,
    );
    config.dead_letter_max_bytes = 64 * 1024;
    let (spool, writer) = Spool::open(&config).unwrap();
    // 20 records of about 10 KB, all refused for good: 200 KB of dead letters.
    append_all(&spool, (0..20).map(|n| record(3, n, 10_000)));
    let reader = spool.reader().unwrap();
    let ids: Vec<i64> = reader
        .oldest(0, 100)
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    for id in ids {
        spool
            .settle(Settlement {
                dead: vec![(id, "refused".to_owned())],
                ..Settlement::default()
            })
            .unwrap();
    }
    let dead = reader.dead_letters().unwrap();
    let kept: Vec<i64> = dead.iter().map(|(id, _)| *id).collect();
    // Six fit in 64 KiB (10,000 + topic + key + 64 bytes each): the newest six.
    assert_eq!(kept, (15..=20).collect::<Vec<i64>>());
    let counters = reader.counters().unwrap();
    assert_eq!(counters[0].dead_lettered, 20);
    assert_eq!(counters[0].dead_evicted, 14);
    close(spool, writer);
}

/// Memory between the sessions and the disk is bounded by bytes, not only by
/// count: quiet appends of large records make their sender wait once the
/// budget is taken (the writer is asked to commit, which gives it back), so
/// with a 10 s interval and room for 1,024 records in the queue, 64 KiB
/// records still flow through a 256 KiB budget.
#[test]
fn large_records_wait_for_the_byte_budget_and_flow_through_it() {
    let mut config = config(
        temp_spool_path("budget"),
        64 << 20,
        OverflowPolicy::DropOldest,
    );
    config.commit_interval = std::time::Duration::from_secs(10);
    config.queue_max_bytes = 256 << 10;
    let (spool, writer) = Spool::open(&config).unwrap();
    let mut appender = spool.appender();
    // 40 × 64 KiB = 2.5 MiB: ten times the budget, all quiet (never urgent).
    let receipts: Vec<_> = (0..40)
        .map(|n| append_quietly(&mut appender, record(1, n, 64 << 10)))
        .collect();
    // Every append returned: the budget made the writer commit, never the interval.
    assert!(
        spool.depth().n_commits() >= 8,
        "{}",
        spool.depth().n_commits()
    );
    let committed = receipts.iter().filter(|r| r.try_committed()).count();
    // What is not committed yet fits in the budget.
    assert!(
        (40 - committed) * (64 << 10) <= 256 << 10,
        "{committed} committed"
    );
    close(spool, writer);
}

/// The drain's read stops at a byte budget (one request's worth), and a row
/// whose payload is over what a record may carry is reported for dead letters
/// without its payload being read.
#[test]
fn reads_stop_at_the_byte_budget_and_report_oversize_rows() {
    let (spool, writer) = Spool::open(&config(
        temp_spool_path("read-budget"),
        64 << 20,
        OverflowPolicy::DropOldest,
    ))
    .unwrap();
    let mut records = vec![record(1, 0, 10), record(1, 1, 2 << 20)];
    records.extend((2..40).map(|n| record(1, n, 100 << 10)));
    append_all(&spool, records);
    let reader = spool.reader().unwrap();
    let limits = ReadLimits {
        records: 500,
        bytes: 1 << 20,
        max_payload_bytes: 1 << 20,
    };
    let oldest = reader.read_oldest(0, limits).unwrap();
    assert_eq!(oldest.damaged.len(), 1);
    assert_eq!(oldest.damaged[0].0, 2);
    assert!(
        oldest.damaged[0]
            .1
            .contains("payload of 2097152 bytes is over"),
        "{:?}",
        oldest.damaged
    );
    // Record 1 (10 bytes) and 100 KiB records up to the first that reaches 1 MiB.
    let ids: Vec<i64> = oldest.records.iter().map(|r| r.id).collect();
    assert_eq!(ids, (1..=1).chain(3..=13).collect::<Vec<i64>>());
    // The first record always comes, however small the budget.
    let tiny = ReadLimits { bytes: 1, ..limits };
    assert_eq!(reader.read_oldest(0, tiny).unwrap().records.len(), 1);
    close(spool, writer);
}

/// Issue 16: the device id taken on receipt is stored with the record and
/// read back by the drain; a dead letter keeps it.
#[test]
fn the_device_id_is_kept_with_its_record() {
    let path = temp_spool_path("device-id");
    let (spool, writer) =
        Spool::open(&config(path.clone(), 1 << 20, OverflowPolicy::DropOldest)).unwrap();
    let mut with_device = record(7, 0, 10);
    with_device.device_id = Some(crate::ids::DeviceId::try_from("dev-7").unwrap());
    append_all(&spool, [with_device, record(7, 1, 10)]);
    let reader = spool.reader().unwrap();
    let records = reader.oldest(0, 10).unwrap();
    assert_eq!(records[0].device_id.as_deref(), Some("dev-7"));
    assert_eq!(records[1].device_id, None);
    spool
        .settle(Settlement {
            dead: vec![(records[0].id, "refused".into())],
            ..Settlement::default()
        })
        .unwrap();
    close(spool, writer);
    let connection = Connection::open(&path).unwrap();
    let dead: Option<String> = connection
        .query_row("SELECT device_id FROM dead_letters", [], |row| row.get(0))
        .unwrap();
    assert_eq!(dead.as_deref(), Some("dev-7"));
}

#[test]
fn reading_again_and_again_never_prepares_the_read_again() {
    let path = temp_spool_path("no-reprepare");
    let (spool, writer) = Spool::open(&config(path, 1 << 20, OverflowPolicy::DropOldest)).unwrap();
    append_all(&spool, (0..10).map(|n| record(7, n, 10)));
    let reader = spool.reader().unwrap();
    for limit in [3, 500, 3, 7] {
        assert_eq!(reader.oldest(0, limit).unwrap().len(), limit.min(10));
    }
    append_all(&spool, (10..12).map(|n| record(7, n, 10)));
    assert_eq!(reader.oldest(0, 500).unwrap().len(), 12);
    // The drain reads several times a second: a re-prepare each time (as a
    // bound LIMIT caused) cost a sixth of its CPU.
    let statement = reader.connection.prepare_cached(SELECT_OLDEST).unwrap();
    assert_eq!(
        statement.get_status(rusqlite::StatementStatus::RePrepare),
        0
    );
    drop(statement);
    drop(reader);
    close(spool, writer);
}

#[test]
fn a_group_inserted_many_rows_per_statement_keeps_every_field_and_the_order() {
    let (spool, writer) = open_patient("rows", 1024);
    let mut appender = spool.appender();
    // Two statements of 16 rows and five of one row, in one transaction.
    let n = 37;
    let sent: Vec<NewRecord> = (0..n)
        .map(|i| {
            let mut record = record(1 + (i % 3) as i64, i, 10 + i);
            record.topic = format!("t/{i}");
            record.partition_key = PartitionKey::try_from(format!("k{i}").as_str()).unwrap();
            record.qos = (i % 3) as u8;
            record.device_id = (i % 2 == 0)
                .then(|| crate::ids::DeviceId::try_from(format!("d{i}").as_str()).unwrap());
            record
        })
        .collect();
    let mut receipts: Vec<_> = sent[..n - 1]
        .iter()
        .map(|record| append_quietly(&mut appender, record.clone()))
        .collect();
    let last = sent[n - 1].clone();
    receipts.push(futures_lite::future::block_on(appender.append(last, true)).unwrap());
    within_5s("the group committed", || {
        receipts.iter().all(CommitReceipt::try_committed)
    });
    assert_eq!(spool.depth().n_commits(), 1, "one transaction for all {n}");
    let expected_bytes: u64 = sent.iter().map(NewRecord::spool_bytes).sum();
    assert_eq!(spool.depth().bytes(), expected_bytes);
    let records = spool.reader().unwrap().oldest(0, 100).unwrap();
    assert_eq!(records.len(), n);
    assert!(
        records.windows(2).all(|w| w[0].id + 1 == w[1].id),
        "ids follow the appends"
    );
    for (read, sent) in records.iter().zip(&sent) {
        assert_eq!(read.broker_id, sent.broker_id);
        assert_eq!(read.topic, sent.topic);
        assert_eq!(read.payload, sent.payload);
        assert_eq!(read.partition_key.as_str(), sent.partition_key.as_str());
        assert_eq!(read.qos, sent.qos);
        assert_eq!(read.received_at_ms, sent.received_at_ms);
        assert_eq!(read.device_id.as_deref(), sent.device_id.as_deref());
    }
    close(spool, writer);
}
