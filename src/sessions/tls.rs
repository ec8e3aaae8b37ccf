//! A broker's [`TlsSettings`] → a rustls client config (ring provider).
//!
//! Certificates and keys come as file paths or PEM text; errors say which
//! column and what is wrong, never the key. Without a CA the system's trusted
//! roots are used. `verify_cert = false` accepts any server certificate: it
//! exists for test benches, and every session using it logs a warning.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use crate::catalog::TlsSettings;
use crate::files::ReadError;

/// Why a broker's TLS settings do not make a client config; names the
/// column (`ca_cert`, `client_cert`, `client_key`), never a key's contents.
#[derive(Debug)]
pub enum TlsError {
    /// rustls refused the protocol versions or the client certificate and key.
    Rustls {
        /// `tls`, or `client_cert/client_key`.
        what: &'static str,
        error: rustls::Error,
    },
    /// No `ca_cert` and the system has no trusted roots.
    NoSystemRoots,
    /// A value that is neither PEM text nor a path; not shown (it may be a key).
    NeitherPemNorPath {
        column: &'static str,
        n_chars: usize,
    },
    /// The file a column names cannot be read.
    File {
        column: &'static str,
        path: PathBuf,
        error: ReadError,
    },
    /// PEM that does not parse as certificates.
    NotPem {
        column: &'static str,
        error: rustls::pki_types::pem::Error,
    },
    /// PEM without a certificate in it.
    NoCertificate { column: &'static str },
    /// A `ca_cert` certificate rustls cannot use as a root.
    UnusableCa(rustls::Error),
    /// `client_key` holds no private key.
    NoPrivateKey,
}

impl TlsError {
    /// The column the error concerns; `None` for the system's roots and the protocol versions.
    pub fn column(&self) -> Option<&'static str> {
        match self {
            TlsError::NeitherPemNorPath { column, .. }
            | TlsError::File { column, .. }
            | TlsError::NotPem { column, .. }
            | TlsError::NoCertificate { column } => Some(column),
            TlsError::UnusableCa(_) => Some("ca_cert"),
            TlsError::NoPrivateKey => Some("client_key"),
            TlsError::Rustls { .. } | TlsError::NoSystemRoots => None,
        }
    }
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Rustls { what, error } => write!(f, "{what}: {error}"),
            TlsError::NoSystemRoots => f.write_str(
                "no ca_cert given and no system roots found (install ca-certificates or set ca_cert)",
            ),
            TlsError::NeitherPemNorPath { column, n_chars } => write!(
                f,
                "{column}: neither PEM text nor a file path ({n_chars} characters, not shown)"
            ),
            TlsError::File {
                column,
                path,
                error: ReadError::Io(error),
            } => write!(f, "{column}: cannot read {}: {error}", path.display()),
            TlsError::File {
                column,
                path,
                error,
            } => write!(f, "{column}: {} {error}", path.display()),
            TlsError::NotPem { column, error } => {
                write!(f, "{column}: not PEM certificates: {error}")
            }
            TlsError::NoCertificate { column } => write!(f, "{column}: holds no PEM certificate"),
            TlsError::UnusableCa(error) => write!(f, "ca_cert: unusable certificate: {error}"),
            TlsError::NoPrivateKey => {
                f.write_str("client_key: holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")
            }
        }
    }
}

impl std::error::Error for TlsError {}

/// The client config for `settings`, or why it cannot be built.
pub fn client_config(settings: &TlsSettings) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|error| TlsError::Rustls { what: "tls", error })?;
    let builder = if settings.verify_cert {
        builder.with_root_certificates(roots(settings.ca.as_deref())?)
    } else {
        builder
            .dangerous()
            // Any certificate; the handshake's signatures are still checked.
            .with_custom_certificate_verifier(Arc::new(crate::trust::Verifier {
                provider,
                roots: None,
                check_name: false,
            }))
    };
    let config = match (&settings.client_cert, &settings.client_key) {
        (Some(cert), Some(key)) => {
            let chain = certificates("client_cert", cert)?;
            let key = private_key(key.expose())?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|error| TlsError::Rustls {
                    what: "client_cert/client_key",
                    error,
                })?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

fn roots(ca: Option<&str>) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    match ca {
        Some(ca) => {
            for cert in certificates("ca_cert", ca)? {
                store.add(cert).map_err(TlsError::UnusableCa)?;
            }
        }
        None => return system_roots(),
    }
    Ok(store)
}

/// The system's roots, or what to do when there are none.
fn system_roots() -> Result<RootCertStore, TlsError> {
    let roots = crate::trust::system_roots();
    if roots.is_empty() {
        return Err(TlsError::NoSystemRoots);
    }
    Ok(RootCertStore::clone(&roots))
}

/// PEM text, or the contents of the file it names (a regular file of at most 1 MiB).
fn pem_text(column: &'static str, value: &str) -> Result<Vec<u8>, TlsError> {
    if crate::catalog::is_pem(value) {
        // A byte-order mark would hide the first BEGIN line from the parser.
        return Ok(value.trim_start_matches('\u{feff}').as_bytes().to_vec());
    }
    let path = value.trim();
    if path.len() > 4096 || path.chars().any(char::is_control) {
        // Not a path, and not PEM either: whatever it is, it is not echoed.
        return Err(TlsError::NeitherPemNorPath {
            column,
            n_chars: value.chars().count(),
        });
    }
    crate::files::read_regular(std::path::Path::new(path), crate::files::MAX_PEM_FILE_BYTES)
        .map_err(|error| TlsError::File {
            column,
            path: PathBuf::from(path),
            error,
        })
}

fn certificates(
    column: &'static str,
    value: &str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = pem_text(column, value)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsError::NotPem { column, error })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { column });
    }
    Ok(certs)
}

fn private_key(value: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = pem_text("client_key", value)?;
    // The error of a key parse may quote nothing secret, but say little: keep ours.
    PrivateKeyDer::from_pem_slice(&pem).map_err(|_| TlsError::NoPrivateKey)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    fn settings(ca: Option<&str>, client_key: Option<&str>) -> TlsSettings {
        TlsSettings {
            verify_cert: true,
            ca: ca.map(str::to_owned),
            client_cert: client_key.map(|_| "/nonexistent/cert.pem".to_owned()),
            client_key: client_key.map(Secret::new),
        }
    }

    #[test]
    fn errors_name_the_column_and_never_show_a_key() {
        let error = client_config(&settings(Some("/nonexistent/ca.pem"), None)).unwrap_err();
        assert_eq!(error.column(), Some("ca_cert"));
        assert!(
            matches!(&error, TlsError::File { path, error: ReadError::Io(_), .. } if path.to_str() == Some("/nonexistent/ca.pem")),
            "{error:?}"
        );
        assert!(
            error
                .to_string()
                .starts_with("ca_cert: cannot read /nonexistent/ca.pem: "),
            "{error}"
        );

        let not_a_path = "secret\nkey material";
        let ca = "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n";
        let error = client_config(&settings(Some(ca), Some(not_a_path))).unwrap_err();
        assert!(
            matches!(
                error,
                TlsError::NotPem {
                    column: "ca_cert",
                    ..
                }
            ),
            "{error:?}"
        );

        let error = pem_text("client_key", not_a_path).unwrap_err();
        assert!(
            matches!(
                error,
                TlsError::NeitherPemNorPath {
                    column: "client_key",
                    n_chars: 19
                }
            ),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            "client_key: neither PEM text nor a file path (19 characters, not shown)"
        );
        assert!(matches!(
            private_key("-----BEGIN X-----\n-----END X-----\n"),
            Err(TlsError::NoPrivateKey)
        ));
    }
}
