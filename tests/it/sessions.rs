//! The sessions supervisor against real Mosquitto brokers: which brokers run,
//! live catalog changes, outages, refused credentials, clean shutdown, memory.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use mqtt_kinesis_bridge::catalog::{Broker, Catalog, Topic};
use mqtt_kinesis_bridge::config::{MqttConfig, OverflowPolicy, PartitionKeyScheme, SpoolConfig};
use mqtt_kinesis_bridge::secret::Secret;
use mqtt_kinesis_bridge::sessions;
use mqtt_kinesis_bridge::shutdown::Shutdown;
use mqtt_kinesis_bridge::spool::{Record, Settlement, Spool, SpoolReader};
use mqtt_kinesis_bridge::status::{SessionStatus, StatusBoard};

use crate::support::mosquitto::{publish, Mosquitto};
use crate::support::*;

pub(crate) const WAIT: Duration = Duration::from_secs(20);

/// `sessions::run` on its own executor thread, with a real spool.
pub(crate) struct Gateway {
    /// Holds the spool file; removed on drop.
    _dir: TempDir,
    catalogs: async_channel::Sender<Catalog>,
    shutdown: Shutdown,
    status: StatusBoard,
    spool: Option<Spool>,
    spool_writer: Option<JoinHandle<()>>,
    sessions: Option<JoinHandle<()>>,
}

impl Gateway {
    pub(crate) fn start(name: &str) -> Gateway {
        Gateway::start_as(name, "it-gw")
    }

    /// A gateway whose client ids start with `gateway_id` (two gateways on one broker need two).
    pub(crate) fn start_as(name: &str, gateway_id: &str) -> Gateway {
        Gateway::with_spool(
            name,
            gateway_id,
            OverflowPolicy::DropOldest,
            64 * 1024 * 1024,
        )
    }

    fn with_spool(
        name: &str,
        gateway_id: &str,
        overflow: OverflowPolicy,
        max_bytes: u64,
    ) -> Gateway {
        Gateway::tuned(name, gateway_id, |spool, _| {
            spool.overflow = overflow;
            spool.max_bytes = max_bytes;
        })
    }

    /// A gateway whose spool and session settings `tune` adjusts.
    fn tuned(
        name: &str,
        gateway_id: &str,
        tune: impl FnOnce(&mut SpoolConfig, &mut MqttConfig),
    ) -> Gateway {
        // Silent unless RUST_LOG names a level.
        mqtt_kinesis_bridge::logger::init(log::LevelFilter::Off);
        let dir = TempDir::new(name);
        let mut spool_config =
            SpoolConfig::new(dir.join("spool.db"), 64 << 20, OverflowPolicy::DropOldest);
        let mut config = MqttConfig {
            partition_key: PartitionKeyScheme::BrokerTopic,
            min_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(300),
            keep_alive: Duration::from_secs(5),
            // Short, so the return to a primary endpoint is seen quickly.
            primary_recheck: Duration::from_millis(500),
            commit_at_unacked: 16,
            max_packet_size: mqtt_kinesis_bridge::config::DEFAULT_MAX_PACKET_SIZE,
            read_pause: mqtt_kinesis_bridge::config::DEFAULT_READ_PAUSE,
        };
        tune(&mut spool_config, &mut config);
        let (spool, spool_writer) = Spool::open(&spool_config).expect("open spool");
        let (catalogs, catalog_rx) = async_channel::bounded(4);
        let shutdown = Shutdown::new();
        let status = StatusBoard::new();
        let executor = Arc::new(smol::Executor::new());
        let run = sessions::run(
            Arc::clone(&executor),
            catalog_rx,
            spool.appender(),
            config,
            gateway_id.into(),
            shutdown.clone(),
            status.clone(),
            mqtt_kinesis_bridge::devices::Devices::new(1000),
        );
        let sessions = std::thread::Builder::new()
            .name("sessions".into())
            .spawn(move || smol::block_on(executor.run(run)))
            .expect("start sessions thread");
        Gateway {
            _dir: dir,
            catalogs,
            shutdown,
            status,
            spool: Some(spool),
            spool_writer: Some(spool_writer),
            sessions: Some(sessions),
        }
    }

