//! The local SQLite copy of the last good catalog read, for starting without the database.
//!
//! Written atomically: a new file is filled and fsynced beside the old one,
//! then renamed over it, so a power cut leaves either the old snapshot or the
//! new one, never a mix. Passwords and inline client keys are stored sealed
//! (`enc:v1:`, the gateway's key) or not at all, and the file is created with
//! mode 0600 anyway. It is read only when the database cannot be reached.

use std::fmt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OpenFlags};
use serde::{Deserialize, Serialize};

use super::rows::RowError;
use super::{is_pem, Broker, BrokerId, Catalog, Endpoint, TlsSettings, Topic};
use crate::sealed::{Binding, SealKey};
use crate::secret::Secret;

/// Bumped when the layout changes; an older file is not read (the next good
/// database read replaces it).
const LAYOUT_VERSION: i64 = 2;
const SCHEMA: &str = "
    CREATE TABLE snapshot_meta (taken_at_ms INTEGER NOT NULL);
    CREATE TABLE brokers (id INTEGER PRIMARY KEY, broker TEXT NOT NULL);";
const INSERT_META: &str = "INSERT INTO snapshot_meta (taken_at_ms) VALUES (?1)";
const INSERT_BROKER: &str = "INSERT INTO brokers (id, broker) VALUES (?1, ?2)";
const SELECT_META: &str = "SELECT taken_at_ms FROM snapshot_meta";
const SELECT_BROKERS: &str = "SELECT broker FROM brokers ORDER BY id";

/// The snapshot file at `path` cannot be written or read.
#[derive(Debug)]
pub struct SnapshotError {
    path: PathBuf,
    problem: SnapshotProblem,
}

impl SnapshotError {
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn problem(&self) -> &SnapshotProblem {
        &self.problem
    }
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "catalog snapshot {}: {}",
            self.path.display(),
            self.problem
        )
    }
}

impl std::error::Error for SnapshotError {}

/// What is wrong with a snapshot file, or with its contents ([`decode`]).
#[derive(Debug)]
pub enum SnapshotProblem {
    /// Creating or renaming the file failed.
    Io(std::io::Error),
    /// SQLite could not write or read it (damaged, not a database).
    Sqlite(rusqlite::Error),
    /// Written by a release with another layout.
    Layout { version: i64 },
    /// A broker entry that is not the JSON we write (`message`: serde's, at most 300 characters).
    Damaged { message: String },
    /// A broker whose sealed secret does not open.
    Broker {
        broker_id: BrokerId,
        error: RowError,
    },
}

impl fmt::Display for SnapshotProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotProblem::Io(error) => write!(f, "{error}"),
            SnapshotProblem::Sqlite(error) => write!(f, "{error}"),
            SnapshotProblem::Layout { version } => write!(
                f,
                "layout version {version}, this gateway reads {LAYOUT_VERSION} (written by another release); the next good database read replaces it"
            ),
            SnapshotProblem::Damaged { message } => write!(f, "damaged broker entry: {message}"),
            SnapshotProblem::Broker { broker_id, error } => write!(f, "broker {broker_id}: {error}"),
        }
    }
}

impl std::error::Error for SnapshotProblem {}

fn error(path: &Path, problem: impl Into<SnapshotProblem>) -> SnapshotError {
    SnapshotError {
        path: path.to_owned(),
        problem: problem.into(),
    }
}

impl From<std::io::Error> for SnapshotProblem {
    fn from(error: std::io::Error) -> Self {
        SnapshotProblem::Io(error)
    }
}

impl From<rusqlite::Error> for SnapshotProblem {
    fn from(error: rusqlite::Error) -> Self {
        SnapshotProblem::Sqlite(error)
    }
}

/// A broker in the file that is left out, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedBroker {
    pub broker_id: BrokerId,
    pub reason: SkipReason,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// The id is in the file `n_copies` times; no copy is used.
    Copies { n_copies: usize },
    /// The row rules refuse it.
    Rules(RowError),
}

