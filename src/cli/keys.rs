//! `new-key` and `encrypt-password`: the key for sealed catalog values, and
//! sealing one. The secret comes from stdin, never from argv (shell history
//! and `ps` would show it).

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::config::Config;
use crate::sealed::{self, SealKey};
use crate::secret::Secret;

const NO_KEY: &str = "no key: give --key-file FILE, set MKB_PASSWORD_KEY, \
                      or --config FILE whose database.password_key_file is set";

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
fn read_pem(mut input: impl std::io::Read) -> Result<Secret, String> {
    let mut text = String::new();
    input
        .read_to_string(&mut text)
        .map_err(|error| format!("cannot read the key from stdin: {error}"))?;
    let text = text.trim_end_matches(['\n', '\r']);
    if text.trim().is_empty() {
        return Err("no key on stdin: give the client key's PEM".into());
    }
    Ok(Secret::new(text))
}

/// The first key source given: --key-file, the environment, the config's key file.
fn find_key(key_file: Option<&Path>, config_path: Option<&Path>) -> Result<SealKey, String> {
    // A non-UTF-8 value is kept (lossily) so it fails as "not base64" instead of vanishing.
    let env_value =
        std::env::var_os(sealed::KEY_ENV).map(|value| value.to_string_lossy().into_owned());
    let config_key_file = match config_path {
        Some(path) if key_file.is_none() && env_value.is_none() => key_file_from_config(path)?,
        _ => None,
    };
    SealKey::load(key_file.or(config_key_file.as_deref()), env_value)
        .map_err(|error| error.to_string())?
        .ok_or_else(|| NO_KEY.to_owned())
}

fn key_file_from_config(config_path: &Path) -> Result<Option<PathBuf>, String> {
    let config = Config::load(config_path).map_err(|error| error.to_string())?;
    Ok(config.catalog.password_key_file)
}

/// The first line of `input`, without its line ending; empty is an error.
fn read_password(mut input: impl BufRead) -> Result<Secret, String> {
    let mut line = String::new();
    input
        .read_line(&mut line)
        .map_err(|error| format!("cannot read the password from stdin: {error}"))?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        return Err("no password on stdin: give it as the first line".into());
    }
    Ok(Secret::new(password))
}