    pub(crate) fn send(&self, brokers: Vec<Broker>) {
        self.catalogs
            .send_blocking(Catalog { brokers })
            .expect("send catalog");
    }

    pub(crate) fn status(&self, id: i64) -> Option<SessionStatus> {
        self.status.get(id)
    }

    /// Waits until broker `id` is connected with at least `n_subacks` SUBACKs in total.
    pub(crate) fn wait_subscribed(&self, id: i64, n_subacks: u64) {
        wait_until(
            &format!("broker {id} subscribed ({n_subacks} subacks)"),
            WAIT,
            || {
                self.status(id)
                    .is_some_and(|s| s.connected && s.n_subacks >= n_subacks)
            },
        );
    }

    pub(crate) fn records(&self) -> Vec<Record> {
        let spool = self.spool.as_ref().expect("spool open");
        spool
            .reader()
            .and_then(|r| r.oldest(0, 1_000_000))
            .expect("read spool")
    }

    /// Waits until the spool holds `n` records from `broker_id` whose payload starts with `tag`.
    pub(crate) fn wait_records(&self, broker_id: i64, tag: &str, n: usize) {
        wait_until(
            &format!("{n} records {tag:?} from broker {broker_id}"),
            WAIT,
            || count(&self.records(), broker_id, tag) >= n,
        );
    }

    /// Requests shutdown, joins the sessions and returns every record in the spool.
    pub(crate) fn stop(mut self) -> Vec<Record> {
        self.shutdown.request();
        if let Some(thread) = self.sessions.take() {
            thread.join().expect("sessions thread");
        }
        // Close the spool and join its writer: everything the sessions handed
        // over is committed before the writer exits.
        let spool = self.spool.take().expect("spool open");
        let path = spool.path().to_owned();
        spool.close();
        drop(spool);
        if let Some(writer) = self.spool_writer.take() {
            writer.join().expect("spool writer");
        }
        SpoolReader::open(&path)
            .and_then(|r| r.oldest(0, 1_000_000))
            .expect("read spool")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.shutdown.request();
        if let Some(thread) = self.sessions.take() {
            let _ = thread.join();
        }
        if let Some(spool) = self.spool.take() {
            spool.close();
        }
        if let Some(writer) = self.spool_writer.take() {
            let _ = writer.join();
        }
    }
}

pub(crate) fn broker(id: i64, port: u16, filters: &[&str]) -> Broker {
    Broker::plain(
        id,
        "127.0.0.1",
        port,
        filters
            .iter()
            .map(|filter| Topic {
                filter: filter.to_string(),
                qos: 1,
                device_id_level: None,
            })
            .collect(),
    )
}

pub(crate) fn count(records: &[Record], broker_id: i64, tag: &str) -> usize {
    records
        .iter()
        .filter(|r| r.broker_id == broker_id && r.payload.starts_with(tag.as_bytes()))
        .count()
}

fn connects(gateway: &Gateway, id: i64) -> u64 {
    gateway.status(id).map_or(0, |s| s.n_connects)
}

#[test]
fn only_catalog_brokers_deliver() -> TestResult {
    let (a, b, c) = (Mosquitto::start(), Mosquitto::start(), Mosquitto::start());
    let gateway = Gateway::start("only-catalog");
    gateway.send(vec![
        broker(1, a.port(), &["t/#"]),
        broker(2, b.port(), &["t/#"]),
    ]);
    gateway.wait_subscribed(1, 1);
    gateway.wait_subscribed(2, 1);
    publish(a.port(), "t/a", "a", 5);
    publish(b.port(), "t/b", "b", 5);
    publish(c.port(), "t/c", "c", 5);
    gateway.wait_records(1, "a", 5);
    gateway.wait_records(2, "b", 5);
    let records = gateway.stop();
    assert_eq!(
        records.len(),
        10,
        "nothing from the broker outside the catalog"
    );
    let first = records.iter().find(|r| r.broker_id == 1).expect("a record");
    assert_eq!(
        (
            first.topic.as_str(),
            first.partition_key.as_str(),
            first.qos
        ),
        ("t/a", "1/t/a", 1)
    );
    Ok(())
}

