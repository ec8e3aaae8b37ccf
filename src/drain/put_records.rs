//! The PutRecords call as data: request body out, response → what happens to each record.
//!
//! Pure. It does not sign or send (see [`super::sign`] and the drain loop), and
//! it does not decide how long to wait before a retry (`super::backoff`).
//! Per-record results map to an [`Outcome`] by position; a request that failed
//! as a whole maps to a [`RequestFailure`] whose [`FailureKind`] says what the
//! caller does next. Nothing here ever drops a record: every id sent comes back
//! as delivered, retry or dead, or the whole request is retried.

use std::borrow::Cow;
use std::fmt;

use base64::Engine;
use serde::Deserialize;

use super::batch::Entry;

/// `X-Amz-Target` of the call.
pub const TARGET: &str = "Kinesis_20131202.PutRecords";
/// `Content-Type` of the call (and of its response).
pub const CONTENT_TYPE: &str = "application/x-amz-json-1.1";

/// `{"StreamName":…,"Records":[{"Data":base64,"PartitionKey":…},…]}`.
pub fn request_body(stream: &str, entries: &[Entry]) -> Vec<u8> {
    let payload_bytes: usize = entries.iter().map(|e| e.kinesis_bytes()).sum();
    let mut body = Vec::with_capacity(payload_bytes * 4 / 3 + entries.len() * 40 + 64);
    body.extend_from_slice(b"{\"StreamName\":");
    // Serializing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut body, stream);
    body.extend_from_slice(b",\"Records\":[");
    for (entry_idx, entry) in entries.iter().enumerate() {
        if entry_idx > 0 {
            body.push(b',');
        }
        body.extend_from_slice(b"{\"Data\":\"");
        let start = body.len();
        let encoded_len = base64::encoded_len(entry.data.len(), true).unwrap_or(0);
        body.resize(start + encoded_len, 0);
        let written = base64::engine::general_purpose::STANDARD
            .encode_slice(&entry.data, &mut body[start..])
            .unwrap_or(0);
        body.truncate(start + written);
        body.extend_from_slice(b"\",\"PartitionKey\":");
        let _ = serde_json::to_writer(&mut body, &entry.partition_key);
        body.push(b'}');
    }
    body.extend_from_slice(b"]}");
    body
}

/// What Kinesis said about each record of a request it processed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Stored in the stream: delete from the spool.
    pub delivered: Vec<i64>,
    /// Throttled or failed inside Kinesis: send again (only these).
    pub retry: Vec<i64>,
    /// Refused for good: dead letters, with Kinesis' reason.
    pub dead: Vec<(i64, String)>,
    /// Records that failed (retried or dead), by `super::stats::error_code_idx`:
    /// counted here so the metrics need no string per record.
    pub failed_codes: [u32; super::stats::ERROR_CODES.len() + 1],
}

impl Outcome {
    /// The outcome per spool record when some Kinesis records carried several
    /// (KPL aggregation): `carried` maps such a record's id (its first spool
    /// record) to every spool record it carries, which share its fate.
    pub fn expand(self, carried: &std::collections::HashMap<i64, Vec<i64>>) -> Outcome {
        let spread = |id: i64| carried.get(&id).cloned().unwrap_or_else(|| vec![id]);
        Outcome {
            // Kinesis records that failed, as Kinesis counted them.
            failed_codes: self.failed_codes,
            delivered: self.delivered.into_iter().flat_map(spread).collect(),
            retry: self.retry.into_iter().flat_map(spread).collect(),
            dead: self
                .dead
                .into_iter()
                .flat_map(|(id, reason)| {
                    spread(id)
                        .into_iter()
                        .map(move |id| (id, reason.clone()))
                        .collect::<Vec<_>>()
                })
                .collect(),
        }
    }
}

/// The whole request failed; no record was stored (or we cannot tell which).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestFailure {
    pub kind: FailureKind,
    /// The HTTP status; 0 when no (complete) response arrived.
    pub status: u16,
    /// HTTP status (0 when there was no response), error type and message, for logs.
    pub detail: String,
}

