//! What the drain's requests came to, counted for the metrics: requests by
//! outcome, refused records by Kinesis error code, request durations.
//!
//! Atomics only, in fixed arrays: the drain thread adds, any thread reads.
//! Error codes are a closed list (with `other`), so a strange answer cannot
//! grow the set of series.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::put_records::{FailureKind, Outcome, RequestFailure};
use crate::histogram::Histogram;

/// How a PutRecords request ended, as the metrics label it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestOutcome {
    /// Kinesis answered 2xx with a readable result (records in it may still have failed).
    Ok,
    /// Kinesis throttled the whole request.
    Throttled,
    /// Kinesis answered with any other error (4xx, 5xx, an unreadable answer).
    Error,
    /// No answer: connection, TLS, DNS, timeout.
    Network,
}

impl RequestOutcome {
    pub const ALL: [RequestOutcome; 4] = [
        RequestOutcome::Ok,
        RequestOutcome::Throttled,
        RequestOutcome::Error,
        RequestOutcome::Network,
    ];

    pub fn label(self) -> &'static str {
        match self {
            RequestOutcome::Ok => "ok",
            RequestOutcome::Throttled => "throttled",
            RequestOutcome::Error => "error",
            RequestOutcome::Network => "network",
        }
    }

    pub fn of(result: &Result<Outcome, RequestFailure>) -> RequestOutcome {
        match result {
            Ok(_) => RequestOutcome::Ok,
            Err(failure) if failure.kind == FailureKind::Throttled => RequestOutcome::Throttled,
            Err(failure) if failure.status == 0 => RequestOutcome::Network,
            Err(_) => RequestOutcome::Error,
        }
    }
}

/// The per-record error codes Kinesis documents for PutRecords; anything
/// else counts as `other`.
pub const ERROR_CODES: [&str; 9] = [
    "ProvisionedThroughputExceededException",
    "InternalFailure",
    "ServiceUnavailable",
    "KMSThrottlingException",
    "KMSAccessDeniedException",
    "KMSDisabledException",
    "KMSInvalidStateException",
    "KMSNotFoundException",
    "KMSOptInRequired",
];
/// The label of a code not in [`ERROR_CODES`].
pub const OTHER_CODE: &str = "other";

/// The index of `code` in [`ERROR_CODES`], or `ERROR_CODES.len()` for `other`.
pub fn error_code_idx(code: &str) -> usize {
    ERROR_CODES
        .iter()
        .position(|known| *known == code)
        .unwrap_or(ERROR_CODES.len())
}

/// Shared between the drain thread (adds) and the metrics (reads).
#[derive(Debug, Default)]
pub struct DrainStats {
    requests: [AtomicU64; RequestOutcome::ALL.len()],
    /// By [`error_code_idx`]; the last one is `other`.
    failed_records: [AtomicU64; ERROR_CODES.len() + 1],
    request_durations: Histogram,
    /// Kinesis records the stream accepted; with KPL aggregation one carries many messages.
    kinesis_records: AtomicU64,
    /// Messages (spool records) those Kinesis records carried.
    messages: AtomicU64,
}

/// What the drain has stored in the stream since the gateway started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stored {
    pub kinesis_records: u64,
    pub messages: u64,
}

impl DrainStats {
    pub fn record_request(&self, result: &Result<Outcome, RequestFailure>, duration: Duration) {
        let outcome = RequestOutcome::of(result);
        self.requests[outcome as usize].fetch_add(1, Ordering::Relaxed);
        self.request_durations.observe(duration);
        if let Ok(outcome) = result {
            for (count, counter) in outcome.failed_codes.iter().zip(&self.failed_records) {
                if *count > 0 {
                    counter.fetch_add(u64::from(*count), Ordering::Relaxed);
                }
            }
        }
    }

    /// After an answered request: `kinesis_records` accepted, carrying `messages`.
    pub fn record_stored(&self, kinesis_records: usize, messages: usize) {
        self.kinesis_records
            .fetch_add(kinesis_records as u64, Ordering::Relaxed);
        self.messages.fetch_add(messages as u64, Ordering::Relaxed);
    }

    pub fn stored(&self) -> Stored {
        Stored {
            kinesis_records: self.kinesis_records.load(Ordering::Relaxed),
            messages: self.messages.load(Ordering::Relaxed),
        }
    }

    pub fn requests(&self, outcome: RequestOutcome) -> u64 {
        self.requests[outcome as usize].load(Ordering::Relaxed)
    }

    /// (code, records refused with it), `other` last.
    pub fn failed_records(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        ERROR_CODES
            .iter()
            .copied()
            .chain([OTHER_CODE])
            .zip(&self.failed_records)
            .map(|(code, counter)| (code, counter.load(Ordering::Relaxed)))
    }

    pub fn request_durations(&self) -> &Histogram {
        &self.request_durations
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(kind: FailureKind, status: u16) -> Result<Outcome, RequestFailure> {
        Err(RequestFailure {
            kind,
            status,
            detail: String::new(),
        })
    }

    #[test]
    fn requests_are_counted_by_outcome_and_records_by_error_code() {
        let stats = DrainStats::default();
        let mut outcome = Outcome::default();
        outcome.failed_codes[error_code_idx("ProvisionedThroughputExceededException")] += 2;
        outcome.failed_codes[error_code_idx("SomethingNew")] += 1;
        let second = Duration::from_secs(1);
        stats.record_request(&Ok(outcome), second);
        stats.record_request(&failure(FailureKind::Throttled, 400), second);
        stats.record_request(&failure(FailureKind::Unavailable, 503), second);
        stats.record_request(&failure(FailureKind::Unavailable, 0), second);
        stats.record_request(&failure(FailureKind::NotAuthorized, 403), second);
        let by_outcome = RequestOutcome::ALL.map(|outcome| stats.requests(outcome));
        assert_eq!(by_outcome, [1, 1, 2, 1]);
        let failed: Vec<_> = stats.failed_records().filter(|(_, n)| *n > 0).collect();
        assert_eq!(
            failed,
            [("ProvisionedThroughputExceededException", 2), ("other", 1)]
        );
        assert_eq!(stats.request_durations().fold().count, 5);
    }

    #[test]
    fn kinesis_records_and_messages_are_counted_apart() {
        let stats = DrainStats::default();
        assert_eq!(stats.stored(), Stored::default());
        stats.record_stored(2, 250);
        stats.record_stored(3, 3);
        assert_eq!(
            stats.stored(),
            Stored {
                kinesis_records: 5,
                messages: 253
            }
        );
    }
}
