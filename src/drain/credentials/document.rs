//! The JSON documents temporary credentials arrive in, and their `Expiration`
//! times. Pure: no IO, no clock reading (times are passed in).
//!
//! Four shapes, the same four values under different names:
//! `credential_process` (`Version: 1`, `AccessKeyId`, `SecretAccessKey`,
//! `SessionToken`, `Expiration`), the container endpoint and instance
//! metadata (`AccessKeyId`, `SecretAccessKey`, `Token`, `Expiration`; IMDS
//! adds `Code: Success`), and the IoT credentials provider
//! (`{"credentials": {accessKeyId, secretAccessKey, sessionToken, expiration}}`).
//! An error names the field, never a value.

use std::fmt;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::Credentials;
use crate::secret::Secret;

/// What a document holds.
pub struct Document {
    access_key_id: String,
    secret_access_key: Secret,
    session_token: Option<Secret>,
    /// `Expiration` as Unix ms (AWS's clock); `None` when the document has none.
    expiration_ms: Option<i64>,
}

/// Why a document is not usable; names the field, never a value but an
/// unreadable time or an IMDS code (neither is a secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DocumentError {
    NotJson,
    /// `credential_process` output without `"Version": 1`.
    NoVersion,
    UnsupportedVersion {
        version: i64,
    },
    /// Instance metadata's `Code` other than `Success`.
    ImdsCode {
        code: String,
    },
    /// A field that must be there (key id, secret, expiration) is absent or empty.
    Missing {
        field: &'static str,
    },
    /// An expiration that is not an ISO 8601 time.
    BadTime {
        field: &'static str,
        value: String,
    },
}

impl fmt::Display for DocumentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DocumentError::NotJson => f.write_str("the answer is not JSON"),
            DocumentError::NoVersion => f.write_str("no \"Version\": 1"),
            DocumentError::UnsupportedVersion { version } => {
                write!(f, "Version {version} is not supported (only 1)")
            }
            DocumentError::ImdsCode { code } => write!(f, "Code {code:?}"),
            DocumentError::Missing { field } => write!(f, "no {field}"),
            DocumentError::BadTime { field, value } => {
                write!(f, "{field} {value:?} is not an ISO 8601 time")
            }
        }
    }
}

impl std::error::Error for DocumentError {}

/// The field names of one shape: key id, secret, token, expiration.
struct Names {
    access_key_id: &'static str,
    secret_access_key: &'static str,
    session_token: &'static str,
    expiration: &'static str,
}

const AWS_NAMES: Names = Names {
    access_key_id: "AccessKeyId",
    secret_access_key: "SecretAccessKey",
    session_token: "Token",
    expiration: "Expiration",
};

/// The output of a `credential_process` (`Version` must be 1).
pub fn parse_process(body: &[u8]) -> Result<Document, DocumentError> {
    let json = parse_json(body)?;
    match json["Version"].as_i64() {
        Some(1) => {}
        Some(version) => return Err(DocumentError::UnsupportedVersion { version }),
        None => return Err(DocumentError::NoVersion),
    }
    fields(
        &json,
        &Names {
            session_token: "SessionToken",
            ..AWS_NAMES
        },
        false,
    )
}

/// The container endpoint's answer.
pub fn parse_container(body: &[u8]) -> Result<Document, DocumentError> {
    fields(&parse_json(body)?, &AWS_NAMES, false)
}

/// Instance metadata's answer for a role (`Code` must be `Success`).
pub fn parse_imds(body: &[u8]) -> Result<Document, DocumentError> {
    let json = parse_json(body)?;
    match json["Code"].as_str() {
        None | Some("Success") => fields(&json, &AWS_NAMES, true),
        Some(code) => Err(DocumentError::ImdsCode {
            code: code.to_owned(),
        }),
    }
}

/// The IoT credentials provider's answer.
pub fn parse_iot(body: &[u8]) -> Result<Document, DocumentError> {
    let json = parse_json(body)?;
    fields(
        &json["credentials"],
        &Names {
            access_key_id: "accessKeyId",
            secret_access_key: "secretAccessKey",
            session_token: "sessionToken",
            expiration: "expiration",
        },
        true,
    )
}

fn parse_json(body: &[u8]) -> Result<Value, DocumentError> {
    serde_json::from_slice(body).map_err(|_| DocumentError::NotJson)
}

fn fields(json: &Value, names: &Names, needs_expiration: bool) -> Result<Document, DocumentError> {
    let text = |name: &str| {
        json[name]
            .as_str()
            .filter(|value| !value.is_empty())
            .map(str::to_owned)
    };
    let missing = |field| DocumentError::Missing { field };
    let access_key_id = text(names.access_key_id).ok_or(missing(names.access_key_id))?;
    let secret_access_key = text(names.secret_access_key)
        .map(Secret::new)
        .ok_or(missing(names.secret_access_key))?;
    let expiration_ms = match text(names.expiration) {
        Some(expiration) => match parse_iso8601(&expiration) {
            Some(ms) => Some(ms),
            None => {
                return Err(DocumentError::BadTime {
                    field: names.expiration,
                    value: expiration,
                })
            }
        },
        None if needs_expiration => return Err(missing(names.expiration)),
        None => None,
    };
    Ok(Document {
        access_key_id,
        secret_access_key,
        session_token: text(names.session_token).map(Secret::new),
        expiration_ms,
    })
}