#[test]
fn catalog_changes_apply_live() -> TestResult {
    let (a, b, c) = (Mosquitto::start(), Mosquitto::start(), Mosquitto::start());
    let gateway = Gateway::start("live-changes");
    gateway.send(vec![
        broker(1, a.port(), &["t/#"]),
        broker(2, b.port(), &["t/#"]),
    ]);
    gateway.wait_subscribed(1, 1);
    gateway.wait_subscribed(2, 1);

    // Add broker 3.
    gateway.send(vec![
        broker(1, a.port(), &["t/#"]),
        broker(2, b.port(), &["t/#"]),
        broker(3, c.port(), &["t/#"]),
    ]);
    gateway.wait_subscribed(3, 1);

    // Remove broker 2.
    gateway.send(vec![
        broker(1, a.port(), &["t/#"]),
        broker(3, c.port(), &["t/#"]),
    ]);
    wait_until("broker 2 gone from status", WAIT, || {
        gateway.status(2).is_none()
    });

    // Move broker 1 to B's port: only broker 1 reconnects.
    gateway.send(vec![
        broker(1, b.port(), &["t/#"]),
        broker(3, c.port(), &["t/#"]),
    ]);
    wait_until("broker 1 reconnected", WAIT, || connects(&gateway, 1) == 2);
    gateway.wait_subscribed(1, 2);
    publish(b.port(), "t/moved", "moved", 3);
    gateway.wait_records(1, "moved", 3);
    assert_eq!(connects(&gateway, 3), 1, "broker 3 kept its connection");

    // Add a topic to broker 3: subscribed on the live connection.
    gateway.send(vec![
        broker(1, b.port(), &["t/#"]),
        broker(3, c.port(), &["extra/#", "t/#"]),
    ]);
    gateway.wait_subscribed(3, 2);
    publish(c.port(), "extra/x", "extra", 3);
    publish(c.port(), "t/x", "still", 1);
    gateway.wait_records(3, "extra", 3);
    gateway.wait_records(3, "still", 1);
    assert_eq!(
        connects(&gateway, 3),
        1,
        "a topic change must not reconnect"
    );
    assert_eq!(connects(&gateway, 1), 2);

    // Drop the first topic: unsubscribed, the other still delivers.
    gateway.send(vec![
        broker(1, b.port(), &["t/#"]),
        broker(3, c.port(), &["extra/#"]),
    ]);
    wait_until("broker 3 unsubscribed", WAIT, || {
        gateway.status(3).is_some_and(|s| s.n_unsubacks >= 1)
    });
    publish(c.port(), "t/x", "gone", 2);
    publish(c.port(), "extra/y", "marker", 1);
    gateway.wait_records(3, "marker", 1);
    assert_eq!(
        count(&gateway.records(), 3, "gone"),
        0,
        "unsubscribed topic"
    );
    assert_eq!(connects(&gateway, 3), 1);
    let records = gateway.stop();
    assert_eq!(count(&records, 2, ""), 0, "broker 2 was never published to");
    Ok(())
}

