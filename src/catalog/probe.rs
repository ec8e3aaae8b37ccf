//! The catalog's probe for the `check` command: connect to PostgreSQL once,
//! read and validate both catalog tables, apply this gateway's assignment,
//! read the database's clock and try the status table. When the database is
//! down, the brokers come from the snapshot.
//!
//! It returns what it found as values; the wording of `check`'s lines is
//! `check`'s. Not here: the catalog thread (LISTEN, polling, uploads).

use std::time::{Duration, Instant};

use super::assignment::{self, Assignment};
use super::database_url::DatabaseUrl;
use super::postgres::{self, DbError};
use super::rows::{self, RowProblem};
use super::{snapshot, Catalog};
use crate::config::CatalogConfig;

/// What the catalog probe found, in the order `check` reports it.
#[derive(Debug)]
pub struct CatalogProbe {
    /// `link to {hosts}`, or `link` when `database.url` does not parse.
    pub link_target: String,
    /// The link to the database stood.
    pub link: Option<LinkUp>,
    /// The catalog read, or why not.
    pub read: Result<CatalogRead, CatalogUnread>,
}

/// The link to PostgreSQL.
#[derive(Debug)]
pub struct LinkUp {
    /// `unencrypted` or the TLS version and cipher.
    pub description: String,
    /// From the start to the link standing.
    pub latency: Duration,
}

/// The catalog as read through the link.
#[derive(Debug)]
pub struct CatalogRead {
    /// The database's `clock_timestamp()` minus ours, in ms.
    pub clock_offset_ms: Result<i64, DbError>,
    /// Active brokers and their subscriptions in the whole catalog (before the assignment).
    pub n_brokers: usize,
    pub n_topics: usize,
    /// Rows skipped, with why.
    pub problems: Vec<RowProblem>,
    /// From the start to the catalog read and validated.
    pub latency: Duration,
    /// Whether `iot_data.mqtt_broker_gateway` exists.
    pub assignment_table: bool,
    /// Which brokers this gateway runs, and which several gateways run unshared.
    pub assignment: Assignment,
    /// Whether `iot_data.mqtt_connection_status` can be read.
    pub status_table: Result<(), DbError>,
    /// The brokers this gateway runs.
    pub catalog: Catalog,
}

/// The database could not be read.
#[derive(Debug)]
pub struct CatalogUnread {
    pub error: DbError,
    /// The brokers of the snapshot (none when there is no readable snapshot).
    pub snapshot: Catalog,
}

/// Reads the catalog once as `check` sees it (blocking: PostgreSQL and the snapshot file).
pub fn probe(config: &CatalogConfig, gateway_id: &str) -> CatalogProbe {
    let key = config.password_key.as_ref();
    let started = Instant::now();
    let link_target = match DatabaseUrl::parse(&config.database_url) {
        Ok(url) => format!("link to {}", url.hosts()),
        Err(_) => "link".to_owned(),
    };
    let mut link = None;
    let read = postgres::connect(&config.database_url, None).and_then(|(mut client, up)| {
        link = Some(LinkUp {
            description: up.to_string(),
            latency: started.elapsed(),
        });
        let rows = postgres::read_rows(&mut client)?;
        let status_table = postgres::status_table_readable(&mut client);
        let clock = postgres::clock_offset_ms(&mut client);
        Ok((rows, status_table, clock))
    });
    let read = match read {
        Ok((read, status_table, clock_offset_ms)) => {
            let (catalog, mut problems) = rows::validate(&read.brokers, &read.topics, key);
            problems.extend(read.unnamed);
            let n_brokers = catalog.brokers.len();
            let n_topics = catalog.brokers.iter().map(|b| b.topics.len()).sum();
            let latency = started.elapsed();
            let assignment_table = read.assignments.is_some();
            let (catalog, assignment) = assignment::assign(
                catalog,
                read.assignments.as_deref().unwrap_or_default(),
                gateway_id,
            );
            Ok(CatalogRead {
                clock_offset_ms,
                n_brokers,
                n_topics,
                problems,
                latency,
                assignment_table,
                assignment,
                status_table,
                catalog,
            })
        }
        Err(error) => {
            let snapshot = match snapshot::load(&config.snapshot_path, key) {
                Ok(Some(snapshot)) => snapshot.catalog,
                _ => Catalog::default(),
            };
            Err(CatalogUnread { error, snapshot })
        }
    };
    CatalogProbe {
        link_target,
        link,
        read,
    }
}
