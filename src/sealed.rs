//! Secrets sealed with a key (`enc:v1:`), so the catalog need not hold broker
//! passwords in clear.
//!
//! A sealed value is `enc:v1:` + standard base64 of `nonce(12) || ciphertext || tag(16)`,
//! made with ChaCha20-Poly1305 under a 32-byte key the gateway reads from a file
//! or from `MKB_PASSWORD_KEY`. This module seals, opens and reads keys. It does
//! not decide which catalog values are sealed, does not rotate keys, and does
//! not protect the key in memory beyond never printing it.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

use crate::secret::Secret;

/// What every sealed value starts with.
pub const PREFIX: &str = "enc:v1:";
/// The environment variable that may hold the key, as base64.
pub const KEY_ENV: &str = "MKB_PASSWORD_KEY";

const KEY_LEN: usize = 32;
const TAG_LEN: usize = 16;
/// Binds each value to this format, so it cannot be passed off as another one.
const AAD: &[u8] = b"mqtt-kinesis-bridge enc:v1";

/// Whether `value` is sealed rather than plain text.
pub fn is_sealed(value: &str) -> bool {
    value.starts_with(PREFIX)
}

/// The key that seals and opens secrets. `Debug` prints `SealKey(***)`.
#[derive(Clone)]
pub struct SealKey {
    key: LessSafeKey,
}

impl SealKey {
    /// A key written as base64 of exactly 32 bytes; surrounding whitespace ignored.
    pub fn from_base64(text: &str) -> Result<SealKey, KeyError> {
        from_base64_at(text, KeyOrigin::Text)
    }

    /// Reads the key: from `file` when given (its whole content, base64), else
    /// from `env_value` (the value of `MKB_PASSWORD_KEY`, if set). `Ok(None)`
    /// when neither is given.
    pub fn load(
        file: Option<&Path>,
        env_value: Option<String>,
    ) -> Result<Option<SealKey>, KeyError> {
        if let Some(path) = file {
            return read_key_file(path).map(Some);
        }
        env_value
            .map(|text| from_base64_at(&text, KeyOrigin::Env))
            .transpose()
    }

    /// A new random key, as the base64 text `from_base64` reads.
    pub fn generate() -> String {
        let mut bytes = [0u8; KEY_LEN];
        fill_random(&mut bytes);
        STANDARD.encode(bytes)
    }

    /// `enc:v1:...` for `plaintext`, with a fresh random nonce each time.
    pub fn seal(&self, plaintext: &str) -> String {
        self.seal_bytes(plaintext.as_bytes())
    }

    /// The plaintext of an `enc:v1:` value.
    pub fn open(&self, value: &str) -> Result<Secret, OpenError> {
        let encoded = value.strip_prefix(PREFIX).ok_or(OpenError::NotSealed)?;
        let mut bytes = STANDARD.decode(encoded).map_err(|_| OpenError::NotBase64)?;
        if bytes.len() < NONCE_LEN + TAG_LEN {
            return Err(OpenError::TooShort {
                n_bytes: bytes.len(),
            });
        }
        let (nonce, sealed) = bytes.split_at_mut(NONCE_LEN);
        let nonce =
            Nonce::try_assume_unique_for_key(nonce).map_err(|_| OpenError::Undecryptable)?;
        let plaintext = self
            .key
            .open_in_place(nonce, Aad::from(AAD), sealed)
            .map_err(|_| OpenError::Undecryptable)?;
        let text = std::str::from_utf8(plaintext).map_err(|_| OpenError::NotUtf8)?;
        Ok(Secret::new(text))
    }

    fn seal_bytes(&self, plaintext: &[u8]) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce);
        let mut sealed = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(AAD),
                &mut sealed,
            )
            // Fails only past ChaCha20's length limit (256 GiB), far beyond any secret.
            .expect("a secret is short enough to seal");
        let mut value = nonce.to_vec();
        value.extend_from_slice(&sealed);
        format!("{PREFIX}{}", STANDARD.encode(value))
    }
}

impl fmt::Debug for SealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealKey(***)")
    }
}

/// Where a key came from, so its error can say which one to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOrigin {
    /// Text handed to [`SealKey::from_base64`].
    Text,
    File(PathBuf),
    /// The `MKB_PASSWORD_KEY` environment variable.
    Env,
}

impl fmt::Display for KeyOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyOrigin::Text => f.write_str("key"),
            KeyOrigin::File(path) => write!(f, "key file {}", path.display()),
            KeyOrigin::Env => write!(f, "key in {KEY_ENV}"),
        }
    }
}

