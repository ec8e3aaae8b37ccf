use serde_json::{json, Value};

use super::{parse_response, request_body, FailureKind, Outcome};
use crate::drain::batch::Entry;

#[test]
fn request_body_shape() {
    let entries = [
        Entry {
            id: 1,
            data: b"hi".to_vec(),
            partition_key: "a/\"b\"".to_owned(),
        },
        Entry {
            id: 2,
            data: vec![0xff, 0, 1],
            partition_key: "k".to_owned(),
        },
        Entry {
            id: 3,
            data: vec![],
            partition_key: "k".to_owned(),
        },
    ];
    let body: Value = serde_json::from_slice(&request_body("my-stream", &entries)).unwrap();
    assert_eq!(
        body,
        json!({
            "StreamName": "my-stream",
            "Records": [
                {"Data": "aGk=", "PartitionKey": "a/\"b\""},
                {"Data": "/wAB", "PartitionKey": "k"},
                {"Data": "", "PartitionKey": "k"},
            ]
        })
    );
    let empty: Value = serde_json::from_slice(&request_body("s", &[])).unwrap();
    assert_eq!(empty, json!({"StreamName": "s", "Records": []}));
}

fn ok(id: u32) -> Value {
    json!({"SequenceNumber": format!("4968{id}"), "ShardId": "shardId-000000000000"})
}

fn failed(code: &str) -> Value {
    json!({"ErrorCode": code, "ErrorMessage": format!("{code} happened")})
}

#[test]
fn per_record_results_by_position() {
    let body = json!({
        "FailedRecordCount": 4,
        "Records": [
            ok(1),
            failed("ProvisionedThroughputExceededException"),
            failed("InternalFailure"),
            failed("KMSThrottlingException"),
            ok(5),
            failed("InvalidArgumentException"),
            // kinesis-local writes explicit nulls for successes.
            {"ErrorCode": null, "ErrorMessage": null, "SequenceNumber": "1", "ShardId": "s"},
        ]
    });
    let outcome = parse_response(
        200,
        body.to_string().as_bytes(),
        &[10, 11, 12, 13, 14, 15, 16],
    );
    assert_eq!(
        outcome,
        Ok(Outcome {
            delivered: vec![10, 14, 16],
            retry: vec![11, 12, 13],
            dead: vec![(
                15,
                "kinesis refused the record: InvalidArgumentException: InvalidArgumentException happened"
                    .to_owned()
            )],
            failed_codes: {
                use crate::drain::stats::error_code_idx;
                let mut codes = [0; 10];
                for code in [
                    "ProvisionedThroughputExceededException",
                    "InternalFailure",
                    "KMSThrottlingException",
                    "InvalidArgumentException",
                ] {
                    codes[error_code_idx(code)] += 1;
                }
                codes
            },
        })
    );
}

#[test]
fn a_result_without_error_or_sequence_number_is_sent_again() {
    let body = json!({
        "FailedRecordCount": 0,
        "Records": [ok(1), {}, {"ErrorCode": null, "SequenceNumber": null}, {"SequenceNumber": ""}]
    });
    let outcome = parse_response(200, body.to_string().as_bytes(), &[1, 2, 3, 4]);
    assert_eq!(
        outcome,
        Ok(Outcome {
            delivered: vec![1],
            retry: vec![2, 3, 4],
            dead: vec![],
            failed_codes: Default::default(),
        })
    );
}

/// Fields are borrowed from the answer where they can be; escaped text
/// (which cannot be borrowed) reads the same.
#[test]
fn escaped_fields_read_like_plain_ones() {
    let body = br#"{"FailedRecordCount": 1, "Records": [
        {"SequenceNumber": "49\u0035", "ShardId": "s"},
        {"ErrorCode": "Invalid\u0041rgumentException", "ErrorMessage": "a \"quoted\" \u00e9 reason"}
    ]}"#;
    let outcome = parse_response(200, body, &[1, 2]).unwrap();
    assert_eq!(outcome.delivered, vec![1]);
    assert_eq!(
        outcome.dead,
        vec![(
            2,
            "kinesis refused the record: InvalidArgumentException: a \"quoted\" \u{e9} reason"
                .to_owned()
        )]
    );
}

#[test]
fn result_count_mismatch_retries_the_whole_request() {
    let body = json!({"FailedRecordCount": 0, "Records": [ok(1)]});
    let failure = parse_response(200, body.to_string().as_bytes(), &[1, 2]).unwrap_err();
    assert_eq!(failure.kind, FailureKind::Unexpected);
    assert!(
        failure.detail.contains("1 results for 2 records"),
        "{failure}"
    );
}

