//! The local SQLite copy of the last good catalog read, for starting without the database.
//!
//! Written atomically: a new file is filled and fsynced beside the old one,
//! then renamed over it, so a power cut leaves either the old snapshot or the
//! new one, never a mix. The file is created with mode 0600: it holds broker
//! credentials. It is read only when the database cannot be reached.

use std::fmt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OpenFlags};

use super::{Broker, Catalog, Topic};
use crate::secret::Secret;

const SCHEMA: &str = "
    CREATE TABLE snapshot_meta (taken_at_ms INTEGER NOT NULL);
    CREATE TABLE brokers (id INTEGER PRIMARY KEY, host TEXT NOT NULL, port INTEGER NOT NULL,
                          username TEXT, password TEXT);
    CREATE TABLE topics (broker_id INTEGER NOT NULL, filter TEXT NOT NULL, qos INTEGER NOT NULL,
                         PRIMARY KEY (broker_id, filter));";
const INSERT_META: &str = "INSERT INTO snapshot_meta (taken_at_ms) VALUES (?1)";
const INSERT_BROKER: &str =
    "INSERT INTO brokers (id, host, port, username, password) VALUES (?1, ?2, ?3, ?4, ?5)";
const INSERT_TOPIC: &str = "INSERT INTO topics (broker_id, filter, qos) VALUES (?1, ?2, ?3)";
const SELECT_META: &str = "SELECT taken_at_ms FROM snapshot_meta";
const SELECT_BROKERS: &str = "SELECT id, host, port, username, password FROM brokers ORDER BY id";
const SELECT_TOPICS: &str = "SELECT filter, qos FROM topics WHERE broker_id = ?1 ORDER BY filter";

#[derive(Debug)]
pub struct SnapshotError {
    path: PathBuf,
    message: String,
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "catalog snapshot {}: {}",
            self.path.display(),
            self.message
        )
    }
}

impl std::error::Error for SnapshotError {}

fn error(path: &Path, message: impl fmt::Display) -> SnapshotError {
    SnapshotError {
        path: path.to_owned(),
        message: message.to_string(),
    }
}

/// A catalog as loaded from the snapshot, with when it was read from the database.
#[derive(Debug)]
pub struct Snapshot {
    pub catalog: Catalog,
    pub taken_at: SystemTime,
}

impl Snapshot {
    pub fn age(&self) -> Duration {
        SystemTime::now()
            .duration_since(self.taken_at)
            .unwrap_or_default()
    }
}

/// Replaces the snapshot at `path` with `catalog`, atomically.
pub fn save(path: &Path, catalog: &Catalog) -> Result<(), SnapshotError> {
    let temporary = path.with_extension("db.new");
    let _ = std::fs::remove_file(&temporary);
    // Create it 0600 before SQLite writes anything into it.
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(|e| error(&temporary, e))?;
    write_file(&temporary, catalog).map_err(|e| error(&temporary, e))?;
    std::fs::rename(&temporary, path).map_err(|e| error(path, e))?;
    // Make the rename itself durable.
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        if let Ok(dir) = std::fs::File::open(dir) {
            let _ = dir.sync_all();
        }
    }
    Ok(())
}

fn write_file(path: &Path, catalog: &Catalog) -> rusqlite::Result<()> {
    let mut connection = Connection::open(path)?;
    // DELETE journal + FULL sync: the file is complete on disk when commit returns.
    connection.pragma_update(None, "journal_mode", "DELETE")?;
    connection.pragma_update(None, "synchronous", "FULL")?;
    let transaction = connection.transaction()?;
    transaction.execute_batch(SCHEMA)?;
    transaction.execute(INSERT_META, [now_ms()])?;
    {
        let mut insert_broker = transaction.prepare(INSERT_BROKER)?;
        let mut insert_topic = transaction.prepare(INSERT_TOPIC)?;
        for broker in &catalog.brokers {
            insert_broker.execute(params![
                broker.id,
                broker.host,
                broker.port,
                broker.username,
                broker.password.as_ref().map(Secret::expose),
            ])?;
            for topic in &broker.topics {
                insert_topic.execute(params![broker.id, topic.filter, topic.qos])?;
            }
        }
    }
    transaction.commit()?;
    connection.close().map_err(|(_, e)| e)
}

/// The snapshot at `path`, or `None` when there is none yet.
pub fn load(path: &Path) -> Result<Option<Snapshot>, SnapshotError> {
    if !path.exists() {
        return Ok(None);
    }
    read_file(path).map(Some).map_err(|e| error(path, e))
}

fn read_file(path: &Path) -> rusqlite::Result<Snapshot> {
    let connection = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let taken_at_ms: i64 = connection.query_row(SELECT_META, [], |row| row.get(0))?;
    let mut select_topics = connection.prepare(SELECT_TOPICS)?;
    let mut select_brokers = connection.prepare(SELECT_BROKERS)?;
    let rows = select_brokers.query_map([], |row| {
        Ok(Broker {
            id: row.get(0)?,
            host: row.get(1)?,
            port: row.get(2)?,
            username: row.get(3)?,
            password: row.get::<_, Option<String>>(4)?.map(Secret::new),
            topics: Vec::new(),
        })
    })?;
    let mut brokers = rows.collect::<rusqlite::Result<Vec<Broker>>>()?;
    for broker in &mut brokers {
        broker.topics = select_topics
            .query_map([broker.id], |row| {
                Ok(Topic {
                    filter: row.get(0)?,
                    qos: row.get(1)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
    }
    Ok(Snapshot {
        catalog: Catalog { brokers },
        taken_at: UNIX_EPOCH + Duration::from_millis(taken_at_ms.max(0) as u64),
    })
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn round_trip_is_atomic_and_private() {
        let dir = std::env::temp_dir().join(format!("mkb-snapshot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("catalog-snapshot.db");
        let _ = std::fs::remove_file(&path);
        assert!(load(&path).unwrap().is_none());
        let catalog = Catalog {
            brokers: vec![Broker {
                id: 3,
                host: "10.0.0.5".into(),
                port: 1883,
                username: Some("gw".into()),
                password: Some(Secret::new("pw")),
                topics: vec![Topic {
                    filter: "a/#".into(),
                    qos: 1,
                }],
            }],
        };
        save(&path, &catalog).unwrap();
        save(&path, &catalog).unwrap();
        let snapshot = load(&path).unwrap().unwrap();
        assert_eq!(snapshot.catalog, catalog);
        assert!(snapshot.age() < Duration::from_secs(3600));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!path.with_extension("db.new").exists());

        std::fs::write(&path, b"not a database").unwrap();
        let error = load(&path).unwrap_err().to_string();
        assert!(error.contains("catalog snapshot"), "{error}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
