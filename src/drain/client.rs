//! Sends one signed request over HTTP(S) with ureq: the drain's only IO with
//! Kinesis (PutRecords), and the `check` command's (DescribeStreamSummary).
//!
//! Every answer is returned as data: a non-2xx status is a response to parse,
//! a network error or timeout is [`FailureKind::Unavailable`]. It does not
//! retry, wait or touch the spool; the drain loop decides what happens next.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::batch::Entry;
use super::credentials::Credentials;
use super::put_records::{self, FailureKind, Outcome, RequestFailure};
use super::resolver::CachingResolver;
use super::roots;
use super::sign;
use super::skew::{self, ClockSkew};
use crate::clock;
use crate::config::KinesisConfig;

/// Responses are small (about 100 bytes per record); refuse anything absurd.
const MAX_RESPONSE_BYTES: u64 = 4 * 1024 * 1024;

pub struct Client {
    agent: ureq::Agent,
    /// The endpoint with path `/`, as signed and sent.
    url: String,
    region: String,
    stream: String,
    /// How far our clock is from AWS's, from the answers' `Date`.
    skew: ClockSkew,
}

impl Client {
    pub fn new(config: &KinesisConfig) -> Client {
        let mut tls = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::Rustls)
            .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()));
        if config.endpoint.starts_with("https://") {
            let (roots, source) = roots::kinesis_roots();
            log::debug!("drain: trusting {source} for {}", config.endpoint);
            tls = tls.root_certs(roots);
        }
        let agent_config = ureq::Agent::config_builder()
            .tls_config(tls.build())
            // The whole exchange, connect to last byte: a stuck request cannot
            // hold the drain (or shutdown) longer than this.
            .timeout_global(Some(config.request_timeout))
            .timeout_connect(Some(config.request_timeout.min(Duration::from_secs(10))))
            .http_status_as_error(false)
            // A redirect is an answer to report, never a place to send signed records.
            .max_redirects(0)
            .user_agent(concat!("mqtt-kinesis-bridge/", env!("CARGO_PKG_VERSION")))
            .build();
        let agent = ureq::Agent::with_parts(
            agent_config,
            ureq::unversioned::transport::DefaultConnector::new(),
            CachingResolver::default(),
        );
        Client {
            agent,
            url: format!("{}/", config.endpoint.trim_end_matches('/')),
            region: config.region.clone(),
            stream: config.stream.clone(),
            skew: ClockSkew::default(),
        }
    }

    /// AWS's clock minus ours, in ms, as the last answers said.
    pub fn clock_offset_ms(&self) -> i64 {
        self.skew.offset_ms()
    }

    /// What the last answer's `Date` said of our clock, if it had one.
    pub fn last_clock_sample_ms(&self) -> Option<i64> {
        self.skew.last_sample_ms()
    }

    /// PutRecords for `entries`; the outcome lists every entry's id exactly once.
    pub fn put_records(
        &mut self,
        entries: &[Entry],
        credentials: &Credentials,
    ) -> Result<Outcome, RequestFailure> {
        let body = put_records::request_body(&self.stream, entries);
        let (status, response_body) =
            self.call(put_records::TARGET, body, credentials)
                .map_err(|error| match error {
                    CallError::Unexpected(detail) => RequestFailure {
                        kind: FailureKind::Unexpected,
                        status: 0,
                        detail,
                    },
                    CallError::Unavailable(detail) => RequestFailure {
                        kind: FailureKind::Unavailable,
                        status: 0,
                        detail,
                    },
                })?;
        let sent: Vec<i64> = entries.iter().map(|entry| entry.id).collect();
        put_records::parse_response(status, &response_body, &sent)
    }

    /// Learns the offset from an answer's `Date`; a refusal for the time is believed at once.
    fn learn_clock(&mut self, date: Option<i64>, received_ms: i64, skew_refusal: bool) {
        let Some(date_ms) = date else { return };
        // `Date` drops the milliseconds: the middle of its second is the best guess.
        let server_ms = date_ms + 500;
        let change = if skew_refusal {
            self.skew.refused(server_ms, received_ms)
        } else {
            self.skew.observe(server_ms, received_ms)
        };
        match change {
            Some(skew::Change::Off(offset_ms)) => log::warn!(
                "the clock is {} AWS: signing with corrected time; fix NTP",
                clock::describe_offset(offset_ms)
            ),
            Some(skew::Change::Agrees) => {
                log::info!("the clock agrees with AWS again: signing with it as it is")
            }
            None => {}
        }
    }

    /// POSTs `body` as the Kinesis action `target`, signed now (corrected by
    /// the clock offset learned so far): the answer's status and body.
    fn call(
        &mut self,
        target: &str,
        body: Vec<u8>,
        credentials: &Credentials,
    ) -> Result<(u16, Vec<u8>), CallError> {
        let headers = sign::action_headers(
            target,
            &self.url,
            &body,
            credentials,
            &self.region,
            self.skew.corrected(SystemTime::now()),
        )
        .map_err(|error| CallError::Unexpected(error.to_string()))?;
        let mut request = http::Request::post(&self.url);
        for (name, value) in &headers {
            request = request.header(name, value);
        }
        let request = request
            .body(body)
            .map_err(|error| CallError::Unexpected(format!("cannot build request: {error}")))?;
        let unavailable = |error: ureq::Error| {
            CallError::Unavailable(format!("no response from {}: {error}", self.url))
        };
        let mut response = self.agent.run(request).map_err(unavailable)?;
        let received_ms = clock::unix_ms();
        let status = response.status().as_u16();
        let date = response
            .headers()
            .get("date")
            .and_then(|value| value.to_str().ok())
            .and_then(skew::parse_http_date);
        let response_body = response
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE_BYTES)
            .read_to_vec()
            .map_err(unavailable)?;
        let skew_refusal = put_records::is_time_refusal(status, &response_body);
        self.learn_clock(date, received_ms, skew_refusal);
        Ok((status, response_body))
    }
}

