//! Known-good vectors, from two independent sources:
//! - `get-vanilla` and `get-vanilla-with-session-token` of the public AWS SigV4
//!   test suite (aws-sig-v4-test-suite; credentials AKIDEXAMPLE, 20150830T123600Z,
//!   us-east-1, service "service");
//! - a Kinesis PutRecords POST signed by `reference_signature.py` in this
//!   directory: a hand-written HMAC-SHA256 implementation of the spec in
//!   Python's standard library (run it to reproduce the expected value).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{payload_sha256, put_records_headers, sign};
use crate::drain::credentials::Credentials;
use crate::secret::Secret;

const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

fn credentials(token: Option<&str>) -> Credentials {
    Credentials::new(
        "AKIDEXAMPLE",
        Secret::new(SECRET),
        token.map(Secret::new),
        "test",
    )
}

/// 2015-08-30T12:36:00Z.
fn suite_time() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_440_938_160)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {name} header in {headers:?}"))
}

#[test]
fn suite_get_vanilla() {
    let added = sign(
        "GET",
        "https://example.amazonaws.com/",
        &[],
        b"",
        &credentials(None),
        "us-east-1",
        "service",
        suite_time(),
    )
    .unwrap();
    assert_eq!(header(&added, "x-amz-date"), "20150830T123600Z");
    assert_eq!(
        header(&added, "authorization"),
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
         SignedHeaders=host;x-amz-date, \
         Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
    );
}

#[test]
fn suite_get_vanilla_with_session_token() {
    let token = "6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267";
    let added = sign(
        "GET",
        "https://example.amazonaws.com/",
        &[],
        b"",
        &credentials(Some(token)),
        "us-east-1",
        "service",
        suite_time(),
    )
    .unwrap();
    assert_eq!(header(&added, "x-amz-security-token"), token);
    assert_eq!(
        header(&added, "authorization"),
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
         SignedHeaders=host;x-amz-date;x-amz-security-token, \
         Signature=07ec1639c89043aa0e3e2de82b96708f198cceab042d4a97044c66dd9f74e7f8"
    );
}

#[test]
fn put_records_matches_reference() {
    // 2024-02-29T12:34:56Z
    let time = UNIX_EPOCH + Duration::from_secs(1_709_210_096);
    let body = br#"{"StreamName":"telemetry","Records":[{"Data":"aGk=","PartitionKey":"k"}]}"#;
    let headers = put_records_headers(
        "https://kinesis.eu-west-1.amazonaws.com/",
        body,
        &credentials(Some("session-token-example")),
        "eu-west-1",
        time,
    )
    .unwrap();
    assert_eq!(
        header(&headers, "content-type"),
        "application/x-amz-json-1.1"
    );
    assert_eq!(
        header(&headers, "x-amz-target"),
        "Kinesis_20131202.PutRecords"
    );
    assert_eq!(header(&headers, "x-amz-date"), "20240229T123456Z");
    assert_eq!(
        header(&headers, "authorization"),
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240229/eu-west-1/kinesis/aws4_request, \
         SignedHeaders=content-type;host;x-amz-date;x-amz-security-token;x-amz-target, \
         Signature=126ca55a8ff17ea38dec63c778088251ec0f10c8ddea4f1485651cdb6ffc6ee8"
    );
}

#[test]
fn body_is_signed() {
    let time = suite_time();
    let url = "http://127.0.0.1:4567/";
    let one = put_records_headers(url, b"{}", &credentials(None), "us-east-1", time).unwrap();
    let two = put_records_headers(url, b"{ }", &credentials(None), "us-east-1", time).unwrap();
    assert_ne!(header(&one, "authorization"), header(&two, "authorization"));
}

#[test]
fn the_payload_hash_is_the_sha256_of_the_body_in_hex() {
    // FIPS 180-2's "abc" and the empty string.
    assert_eq!(
        payload_sha256(b"abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(
        payload_sha256(b""),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}
