//! One function per fuzz target: bytes in, the function under test called,
//! its promises checked (a broken promise panics, which libFuzzer reports).
//!
//! Shared by the `cargo fuzz` targets (`fuzz/fuzz_targets/*.rs`) and by the
//! normal test suite (`tests/it/fuzz_replay.rs`, which includes this file by
//! path and replays `fuzz/corpus/` and `fuzz/regressions/` on stable Rust).
//! It uses only the crate's public API, std, serde_json and toml, so it builds
//! in both places without `arbitrary`: structured inputs are read from the
//! bytes by [`Bytes`].

#![allow(dead_code)]

use std::path::Path;

use mqtt_kinesis_bridge::catalog::rows::{self, BrokerRow, TopicRow, MAX_FILTER_BYTES};
use mqtt_kinesis_bridge::catalog::{snapshot, Catalog};
use mqtt_kinesis_bridge::config::{Config, RecordFormat};
use mqtt_kinesis_bridge::drain::{put_records, record_format};
use mqtt_kinesis_bridge::sealed::{Binding, SealKey, COLUMNS};
use mqtt_kinesis_bridge::secret::Secret;
use mqtt_kinesis_bridge::spool::Record;

/// A target: bytes in, a panic when a promise is broken.
pub type Target = fn(&[u8]);

/// Every target, by name: the directories under `fuzz/corpus/` and `fuzz/regressions/`.
pub const TARGETS: [(&str, Target); 8] = [
    ("config", config),
    ("catalog_rows", catalog_rows),
    ("topic_filter", topic_filter),
    ("snapshot_restore", snapshot_restore),
    ("snapshot_file", snapshot_file),
    ("put_records", put_records),
    ("record_format", record_format),
    ("sealed_open", sealed_open),
];

/// The longest line a problem or failure may print, whatever the size of
/// the input (up to 8 KiB when fuzzing): a huge cell or response must not
/// flood the log, so values are quoted as excerpts.
const MAX_MESSAGE_BYTES: usize = 4096;

/// Panics naming `what` when `line` is longer than [`MAX_MESSAGE_BYTES`].
fn check_bounded(what: &str, line: &str) {
    let shown: String = line.chars().take(300).collect();
    assert!(
        line.len() <= MAX_MESSAGE_BYTES,
        "{what} of {} bytes: {shown}",
        line.len()
    );
}

/// The key the targets seal and open with: 32 zero bytes.
fn test_key() -> SealKey {
    SealKey::from_base64("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=").expect("a valid key")
}

/// Reads structured values from fuzz bytes; past the end every read is 0 or empty.
pub struct Bytes<'a> {
    data: &'a [u8],
}

impl<'a> Bytes<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Bytes { data }
    }

    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((first, rest)) => {
                self.data = rest;
                *first
            }
            None => 0,
        }
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        for slot in &mut out {
            *slot = self.byte();
        }
        out
    }

    /// Small values most of the time (so ids repeat and ranges' edges are
    /// near), any width otherwise.
    pub fn int(&mut self) -> i64 {
        match self.byte() % 4 {
            0 => i64::from(self.byte()) - 2,
            1 => i64::from(i16::from_le_bytes(self.array())),
            2 => i64::from(i32::from_le_bytes(self.array())),
            _ => i64::from_le_bytes(self.array()),
        }
    }

    pub fn opt_int(&mut self) -> Option<i64> {
        (self.byte() & 1 == 1).then(|| self.int())
    }

    pub fn opt_bool(&mut self) -> Option<bool> {
        match self.byte() % 3 {
            0 => None,
            1 => Some(false),
            _ => Some(true),
        }
    }

    /// Text up to the next 0xFF byte (never part of UTF-8), lossily decoded.
    pub fn text(&mut self) -> String {
        let end = self
            .data
            .iter()
            .position(|b| *b == 0xFF)
            .unwrap_or(self.data.len());
        let text = String::from_utf8_lossy(&self.data[..end]).into_owned();
        self.data = self.data.get(end + 1..).unwrap_or_default();
        text
    }

    pub fn opt_text(&mut self) -> Option<String> {
        (self.byte() & 1 == 1).then(|| self.text())
    }

    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// `Config::parse` on the bytes as TOML. Every path the config names must be
