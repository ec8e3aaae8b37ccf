use super::*;

use log::Level::{Error, Info, Warn};

const MIN: Duration = Duration::from_millis(100);
const MAX: Duration = Duration::from_secs(30);

fn endpoints(n: usize) -> Vec<Endpoint> {
    (0..n)
        .map(|i| Endpoint {
            host: format!("10.0.0.{}", i + 5),
            port: 1883,
        })
        .collect()
}

fn topics(filters: &[&str]) -> Vec<Topic> {
    filters
        .iter()
        .map(|filter| Topic {
            filter: (*filter).to_owned(),
            qos: 1,
            device_id_level: None,
        })
        .collect()
}

fn ack(pkid: u16) -> Ack {
    Ack {
        pkid,
        qos: QoS::AtLeastOnce,
    }
}

fn log(level: log::Level, line: &str) -> Output {
    Output::Log(level, line.to_owned())
}

/// What the next write would send, in words; drains the queue as `wire::write` does.
fn write(state: &mut LinkState<u32>) -> Vec<String> {
    let (queued, awaiting_subacks) = state.outgoing();
    let mut written: Vec<String> = queued
        .acks
        .drain(..)
        .map(|ack| match ack.qos {
            QoS::ExactlyOnce => format!("PUBREC {}", ack.pkid),
            _ => format!("PUBACK {}", ack.pkid),
        })
        .collect();
    for outbound in queued.outbox.drain(..) {
        written.push(match outbound {
            Outbound::Subscribe(filters) => {
                let paths: Vec<String> = filters.iter().map(|f| f.path.clone()).collect();
                let line = format!("SUBSCRIBE {}", paths.join(" "));
                awaiting_subacks.push_back(paths);
                line
            }
            Outbound::Unsubscribe(filter) => format!("UNSUBSCRIBE {filter}"),
            Outbound::Disconnect => "DISCONNECT".to_owned(),
        });
    }
    if std::mem::take(&mut queued.ping) {
        written.push("PINGREQ".to_owned());
    }
    written
}

/// A step before the input under test.
enum Step {
    In(Input<u32>),
    /// The connection failed.
    Lost,
}

/// One transition: the state the steps lead to, one input, what must follow.
struct Case {
    name: &'static str,
    /// The broker's endpoints and the one connected to.
    n_endpoints: usize,
    endpoint_idx: usize,
    topics: &'static [&'static str],
    steps: Vec<Step>,
    input: Input<u32>,
    outputs: Vec<Output>,
    /// Written at the next turn (what the steps queued was written before the input).
    written: &'static [&'static str],
    /// Acks still waiting for their commit afterwards.
    n_unacked: usize,
    stopping: bool,
}

impl Default for Case {
    fn default() -> Case {
        Case {
            name: "",
            n_endpoints: 1,
            endpoint_idx: 0,
            topics: &["a", "b"],
            steps: Vec::new(),
            input: Input::Ping,
            outputs: Vec::new(),
            written: &[],
            n_unacked: 0,
            stopping: false,
        }
    }
}

fn check(case: Case) {
    let endpoints = endpoints(case.n_endpoints);
    let topics = topics(case.topics);
    let at = Place {
        broker_id: 7,
        endpoints: &endpoints,
        endpoint_idx: case.endpoint_idx,
        topics: &topics,
    };
    let start = Instant::now();
    let mut state = LinkState::new(MIN, MAX);
    for step in case.steps {
        match step {
            Step::In(input) => {
                state.handle(input, &at, start);
            }
            Step::Lost => {
                state.on_connection_lost(start);
            }
        }
        write(&mut state);
    }
    let now = start + Duration::from_secs(1);
    let outputs = state.handle(case.input, &at, now);
    assert_eq!(outputs, case.outputs, "{}: outputs", case.name);
    assert_eq!(write(&mut state), case.written, "{}: written", case.name);
    assert_eq!(state.n_unacked(), case.n_unacked, "{}: unacked", case.name);
    assert_eq!(
        state.stop_deadline().is_some(),
        case.stopping,
        "{}: stopping",
        case.name
    );
}