/// What the caller does after a failed request. Every kind keeps the records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// Network error, timeout, 5xx: retry with backoff.
    Unavailable,
    /// Request-level throttling: retry with backoff.
    Throttled,
    /// The session token expired: reload credentials, retry.
    ExpiredCredentials,
    /// Credentials refused or not allowed to write: reload credentials, retry slowly, a human must act.
    NotAuthorized,
    /// The stream does not exist (yet): retry slowly, a human must act.
    StreamMissing,
    /// Kinesis refused the request as malformed: split the batch to find the
    /// record at fault; a single refused record goes to dead letters.
    InvalidBatch,
    /// Refused as signed at the wrong time (more than 5 minutes off AWS's
    /// clock): learn the offset from the answer and retry at once.
    ClockSkew,
    /// Anything else (an unknown error, a response we cannot read): retry slowly.
    Unexpected,
}

impl fmt::Display for RequestFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            FailureKind::Unavailable => "kinesis unavailable",
            FailureKind::Throttled => "kinesis throttled the request",
            FailureKind::ExpiredCredentials => "aws credentials expired",
            FailureKind::NotAuthorized => "aws credentials refused",
            FailureKind::StreamMissing => "kinesis stream not found",
            FailureKind::InvalidBatch => "kinesis refused the request",
            FailureKind::ClockSkew => "the gateway's clock is off",
            FailureKind::Unexpected => "unexpected kinesis response",
        };
        write!(f, "{kind}: {}", self.detail)
    }
}

/// Reads the response to a request that carried the records `sent` (in order).
pub fn parse_response(status: u16, body: &[u8], sent: &[i64]) -> Result<Outcome, RequestFailure> {
    if (200..300).contains(&status) {
        return parse_records(status, body, sent);
    }
    let (error_type, message) = aws_error(body);
    let error_type = error_type.as_str();
    let kind = if status >= 500 {
        FailureKind::Unavailable
    } else if is_clock_skew(error_type, &message) {
        FailureKind::ClockSkew
    } else {
        classify_error_type(status, error_type)
    };
    Err(RequestFailure {
        kind,
        status,
        detail: format!(
            "HTTP {status} {}{}{}",
            if error_type.is_empty() {
                "(no error type)"
            } else {
                shorten(error_type)
            },
            if message.is_empty() { "" } else { ": " },
            shorten(&message)
        ),
    })
}

/// AWS's words for a signature made at the wrong time, whatever the error type.
/// An AWS JSON error body's type (without the `com.amazonaws…#` namespace)
/// and message; empty strings for what it does not say.
pub(super) fn aws_error(body: &[u8]) -> (String, String) {
    let error: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
    let error_type = error
        .error_type
        .as_deref()
        .map(|t| t.rsplit('#').next().unwrap_or(t))
        .unwrap_or("")
        .to_owned();
    (
        error_type,
        error.message.or(error.message_upper).unwrap_or_default(),
    )
}

/// An answer refusing a request for the time it was signed at.
pub(super) fn is_time_refusal(status: u16, body: &[u8]) -> bool {
    (400..500).contains(&status) && {
        let (error_type, message) = aws_error(body);
        is_clock_skew(&error_type, &message)
    }
}

pub(super) fn is_clock_skew(error_type: &str, message: &str) -> bool {
    error_type == "RequestTimeTooSkewed"
        || (error_type == "InvalidSignatureException"
            && (message.contains("Signature expired")
                || message.contains("Signature not yet current")))
}

