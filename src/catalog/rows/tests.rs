use std::time::Duration;

use super::*;
use crate::catalog::Endpoint;

/// [`super::validate`] without a key: sealed values are problems.
fn validate(broker_rows: &[BrokerRow], topic_rows: &[TopicRow]) -> (Catalog, Vec<RowProblem>) {
    super::validate(broker_rows, topic_rows, None)
}

fn broker(mqtt_id: i64, host: &str, port: i64) -> BrokerRow {
    BrokerRow {
        mqtt_id,
        host: Some(host.to_owned()),
        port: Some(port),
        ..BrokerRow::default()
    }
}

fn topic(topic_id: i64, mqtt_id: Option<i64>, filter: &str, qos: i64) -> TopicRow {
    TopicRow {
        topic_id,
        mqtt_id,
        topic: Some(filter.to_owned()),
        qos: Some(qos),
        device_id_level: None,
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
    // 70 KB: over every SUBSCRIBE packet; 1 KiB is the gateway's limit.
    check_topic(
        topic(9, Some(1), &"a/".repeat(35_000), 1),
        "a/a/\"… (70000 bytes) is not a valid MQTT topic filter",
    );
    check_topic(
        topic(9, Some(1), &"a".repeat(1025), 1),
        "longer than 1024 bytes",
    );
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
        ..BrokerRow::default()
    };
    let (catalog, problems) = validate(&[row], &[]);
    assert!(problems.is_empty());
    let broker = &catalog.brokers[0];
    assert_eq!(
        broker.endpoints,
        vec![Endpoint {
            host: "broker.local".into(),
            port: 1883
        }]
    );
    assert_eq!(broker.tls, None);
    assert!(!broker.clean_session);
    assert_eq!(broker.client_id, None);
    assert_eq!(broker.username.as_deref(), Some("gw"));
    assert_eq!(broker.password.as_ref().map(Secret::expose), Some("pw"));
}

#[test]
fn valid_filters() {
    for filter in ["#", "+", "a/+/b", "a/#", "+/+/#", "/", "a//b", "$SYS/#"] {
        assert_eq!(check_filter(filter), Ok(()), "{filter}");
    }
}

fn endpoint(host: &str, port: u16) -> Endpoint {
    Endpoint {
        host: host.into(),
        port,
    }
}

#[test]
fn failover_endpoints_in_priority_order() {
    let mut row = broker(1, "10.0.0.5", 1883);
    row.failover = Some("10.0.0.6:1884, backup.local\n[fd00::7]:8883 10.0.0.5:1883".into());
    let (catalog, problems) = validate(&[row], &[]);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(
        catalog.brokers[0].endpoints,
        vec![
            endpoint("10.0.0.5", 1883),
            endpoint("10.0.0.6", 1884),
            // No port: the primary's.
            endpoint("backup.local", 1883),
            endpoint("fd00::7", 8883),
        ]
    );
    assert_eq!(
        catalog.brokers[0].endpoints[3].to_string(),
        "[fd00::7]:8883"
    );

    for (failover, expected) in [
        (
            "h:0",
            "mqtt_failover entry \"h:0\" has a port outside 1..65535",
        ),
        ("h:x", "mqtt_failover entry \"h:x\" has a port outside"),
        ("fd00::7", "is an IPv6 address: write it as [address]:port"),
        ("[fd00::7", "lacks the closing ']'"),
        ("user@h:1", "has host \"user@h\" is not a host name"),
    ] {
        let mut row = broker(2, "h", 1883);
        row.failover = Some(failover.into());
        check_broker(row, expected);
    }
}