/// Connected to the broker with two messages awaiting their commit.
fn connected_with_unacked() -> Vec<Step> {
    vec![
        Step::In(Input::ConnAck),
        Step::In(Input::Received(ack(1), 1)),
        Step::In(Input::Received(ack(2), 2)),
    ]
}

fn connected_with_unacked_then(more: Vec<Step>) -> Vec<Step> {
    let mut steps = connected_with_unacked();
    steps.extend(more);
    steps
}

const LABEL: &str = "broker 7 (10.0.0.5:1883)";

#[test]
fn connack_subscribes_to_everything_and_announces_at_the_first_suback() {
    let cases = [
        Case {
            name: "connack subscribes every topic in one packet",
            input: Input::ConnAck,
            outputs: vec![Output::Status(StatusChange::Connected)],
            written: &["SUBSCRIBE a b"],
            ..Case::default()
        },
        Case {
            name: "no topics: connected and announced at once",
            topics: &[],
            input: Input::ConnAck,
            outputs: vec![
                Output::Status(StatusChange::Connected),
                log(Info, &format!("{LABEL}: connected, subscribed to 0 topics")),
            ],
            ..Case::default()
        },
        Case {
            name: "an invalid filter is left out with a warning",
            topics: &["a/#/b", "ok"],
            input: Input::ConnAck,
            outputs: vec![
                Output::Status(StatusChange::Connected),
                log(
                    Warn,
                    "not subscribing to \"a/#/b\": not a valid MQTT topic filter",
                ),
            ],
            written: &["SUBSCRIBE ok"],
            ..Case::default()
        },
        Case {
            name: "connected to a secondary: said, and the primary is probed",
            n_endpoints: 2,
            endpoint_idx: 1,
            input: Input::ConnAck,
            outputs: vec![
                log(Info, "broker 7: connected to endpoint 2/2 10.0.0.6:1883"),
                Output::StartPrimaryProbe,
                Output::Status(StatusChange::Connected),
            ],
            written: &["SUBSCRIBE a b"],
            ..Case::default()
        },
        Case {
            name: "connected to the primary of two: said, no probe",
            n_endpoints: 2,
            input: Input::ConnAck,
            outputs: vec![
                log(Info, "broker 7: connected to endpoint 1/2 10.0.0.5:1883"),
                Output::Status(StatusChange::Connected),
            ],
            written: &["SUBSCRIBE a b"],
            ..Case::default()
        },
        Case {
            name: "a connack while stopping subscribes, then disconnects",
            steps: vec![
                Step::In(Input::ConnAck),
                Step::In(Input::Received(ack(1), 1)),
                Step::In(Input::Stop),
                Step::Lost,
            ],
            input: Input::ConnAck,
            outputs: vec![Output::Status(StatusChange::Connected)],
            written: &["SUBSCRIBE a b", "DISCONNECT"],
            stopping: true,
            ..Case::default()
        },
        Case {
            name: "suback: counted and announced",
            steps: vec![Step::In(Input::ConnAck)],
            input: Input::SubAck(vec![
                SubscribeReasonCode::Success(QoS::AtLeastOnce),
                SubscribeReasonCode::Success(QoS::AtMostOnce),
            ]),
            outputs: vec![
                Output::Status(StatusChange::SubAcked { n_accepted: 2 }),
                log(Info, &format!("{LABEL}: connected, subscribed to 2 topics")),
            ],
            ..Case::default()
        },
        Case {
            name: "suback failure codes: warned and not counted",
            steps: vec![Step::In(Input::ConnAck)],
            input: Input::SubAck(vec![
                SubscribeReasonCode::Failure,
                SubscribeReasonCode::Success(QoS::AtLeastOnce),
            ]),
            outputs: vec![
                log(
                    Warn,
                    &format!("{LABEL}: broker refused the subscription to \"a\""),
                ),
                Output::Status(StatusChange::SubAcked { n_accepted: 1 }),
                log(Info, &format!("{LABEL}: connected, subscribed to 2 topics")),
            ],
            ..Case::default()
        },
        Case {
            name: "a later suback is counted, not announced again",
            steps: vec![
                Step::In(Input::ConnAck),
                Step::In(Input::SubAck(vec![SubscribeReasonCode::Failure; 2])),
                Step::In(Input::UpdateTopics {
                    subscribe: topics(&["c"]),
                    unsubscribe: Vec::new(),
                }),
            ],
            input: Input::SubAck(vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]),
            outputs: vec![Output::Status(StatusChange::SubAcked { n_accepted: 1 })],
            ..Case::default()
        },
        Case {
            name: "unsuback: counted",
            steps: vec![Step::In(Input::ConnAck)],
            input: Input::UnsubAck,
            outputs: vec![Output::Status(StatusChange::UnsubAcked)],
            ..Case::default()
        },
    ];
    for case in cases {
        check(case);
    }
}

