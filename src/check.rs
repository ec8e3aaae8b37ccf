//! `mqtt-kinesis-bridge check`: tries everything a config points at, without
//! running the gateway, and says what works and what does not.
//!
//! In order: the database (connect, read both catalog tables, which brokers
//! this gateway runs, the status table), every endpoint of every broker this gateway runs (connect + CONNACK, timed;
//! with the client id `{client_id}-check`, so a running gateway's sessions are
//! not disturbed), Kinesis (a signed DescribeStreamSummary of the stream) and
//! the spool (its directory writable, the file readable, room on its
//! filesystem above `spool.min_free_bytes`). Broker probes run
//! concurrently. When the database is down the brokers come from the snapshot.
//! The machine's clock is compared with the database's (`clock_timestamp()`)
//! and AWS's (the answer's `Date`); while it is known to be off, a TLS
//! certificate refused as expired or not yet valid is named a clock problem.
//!
//! Each stage answers through one probe, which returns what it found as
//! values: [`catalog::probe`], [`sessions::probe`], [`drain::probe`] and
//! [`crate::spool::probe`] (the spool's). This module only turns them into lines.

use std::fmt::{self, Write};
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::catalog::{self, Assignment, Catalog, DbErrorKind};
use crate::clock::describe_offset;
use crate::config::Config;
use crate::disk::describe_bytes;
use crate::drain::{self, DescribeFailureKind, KinesisProbe, CLOCK_WARN_MS};
use crate::sessions::{self, BrokerProbe, ConnectFailure};
use crate::spool::{self, SpoolProbe};

/// One line of the report.
#[derive(Clone, Debug, PartialEq)]
pub struct Check {
    /// `database`, `catalog row`, `broker`, `kinesis`, `spool`.
    pub area: &'static str,
    /// What was tried: an endpoint, a stream, a path.
    pub target: String,
    pub ok: bool,
    /// On failure, what kind.
    pub kind: Option<CheckKind>,
    pub detail: String,
    pub latency: Option<Duration>,
}

impl Check {
    fn pass(
        area: &'static str,
        target: String,
        detail: String,
        latency: Option<Duration>,
    ) -> Check {
        Check {
            area,
            target,
            ok: true,
            kind: None,
            detail,
            latency,
        }
    }

    fn fail(area: &'static str, target: String, kind: CheckKind, detail: String) -> Check {
        Check {
            area,
            target,
            ok: false,
            kind: Some(kind),
            detail,
            latency: None,
        }
    }
}

/// What kind of failure a check met: the word `check` prints after `FAIL`
/// and `check --json` puts in `kind` ([`CheckKind::as_str`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckKind {
    /// A broker's endpoint: the kind of its connection failure (`dns`, `refused`, `tls`, …).
    Connect(ConnectFailure),
    /// The database's TLS, or a broker's TLS settings (its files), failed.
    Tls,
    /// Kinesis refused the credentials or the signature.
    Auth,
    /// This machine's clock is off, or a certificate refused because of it.
    Clock,
    /// The database cannot be reached or refuses us; Kinesis gave no answer.
    Unreachable,
    /// Something that exists cannot be read (a clock reading, the spool).
    Unreadable,
    /// A catalog row that is skipped.
    Row,
    /// A broker several gateways run without shared subscriptions.
    Shared,
    /// The status table is missing or not readable.
    Table,
    /// No usable AWS credentials.
    Credentials,
    /// The stream exists but is not ACTIVE or UPDATING.
    NotActive,
    /// No such stream.
    NotFound,
    /// Kinesis throttled the check.
    Throttled,
    /// Kinesis answered with another error.
    Error,
    /// The spool's filesystem is full.
    DiskFull,
    /// The spool's directory cannot be written.
    NotWritable,
    /// The spool's filesystem is below `spool.min_free_bytes`.
    LowSpace,
}

impl CheckKind {
    /// The word in the report and in `check --json`.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckKind::Connect(failure) => failure.as_str(),
            CheckKind::Tls => "tls",
            CheckKind::Auth => "auth",
            CheckKind::Clock => "clock",
            CheckKind::Unreachable => "unreachable",
            CheckKind::Unreadable => "unreadable",
            CheckKind::Row => "row",
            CheckKind::Shared => "shared",
            CheckKind::Table => "table",
            CheckKind::Credentials => "credentials",
            CheckKind::NotActive => "not_active",
            CheckKind::NotFound => "not_found",
            CheckKind::Throttled => "throttled",
            CheckKind::Error => "error",
            CheckKind::DiskFull => "disk_full",
            CheckKind::NotWritable => "not_writable",
            CheckKind::LowSpace => "low_space",
        }
    }

    /// A TLS failure: of the database, of a broker's settings or handshake.
    fn is_tls(self) -> bool {
        matches!(
            self,
            CheckKind::Tls | CheckKind::Connect(ConnectFailure::Tls)
        )
    }
}

