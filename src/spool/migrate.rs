//! Brings a spool file to the current schema: `buffer-schema/NNNN_*.sql`, in order.
//!
//! The version applied last is kept in `PRAGMA user_version`, so a gateway
//! upgraded in the field migrates its spool in place, keeping every record.
//! Each step runs in its own transaction: a crash mid-migration leaves the
//! file at the previous version, and the next start retries the step.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension};

use super::{sqlite_error, SpoolError};

/// Every schema step, in order; the index + 1 is the version it produces.
pub const MIGRATIONS: &[&str] = &[
    include_str!("../../buffer-schema/0001_records.sql"),
    include_str!("../../buffer-schema/0002_counters.sql"),
    include_str!("../../buffer-schema/0003_dead_letter_bound.sql"),
    include_str!("../../buffer-schema/0004_device_id.sql"),
];

pub fn latest_version() -> i64 {
    MIGRATIONS.len() as i64
}

/// Applies every step above the file's `user_version`.
pub fn apply(connection: &mut Connection, path: &Path) -> Result<(), SpoolError> {
    apply_up_to(connection, path, latest_version())
}

/// Applies steps up to `target` only; tests use it to build an old spool.
pub fn apply_up_to(
    connection: &mut Connection,
    path: &Path,
    target: i64,
) -> Result<(), SpoolError> {
    let found: i64 = connection
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(|error| sqlite_error(path, error))?;
    if found < 0 {
        return Err(SpoolError::UnknownVersion {
            path: path.to_owned(),
            found,
        });
    }
    if found > latest_version() {
        return Err(SpoolError::TooNew {
            path: path.to_owned(),
            found,
            supported: latest_version(),
        });
    }
    for version in (found + 1)..=target {
        let sql = MIGRATIONS[(version - 1) as usize];
        let transaction = connection
            .transaction()
            .map_err(|error| sqlite_error(path, error))?;
        transaction
            .execute_batch(sql)
            .and_then(|()| transaction.pragma_update(None, "user_version", version))
            .and_then(|()| transaction.commit())
            .map_err(|error| sqlite_error(path, error))?;
        if found > 0 {
            log::info!(
                "spool {}: migrated to schema version {version}",
                path.display()
            );
        }
    }
    Ok(())
}

/// The spool's random id, made on first use and kept in `spool_meta`.
pub fn spool_uid(connection: &Connection, path: &Path) -> Result<String, SpoolError> {
    let existing: Option<String> = connection
        .query_row(
            "SELECT value FROM spool_meta WHERE key = 'uid'",
            [],
            |row| row.get(0),
        )
        .optional()
        .map_err(|error| sqlite_error(path, error))?;
    if let Some(uid) = existing {
        return Ok(uid);
    }
    let uid = format!("{:016x}", fastrand::u64(..));
    connection
        .execute(
            "INSERT INTO spool_meta (key, value) VALUES ('uid', ?1)",
            [&uid],
        )
        .map_err(|error| sqlite_error(path, error))?;
    Ok(uid)
}