#[test]
fn killed_broker_reconnects_and_others_keep_running() -> TestResult {
    let (mut a, b) = (Mosquitto::start(), Mosquitto::start());
    let gateway = Gateway::start("kill-restart");
    gateway.send(vec![
        broker(1, a.port(), &["t/#"]),
        broker(2, b.port(), &["t/#"]),
    ]);
    gateway.wait_subscribed(1, 1);
    gateway.wait_subscribed(2, 1);

    a.kill();
    wait_until("broker 1 disconnected", WAIT, || {
        gateway
            .status(1)
            .is_some_and(|s| !s.connected && s.last_error.is_some())
    });
    let down = gateway.status(1).expect("status");
    assert_eq!(down.n_subscribed, 0, "no subscription without a connection");
    publish(b.port(), "t/during", "during", 5);
    gateway.wait_records(2, "during", 5);

    a.restart();
    wait_until("broker 1 reconnected", WAIT, || connects(&gateway, 1) >= 2);
    gateway.wait_subscribed(1, 2);
    assert_eq!(gateway.status(1).expect("status").n_subscribed, 1);
    publish(a.port(), "t/after", "after", 5);
    gateway.wait_records(1, "after", 5);
    assert_eq!(
        connects(&gateway, 2),
        1,
        "broker 2 never lost its connection"
    );
    gateway.stop();
    Ok(())
}

#[test]
fn wrong_credentials_affect_only_that_broker() -> TestResult {
    let open = Mosquitto::start();
    let locked = Mosquitto::start_with_password("gateway", "s3cret");
    let gateway = Gateway::start("credentials");
    let with_login = |id: i64, password: &str| Broker {
        username: Some("gateway".into()),
        password: Some(Secret::new(password)),
        ..broker(id, locked.port(), &["t/#"])
    };
    gateway.send(vec![
        broker(1, open.port(), &["t/#"]),
        with_login(2, "wrong"),
        with_login(3, "s3cret"),
    ]);
    wait_until("broker 2 refused", WAIT, || {
        gateway
            .status(2)
            .is_some_and(|s| s.auth_refused && !s.connected)
    });
    let refused = gateway.status(2).expect("status");
    let error = refused.last_error.unwrap_or_default();
    assert!(
        error.starts_with("broker refused the connection"),
        "{error}"
    );
    assert!(!error.contains("wrong"), "never show the password: {error}");
    gateway.wait_subscribed(1, 1);
    gateway.wait_subscribed(3, 1);
    publish(open.port(), "t/x", "open", 3);
    gateway.wait_records(1, "open", 3);
    gateway.stop();
    Ok(())
}

#[test]
fn garbage_from_one_broker_disturbs_no_other() -> TestResult {
    let good = Mosquitto::start();
    // Answers every connection with bytes that are no MQTT packet.
    let junk = TcpListener::bind("127.0.0.1:0")?;
    let junk_port = junk.local_addr()?.port();
    std::thread::spawn(move || {
        for mut stream in junk.incoming().flatten() {
            let _ = stream.write_all(&[0xff; 64]);
            let mut buffer = [0u8; 256];
            let _ = stream.read(&mut buffer);
        }
    });
    let gateway = Gateway::start("garbage");
    gateway.send(vec![
        broker(1, good.port(), &["t/#"]),
        broker(9, junk_port, &["t/#"]),
    ]);
    gateway.wait_subscribed(1, 1);
    wait_until("broker 9 failing", WAIT, || {
        gateway
            .status(9)
            .is_some_and(|s| !s.connected && s.last_error.is_some())
    });
    publish(good.port(), "t/x", "good", 3);
    gateway.wait_records(1, "good", 3);
    gateway.stop();
    Ok(())
}

#[test]
fn shutdown_keeps_every_received_message() -> TestResult {
    let a = Mosquitto::start();
    let gateway = Gateway::start("shutdown");
    gateway.send(vec![broker(1, a.port(), &["t/#"])]);
    gateway.wait_subscribed(1, 1);

    // Everything the broker acked before we wait is delivered and counted.
    publish(a.port(), "t/x", "first", 200);
    wait_until("200 messages received", WAIT, || {
        gateway.status(1).is_some_and(|s| s.n_received >= 200)
    });
    // Then shut down while a second batch may still be on its way.
    publish(a.port(), "t/x", "second", 200);
    let status = gateway.status.clone();
    let records = gateway.stop();
    let n_received = status.get(1).map_or(0, |s| s.n_received) as usize;
    assert_eq!(count(&records, 1, "first"), 200);
    assert_eq!(
        records.len(),
        n_received,
        "every message handed over is in the spool"
    );
    Ok(())
}

