#!/usr/bin/env python3
"""Independent SigV4 reference for sign/tests.rs: HMAC-SHA256 by hand, following the AWS spec.

Run it to print the Authorization header that the `put_records_matches_reference` test expects.
Uses only the Python standard library, so it shares no code with aws-sigv4.
"""
import hashlib
import hmac

ACCESS_KEY_ID = "AKIDEXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
TOKEN = "session-token-example"
REGION = "eu-west-1"
SERVICE = "kinesis"
AMZ_DATE = "20240229T123456Z"
HOST = "kinesis.eu-west-1.amazonaws.com"
BODY = b'{"StreamName":"telemetry","Records":[{"Data":"aGk=","PartitionKey":"k"}]}'


def sha256_hex(data):
    return hashlib.sha256(data).hexdigest()


def hmac_sha256(key, text):
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


headers = {
    "content-type": "application/x-amz-json-1.1",
    "host": HOST,
    "x-amz-date": AMZ_DATE,
    "x-amz-security-token": TOKEN,
    "x-amz-target": "Kinesis_20131202.PutRecords",
}
signed_headers = ";".join(sorted(headers))
canonical_headers = "".join(f"{name}:{headers[name]}\n" for name in sorted(headers))
canonical_request = "\n".join(
    ["POST", "/", "", canonical_headers, signed_headers, sha256_hex(BODY)]
)
date = AMZ_DATE[:8]
scope = f"{date}/{REGION}/{SERVICE}/aws4_request"
string_to_sign = "\n".join(
    ["AWS4-HMAC-SHA256", AMZ_DATE, scope, sha256_hex(canonical_request.encode())]
)
key = ("AWS4" + SECRET).encode()
for part in (date, REGION, SERVICE, "aws4_request"):
    key = hmac_sha256(key, part)
signature = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
print(
    f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY_ID}/{scope}, "
    f"SignedHeaders={signed_headers}, Signature={signature}"
)