impl fmt::Display for SkippedBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let broker_id = self.broker_id;
        match &self.reason {
            SkipReason::Copies { n_copies } => write!(
                f,
                "broker {broker_id}: appears {n_copies} times; every copy is left out"
            ),
            SkipReason::Rules(error) => write!(f, "broker {broker_id}: {error}"),
        }
    }
}

/// A catalog as loaded from the snapshot, with when it was read from the database.
#[derive(Debug)]
pub struct Snapshot {
    pub catalog: Catalog,
    pub taken_at: SystemTime,
    /// Brokers in the file that the row rules refuse, and why: left out.
    pub skipped: Vec<SkippedBroker>,
}

impl Snapshot {
    pub fn age(&self) -> Duration {
        SystemTime::now()
            .duration_since(self.taken_at)
            .unwrap_or_default()
    }
}

/// One broker as stored: secrets sealed with the gateway's key, or left out.
#[derive(Serialize, Deserialize)]
struct StoredBroker {
    id: i64,
    endpoints: Vec<(String, u16)>,
    username: Option<String>,
    /// Sealed (`enc:v2:` for this broker; `enc:v1:` in snapshots written
    /// before it), never plain.
    password: Option<String>,
    tls: Option<StoredTls>,
    client_id: Option<String>,
    keep_alive_s: Option<u64>,
    clean_session: bool,
    /// Absent in snapshots written before it.
    #[serde(default)]
    sealed_secret: bool,
    topics: Vec<(String, u8)>,
    /// (filter, device_id_level) of the topics that set one; absent in
    /// snapshots written before it.
    #[serde(default)]
    device_id_levels: Vec<(String, u8)>,
}

#[derive(Serialize, Deserialize)]
struct StoredTls {
    verify_cert: bool,
    ca: Option<String>,
    client_cert: Option<String>,
    /// A path, or sealed PEM; never plain PEM.
    client_key: Option<String>,
}

/// What [`save`] had to leave out because there is no key to seal it with.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Withheld {
    /// Brokers whose password (or inline client key) is not in the snapshot.
    pub broker_ids: Vec<i64>,
}

/// Replaces the snapshot at `path` with `catalog`, atomically. Passwords and
/// inline client keys are sealed with `key`; without a key they are left out
/// (and named in the result), so the file never holds one in the clear.
pub fn save(
    path: &Path,
    catalog: &Catalog,
    key: Option<&SealKey>,
) -> Result<Withheld, SnapshotError> {
    let mut withheld = Withheld::default();
    let stored: Vec<StoredBroker> = catalog
        .brokers
        .iter()
        .map(|broker| {
            let (stored, complete) = store(broker, key);
            if !complete {
                withheld.broker_ids.push(broker.id);
            }
            stored
        })
        .collect();
    let temporary = path.with_extension("db.new");
    let _ = std::fs::remove_file(&temporary);
    // Create it 0600 before SQLite writes anything into it.
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(|e| error(&temporary, e))?;
    write_file(&temporary, &stored).map_err(|e| error(&temporary, e))?;
    std::fs::rename(&temporary, path).map_err(|e| error(path, e))?;
    // Make the rename itself durable.
    let _ = crate::files::sync_parent_dir(path);
    Ok(withheld)
}

