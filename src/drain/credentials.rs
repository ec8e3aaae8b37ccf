//! AWS credentials: environment variables first, then the shared credentials file.
//!
//! Sources, in order: `AWS_ACCESS_KEY_ID` + `AWS_SECRET_ACCESS_KEY` (+ optional
//! `AWS_SESSION_TOKEN`); then the profile `AWS_PROFILE` (default `default`) of
//! `AWS_SHARED_CREDENTIALS_FILE` (default `~/.aws/credentials`).
//! Not supported: `~/.aws/config`, SSO, assume-role, instance metadata.
//! Secrets live in [`Secret`] and never reach `Debug`, `Display` or an error text.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::secret::Secret;

/// A key pair, maybe with a session token, and where it came from.
#[derive(Clone)]
pub struct Credentials {
    access_key_id: String,
    secret_access_key: Secret,
    session_token: Option<Secret>,
    /// Where they were found, for logs: "environment" or "{path} [profile]".
    source: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The access key id names the key; it is not secret. The rest is.
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key)
            .field("session_token", &self.session_token.as_ref().map(|_| "***"))
            .field("source", &self.source)
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
        }
    }

    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }

    pub fn source(&self) -> &str {
        &self.source
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
        }
    }
}

impl std::error::Error for CredentialsError {}

/// Loads credentials from this process' environment and files.
pub fn load() -> Result<Credentials, CredentialsError> {
    load_from(
        |name| std::env::var(name).ok().filter(|value| !value.is_empty()),
        |path| std::fs::read_to_string(path),
    )
}

/// [`load`] with the environment and the file system passed in, for tests.
pub fn load_from(
    env: impl Fn(&str) -> Option<String>,
    read_file: impl Fn(&Path) -> io::Result<String>,
) -> Result<Credentials, CredentialsError> {
    if let Some(access_key_id) = env("AWS_ACCESS_KEY_ID") {
        let secret_access_key =
            env("AWS_SECRET_ACCESS_KEY").ok_or_else(|| CredentialsError::Incomplete {
                source: "the environment".to_owned(),
                missing: "AWS_SECRET_ACCESS_KEY",
            })?;
        return Ok(Credentials::new(
            access_key_id,
            Secret::new(secret_access_key),
            env("AWS_SESSION_TOKEN").map(Secret::new),
            "environment",
        ));
    }
    let file = match env("AWS_SHARED_CREDENTIALS_FILE") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(env("HOME").unwrap_or_default()).join(".aws/credentials"),
    };
    let profile = env("AWS_PROFILE").unwrap_or_else(|| "default".to_owned());
    let text = match read_file(&file) {
        Ok(text) => text,
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            return Err(CredentialsError::NotFound { file })
        }
        Err(error) => {
            return Err(CredentialsError::Unreadable {
                file,
                error: error.to_string(),
            })
        }
    };
    from_profile(&text, &profile, &file)
}

/// Reads `[profile]` of a shared credentials file (INI: `key = value`, `#`/`;` comments).
pub fn from_profile(
    text: &str,
    profile: &str,
    file: &Path,
) -> Result<Credentials, CredentialsError> {
    let mut in_profile = false;
    let mut found_profile = false;
    let (mut access_key_id, mut secret_access_key, mut session_token) = (None, None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_profile = section.trim() == profile;
            found_profile |= in_profile;
            continue;
        }
        if !in_profile {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim().to_owned();
        match key.trim().to_ascii_lowercase().as_str() {
            "aws_access_key_id" => access_key_id = Some(value),
            "aws_secret_access_key" => secret_access_key = Some(value),
            "aws_session_token" => session_token = Some(value),
            _ => {}
        }
    }
    let source = format!("{} [{profile}]", file.display());
    match (access_key_id.filter(|v| !v.is_empty()), secret_access_key) {
        (Some(access_key_id), Some(secret)) if !secret.is_empty() => Ok(Credentials::new(
            access_key_id,
            Secret::new(secret),
            session_token.filter(|t| !t.is_empty()).map(Secret::new),
            source,
        )),
        (Some(_), _) => Err(CredentialsError::Incomplete {
            source,
            missing: "aws_secret_access_key",
        }),
        (None, _) if found_profile => Err(CredentialsError::Incomplete {
            source,
            missing: "aws_access_key_id",
        }),
        (None, _) => Err(CredentialsError::NoProfile {
            file: file.to_owned(),
            profile: profile.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests;
