//! Secrets sealed with a key, so the catalog need not hold broker passwords
//! or client keys in clear.
//!
//! A sealed value is a prefix + standard base64 of `nonce(12) || ciphertext || tag(16)`,
//! made with ChaCha20-Poly1305 under a 32-byte key the gateway reads from a file
//! or from `MKB_PASSWORD_KEY`.
//! - `enc:v2:` binds the value to where it belongs: the associated data names
//!   the broker's `mqtt_id` and the column, so a value copied into another row
//!   (one pointing at a host an attacker controls) or another column does not open.
//! - `enc:v1:` (the first format) is bound to nothing; it still opens, and the
//!   catalog warns that it should be sealed again.
//!
//! This module seals, opens and reads keys. It does not decide which catalog
//! values are sealed, does not rotate keys, and does not protect the key in
//! memory beyond never printing it.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

use crate::ids::BrokerId;
use crate::secret::Secret;

/// What every value sealed in the first format starts with.
pub const PREFIX: &str = "enc:v1:";
/// What every value bound to its row and column starts with.
pub const PREFIX_V2: &str = "enc:v2:";
/// The environment variable that may hold the key, as base64.
pub const KEY_ENV: &str = "MKB_PASSWORD_KEY";
/// Set to `1`, a key file group or others can read is used (with a warning)
/// instead of refused.
pub const ALLOW_OPEN_KEY_FILE_ENV: &str = "MKB_ALLOW_OPEN_KEY_FILE";
/// A key file is 45 bytes; anything much larger is not one (and is not read whole).
const MAX_KEY_FILE_BYTES: u64 = 4096;
/// The columns a sealed value can belong to.
pub const COLUMNS: [&str; 2] = ["mqtt_password", "client_key"];

const KEY_LEN: usize = 32;
const TAG_LEN: usize = 16;
/// Binds each v1 value to its format, so it cannot be passed off as another one.
const AAD: &[u8] = b"mqtt-kinesis-bridge enc:v1";

/// Where a v2 value belongs: this broker's row, this column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Binding<'a> {
    pub broker_id: BrokerId,
    /// `mqtt_password` or `client_key`.
    pub column: &'a str,
}

impl Binding<'_> {
    /// The associated data: format, row and column, each unambiguous (the
    /// id is a number, the column one of [`COLUMNS`]).
    fn aad(&self) -> String {
        format!(
            "mqtt-kinesis-bridge enc:v2 mqtt_broker.mqtt_id={} column={}",
            self.broker_id, self.column
        )
    }
}

/// Which format a value was sealed in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `enc:v1:`: not bound to a row; should be sealed again.
    V1,
    /// `enc:v2:`: bound to its row and column.
    V2,
}

