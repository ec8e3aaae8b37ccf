use serde_json::{json, Value};

use super::{encode, push_int, push_rfc3339_utc, rfc3339_utc};
use crate::config::RecordFormat;
use crate::spool::Record;

fn record(payload: &[u8]) -> Record {
    Record {
        id: 42,
        broker_id: 7,
        topic: "plant/\"line\"/temp".to_owned(),
        payload: payload.to_vec(),
        partition_key: "plant".to_owned(),
        device_id: None,
        qos: 1,
        received_at_ms: 1_700_000_000_123,
        attempts: 0,
    }
}

fn check_json(payload: &[u8], key: &str, expected: Value) {
    let blob = encode(RecordFormat::Json, "ab12", &record(payload), 0);
    let envelope: Value = serde_json::from_slice(&blob).expect("envelope is JSON");
    let expected_envelope = {
        let mut envelope = json!({
            "record_id": "ab12-42",
            "broker_id": 7,
            "topic": "plant/\"line\"/temp",
            "qos": 1,
            "received_at": 1_700_000_000_123i64,
            "received_at_rfc3339": "2023-11-14T22:13:20.123Z",
        });
        envelope[key] = expected;
        envelope
    };
    assert_eq!(envelope, expected_envelope);
}

#[test]
fn json_payload_is_embedded() {
    check_json(
        br#" {"t": 21.5, "ok": true} "#,
        "payload",
        json!({"t": 21.5, "ok": true}),
    );
    check_json(b"17", "payload", json!(17));
    check_json(b"\"s\"", "payload", json!("s"));
}

#[test]
fn json_payload_keeps_big_numbers_verbatim() {
    let blob = encode(
        RecordFormat::Json,
        "u",
        &record(b"12345678901234567890123"),
        0,
    );
    let text = String::from_utf8(blob).unwrap();
    assert!(
        text.ends_with(",\"payload\":12345678901234567890123}"),
        "{text}"
    );
}

#[test]
fn utf8_payload_is_text() {
    check_json("21.5 °C".as_bytes(), "payload_text", json!("21.5 °C"));
    check_json(b"{not json", "payload_text", json!("{not json"));
    check_json(b"", "payload_text", json!(""));
    check_json(b"   ", "payload_text", json!("   "));
}

#[test]
fn binary_payload_is_base64() {
    check_json(&[0xff, 0x00, 0x10], "payload_base64", json!("/wAQ"));
}

#[test]
fn raw_is_the_payload_unchanged() {
    let payload = [0xffu8, 0, b'{', 1];
    assert_eq!(
        encode(RecordFormat::Raw, "u", &record(&payload), 7_200_000),
        payload.to_vec()
    );
}

#[test]
fn rfc3339_dates() {
    assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(rfc3339_utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
    assert_eq!(rfc3339_utc(1_709_210_096_789), "2024-02-29T12:34:56.789Z");
    assert_eq!(rfc3339_utc(-1), "1969-12-31T23:59:59.999Z");
}

#[test]
fn a_known_clock_offset_is_in_the_envelope_and_received_at_stays_the_gateways() {
    let blob = encode(RecordFormat::Json, "u", &record(b"{}"), 7_200_000);
    let envelope: Value = serde_json::from_slice(&blob).expect("envelope is JSON");
    assert_eq!(envelope["received_at"], 1_700_000_000_123i64);
    assert_eq!(envelope["gateway_clock_offset_ms"], 7_200_000);
    let blob = encode(RecordFormat::Json, "u", &record(b"{}"), 0);
    let envelope: Value = serde_json::from_slice(&blob).expect("envelope is JSON");
    assert!(envelope.get("gateway_clock_offset_ms").is_none());
}

#[test]
fn the_envelope_carries_the_device_id_when_the_record_has_one() {
    let mut with_device = record(b"{}");
    with_device.device_id = Some("dev-\"7\"".to_owned());
    let blob = encode(RecordFormat::Json, "u", &with_device, 0);
    let envelope: Value = serde_json::from_slice(&blob).expect("envelope is JSON");
    assert_eq!(envelope["device_id"], json!("dev-\"7\""));
    let blob = encode(RecordFormat::Json, "u", &record(b"{}"), 0);
    let envelope: Value = serde_json::from_slice(&blob).expect("envelope is JSON");
    assert!(envelope.get("device_id").is_none(), "{envelope}");
}

/// The envelope's own digit writers agree with `format!` everywhere.
#[test]
fn digits_written_by_hand_match_the_formatter() {
    for n in [
        0,
        1,
        -1,
        9,
        10,
        99,
        100,
        12_345,
        i64::MAX,
        i64::MIN,
        -987_654_321,
    ] {
        let mut out = Vec::new();
        push_int(&mut out, n);
        assert_eq!(String::from_utf8(out).unwrap(), n.to_string());
    }
    // Every hour of 2024, odd milliseconds, the epoch, a leap day, year 9999, and
    // years outside 0..=9999 (the formatter's path).
    let mut times: Vec<i64> = (0..8_784)
        .map(|hour| 1_704_067_200_000 + hour * 3_600_007)
        .collect();
    times.extend([
        0,
        -1,
        951_782_400_000,
        253_402_300_799_999,
        -62_167_219_200_001,
    ]);
    times.push(253_402_300_800_000);
    for ms in times {
        let mut out = Vec::new();
        push_rfc3339_utc(&mut out, ms);
        assert_eq!(String::from_utf8(out).unwrap(), rfc3339_utc(ms), "{ms}");
    }
}
