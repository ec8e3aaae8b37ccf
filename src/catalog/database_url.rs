//! `database.url` → the connection settings tokio-postgres takes, plus libpq's
//! TLS parameters, which it does not.
//!
//! tokio-postgres reads `sslmode` as `disable`/`prefer`/`require` only and
//! refuses `sslrootcert`, `sslcert` and `sslkey` as unknown options, so they are
//! taken out of the string here (in both forms, `postgres://…?sslmode=verify-full`
//! and `host=… sslmode=verify-full`) and the rest goes to tokio-postgres.
//! `catalog::postgres::connect` applies them. Pure: no file is read and no
//! connection is made. Errors never quote the string: it may hold a password.
//!
//! Not read, unlike libpq: the `PG*` environment variables, `~/.pgpass` and the
//! `~/.postgresql/` defaults of the certificate files; `sslpassword`, `sslcrl`,
//! `sslsni` and the other TLS options are refused as unknown by tokio-postgres.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;

use postgres::config::Host;

use crate::secret::Secret;

/// libpq's `sslmode`, with libpq's meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// Unencrypted first; TLS if the server refuses that.
    Allow,
    /// TLS first; unencrypted if TLS fails (libpq's default).
    Prefer,
    /// TLS or nothing; the certificate is checked only when `sslrootcert` is given.
    Require,
    /// TLS, the server's chain checked against `sslrootcert`, the host name not.
    VerifyCa,
    /// TLS, the chain and the host name checked.
    VerifyFull,
}

impl SslMode {
    const ALL: [(&'static str, SslMode); 6] = [
        ("disable", SslMode::Disable),
        ("allow", SslMode::Allow),
        ("prefer", SslMode::Prefer),
        ("require", SslMode::Require),
        ("verify-ca", SslMode::VerifyCa),
        ("verify-full", SslMode::VerifyFull),
    ];

    pub fn as_str(self) -> &'static str {
        SslMode::ALL
            .iter()
            .find(|(_, mode)| *mode == self)
            .map_or("prefer", |(name, _)| name)
    }
}

/// How much of the server's certificate is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verify {
    /// Nothing: the link is encrypted, but anyone in the path can pose as the server.
    Nothing,
    /// The chain up to a root of `sslrootcert`, not the host name (`verify-ca`).
    Chain,
    /// The chain and the host name (`verify-full`).
    ChainAndName,
}

impl fmt::Display for Verify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verify::Nothing => "certificate not verified",
            Verify::Chain => "verify-ca",
            Verify::ChainAndName => "verify-full",
        })
    }
}

/// Where the roots to check the server's certificate come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RootCert {
    /// `sslrootcert=system`: the system's trusted roots.
    System,
    /// A PEM file of CA certificates.
    File(PathBuf),
}

/// libpq's TLS parameters as `database.url` gave them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsParams {
    pub mode: SslMode,
    /// True when the URL names `sslmode`; only an explicit `disable` permits
    /// an unencrypted link that may carry a password.
    pub mode_given: bool,
    /// `sslrootcert`.
    pub root_cert: Option<RootCert>,
    /// `sslcert` and `sslkey`: a client certificate (chain) and its key, both PEM files.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

impl TlsParams {
    /// What a TLS attempt checks: libpq checks the chain in every mode once a
    /// root certificate is given, and the name only in `verify-full`.
    pub fn verify(&self) -> Verify {
        match (self.mode, &self.root_cert) {
            (SslMode::VerifyFull, _) => Verify::ChainAndName,
            (SslMode::VerifyCa, _) | (_, Some(_)) => Verify::Chain,
            (_, None) => Verify::Nothing,
        }
    }
}

/// `database.url`, parsed: tokio-postgres's settings and the TLS parameters.
#[derive(Clone)]
pub struct DatabaseUrl {
    /// Everything but the TLS parameters; its `ssl_mode` is set per attempt.
    pub config: postgres::Config,
    pub tls: TlsParams,
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the config: it holds the password.
        f.debug_struct("DatabaseUrl")
            .field("hosts", &self.hosts())
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

/// Why `database.url` cannot be used. Never quotes the URL.
#[derive(Debug, PartialEq, Eq)]
pub struct UrlError(String);

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UrlError {}

const TLS_KEYS: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];