#[test]
fn backpressure_waits_instead_of_buffering() -> TestResult {
    const N: usize = 6000;
    // Room for about 50 records: the spool stops taking appends almost at once,
    // its queue (spool.queue_capacity, 1024) fills, and the session must wait in `append`.
    let a = Mosquitto::start();
    let gateway = Gateway::with_spool(
        "backpressure",
        "it-gw",
        OverflowPolicy::Backpressure,
        50 * 100,
    );
    gateway.send(vec![broker(1, a.port(), &["t/#"])]);
    gateway.wait_subscribed(1, 1);
    let publisher = std::thread::spawn({
        let port = a.port();
        move || publish(port, "t/x", "bp", N)
    });
    // Play the drain: settle what is stored, until every message went through.
    let spool = gateway.spool.clone().expect("spool open");
    let mut payloads = Vec::new();
    wait_until(
        "every message through a full spool",
        Duration::from_secs(60),
        || {
            // Received first: the records stored by then are at most those read after.
            let n_received = gateway.status(1).map_or(0, |s| s.n_received) as usize;
            let records = gateway.records();
            // The session holds nothing of its own: everything it took is
            // settled, stored, or held by the spool (its queue, and the group
            // the writer gathers), plus the one being appended.
            let bound = payloads.len()
                + records.len()
                + mqtt_kinesis_bridge::config::DEFAULT_QUEUE_CAPACITY
                + mqtt_kinesis_bridge::spool::MAX_GROUP
                + 1;
            assert!(n_received <= bound, "{n_received} received, bound {bound}");
            payloads.extend(records.iter().map(|r| r.payload.clone()));
            let delivered = records.iter().map(|r| r.id).collect();
            spool
                .settle(Settlement {
                    delivered,
                    ..Settlement::default()
                })
                .expect("settle");
            payloads.len() >= N
        },
    );
    publisher.join().expect("publisher");
    let expected: Vec<Vec<u8>> = (0..N).map(|i| format!("bp-{i}").into_bytes()).collect();
    assert_eq!(payloads, expected, "all messages, in order, none twice");
    assert_eq!(gateway.status(1).map(|s| s.n_connects), Some(1));
    drop(spool);
    gateway.stop();
    Ok(())
}

/// Opt-in: `cargo test --test it sessions::memory -- --ignored --nocapture --test-threads=1`.
#[test]
#[ignore = "measurement; prints resident memory and threads for 100 idle sessions"]
fn memory_of_100_idle_sessions() -> TestResult {
    let brokers: Vec<Mosquitto> = (0..4).map(|_| Mosquitto::start()).collect();
    let catalog = |n: i64| -> Vec<Broker> {
        (1..=n)
            .map(|id| {
                broker(
                    id,
                    brokers[id as usize % brokers.len()].port(),
                    &["t/#", "u/+/v"],
                )
            })
            .collect()
    };
    let all_subscribed = |gateway: &Gateway, n: usize| {
        wait_until(
            &format!("{n} sessions subscribed"),
            Duration::from_secs(60),
            || {
                let snapshot: BTreeMap<i64, SessionStatus> = gateway.status.snapshot();
                snapshot.len() == n && snapshot.values().all(|s| s.connected && s.n_subacks >= 1)
            },
        );
    };
    let before = proc_status();
    let gateway = Gateway::start("memory");
    gateway.send(Vec::new());
    let idle_gateway = proc_status();
    gateway.send(catalog(1));
    all_subscribed(&gateway, 1);
    let one = proc_status();
    gateway.send(catalog(100));
    all_subscribed(&gateway, 100);
    let hundred = proc_status();
    std::thread::sleep(Duration::from_secs(5));
    let idle = proc_status();
    println!("(VmRSS KiB, threads) of the test process");
    println!("before gateway:          {before:?}");
    println!("spool + 0 sessions:      {idle_gateway:?}");
    println!("1 session connected:     {one:?}");
    println!("100 sessions connected:  {hundred:?}");
    println!("after 5s idle:           {idle:?}");
    println!(
        "per session (100 vs 1):  {} KiB",
        (hundred.0.saturating_sub(one.0)) / 99
    );
    gateway.stop();
    Ok(())
}

