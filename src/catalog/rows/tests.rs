use super::*;

fn broker(mqtt_id: i64, host: &str, port: i64) -> BrokerRow {
    BrokerRow {
        mqtt_id,
        host: Some(host.to_owned()),
        port: Some(port),
        username: None,
        password: None,
    }
}

fn topic(topic_id: i64, mqtt_id: Option<i64>, filter: &str, qos: i64) -> TopicRow {
    TopicRow {
        topic_id,
        mqtt_id,
        topic: Some(filter.to_owned()),
        qos: Some(qos),
    }
}

/// One bad broker row among good ones: the problem names it, the good one still runs.
#[track_caller]
fn check_broker(bad: BrokerRow, expected: &str) {
    let (catalog, problems) = validate(&[broker(1, "good.example", 1883), bad], &[]);
    assert_eq!(catalog.brokers.len(), 1, "the good row must still run");
    assert_eq!(catalog.brokers[0].id, 1);
    assert_eq!(problems.len(), 1, "{problems:?}");
    let message = problems[0].to_string();
    assert!(message.contains(expected), "{message:?} lacks {expected:?}");
}

#[track_caller]
fn check_topic(bad: TopicRow, expected: &str) {
    let (catalog, problems) = validate(
        &[broker(1, "good.example", 1883)],
        &[topic(1, Some(1), "ok/+/x", 1), bad],
    );
    assert_eq!(catalog.brokers[0].topics.len(), 1);
    assert_eq!(problems.len(), 1, "{problems:?}");
    let message = problems[0].to_string();
    assert!(message.contains(expected), "{message:?} lacks {expected:?}");
}

#[test]
fn bad_broker_rows_are_skipped_and_named() {
    let mut null_host = broker(2, "", 1883);
    null_host.host = None;
    check_broker(null_host, "mqtt_id=2: mqtt_host is NULL");
    check_broker(broker(3, "  ", 1883), "mqtt_id=3: mqtt_host is empty");
    check_broker(
        broker(4, "h", 70000),
        "mqtt_id=4: mqtt_port 70000 is out of range",
    );
    check_broker(broker(5, "h", 0), "mqtt_id=5: mqtt_port 0 is out of range");
    check_broker(broker(6, "a host", 1883), "mqtt_id=6: mqtt_host \"a host\"");
    let mut password_only = broker(7, "h", 1883);
    password_only.password = Some(Secret::new("s3cret"));
    check_broker(
        password_only,
        "mqtt_id=7: mqtt_password is set but mqtt_username is empty",
    );
}

#[test]
fn duplicate_ids_skip_every_copy() {
    let (catalog, problems) = validate(
        &[broker(1, "a", 1), broker(2, "b", 2), broker(2, "c", 3)],
        &[],
    );
    assert_eq!(
        catalog.brokers.iter().map(|b| b.id).collect::<Vec<_>>(),
        vec![1]
    );
    assert_eq!(
        problems.iter().map(ToString::to_string).collect::<Vec<_>>(),
        vec!["mqtt_broker row mqtt_id=2: mqtt_id appears in 2 active rows; all are skipped"]
    );
}

#[test]
fn bad_topic_rows_are_skipped_and_named() {
    check_topic(
        topic(9, Some(1), "", 1),
        "topic_id=9: topic \"\" is not a valid MQTT topic filter: it is empty",
    );
    check_topic(
        topic(9, Some(1), "a/#/b", 1),
        "'#' must be a whole level and the last one",
    );
    check_topic(topic(9, Some(1), "a/b#", 1), "'#' must be a whole level");
    check_topic(topic(9, Some(1), "a/b+/c", 1), "'+' must be a whole level");
    check_topic(topic(9, Some(1), "a\0b", 1), "NUL");
    check_topic(
        topic(9, Some(1), "a/b", 3),
        "topic_id=9: qos 3 is not 0, 1 or 2",
    );
    let mut null_topic = topic(9, Some(1), "", 1);
    null_topic.topic = None;
    check_topic(null_topic, "topic_id=9: topic is NULL");
}

#[test]
fn topics_merge_shared_and_own_keeping_the_highest_qos() {
    let (catalog, problems) = validate(
        &[broker(2, "b", 1884), broker(1, "a", 1883)],
        &[
            topic(1, None, "all/#", 0),
            topic(2, Some(1), "one/x", 1),
            topic(3, Some(1), "all/#", 2),
            topic(4, Some(99), "unknown/broker", 1),
        ],
    );
    assert!(problems.is_empty(), "{problems:?}");
    let ids: Vec<_> = catalog.brokers.iter().map(|b| b.id).collect();
    assert_eq!(ids, vec![1, 2], "sorted by id");
    let filters = |i: usize| -> Vec<(String, u8)> {
        catalog.brokers[i]
            .topics
            .iter()
            .map(|t| (t.filter.clone(), t.qos))
            .collect()
    };
    assert_eq!(filters(0), vec![("all/#".into(), 2), ("one/x".into(), 1)]);
    assert_eq!(filters(1), vec![("all/#".into(), 0)]);
}

#[test]
fn defaults_and_credentials() {
    let row = BrokerRow {
        mqtt_id: 5,
        host: Some(" broker.local ".into()),
        port: None,
        username: Some("gw".into()),
        password: Some(Secret::new("pw")),
    };
    let (catalog, problems) = validate(&[row], &[]);
    assert!(problems.is_empty());
    let broker = &catalog.brokers[0];
    assert_eq!((broker.host.as_str(), broker.port), ("broker.local", 1883));
    assert_eq!(broker.username.as_deref(), Some("gw"));
    assert_eq!(broker.password.as_ref().map(Secret::expose), Some("pw"));
}

#[test]
fn valid_filters() {
    for filter in ["#", "+", "a/+/b", "a/#", "+/+/#", "/", "a//b", "$SYS/#"] {
        assert_eq!(check_filter(filter), Ok(()), "{filter}");
    }
}