impl fmt::Display for CheckKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<DescribeFailureKind> for CheckKind {
    fn from(kind: DescribeFailureKind) -> CheckKind {
        match kind {
            DescribeFailureKind::Unreachable => CheckKind::Unreachable,
            DescribeFailureKind::Auth => CheckKind::Auth,
            DescribeFailureKind::Clock => CheckKind::Clock,
            DescribeFailureKind::NotFound => CheckKind::NotFound,
            DescribeFailureKind::Throttled => CheckKind::Throttled,
            DescribeFailureKind::Error => CheckKind::Error,
        }
    }
}

/// Runs every check; the report is in the order above.
pub fn run(config: &Config) -> Vec<Check> {
    let mut checks = Vec::new();
    let mut clocks = Vec::new();
    let catalog = check_database(config, &mut checks, &mut clocks);
    checks.extend(check_brokers(config, &catalog));
    checks.push(check_kinesis(config, &mut clocks));
    checks.push(check_spool(&config.spool.path, config.spool.min_free_bytes));
    checks.extend(clocks.iter().map(ClockReading::check));
    name_clock_problems(&mut checks, &clocks);
    checks
}

/// Our clock against another's: `offset_ms` is theirs minus ours.
#[derive(Clone, Debug, PartialEq)]
struct ClockReading {
    /// `the database`, `AWS`.
    against: &'static str,
    /// Where their time came from.
    source: &'static str,
    offset_ms: i64,
}

impl ClockReading {
    fn is_off(&self) -> bool {
        self.offset_ms.abs() >= CLOCK_WARN_MS
    }

    fn describe(&self) -> String {
        format!("{} {}", describe_offset(self.offset_ms), self.against)
    }

    fn check(&self) -> Check {
        let target = format!("gateway vs {} ({})", self.against, self.source);
        if self.is_off() {
            return Check::fail(
                "clock",
                target,
                CheckKind::Clock,
                format!(
                    "the clock is {}; fix NTP (the drain signs with corrected time, \
                     but received_at and certificate checks use this clock)",
                    self.describe()
                ),
            );
        }
        let detail = if self.offset_ms.abs() < 2_000 {
            "agrees".to_owned()
        } else {
            format!("{}, within {} s", self.describe(), CLOCK_WARN_MS / 1000)
        };
        Check::pass("clock", target, detail, None)
    }
}

/// A certificate "expired" or "not yet valid" while our clock is known to be
/// off is most likely our clock's fault: say so instead of blaming the peer.
fn name_clock_problems(checks: &mut [Check], clocks: &[ClockReading]) {
    // AWS's word first: its Date is what signing is corrected by.
    let Some(off) = clocks
        .iter()
        .filter(|clock| clock.is_off())
        .min_by_key(|clock| clock.against != "AWS")
    else {
        return;
    };
    for check in checks.iter_mut() {
        if check.kind.is_some_and(CheckKind::is_tls) && is_validity_refusal(&check.detail) {
            check.kind = Some(CheckKind::Clock);
            check.detail = format!(
                "{}; the clock is {}: the certificate is probably fine, fix the clock (NTP)",
                check.detail,
                off.describe()
            );
        }
    }
}

/// rustls's words for a certificate outside its validity period.
fn is_validity_refusal(detail: &str) -> bool {
    let detail = detail.to_ascii_lowercase();
    ["expired", "not valid yet", "notvalidyet", "not yet valid"]
        .iter()
        .any(|words| detail.contains(words))
}

