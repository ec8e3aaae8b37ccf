//! The catalog against a real PostgreSQL: NOTIFY and polling, bad rows, the offline snapshot.

use std::path::PathBuf;
use std::time::Duration;

use futures_lite::FutureExt;
use mqtt_kinesis_bridge::catalog::{self, snapshot, Catalog};
use mqtt_kinesis_bridge::config::{CatalogConfig, DEFAULT_NOTIFY_CHANNEL};
use mqtt_kinesis_bridge::secret::Secret;
use mqtt_kinesis_bridge::shutdown::Shutdown;

use crate::support::postgres::TestDb;
use crate::support::proxy::Proxy;
use crate::support::*;

fn config(url: &str, snapshot_path: PathBuf, refresh: Duration, notify: bool) -> CatalogConfig {
    CatalogConfig {
        gateway_id: "it-gw".to_owned(),
        database_url: Secret::new(url),
        snapshot_path,
        refresh_interval: refresh,
        notify_channel: notify.then(|| DEFAULT_NOTIFY_CHANNEL.to_owned()),
        password_key_file: None,
        password_key: None,
        snapshot_keep_free: 0,
    }
}

/// The next catalog sent, or a panic naming `what` after `timeout`.
fn next_catalog(catalogs: &async_channel::Receiver<Catalog>, what: &str) -> Catalog {
    let timeout = Duration::from_secs(20);
    smol::block_on(async { catalogs.recv().await.ok() }.or(async {
        async_io::Timer::after(timeout).await;
        None
    }))
    .unwrap_or_else(|| panic!("no catalog within {timeout:?}: expected {what}"))
}

fn summary(catalog: &Catalog) -> Vec<(i64, u16, Vec<String>)> {
    catalog
        .brokers
        .iter()
        .map(|b| {
            let topics = b
                .topics
                .iter()
                .map(|t| format!("{}@{}", t.filter, t.qos))
                .collect();
            (b.id, b.primary().port, topics)
        })
        .collect()
}

struct Running {
    shutdown: Shutdown,
    catalogs: async_channel::Receiver<Catalog>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    fn start(config: CatalogConfig) -> Running {
        let shutdown = Shutdown::new();
        let (catalogs, thread) = catalog::start(config, shutdown.clone(), None, Default::default())
            .expect("start catalog");
        Running {
            shutdown,
            catalogs,
            thread: Some(thread),
        }
    }

    fn stop(mut self) -> async_channel::Receiver<Catalog> {
        self.shutdown.request();
        self.thread
            .take()
            .unwrap()
            .join()
            .expect("catalog thread panicked");
        self.catalogs.clone()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.request();
    }
}

#[test]
fn changes_arrive_by_notify() {
    let db = TestDb::new();
    let dir = TempDir::new("catalog-notify");
    db.add_broker(1, 2001);
    db.add_topic(None, "sensors/#", 1);
    // An hour between polls: whatever arrives below came by NOTIFY.
    let running = Running::start(config(
        &db.url(),
        dir.join("snap.db"),
        Duration::from_secs(3600),
        true,
    ));
    let first = next_catalog(&running.catalogs, "the initial catalog");
    assert_eq!(summary(&first), vec![(1, 2001, vec!["sensors/#@1".into()])]);

    db.add_broker(2, 2002);
    let catalog = next_catalog(&running.catalogs, "broker 2 inserted");
    assert_eq!(
        catalog.brokers.iter().map(|b| b.id).collect::<Vec<_>>(),
        vec![1, 2]
    );

    db.execute("UPDATE iot_data.mqtt_broker SET status = FALSE WHERE mqtt_id = 1");
    let catalog = next_catalog(&running.catalogs, "broker 1 deactivated");
    assert_eq!(
        catalog.brokers.iter().map(|b| b.id).collect::<Vec<_>>(),
        vec![2]
    );

    db.execute("UPDATE iot_data.mqtt_broker SET mqtt_port = 2102 WHERE mqtt_id = 2");
    let catalog = next_catalog(&running.catalogs, "broker 2's port changed");
    assert_eq!(catalog.brokers[0].primary().port, 2102);

    db.add_topic(Some(2), "alarms/+", 2);
    let catalog = next_catalog(&running.catalogs, "a topic added");
    assert_eq!(
        summary(&catalog),
        vec![(2, 2102, vec!["alarms/+@2".into(), "sensors/#@1".into()])]
    );
    running.stop();
}

#[test]
fn a_mixed_case_or_reserved_channel_name_is_listened_to_as_written() {
    for channel in ["MkbCatalogChanged", "select"] {
        let db = TestDb::new();
        let dir = TempDir::new("catalog-channel");
        db.add_broker(1, 2001);
        let mut config = config(
            &db.url(),
            dir.join("snap.db"),
            Duration::from_secs(3600),
            true,
        );
        config.notify_channel = Some(channel.to_owned());
        let running = Running::start(config);
        next_catalog(&running.catalogs, "the initial catalog");
        db.add_broker(2, 2002);
        db.execute(&format!("SELECT pg_notify('{channel}', 'test')"));
        let catalog = next_catalog(&running.catalogs, &format!("a NOTIFY on {channel:?}"));
        assert_eq!(catalog.brokers.len(), 2, "channel {channel:?}");
        running.stop();
    }
}