#[test]
fn tls_and_session_options() {
    let mut row = broker(1, "iot.example", 8883);
    row.use_tls = Some(true);
    row.ca_cert = Some("/etc/ssl/ca.pem".into());
    row.client_cert = Some("-----BEGIN CERTIFICATE-----".into());
    row.client_key = Some(Secret::new("/etc/ssl/client.key"));
    row.client_id = Some("{gateway_id}-iot".into());
    row.keep_alive = Some(120);
    row.clean_session = Some(true);
    let (catalog, problems) = validate(&[row], &[]);
    assert!(problems.is_empty(), "{problems:?}");
    let valid = &catalog.brokers[0];
    let tls = valid.tls.as_ref().expect("tls");
    assert!(tls.verify_cert, "verify_cert defaults to true");
    assert_eq!(tls.ca.as_deref(), Some("/etc/ssl/ca.pem"));
    assert_eq!(valid.client_id.as_deref(), Some("{gateway_id}-iot"));
    assert_eq!(valid.keep_alive, Some(Duration::from_secs(120)));
    assert!(valid.clean_session);

    // TLS columns are ignored unless use_tls is TRUE.
    let mut row = broker(1, "h", 1883);
    row.ca_cert = Some("/etc/ssl/ca.pem".into());
    assert_eq!(validate(&[row], &[]).0.brokers[0].tls, None);

    let mut cert_only = broker(2, "h", 8883);
    cert_only.use_tls = Some(true);
    cert_only.client_cert = Some("/c.pem".into());
    check_broker(
        cert_only,
        "mqtt_id=2: client_cert is set but client_key is empty",
    );
    let mut keep_alive = broker(3, "h", 1883);
    keep_alive.keep_alive = Some(0);
    check_broker(
        keep_alive,
        "mqtt_id=3: keep_alive 0 is not 1..65535 seconds",
    );
    let mut qos = broker(4, "h", 1883);
    qos.qos = Some(3);
    check_broker(qos, "mqtt_id=4: qos 3 is not 0, 1 or 2");
}

#[test]
fn prefix_shared_group_and_default_qos_shape_the_subscriptions() {
    let mut shared = broker(1, "h", 1883);
    shared.topic_prefix = Some("site-7/".into());
    shared.use_shared_subscriptions = Some(true);
    shared.qos = Some(2);
    let mut grouped = broker(2, "h", 1883);
    grouped.use_shared_subscriptions = Some(true);
    grouped.shared_group = Some("fleet-a".into());
    let mut no_qos = topic(3, Some(1), "own/+", 0);
    no_qos.qos = None;
    let (catalog, problems) = validate(
        &[shared, grouped],
        &[topic(1, None, "sensors/#", 1), no_qos],
    );
    assert!(problems.is_empty(), "{problems:?}");
    let filters = |i: usize| {
        catalog.brokers[i]
            .topics
            .iter()
            .map(|t| (t.filter.as_str(), t.qos))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        filters(0),
        vec![
            ("$share/mqtt-kinesis-bridge/site-7/own/+", 2),
            ("$share/mqtt-kinesis-bridge/site-7/sensors/#", 1),
        ]
    );
    assert_eq!(filters(1), vec![("$share/fleet-a/sensors/#", 1)]);

    let mut bad_group = broker(2, "h", 1883);
    bad_group.use_shared_subscriptions = Some(true);
    bad_group.shared_group = Some("a/b".into());
    check_broker(bad_group, "mqtt_id=2: shared_group \"a/b\" must not hold");
    let mut bad_prefix = broker(3, "h", 1883);
    bad_prefix.topic_prefix = Some("site/#/".into());
    check_broker(
        bad_prefix,
        "mqtt_id=3: topic_prefix \"site/#/\" must not hold",
    );
}

#[test]
fn sealed_passwords_open_with_the_key_and_fail_only_their_broker() {
    use crate::sealed::SealKey;
    let key = SealKey::from_base64(&SealKey::generate()).unwrap();
    let other = SealKey::from_base64(&SealKey::generate()).unwrap();
    let row = |id: i64, password: String| BrokerRow {
        username: Some("gw".into()),
        password: Some(Secret::new(password)),
        ..broker(id, "h", 1883)
    };
    let rows = [
        row(1, key.seal("pw-one")),
        row(2, other.seal("pw-two")),
        row(3, "plain-three".into()),
    ];
    let (catalog, problems) = super::validate(&rows, &[], Some(&key));
    let passwords: Vec<(i64, &str)> = catalog
        .brokers
        .iter()
        .map(|b| (b.id, b.password.as_ref().unwrap().expose()))
        .collect();
    assert_eq!(passwords, vec![(1, "pw-one"), (3, "plain-three")]);
    assert_eq!(problems.len(), 1);
    let message = problems[0].to_string();
    assert!(
        message.starts_with("mqtt_broker row mqtt_id=2: mqtt_password: ")
            && message.contains("wrong key"),
        "{message}"
    );
    assert!(!message.contains("pw-two"));

    let (catalog, problems) = validate(&rows, &[]);
    assert_eq!(catalog.brokers.len(), 1);
    assert!(
        problems[0]
            .to_string()
            .contains("mqtt_password is encrypted (enc:v1:) but the gateway has no key"),
        "{problems:?}"
    );
}