#[test]
fn commits_are_acknowledged_in_order_and_a_stop_waits_for_them() {
    let cases = [
        Case {
            name: "the committed ones are acked, in one write",
            steps: vec![
                Step::In(Input::ConnAck),
                Step::In(Input::Received(ack(1), 1)),
                Step::In(Input::Received(ack(2), 2)),
                Step::In(Input::Received(
                    Ack {
                        pkid: 3,
                        qos: QoS::ExactlyOnce,
                    },
                    3,
                )),
            ],
            input: Input::Committed(2),
            written: &["PUBACK 1", "PUBACK 2"],
            n_unacked: 1,
            ..Case::default()
        },
        Case {
            name: "qos 2 is answered with PUBREC",
            steps: vec![
                Step::In(Input::ConnAck),
                Step::In(Input::Received(
                    Ack {
                        pkid: 3,
                        qos: QoS::ExactlyOnce,
                    },
                    3,
                )),
            ],
            input: Input::Committed(1),
            written: &["PUBREC 3"],
            ..Case::default()
        },
        Case {
            name: "stop with nothing unacked: DISCONNECT at once",
            steps: vec![Step::In(Input::ConnAck)],
            input: Input::Stop,
            written: &["DISCONNECT"],
            stopping: true,
            ..Case::default()
        },
        Case {
            name: "stop with unacked commits: waits",
            steps: connected_with_unacked(),
            input: Input::Stop,
            n_unacked: 2,
            stopping: true,
            ..Case::default()
        },
        Case {
            name: "stopping: one of two committed, acked, still waiting",
            steps: connected_with_unacked_then(vec![Step::In(Input::Stop)]),
            input: Input::Committed(1),
            written: &["PUBACK 1"],
            n_unacked: 1,
            stopping: true,
            ..Case::default()
        },
        Case {
            name: "stopping: the last committed, acked, then DISCONNECT",
            steps: connected_with_unacked_then(vec![
                Step::In(Input::Stop),
                Step::In(Input::Committed(1)),
            ]),
            input: Input::Committed(1),
            written: &["PUBACK 2", "DISCONNECT"],
            stopping: true,
            ..Case::default()
        },
        Case {
            name: "a second stop changes nothing",
            steps: vec![Step::In(Input::ConnAck), Step::In(Input::Stop)],
            input: Input::Stop,
            stopping: true,
            ..Case::default()
        },
        Case {
            name: "stop while not connected: done now",
            input: Input::Stop,
            outputs: vec![Output::Done],
            ..Case::default()
        },
        Case {
            name: "the DISCONNECT written ends a stop",
            steps: vec![Step::In(Input::ConnAck), Step::In(Input::Stop)],
            input: Input::DisconnectWritten,
            outputs: vec![Output::Done],
            stopping: true,
            ..Case::default()
        },
        Case {
            name: "the stop deadline passed: warned, done",
            steps: connected_with_unacked_then(vec![Step::In(Input::Stop)]),
            input: Input::StopDeadlinePassed,
            outputs: vec![
                log(
                    Warn,
                    &format!("{LABEL}: DISCONNECT not sent within 2s; closing anyway"),
                ),
                Output::Done,
            ],
            n_unacked: 2,
            stopping: true,
            ..Case::default()
        },
        Case {
            name: "spool lost: unacked forgotten, not acked",
            steps: connected_with_unacked(),
            input: Input::SpoolLost("spool is closed".into()),
            outputs: vec![log(
                Error,
                &format!("{LABEL}: spool is closed: 2 messages stay unacknowledged"),
            )],
            ..Case::default()
        },
        Case {
            name: "spool lost while stopping: DISCONNECT",
            steps: connected_with_unacked_then(vec![Step::In(Input::Stop)]),
            input: Input::SpoolLost("spool is closed".into()),
            outputs: vec![log(
                Error,
                &format!("{LABEL}: spool is closed: 2 messages stay unacknowledged"),
            )],
            written: &["DISCONNECT"],
            stopping: true,
            ..Case::default()
        },
        Case {
            name: "keep-alive: PINGREQ",
            steps: vec![Step::In(Input::ConnAck)],
            input: Input::Ping,
            written: &["PINGREQ"],
            ..Case::default()
        },
    ];
    for case in cases {
        check(case);
    }
}