/// (VmRSS in KiB, Threads) of this process.
fn proc_status() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|value| value.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("Threads:"))
}

#[test]
fn a_session_nearing_its_window_asks_for_the_commit_at_once() {
    let mosquitto = Mosquitto::start();
    // Commits wait 10 s unless a session asks; it asks at 5 messages awaiting their ack.
    let gateway = Gateway::tuned("sessions-urgent", "it-gw", |spool, mqtt| {
        spool.commit_interval = Duration::from_secs(10);
        mqtt.commit_at_unacked = 5;
    });
    gateway.send(vec![broker(1, mosquitto.port(), &["urgent/#"])]);
    gateway.wait_subscribed(1, 1);
    publish(mosquitto.port(), "urgent/a", "u", 5);
    wait_until(
        "5 records committed, well within the 10 s interval",
        Duration::from_secs(5),
        || count(&gateway.records(), 1, "u") == 5,
    );
    gateway.stop();
}

#[test]
fn three_thousand_topics_are_subscribed_in_packets_under_the_limit() {
    let mosquitto = Mosquitto::start();
    let gateway = Gateway::start("sessions-many-topics");
    // About 100 KB of filters: more than one SUBSCRIBE may carry.
    let filters: Vec<String> = (0..3000)
        .map(|i| format!("plant/line-{i:04}/sensor/+/reading"))
        .collect();
    let filter_refs: Vec<&str> = filters.iter().map(String::as_str).collect();
    gateway.send(vec![broker(1, mosquitto.port(), &filter_refs)]);
    wait_until("3,000 subscriptions acknowledged", WAIT, || {
        gateway
            .status(1)
            .is_some_and(|s| s.connected && s.n_subscribed == 3000)
    });
    let status = gateway.status(1).expect("status");
    assert!(status.n_subacks >= 2, "{} SUBACKs", status.n_subacks);
    assert_eq!(status.n_connects, 1, "never disconnected");
    publish(
        mosquitto.port(),
        "plant/line-2999/sensor/7/reading",
        "last",
        3,
    );
    gateway.wait_records(1, "last", 3);
    gateway.stop();
}

/// The keep-alive is the session's own once connected (it writes its packets
/// itself): a broker that answers PINGREQ keeps one connection through many
/// keep-alive intervals; one that goes silent without closing the socket is
/// left after the next interval finds the ping unanswered, and reconnected.
#[test]
fn keep_alive_pings_and_a_silent_broker_is_reconnected() {
    use crate::support::fake_broker::FakeBroker;
    let answering = FakeBroker::start(Vec::new());
    let silent = FakeBroker::start_with(Vec::new(), false);
    let gateway = Gateway::start("keep-alive");
    let mut one = broker(1, answering.port(), &["t/#"]);
    let mut two = broker(2, silent.port(), &["t/#"]);
    one.keep_alive = Some(Duration::from_secs(1));
    two.keep_alive = Some(Duration::from_secs(1));
    gateway.send(vec![one, two]);
    wait_until("3 pings answered on one connection", WAIT, || {
        answering.n_pings() >= 3
    });
    assert_eq!(
        answering.n_connections(),
        1,
        "the answered broker stays connected"
    );
    wait_until(
        "the silent broker reconnected after its unanswered ping",
        WAIT,
        || silent.n_connections() >= 2 && connects(&gateway, 2) >= 2,
    );
    assert!(silent.n_pings() >= 1);
    assert_eq!(answering.n_connections(), 1);
    assert_eq!(connects(&gateway, 1), 1);
}
