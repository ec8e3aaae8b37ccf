//! A broker's [`TlsSettings`] → a rustls client config (ring provider).
//!
//! Certificates and keys come as file paths or PEM text; errors say which
//! column and what is wrong, never the key. Without a CA the system's trusted
//! roots are used. `verify_cert = false` accepts any server certificate: it
//! exists for test benches, and every session using it logs a warning.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use crate::catalog::TlsSettings;

/// The client config for `settings`, or why it cannot be built.
pub fn client_config(settings: &TlsSettings) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?;
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
                .map_err(|e| format!("client_cert/client_key: {e}"))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

fn roots(ca: Option<&str>) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    match ca {
        Some(ca) => {
            for cert in certificates("ca_cert", ca)? {
                store
                    .add(cert)
                    .map_err(|e| format!("ca_cert: unusable certificate: {e}"))?;
            }
        }
        None => return system_roots(),
    }
    Ok(store)
}

/// The system's roots, or what to do when there are none.
fn system_roots() -> Result<RootCertStore, String> {
    let roots = crate::trust::system_roots();
    if roots.is_empty() {
        return Err(
            "no ca_cert given and no system roots found (install ca-certificates or set ca_cert)"
                .into(),
        );
    }
    Ok(RootCertStore::clone(&roots))
}

/// PEM text, or the contents of the file it names (a regular file of at most 1 MiB).
fn pem_text(column: &str, value: &str) -> Result<Vec<u8>, String> {
    if crate::catalog::is_pem(value) {
        // A byte-order mark would hide the first BEGIN line from the parser.
        return Ok(value.trim_start_matches('\u{feff}').as_bytes().to_vec());
    }
    let path = value.trim();
    if path.len() > 4096 || path.chars().any(char::is_control) {
        // Not a path, and not PEM either: whatever it is, it is not echoed.
        return Err(format!(
            "{column}: neither PEM text nor a file path ({} characters, not shown)",
            value.chars().count()
        ));
    }
    crate::files::read_regular(std::path::Path::new(path), crate::files::MAX_PEM_FILE_BYTES)
        .map_err(|error| match error {
            crate::files::ReadError::Io(error) => format!("{column}: cannot read {path}: {error}"),
            other => format!("{column}: {path} {other}"),
        })
}

fn certificates(column: &str, value: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = pem_text(column, value)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{column}: not PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{column}: holds no PEM certificate"));
    }
    Ok(certs)
}

fn private_key(value: &str) -> Result<PrivateKeyDer<'static>, String> {
    let pem = pem_text("client_key", value)?;
    // The error of a key parse may quote nothing secret, but say little: keep ours.
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|_| "client_key: holds no PEM private key (PKCS#8, PKCS#1 or SEC1)".to_owned())
}
