//! Kinesis for the drain tests: the kinesis-local emulator (real API, no
//! signature checks) and a small in-process fake HTTP server for faults.
//!
//! The emulator is a node process on free ports, killed on drop. The fake
//! speaks just enough HTTP/1.1 for PutRecords, follows a script of faults,
//! and records every record it accepted. kinesis-local does not check
//! signatures; the fake does when told the secret ([`FakeKinesis::check_signatures`]).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

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
    pub fn read_all(&self, stream: &str) -> Vec<Vec<u8>> {
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
        let mut data = Vec::new();
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
            for record in records {
                let blob = record["Data"].as_str().expect("Data");
                data.push(
                    base64::engine::general_purpose::STANDARD
                        .decode(blob)
                        .expect("base64 Data"),
                );
            }
            iterator = body["NextShardIterator"].as_str().map(str::to_owned);
        }
        data
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

#[derive(Default)]
struct FakeState {
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
        let mut content_length = 0usize;
        let mut has_auth = false;
        let mut amz_date: Option<i64> = None;
        let mut headers: Vec<(String, String)> = Vec::new();
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let method = line.split_whitespace().next().unwrap_or("").to_owned();
        let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                let name = name.trim().to_ascii_lowercase();
                if name == "content-length" {
                    content_length = value.trim().parse().unwrap_or(0);
                }
                has_auth |= name == "authorization";
                if name == "x-amz-date" {
                    amz_date = parse_amz_date(value.trim());
                }
                headers.push((name, value.trim().to_owned()));
            }
        }
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
        let (server_now, secret) = {
            let state = state.lock().unwrap_or_else(|e| e.into_inner());
            (unix_now() + state.clock_offset_s, state.secret.clone())
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
        let (status, answer) = if let Some(Err(why)) = signature {
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
        } else if has_auth {
            respond(fault, &body, state)
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
fn http_date(secs: i64) -> String {
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

fn civil_from_days(days: i64) -> (i64, i64, i64) {
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