/// Why [`Client::call`] got no answer to parse.
enum CallError {
    /// The request could not be signed or built (a bug or a bad endpoint URL).
    Unexpected(String),
    /// No (complete) response: network, TLS, timeout.
    Unavailable(String),
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
    pub kind: DescribeFailureKind,
    pub detail: String,
}

/// What kind of failure a DescribeStreamSummary met.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DescribeFailureKind {
    /// No answer (DNS, connection, TLS, timeout).
    Unreachable,
    /// The credentials or the signature were refused.
    Auth,
    /// The signature's time is too far from AWS's clock.
    Clock,
    /// No such stream.
    NotFound,
    Throttled,
    /// Anything else.
    Error,
}

impl Client {
    /// A signed DescribeStreamSummary of the configured stream: proves the
    /// endpoint answers, the credentials are accepted and the stream exists.
    pub fn describe_stream_summary(
        &mut self,
        credentials: &Credentials,
    ) -> Result<StreamSummary, DescribeFailure> {
        let failure = |kind, detail: String| DescribeFailure { kind, detail };
        let body = serde_json::json!({ "StreamName": self.stream })
            .to_string()
            .into_bytes();
        let (status, response_body) = self
            .call(DESCRIBE_STREAM_SUMMARY, body, credentials)
            .map_err(|error| match error {
                CallError::Unexpected(detail) => failure(DescribeFailureKind::Error, detail),
                CallError::Unavailable(detail) => failure(DescribeFailureKind::Unreachable, detail),
            })?;
        describe_answer(status, &response_body)
    }
}

/// Pure: DescribeStreamSummary's answer → the summary, or what kind of failure it says.
fn describe_answer(status: u16, body: &[u8]) -> Result<StreamSummary, DescribeFailure> {
    let failure = |kind, detail: String| DescribeFailure { kind, detail };
    if status == 200 {
        let json: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        let summary = &json["StreamDescriptionSummary"];
        return Ok(StreamSummary {
            status: summary["StreamStatus"].as_str().unwrap_or("?").to_owned(),
            open_shards: summary["OpenShardCount"].as_u64().unwrap_or(0),
        });
    }
    let (error_type, message) = put_records::aws_error(body);
    let kind = match error_type.as_str() {
        _ if put_records::is_clock_skew(&error_type, &message) => DescribeFailureKind::Clock,
        "ResourceNotFoundException" => DescribeFailureKind::NotFound,
        "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "AccessDeniedException"
        | "ExpiredTokenException"
        | "IncompleteSignature"
        | "MissingAuthenticationToken" => DescribeFailureKind::Auth,
        "LimitExceededException" | "ThrottlingException" => DescribeFailureKind::Throttled,
        _ if status == 403 => DescribeFailureKind::Auth,
        _ => DescribeFailureKind::Error,
    };
    Err(failure(
        kind,
        format!("HTTP {status} {error_type}: {message}")
            .trim_end_matches(": ")
            .to_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::{describe_answer, DescribeFailureKind};

    #[test]
    fn describe_answers_map_to_check_kinds() {
        let summary = describe_answer(
            200,
            br#"{"StreamDescriptionSummary":{"StreamName":"s","StreamStatus":"ACTIVE","OpenShardCount":2}}"#,
        )
        .unwrap();
        assert_eq!(
            (summary.status.as_str(), summary.open_shards),
            ("ACTIVE", 2)
        );
        for (status, body, kind) in [
            (
                400,
                r#"{"__type":"com.amazonaws.kinesis.v20131202#ResourceNotFoundException","message":"Stream s under account 1 not found."}"#,
                DescribeFailureKind::NotFound,
            ),
            (
                400,
                r#"{"__type":"UnrecognizedClientException","message":"The security token included in the request is invalid."}"#,
                DescribeFailureKind::Auth,
            ),
            (
                400,
                r#"{"__type":"InvalidSignatureException","message":"The request signature we calculated does not match"}"#,
                DescribeFailureKind::Auth,
            ),
            (
                403,
                r#"{"Message":"User is not authorized"}"#,
                DescribeFailureKind::Auth,
            ),
            (
                400,
                r#"{"__type":"LimitExceededException","message":"Rate exceeded"}"#,
                DescribeFailureKind::Throttled,
            ),
            (500, "not json", DescribeFailureKind::Error),
        ] {
            let failure = describe_answer(status, body.as_bytes()).unwrap_err();
            assert_eq!(failure.kind, kind, "{body}");
            assert!(
                failure.detail.starts_with(&format!("HTTP {status}")),
                "{}",
                failure.detail
            );
        }
    }
}
