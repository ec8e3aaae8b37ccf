//! A minimal MQTT 3.1.1 broker on a raw socket, for what a real broker will
//! not send (Mosquitto refuses a topic that is not UTF-8 from any publisher).
//! Each connection: CONNACK, SUBACK for the first SUBSCRIBE, then `publish`
//! (raw PUBLISH packet bytes) at once, as a broker redelivering a queued
//! message would.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

pub struct FakeBroker {
    port: u16,
    connections: Arc<AtomicUsize>,
    pings: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl FakeBroker {
    pub fn start(publish: Vec<u8>) -> FakeBroker {
        FakeBroker::start_with(publish, true)
    }

    /// `answer_pings` false: PINGREQs are counted and never answered, as by a
    /// broker (or a link) that went silent without closing the connection.
    pub fn start_with(publish: Vec<u8>, answer_pings: bool) -> FakeBroker {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake broker");
        let port = listener.local_addr().expect("local addr").port();
        let connections = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let pings = Arc::new(AtomicUsize::new(0));
        let (counter, stopping) = (Arc::clone(&connections), Arc::clone(&stop));
        let ping_counter = Arc::clone(&pings);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                counter.fetch_add(1, Ordering::SeqCst);
                let publish = publish.clone();
                let pings = Arc::clone(&ping_counter);
                std::thread::spawn(move || serve(stream, &publish, &pings, answer_pings));
            }
        });
        FakeBroker {
            port,
            connections,
            pings,
            stop,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// TCP connections accepted so far.
    pub fn n_connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// PINGREQs received so far, over all connections.
    pub fn n_pings(&self) -> usize {
        self.pings.load(Ordering::SeqCst)
    }
}

impl Drop for FakeBroker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// A QoS 1 PUBLISH of `payload` with packet id 1 on a topic of raw `topic` bytes.
pub fn publish_packet(topic: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    body.extend_from_slice(topic);
    body.extend_from_slice(&1u16.to_be_bytes());
    body.extend_from_slice(payload);
    let mut packet = vec![0x32];
    push_remaining_length(&mut packet, body.len());
    packet.extend_from_slice(&body);
    packet
}

fn push_remaining_length(packet: &mut Vec<u8>, mut len: usize) {
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        packet.push(byte);
        if len == 0 {
            return;
        }
    }
}

/// One packet: (first byte, body).
fn read_packet(stream: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut first = [0u8; 1];
    stream.read_exact(&mut first).ok()?;
    let (mut len, mut shift) = (0usize, 0);
    loop {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).ok()?;
        len |= ((byte[0] & 0x7f) as usize) << shift;
        if byte[0] & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).ok()?;
    Some((first[0], body))
}

fn serve(mut stream: TcpStream, publish: &[u8], pings: &AtomicUsize, answer_pings: bool) {
    // CONNECT → CONNACK (session present: a queued message follows).
    let Some((0x10, _)) = read_packet(&mut stream) else {
        return;
    };
    if stream.write_all(&[0x20, 0x02, 0x01, 0x00]).is_err() {
        return;
    }
    while let Some((kind, body)) = read_packet(&mut stream) {
        match kind {
            // SUBSCRIBE: grant QoS 1 for each filter, then the message.
            0x82 => {
                let n_filters = count_filters(&body[2..]);
                let mut suback = vec![0x90];
                push_remaining_length(&mut suback, 2 + n_filters);
                suback.extend_from_slice(&body[..2]);
                suback.extend(std::iter::repeat_n(0x01, n_filters));
                if stream.write_all(&suback).is_err() || stream.write_all(publish).is_err() {
                    return;
                }
            }
            // PINGREQ → PINGRESP (unless told to stay silent).
            0xc0 => {
                pings.fetch_add(1, Ordering::SeqCst);
                if answer_pings && stream.write_all(&[0xd0, 0x00]).is_err() {
                    return;
                }
            }
            // DISCONNECT, or anything else: keep reading until the client goes.
            _ => {}
        }
    }
}

fn count_filters(mut payload: &[u8]) -> usize {
    let mut n = 0;
    while payload.len() >= 2 {
        let len = u16::from_be_bytes([payload[0], payload[1]]) as usize;
        payload = payload.get(2 + len + 1..).unwrap_or_default();
        n += 1;
    }
    n
}
