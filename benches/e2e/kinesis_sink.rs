//! The Kinesis stand-in: plain HTTP/1.1 on 127.0.0.1, a thread per
//! connection (the gateway keeps one alive), Content-Length bodies only.
//!
//! PutRecords succeeds for every record; DescribeStreamSummary says ACTIVE.
//! Each record's data is decoded to find the publisher's send time, so the
//! latency publish → Kinesis is measured on every record. Signatures are not
//! checked and nothing is stored. The tally is written to the stats file as
//! shell assignments (`sink_records=…`) every 200 ms, by rename, so a reader
//! never sees half a file.

use std::borrow::Cow;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use serde::Deserialize;

use crate::latency::Histogram;
use crate::now_us;

const PUT_RECORDS: &str = "Kinesis_20131202.PutRecords";
const DESCRIBE_STREAM_SUMMARY: &str = "Kinesis_20131202.DescribeStreamSummary";
const STATS_EVERY: Duration = Duration::from_millis(200);

pub fn run(port: u16, stats_path: PathBuf) -> Result<(), String> {
    let listener = TcpListener::bind(("127.0.0.1", port))
        .map_err(|error| format!("cannot listen on 127.0.0.1:{port}: {error}"))?;
    let port = listener
        .local_addr()
        .map_err(|error| format!("cannot read the bound port: {error}"))?
        .port();
    let tally = Arc::new(Mutex::new(Tally::new()));
    // Written once before serving: the file's existence says the port is open.
    write_stats(&stats_path, &lock(&tally).as_shell(port))
        .map_err(|error| format!("cannot write {}: {error}", stats_path.display()))?;
    let stats_tally = Arc::clone(&tally);
    std::thread::spawn(move || keep_writing_stats(&stats_path, port, &stats_tally));
    for stream in listener.incoming() {
        let stream = stream.map_err(|error| format!("accept failed: {error}"))?;
        {
            let mut tally = lock(&tally);
            tally.n_connections += 1;
            tally.version += 1;
        }
        let tally = Arc::clone(&tally);
        std::thread::spawn(move || {
            if let Err(error) = serve(stream, &tally) {
                eprintln!("kinesis-sink: connection ended: {error}");
            }
        });
    }
    Ok(())
}

/// What the stand-in has seen since it started.
struct Tally {
    /// More than one or two means the gateway does not keep its connection alive.
    n_connections: u64,
    /// PutRecords requests.
    n_requests: u64,
    n_records: u64,
    /// PutRecords request bodies, for bytes per record on the wire.
    n_body_bytes: u64,
    n_bad_requests: u64,
    /// Publish → Kinesis, µs, for records that carry a send time.
    latency: Histogram,
    /// When the slowest record arrived: tells a stall at start-up from one mid-run.
    slowest_at_us: u64,
    first_record_us: u64,
    last_record_us: u64,
    /// Bumped on every change, so an idle sink does not rewrite its file.
    version: u64,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            n_connections: 0,
            n_requests: 0,
            n_records: 0,
            n_body_bytes: 0,
            n_bad_requests: 0,
            latency: Histogram::new(),
            slowest_at_us: 0,
            first_record_us: 0,
            last_record_us: 0,
            version: 0,
        }
    }

    fn as_shell(&self, port: u16) -> String {
        format!(
            "sink_port={port}\nsink_connections={}\nsink_requests={}\nsink_records={}\nsink_body_bytes={}\n\
             sink_bad_requests={}\nsink_stamped={}\nsink_p50_us={}\nsink_p99_us={}\n\
             sink_max_us={}\nsink_slowest_at_us={}\nsink_first_record_us={}\nsink_last_record_us={}\n",
            self.n_connections,
            self.n_requests,
            self.n_records,
            self.n_body_bytes,
            self.n_bad_requests,
            self.latency.n_samples(),
            self.latency.percentile(0.50),
            self.latency.percentile(0.99),
            self.latency.max(),
            self.slowest_at_us,
            self.first_record_us,
            self.last_record_us,
        )
    }
}

/// A panicking connection thread must not stop the tally.
fn lock(tally: &Mutex<Tally>) -> std::sync::MutexGuard<'_, Tally> {
    tally
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn keep_writing_stats(stats_path: &PathBuf, port: u16, tally: &Mutex<Tally>) {
    let mut written_version = 0;
    loop {
        std::thread::sleep(STATS_EVERY);
        let (version, text) = {
            let tally = lock(tally);
            if tally.version == written_version {
                continue;
            }
            (tally.version, tally.as_shell(port))
        };
        match write_stats(stats_path, &text) {
            Ok(()) => written_version = version,
            Err(error) => eprintln!(
                "kinesis-sink: cannot write {}: {error}",
                stats_path.display()
            ),
        }
    }
}

