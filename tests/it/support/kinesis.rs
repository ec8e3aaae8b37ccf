//! Kinesis for the drain tests: the kinesis-local emulator (real API, no
//! signature checks) and a small in-process fake HTTP server for faults.
//!
//! The emulator is a node process on free ports, killed on drop. The fake
//! speaks just enough HTTP/1.1 for PutRecords, follows a script of faults,
//! and records every record it accepted. kinesis-local does not check
//! signatures; the fake does when told the secret ([`FakeKinesis::check_signatures`]).

use std::collections::{HashMap, VecDeque};
use std::io::{BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, SystemTime};

use base64::Engine;
use serde_json::{json, Value};

use super::{free_port, wait_until, TempDir};

/// Dummy credentials in this process' environment, the drain's first source.
/// Every test sets the same values, so the order tests run in does not matter.
pub fn test_credentials() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        std::env::set_var("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE");
        std::env::set_var(
            "AWS_SECRET_ACCESS_KEY",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        );
    });
}

/// The kinesis-local emulator with one stream, stopped on drop.
pub struct KinesisLocal {
    child: Child,
    port: u16,
    _logs: TempDir,
}

impl KinesisLocal {
    /// Starts the emulator with `stream` (one shard) and waits until the stream is ACTIVE.
    pub fn start(stream: &str) -> KinesisLocal {
        let main_js = std::env::var("KINESIS_LOCAL_JS")
            .unwrap_or_else(|_| "/opt/kinesis-emu/node_modules/kinesis-local/main.js".to_owned());
        let main_js = PathBuf::from(main_js);
        // It reads server.json (its TLS key) from the working directory.
        let dir = main_js
            .parent()
            .unwrap_or_else(|| panic!("KINESIS_LOCAL_JS={} has no directory", main_js.display()));
        let logs = TempDir::new("kinesis-local");
        let log_file = std::fs::File::create(logs.join("kinesis-local.log")).expect("log file");
        let port = free_port();
        let child = Command::new("node")
            .arg(&main_js)
            .current_dir(dir)
            .env("KINESIS_MOCK_PLAIN_PORT", port.to_string())
            .env("KINESIS_MOCK_TLS_PORT", free_port().to_string())
            .env("INITIALIZE_STREAMS", format!("{stream}:1"))
            .env("AWS_REGION", "us-east-1")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log file"))
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot start kinesis-local ({}): {error}; set KINESIS_LOCAL_JS",
                    main_js.display()
                )
            });
        let emulator = KinesisLocal {
            child,
            port,
            _logs: logs,
        };
        wait_until(
            "kinesis-local to answer with the stream ACTIVE",
            Duration::from_secs(60),
            || {
                emulator
                    .call("DescribeStreamSummary", json!({"StreamName": stream}))
                    .is_ok_and(|(status, body)| {
                        status == 200
                            && body["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE"
                    })
            },
        );
        emulator
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Calls `Kinesis_20131202.{target}` with dummy auth headers (the emulator
    /// only checks that they exist).
    pub fn call(&self, target: &str, body: Value) -> Result<(u16, Value), ureq::Error> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // The emulator answers nothing else while it stores a large batch.
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let mut response = agent
            .post(&self.endpoint())
            .header("X-Amz-Target", format!("Kinesis_20131202.{target}"))
            .header("Content-Type", "application/x-amz-json-1.1")
            .header("X-Amz-Date", "20240101T000000Z")
            .header(
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240101/us-east-1/kinesis/aws4_request, SignedHeaders=host;x-amz-date, Signature=0",
            )
            .send(body.to_string())?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string()?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// Every record's data in the stream's first shard, oldest first.
    /// Every record of shard 0 as GetRecords returns it (`Data` in base64,
    /// `PartitionKey`, `SequenceNumber`).
    pub fn read_all_records(&self, stream: &str) -> Vec<Value> {
        let (status, body) = self
            .call(
                "GetShardIterator",
                json!({
                    "StreamName": stream,
                    "ShardId": "shardId-000000000000",
                    "ShardIteratorType": "TRIM_HORIZON",
                }),
            )
            .expect("GetShardIterator");
        assert_eq!(status, 200, "GetShardIterator: {body}");
        let mut iterator = body["ShardIterator"].as_str().map(str::to_owned);
        let mut all = Vec::new();
        while let Some(shard_iterator) = iterator.take() {
            let (status, body) = self
                .call(
                    "GetRecords",
                    json!({"ShardIterator": shard_iterator, "Limit": 10000}),
                )
                .expect("GetRecords");
            assert_eq!(status, 200, "GetRecords: {body}");
            let records = body["Records"].as_array().cloned().unwrap_or_default();
            if records.is_empty() {
                break;
            }
            all.extend(records);
            iterator = body["NextShardIterator"].as_str().map(str::to_owned);
        }
        all
    }

    pub fn read_all(&self, stream: &str) -> Vec<Vec<u8>> {
        self.read_all_records(stream)
            .iter()
            .map(|record| {
                base64::engine::general_purpose::STANDARD
                    .decode(record["Data"].as_str().expect("Data"))
                    .expect("base64 Data")
            })
            .collect()
    }
}

impl Drop for KinesisLocal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the fake does with one request; when the script is empty it accepts everything.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer this HTTP status with an `InternalFailure` body.
    Status(u16),
    /// A request-level 400 with this error type (throttling, expired token…).
    Error(&'static str),
    /// Read the headers, then close the connection without answering.
    DropConnection,
    /// Accept the records at even positions, throttle those at odd positions.
    ThrottleEveryOther,
    /// Answer `307 Temporary Redirect` to `/redirected` on this same server.
    Redirect,
    /// Answer this status with exactly this body (not necessarily JSON).
    Raw(u16, String),
    /// Store the records, but answer with this many results more (or, negative, fewer).
    ResultsOffBy(i32),
}

/// Temporary keys a credentials stand-in handed out, by access key id: the
/// fake checks each request's signature with the secret of the key that signed
/// it, its session token, and its expiry, as AWS does.
pub type KeyRing = Arc<Mutex<HashMap<String, ServedKey>>>;

#[derive(Clone, Debug)]
pub struct ServedKey {
    pub secret: String,
    pub token: String,
    pub expires_at: SystemTime,
}

#[derive(Default)]
struct FakeState {
    /// When set, requests are checked against these keys (see [`KeyRing`]).
    keys: Option<KeyRing>,
    /// The access key id that signed each accepted record, in order.
    accepted_key_ids: Vec<String>,
    /// Requests signed with a key after its expiry (refused with ExpiredTokenException).
    n_expired_uses: usize,
    script: VecDeque<Fault>,
    /// A request carrying a JSON record with this topic is refused as a whole.
    refused_topic: Option<String>,
    /// Data blobs of the records accepted, in order.
    accepted: Vec<Vec<u8>>,
    n_requests: usize,
    /// The request target of every request, in order.
    paths: Vec<String>,
    /// This server's clock minus the machine's, in seconds (a skewed gateway, seen from AWS).
    clock_offset_s: i64,
    /// Requests refused because their X-Amz-Date was more than 5 minutes off this server's clock.
    n_refused_for_time: usize,
    /// When set, signatures are recomputed with this secret and a wrong one refused.
    secret: Option<String>,
    /// Requests refused for a signature that did not match, with why.
    bad_signatures: Vec<String>,
    /// Every request is answered 503, until this is cleared (an outage of any length).
    down: bool,
}

/// An in-process PutRecords endpoint with scripted faults.
pub struct FakeKinesis {
    port: u16,
    state: Arc<Mutex<FakeState>>,
    stop: Arc<AtomicBool>,
}

impl FakeKinesis {
    pub fn start(script: Vec<Fault>) -> FakeKinesis {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake kinesis");
        let port = listener.local_addr().expect("local addr").port();
        let state = Arc::new(Mutex::new(FakeState {
            script: script.into(),
            ..FakeState::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (accept_state, accept_stop) = (Arc::clone(&state), Arc::clone(&stop));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if accept_stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let state = Arc::clone(&accept_state);
                std::thread::spawn(move || serve(stream, &state));
            }
        });
        FakeKinesis { port, state, stop }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Runs this server's clock `offset_s` seconds off the machine's: its `Date`
    /// says so, and it refuses signatures more than 5 minutes off it, as AWS does.
    pub fn set_clock_offset(&self, offset_s: i64) {
        self.lock().clock_offset_s = offset_s;
    }

    /// Check every request's SigV4 signature against `secret` from now on
    /// (support/sigv4.rs); a wrong one is refused as AWS does (403
    /// `InvalidSignatureException`) and listed in [`Self::bad_signatures`].
    pub fn check_signatures(&self, secret: &str) {
        self.lock().secret = Some(secret.to_owned());
    }

    /// Check every request against the keys put in the returned ring from
    /// now on: signature with that key's secret, its session token, its expiry.
    pub fn key_ring(&self) -> KeyRing {
        let ring = KeyRing::default();
        self.lock().keys = Some(Arc::clone(&ring));
        ring
    }

    /// The access key id that signed each accepted record, in order.
    pub fn accepted_key_ids(&self) -> Vec<String> {
        self.lock().accepted_key_ids.clone()
    }

    /// Requests signed with a key from the ring after it expired.
    pub fn n_expired_uses(&self) -> usize {
        self.lock().n_expired_uses
    }

    /// Why each refused signature was wrong.
    pub fn bad_signatures(&self) -> Vec<String> {
        self.lock().bad_signatures.clone()
    }

    /// While `down`, every request is answered `503 ServiceUnavailable`; nothing is accepted.
    pub fn set_down(&self, down: bool) {
        self.lock().down = down;
    }

    /// Requests refused as signed at the wrong time.
    pub fn n_refused_for_time(&self) -> usize {
        self.lock().n_refused_for_time
    }

    /// Refuse (400 ValidationException) every request holding a JSON-format record of `topic`.
    pub fn refuse_topic(&self, topic: &str) {
        self.lock().refused_topic = Some(topic.to_owned());
    }

    pub fn accepted(&self) -> Vec<Vec<u8>> {
        self.lock().accepted.clone()
    }

    pub fn n_requests(&self) -> usize {
        self.lock().n_requests
    }

    /// The request target (path) of every request so far.
    pub fn paths(&self) -> Vec<String> {
        self.lock().paths.clone()
    }

    pub fn script_done(&self) -> bool {
        self.lock().script.is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for FakeKinesis {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// One connection: requests until the client closes it (keep-alive) or a fault drops it.
fn serve(stream: TcpStream, state: &Mutex<FakeState>) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
    let mut writer = stream;
    loop {
        let Some(head) = super::http_head::read_head(&mut reader) else {
            return;
        };
        let has_auth = head.header("authorization").is_some();
        let amz_date = head.header("x-amz-date").and_then(parse_amz_date);
        let super::http_head::Head {
            method,
            path,
            headers,
            content_length,
        } = head;
        let fault = {
            let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
            state.n_requests += 1;
            state.paths.push(path.clone());
            state.script.pop_front()
        };
        if matches!(fault, Some(Fault::DropConnection)) {
            // Body unread: the client sees the connection die mid-request.
            let _ = writer.shutdown(std::net::Shutdown::Both);
            return;
        }
        let mut body = vec![0; content_length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        if let Some(Fault::Raw(status, answer)) = &fault {
            let head = format!(
                "HTTP/1.1 {status} Whatever\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\n\r\n",
                answer.len()
            );
            if writer.write_all(head.as_bytes()).is_err()
                || writer.write_all(answer.as_bytes()).is_err()
            {
                return;
            }
            continue;
        }
        if matches!(fault, Some(Fault::Redirect)) {
            let head = "HTTP/1.1 307 Temporary Redirect\r\nLocation: /redirected\r\nContent-Length: 0\r\n\r\n";
            if writer.write_all(head.as_bytes()).is_err() {
                return;
            }
            continue;
        }
        let (server_now, secret, keys) = {
            let state = state.lock().unwrap_or_else(|e| e.into_inner());
            (
                unix_now() + state.clock_offset_s,
                state.secret.clone(),
                state.keys.clone(),
            )
        };
        let header = |wanted: &str| {
            headers
                .iter()
                .find(|(name, _)| name == wanted)
                .map(|(_, value)| value.as_str())
        };
        let key_id = header("authorization")
            .and_then(|auth| auth.split("Credential=").nth(1))
            .and_then(|credential| credential.split('/').next())
            .unwrap_or("")
            .to_owned();
        let served = keys.as_ref().map(|keys| {
            keys.lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&key_id)
                .cloned()
        });
        let key_refusal = match &served {
            None => None,
            Some(None) => Some((
                400,
                json!({"__type": "UnrecognizedClientException", "message": "The security token included in the request is invalid."}),
            )),
            Some(Some(key)) if header("x-amz-security-token") != Some(key.token.as_str()) => {
                Some((
                    400,
                    json!({"__type": "UnrecognizedClientException", "message": "The security token included in the request is invalid."}),
                ))
            }
            Some(Some(key)) if SystemTime::now() >= key.expires_at => {
                state
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .n_expired_uses += 1;
                Some((
                    400,
                    json!({"__type": "ExpiredTokenException", "message": "The security token included in the request is expired"}),
                ))
            }
            Some(Some(_)) => None,
        };
        let secret = match &served {
            Some(Some(key)) => Some(key.secret.clone()),
            _ => secret,
        };
        let signature = secret.map(|secret| {
            let received = super::sigv4::Received {
                method: &method,
                path: &path,
                headers: &headers,
                body: &body,
            };
            super::sigv4::verify(&received, &secret)
        });
        let (status, answer) = if let Some(refusal) = key_refusal {
            refusal
        } else if let Some(Err(why)) = signature {
            state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .bad_signatures
                .push(why);
            (
                403,
                json!({"__type": "InvalidSignatureException", "message": "The request signature we calculated does not match the signature you provided."}),
            )
        } else if amz_date.is_some_and(|signed| (signed - server_now).abs() > 300) {
            state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .n_refused_for_time += 1;
            (
                400,
                json!({"__type": "InvalidSignatureException", "message": "Signature expired: the request time is more than 5 min. from the server's"}),
            )
        } else if has_auth
            && header("x-amz-target").is_some_and(|t| t.ends_with(".DescribeStreamSummary"))
        {
            (
                200,
                json!({"StreamDescriptionSummary": {"StreamName": "fake", "StreamStatus": "ACTIVE", "OpenShardCount": 1}}),
            )
        } else if has_auth {
            let n_before = state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .accepted
                .len();
            let answer = respond(fault, &body, state);
            let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
            let n_new = state.accepted.len() - n_before;
            state
                .accepted_key_ids
                .extend(std::iter::repeat_n(key_id.clone(), n_new));
            answer
        } else {
            (
                400,
                json!({"__type": "MissingAuthenticationTokenException"}),
            )
        };
        let answer = answer.to_string();
        let reason = if status == 200 { "OK" } else { "Error" };
        let head = format!(
            "HTTP/1.1 {status} {reason}\r\nDate: {}\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\n\r\n",
            http_date(server_now),
            answer.len()
        );
        if writer.write_all(head.as_bytes()).is_err()
            || writer.write_all(answer.as_bytes()).is_err()
        {
            return;
        }
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `20261130T070517Z` as Unix seconds.
fn parse_amz_date(text: &str) -> Option<i64> {
    let number = |range: std::ops::Range<usize>| text.get(range)?.parse::<i64>().ok();
    let (year, month, day) = (number(0..4)?, number(4..6)?, number(6..8)?);
    let (hour, minute, second) = (number(9..11)?, number(11..13)?, number(13..15)?);
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Unix seconds as an HTTP date: `Mon, 30 Nov 2026 07:05:17 GMT`.
pub fn http_date(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rest = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[days.rem_euclid(7) as usize],
        MONTHS[(month - 1) as usize],
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// Howard Hinnant's algorithms, as in the gateway; kept separate so a bug in one is not in both.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year - era * 400;
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

fn respond(fault: Option<Fault>, body: &[u8], state: &Mutex<FakeState>) -> (u16, Value) {
    let request: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let blobs: Vec<Vec<u8>> = request["Records"]
        .as_array()
        .map(|records| {
            records
                .iter()
                .map(|record| {
                    base64::engine::general_purpose::STANDARD
                        .decode(record["Data"].as_str().unwrap_or(""))
                        .unwrap_or_default()
                })
                .collect()
        })
        .unwrap_or_default();
    let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
    if state.down {
        return (
            503,
            json!({"__type": "ServiceUnavailable", "message": "injected: down"}),
        );
    }
    match fault {
        Some(Fault::Status(status)) => {
            return (
                status,
                json!({"__type": "InternalFailure", "message": "injected"}),
            )
        }
        Some(Fault::Error(error_type)) => {
            return (400, json!({"__type": error_type, "message": "injected"}))
        }
        _ => {}
    }
    if let Some(topic) = &state.refused_topic {
        let refused = blobs.iter().any(|blob| {
            serde_json::from_slice::<Value>(blob).is_ok_and(|record| record["topic"] == **topic)
        });
        if refused {
            return (
                400,
                json!({"__type": "ValidationException", "message": "injected: a record is invalid"}),
            );
        }
    }
    let throttle_odd = matches!(fault, Some(Fault::ThrottleEveryOther));
    let mut results = Vec::new();
    let mut n_failed = 0;
    for (record_idx, blob) in blobs.into_iter().enumerate() {
        if throttle_odd && record_idx % 2 == 1 {
            n_failed += 1;
            results.push(json!({
                "ErrorCode": "ProvisionedThroughputExceededException",
                "ErrorMessage": "injected",
            }));
        } else {
            state.accepted.push(blob);
            results.push(json!({"SequenceNumber": record_idx.to_string(), "ShardId": "shardId-000000000000"}));
        }
    }
    if let Some(Fault::ResultsOffBy(n)) = fault {
        if n < 0 {
            results.truncate(results.len().saturating_sub(n.unsigned_abs() as usize));
        } else {
            for _ in 0..n {
                results.push(json!({"SequenceNumber": "999", "ShardId": "shardId-000000000000"}));
            }
        }
    }
    (
        200,
        json!({"FailedRecordCount": n_failed, "Records": results}),
    )
}