#[test]
fn changes_arrive_by_poll_when_notify_is_off() {
    let db = TestDb::new();
    let dir = TempDir::new("catalog-poll");
    db.add_broker(1, 2001);
    let running = Running::start(config(
        &db.url(),
        dir.join("snap.db"),
        Duration::from_secs(1),
        false,
    ));
    next_catalog(&running.catalogs, "the initial catalog");
    db.add_broker(5, 2005);
    let catalog = next_catalog(&running.catalogs, "broker 5 by the 1s poll");
    assert_eq!(
        catalog.brokers.iter().map(|b| b.id).collect::<Vec<_>>(),
        vec![1, 5]
    );
    running.stop();
}

#[test]
fn bad_rows_are_skipped_and_good_rows_run() {
    let db = TestDb::new();
    let dir = TempDir::new("catalog-bad-rows");
    db.add_broker(1, 2001);
    db.execute(
        "INSERT INTO iot_data.mqtt_broker (mqtt_id, mqtt_host, mqtt_port, status) VALUES \
         (2, NULL, 1883, TRUE), (3, 'h', 70000, TRUE), (4, '127.0.0.1', 2004, FALSE);
         INSERT INTO iot_data.mqtt_topic (mqtt_id, topic, qos, status) VALUES \
         (1, 'ok/#', 1, TRUE), (1, 'bad/#/x', 1, TRUE), (1, 'off/#', 1, FALSE), (1, 'q', 7, TRUE);",
    );
    let running = Running::start(config(
        &db.url(),
        dir.join("snap.db"),
        Duration::from_secs(3600),
        true,
    ));
    let catalog = next_catalog(&running.catalogs, "the catalog without the bad rows");
    assert_eq!(summary(&catalog), vec![(1, 2001, vec!["ok/#@1".into()])]);
    running.stop();
}

#[test]
fn an_extended_broker_table_still_reads() {
    // The seed table without the option columns, plus columns the gateway does not know.
    let db = TestDb::seed_only();
    let dir = TempDir::new("catalog-extended");
    db.execute(
        "ALTER TABLE iot_data.mqtt_broker ADD COLUMN site_name text DEFAULT 'north', \
         ADD COLUMN installed_at timestamptz DEFAULT now(); \
         ALTER TABLE iot_data.mqtt_broker ALTER COLUMN mqtt_id TYPE bigint;",
    );
    db.add_broker(9, 2009);
    let running = Running::start(config(
        &db.url(),
        dir.join("snap.db"),
        Duration::from_secs(3600),
        true,
    ));
    let catalog = next_catalog(&running.catalogs, "the catalog from the extended table");
    assert_eq!(catalog.brokers[0].id, 9);
    running.stop();
}

#[test]
fn starts_from_the_snapshot_when_the_database_is_down_and_refreshes_when_back() {
    let db = TestDb::new();
    let dir = TempDir::new("catalog-offline");
    let snapshot_path = dir.join("snap.db");
    db.add_broker(1, 2001);
    db.add_topic(None, "t/#", 0);
    let proxy = Proxy::start("127.0.0.1:5432");
    let url = format!(
        "postgres://postgres@127.0.0.1:{}/{}",
        proxy.port(),
        db.url().rsplit('/').next().unwrap()
    );

    // A first run online writes the snapshot.
    let running = Running::start(config(
        &url,
        snapshot_path.clone(),
        Duration::from_secs(2),
        false,
    ));
    let online = next_catalog(&running.catalogs, "the online catalog");
    running.stop();
    assert!(snapshot_path.exists());

    // Offline start: the database cannot be reached, the snapshot runs.
    proxy.cut();
    db.add_broker(2, 2002);
    let running = Running::start(config(
        &url,
        snapshot_path.clone(),
        Duration::from_secs(2),
        false,
    ));
    let offline = next_catalog(&running.catalogs, "the catalog from the snapshot");
    assert_eq!(offline, online);

    // The database is back: the change made meanwhile arrives.
    proxy.restore();
    let refreshed = next_catalog(
        &running.catalogs,
        "the refreshed catalog after the database is back",
    );
    assert_eq!(
        refreshed.brokers.iter().map(|b| b.id).collect::<Vec<_>>(),
        vec![1, 2]
    );
    running.stop();
    let saved = snapshot::load(&snapshot_path, None).unwrap().unwrap();
    assert_eq!(saved.catalog, refreshed);
}

#[test]
fn no_database_and_no_snapshot_keeps_retrying_and_stops_on_shutdown() {
    let dir = TempDir::new("catalog-nothing");
    let url = format!(
        "postgres://postgres:s3cret-pw@127.0.0.1:{}/none",
        free_port()
    );
    let running = Running::start(config(
        &url,
        dir.join("snap.db"),
        Duration::from_secs(1),
        true,
    ));
    let catalogs = running.stop();
    // Nothing could be sent: no database, no snapshot; the thread ended on request.
    assert!(catalogs.try_recv().is_err());
    assert!(!dir.join("snap.db").exists());
}

#[test]
fn database_errors_never_show_the_password() {
    let url = format!(
        "postgres://postgres:s3cret-pw@127.0.0.1:{}/none",
        free_port()
    );
    let error = catalog::postgres::connect(&Secret::new(url), None)
        .err()
        .expect("nothing listens there");
    let message = error.to_string();
    assert!(!message.contains("s3cret-pw"), "{message}");
    let error = catalog::postgres::connect(
        &Secret::new("host=/x password=s3cret-pw port=notaport"),
        None,
    )
    .err()
    .expect("bad connection string");
    assert!(!error.to_string().contains("s3cret-pw"), "{error}");
}