/// The database's lines, from the catalog's probe; returns the brokers to probe.
fn check_database(
    config: &Config,
    checks: &mut Vec<Check>,
    clocks: &mut Vec<ClockReading>,
) -> Catalog {
    let target = "iot_data.mqtt_broker, iot_data.mqtt_topic".to_owned();
    let probe = catalog::probe(&config.catalog, &config.gateway_id);
    if let Some(link) = &probe.link {
        checks.push(Check::pass(
            "database",
            probe.link_target.clone(),
            link.description.clone(),
            Some(link.latency),
        ));
    }
    let read = match probe.read {
        Ok(read) => read,
        Err(unread) => {
            let kind = match unread.error.kind() {
                DbErrorKind::Tls => CheckKind::Tls,
                DbErrorKind::Database => CheckKind::Unreachable,
            };
            // A failure after the link stood is the catalog's, not the link's.
            let target = if probe.link.is_some() {
                target
            } else {
                probe.link_target
            };
            checks.push(Check::fail(
                "database",
                target,
                kind,
                unread.error.to_string(),
            ));
            return unread.snapshot;
        }
    };
    match read.clock_offset_ms {
        Ok(offset_ms) => clocks.push(ClockReading {
            against: "the database",
            source: "clock_timestamp()",
            offset_ms,
        }),
        Err(error) => checks.push(Check::fail(
            "clock",
            "gateway vs the database (clock_timestamp())".into(),
            CheckKind::Unreadable,
            error.to_string(),
        )),
    }
    checks.push(Check::pass(
        "database",
        target,
        format!(
            "{} active brokers, {} subscriptions, {} rows skipped",
            read.n_brokers,
            read.n_topics,
            read.problems.len()
        ),
        Some(read.latency),
    ));
    for problem in read.problems {
        checks.push(Check::fail(
            "catalog row",
            problem.target(),
            CheckKind::Row,
            problem.to_string(),
        ));
    }
    check_assignment(config, read.assignment_table, &read.assignment, checks);
    checks.push(match read.status_table {
        Ok(()) => Check::pass(
            "database",
            "iot_data.mqtt_connection_status".into(),
            "readable".into(),
            None,
        ),
        Err(error) => Check::fail(
            "database",
            "iot_data.mqtt_connection_status".into(),
            CheckKind::Table,
            format!("{error} (apply buffer-schema/catalog/0004_connection_status.sql)"),
        ),
    });
    read.catalog
}

/// Says which brokers this gateway runs; a broker several gateways run
/// without shared subscriptions fails (duplicates in Kinesis).
fn check_assignment(
    config: &Config,
    table_present: bool,
    assignment: &Assignment,
    checks: &mut Vec<Check>,
) {
    let target = "iot_data.mqtt_broker_gateway".to_owned();
    let detail = if table_present {
        assignment.describe(&config.gateway_id)
    } else {
        format!(
            "absent: gateway {} runs all {} brokers, as every gateway does",
            config.gateway_id, assignment.n_brokers_total
        )
    };
    checks.push(Check::pass("database", target, detail, None));
    for (id, gateways) in &assignment.duplicated {
        checks.push(Check::fail(
            "catalog row",
            format!("mqtt_broker_gateway mqtt_id={id}"),
            CheckKind::Shared,
            format!(
                "broker {id} is assigned to gateways {} without shared subscriptions: each forwards every message (duplicates in Kinesis); set use_shared_subscriptions or assign it to one gateway",
                gateways.join(", ")
            ),
        ));
    }
}

/// The brokers' lines, from the sessions' probe.
fn check_brokers(config: &Config, catalog: &Catalog) -> Vec<Check> {
    sessions::probe(&catalog.brokers, &config.gateway_id, &config.mqtt)
        .into_iter()
        .map(|probe| match probe {
            BrokerProbe::Settings { broker_id, error } => Check::fail(
                "broker",
                format!("broker {broker_id}"),
                CheckKind::Tls,
                error.to_string(),
            ),
            BrokerProbe::Endpoint {
                broker_id,
                endpoint_idx,
                n_endpoints,
                endpoint,
                answer,
            } => {
                let target = format!(
                    "broker {broker_id} endpoint {}/{n_endpoints} {endpoint}",
                    endpoint_idx + 1
                );
                match answer {
                    Ok(latency) => Check::pass(
                        "broker",
                        target,
                        format!("CONNACK in {} ms", latency.as_millis()),
                        Some(latency),
                    ),
                    Err(failure) => {
                        let kind = CheckKind::Connect(failure.kind);
                        Check::fail("broker", target, kind, failure.message)
                    }
                }
            }
        })
        .collect()
}