/// a bare file name (else the input is skipped): parsing creates the
/// directories of `spool.path`, `database.snapshot_path` and `status.file`,
/// and a fuzzer must not create directories all over the machine.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(table) = toml::from_str::<toml::Table>(text) {
        let paths = [
            ("spool", "path"),
            ("database", "snapshot_path"),
            ("database", "password_key_file"),
            ("status", "file"),
        ];
        for (section, key) in paths {
            let value = table
                .get(section)
                .and_then(|section| section.as_table())
                .and_then(|section| section.get(key));
            if let Some(toml::Value::String(path)) = value {
                if path.contains('/') {
                    return;
                }
            }
        }
    }
    let env = |name: &str| (name == "AWS_REGION").then(|| "eu-west-1".to_owned());
    match Config::parse(text, Path::new("fuzz.toml"), env) {
        Ok(config) => {
            assert!(!config.gateway_id.is_empty());
            assert!(config.spool.max_bytes >= 1024 * 1024);
        }
        Err(error) => {
            let _ = error.to_string();
        }
    }
}

/// A sealed value made on the fly, so the fuzzer reaches the opening code
/// with values that open: `seal1:TEXT` (v1), `seal2:TEXT` (v2 for this row
/// and column), `sealx:TEXT` (v2 for another row). Anything else is as is.
fn maybe_sealed(key: &SealKey, text: String, broker_id: i64, column: &str) -> String {
    if let Some(plain) = text.strip_prefix("seal1:") {
        key.seal(plain)
    } else if let Some(plain) = text.strip_prefix("seal2:") {
        key.seal_for(plain, Binding { broker_id, column })
    } else if let Some(plain) = text.strip_prefix("sealx:") {
        let broker_id = broker_id.wrapping_add(1);
        key.seal_for(plain, Binding { broker_id, column })
    } else {
        text
    }
}

fn broker_row(bytes: &mut Bytes, key: &SealKey) -> BrokerRow {
    let mqtt_id = bytes.int();
    let secret = |bytes: &mut Bytes, column: &str| {
        bytes
            .opt_text()
            .map(|text| Secret::new(maybe_sealed(key, text, mqtt_id, column)))
    };
    BrokerRow {
        mqtt_id,
        host: bytes.opt_text(),
        port: bytes.opt_int(),
        username: bytes.opt_text(),
        password: secret(bytes, "mqtt_password"),
        failover: bytes.opt_text(),
        use_tls: bytes.opt_bool(),
        verify_cert: bytes.opt_bool(),
        ca_cert: bytes.opt_text(),
        client_cert: bytes.opt_text(),
        client_key: secret(bytes, "client_key"),
        client_id: bytes.opt_text(),
        keep_alive: bytes.opt_int(),
        clean_session: bytes.opt_bool(),
        qos: bytes.opt_int(),
        topic_prefix: bytes.opt_text(),
        use_shared_subscriptions: bytes.opt_bool(),
        shared_group: bytes.opt_text(),
    }
}

fn topic_row(bytes: &mut Bytes) -> TopicRow {
    TopicRow {
        topic_id: bytes.int(),
        mqtt_id: bytes.opt_int(),
        topic: bytes.opt_text(),
        qos: bytes.opt_int(),
        // Not drawn from the input: the kept corpus keeps its meaning.
        device_id_level: None,
    }
}

/// What every validated catalog promises the sessions, however it was made.
fn check_catalog(catalog: &Catalog) {
    let mut ids = std::collections::BTreeSet::new();
    for broker in &catalog.brokers {
        assert!(ids.insert(broker.id), "broker {} twice", broker.id);
        assert!(!broker.endpoints.is_empty(), "broker without an endpoint");
        for endpoint in &broker.endpoints {
            assert!(!endpoint.host.is_empty(), "an empty host");
            assert_ne!(endpoint.port, 0, "port 0");
        }
        if let Some(keep_alive) = broker.keep_alive {
            assert!(
                (1..=65535).contains(&keep_alive.as_secs()),
                "keep-alive {keep_alive:?}"
            );
        }
        if let Some(client_id) = &broker.client_id {
            assert!(
                client_id.len() <= 128,
                "client id of {} bytes",
                client_id.len()
            );
        }
        if broker.password.is_some() {
            assert!(broker.username.is_some(), "a password without a user name");
        }
        for topic in &broker.topics {
            assert!(topic.qos <= 2, "qos {}", topic.qos);
            // What goes into SUBSCRIBE: the share group included.
            assert!(
                topic.filter.len() <= MAX_FILTER_BYTES,
                "a filter of {} bytes",
                topic.filter.len()
            );
            let own = match topic.filter.strip_prefix("$share/") {
                Some(rest) => rest.split_once('/').expect("$share/group/filter").1,
                None => &topic.filter,
            };
            assert_eq!(rows::check_filter(own), Ok(()), "filter {own:?}");
        }
    }
}