/// The stored form of `broker`; false when a secret had to be left out.
fn store(broker: &Broker, key: Option<&SealKey>) -> (StoredBroker, bool) {
    let mut complete = true;
    let mut seal = |secret: &Secret, column: &str| match key {
        Some(key) => Some(key.seal_for(
            secret.expose(),
            Binding {
                broker_id: broker.id,
                column,
            },
        )),
        None => {
            complete = false;
            None
        }
    };
    let password = broker
        .password
        .as_ref()
        .and_then(|password| seal(password, "mqtt_password"));
    let tls = broker.tls.as_ref().map(|tls| StoredTls {
        verify_cert: tls.verify_cert,
        ca: tls.ca.clone(),
        client_cert: tls.client_cert.clone(),
        client_key: tls.client_key.as_ref().and_then(|client_key| {
            if is_pem(client_key.expose()) {
                seal(client_key, "client_key")
            } else {
                // A path names the key; it is not the key.
                Some(client_key.expose().to_owned())
            }
        }),
    });
    let stored = StoredBroker {
        id: broker.id,
        endpoints: broker
            .endpoints
            .iter()
            .map(|e| (e.host.clone(), e.port))
            .collect(),
        username: broker.username.clone(),
        password,
        tls,
        client_id: broker.client_id.clone(),
        keep_alive_s: broker.keep_alive.map(|d| d.as_secs()),
        clean_session: broker.clean_session,
        sealed_secret: broker.sealed_secret,
        topics: broker
            .topics
            .iter()
            .map(|t| (t.filter.clone(), t.qos))
            .collect(),
        device_id_levels: broker
            .topics
            .iter()
            .filter_map(|t| Some((t.filter.clone(), t.device_id_level?)))
            .collect(),
    };
    (stored, complete)
}

fn write_file(path: &Path, brokers: &[StoredBroker]) -> rusqlite::Result<()> {
    let mut connection = Connection::open(path)?;
    // DELETE journal + FULL sync: the file is complete on disk when commit returns.
    connection.pragma_update(None, "journal_mode", "DELETE")?;
    connection.pragma_update(None, "synchronous", "FULL")?;
    connection.pragma_update(None, "user_version", LAYOUT_VERSION)?;
    let transaction = connection.transaction()?;
    transaction.execute_batch(SCHEMA)?;
    transaction.execute(INSERT_META, [crate::clock::unix_ms()])?;
    {
        let mut insert_broker = transaction.prepare(INSERT_BROKER)?;
        for broker in brokers {
            let json = serde_json::to_string(broker)
                .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
            insert_broker.execute(params![broker.id, json])?;
        }
    }
    transaction.commit()?;
    connection.close().map_err(|(_, e)| e)
}

/// The snapshot at `path`, or `None` when there is none yet. Sealed values
/// are opened with `key`; a broker whose secret cannot be opened is an error.
pub fn load(path: &Path, key: Option<&SealKey>) -> Result<Option<Snapshot>, SnapshotError> {
    if !path.exists() {
        return Ok(None);
    }
    let (taken_at_ms, rows) = read_file(path).map_err(|e| error(path, e))?;
    decode(taken_at_ms, &rows, key)
        .map(Some)
        .map_err(|problem| error(path, problem))
}

/// The snapshot held by a file's rows (each broker as JSON), as [`load`]
/// reads them: pure, so the fuzz target `snapshot_restore` can call it.
#[doc(hidden)]
pub fn decode(
    taken_at_ms: i64,
    rows: &[String],
    key: Option<&SealKey>,
) -> Result<Snapshot, SnapshotProblem> {
    let stored = rows
        .iter()
        .map(|json| {
            // serde_json's message may quote a whole value: its first 300
            // characters (found by fuzz/ snapshot_restore).
            serde_json::from_str::<StoredBroker>(json).map_err(|e| SnapshotProblem::Damaged {
                message: e.to_string().chars().take(300).collect(),
            })
        })
        .collect::<Result<Vec<StoredBroker>, SnapshotProblem>>()?;
    let mut n_copies: std::collections::BTreeMap<i64, usize> = Default::default();
    for broker in &stored {
        *n_copies.entry(broker.id).or_default() += 1;
    }
    let mut brokers = Vec::new();
    let mut skipped = Vec::new();
    for stored in stored {
        let id = stored.id;
        // Which copy is meant is unknowable, as in the catalog: none runs
        // (found by fuzz/ snapshot_restore).
        if n_copies[&id] > 1 {
            skipped.push(SkippedBroker {
                broker_id: id,
                reason: SkipReason::Copies {
                    n_copies: n_copies[&id],
                },
            });
            continue;
        }
        let broker = restore(stored, key)?;
        // The row rules again: the file is not the database, and a value the
        // rules refuse must not reach a session from here either.
        match super::rows::check_broker(&broker) {
            Ok(()) => brokers.push(broker),
            Err(error) => skipped.push(SkippedBroker {
                broker_id: id,
                reason: SkipReason::Rules(error),
            }),
        }
    }
    Ok(Snapshot {
        catalog: Catalog { brokers },
        taken_at: UNIX_EPOCH + Duration::from_millis(taken_at_ms.max(0) as u64),
        skipped,
    })
}

