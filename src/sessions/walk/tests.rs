use super::*;

const MIN: Duration = Duration::from_millis(100);
const MAX: Duration = Duration::from_secs(30);

fn failure(up_for: Option<Duration>, description: &str) -> Failure {
    Failure {
        up_for,
        description: description.into(),
        auth_refused: false,
        out_of_descriptors: None,
    }
}

fn at(endpoints: &[String], index: usize) -> Position<'_> {
    Position {
        broker_id: 7,
        endpoints,
        index,
        username: Some("gw"),
    }
}

fn endpoints(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("10.0.0.{}:1883", i + 5)).collect()
}

const REFUSED: &str = "connection refused (os error 111)";

/// One step of a walk: where it failed, how, and what must follow.
struct Step {
    index: usize,
    up_for: Option<Duration>,
    auth_refused: bool,
    next_index: usize,
    /// `None`: any backoff within MIN..=MAX; `Some`: exactly this.
    delay: Option<Duration>,
    level: log::Level,
    line: &'static str,
}

fn run(n_endpoints: usize, steps: &[Step]) {
    let endpoints = endpoints(n_endpoints);
    let mut walk = Walk::new(MIN, MAX);
    for (i, step) in steps.iter().enumerate() {
        let mut failure = failure(step.up_for, REFUSED);
        failure.auth_refused = step.auth_refused;
        if step.auth_refused {
            failure.description = "broker refused the connection: bad user name or password".into();
        }
        // random 0.0: the backoff's lower bound, so lines are exact.
        let decision = walk.after_error(&at(&endpoints, step.index), &failure, 0.0);
        assert_eq!(decision.next_index, step.next_index, "step {i}");
        match step.delay {
            Some(delay) => assert_eq!(decision.delay, delay, "step {i}"),
            None => assert!(
                (MIN..=MAX).contains(&decision.delay),
                "step {i}: {:?}",
                decision.delay
            ),
        }
        assert_eq!(decision.level, step.level, "step {i}: {}", decision.line);
        assert_eq!(decision.line, step.line, "step {i}");
    }
}

#[test]
fn a_failed_attempt_tries_the_next_endpoint_at_once_then_the_walk_backs_off() {
    use log::Level::*;
    run(
        3,
        &[
            Step {
                index: 0,
                up_for: None,
                auth_refused: false,
                next_index: 1,
                delay: Some(Duration::ZERO),
                level: Warn,
                line: "broker 7: endpoint 1/3 10.0.0.5:1883 failed: connection refused (os error 111); trying the next endpoint",
            },
            Step {
                index: 1,
                up_for: None,
                auth_refused: false,
                next_index: 2,
                delay: Some(Duration::ZERO),
                level: Warn,
                line: "broker 7: endpoint 2/3 10.0.0.6:1883 failed: connection refused (os error 111); trying the next endpoint",
            },
            Step {
                index: 2,
                up_for: None,
                auth_refused: false,
                next_index: 0,
                delay: Some(MIN),
                level: Warn,
                line: "broker 7: endpoint 3/3 10.0.0.7:1883 failed: connection refused (os error 111); retrying from endpoint 1/3 in 100.0ms",
            },
            // The same failure again at the primary: quiet.
            Step {
                index: 0,
                up_for: None,
                auth_refused: false,
                next_index: 1,
                delay: Some(Duration::ZERO),
                level: Warn,
                line: "broker 7: endpoint 1/3 10.0.0.5:1883 failed: connection refused (os error 111); trying the next endpoint",
            },
        ],
    );
}

#[test]
fn a_lost_connection_starts_over_from_the_primary_and_says_disconnected() {
    use log::Level::*;
    run(
        2,
        &[Step {
            index: 1,
            up_for: Some(Duration::from_secs(60)),
            auth_refused: false,
            next_index: 0,
            delay: Some(MIN),
            level: Warn,
            line: "broker 7: endpoint 2/2 10.0.0.6:1883: disconnected: connection refused (os error 111); retrying from endpoint 1/2 in 100.0ms",
        }],
    );
}

#[test]
fn refused_credentials_wait_the_maximum_and_name_the_user() {
    use log::Level::*;
    run(
        1,
        &[Step {
            index: 0,
            up_for: None,
            auth_refused: true,
            next_index: 0,
            delay: Some(MAX),
            level: Error,
            line: "broker 7 (10.0.0.5:1883): broker refused the connection: bad user name or password (user \"gw\"): fix the credentials in the catalog; retrying in 30.0s",
        }],
    );
}

#[test]
fn an_exact_repeat_is_logged_at_debug_until_a_connection_succeeds() {
    let endpoints = endpoints(1);
    let mut walk = Walk::new(MIN, MAX);
    let first = walk.after_error(&at(&endpoints, 0), &failure(None, REFUSED), 0.0);
    assert_eq!(first.level, log::Level::Warn);
    assert_eq!(walk.attempt_level(), log::Level::Debug, "a walk failed");
    let again = walk.after_error(&at(&endpoints, 0), &failure(None, REFUSED), 0.0);
    assert_eq!(again.level, log::Level::Debug);
    assert_eq!(
        again.line,
        "broker 7 (10.0.0.5:1883): cannot connect: connection refused (os error 111); retrying in 200.0ms"
            .replace("200.0ms", &format!("{:.1?}", again.delay)),
    );
    // Other words are news.
    let other = walk.after_error(&at(&endpoints, 0), &failure(None, "connect timed out"), 0.0);
    assert_eq!(other.level, log::Level::Warn);
    walk.on_connected();
    assert_eq!(walk.attempt_level(), log::Level::Info);
    let after = walk.after_error(&at(&endpoints, 0), &failure(None, "connect timed out"), 0.0);
    assert_eq!(
        after.level,
        log::Level::Warn,
        "news again after a connection"
    );
}

#[test]
fn out_of_descriptors_names_the_limit_once() {
    let endpoints = endpoints(1);
    let mut walk = Walk::new(MIN, MAX);
    let mut emfile = failure(None, "too many open files (os error 24)");
    emfile.out_of_descriptors = Some(OpenFilesLimit(Some(256)));
    let first = walk.after_error(&at(&endpoints, 0), &emfile, 0.0);
    assert_eq!(first.level, log::Level::Error);
    assert!(
        first.line.contains(
            "has used up its open files limit (256, one per broker connection): raise LimitNOFILE"
        ),
        "{}",
        first.line
    );
    let again = walk.after_error(&at(&endpoints, 0), &emfile, 0.0);
    assert_eq!(again.level, log::Level::Debug);
}

#[test]
fn backoff_grows_across_failed_walks_and_a_stable_connection_resets_it() {
    let endpoints = endpoints(1);
    let mut walk = Walk::new(MIN, MAX);
    // random 1.0: the ceiling, which doubles per failure.
    let delays: Vec<Duration> = (0..4)
        .map(|_| {
            walk.after_error(&at(&endpoints, 0), &failure(None, REFUSED), 1.0)
                .delay
        })
        .collect();
    assert_eq!(
        delays,
        [100, 200, 400, 800].map(Duration::from_millis).to_vec()
    );
    let stable = failure(Some(Duration::from_secs(60)), REFUSED);
    assert_eq!(
        walk.after_error(&at(&endpoints, 0), &stable, 1.0).delay,
        MIN,
        "a connection up for a minute starts the backoff over"
    );
}