impl DatabaseUrl {
    /// Parses a `postgres://` URL or a `key=value` string.
    pub fn parse(url: &Secret) -> Result<DatabaseUrl, UrlError> {
        let (rest, tls_pairs) = split_tls_params(url.expose())?;
        let tls = tls_params(&tls_pairs)?;
        let config = postgres::Config::from_str(rest.expose())
            .map_err(|_| UrlError("cannot be parsed as a PostgreSQL connection string".into()))?;
        Ok(DatabaseUrl { config, tls })
    }

    /// The hosts (and `hostaddr`s) as a list for people: `db.example:5432`.
    pub fn hosts(&self) -> String {
        let ports = self.config.get_ports();
        let port = |idx: usize| {
            ports
                .get(idx)
                .or_else(|| ports.first())
                .copied()
                .unwrap_or(5432)
        };
        let hosts = self.config.get_hosts();
        let addrs = self.config.get_hostaddrs();
        let n_hosts = hosts.len().max(addrs.len());
        (0..n_hosts)
            .map(|idx| match (hosts.get(idx), addrs.get(idx)) {
                (Some(Host::Unix(path)), _) => path.display().to_string(),
                (Some(Host::Tcp(name)), _) if name.contains(':') => {
                    format!("[{name}]:{}", port(idx))
                }
                (Some(Host::Tcp(name)), _) => format!("{name}:{}", port(idx)),
                (None, Some(IpAddr::V6(addr))) => format!("[{addr}]:{}", port(idx)),
                (None, Some(addr)) => format!("{addr}:{}", port(idx)),
                (None, None) => String::new(),
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// True when every host is this machine: a loopback address, `localhost`
    /// or a Unix socket. A `hostaddr` counts over its host name, since the
    /// connection goes there.
    pub fn is_loopback(&self) -> bool {
        let hosts = self.config.get_hosts();
        let addrs = self.config.get_hostaddrs();
        let n_hosts = hosts.len().max(addrs.len());
        n_hosts > 0
            && (0..n_hosts).all(|idx| match (addrs.get(idx), hosts.get(idx)) {
                (Some(addr), _) => addr.is_loopback(),
                (None, Some(Host::Unix(_))) => true,
                (None, Some(Host::Tcp(name))) => super::is_loopback_host(name),
                (None, None) => false,
            })
    }

    /// True when every host is a Unix socket (never encrypted, as in libpq).
    pub fn is_unix_socket(&self) -> bool {
        let hosts = self.config.get_hosts();
        !hosts.is_empty()
            && self.config.get_hostaddrs().is_empty()
            && hosts.iter().all(|host| matches!(host, Host::Unix(_)))
    }

    /// True when the URL holds a (non-empty) password.
    pub fn has_password(&self) -> bool {
        self.config.get_password().is_some_and(|p| !p.is_empty())
    }

    /// True when an unencrypted link may be tried: `sslmode=disable` said so,
    /// or no password can cross the network (this machine, or no password).
    /// tokio-postgres answers whichever method the server asks for, cleartext
    /// included, and does not say which one it was; so with a password to
    /// another machine, the only safe link is an encrypted one.
    pub fn may_go_unencrypted(&self) -> bool {
        (self.tls.mode == SslMode::Disable && self.tls.mode_given)
            || self.is_loopback()
            || !self.has_password()
    }
}

/// The connection string without the TLS keys, and those keys' (decoded) values.
fn split_tls_params(url: &str) -> Result<(Secret, Vec<(String, String)>), UrlError> {
    let url = url.trim();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        split_url(url)
    } else {
        split_key_values(url)
    }
}

/// `postgres://…?k=v&…`: the query parameters are split off as tokio-postgres
/// does (after the first `@`, at the first `?`), and the others kept verbatim.
fn split_url(url: &str) -> Result<(Secret, Vec<(String, String)>), UrlError> {
    let after_credentials = url.find('@').map_or(0, |at| at + 1);
    let Some(query_at) = url[after_credentials..].find('?') else {
        return Ok((Secret::new(url), Vec::new()));
    };
    let query_at = after_credentials + query_at;
    let mut kept = Vec::new();
    let mut tls = Vec::new();
    for part in url[query_at + 1..].split('&') {
        let Some((key, value)) = part.split_once('=') else {
            kept.push(part);
            continue;
        };
        let key = percent_decode(key)?;
        if TLS_KEYS.contains(&key.as_str()) {
            tls.push((key, percent_decode(value)?));
        } else {
            kept.push(part);
        }
    }
    let mut rest = url[..query_at].to_owned();
    if !kept.is_empty() {
        rest.push('?');
        rest.push_str(&kept.join("&"));
    }
    Ok((Secret::new(rest), tls))
}

fn percent_decode(text: &str) -> Result<String, UrlError> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut idx = 0;
    while idx < bytes.len() {
        let hex = |at: usize| bytes.get(at).and_then(|b| (*b as char).to_digit(16));
        match (bytes[idx], hex(idx + 1), hex(idx + 2)) {
            (b'%', Some(high), Some(low)) => {
                decoded.push((high * 16 + low) as u8);
                idx += 3;
            }
            (byte, _, _) => {
                decoded.push(byte);
                idx += 1;
            }
        }
    }
    String::from_utf8(decoded)
        .map_err(|_| UrlError("holds a parameter that is not UTF-8 once percent-decoded".into()))
}

/// `key=value …` (libpq's quoting: `'…'`, backslash escapes): the TLS keys
/// are taken out, the rest is written again, every value quoted.
fn split_key_values(text: &str) -> Result<(Secret, Vec<(String, String)>), UrlError> {
    let mut chars = text.chars().peekable();
    let mut rest = String::with_capacity(text.len());
    let mut tls = Vec::new();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| !c.is_whitespace() && *c != '=') {
            key.push(c);
        }
        if key.is_empty() {
            if chars.peek().is_some() {
                return Err(UrlError("has a `=` without a parameter name".into()));
            }
            break;
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            // Not quoted: a password with a space, unquoted, lands here.
            return Err(UrlError(
                "has a word without `=` after it (quote a value with spaces: key='a b')".into(),
            ));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    None => return Err(UrlError("has an unterminated quoted value".into())),
                    Some('\'') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        if TLS_KEYS.contains(&key.as_str()) {
            tls.push((key, value));
        } else {
            if !rest.is_empty() {
                rest.push(' ');
            }
            rest.push_str(&key);
            rest.push_str("='");
            for c in value.chars() {
                if c == '\'' || c == '\\' {
                    rest.push('\\');
                }
                rest.push(c);
            }
            rest.push('\'');
        }
    }
    Ok((Secret::new(rest), tls))
}