fn write_stats(stats_path: &PathBuf, text: &str) -> io::Result<()> {
    let tmp_path = stats_path.with_extension("tmp");
    std::fs::write(&tmp_path, text)?;
    std::fs::rename(&tmp_path, stats_path)
}

fn serve(stream: TcpStream, tally: &Mutex<Tally>) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut reader = BufReader::with_capacity(64 * 1024, stream.try_clone()?);
    let mut writer = stream;
    let mut line = String::new();
    while let Some(request) = read_request(&mut reader, &mut line)? {
        let (status, body) = answer(&request, tally);
        let mut response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        response.extend_from_slice(&body);
        writer.write_all(&response)?;
        if request.close {
            break;
        }
    }
    Ok(())
}

struct Request {
    target: String,
    body: Vec<u8>,
    /// `Connection: close`: answer, then hang up.
    close: bool,
}

/// The next request on a kept-alive connection; `None` when the peer closed it.
fn read_request(reader: &mut impl BufRead, line: &mut String) -> io::Result<Option<Request>> {
    let invalid = |why: String| io::Error::new(io::ErrorKind::InvalidData, why);
    line.clear();
    if reader.read_line(line)? == 0 {
        return Ok(None);
    }
    let mut request = Request {
        target: String::new(),
        body: Vec::new(),
        close: line.trim_end().ends_with("HTTP/1.0"),
    };
    let mut content_length = 0;
    loop {
        line.clear();
        if reader.read_line(line)? == 0 {
            return Err(invalid("connection closed inside the headers".into()));
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let Some((name, value)) = header.split_once(':') else {
            return Err(invalid(format!("not a header: {header:?}")));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = value
                .parse()
                .map_err(|_| invalid(format!("bad Content-Length {value:?}")))?;
        } else if name.eq_ignore_ascii_case("x-amz-target") {
            request.target = value.to_owned();
        } else if name.eq_ignore_ascii_case("connection") {
            request.close = value.eq_ignore_ascii_case("close");
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(invalid(format!(
                "Transfer-Encoding {value:?} is not supported, only Content-Length"
            )));
        }
    }
    request.body = vec![0; content_length];
    reader.read_exact(&mut request.body)?;
    Ok(Some(request))
}

fn answer(request: &Request, tally: &Mutex<Tally>) -> (&'static str, Vec<u8>) {
    let received_us = now_us();
    match request.target.as_str() {
        PUT_RECORDS => match put_records(&request.body, received_us, tally) {
            Ok(n_records) => ("200 OK", put_records_answer(n_records)),
            Err(why) => {
                eprintln!("kinesis-sink: bad PutRecords request: {why}");
                let mut tally = lock(tally);
                tally.n_bad_requests += 1;
                tally.version += 1;
                (
                    "400 Bad Request",
                    error_answer("SerializationException", &why),
                )
            }
        },
        DESCRIBE_STREAM_SUMMARY => ("200 OK", describe_answer(&request.body)),
        other => (
            "400 Bad Request",
            error_answer("UnknownOperationException", other),
        ),
    }
}

#[derive(Deserialize)]
struct PutRecordsRequest<'a> {
    #[serde(rename = "Records", borrow)]
    records: Vec<RequestRecord<'a>>,
}

#[derive(Deserialize)]
struct RequestRecord<'a> {
    /// Base64 never needs JSON escapes, so this borrows from the body.
    #[serde(rename = "Data", borrow)]
    data: Cow<'a, str>,
}

/// The publisher's send time, in µs: `payload.t` in the gateway's JSON
/// envelope (a JSON payload is embedded as is), or `t` for raw records.
#[derive(Deserialize)]
struct StampedRecord {
    payload: Option<SendStamp>,
    t: Option<u64>,
}

#[derive(Deserialize)]
struct SendStamp {
    t: Option<u64>,
}