fn read_file(path: &Path) -> Result<(i64, Vec<String>), SnapshotProblem> {
    let read = || -> rusqlite::Result<(i64, i64, Vec<String>)> {
        let connection = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let version: i64 = connection.pragma_query_value(None, "user_version", |row| row.get(0))?;
        if version != LAYOUT_VERSION {
            return Ok((version, 0, Vec::new()));
        }
        let taken_at_ms: i64 = connection.query_row(SELECT_META, [], |row| row.get(0))?;
        let mut select = connection.prepare(SELECT_BROKERS)?;
        let rows = select.query_map([], |row| row.get::<_, String>(0))?;
        Ok((version, taken_at_ms, rows.collect::<rusqlite::Result<_>>()?))
    };
    let (version, taken_at_ms, rows) = read()?;
    if version != LAYOUT_VERSION {
        return Err(SnapshotProblem::Layout { version });
    }
    Ok((taken_at_ms, rows))
}

fn restore(stored: StoredBroker, key: Option<&SealKey>) -> Result<Broker, SnapshotProblem> {
    let id = stored.id;
    // A snapshot's own v1 values (written before v2) open without a warning:
    // the next good read replaces them.
    let open = |column: &'static str, value: String| {
        super::rows::unseal(id, column, &Secret::new(value), key)
            .map(|(secret, _)| secret)
            .map_err(|error| SnapshotProblem::Broker {
                broker_id: id,
                error,
            })
    };
    let password = stored
        .password
        .map(|value| open("mqtt_password", value))
        .transpose()?;
    let tls = match stored.tls {
        None => None,
        Some(tls) => Some(TlsSettings {
            verify_cert: tls.verify_cert,
            ca: tls.ca,
            client_cert: tls.client_cert,
            client_key: tls
                .client_key
                .map(|value| open("client_key", value))
                .transpose()?,
        }),
    };
    let broker = Broker {
        id,
        endpoints: stored
            .endpoints
            .into_iter()
            .map(|(host, port)| Endpoint { host, port })
            .collect(),
        username: stored.username,
        password,
        tls,
        client_id: stored.client_id,
        keep_alive: stored.keep_alive_s.map(Duration::from_secs),
        clean_session: stored.clean_session,
        sealed_secret: stored.sealed_secret,
        topics: stored
            .topics
            .into_iter()
            .map(|(filter, qos)| {
                let device_id_level = stored
                    .device_id_levels
                    .iter()
                    .find(|(with_level, _)| *with_level == filter)
                    .map(|(_, level)| *level);
                Topic {
                    filter,
                    qos,
                    device_id_level,
                }
            })
            .collect(),
    };
    Ok(broker)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn key() -> SealKey {
        SealKey::from_base64(&SealKey::generate()).unwrap()
    }

    fn topic(filter: &str, qos: u8) -> crate::catalog::Topic {
        crate::catalog::Topic {
            filter: filter.into(),
            qos,
            device_id_level: None,
        }
    }

    fn catalog() -> Catalog {
        let mut broker = Broker::plain(
            3,
            "10.0.0.5",
            1883,
            vec![Topic {
                filter: "a/#".into(),
                qos: 1,
                device_id_level: Some(2),
            }],
        );
        broker.endpoints.push(Endpoint {
            host: "10.0.0.6".into(),
            port: 8883,
        });
        broker.username = Some("gw".into());
        broker.password = Some(Secret::new("pw-plain-123"));
        broker.tls = Some(TlsSettings {
            verify_cert: true,
            ca: Some("/etc/ssl/ca.pem".into()),
            client_cert: Some("-----BEGIN CERTIFICATE-----\nMIIB\n".into()),
            client_key: Some(Secret::new("-----BEGIN PRIVATE KEY-----\nkey-plain-456\n")),
        });
        broker.keep_alive = Some(Duration::from_secs(45));
        Catalog {
            brokers: vec![broker, Broker::plain(4, "h", 1, Vec::new())],
        }
    }

    #[test]
    fn round_trip_is_atomic_private_and_sealed() {
        let dir = std::env::temp_dir().join(format!("mkb-snapshot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("catalog-snapshot.db");
        let _ = std::fs::remove_file(&path);
        let key = key();
        assert!(load(&path, Some(&key)).unwrap().is_none());
        let catalog = catalog();
        assert_eq!(
            save(&path, &catalog, Some(&key)).unwrap(),
            Withheld::default()
        );
        save(&path, &catalog, Some(&key)).unwrap();
        let snapshot = load(&path, Some(&key)).unwrap().unwrap();
        assert_eq!(snapshot.catalog, catalog);
        assert!(snapshot.age() < Duration::from_secs(3600));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!path.with_extension("db.new").exists());
        let bytes = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
        assert!(!bytes.contains("pw-plain-123") && !bytes.contains("key-plain-456"));
        assert!(bytes.contains("enc:v2:") && !bytes.contains("enc:v1:"));

        // Another key cannot open it, and says which broker.
        let error = load(&path, Some(&self::key())).unwrap_err().to_string();
        assert!(error.contains("broker 3: mqtt_password"), "{error}");
        let error = load(&path, None).unwrap_err().to_string();
        assert!(error.contains("no key"), "{error}");

        std::fs::write(&path, b"not a database").unwrap();
        let error = load(&path, Some(&key)).unwrap_err().to_string();
        assert!(error.contains("catalog snapshot"), "{error}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn without_a_key_secrets_are_left_out_and_named() {
        let dir = std::env::temp_dir().join(format!("mkb-snapshot-nokey-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("catalog-snapshot.db");
        let withheld = save(&path, &catalog(), None).unwrap();
        assert_eq!(withheld.broker_ids, vec![3]);
        let bytes = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
        assert!(!bytes.contains("pw-plain-123") && !bytes.contains("key-plain-456"));
        let loaded = load(&path, None).unwrap().unwrap().catalog;
        assert_eq!(loaded.brokers[0].password, None);
        assert_eq!(loaded.brokers[0].endpoints, catalog().brokers[0].endpoints);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// Issue 14, found by the fuzz target `snapshot_restore`: beyond the
    /// rules above, a password without a user name and a broker id twice are
    /// left out, and a damaged entry's error stays short.
    #[test]
    fn decode_leaves_out_what_the_fuzzer_found() {
        let good = r#"{"id":1,"endpoints":[["h",1883]],"username":null,"password":null,"tls":null,"client_id":null,"keep_alive_s":30,"clean_session":false,"topics":[["$share/g/a/#",1]]}"#;
        let snapshot = decode(0, &[good.to_owned()], None).unwrap();
        assert_eq!(snapshot.catalog.brokers[0].topics[0].filter, "$share/g/a/#");
        // Written before device_id_levels: no level.
        assert_eq!(snapshot.catalog.brokers[0].topics[0].device_id_level, None);
        let with_level = good.replace(
            r#""topics":[["$share/g/a/#",1]]"#,
            r#""topics":[["$share/g/a/#",1]],"device_id_levels":[["$share/g/a/#",2]]"#,
        );
        let snapshot = decode(0, std::slice::from_ref(&with_level), None).unwrap();
        assert_eq!(
            snapshot.catalog.brokers[0].topics[0].device_id_level,
            Some(2)
        );
        let out_of_range = with_level.replace(r#",2]]"#, r#",40]]"#);
        let skipped = |rows: &[String], key: Option<&SealKey>| {
            let snapshot = decode(0, rows, key).unwrap();
            assert!(snapshot.catalog.brokers.is_empty());
            snapshot.skipped
        };
        let twice = skipped(&[good.to_owned(), good.to_owned()], None);
        assert_eq!(
            twice.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["broker 1: appears 2 times; every copy is left out"; 2]
        );
        assert_eq!(twice[0].reason, SkipReason::Copies { n_copies: 2 });
        assert_eq!(
            skipped(&[out_of_range], None)[0].reason,
            SkipReason::Rules(RowError::OutOfRange {
                column: "topic device_id_level",
                value: 40,
                accepted: "is not 1..32",
            })
        );
        let no_group = good.replace("$share/g/a/#", "$share/a");
        let why = skipped(&[no_group], None);
        assert!(why[0].to_string().contains("share group"), "{why:?}");
        assert_eq!(
            why[0].reason,
            SkipReason::Rules(RowError::StoredFilter {
                filter: "$share/a".into(),
                problem: crate::catalog::rows::StoredFilterProblem::NoShareGroup,
            })
        );
        let key = key();
        let sealed = key.seal_for(
            "pw",
            Binding {
                broker_id: 1,
                column: "mqtt_password",
            },
        );
        let row = good.replace(r#""password":null"#, &format!("\"password\":{sealed:?}"));
        let why = skipped(&[row], Some(&key));
        assert!(
            why[0].to_string().contains("password without a user name"),
            "{why:?}"
        );
        assert_eq!(why[0].broker_id, 1);
        assert_eq!(
            why[0].reason,
            SkipReason::Rules(RowError::PasswordWithoutUser)
        );
        let long = format!("[\"{}\"]", "x".repeat(100_000));
        let error = decode(0, &[long], None).unwrap_err();
        assert!(
            matches!(error, SnapshotProblem::Damaged { .. }),
            "{error:?}"
        );
        assert!(error.to_string().len() < 1000, "{error}");
    }

    #[test]
    fn a_broker_the_row_rules_refuse_is_left_out_of_a_loaded_snapshot() {
        let dir = std::env::temp_dir().join(format!("mkb-snapshot-rules-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("catalog-snapshot.db");
        let good = Broker::plain(1, "h", 1883, vec![topic("a/#", 1)]);
        let bad = |id: i64, change: &dyn Fn(&mut Broker)| {
            let mut broker = Broker::plain(id, "h", 1883, vec![topic("a/#", 1)]);
            change(&mut broker);
            broker
        };
        let catalog = Catalog {
            brokers: vec![
                good.clone(),
                bad(2, &|b| b.topics = vec![topic("a/#/b", 1)]),
                bad(3, &|b| b.topics = vec![topic("a", 7)]),
                bad(4, &|b| b.keep_alive = Some(Duration::ZERO)),
                bad(5, &|b| b.client_id = Some(String::new())),
                bad(6, &|b| b.endpoints[0].host = "a b".into()),
                bad(7, &|b| b.endpoints[0].port = 0),
                bad(8, &|b| b.topics = vec![topic(&"x".repeat(2000), 1)]),
            ],
        };
        save(&path, &catalog, None).unwrap();
        let snapshot = load(&path, None).unwrap().unwrap();
        assert_eq!(snapshot.catalog.brokers, vec![good]);
        let skipped: Vec<String> = snapshot
            .skipped
            .iter()
            .map(|why| why.to_string().split(':').next().unwrap().to_owned())
            .collect();
        assert_eq!(
            skipped,
            ["broker 2", "broker 3", "broker 4", "broker 5", "broker 6", "broker 7", "broker 8"]
        );
        let ids: Vec<BrokerId> = snapshot.skipped.iter().map(|why| why.broker_id).collect();
        assert_eq!(ids, [2, 3, 4, 5, 6, 7, 8]);
        assert!(
            snapshot.skipped[0].to_string().contains("not usable"),
            "{:?}",
            snapshot.skipped
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