/// A key that cannot be used. Never holds the key itself.
#[derive(Debug)]
pub enum KeyError {
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    NotBase64 {
        origin: KeyOrigin,
    },
    WrongLength {
        origin: KeyOrigin,
        n_bytes: usize,
    },
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const HOW: &str = "make one with `mqtt-kinesis-bridge new-key`";
        match self {
            KeyError::Read { path, error } => {
                write!(f, "cannot read key file {}: {error}", path.display())
            }
            // The base64 crate's message quotes the bad character: a piece of the key.
            KeyError::NotBase64 { origin } => {
                write!(f, "{origin} is not base64 of 32 bytes; {HOW}")
            }
            KeyError::WrongLength { origin, n_bytes } => {
                write!(f, "{origin} is {n_bytes} bytes, not 32; {HOW}")
            }
        }
    }
}

impl std::error::Error for KeyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            KeyError::Read { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// `io::Error` has no `PartialEq`: read errors compare by path and error kind.
impl PartialEq for KeyError {
    fn eq(&self, other: &KeyError) -> bool {
        match (self, other) {
            (KeyError::Read { path, error }, KeyError::Read { path: p, error: e }) => {
                path == p && error.kind() == e.kind()
            }
            (KeyError::NotBase64 { origin }, KeyError::NotBase64 { origin: o }) => origin == o,
            (
                KeyError::WrongLength { origin, n_bytes },
                KeyError::WrongLength {
                    origin: o,
                    n_bytes: n,
                },
            ) => origin == o && n_bytes == n,
            _ => false,
        }
    }
}

/// A value that cannot be opened. Never holds the value or its plaintext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenError {
    NotSealed,
    NotBase64,
    TooShort {
        n_bytes: usize,
    },
    /// Authentication failed; ring does not say why.
    Undecryptable,
    /// Authentic, but not text: it was not sealed by [`SealKey::seal`].
    NotUtf8,
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::NotSealed => write!(f, "value does not start with `{PREFIX}`"),
            OpenError::NotBase64 => {
                write!(f, "sealed value is not valid base64 after `{PREFIX}`")
            }
            OpenError::TooShort { n_bytes } => write!(
                f,
                "sealed value is too short: {n_bytes} bytes, at least {} needed",
                NONCE_LEN + TAG_LEN
            ),
            OpenError::Undecryptable => {
                f.write_str("sealed value cannot be decrypted: wrong key or damaged value")
            }
            OpenError::NotUtf8 => {
                f.write_str("sealed value decrypts to bytes that are not UTF-8 text")
            }
        }
    }
}

impl std::error::Error for OpenError {}

fn from_base64_at(text: &str, origin: KeyOrigin) -> Result<SealKey, KeyError> {
    let bytes = STANDARD
        .decode(text.trim())
        .map_err(|_| KeyError::NotBase64 {
            origin: origin.clone(),
        })?;
    if bytes.len() != KEY_LEN {
        return Err(KeyError::WrongLength {
            origin,
            n_bytes: bytes.len(),
        });
    }
    let key = UnboundKey::new(&CHACHA20_POLY1305, &bytes).expect("32 bytes is a ChaCha20 key");
    Ok(SealKey {
        key: LessSafeKey::new(key),
    })
}

fn read_key_file(path: &Path) -> Result<SealKey, KeyError> {
    let bytes = std::fs::read(path).map_err(|error| KeyError::Read {
        path: path.to_owned(),
        error,
    })?;
    warn_if_open_to_others(path);
    // Bytes that are not UTF-8 become U+FFFD, which then fails as "not base64".
    from_base64_at(
        &String::from_utf8_lossy(&bytes),
        KeyOrigin::File(path.to_owned()),
    )
}

/// Only a warning: refusing would stop a gateway over a chmod, and the
/// operator may have reasons (a group the service user belongs to).
fn warn_if_open_to_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(metadata) = std::fs::metadata(path) else {
        return;
    };
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        log::warn!(
            "key file {} is open to group or others (mode {mode:o}); chmod 600 it",
            path.display()
        );
    }
}

fn fill_random(bytes: &mut [u8]) {
    // The OS generator failing leaves no safe way to make a key or nonce.
    SystemRandom::new()
        .fill(bytes)
        .expect("the operating system's random number generator failed");
}

#[cfg(test)]
mod tests;