/// Counts the request's records and times the stamped ones; their number.
fn put_records(body: &[u8], received_us: u64, tally: &Mutex<Tally>) -> Result<usize, String> {
    let request: PutRecordsRequest =
        serde_json::from_slice(body).map_err(|error| format!("unreadable body: {error}"))?;
    let mut data = Vec::new();
    let mut latencies_us = Vec::with_capacity(request.records.len());
    // Messages, not Kinesis records: a KPL aggregated record counts each it carries.
    let mut n_messages = 0;
    for record in &request.records {
        data.clear();
        base64::engine::general_purpose::STANDARD
            .decode_vec(record.data.as_bytes(), &mut data)
            .map_err(|error| format!("record data is not base64: {error}"))?;
        let messages = kpl_messages(&data).unwrap_or_else(|| vec![&data[..]]);
        n_messages += messages.len();
        for message in messages {
            let sent_us = serde_json::from_slice::<StampedRecord>(message)
                .ok()
                .and_then(|stamped| stamped.payload.and_then(|payload| payload.t).or(stamped.t));
            if let Some(sent_us) = sent_us {
                latencies_us.push(received_us.saturating_sub(sent_us));
            }
        }
    }
    let n_kinesis_records = request.records.len();
    let n_records = n_messages;
    let mut tally = lock(tally);
    tally.n_requests += 1;
    tally.n_records += n_records as u64;
    tally.n_body_bytes += body.len() as u64;
    for latency_us in latencies_us {
        if latency_us > tally.latency.max() {
            tally.slowest_at_us = received_us;
        }
        tally.latency.record(latency_us);
    }
    if n_records > 0 {
        if tally.first_record_us == 0 {
            tally.first_record_us = received_us;
        }
        tally.last_record_us = received_us;
    }
    tally.version += 1;
    Ok(n_kinesis_records)
}

/// The messages inside a KPL aggregated record (magic, protobuf, MD5), or
/// `None` for a plain record. Reads only what the gateway writes: field 3
/// (records), each with field 3 (data).
fn kpl_messages(data: &[u8]) -> Option<Vec<&[u8]>> {
    const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];
    let message = data.strip_prefix(&MAGIC)?;
    let message = &message[..message.len().checked_sub(16)?];
    let mut out = Vec::new();
    for (field, value) in fields(message)? {
        if field == 3 {
            let (_, data) = fields(value)?.into_iter().find(|(field, _)| *field == 3)?;
            out.push(data);
        }
    }
    Some(out)
}

/// Length-delimited and varint fields of a protobuf message: (field, bytes);
/// a varint field's bytes are empty.
fn fields(mut bytes: &[u8]) -> Option<Vec<(u64, &[u8])>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let (tag, rest) = varint(bytes)?;
        bytes = rest;
        match tag & 7 {
            0 => bytes = varint(bytes)?.1,
            2 => {
                let (len, rest) = varint(bytes)?;
                let len = usize::try_from(len).ok()?;
                out.push((tag >> 3, rest.get(..len)?));
                bytes = rest.get(len..)?;
            }
            _ => return None,
        }
    }
    Some(out)
}

fn varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0u64;
    for (i, byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, &bytes[i + 1..]));
        }
    }
    None
}

/// Every record stored, results in request order as Kinesis gives them,
/// with sequence numbers as long as Kinesis's (56 digits): reading the
/// answer is part of what each Kinesis record costs the gateway.
fn put_records_answer(n_records: usize) -> Vec<u8> {
    const RESULT: &[u8] = br#"{"SequenceNumber":"49590338271490256608559692538361571095921575989136588898","ShardId":"shardId-000000000000"}"#;
    let mut body = Vec::with_capacity(48 + n_records * (RESULT.len() + 1));
    body.extend_from_slice(br#"{"FailedRecordCount":0,"Records":["#);
    for record_idx in 0..n_records {
        if record_idx > 0 {
            body.push(b',');
        }
        body.extend_from_slice(RESULT);
    }
    body.extend_from_slice(b"]}");
    body
}

fn describe_answer(body: &[u8]) -> Vec<u8> {
    let request: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let stream = request["StreamName"].as_str().unwrap_or("bench");
    serde_json::json!({
        "StreamDescriptionSummary": {
            "StreamName": stream,
            "StreamARN": format!("arn:aws:kinesis:us-east-1:000000000000:stream/{stream}"),
            "StreamStatus": "ACTIVE",
            "StreamModeDetails": { "StreamMode": "PROVISIONED" },
            "RetentionPeriodHours": 24,
            "StreamCreationTimestamp": 1_700_000_000,
            "EnhancedMonitoring": [{ "ShardLevelMetrics": [] }],
            "EncryptionType": "NONE",
            "OpenShardCount": 1,
            "ConsumerCount": 0
        }
    })
    .to_string()
    .into_bytes()
}

fn error_answer(error_type: &str, message: &str) -> Vec<u8> {
    serde_json::json!({ "__type": error_type, "message": message })
        .to_string()
        .into_bytes()
}
