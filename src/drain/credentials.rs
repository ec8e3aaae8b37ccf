//! AWS credentials: what they are, and where `kinesis.credentials = "auto"` finds them.
//!
//! The `auto` chain, in the order the AWS SDKs document:
//! 1. `AWS_ACCESS_KEY_ID` + `AWS_SECRET_ACCESS_KEY` (+ optional `AWS_SESSION_TOKEN`);
//! 2. the profile `AWS_PROFILE` (default `default`) of the shared credentials file
//!    (`AWS_SHARED_CREDENTIALS_FILE`, else `~/.aws/credentials`) and of the shared
//!    config file (`AWS_CONFIG_FILE`, else `~/.aws/config`): static keys, else its
//!    `credential_process` (`process`);
//! 3. the container endpoint (`AWS_CONTAINER_CREDENTIALS_FULL_URI` / `_RELATIVE_URI`, `remote`);
//! 4. the instance metadata service, IMDSv2 (`remote`).
//!
//! A source that is not configured passes to the next; one that is configured
//! but fails stops the chain with its error (as the SDKs do), except instance
//! metadata, which is simply absent off EC2. The AWS IoT credentials provider
//! (`kinesis.credentials = "iot"`) is in `iot`. Refreshing before expiry is
//! the drain's credentials thread ([`super::refresher`]).
//! Not supported: SSO, `role_arn` (assume-role), web identity.
//! Secrets live in [`Secret`] and never reach `Debug`, `Display` or an error text.

pub(crate) mod document;
pub(crate) mod iot;
pub(crate) mod process;
pub(crate) mod remote;

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::secret::Secret;

/// A key pair, maybe with a session token, where it came from and until when it is valid.
#[derive(Clone)]
pub struct Credentials {
    access_key_id: String,
    secret_access_key: Secret,
    session_token: Option<Secret>,
    /// Where they were found, for logs: "environment", "{path} \[profile\]", …
    source: String,
    /// When they expire, on the monotonic clock: immune to the wall clock
    /// being set while they are held. `None`: they do not expire.
    expires_at: Option<Instant>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The access key id names the key; it is not secret. The rest is.
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key)
            .field("session_token", &self.session_token.as_ref().map(|_| "***"))
            .field("source", &self.source)
            .field("expires_in", &self.expires_in(Instant::now()))
            .finish()
    }
}

impl Credentials {
    pub fn new(
        access_key_id: impl Into<String>,
        secret_access_key: Secret,
        session_token: Option<Secret>,
        source: impl Into<String>,
    ) -> Credentials {
        Credentials {
            access_key_id: access_key_id.into(),
            secret_access_key,
            session_token,
            source: source.into(),
            expires_at: None,
        }
    }

    /// These credentials, expiring at `expires_at`.
    pub fn expiring(mut self, expires_at: Option<Instant>) -> Credentials {
        self.expires_at = expires_at;
        self
    }

    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn expires_at(&self) -> Option<Instant> {
        self.expires_at
    }

    /// How long they are still valid after `now`; `None` when they do not expire.
    pub fn expires_in(&self, now: Instant) -> Option<Duration> {
        self.expires_at.map(|at| at.saturating_duration_since(now))
    }

    /// The session token, for the one place that compares it (tests, the refresher).
    pub fn session_token(&self) -> Option<&Secret> {
        self.session_token.as_ref()
    }

    /// The form aws-sigv4 signs with.
    pub(super) fn to_aws(&self) -> aws_credential_types::Credentials {
        aws_credential_types::Credentials::new(
            self.access_key_id.clone(),
            self.secret_access_key.expose().to_owned(),
            self.session_token.as_ref().map(|t| t.expose().to_owned()),
            None,
            "mqtt-kinesis-bridge",
        )
    }

    /// The secret key, for tests of the sources (never printed).
    pub fn secret_access_key(&self) -> &Secret {
        &self.secret_access_key
    }
}

/// No usable credentials; the text names the sources checked, never a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialsError {
    /// Neither the environment nor the file had any.
    NotFound { file: PathBuf },
    /// A source has a key id but lacks `missing`.
    Incomplete {
        source: String,
        missing: &'static str,
    },
    /// The file exists but has no such profile.
    NoProfile { file: PathBuf, profile: String },
    /// The file exists but cannot be read.
    Unreadable { file: PathBuf, error: String },
    /// A configured source (credential_process, the container endpoint,
    /// instance metadata, the IoT credentials provider) failed.
    Source { source: String, detail: String },
    /// A `kinesis.iot` key (`kinesis.iot.cert`, `.key`, `.ca`) whose PEM is unusable.
    IotPem {
        key: &'static str,
        problem: iot::PemProblem,
    },
    /// The whole `auto` chain found nothing.
    NoneInChain {
        credentials_file: PathBuf,
        config_file: PathBuf,
        /// Why instance metadata gave none (disabled, unreachable, no role).
        instance_metadata: String,
    },
}