impl Document {
    /// The credentials, expiring on the monotonic clock: `aws_now_ms` is AWS's
    /// time at `now` (an answer's `Date`, or our clock corrected by the offset
    /// the drain learned), so a gateway whose clock is wrong does not take
    /// fresh credentials for expired ones, or the reverse.
    pub fn into_credentials(self, source: String, aws_now_ms: i64, now: Instant) -> Credentials {
        let expires_at = self.expiration_ms.map(|expiration_ms| {
            let left_ms = expiration_ms.saturating_sub(aws_now_ms).max(0);
            now + Duration::from_millis(left_ms as u64)
        });
        Credentials::new(
            self.access_key_id,
            self.secret_access_key,
            self.session_token,
            source,
        )
        .expiring(expires_at)
    }
}

/// `2026-11-30T10:00:00Z`, with optional fractional seconds and a `Z` or
/// `±HH:MM` offset, as Unix ms; `None` for anything else.
pub fn parse_iso8601(text: &str) -> Option<i64> {
    let text = text.trim();
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = text.get(range)?;
        digits
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| digits.parse().ok())?
    };
    let bytes = text.as_bytes();
    if bytes.len() < 20
        || bytes[4] != b'-'
        || bytes[7] != b'-'
        || !matches!(bytes[10], b'T' | b't' | b' ')
        || bytes[13] != b':'
        || bytes[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &text[19..];
    let mut millis = 0;
    if let Some(fraction) = rest.strip_prefix('.') {
        let n_digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if n_digits == 0 {
            return None;
        }
        let digits = &fraction[..n_digits];
        millis = format!("{:0<3}", &digits[..n_digits.min(3)]).parse().ok()?;
        rest = &fraction[n_digits..];
    }
    let offset_ms = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (h, m) = rest[1..].split_once(':')?;
            if h.len() != 2 || m.len() != 2 {
                return None;
            }
            let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
            sign * (h * 60 + m) * 60_000
        }
    };
    let days = crate::drain::skew::days_from_civil(year, month, day);
    Some(((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000 + millis - offset_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_times_parse() {
        assert_eq!(parse_iso8601("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_iso8601("2026-11-30T07:05:17Z"),
            Some(1_796_022_317_000)
        );
        assert_eq!(
            parse_iso8601("2026-11-30T07:05:17.250Z"),
            Some(1_796_022_317_250)
        );
        assert_eq!(
            parse_iso8601("2026-11-30T08:05:17+01:00"),
            Some(1_796_022_317_000)
        );
        assert_eq!(
            parse_iso8601("2026-11-30T07:05:17.5-00:30"),
            Some(1_796_022_317_500 + 1_800_000)
        );
        for bad in [
            "",
            "2026-11-30",
            "2026-11-30T07:05:17",
            "2026-13-30T07:05:17Z",
            "soon",
        ] {
            assert_eq!(parse_iso8601(bad), None, "{bad}");
        }
    }

    #[test]
    fn each_shape_parses_and_errors_name_fields_never_values() {
        let iot = br#"{"credentials":{"accessKeyId":"ASIA1","secretAccessKey":"s3cr3t","sessionToken":"tok","expiration":"2026-11-30T10:00:00Z"}}"#;
        let document = parse_iot(iot).unwrap();
        assert_eq!(
            document.expiration_ms,
            parse_iso8601("2026-11-30T10:00:00Z")
        );
        let process = br#"{"Version":1,"AccessKeyId":"AK","SecretAccessKey":"s3cr3t"}"#;
        assert_eq!(parse_process(process).unwrap().expiration_ms, None);
        let error =
            parse_process(br#"{"Version":2,"AccessKeyId":"AK","SecretAccessKey":"s3cr3t"}"#)
                .err()
                .unwrap();
        assert_eq!(error, DocumentError::UnsupportedVersion { version: 2 });
        assert!(error.to_string().contains("Version 2"), "{error}");
        let error = parse_iot(br#"{"credentials":{"accessKeyId":"A","secretAccessKey":"s3cr3t"}}"#)
            .err()
            .unwrap();
        assert_eq!(
            error,
            DocumentError::Missing {
                field: "expiration"
            }
        );
        assert_eq!(error.to_string(), "no expiration");
        let error = parse_container(
            br#"{"AccessKeyId":"A","SecretAccessKey":"s3cr3t","Expiration":"tomorrow"}"#,
        )
        .err()
        .unwrap();
        assert_eq!(
            error,
            DocumentError::BadTime {
                field: "Expiration",
                value: "tomorrow".into()
            }
        );
        assert!(!error.to_string().contains("s3cr3t"), "{error}");
        assert_eq!(
            parse_imds(br#"{"Code":"AssumeRoleUnauthorizedAccess"}"#).err(),
            Some(DocumentError::ImdsCode {
                code: "AssumeRoleUnauthorizedAccess".into()
            })
        );
    }

    #[test]
    fn expiry_is_measured_in_aws_time() {
        let now = Instant::now();
        let document = parse_container(
            br#"{"AccessKeyId":"A","SecretAccessKey":"s","Token":"t","Expiration":"2026-11-30T10:00:00Z"}"#,
        )
        .unwrap();
        let expiration = parse_iso8601("2026-11-30T10:00:00Z").unwrap();
        // AWS says it is 09:00: an hour left, whatever our clock says.
        let credentials = document.into_credentials("x".into(), expiration - 3_600_000, now);
        assert_eq!(credentials.expires_in(now), Some(Duration::from_secs(3600)));
    }
}