/// Whether `value` is sealed (in either format) rather than plain text.
pub fn is_sealed(value: &str) -> bool {
    value.starts_with(PREFIX) || value.starts_with(PREFIX_V2)
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

    /// `enc:v1:...` for `plaintext`, with a fresh random nonce each time:
    /// bound to no row (`encrypt-password --v1`).
    pub fn seal(&self, plaintext: &str) -> String {
        self.seal_with(PREFIX, AAD, plaintext.as_bytes())
    }

    /// `enc:v2:...` for `plaintext`, opening only for `binding`.
    pub fn seal_for(&self, plaintext: &str, binding: Binding<'_>) -> String {
        self.seal_with(PREFIX_V2, binding.aad().as_bytes(), plaintext.as_bytes())
    }

    /// The plaintext of an `enc:v1:` value.
    pub fn open(&self, value: &str) -> Result<Secret, OpenError> {
        self.open_with(PREFIX, AAD, value)
            .map_err(|error| error.unless_v2(value))
    }

    /// The plaintext of a value sealed for `binding` (`enc:v2:`), or of an
    /// `enc:v1:` value (bound to nothing), with the format it was in.
    pub fn open_for(
        &self,
        value: &str,
        binding: Binding<'_>,
    ) -> Result<(Secret, Format), OpenError> {
        if value.starts_with(PREFIX) {
            return self.open(value).map(|secret| (secret, Format::V1));
        }
        let secret = self
            .open_with(PREFIX_V2, binding.aad().as_bytes(), value)
            .map_err(|error| match error {
                OpenError::Undecryptable => OpenError::NotForHere,
                other => other,
            })?;
        Ok((secret, Format::V2))
    }

    fn open_with(&self, prefix: &str, aad: &[u8], value: &str) -> Result<Secret, OpenError> {
        let encoded = value.strip_prefix(prefix).ok_or(OpenError::NotSealed)?;
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
            .open_in_place(nonce, Aad::from(aad), sealed)
            .map_err(|_| OpenError::Undecryptable)?;
        let text = std::str::from_utf8(plaintext).map_err(|_| OpenError::NotUtf8)?;
        Ok(Secret::new(text))
    }

    fn seal_with(&self, prefix: &str, aad: &[u8], plaintext: &[u8]) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce);
        let mut sealed = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut sealed,
            )
            // Fails only past ChaCha20's length limit (256 GiB), far beyond any secret.
            .expect("a secret is short enough to seal");
        let mut value = nonce.to_vec();
        value.extend_from_slice(&sealed);
        format!("{prefix}{}", STANDARD.encode(value))
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
    /// Not a regular file of at most `MAX_KEY_FILE_BYTES`.
    NotAKeyFile {
        path: PathBuf,
        what: String,
    },
    /// Group or others may read it, and the override is not set.
    OpenToOthers {
        path: PathBuf,
        mode: u32,
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
            KeyError::NotAKeyFile { path, what } => {
                write!(f, "key file {} {what}; {HOW}", path.display())
            }
            KeyError::OpenToOthers { path, mode } => write!(
                f,
                "key file {} is readable by group or others (mode {mode:o}): chmod 600 it \
                 (or set {ALLOW_OPEN_KEY_FILE_ENV}=1 to use it anyway)",
                path.display()
            ),
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
            (KeyError::NotAKeyFile { path, what }, KeyError::NotAKeyFile { path: p, what: w }) => {
                path == p && what == w
            }
            (
                KeyError::OpenToOthers { path, mode },
                KeyError::OpenToOthers { path: p, mode: m },
            ) => path == p && mode == m,
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
    /// An `enc:v2:` value that does not open here: the wrong key, damaged,
    /// or sealed for another row or column.
    NotForHere,
    /// An `enc:v2:` value where only `enc:v1:` can be opened (no row to bind to).
    NeedsRow,
    /// Authentic, but not text: it was not sealed by [`SealKey::seal`].
    NotUtf8,
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::NotSealed => {
                write!(f, "value does not start with `{PREFIX}` or `{PREFIX_V2}`")
            }
            OpenError::NotBase64 => {
                f.write_str("sealed value is not valid base64 after its prefix")
            }
            OpenError::TooShort { n_bytes } => write!(
                f,
                "sealed value is too short: {n_bytes} bytes, at least {} needed",
                NONCE_LEN + TAG_LEN
            ),
            OpenError::Undecryptable => {
                f.write_str("sealed value cannot be decrypted: wrong key or damaged value")
            }
            OpenError::NotForHere => f.write_str(
                "sealed value (enc:v2) cannot be decrypted here: wrong key, damaged value, \
                 or sealed for another broker row or column",
            ),
            OpenError::NeedsRow => {
                f.write_str("an enc:v2 value opens only in the row and column it was sealed for")
            }
            OpenError::NotUtf8 => {
                f.write_str("sealed value decrypts to bytes that are not UTF-8 text")
            }
        }
    }
}

impl std::error::Error for OpenError {}

impl OpenError {
    /// `NotSealed` from [`SealKey::open`] for a v2 value says what is wrong.
    fn unless_v2(self, value: &str) -> OpenError {
        match self {
            OpenError::NotSealed if value.starts_with(PREFIX_V2) => OpenError::NeedsRow,
            other => other,
        }
    }
}

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

/// Reads a key file: a regular file (a FIFO or device would hang or never
/// end), small, and private unless [`ALLOW_OPEN_KEY_FILE_ENV`] says otherwise.
fn read_key_file(path: &Path) -> Result<SealKey, KeyError> {
    use crate::files::{read_regular, ReadError};
    use std::os::unix::fs::PermissionsExt;
    let read_error = |error| KeyError::Read {
        path: path.to_owned(),
        error,
    };
    let not_a_key_file = |what: String| KeyError::NotAKeyFile {
        path: path.to_owned(),
        what,
    };
    let bytes = read_regular(path, MAX_KEY_FILE_BYTES).map_err(|error| match error {
        ReadError::Io(error) => read_error(error),
        ReadError::NotRegular(_) => not_a_key_file("is not a regular file".into()),
        ReadError::TooLarge { n_bytes, .. } => not_a_key_file(format!(
            "is {n_bytes} bytes, not a key (base64 of 32 bytes)"
        )),
    })?;
    let mode = std::fs::metadata(path)
        .map_err(read_error)?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        let allowed = std::env::var(ALLOW_OPEN_KEY_FILE_ENV).is_ok_and(|value| value == "1");
        let error = KeyError::OpenToOthers {
            path: path.to_owned(),
            mode,
        };
        if !allowed {
            return Err(error);
        }
        log::warn!("{error}");
    }
    // Bytes that are not UTF-8 become U+FFFD, which then fails as "not base64".
    from_base64_at(
        &String::from_utf8_lossy(&bytes),
        KeyOrigin::File(path.to_owned()),
    )
}

fn fill_random(bytes: &mut [u8]) {
    // The OS generator failing leaves no safe way to make a key or nonce.
    SystemRandom::new()
        .fill(bytes)
        .expect("the operating system's random number generator failed");
}

#[cfg(test)]
mod tests;