impl fmt::Display for CredentialsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CredentialsError::NotFound { file } => write!(
                f,
                "none found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or create {}",
                file.display()
            ),
            CredentialsError::Incomplete { source, missing } => {
                write!(f, "{source} has an access key id but no {missing}")
            }
            CredentialsError::NoProfile { file, profile } => write!(
                f,
                "{} has no profile [{profile}] (set AWS_PROFILE to choose another)",
                file.display()
            ),
            CredentialsError::Unreadable { file, error } => {
                write!(f, "cannot read {}: {error}", file.display())
            }
            CredentialsError::Source { source, detail } => write!(f, "{source}: {detail}"),
            CredentialsError::IotPem { key, problem } => write!(f, "{key}: {problem}"),
            CredentialsError::NoneInChain {
                credentials_file,
                config_file,
                instance_metadata,
            } => write!(
                f,
                "none found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or create {} \
                 (or credential_process in {}); no container endpoint is set \
                 (AWS_CONTAINER_CREDENTIALS_FULL_URI/_RELATIVE_URI); instance metadata: {instance_metadata}; \
                 or use kinesis.credentials = \"iot\"",
                credentials_file.display(),
                config_file.display()
            ),
        }
    }
}

impl std::error::Error for CredentialsError {}

/// Looks up an environment variable; empty counts as unset.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// This process' environment, empty values as unset.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}

/// The `auto` chain with this process' environment.
pub fn load(aws_offset_ms: i64) -> Result<Credentials, CredentialsError> {
    load_with(&process_env, aws_offset_ms)
}

/// The `auto` chain with `env` for the environment; `aws_offset_ms` (AWS's
/// clock minus ours) turns an `Expiration` into a time left where the answer
/// carries no `Date` of its own.
pub fn load_with(env: Env<'_>, aws_offset_ms: i64) -> Result<Credentials, CredentialsError> {
    match from_env_and_files(env, &|path| std::fs::read_to_string(path))? {
        Some(Found::Static(credentials)) => return Ok(credentials),
        Some(Found::Process { command, source }) => {
            return process::run(&command, &source, aws_offset_ms)
        }
        None => {}
    }
    if let Some(container) = remote::Container::from_env(env)? {
        return container.fetch(aws_offset_ms);
    }
    let instance_metadata = match remote::Imds::from_env(env) {
        None => "disabled (AWS_EC2_METADATA_DISABLED)".to_owned(),
        Some(imds) => match imds.fetch(aws_offset_ms) {
            Ok(credentials) => return Ok(credentials),
            Err(remote::ImdsError::Absent(why)) => why,
            Err(remote::ImdsError::Failed(error)) => return Err(error),
        },
    };
    Err(CredentialsError::NoneInChain {
        credentials_file: credentials_file(env),
        config_file: config_file(env),
        instance_metadata,
    })
}

/// What the environment and the shared files hold.
#[derive(Debug)]
pub enum Found {
    /// Keys, ready to sign with.
    Static(Credentials),
    /// A profile's `credential_process` command line, to run.
    Process { command: String, source: String },
}

/// The environment and the shared files only (steps 1 and 2, without
/// running anything); [`NotFound`](CredentialsError::NotFound) when they hold nothing.
pub fn load_from(
    env: impl Fn(&str) -> Option<String>,
    read_file: impl Fn(&Path) -> io::Result<String>,
) -> Result<Credentials, CredentialsError> {
    match from_env_and_files(&env, &read_file)? {
        Some(Found::Static(credentials)) => Ok(credentials),
        Some(Found::Process { source, .. }) => Err(CredentialsError::Source {
            source,
            detail: "is a credential_process, not keys".into(),
        }),
        None => Err(CredentialsError::NotFound {
            file: credentials_file(&env),
        }),
    }
}