#[test]
fn topic_updates_go_out_only_while_connected() {
    let update = || Input::UpdateTopics {
        subscribe: topics(&["c", "d"]),
        unsubscribe: vec!["a".into()],
    };
    let cases = [
        Case {
            name: "connected: UNSUBSCRIBE, then SUBSCRIBE",
            steps: vec![Step::In(Input::ConnAck)],
            input: update(),
            written: &["UNSUBSCRIBE a", "SUBSCRIBE c d"],
            ..Case::default()
        },
        Case {
            name: "not connected: nothing sent (the next CONNACK subscribes)",
            input: update(),
            ..Case::default()
        },
        Case {
            name: "lost: nothing sent",
            steps: vec![Step::In(Input::ConnAck), Step::Lost],
            input: update(),
            ..Case::default()
        },
        Case {
            name: "stopping: nothing sent",
            steps: vec![
                Step::In(Input::ConnAck),
                Step::In(Input::Received(ack(1), 1)),
                Step::In(Input::Stop),
            ],
            input: update(),
            n_unacked: 1,
            stopping: true,
            ..Case::default()
        },
    ];
    for case in cases {
        check(case);
    }
}

#[test]
fn the_primary_answering_starts_a_clean_move_back() {
    let on_secondary = || vec![Step::In(Input::ConnAck)];
    let cases = [
        Case {
            name: "no answer: probe again",
            n_endpoints: 2,
            endpoint_idx: 1,
            steps: on_secondary(),
            input: Input::PrimaryProbed(false),
            outputs: vec![Output::StartPrimaryProbe],
            ..Case::default()
        },
        Case {
            name: "answered: said, DISCONNECT",
            n_endpoints: 2,
            endpoint_idx: 1,
            steps: on_secondary(),
            input: Input::PrimaryProbed(true),
            outputs: vec![log(
                Info,
                "broker 7: primary endpoint 10.0.0.5:1883 answers again; \
                 moving back from endpoint 2/2 10.0.0.6:1883",
            )],
            written: &["DISCONNECT"],
            stopping: true,
            ..Case::default()
        },
        Case {
            name: "answered with commits pending: the DISCONNECT waits for them",
            n_endpoints: 2,
            endpoint_idx: 1,
            steps: vec![
                Step::In(Input::ConnAck),
                Step::In(Input::Received(ack(1), 1)),
            ],
            input: Input::PrimaryProbed(true),
            outputs: vec![log(
                Info,
                "broker 7: primary endpoint 10.0.0.5:1883 answers again; \
                 moving back from endpoint 2/2 10.0.0.6:1883",
            )],
            n_unacked: 1,
            stopping: true,
            ..Case::default()
        },
        Case {
            name: "answered while stopping: nothing more",
            n_endpoints: 2,
            endpoint_idx: 1,
            steps: vec![Step::In(Input::ConnAck), Step::In(Input::Stop)],
            input: Input::PrimaryProbed(true),
            stopping: true,
            ..Case::default()
        },
    ];
    for case in cases {
        check(case);
    }
}

