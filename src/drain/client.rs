//! Sends one signed request over HTTP(S) with ureq: the drain's only IO with
//! Kinesis (PutRecords), and the `check` command's (DescribeStreamSummary).
//!
//! Every answer is returned as data: a non-2xx status is a response to parse,
//! a network error or timeout is [`FailureKind::Unavailable`]. It does not
//! retry, wait or touch the spool; the drain loop decides what happens next.

use std::time::{Duration, SystemTime};

use super::batch::Entry;
use super::credentials::Credentials;
use super::put_records::{self, FailureKind, Outcome, RequestFailure};
use super::sign;
use crate::config::KinesisConfig;

/// Responses are small (about 100 bytes per record); refuse anything absurd.
const MAX_RESPONSE_BYTES: u64 = 4 * 1024 * 1024;

pub struct Client {
    agent: ureq::Agent,
    /// The endpoint with path `/`, as signed and sent.
    url: String,
    region: String,
    stream: String,
}

impl Client {
    pub fn new(config: &KinesisConfig) -> Client {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            // The whole exchange, connect to last byte: a stuck request cannot
            // hold the drain (or shutdown) longer than this.
            .timeout_global(Some(config.request_timeout))
            .timeout_connect(Some(config.request_timeout.min(Duration::from_secs(10))))
            .http_status_as_error(false)
            .user_agent(concat!("mqtt-kinesis-bridge/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Client {
            agent,
            url: format!("{}/", config.endpoint.trim_end_matches('/')),
            region: config.region.clone(),
            stream: config.stream.clone(),
        }
    }

    /// PutRecords for `entries`; the outcome lists every entry's id exactly once.
    pub fn put_records(
        &self,
        entries: &[Entry],
        credentials: &Credentials,
    ) -> Result<Outcome, RequestFailure> {
        let body = put_records::request_body(&self.stream, entries);
        let headers = sign::put_records_headers(
            &self.url,
            &body,
            credentials,
            &self.region,
            SystemTime::now(),
        )
        .map_err(|error| RequestFailure {
            kind: FailureKind::Unexpected,
            detail: error.to_string(),
        })?;
        let mut request = http::Request::post(&self.url);
        for (name, value) in &headers {
            request = request.header(name, value);
        }
        let request = request.body(body).map_err(|error| RequestFailure {
            kind: FailureKind::Unexpected,
            detail: format!("cannot build request: {error}"),
        })?;
        let unavailable = |error: ureq::Error| RequestFailure {
            kind: FailureKind::Unavailable,
            detail: format!("no response from {}: {error}", self.url),
        };
        let mut response = self.agent.run(request).map_err(unavailable)?;
        let status = response.status().as_u16();
        let response_body = response
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE_BYTES)
            .read_to_vec()
            .map_err(unavailable)?;
        let sent: Vec<i64> = entries.iter().map(|entry| entry.id).collect();
        put_records::parse_response(status, &response_body, &sent)
    }
}

/// `X-Amz-Target` of DescribeStreamSummary.
const DESCRIBE_STREAM_SUMMARY: &str = "Kinesis_20131202.DescribeStreamSummary";

/// The stream as DescribeStreamSummary describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSummary {
    /// `ACTIVE`, `CREATING`, `UPDATING`, `DELETING`.
    pub status: String,
    pub open_shards: u64,
}

/// Why DescribeStreamSummary failed, in the words `check` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribeFailure {
    /// `unreachable`, `auth`, `not_found`, `throttled` or `error`.
    pub kind: &'static str,
    pub detail: String,
}

impl Client {
    /// A signed DescribeStreamSummary of the configured stream: proves the
    /// endpoint answers, the credentials are accepted and the stream exists.
    pub fn describe_stream_summary(
        &self,
        credentials: &Credentials,
    ) -> Result<StreamSummary, DescribeFailure> {
        let failure = |kind, detail: String| DescribeFailure { kind, detail };
        let body = serde_json::json!({ "StreamName": self.stream })
            .to_string()
            .into_bytes();
        let headers = [
            ("content-type", put_records::CONTENT_TYPE),
            ("x-amz-target", DESCRIBE_STREAM_SUMMARY),
        ];
        let mut signed: Vec<(String, String)> = headers
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        signed.extend(
            sign::sign(
                "POST",
                &self.url,
                &headers,
                &body,
                credentials,
                &self.region,
                sign::SERVICE,
                SystemTime::now(),
            )
            .map_err(|error| failure("error", error.to_string()))?,
        );
        let mut request = http::Request::post(&self.url);
        for (name, value) in &signed {
            request = request.header(name, value);
        }
        let request = request
            .body(body)
            .map_err(|error| failure("error", format!("cannot build request: {error}")))?;
        let unreachable = |error: ureq::Error| {
            failure(
                "unreachable",
                format!("no response from {}: {error}", self.url),
            )
        };
        let mut response = self.agent.run(request).map_err(unreachable)?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE_BYTES)
            .read_to_string()
            .map_err(unreachable)?;
        let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        if status == 200 {
            let summary = &json["StreamDescriptionSummary"];
            return Ok(StreamSummary {
                status: summary["StreamStatus"].as_str().unwrap_or("?").to_owned(),
                open_shards: summary["OpenShardCount"].as_u64().unwrap_or(0),
            });
        }
        // `__type` is `com.amazonaws...#Name` or `Name`.
        let error_type = json["__type"]
            .as_str()
            .unwrap_or_default()
            .rsplit('#')
            .next()
            .unwrap_or_default()
            .to_owned();
        let message = json["message"]
            .as_str()
            .or_else(|| json["Message"].as_str())
            .unwrap_or_default();
        let kind = match error_type.as_str() {
            "ResourceNotFoundException" => "not_found",
            "UnrecognizedClientException"
            | "InvalidSignatureException"
            | "AccessDeniedException"
            | "ExpiredTokenException"
            | "IncompleteSignature"
            | "MissingAuthenticationToken" => "auth",
            "LimitExceededException" | "ThrottlingException" => "throttled",
            _ if status == 403 => "auth",
            _ => "error",
        };
        Err(failure(
            kind,
            format!("HTTP {status} {error_type}: {message}")
                .trim_end_matches(": ")
                .to_owned(),
        ))
    }
}