/// Steps 1 and 2 of the chain; `None` when neither says anything.
pub fn from_env_and_files(
    env: Env<'_>,
    read_file: &dyn Fn(&Path) -> io::Result<String>,
) -> Result<Option<Found>, CredentialsError> {
    if let Some(access_key_id) = env("AWS_ACCESS_KEY_ID") {
        let secret_access_key =
            env("AWS_SECRET_ACCESS_KEY").ok_or_else(|| CredentialsError::Incomplete {
                source: "the environment".to_owned(),
                missing: "AWS_SECRET_ACCESS_KEY",
            })?;
        return Ok(Some(Found::Static(Credentials::new(
            access_key_id,
            Secret::new(secret_access_key),
            env("AWS_SESSION_TOKEN").map(Secret::new),
            "environment",
        ))));
    }
    let chosen = env("AWS_PROFILE");
    let profile = chosen.clone().unwrap_or_else(|| "default".to_owned());
    let read = |file: &Path| match read_file(file) {
        Ok(text) => Ok(Some(text)),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(CredentialsError::Unreadable {
            file: file.to_owned(),
            error: error.to_string(),
        }),
    };
    let credentials_path = credentials_file(env);
    let config_path = config_file(env);
    let credentials_text = read(&credentials_path)?;
    let config_text = read(&config_path)?;
    let in_credentials = credentials_text
        .as_deref()
        .and_then(|text| ini_section(text, |name| name == profile));
    let in_config = config_text.as_deref().and_then(|text| {
        ini_section(text, |name| {
            let mut words = name.split_whitespace();
            match (words.next(), words.next(), words.next()) {
                (Some("profile"), Some(named), None) => named == profile,
                (Some(bare), None, None) => bare == "default" && profile == "default",
                _ => false,
            }
        })
    });
    if in_credentials.is_none() && in_config.is_none() {
        // An absent default profile is no profile; one asked for by name must exist.
        return match (&chosen, &credentials_text, &config_text) {
            (Some(_), Some(_), _) => Err(CredentialsError::NoProfile {
                file: credentials_path,
                profile,
            }),
            (Some(_), None, Some(_)) => Err(CredentialsError::NoProfile {
                file: config_path,
                profile,
            }),
            _ => Ok(None),
        };
    }
    // The credentials file wins over the config file, key by key.
    let in_credentials_has =
        |key: &str| in_credentials.as_ref().is_some_and(|k| k.contains_key(key));
    let file = if in_credentials.is_some() {
        &credentials_path
    } else {
        &config_path
    };
    let process_file = if in_credentials_has("credential_process") {
        &credentials_path
    } else {
        &config_path
    };
    let mut keys = in_config.clone().unwrap_or_default();
    keys.extend(in_credentials.clone().unwrap_or_default());
    let source = format!("{} [{profile}]", file.display());
    let value = |key: &str| keys.get(key).filter(|v| !v.is_empty()).cloned();
    match (value("aws_access_key_id"), value("aws_secret_access_key")) {
        (Some(access_key_id), Some(secret)) => {
            return Ok(Some(Found::Static(Credentials::new(
                access_key_id,
                Secret::new(secret),
                value("aws_session_token").map(Secret::new),
                source,
            ))))
        }
        (Some(_), None) => {
            return Err(CredentialsError::Incomplete {
                source,
                missing: "aws_secret_access_key",
            })
        }
        (None, _) => {}
    }
    if let Some(command) = value("credential_process") {
        return Ok(Some(Found::Process {
            command,
            source: format!(
                "credential_process of {} [{profile}]",
                process_file.display()
            ),
        }));
    }
    if chosen.is_some() {
        // Asked for by name, and it holds nothing we can use (role_arn, sso…).
        return Err(CredentialsError::Incomplete {
            source,
            missing: "aws_access_key_id or credential_process (role_arn and sso are not supported)",
        });
    }
    Ok(None)
}

/// `AWS_SHARED_CREDENTIALS_FILE`, else `~/.aws/credentials`.
fn credentials_file(env: Env<'_>) -> PathBuf {
    match env("AWS_SHARED_CREDENTIALS_FILE") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(env("HOME").unwrap_or_default()).join(".aws/credentials"),
    }
}

/// `AWS_CONFIG_FILE`, else `~/.aws/config`.
fn config_file(env: Env<'_>) -> PathBuf {
    match env("AWS_CONFIG_FILE") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(env("HOME").unwrap_or_default()).join(".aws/config"),
    }
}

/// The `key = value` lines (keys lower-cased) of the first section whose
/// name `wanted` accepts, in an INI file with `#`/`;` comments; `None` when
/// there is no such section.
pub fn ini_section(text: &str, wanted: impl Fn(&str) -> bool) -> Option<HashMap<String, String>> {
    let mut in_section = false;
    let mut found: Option<HashMap<String, String>> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            if found.is_some() && in_section {
                break;
            }
            in_section = wanted(section.trim());
            if in_section {
                found = Some(HashMap::new());
            }
            continue;
        }
        if !in_section {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if let Some(keys) = found.as_mut() {
            keys.insert(key.trim().to_ascii_lowercase(), value.trim().to_owned());
        }
    }
    found
}

#[cfg(test)]
mod tests;