fn classify_error_type(status: u16, error_type: &str) -> FailureKind {
    match error_type {
        "ProvisionedThroughputExceededException"
        | "LimitExceededException"
        | "ThrottlingException"
        | "KMSThrottlingException"
        | "RequestLimitExceeded" => FailureKind::Throttled,
        "ExpiredTokenException" | "ExpiredToken" => FailureKind::ExpiredCredentials,
        "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "IncompleteSignature"
        | "InvalidClientTokenId"
        | "MissingAuthenticationToken"
        | "AccessDeniedException" => FailureKind::NotAuthorized,
        "ResourceNotFoundException" => FailureKind::StreamMissing,
        "ValidationException" | "InvalidArgumentException" => FailureKind::InvalidBatch,
        _ if status == 413 => FailureKind::InvalidBatch,
        _ if status == 408 || status == 429 => FailureKind::Throttled,
        _ => FailureKind::Unexpected,
    }
}

fn parse_records(status: u16, body: &[u8], sent: &[i64]) -> Result<Outcome, RequestFailure> {
    let unexpected = |why: String| RequestFailure {
        kind: FailureKind::Unexpected,
        status,
        detail: format!("HTTP {status}: {why}"),
    };
    let response: PutRecordsResponse = serde_json::from_slice(body)
        // serde_json's message may quote the body: shortened (found by fuzz/ put_records).
        .map_err(|error| {
            unexpected(format!(
                "unreadable PutRecords response: {}",
                shorten(&error.to_string())
            ))
        })?;
    // Results are matched to records by position; a count mismatch makes that
    // impossible, so the whole request is retried (at-least-once, never lost).
    if response.records.len() != sent.len() {
        return Err(unexpected(format!(
            "PutRecords answered {} results for {} records",
            response.records.len(),
            sent.len()
        )));
    }
    let mut outcome = Outcome::default();
    for (id, result) in sent.iter().zip(response.records) {
        let stored = result
            .sequence_number
            .as_deref()
            .is_some_and(|s| !s.is_empty());
        if let Some(code) = result.error_code.as_deref().filter(|code| !code.is_empty()) {
            outcome.failed_codes[super::stats::error_code_idx(code)] += 1;
        }
        match result.error_code.as_deref() {
            // Delivered only with Kinesis' word for it: a sequence number.
            None | Some("") if stored => outcome.delivered.push(*id),
            // Neither an error nor a sequence number: not known to be stored.
            None | Some("") => outcome.retry.push(*id),
            Some(code) if is_retryable_record_error(code) => outcome.retry.push(*id),
            Some(code) => outcome.dead.push((
                *id,
                format!(
                    "kinesis refused the record: {}: {}",
                    shorten(code),
                    shorten(result.error_message.as_deref().unwrap_or(""))
                ),
            )),
        }
    }
    Ok(outcome)
}

/// Per-record errors worth sending again. KMS errors other than throttling
/// (key disabled, access denied…) are configuration a human can fix, so they
/// are retried too rather than dead-lettering the whole stream's traffic.
fn is_retryable_record_error(code: &str) -> bool {
    matches!(
        code,
        "ProvisionedThroughputExceededException" | "InternalFailure" | "ServiceUnavailable"
    ) || code.starts_with("KMS")
}

/// Error messages are Kinesis' text; keep log lines and dead-letter rows bounded.
fn shorten(message: &str) -> &str {
    const MAX: usize = 300;
    match message.char_indices().nth(MAX) {
        Some((byte_idx, _)) => &message[..byte_idx],
        None => message,
    }
}

/// Borrowed from the answer's bytes where they hold no escapes (no string
/// allocated per record of a 500-record answer).
#[derive(Deserialize)]
struct PutRecordsResponse<'a> {
    #[serde(rename = "Records", borrow)]
    records: Vec<RecordResult<'a>>,
}

#[derive(Deserialize)]
struct RecordResult<'a> {
    #[serde(rename = "ErrorCode", default, borrow)]
    error_code: Option<Cow<'a, str>>,
    #[serde(rename = "ErrorMessage", default, borrow)]
    error_message: Option<Cow<'a, str>>,
    #[serde(rename = "SequenceNumber", default, borrow)]
    sequence_number: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Default)]
struct ErrorBody {
    #[serde(rename = "__type", default)]
    error_type: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(rename = "Message", default)]
    message_upper: Option<String>,
}

#[cfg(test)]
mod tests;