/// `rows::validate_with_key` on broker and topic rows read from the bytes.
pub fn catalog_rows(data: &[u8]) {
    let mut bytes = Bytes::new(data);
    let key = test_key();
    let use_key = bytes.byte() & 1 == 1;
    let n_brokers = usize::from(bytes.byte() % 6);
    let broker_rows: Vec<BrokerRow> = (0..n_brokers)
        .map(|_| broker_row(&mut bytes, &key))
        .collect();
    let mut topic_rows = Vec::new();
    while !bytes.is_empty() && topic_rows.len() < 64 {
        topic_rows.push(topic_row(&mut bytes));
    }
    let (catalog, problems) = rows::validate(&broker_rows, &topic_rows, use_key.then_some(&key));
    check_catalog(&catalog);
    for problem in &problems {
        check_bounded("a problem line", &problem.to_string());
    }
    // Every row with a unique id runs, or is named as a problem.
    for row in &broker_rows {
        if broker_rows
            .iter()
            .filter(|r| r.mqtt_id == row.mqtt_id)
            .count()
            == 1
        {
            let runs = catalog.brokers.iter().any(|b| b.id == row.mqtt_id);
            let named = problems.iter().any(|problem| {
                matches!(problem, rows::RowProblem::Broker { mqtt_id, .. } if *mqtt_id == row.mqtt_id)
            });
            assert!(
                runs != named,
                "broker {}: runs {runs}, named {named}",
                row.mqtt_id
            );
        }
    }
}

/// MQTT 3.1.1 §4.7's rules for a subscription filter, written apart from
/// `check_filter` to check it, with the gateway's length limit.
fn filter_is_valid(filter: &str) -> bool {
    let levels: Vec<&str> = filter.split('/').collect();
    !filter.is_empty()
        && filter.len() <= MAX_FILTER_BYTES
        && !filter.contains('\0')
        && levels.iter().enumerate().all(|(idx, level)| {
            (!level.contains('#') || (*level == "#" && idx == levels.len() - 1))
                && (!level.contains('+') || *level == "+")
        })
}

/// `rows::check_filter` against the rules, then one broker row (prefix,
/// share group) with one topic row through validation: the filters it
/// subscribes to are valid and within the limit.
pub fn topic_filter(data: &[u8]) {
    let mut bytes = Bytes::new(data);
    let filter = bytes.text();
    assert_eq!(
        rows::check_filter(&filter).is_ok(),
        filter_is_valid(&filter),
        "check_filter({filter:?})"
    );
    let broker = BrokerRow {
        mqtt_id: 1,
        host: Some("localhost".into()),
        topic_prefix: bytes.opt_text(),
        use_shared_subscriptions: bytes.opt_bool(),
        shared_group: bytes.opt_text(),
        qos: bytes.opt_int(),
        ..BrokerRow::default()
    };
    let topic = TopicRow {
        topic_id: 1,
        mqtt_id: Some(1),
        topic: Some(filter),
        qos: bytes.opt_int(),
        device_id_level: None,
    };
    let (catalog, problems) = rows::validate(&[broker], &[topic], None);
    check_catalog(&catalog);
    for problem in &problems {
        check_bounded("a problem line", &problem.to_string());
    }
}

