//! `new-key` and `encrypt-password`: the key for sealed catalog values, and
//! sealing one. The secret comes from stdin, never from argv (shell history
//! and `ps` would show it).

use std::fmt;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::config::{Config, ConfigError};
use crate::sealed::{self, KeyError, SealKey};
use crate::secret::Secret;

/// Why `encrypt-password` sealed nothing.
#[derive(Debug)]
enum SealError {
    /// No key source given.
    NoKey,
    /// The key file or `MKB_PASSWORD_KEY` is unusable.
    Key(KeyError),
    /// The config named by `--config` does not load.
    Config(ConfigError),
    /// Stdin cannot be read (`what`: `the password`, `the key`).
    Stdin {
        what: &'static str,
        error: std::io::Error,
    },
    /// Nothing on stdin (`hint`: what to give).
    Empty {
        what: &'static str,
        hint: &'static str,
    },
}

impl fmt::Display for SealError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SealError::NoKey => f.write_str(
                "no key: give --key-file FILE, set MKB_PASSWORD_KEY, \
                 or --config FILE whose database.password_key_file is set",
            ),
            SealError::Key(error) => write!(f, "{error}"),
            SealError::Config(error) => write!(f, "{error}"),
            SealError::Stdin { what, error } => write!(f, "cannot read {what} from stdin: {error}"),
            SealError::Empty { what, hint } => write!(f, "no {what} on stdin: {hint}"),
        }
    }
}

/// Prints the secret on stdin sealed for `seal_for` (broker id, column), or
/// as `enc:v1:` when `None`. It never comes from argv, which shell history
/// and `ps` would show.
pub fn encrypt_password(
    key_file: Option<&Path>,
    config_path: Option<&Path>,
    seal_for: Option<(i64, &'static str)>,
) -> ExitCode {
    // Without it, a warning about the key file's mode would go nowhere.
    crate::logger::init(log::LevelFilter::Warn);
    let sealed = find_key(key_file, config_path).and_then(|key| {
        let stdin = std::io::stdin().lock();
        Ok(match seal_for {
            None => key.seal(read_password(stdin)?.expose()),
            Some((broker_id, column)) => {
                let secret = match column {
                    "client_key" => read_pem(stdin)?,
                    _ => read_password(stdin)?,
                };
                key.seal_for(secret.expose(), sealed::Binding { broker_id, column })
            }
        })
    });
    match sealed {
        Ok(sealed) => {
            println!("{sealed}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

/// All of `input` (a PEM key), trailing line ending removed; empty is an error.
fn read_pem(mut input: impl std::io::Read) -> Result<Secret, SealError> {
    let mut text = String::new();
    input
        .read_to_string(&mut text)
        .map_err(|error| SealError::Stdin {
            what: "the key",
            error,
        })?;
    let text = text.trim_end_matches(['\n', '\r']);
    if text.trim().is_empty() {
        return Err(SealError::Empty {
            what: "key",
            hint: "give the client key's PEM",
        });
    }
    Ok(Secret::new(text))
}

/// The first key source given: --key-file, the environment, the config's key file.
fn find_key(key_file: Option<&Path>, config_path: Option<&Path>) -> Result<SealKey, SealError> {
    // A non-UTF-8 value is kept (lossily) so it fails as "not base64" instead of vanishing.
    let env_value =
        std::env::var_os(sealed::KEY_ENV).map(|value| value.to_string_lossy().into_owned());
    let config_key_file = match config_path {
        Some(path) if key_file.is_none() && env_value.is_none() => key_file_from_config(path)?,
        _ => None,
    };
    SealKey::load(key_file.or(config_key_file.as_deref()), env_value)
        .map_err(SealError::Key)?
        .ok_or(SealError::NoKey)
}

fn key_file_from_config(config_path: &Path) -> Result<Option<PathBuf>, SealError> {
    let config = Config::load(config_path).map_err(SealError::Config)?;
    Ok(config.catalog.password_key_file)
}

/// The first line of `input`, without its line ending; empty is an error.
fn read_password(mut input: impl BufRead) -> Result<Secret, SealError> {
    let mut line = String::new();
    input
        .read_line(&mut line)
        .map_err(|error| SealError::Stdin {
            what: "the password",
            error,
        })?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        return Err(SealError::Empty {
            what: "password",
            hint: "give it as the first line",
        });
    }
    Ok(Secret::new(password))
}
