//! The drain's probe for the `check` command: fetch credentials once from the
//! configured source, then one signed DescribeStreamSummary of the stream,
//! with the answer's `Date` against this machine's clock.
//!
//! It returns what it found as values; the wording of `check`'s lines is
//! `check`'s. Not here: PutRecords, the credentials thread.

use std::time::{Duration, Instant};

use super::client::Client;
pub use super::client::{DescribeFailure, DescribeFailureKind, StreamSummary};
use super::credentials::CredentialsError;
use super::refresher;
use crate::config::KinesisConfig;

/// How far this machine's clock may be off AWS's (or the database's) before
/// it is worth a warning, in ms (SigV4 allows 5 minutes).
pub use super::skew::WARN_MS as CLOCK_WARN_MS;

/// What the Kinesis probe found.
#[derive(Debug)]
pub enum KinesisProbe {
    /// No usable credentials: Kinesis was not asked.
    NoCredentials(CredentialsError),
    /// Kinesis was asked.
    Asked {
        /// Where the credentials came from, and when they expire, in words.
        credentials: String,
        /// From the request to its answer.
        latency: Duration,
        /// AWS's clock (the answer's `Date`) minus ours, in ms, when there was an answer.
        clock_offset_ms: Option<i64>,
        answer: Result<StreamSummary, DescribeFailure>,
    },
}

/// Asks Kinesis about the configured stream once (blocking: HTTP, perhaps a `credential_process`).
pub fn probe(config: &KinesisConfig) -> KinesisProbe {
    let credentials = match refresher::fetch_once(&config.credentials) {
        Ok(credentials) => credentials,
        Err(error) => return KinesisProbe::NoCredentials(error),
    };
    let started = Instant::now();
    let mut client = Client::new(config);
    let answer = client.describe_stream_summary(&credentials);
    let latency = started.elapsed();
    KinesisProbe::Asked {
        credentials: refresher::describe(&credentials),
        latency,
        clock_offset_ms: client.last_clock_sample_ms(),
        answer,
    }
}