/// The stream's line, from the drain's probe.
fn check_kinesis(config: &Config, clocks: &mut Vec<ClockReading>) -> Check {
    let kinesis = &config.kinesis;
    let target = format!(
        "stream {} in {} via {}",
        kinesis.stream, kinesis.region, kinesis.endpoint
    );
    let (credentials, latency, clock_offset_ms, answer) = match drain::probe(kinesis) {
        KinesisProbe::NoCredentials(error) => {
            return Check::fail("kinesis", target, CheckKind::Credentials, error.to_string())
        }
        KinesisProbe::Asked {
            credentials,
            latency,
            clock_offset_ms,
            answer,
        } => (credentials, latency, clock_offset_ms, answer),
    };
    // The answer's Date against this machine's clock: SigV4 allows 5 minutes.
    if let Some(offset_ms) = clock_offset_ms {
        clocks.push(ClockReading {
            against: "AWS",
            source: "Date of DescribeStreamSummary",
            offset_ms,
        });
    }
    let clock = clock_offset_ms
        .filter(|offset| offset.abs() >= 2_000)
        .map_or(String::new(), |offset| {
            format!("; the clock is {} AWS", describe_offset(offset))
        });
    match answer {
        Ok(summary) if summary.status == "ACTIVE" || summary.status == "UPDATING" => Check::pass(
            "kinesis",
            target,
            format!(
                "{}, {} open shards; {}; credentials from {credentials}{clock}",
                summary.status, summary.open_shards, kinesis.aggregation,
            ),
            Some(latency),
        ),
        Ok(summary) => Check::fail(
            "kinesis",
            target,
            CheckKind::NotActive,
            format!("stream is {}", summary.status),
        ),
        Err(failure) => Check::fail(
            "kinesis",
            target,
            failure.kind.into(),
            format!("{}{clock}", failure.detail),
        ),
    }
}

/// The spool's line, from the spool's probe.
fn check_spool(path: &Path, min_free_bytes: Option<u64>) -> Check {
    let target = path.display().to_string();
    let (contents, room) = match spool::probe(path, min_free_bytes) {
        SpoolProbe::NotWritable { dir, error } => {
            let kind = if error.raw_os_error() == Some(libc::ENOSPC) {
                CheckKind::DiskFull
            } else {
                CheckKind::NotWritable
            };
            return Check::fail(
                "spool",
                target,
                kind,
                format!("cannot write in {}: {error}", dir.display()),
            );
        }
        SpoolProbe::Unreadable(error) => {
            return Check::fail("spool", target, CheckKind::Unreadable, error.to_string())
        }
        SpoolProbe::Usable { contents, room } => (contents, room),
    };
    let contents = match contents {
        None => "directory writable; the spool is created at the first run".to_owned(),
        Some(summary) => format!(
            "writable; {} records ({} bytes) waiting",
            summary.n_records, summary.bytes
        ),
    };
    let Some(room) = room else {
        return Check::pass("spool", target, contents, None);
    };
    let detail = format!(
        "{contents}; filesystem {} free of {}, {} reusable in the spool, spool.min_free_bytes {}",
        describe_bytes(room.fs_free),
        describe_bytes(room.fs_total),
        describe_bytes(room.spool_free),
        describe_bytes(room.floor)
    );
    if room.appends_allowed {
        Check::pass("spool", target, detail, None)
    } else {
        Check::fail(
            "spool",
            target,
            CheckKind::LowSpace,
            format!("{detail}: appends pause below the floor"),
        )
    }
}

/// True when every check passed.
pub fn all_ok(checks: &[Check]) -> bool {
    checks.iter().all(|check| check.ok)
}

/// The report as one JSON object: `{"ok": bool, "checks": [...]}`.
pub fn as_json(checks: &[Check]) -> String {
    let lines: Vec<Value> = checks
        .iter()
        .map(|check| {
            json!({
                "area": check.area,
                "target": check.target,
                "ok": check.ok,
                "kind": check.kind.map(CheckKind::as_str),
                "detail": check.detail,
                "latency_ms": check.latency.map(|l| l.as_secs_f64() * 1000.0),
            })
        })
        .collect();
    json!({ "ok": all_ok(checks), "checks": lines }).to_string()
}

