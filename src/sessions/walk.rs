//! Pure: where a session goes after a connection error, how long it waits,
//! and what the log says about it. The shell (`session.rs`) only connects,
//! reads, writes and sleeps; every decision about the endpoint walk, the
//! backoff and the wording of a state change is made here, as data.
//!
//! The walk: the endpoints are tried in order (the primary first); a failed
//! attempt moves on at once to the next; after the last (or after losing an
//! established connection) the walk starts again from the primary, after a
//! backoff (the maximum after refused credentials: they will not fix
//! themselves). A failure repeated word for word is logged at debug, so a
//! broker down for a day leaves one line, not thousands.

use std::time::Duration;

use super::backoff::Backoff;

/// What happened, in plain values the shell reads off the error.
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    /// How long the connection had been up; `None`: connecting failed.
    pub up_for: Option<Duration>,
    /// The error in words (`connect::describe`).
    pub description: String,
    /// The broker refused our user name or password.
    pub auth_refused: bool,
    /// EMFILE: the gateway's open-files limit, not the broker.
    pub out_of_descriptors: Option<OpenFilesLimit>,
}

/// The soft open-files limit, for the EMFILE line (`None`: unknown).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenFilesLimit(pub Option<u64>);

/// Where the session stands: which broker, which endpoint of how many.
#[derive(Clone, Debug)]
pub struct Position<'a> {
    pub broker_id: i64,
    /// `host:port` of every endpoint, the primary first.
    pub endpoints: &'a [String],
    /// The endpoint that failed.
    pub index: usize,
    /// For the refused-credentials line.
    pub username: Option<&'a str>,
}

/// What to do next.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The endpoint to try next.
    pub next_index: usize,
    /// How long to wait before that.
    pub delay: Duration,
    pub level: log::Level,
    pub line: String,
}

/// The walk's memory across errors of one session run.
#[derive(Debug)]
pub struct Walk {
    backoff: Backoff,
    /// Walks over every endpoint that failed in a row.
    n_failed_walks: u32,
    /// The last failure logged (endpoint and words), to quiet exact repeats.
    last_logged: Option<(usize, String)>,
}

impl Walk {
    pub fn new(min_backoff: Duration, max_backoff: Duration) -> Walk {
        Walk {
            backoff: Backoff::new(min_backoff, max_backoff),
            n_failed_walks: 0,
            last_logged: None,
        }
    }

    /// A CONNACK: the walk succeeded; the next failure is news again.
    pub fn on_connected(&mut self) {
        self.n_failed_walks = 0;
        self.last_logged = None;
    }

    /// The level of the "trying endpoint i/n" line: info on the first walk,
    /// debug while walks keep failing.
    pub fn attempt_level(&self) -> log::Level {
        if self.n_failed_walks == 0 {
            log::Level::Info
        } else {
            log::Level::Debug
        }
    }

    /// After `failure` at `at`: the next endpoint, the wait, and the log line.
    /// `random` is uniform in `0.0..1.0` (the backoff's jitter).
    pub fn after_error(&mut self, at: &Position<'_>, failure: &Failure, random: f64) -> Decision {
        let n_endpoints = at.endpoints.len().max(1);
        let next_in_walk = failure.up_for.is_none() && at.index + 1 < n_endpoints;
        let (next_index, delay) = if next_in_walk {
            (at.index + 1, Duration::ZERO)
        } else {
            if failure.up_for.is_none() {
                self.n_failed_walks += 1;
            }
            let delay = if failure.auth_refused {
                self.backoff.after_refusal()
            } else {
                self.backoff.after_failure(failure.up_for, random)
            };
            (0, delay)
        };

        let endpoint = at.endpoints.get(at.index).map_or("?", String::as_str);
        // `broker 7: endpoint 1/2 10.0.0.5:1883 failed: …` / `broker 7 (10.0.0.5:1883): cannot connect: …`
        let (failed, cannot) = if n_endpoints > 1 {
            (
                format!(
                    "broker {}: endpoint {}/{n_endpoints} {endpoint}",
                    at.broker_id,
                    at.index + 1
                ),
                " failed",
            )
        } else {
            (
                format!("broker {} ({endpoint})", at.broker_id),
                ": cannot connect",
            )
        };
        let next = if next_in_walk {
            "trying the next endpoint".to_owned()
        } else if n_endpoints > 1 {
            format!("retrying from endpoint 1/{n_endpoints} in {delay:.1?}")
        } else {
            format!("retrying in {delay:.1?}")
        };
        let description = &failure.description;
        let logged = (at.index, description.clone());
        let repeated = self.last_logged.as_ref() == Some(&logged);
        self.last_logged = Some(logged);
        let (level, line) = if let (Some(limit), false) = (failure.out_of_descriptors, repeated) {
            let limit = limit
                .0
                .map_or("unknown".to_owned(), |soft| soft.to_string());
            (
                log::Level::Error,
                format!(
                    "{failed}: cannot connect: the gateway has used up its open files limit \
                     ({limit}, one per broker connection): raise LimitNOFILE in the unit or \
                     `ulimit -n`; {next}"
                ),
            )
        } else if failure.up_for.is_some() {
            (
                log::Level::Warn,
                format!("{failed}: disconnected: {description}; {next}"),
            )
        } else if repeated {
            (
                log::Level::Debug,
                format!("{failed}{cannot}: {description}; {next}"),
            )
        } else if failure.auth_refused {
            let user = at.username.unwrap_or("(none)");
            (
                log::Level::Error,
                format!(
                    "{failed}: {description} (user {user:?}): fix the credentials in the catalog; {next}"
                ),
            )
        } else {
            (
                log::Level::Warn,
                format!("{failed}{cannot}: {description}; {next}"),
            )
        };
        Decision {
            next_index,
            delay,
            level,
            line,
        }
    }
}

#[cfg(test)]
mod tests;