/// `snapshot::decode` on rows read from the bytes (each a broker as JSON, as
/// the snapshot stores it): a damaged or hostile snapshot is refused or
/// restores a catalog that keeps every promise of a validated one.
pub fn snapshot_restore(data: &[u8]) {
    let mut bytes = Bytes::new(data);
    let key = test_key();
    let use_key = bytes.byte() & 1 == 1;
    let taken_at_ms = bytes.int();
    let mut rows = Vec::new();
    while !bytes.is_empty() {
        let text = bytes.text();
        // Values sealed on the fly, as in `catalog_rows`, so they can open.
        let text = text.replace("\"SEAL1\"", &format!("{:?}", key.seal("pw")));
        let text = text.replace(
            "\"SEAL2\"",
            &format!(
                "{:?}",
                key.seal_for(
                    "pw",
                    Binding {
                        broker_id: 1,
                        column: "mqtt_password",
                    }
                )
            ),
        );
        rows.push(text);
    }
    match snapshot::decode(taken_at_ms, &rows, use_key.then_some(&key)) {
        Ok(snapshot) => {
            check_catalog(&snapshot.catalog);
            for why in &snapshot.skipped {
                check_bounded("a skipped broker's reason", &why.to_string());
            }
            let _ = snapshot.age();
        }
        Err(problem) => check_bounded("a snapshot error", &problem.to_string()),
    }
}

/// `snapshot::load` on a file holding the bytes (an SQLite file, damaged or not).
pub fn snapshot_file(data: &[u8]) {
    thread_local! {
        static DIR: std::path::PathBuf = {
            let base = Path::new("/dev/shm");
            let base = if base.is_dir() { base.to_owned() } else { std::env::temp_dir() };
            // One directory for every run; each file is removed after its run.
            let dir = base.join("mkb-fuzz-snapshot");
            std::fs::create_dir_all(&dir).expect("a scratch directory");
            dir
        };
    }
    let name = format!(
        "{}-{:?}.db",
        std::process::id(),
        std::thread::current().id()
    );
    let path = DIR.with(|dir| dir.join(name));
    std::fs::write(&path, data).expect("the snapshot file written");
    let key = test_key();
    let loaded = snapshot::load(&path, Some(&key));
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut name = path.clone().into_os_string();
        name.push(suffix);
        let _ = std::fs::remove_file(name);
    }
    let _ = std::fs::remove_file(&path);
    match loaded {
        Ok(Some(snapshot)) => {
            check_catalog(&snapshot.catalog);
            for why in &snapshot.skipped {
                check_bounded("a skipped broker's reason", &why.to_string());
            }
        }
        Ok(None) => panic!("an existing file read as no snapshot"),
        Err(error) => check_bounded("a snapshot error", &error.to_string()),
    }
}

/// `put_records::parse_response` for a status and body: every record sent
/// comes back exactly once (delivered, retry or dead) or the request fails
/// as a whole, and what it prints is bounded.
pub fn put_records(data: &[u8]) {
    let mut bytes = Bytes::new(data);
    let status = match bytes.byte() % 8 {
        0..=2 => 200,
        3 => 400,
        4 => 500,
        5 => 413,
        6 => u16::from(bytes.byte()) + 200,
        _ => u16::from_le_bytes(bytes.array()),
    };
    let n_sent = i64::from(bytes.byte() % 6);
    let sent: Vec<i64> = (1..=n_sent).collect();
    let body = bytes.rest();
    match put_records::parse_response(status, body, &sent) {
        Ok(outcome) => {
            assert!((200..300).contains(&status), "an outcome for HTTP {status}");
            let mut ids: Vec<i64> = outcome
                .delivered
                .iter()
                .chain(&outcome.retry)
                .chain(outcome.dead.iter().map(|(id, _)| id))
                .copied()
                .collect();
            ids.sort_unstable();
            assert_eq!(ids, sent, "records lost or doubled");
            for (_, reason) in &outcome.dead {
                check_bounded("a dead letter's reason", reason);
            }
        }
        Err(failure) => {
            check_bounded("a failure line", &failure.to_string());
        }
    }
}

