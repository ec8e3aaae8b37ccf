//! Pure: why one catalog row (or a stored broker) cannot run, naming the
//! column it concerns. The row itself (its `mqtt_id` or `topic_id`) is named by
//! the [`RowProblem`](super::RowProblem) that holds the error.
//!
//! Values are kept as read and quoted as an [`Excerpt`], so one huge cell
//! cannot flood the log. No variant holds a password or key: a sealed value
//! is named by its column and format only.

use std::fmt;

use crate::catalog::postgres::DbError;
use crate::sealed::{self, OpenError};

/// What is wrong with a row; `Display` starts with the column it concerns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RowError {
    /// The broker's `mqtt_id` is in several active rows; none of them runs.
    DuplicateId { n_rows: usize },
    /// A column that must be set is NULL.
    Null { column: &'static str },
    /// A column that must be set is empty.
    Empty { column: &'static str },
    /// A host column (`mqtt_host`; `endpoint host` in a snapshot) that is no host name or address.
    NotHost { column: &'static str, host: String },
    /// A number outside what the column accepts (`accepted`: `is not 0, 1 or 2`).
    OutOfRange {
        column: &'static str,
        value: i64,
        accepted: &'static str,
    },
    /// An entry of `mqtt_failover` that is no endpoint.
    Failover {
        entry: String,
        problem: EndpointProblem,
    },
    /// A sealed column while the gateway has no key (`format`: its `enc:vN:` prefix).
    NoKey {
        column: &'static str,
        format: &'static str,
    },
    /// A sealed column that does not open with the gateway's key.
    Sealed {
        column: &'static str,
        error: OpenError,
    },
    /// `column` is set but `missing`, which must go with it, is not.
    Unpaired {
        column: &'static str,
        missing: &'static str,
    },
    /// A client id that cannot go into CONNECT.
    ClientId { client_id: String },
    /// A column holding a character it must not (`forbidden`: `the wildcards + or #`).
    Forbidden {
        column: &'static str,
        value: String,
        forbidden: &'static str,
    },
    /// `topic` of a topic row is no valid MQTT topic filter.
    TopicFilter { topic: String, why: &'static str },
    /// `topic_prefix` + `topic` is no valid MQTT topic filter.
    PrefixedFilter {
        prefix: String,
        topic: String,
        why: &'static str,
    },
    /// `$share/{group}/` + `topic_prefix` + `topic` is over the gateway's limit.
    SharedFilterTooLong {
        group: String,
        prefix: String,
        topic: String,
    },
    /// A stored broker's subscription filter that the row rules refuse.
    StoredFilter {
        filter: String,
        problem: StoredFilterProblem,
    },
    /// A stored broker without an endpoint.
    NoEndpoint,
    /// A stored broker's endpoint with port 0 (`endpoint`: `host:port`).
    PortZero { endpoint: String },
    /// A stored broker with a password but no user name.
    PasswordWithoutUser,
    /// A broker row with a mqtt_id and no other usable name: `mqtt_id` is NULL.
    NullId,
    /// An assignment row (`mqtt_broker_gateway`) with a NULL in a key column.
    NullAssignment,
    /// A column the database holds with a type we cannot read.
    Unreadable(DbError),
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RowError::DuplicateId { n_rows } => {
                write!(f, "mqtt_id appears in {n_rows} active rows; all are skipped")
            }
            RowError::Null { column } => write!(f, "{column} is NULL"),
            RowError::Empty { column } => write!(f, "{column} is empty"),
            RowError::NotHost { column, host } => write!(
                f,
                "{column} {:?} is not a host name or address",
                Excerpt(host)
            ),
            RowError::OutOfRange {
                column,
                value,
                accepted,
            } => write!(f, "{column} {value} {accepted}"),
            RowError::Failover { entry, problem } => {
                write!(f, "mqtt_failover entry {:?} {problem}", Excerpt(entry))
            }
            RowError::NoKey { column, format } => write!(
                f,
                "{column} is encrypted ({format}) but the gateway has no key: set database.password_key_file or {}",
                sealed::KEY_ENV
            ),
            RowError::Sealed { column, error } => write!(f, "{column}: {error}"),
            RowError::Unpaired { column, missing } => {
                write!(f, "{column} is set but {missing} is empty")
            }
            RowError::ClientId { client_id } => write!(
                f,
                "client_id {:?} is not a usable MQTT client id (1 to 128 printable characters)",
                Excerpt(client_id)
            ),
            RowError::Forbidden {
                column,
                value,
                forbidden,
            } => write!(f, "{column} {:?} must not hold {forbidden}", Excerpt(value)),
            RowError::TopicFilter { topic, why } => write!(
                f,
                "topic {:?} is not a valid MQTT topic filter: {why}",
                Excerpt(topic)
            ),
            RowError::PrefixedFilter { prefix, topic, why } => write!(
                f,
                "topic_prefix {:?} + topic {:?} is not a valid MQTT topic filter: {why}",
                Excerpt(prefix),
                Excerpt(topic)
            ),
            RowError::SharedFilterTooLong {
                group,
                prefix,
                topic,
            } => write!(
                f,
                "$share/{:?}/ + topic_prefix {:?} + topic {:?} is longer than {} bytes, \
                 the gateway's limit for a topic filter",
                Excerpt(group),
                Excerpt(prefix),
                Excerpt(topic),
                super::MAX_FILTER_BYTES
            ),
            RowError::StoredFilter { filter, problem } => {
                write!(f, "topic filter {:?} {problem}", Excerpt(filter))
            }
            RowError::NoEndpoint => f.write_str("no endpoint"),
            RowError::PortZero { endpoint } => write!(f, "endpoint {endpoint} has port 0"),
            RowError::PasswordWithoutUser => f.write_str("a password without a user name"),
            RowError::NullId => f.write_str("mqtt_id is NULL: the row cannot be told apart"),
            RowError::NullAssignment => {
                f.write_str("mqtt_id or gateway_id is NULL: the row assigns nothing")
            }
            RowError::Unreadable(error) => write!(f, "{error}"),
        }
    }
}

impl std::error::Error for RowError {}

impl RowError {
    /// The column the error concerns, when it is one column.
    pub fn column(&self) -> Option<&'static str> {
        match self {
            RowError::DuplicateId { .. } | RowError::NullId => Some("mqtt_id"),
            RowError::Null { column }
            | RowError::Empty { column }
            | RowError::NotHost { column, .. }
            | RowError::OutOfRange { column, .. }
            | RowError::NoKey { column, .. }
            | RowError::Sealed { column, .. }
            | RowError::Unpaired { column, .. }
            | RowError::Forbidden { column, .. } => Some(column),
            RowError::Failover { .. } => Some("mqtt_failover"),
            RowError::ClientId { .. } => Some("client_id"),
            RowError::TopicFilter { .. } => Some("topic"),
            RowError::PrefixedFilter { .. } | RowError::SharedFilterTooLong { .. } => {
                Some("topic_prefix")
            }
            RowError::StoredFilter { .. }
            | RowError::NoEndpoint
            | RowError::PortZero { .. }
            | RowError::PasswordWithoutUser
            | RowError::NullAssignment
            | RowError::Unreadable(_) => None,
        }
    }
}

