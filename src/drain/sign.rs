//! SigV4 signing of a request, as an aws-sigv4 wrapper: headers in, headers to add out.
//!
//! It signs the exact body bytes (no `x-amz-content-sha256` header; Kinesis
//! does not need it) and includes `X-Amz-Security-Token` when there is a
//! session token. It does not send anything and does not load credentials.

use std::fmt;
use std::time::SystemTime;

use aws_sigv4::http_request::{self, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;

use super::credentials::Credentials;
use super::put_records;

/// The signing service name of Kinesis.
pub const SERVICE: &str = "kinesis";

/// The request could not be signed (a malformed URL or header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignError(String);

impl fmt::Display for SignError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot sign request: {}", self.0)
    }
}

impl std::error::Error for SignError {}

/// Every header of a PutRecords POST to `url` carrying `body`, signed at `time`:
/// content type, target, date, security token (if any) and authorization.
pub fn put_records_headers(
    url: &str,
    body: &[u8],
    credentials: &Credentials,
    region: &str,
    time: SystemTime,
) -> Result<Vec<(String, String)>, SignError> {
    action_headers(put_records::TARGET, url, body, credentials, region, time)
}

/// Every header of a POST of the Kinesis action `target` (`Kinesis_20131202.…`).
pub fn action_headers(
    target: &str,
    url: &str,
    body: &[u8],
    credentials: &Credentials,
    region: &str,
    time: SystemTime,
) -> Result<Vec<(String, String)>, SignError> {
    let headers = [
        ("content-type", put_records::CONTENT_TYPE),
        ("x-amz-target", target),
    ];
    let mut all: Vec<(String, String)> = headers
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
    all.extend(sign(
        "POST",
        url,
        &headers,
        body,
        credentials,
        region,
        SERVICE,
        time,
    )?);
    Ok(all)
}

/// The headers SigV4 adds to a request (`authorization`, `x-amz-date`,
/// `x-amz-security-token`). `host` is taken from `url`, as HTTP clients send it.
#[allow(clippy::too_many_arguments)]
pub fn sign(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    credentials: &Credentials,
    region: &str,
    service: &str,
    time: SystemTime,
) -> Result<Vec<(String, String)>, SignError> {
    let identity = credentials.to_aws().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|error| SignError(error.to_string()))?
        .into();
    let request = SignableRequest::new(
        method,
        url,
        headers.iter().copied(),
        SignableBody::Precomputed(payload_sha256(body)),
    )
    .map_err(|error| SignError(error.to_string()))?;
    let (instructions, _signature) = http_request::sign(request, &params)
        .map_err(|error| SignError(error.to_string()))?
        .into_parts();
    let (added, _query_params) = instructions.into_parts();
    Ok(added
        .into_iter()
        .map(|header| (header.name().to_owned(), header.value().to_owned()))
        .collect())
}

/// The body's SHA-256 in lower-case hex, by ring: aws-sigv4 hashes with the
/// sha2 crate's portable code, which cost a third of the gateway's CPU at
/// field rates (a request body is tens to hundreds of KB); ring's assembly is
/// several times faster, on ARM too.
fn payload_sha256(body: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = ring::digest::digest(&ring::digest::SHA256, body);
    let mut hex = String::with_capacity(64);
    for byte in digest.as_ref() {
        hex.push(HEX[usize::from(byte >> 4)] as char);
        hex.push(HEX[usize::from(byte & 0x0f)] as char);
    }
    hex
}

#[cfg(test)]
mod tests;