/// `record_format::encode`: raw is the payload; the JSON envelope is one
/// JSON value whose fields say what the record holds.
pub fn record_format(data: &[u8]) {
    let mut bytes = Bytes::new(data);
    let json = bytes.byte() & 1 == 1;
    let clock_offset_ms = bytes.int();
    let spool_uid = bytes.text();
    let record = Record {
        id: bytes.int(),
        broker_id: bytes.int(),
        qos: bytes.byte(),
        received_at_ms: bytes.int(),
        attempts: 0,
        partition_key: bytes.text(),
        device_id: None,
        topic: bytes.text(),
        payload: bytes.rest().to_vec(),
    };
    let format = if json {
        RecordFormat::Json
    } else {
        RecordFormat::Raw
    };
    let blob = record_format::encode(format, &spool_uid, &record, clock_offset_ms);
    if !json {
        assert_eq!(blob, record.payload);
        return;
    }
    // Numbers beyond f64 (a payload of `1e999`) are valid JSON that serde_json's
    // `Value` cannot hold: the envelope's syntax is checked on its own.
    if let Err(error) = serde_json::from_slice::<serde::de::IgnoredAny>(&blob) {
        panic!(
            "the envelope is not JSON: {error}: {}",
            String::from_utf8_lossy(&blob)
        );
    }
    let Ok(envelope) = serde_json::from_slice::<serde_json::Value>(&blob) else {
        return;
    };
    assert_eq!(envelope["broker_id"], record.broker_id);
    assert_eq!(envelope["topic"], record.topic.as_str());
    assert_eq!(envelope["qos"], record.qos);
    assert_eq!(envelope["received_at"], record.received_at_ms);
    let record_id = envelope["record_id"]
        .as_str()
        .expect("record_id is a string");
    assert!(
        record_id.ends_with(&format!("-{}", record.id)),
        "record_id {record_id:?}"
    );
    let text = std::str::from_utf8(&record.payload);
    if let Some(payload_text) = envelope.get("payload_text") {
        assert_eq!(Some(payload_text.as_str().expect("a string")), text.ok());
    } else if let Some(payload_base64) = envelope.get("payload_base64") {
        use base64::Engine;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(payload_base64.as_str().expect("a string"))
            .expect("base64");
        assert_eq!(decoded, record.payload);
        assert!(text.is_err(), "a UTF-8 payload sent as base64");
    } else {
        assert!(envelope.get("payload").is_some(), "no payload key");
        assert!(text.is_ok(), "a payload that is not UTF-8 embedded as JSON");
    }
}

/// `SealKey::open` and `open_for` on any text (refused, never a panic), and
/// on values sealed from the bytes: they open for their row and column only.
pub fn sealed_open(data: &[u8]) {
    let mut bytes = Bytes::new(data);
    let key = test_key();
    let mode = bytes.byte();
    let broker_id = bytes.int();
    let column = COLUMNS[usize::from(mode >> 1) % 2];
    let binding = Binding { broker_id, column };
    let text = bytes.text();
    let _ = key.open(&text);
    let _ = key.open_for(&text, binding);
    // Sealed values, then a byte of their base64 changed (when asked).
    let flip = bytes.opt_int();
    let sealed = if mode & 1 == 0 {
        key.seal(&text)
    } else {
        key.seal_for(&text, binding)
    };
    match flip {
        None => {
            let (opened, _) = key.open_for(&sealed, binding).expect("opens in its row");
            assert_eq!(opened.expose(), text);
            if mode & 1 == 1 {
                let other = Binding {
                    broker_id: broker_id.wrapping_add(1),
                    column,
                };
                assert!(
                    key.open_for(&sealed, other).is_err(),
                    "opens in another row"
                );
                assert!(key.open(&sealed).is_err(), "a v2 value opens as v1");
            } else {
                assert_eq!(key.open(&sealed).expect("v1 opens").expose(), text);
            }
        }
        Some(position) => {
            let mut damaged = sealed.clone().into_bytes();
            let idx = position.unsigned_abs() as usize % damaged.len();
            damaged[idx] = bytes.byte() & 0x7F;
            let damaged = String::from_utf8(damaged).expect("ASCII");
            if damaged != sealed {
                // The prefix or the base64 may have changed meaning; it must not open to other text.
                if let Ok((opened, _)) = key.open_for(&damaged, binding) {
                    assert_eq!(
                        opened.expose(),
                        text,
                        "a damaged value opened to other text"
                    );
                }
            }
        }
    }
}