/// The report as a table for people.
pub fn as_text(checks: &[Check]) -> String {
    let width = checks
        .iter()
        .map(|check| check.target.len())
        .max()
        .unwrap_or(0)
        .min(60);
    let mut out = String::new();
    for check in checks {
        let result = match &check.kind {
            None => "ok".to_owned(),
            Some(kind) => format!("FAIL {kind}"),
        };
        let _ = writeln!(
            out,
            "{:<11} {:<width$}  {result:<16} {}",
            check.area, check.target, check.detail
        );
    }
    let n_failed = checks.iter().filter(|check| !check.ok).count();
    let _ = writeln!(
        out,
        "{}",
        if n_failed == 0 {
            format!("all {} checks passed", checks.len())
        } else {
            format!("{n_failed} of {} checks failed", checks.len())
        }
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(against: &'static str, offset_ms: i64) -> ClockReading {
        ClockReading {
            against,
            source: "test",
            offset_ms,
        }
    }

    fn tls_failure(detail: &str) -> Check {
        let kind = CheckKind::Connect(ConnectFailure::Tls);
        Check::fail("broker", "broker 1".into(), kind, detail.into())
    }

    #[test]
    fn a_clock_within_tolerance_passes_and_one_beyond_fails() {
        assert!(reading("AWS", 800).check().ok);
        assert_eq!(reading("AWS", 800).check().detail, "agrees");
        let near = reading("the database", -12_000).check();
        assert!(near.ok, "{near:?}");
        assert!(
            near.detail.contains("12s ahead of the database"),
            "{near:?}"
        );
        let far = reading("the database", 7_200_000).check();
        assert_eq!(far.kind, Some(CheckKind::Clock));
        assert!(
            far.detail
                .contains("the clock is 2h0m0s behind the database"),
            "{far:?}"
        );
    }

    #[test]
    fn an_expired_certificate_is_named_a_clock_problem_only_while_the_clock_is_off() {
        let not_yet = "tls: invalid peer certificate: certificate not valid yet: \
                       verification time 1000 (UNIX), but certificate is not valid before 8200";
        let unknown_ca = "tls: invalid peer certificate: UnknownIssuer";

        let mut checks = vec![tls_failure(not_yet), tls_failure(unknown_ca)];
        name_clock_problems(&mut checks, &[reading("AWS", 1_000)]);
        assert_eq!(
            checks[0].kind,
            Some(CheckKind::Connect(ConnectFailure::Tls)),
            "clock is fine"
        );

        let clocks = [
            reading("the database", -9_000_000),
            reading("AWS", 7_200_000),
        ];
        name_clock_problems(&mut checks, &clocks);
        assert_eq!(checks[0].kind, Some(CheckKind::Clock));
        assert!(
            checks[0].detail.ends_with(
                "the clock is 2h0m0s behind AWS: the certificate is probably fine, fix the clock (NTP)"
            ),
            "AWS's offset is named first: {:?}",
            checks[0]
        );
        assert_eq!(
            checks[1].kind,
            Some(CheckKind::Connect(ConnectFailure::Tls)),
            "not a validity refusal"
        );

        let mut expired = vec![
            tls_failure("certificate expired: verification time …"),
            Check::fail(
                "database",
                "link".into(),
                CheckKind::Tls,
                "certificate expired".into(),
            ),
        ];
        name_clock_problems(&mut expired, &[reading("the database", -9_000_000)]);
        assert_eq!(expired[0].kind, Some(CheckKind::Clock));
        assert_eq!(
            expired[1].kind,
            Some(CheckKind::Clock),
            "the database's too"
        );
        assert!(expired[0].detail.contains("2h30m0s ahead of the database"));
    }

    #[test]
    fn kinds_keep_their_json_words() {
        let checks = [
            Check::fail("spool", "/s".into(), CheckKind::DiskFull, "full".into()),
            Check::fail(
                "broker",
                "b".into(),
                CheckKind::Connect(ConnectFailure::Dns),
                "no such host".into(),
            ),
            Check::fail(
                "kinesis",
                "k".into(),
                DescribeFailureKind::NotFound.into(),
                "HTTP 400".into(),
            ),
            Check::pass("spool", "/s".into(), "writable".into(), None),
        ];
        let json: Value = serde_json::from_str(&as_json(&checks)).unwrap();
        let kinds: Vec<&Value> = json["checks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|check| &check["kind"])
            .collect();
        assert_eq!(
            kinds,
            [
                &json!("disk_full"),
                &json!("dns"),
                &json!("not_found"),
                &Value::Null
            ]
        );
        assert!(as_text(&checks).contains("FAIL not_found"));
        assert_eq!(
            CheckKind::Connect(ConnectFailure::Network).as_str(),
            "network"
        );
    }
}