#[test]
fn a_v2_value_opens_in_its_row_only_and_a_copy_elsewhere_skips_that_broker() {
    use crate::sealed::{Binding, SealKey};
    let key = SealKey::from_base64(&SealKey::generate()).unwrap();
    let for_row = |id: i64, column: &'static str, plaintext: &str| {
        key.seal_for(
            plaintext,
            Binding {
                broker_id: id,
                column,
            },
        )
    };
    let sealed_for_1 = for_row(1, "mqtt_password", "pw-one");
    let row = |id: i64, password: String| BrokerRow {
        username: Some("gw".into()),
        password: Some(Secret::new(password)),
        ..broker(id, "h", 1883)
    };
    let mut key_in_password_column = row(3, for_row(3, "client_key", "pw-three"));
    key_in_password_column.username = Some("gw".into());
    let rows = [
        row(1, sealed_for_1.clone()),
        // Copied into another row: it must not open there.
        row(2, sealed_for_1),
        key_in_password_column,
        row(4, "plain-four".into()),
    ];
    let (catalog, problems) = super::validate(&rows, &[], Some(&key));
    let opened: Vec<(i64, &str, bool)> = catalog
        .brokers
        .iter()
        .map(|b| (b.id, b.password.as_ref().unwrap().expose(), b.sealed_secret))
        .collect();
    assert_eq!(opened, vec![(1, "pw-one", true), (4, "plain-four", false)]);
    let messages: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert!(
        messages[0].starts_with("mqtt_broker row mqtt_id=2: mqtt_password: ")
            && messages[0].contains("sealed for another broker row or column"),
        "{messages:?}"
    );
    assert!(
        messages[1].starts_with("mqtt_broker row mqtt_id=3: mqtt_password: "),
        "{messages:?}"
    );
    assert!(messages.iter().all(|m| !m.contains("pw-")), "{messages:?}");
}

/// Issue 14, found by the fuzz target `topic_filter`: the 1 KiB limit holds
/// for the filter as subscribed, `$share/{group}/` included.
#[test]
fn the_share_group_counts_toward_the_filter_limit() {
    let mut shared = broker(2, "h", 1883);
    shared.use_shared_subscriptions = Some(true);
    let long = "a/".repeat(500) + "b"; // 1001 bytes: fits alone, not after `$share/mqtt-kinesis-bridge/`
    let (catalog, problems) = validate(
        &[broker(1, "good.example", 1883), shared],
        &[topic(1, None, &long, 1)],
    );
    assert_eq!(catalog.brokers.len(), 1, "{problems:?}");
    assert_eq!(catalog.brokers[0].topics[0].filter, long);
    assert_eq!(problems.len(), 1, "{problems:?}");
    let message = problems[0].to_string();
    assert!(
        message.starts_with("mqtt_broker row mqtt_id=2: $share/\"mqtt-kinesis-bridge\"/")
            && message.contains("longer than 1024 bytes"),
        "{message:?}"
    );
}

/// Issue 14, found by the fuzz target `catalog_rows`: a huge cell is quoted
/// as an excerpt in every problem, so it cannot flood the log.
#[test]
fn huge_cells_are_quoted_as_excerpts() {
    let huge = "\u{13}".repeat(100_000);
    let mut rows = Vec::new();
    for (mqtt_id, column) in ["host", "failover", "client_id", "prefix", "group"]
        .into_iter()
        .enumerate()
    {
        let mut row = broker(mqtt_id as i64 + 2, "h", 1883);
        match column {
            "host" => row.host = Some(format!("a {huge}")),
            "failover" => row.failover = Some(format!("[{huge}")),
            "client_id" => row.client_id = Some(huge.clone()),
            "prefix" => row.topic_prefix = Some(format!("#{huge}")),
            _ => {
                row.use_shared_subscriptions = Some(true);
                row.shared_group = Some(format!("/{huge}"));
            }
        }
        rows.push(row);
    }
    let (catalog, problems) = validate(&rows, &[]);
    assert!(catalog.brokers.is_empty());
    assert_eq!(problems.len(), 5, "{problems:?}");
    for problem in problems {
        let message = problem.to_string();
        assert!(message.len() < 2000, "{} bytes: {message}", message.len());
        assert!(message.contains("… (100"), "{message}");
    }
}

