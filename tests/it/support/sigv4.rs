//! An independent SigV4 check for the Kinesis stand-in: recomputes a request's
//! signature from the bytes that arrived (ring's HMAC and SHA-256, not
//! aws-sigv4, so a bug in how the gateway drives the signer shows here).
//!
//! Covers what the gateway sends: POST, a path without a query, the headers
//! the `Authorization` header lists, and the body as sent.

use ring::{digest, hmac};

/// A request as the server saw it.
pub struct Received<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// Header names in lower case, values as sent.
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

/// `Ok` when the `Authorization` header's signature is the one `secret`
/// gives for this request; otherwise what is wrong.
pub fn verify(request: &Received<'_>, secret: &str) -> Result<(), String> {
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.trim())
    };
    let authorization = header("authorization").ok_or("no Authorization header")?;
    let fields = authorization
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or("not AWS4-HMAC-SHA256")?;
    let field = |name: &str| {
        fields
            .split(',')
            .map(str::trim)
            .find_map(|part| part.strip_prefix(name))
            .ok_or(format!("no {name} in Authorization"))
    };
    let credential = field("Credential=")?;
    let signed_headers = field("SignedHeaders=")?;
    let signature = field("Signature=")?;
    // AKID/date/region/service/aws4_request
    let scope_parts: Vec<&str> = credential.splitn(2, '/').collect();
    let scope = scope_parts.get(1).ok_or("no scope in Credential")?;
    let [date, region, service, terminator] = scope.split('/').collect::<Vec<_>>()[..] else {
        return Err(format!("malformed scope {scope}"));
    };
    if terminator != "aws4_request" {
        return Err(format!("scope ends with {terminator}"));
    }
    let amz_date = header("x-amz-date").ok_or("no X-Amz-Date")?;
    if !amz_date.starts_with(date) {
        return Err(format!(
            "X-Amz-Date {amz_date} is not of the scope's day {date}"
        ));
    }
    if !signed_headers.split(';').any(|name| name == "host") {
        return Err("host is not signed".into());
    }

    let mut canonical_headers = String::new();
    for name in signed_headers.split(';') {
        let value = header(name).ok_or(format!("signed header {name} not sent"))?;
        let value = value.split_whitespace().collect::<Vec<_>>().join(" ");
        canonical_headers.push_str(&format!("{name}:{value}\n"));
    }
    let canonical_request = format!(
        "{}\n{}\n\n{canonical_headers}\n{signed_headers}\n{}",
        request.method,
        request.path,
        hex(digest::digest(&digest::SHA256, request.body).as_ref())
    );
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex(digest::digest(&digest::SHA256, canonical_request.as_bytes()).as_ref())
    );
    let mut key = format!("AWS4{secret}").into_bytes();
    for part in [date, region, service, "aws4_request"] {
        key = sign(&key, part.as_bytes());
    }
    let expected = hex(&sign(&key, string_to_sign.as_bytes()));
    if expected == signature {
        Ok(())
    } else {
        Err(format!(
            "signature {signature} is not {expected} (canonical request:\n{canonical_request})"
        ))
    }
}

fn sign(key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data)
        .as_ref()
        .to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The gateway's signer passes; another secret or another body does not.
    /// (The signer itself is checked against AWS's test vectors in src/drain/sign/tests.rs.)
    #[test]
    fn accepts_the_gateway_signer_and_refuses_a_changed_body() {
        use std::time::{Duration, UNIX_EPOCH};
        let time = UNIX_EPOCH + Duration::from_secs(1_796_000_000);
        let credentials = mqtt_kinesis_bridge::drain::credentials::Credentials::new(
            "AKIDEXAMPLE",
            mqtt_kinesis_bridge::secret::Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
            None,
            "test",
        );
        let body = br#"{"StreamName":"s","Records":[]}"#;
        let added = mqtt_kinesis_bridge::drain::sign::put_records_headers(
            "http://127.0.0.1:4567/",
            body,
            &credentials,
            "us-east-1",
            time,
        )
        .expect("sign");
        let mut headers: Vec<(String, String)> = added
            .into_iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v))
            .collect();
        headers.push(("host".into(), "127.0.0.1:4567".into()));
        let request = |body: &'static [u8]| Received {
            method: "POST",
            path: "/",
            headers: &headers,
            body,
        };
        let right = request(body);
        verify(&right, "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY").expect("valid");
        assert!(verify(&right, "another-secret").is_err());
        assert!(verify(
            &request(br#"{"StreamName":"t","Records":[]}"#),
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
        )
        .is_err());
    }
}