/// A parameter name or value short and plain enough to quote in an error;
/// anything else may be a password gone astray, and is not shown.
fn shown(text: &str) -> &str {
    let plain = text.len() <= 24
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if plain {
        text
    } else {
        "(not shown)"
    }
}

fn tls_params(pairs: &[(String, String)]) -> Result<TlsParams, UrlError> {
    // As in libpq, a key given twice counts with its last value.
    let last = |key: &str| {
        pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let mode = match last("sslmode") {
        None => None,
        Some(value) => Some(
            SslMode::ALL
                .iter()
                .find(|(name, _)| *name == value)
                .map(|(_, mode)| *mode)
                .ok_or_else(|| {
                    UrlError(format!(
                        "sslmode {:?} is not one of disable, allow, prefer, require, verify-ca, verify-full",
                        shown(value)
                    ))
                })?,
        ),
    };
    let root_cert = match last("sslrootcert") {
        None => None,
        Some("") => return Err(UrlError("sslrootcert is empty".into())),
        Some("system") => Some(RootCert::System),
        Some(path) => Some(RootCert::File(PathBuf::from(path))),
    };
    let mode = match (mode, &root_cert) {
        // As libpq (16 and later): the system's roots vouch for any name they
        // signed, so only a name check makes them mean something.
        (None, Some(RootCert::System)) => SslMode::VerifyFull,
        (Some(mode), Some(RootCert::System)) if mode != SslMode::VerifyFull => {
            return Err(UrlError(format!(
                "sslmode {} may not be used with sslrootcert=system (use sslmode=verify-full)",
                mode.as_str()
            )))
        }
        (Some(mode @ (SslMode::VerifyCa | SslMode::VerifyFull)), None) => {
            return Err(UrlError(format!(
                "sslmode {} needs sslrootcert: a PEM file of the CA certificates to trust, or `system` for the system's roots",
                mode.as_str()
            )))
        }
        (mode, _) => mode.unwrap_or(SslMode::Prefer),
    };
    let client_cert = match (last("sslcert"), last("sslkey")) {
        (None, None) => None,
        (Some(cert), Some(key)) if !cert.is_empty() && !key.is_empty() => {
            Some((PathBuf::from(cert), PathBuf::from(key)))
        }
        _ => {
            return Err(UrlError(
                "sslcert and sslkey go together: give both files, or neither".into(),
            ))
        }
    };
    Ok(TlsParams {
        mode,
        mode_given: last("sslmode").is_some(),
        root_cert,
        client_cert,
    })
}

#[cfg(test)]
mod tests;