#[test]
fn unreadable_success_body_is_unexpected() {
    let failure = parse_response(200, b"<html>", &[1]).unwrap_err();
    assert_eq!(failure.kind, FailureKind::Unexpected);
}

fn check_failure(status: u16, body: &str, expected: FailureKind) {
    let failure = parse_response(status, body.as_bytes(), &[1, 2]).unwrap_err();
    assert_eq!(failure.kind, expected, "{status} {body}: {failure}");
}

#[test]
fn request_level_failures_are_classified_by_what_happens_next() {
    use FailureKind::*;
    check_failure(500, r#"{"__type":"InternalFailure"}"#, Unavailable);
    // AWS's answers to a clock 2 hours off, told apart from refused credentials.
    check_failure(
        400,
        r#"{"__type":"InvalidSignatureException","message":"Signature expired: 20261130T050000Z is now earlier than 20261130T065500Z (20261130T070000Z - 5 min.)"}"#,
        ClockSkew,
    );
    check_failure(
        400,
        r#"{"__type":"InvalidSignatureException","message":"Signature not yet current: 20261130T090000Z is still later than 20261130T070500Z (20261130T070000Z + 5 min.)"}"#,
        ClockSkew,
    );
    check_failure(400, r#"{"__type":"RequestTimeTooSkewed"}"#, ClockSkew);
    check_failure(
        400,
        r#"{"__type":"InvalidSignatureException","message":"The request signature we calculated does not match"}"#,
        NotAuthorized,
    );
    check_failure(503, "Service Unavailable", Unavailable);
    check_failure(502, "", Unavailable);
    check_failure(
        400,
        r#"{"__type":"ProvisionedThroughputExceededException","message":"slow down"}"#,
        Throttled,
    );
    check_failure(400, r#"{"__type":"LimitExceededException"}"#, Throttled);
    check_failure(400, r#"{"__type":"ThrottlingException"}"#, Throttled);
    check_failure(429, "", Throttled);
    check_failure(
        400,
        r#"{"__type":"ExpiredTokenException"}"#,
        ExpiredCredentials,
    );
    check_failure(
        400,
        r#"{"__type":"UnrecognizedClientException"}"#,
        NotAuthorized,
    );
    check_failure(
        403,
        r#"{"__type":"InvalidSignatureException"}"#,
        NotAuthorized,
    );
    check_failure(400, r#"{"__type":"AccessDeniedException"}"#, NotAuthorized);
    check_failure(
        400,
        r#"{"__type":"ResourceNotFoundException"}"#,
        StreamMissing,
    );
    check_failure(
        400,
        r#"{"__type":"com.amazon.coral.validate#ValidationException","message":"bad"}"#,
        InvalidBatch,
    );
    check_failure(
        400,
        r#"{"__type":"InvalidArgumentException"}"#,
        InvalidBatch,
    );
    check_failure(413, "", InvalidBatch);
    check_failure(400, r#"{"__type":"SomethingNew"}"#, Unexpected);
    check_failure(404, "not json", Unexpected);
}

#[test]
fn failure_detail_names_status_type_and_message() {
    let failure = parse_response(
        400,
        br#"{"__type":"ResourceNotFoundException","message":"Stream s not found"}"#,
        &[1],
    )
    .unwrap_err();
    assert_eq!(
        failure.to_string(),
        "kinesis stream not found: HTTP 400 ResourceNotFoundException: Stream s not found"
    );
    let long = format!(r#"{{"__type":"X","Message":"{}"}}"#, "m".repeat(5000));
    let failure = parse_response(400, long.as_bytes(), &[1]).unwrap_err();
    assert!(failure.detail.len() < 400, "{}", failure.detail.len());
}

/// Issue 14, found by the fuzz target `put_records`: what Kinesis (or a
/// stand-in) sends back is quoted shortened, however long it is.
#[test]
fn quoted_response_text_is_bounded() {
    let long = "x".repeat(100_000);
    let bodies = [
        (200, format!("\"{long}\"")),
        (200, format!("{{\"Records\": \"{long}\"}}")),
        (
            400,
            format!("{{\"__type\": \"{long}\", \"message\": \"{long}\"}}"),
        ),
    ];
    for (status, body) in bodies {
        let failure = parse_response(status, body.as_bytes(), &[1]).unwrap_err();
        assert!(failure.to_string().len() < 1000, "{status}: {failure}");
    }
    let body =
        format!("{{\"Records\": [{{\"ErrorCode\": \"{long}\", \"ErrorMessage\": \"{long}\"}}]}}");
    let outcome = parse_response(200, body.as_bytes(), &[7]).unwrap();
    assert_eq!(outcome.dead.len(), 1);
    assert!(outcome.dead[0].1.len() < 1000, "{}", outcome.dead[0].1);
}