#[test]
fn a_lost_connection_forgets_its_packets_and_says_how_long_it_stood() {
    let endpoints = endpoints(1);
    let topics = topics(&["a"]);
    let at = Place {
        broker_id: 7,
        endpoints: &endpoints,
        endpoint_idx: 0,
        topics: &topics,
    };
    let start = Instant::now();
    let mut state: LinkState<u32> = LinkState::new(MIN, MAX);
    assert_eq!(state.on_connection_lost(start), None, "never connected");
    state.handle(Input::ConnAck, &at, start);
    state.handle(Input::Received(ack(1), 1), &at, start);
    state.handle(Input::Committed(1), &at, start);
    state.handle(Input::Received(ack(2), 2), &at, start);
    assert_eq!(state.unacked_receipts().collect::<Vec<_>>(), [&2]);
    let later = start + Duration::from_secs(90);
    assert_eq!(
        state.on_connection_lost(later),
        Some(Duration::from_secs(90))
    );
    assert!(!state.is_connected());
    assert_eq!(state.n_unacked(), 0);
    assert!(write(&mut state).is_empty(), "nothing of it is written");
    assert!(state.outgoing().1.is_empty(), "no SUBACK awaited");
}

#[test]
fn attempts_and_the_end_of_a_run_are_said_and_recorded() {
    let endpoints = endpoints(2);
    let at = Place {
        broker_id: 7,
        endpoints: &endpoints,
        endpoint_idx: 1,
        topics: &[],
    };
    let start = Instant::now();
    let mut state: LinkState<u32> = LinkState::new(MIN, MAX);
    assert_eq!(
        state.on_attempt(&at),
        [
            log(Info, "broker 7: trying endpoint 2/2 10.0.0.6:1883"),
            Output::Status(StatusChange::Attempt {
                endpoint: "10.0.0.6:1883".into(),
                endpoint_idx: 1,
                n_endpoints: 2,
            }),
        ]
    );
    let one = &endpoints[..1];
    let alone = Place {
        endpoints: one,
        endpoint_idx: 0,
        ..at
    };
    assert_eq!(state.on_attempt(&alone).len(), 1, "one endpoint: no line");
    assert_eq!(
        state.on_end(false, &at),
        [Output::Status(StatusChange::Ended)],
        "never connected: nothing said"
    );
    state.handle(Input::ConnAck, &at, start);
    assert_eq!(
        state.on_end(false, &at),
        [
            log(Info, "broker 7 (10.0.0.6:1883): disconnected (stopped)"),
            Output::Status(StatusChange::Ended),
        ]
    );
    assert_eq!(
        state.on_end(true, &at)[0],
        log(
            Info,
            "broker 7 (10.0.0.6:1883): disconnected (moving to the primary endpoint)"
        )
    );
}

#[test]
fn the_stop_deadline_is_the_disconnect_timeout_after_the_stop() {
    let endpoints = endpoints(1);
    let at = Place {
        broker_id: 7,
        endpoints: &endpoints,
        endpoint_idx: 0,
        topics: &[],
    };
    let start = Instant::now();
    let mut state: LinkState<u32> = LinkState::new(MIN, MAX);
    state.handle(Input::ConnAck, &at, start);
    let stop_at = start + Duration::from_secs(5);
    state.handle(Input::Stop, &at, stop_at);
    assert_eq!(state.stop_deadline(), Some(stop_at + DISCONNECT_TIMEOUT));
}

fn filters(n: usize, len: usize) -> Vec<SubscribeFilter> {
    (0..n)
        .map(|i| {
            let mut path = format!("t/{i}/");
            path.push_str(&"x".repeat(len.saturating_sub(path.len())));
            SubscribeFilter::new(path, QoS::AtLeastOnce)
        })
        .collect()
}

#[test]
fn subscribe_packets_stay_under_the_outgoing_limit_and_keep_every_filter() {
    assert!(subscribe_packets(Vec::new()).is_empty());
    assert_eq!(subscribe_packets(filters(10, 20)).len(), 1);
    // 3,000 filters of 30 bytes: 99 KB, more than one packet may carry.
    let packets = subscribe_packets(filters(3000, 30));
    assert!(packets.len() >= 2);
    let mut paths = Vec::new();
    for packet in &packets {
        let size: usize = packet.iter().map(|f| 2 + f.path.len() + 1).sum();
        assert!(size + 16 <= connect::MAX_OUTGOING_PACKET, "{size}");
        paths.extend(packet.iter().map(|f| f.path.clone()));
    }
    let wanted: Vec<String> = filters(3000, 30).into_iter().map(|f| f.path).collect();
    assert_eq!(paths, wanted, "every filter once, in order");
}