/// Why an `mqtt_failover` entry is no `host[:port]` endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndpointProblem {
    /// `[v6` without `]`.
    NoClosingBracket,
    /// `[v6]` followed by something other than `:port`.
    NotBracketedPort,
    /// An IPv6 address with a port, without brackets.
    BareIpv6,
    /// A port that is no number in 1..65535.
    Port,
    /// A host that is no host name or address.
    Host { host: String },
}

impl fmt::Display for EndpointProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndpointProblem::NoClosingBracket => f.write_str("lacks the closing ']'"),
            EndpointProblem::NotBracketedPort => f.write_str("is not [address]:port"),
            EndpointProblem::BareIpv6 => {
                f.write_str("is an IPv6 address: write it as [address]:port")
            }
            EndpointProblem::Port => f.write_str("has a port outside 1..65535"),
            EndpointProblem::Host { host } => write!(
                f,
                "has host {:?} is not a host name or address",
                Excerpt(host)
            ),
        }
    }
}

/// Why a stored subscription filter is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoredFilterProblem {
    TooLong,
    /// `$share/` without a usable group after it.
    NoShareGroup,
    /// [`check_filter`](super::check_filter)'s reason.
    Invalid(&'static str),
}

impl fmt::Display for StoredFilterProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoredFilterProblem::TooLong => {
                write!(f, "is longer than {} bytes", super::MAX_FILTER_BYTES)
            }
            StoredFilterProblem::NoShareGroup => f.write_str("lacks a usable share group"),
            StoredFilterProblem::Invalid(why) => write!(f, "is not usable: {why}"),
        }
    }
}

/// A value from a row as a log line shows it: the first 100 characters, and
/// the length when there is more, so one huge cell cannot flood the log
/// (every quoted value, found by fuzz/ catalog_rows).
struct Excerpt<'a>(&'a str);

impl fmt::Debug for Excerpt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 100;
        match self.0.char_indices().nth(SHOWN) {
            None => write!(f, "{:?}", self.0),
            Some((cut, _)) => write!(f, "{:?}… ({} bytes)", &self.0[..cut], self.0.len()),
        }
    }
}
