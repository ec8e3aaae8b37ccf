//! An MQTT 3.1.1 publisher on a plain TcpStream, as fast as the broker takes
//! QoS 1 or paced at a rate. Each payload is `{"t":<send µs>,"seq":<n>,"pad":"x…"}`,
//! padded to the requested size, so the Kinesis stand-in can time it.
//!
//! A writer (this thread) keeps up to [`WINDOW`] messages unacknowledged; a
//! reader thread counts PUBACKs. It returns once every message is
//! acknowledged. No TLS, no auth, no keep-alive pings, no retransmission:
//! a lost connection is an error, because the bench must not count a
//! message twice or silently miss one.

use std::io::{self, BufReader, BufWriter, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::now_us;

/// Unacknowledged messages at most: enough to keep the broker busy, far
/// below the 65535 packet ids that must stay unique while in flight.
const WINDOW: u64 = 1000;
/// No PUBACK for this long means the broker is stuck or gone.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);
const PUBACK: u8 = 0x40;

pub struct Plan {
    pub host: String,
    pub port: u16,
    pub topic: String,
    pub n_messages: u64,
    /// Messages per second, evenly spaced; `None`: as fast as acknowledged.
    pub rate: Option<f64>,
    pub payload_size: usize,
    pub qos: u8,
}

pub struct Report {
    /// From the first message sent to the last acknowledged.
    pub seconds: f64,
}

pub fn run(plan: &Plan) -> Result<Report, String> {
    if plan.qos > 1 {
        return Err(format!("--qos {}: only 0 and 1 are supported", plan.qos));
    }
    if plan.rate.is_some_and(|rate| rate <= 0.0) {
        return Err("--rate must be above 0".into());
    }
    let address = format!("{}:{}", plan.host, plan.port);
    let stream = TcpStream::connect(&address)
        .map_err(|error| format!("cannot connect to {address}: {error}"))?;
    let io_error = |error: io::Error| format!("{address}: {error}");
    stream.set_nodelay(true).map_err(io_error)?;
    let client_id = format!("e2e-pub-{}-{}", std::process::id(), plan.port);
    connect(&stream, &client_id).map_err(io_error)?;

    let acks = Arc::new(Acks::default());
    let reader_acks = Arc::clone(&acks);
    let reader = BufReader::new(stream.try_clone().map_err(io_error)?);
    std::thread::spawn(move || count_pubacks(reader, &reader_acks));

    let started = Instant::now();
    let mut writer = BufWriter::with_capacity(64 * 1024, stream);
    let mut packet = Vec::with_capacity(plan.payload_size + plan.topic.len() + 16);
    for seq in 0..plan.n_messages {
        if let Some(rate) = plan.rate {
            let due = started + Duration::from_secs_f64(seq as f64 / rate);
            if let Some(early) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(early);
            }
        }
        if plan.qos == 1 && seq >= WINDOW && !acks.has_at_least(seq + 1 - WINDOW) {
            // What is still buffered cannot be acknowledged: send it first.
            writer.flush().map_err(io_error)?;
            acks.wait_for(seq + 1 - WINDOW)?;
        }
        encode_publish(&mut packet, plan, seq);
        writer.write_all(&packet).map_err(io_error)?;
        if plan.rate.is_some() {
            // Paced messages leave at their time, or the latency is ours.
            writer.flush().map_err(io_error)?;
        }
    }
    writer.flush().map_err(io_error)?;
    if plan.qos == 1 {
        acks.wait_for(plan.n_messages)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    // DISCONNECT: a clean goodbye, so the broker logs no error.
    writer.write_all(&[0xE0, 0x00]).map_err(io_error)?;
    writer.flush().map_err(io_error)?;
    Ok(Report { seconds })
}

/// CONNECT with a clean session and no keep-alive; waits for CONNACK.
fn connect(stream: &TcpStream, client_id: &str) -> io::Result<()> {
    let mut body = Vec::with_capacity(12 + client_id.len());
    body.extend_from_slice(&[0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x00]);
    push_string(&mut body, client_id);
    let mut packet = vec![0x10];
    push_remaining_length(&mut packet, body.len());
    packet.extend_from_slice(&body);
    (&*stream).write_all(&packet)?;

    stream.set_read_timeout(Some(ACK_TIMEOUT))?;
    let mut connack = [0u8; 4];
    (&*stream).read_exact(&mut connack)?;
    stream.set_read_timeout(None)?;
    match connack {
        [0x20, 0x02, _, 0x00] => Ok(()),
        [0x20, 0x02, _, code] => Err(io::Error::other(format!(
            "broker refused the connection, CONNACK code {code}"
        ))),
        other => Err(io::Error::other(format!(
            "expected CONNACK, got bytes {other:02x?}"
        ))),
    }
}

/// PUBLISH of message `seq` into `packet`, stamped with the time now.
fn encode_publish(packet: &mut Vec<u8>, plan: &Plan, seq: u64) {
    let mut payload = format!("{{\"t\":{},\"seq\":{seq},\"pad\":\"", now_us()).into_bytes();
    let n_pad = plan.payload_size.saturating_sub(payload.len() + 2);
    payload.resize(payload.len() + n_pad, b'x');
    payload.extend_from_slice(b"\"}");

    let packet_id_len = if plan.qos == 1 { 2 } else { 0 };
    packet.clear();
    packet.push(0x30 | (plan.qos << 1));
    push_remaining_length(packet, 2 + plan.topic.len() + packet_id_len + payload.len());
    push_string(packet, &plan.topic);
    if plan.qos == 1 {
        // Ids 1..=65535 (0 is not allowed), reused round-robin.
        let packet_id = (seq % 65_535 + 1) as u16;
        packet.extend_from_slice(&packet_id.to_be_bytes());
    }
    packet.extend_from_slice(&payload);
}

fn push_string(packet: &mut Vec<u8>, text: &str) {
    packet.extend_from_slice(&(text.len() as u16).to_be_bytes());
    packet.extend_from_slice(text.as_bytes());
}

/// MQTT's variable-length integer: 7 bits a byte, high bit = more follows.
fn push_remaining_length(packet: &mut Vec<u8>, mut length: usize) {
    loop {
        let byte = (length % 128) as u8;
        length /= 128;
        if length == 0 {
            packet.push(byte);
            return;
        }
        packet.push(byte | 0x80);
    }
}

/// PUBACKs counted by the reader thread, waited on by the writer.
#[derive(Default)]
struct Acks {
    state: Mutex<AckState>,
    changed: Condvar,
}

#[derive(Default)]
struct AckState {
    n_acked: u64,
    /// Why the reader stopped; set once the connection is gone.
    lost: Option<String>,
}

impl Acks {
    fn state(&self) -> std::sync::MutexGuard<'_, AckState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn has_at_least(&self, n_acked: u64) -> bool {
        self.state().n_acked >= n_acked
    }

    /// Until `n_acked` messages are acknowledged; fails if the connection is
    /// lost or no PUBACK arrives for [`ACK_TIMEOUT`].
    fn wait_for(&self, n_acked: u64) -> Result<(), String> {
        let mut state = self.state();
        loop {
            if state.n_acked >= n_acked {
                return Ok(());
            }
            if let Some(why) = &state.lost {
                return Err(format!(
                    "connection lost after {} PUBACKs: {why}",
                    state.n_acked
                ));
            }
            let n_before = state.n_acked;
            let (next, timeout) = self
                .changed
                .wait_timeout(state, ACK_TIMEOUT)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            state = next;
            if timeout.timed_out() && state.n_acked == n_before {
                return Err(format!(
                    "no PUBACK for {ACK_TIMEOUT:?}, {} of {n_acked} acknowledged",
                    state.n_acked
                ));
            }
        }
    }
}

fn count_pubacks(mut reader: BufReader<TcpStream>, acks: &Acks) {
    let why = loop {
        match read_packet_type(&mut reader) {
            Ok(PUBACK) => {
                acks.state().n_acked += 1;
                acks.changed.notify_all();
            }
            Ok(_) => {}
            Err(error) => break error.to_string(),
        }
    };
    acks.state().lost = Some(why);
    acks.changed.notify_all();
}

/// Reads one whole packet and returns its type (the high nibble of byte 0, shifted back).
fn read_packet_type(reader: &mut impl Read) -> io::Result<u8> {
    let mut byte = [0u8; 1];
    reader.read_exact(&mut byte)?;
    let packet_type = byte[0] & 0xF0;
    let mut length = 0usize;
    for shift in (0..28).step_by(7) {
        reader.read_exact(&mut byte)?;
        length |= usize::from(byte[0] & 0x7F) << shift;
        if byte[0] & 0x80 == 0 {
            break;
        }
    }
    io::copy(&mut reader.take(length as u64), &mut io::sink())?;
    Ok(packet_type)
}
