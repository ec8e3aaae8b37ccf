use std::collections::BTreeMap;

use super::{reconcile, Change};
use crate::catalog::{Broker, Catalog, Topic};
use crate::secret::Secret;

/// `broker(7, 1883, &["a/#:1"])`: a broker on localhost with topics written `filter:qos`.
fn broker(id: i64, port: u16, topics: &[&str]) -> Broker {
    Broker::plain(
        id,
        "localhost",
        port,
        topics.iter().map(|text| topic(text)).collect(),
    )
}

fn topic(text: &str) -> Topic {
    let (filter, qos) = text.rsplit_once(':').expect("filter:qos");
    Topic {
        filter: filter.into(),
        qos: qos.parse().expect("qos"),
        device_id_level: None,
    }
}

fn check(running: &[Broker], desired: &[Broker], expected: &[Change]) {
    let running: BTreeMap<i64, Broker> = running.iter().map(|b| (b.id, b.clone())).collect();
    let desired = Catalog {
        brokers: desired.to_vec(),
    };
    assert_eq!(reconcile(&running, &desired), expected);
}

fn update(id: i64, subscribe: &[&str], unsubscribe: &[&str]) -> Change {
    Change::UpdateTopics {
        id,
        subscribe: subscribe.iter().map(|text| topic(text)).collect(),
        unsubscribe: unsubscribe.iter().map(|s| s.to_string()).collect(),
    }
}

#[test]
fn nothing_to_do() {
    check(&[], &[], &[]);
    check(
        &[broker(1, 1883, &["a:1"])],
        &[broker(1, 1883, &["a:1"])],
        &[],
    );
}

#[test]
fn start_and_stop() {
    check(
        &[],
        &[broker(1, 1883, &[])],
        &[Change::Start(broker(1, 1883, &[]))],
    );
    check(&[broker(1, 1883, &[])], &[], &[Change::Stop(1)]);
    check(
        &[broker(1, 1883, &[]), broker(3, 1883, &[])],
        &[broker(2, 1883, &[]), broker(3, 1883, &[])],
        &[Change::Stop(1), Change::Start(broker(2, 1883, &[]))],
    );
}

#[test]
fn connection_change_restarts() {
    check(
        &[broker(1, 1883, &[])],
        &[broker(1, 1884, &[])],
        &[Change::Restart(broker(1, 1884, &[]))],
    );
    let mut with_password = broker(1, 1883, &["a:1"]);
    with_password.username = Some("u".into());
    with_password.password = Some(Secret::new("p"));
    check(
        &[broker(1, 1883, &["a:1"])],
        &[with_password.clone()],
        &[Change::Restart(with_password)],
    );
    // A restart carries the new topic list too; no separate update.
    check(
        &[broker(1, 1883, &["a:1"])],
        &[broker(1, 1884, &["b:0"])],
        &[Change::Restart(broker(1, 1884, &["b:0"]))],
    );
}

#[test]
fn topic_changes_update_in_place() {
    check(
        &[broker(1, 1883, &["a:1"])],
        &[broker(1, 1883, &["a:1", "b:0"])],
        &[update(1, &["b:0"], &[])],
    );
    check(
        &[broker(1, 1883, &["a:1", "b:0"])],
        &[broker(1, 1883, &["a:1"])],
        &[update(1, &[], &["b"])],
    );
    check(
        &[broker(1, 1883, &["a:1"])],
        &[broker(1, 1883, &["a:2"])],
        &[update(1, &["a:2"], &[])],
    );
    check(
        &[broker(1, 1883, &["a:1", "b:1"])],
        &[broker(1, 1883, &["b:1", "c:0"])],
        &[update(1, &["c:0"], &["a"])],
    );
    check(
        &[broker(1, 1883, &["a:1"])],
        &[broker(1, 1883, &[])],
        &[update(1, &[], &["a"])],
    );
}

#[test]
fn changes_come_in_broker_order() {
    check(
        &[
            broker(1, 1883, &[]),
            broker(2, 1883, &["a:0"]),
            broker(4, 1883, &[]),
        ],
        &[
            broker(2, 1883, &["a:1"]),
            broker(3, 1883, &[]),
            broker(4, 9999, &[]),
        ],
        &[
            Change::Stop(1),
            update(2, &["a:1"], &[]),
            Change::Start(broker(3, 1883, &[])),
            Change::Restart(broker(4, 9999, &[])),
        ],
    );
}

/// Issue 16: a changed device_id_level alone is an update with nothing to
/// subscribe or unsubscribe (the session takes the new list, the broker sees nothing).
#[test]
fn a_device_id_level_change_alone_updates_without_subscribing() {
    let with_level = |level: Option<u8>| {
        let mut broker = broker(1, 1883, &["a/+:1"]);
        broker.topics[0].device_id_level = level;
        broker
    };
    check(
        &[with_level(None)],
        &[with_level(Some(2))],
        &[update(1, &[], &[])],
    );
    check(&[with_level(Some(2))], &[with_level(Some(2))], &[]);
}