/// Issue 16: `device_id_level` is 1..32 (`LEVEL_RANGE` says so) or NULL; a bad value skips its row
/// naming the row and the column; a filter in several rows takes the level
/// of the lowest topic_id that sets one.
#[test]
fn device_id_levels_are_checked_and_merged() {
    let with_level = |topic_id: i64, mqtt_id: Option<i64>, filter: &str, level: Option<i64>| {
        let mut row = topic(topic_id, mqtt_id, filter, 1);
        row.device_id_level = level;
        row
    };
    for bad in [0, 33, -1, 70_000] {
        let (catalog, problems) = validate(
            &[broker(1, "h", 1883)],
            &[
                with_level(7, None, "bad/+", Some(bad)),
                topic(8, None, "good", 1),
            ],
        );
        assert_eq!(
            catalog.brokers[0].topics.len(),
            1,
            "the good row still runs"
        );
        assert_eq!(
            problems[0].to_string(),
            format!("mqtt_topic row topic_id=7: device_id_level {bad} is not 1..32")
        );
    }
    let (catalog, problems) = validate(
        &[broker(1, "h", 1883)],
        &[
            with_level(5, Some(1), "plant/#", Some(3)),
            with_level(4, None, "plant/#", None),
            with_level(9, None, "plant/#", Some(2)),
            with_level(2, None, "other/#", None),
            with_level(3, None, "one/+", Some(1)),
        ],
    );
    assert!(problems.is_empty(), "{problems:?}");
    let levels: Vec<(&str, Option<u8>)> = catalog.brokers[0]
        .topics
        .iter()
        .map(|t| (t.filter.as_str(), t.device_id_level))
        .collect();
    assert_eq!(
        levels,
        [("one/+", Some(1)), ("other/#", None), ("plant/#", Some(3))]
    );
}

/// Issue 17: a problem carries its row and column as values, not only as text.
#[test]
fn problems_name_their_row_and_column_as_values() {
    let mut bad_port = broker(4, "h", 70000);
    bad_port.keep_alive = Some(30);
    let mut bad_failover = broker(5, "h", 1883);
    bad_failover.failover = Some("[::1".into());
    let (_, problems) = validate(&[bad_port, bad_failover], &[topic(9, Some(4), "a/#/b", 1)]);
    assert_eq!(
        problems,
        vec![
            RowProblem::Broker {
                mqtt_id: 4,
                error: RowError::OutOfRange {
                    column: "mqtt_port",
                    value: 70000,
                    accepted: "is out of range 1..65535",
                },
            },
            RowProblem::Broker {
                mqtt_id: 5,
                error: RowError::Failover {
                    entry: "[::1".into(),
                    problem: EndpointProblem::NoClosingBracket,
                },
            },
            RowProblem::Topic {
                topic_id: 9,
                error: RowError::TopicFilter {
                    topic: "a/#/b".into(),
                    why: "'#' must be a whole level and the last one",
                },
            },
        ]
    );
    let columns: Vec<_> = problems
        .iter()
        .map(|problem| match problem {
            RowProblem::Broker { error, .. }
            | RowProblem::Topic { error, .. }
            | RowProblem::Unnamed { error, .. } => error.column(),
        })
        .collect();
    assert_eq!(
        columns,
        [Some("mqtt_port"), Some("mqtt_failover"), Some("topic")]
    );
    assert_eq!(
        problems[1].to_string(),
        "mqtt_broker row mqtt_id=5: mqtt_failover entry \"[::1\" lacks the closing ']'"
    );

    let mut sealed = broker(6, "h", 1883);
    sealed.username = Some("u".into());
    sealed.password = Some(Secret::new(crate::sealed::PREFIX_V2.to_owned() + "AAAA"));
    let (_, problems) = validate(&[sealed], &[]);
    assert_eq!(
        problems,
        [RowProblem::Broker {
            mqtt_id: 6,
            error: RowError::NoKey {
                column: "mqtt_password",
                format: "enc:v2:",
            },
        }]
    );
    assert!(problems[0]
        .to_string()
        .starts_with("mqtt_broker row mqtt_id=6: mqtt_password is encrypted (enc:v2:) but"));
}

#[test]
fn an_unnamed_row_says_it_was_skipped() {
    let problem = RowProblem::Unnamed {
        table: "mqtt_broker",
        error: RowError::NullId,
    };
    assert_eq!(
        problem.to_string(),
        "mqtt_broker row: mqtt_id is NULL: the row cannot be told apart, skipped"
    );
}
