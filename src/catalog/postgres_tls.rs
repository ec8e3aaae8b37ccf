//! TLS under tokio-postgres: rustls with the ring provider, over tokio-rustls.
//!
//! [`Connector`] is the `MakeTlsConnect` the catalog connects with. It builds
//! nothing per connection but the handshake, and it records how far a
//! connection got ([`Progress`]), so the caller can tell a certificate problem
//! from an unreachable server and can say which TLS version was agreed.
//! The certificate checks are libpq's ([`Verify`]); the system's roots are
//! loaded once per process. What it does not do: channel binding (SCRAM's
//! `-PLUS` variant) is not offered, so `channel_binding=require` fails;
//! `verify-full` is what stops a man in the middle.

use std::fmt;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};

use postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use postgres::Socket;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ProtocolVersion, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::database_url::{RootCert, TlsParams, Verify};
use crate::files::ReadError;

/// How far the last connection attempt got, as the connector saw it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Progress {
    /// No TCP connection was made (tokio-postgres asks for a connector only after one).
    #[default]
    NotConnected,
    /// Connected; no handshake (yet, or the server declined TLS, or none was asked for).
    Connected,
    /// The handshake failed: rustls's reason (a certificate, a name, a protocol).
    HandshakeFailed(String),
    /// The handshake succeeded with this protocol version (`TLSv1.3`).
    Encrypted(&'static str),
}

/// The `MakeTlsConnect` for one connection attempt.
#[derive(Clone)]
pub struct Connector {
    /// `None`: for an unencrypted attempt, which only wants the progress.
    config: Option<Arc<ClientConfig>>,
    progress: Arc<Mutex<Progress>>,
}

impl Connector {
    /// A connector for `tls`: reads `sslrootcert`, `sslcert` and `sslkey`
    /// now, so a rotated file counts from the next connection on.
    pub fn new(tls: &TlsParams) -> Result<Connector, DbTlsError> {
        Ok(Connector {
            config: Some(client_config(tls)?),
            progress: Arc::default(),
        })
    }

    /// A connector that never encrypts: tokio-postgres asks for one even with
    /// `sslmode=disable`, and its progress says whether the server was reached.
    pub fn unencrypted() -> Connector {
        Connector {
            config: None,
            progress: Arc::default(),
        }
    }

    /// What the connections made with this connector got to, the last one counting.
    pub fn progress(&self) -> Progress {
        self.progress
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn set_progress(progress: &Mutex<Progress>, value: Progress) {
        *progress
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = value;
    }
}

impl MakeTlsConnect<Socket> for Connector {
    type Stream = Stream;
    type TlsConnect = Handshake;
    type Error = io::Error;

    fn make_tls_connect(&mut self, host: &str) -> Result<Handshake, io::Error> {
        Connector::set_progress(&self.progress, Progress::Connected);
        Ok(Handshake {
            config: self.config.clone(),
            // Checked when a handshake is made: an unencrypted attempt needs none.
            server_name: ServerName::try_from(host.to_owned()).ok(),
            progress: Arc::clone(&self.progress),
        })
    }
}

/// One TLS handshake over a connected socket.
pub struct Handshake {
    config: Option<Arc<ClientConfig>>,
    server_name: Option<ServerName<'static>>,
    progress: Arc<Mutex<Progress>>,
}

impl TlsConnect<Socket> for Handshake {
    type Stream = Stream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Stream>> + Send>>;

    fn connect(self, socket: Socket) -> Self::Future {
        Box::pin(async move {
            let (Some(config), Some(server_name)) = (self.config, self.server_name) else {
                let error = io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "no host name or IP address a certificate can name",
                );
                Connector::set_progress(
                    &self.progress,
                    Progress::HandshakeFailed(error.to_string()),
                );
                return Err(error);
            };
            let connector = tokio_rustls::TlsConnector::from(config);
            match connector.connect(server_name, socket).await {
                Ok(stream) => {
                    let version = match stream.get_ref().1.protocol_version() {
                        Some(ProtocolVersion::TLSv1_3) => "TLSv1.3",
                        Some(ProtocolVersion::TLSv1_2) => "TLSv1.2",
                        _ => "TLS",
                    };
                    Connector::set_progress(&self.progress, Progress::Encrypted(version));
                    Ok(Stream(stream))
                }
                Err(error) => {
                    Connector::set_progress(
                        &self.progress,
                        Progress::HandshakeFailed(error.to_string()),
                    );
                    Err(error)
                }
            }
        })
    }
}

/// The encrypted stream tokio-postgres reads and writes.
pub struct Stream(tokio_rustls::client::TlsStream<Socket>);

impl TlsStream for Stream {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// ring, built once.
fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    Arc::clone(PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())))
}

/// Why the TLS settings of `database.url` do not make a client config; names
/// the parameter (`sslrootcert`, `sslcert`, `sslkey`) and its file.
#[derive(Debug)]
pub enum DbTlsError {
    /// `sslrootcert=system` and the system has no trusted roots.
    NoSystemRoots,
    /// A verifying `sslmode` without `sslrootcert`.
    NoRootCert,
    /// rustls refused the protocol versions (`what`: `tls`) or the client
    /// certificate and key (`database.url sslcert/sslkey`).
    Rustls {
        what: &'static str,
        error: rustls::Error,
    },
    /// A parameter's file cannot be read (or, for `sslkey`, looked at).
    File {
        param: &'static str,
        path: PathBuf,
        error: ReadError,
    },
    /// A parameter's file that does not parse as PEM certificates.
    NotPem {
        param: &'static str,
        path: PathBuf,
        error: rustls::pki_types::pem::Error,
    },
    /// A parameter's file without a certificate.
    NoCertificate { param: &'static str, path: PathBuf },
    /// An `sslrootcert` certificate rustls cannot use as a root.
    UnusableRoot { path: PathBuf, error: rustls::Error },
    /// The `sslkey` file is readable by others (`mode`: its permission bits).
    KeyTooOpen { path: PathBuf, mode: u32 },
    /// The `sslkey` file holds no private key.
    NoPrivateKey { path: PathBuf },
}

impl fmt::Display for DbTlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbTlsError::NoSystemRoots => f.write_str(
                "database.url sslrootcert=system: no system roots found (install ca-certificates or name a CA file)",
            ),
            DbTlsError::NoRootCert => {
                f.write_str("database.url: no sslrootcert to verify the server with")
            }
            DbTlsError::Rustls { what, error } => write!(f, "{what}: {error}"),
            DbTlsError::File { param, path, error } => {
                write!(f, "database.url {param} {}: {error}", path.display())
            }
            DbTlsError::NotPem { param, path, error } => write!(
                f,
                "database.url {param} {}: not PEM certificates: {error}",
                path.display()
            ),
            DbTlsError::NoCertificate { param, path } => write!(
                f,
                "database.url {param} {}: holds no PEM certificate",
                path.display()
            ),
            DbTlsError::UnusableRoot { path, error } => write!(
                f,
                "database.url sslrootcert {}: unusable certificate: {error}",
                path.display()
            ),
            DbTlsError::KeyTooOpen { path, mode } => write!(
                f,
                "database.url sslkey {}: mode {mode:o} lets others read the key; \
                 make it 0600 (or 0640 if owned by root)",
                path.display()
            ),
            DbTlsError::NoPrivateKey { path } => write!(
                f,
                "database.url sslkey {}: holds no PEM private key (PKCS#8, PKCS#1 or SEC1)",
                path.display()
            ),
        }
    }
}

impl std::error::Error for DbTlsError {}

fn client_config(tls: &TlsParams) -> Result<Arc<ClientConfig>, DbTlsError> {
    let provider = provider();
    let verify = tls.verify();
    let roots = match (&tls.root_cert, verify) {
        (_, Verify::Nothing) => None,
        (Some(RootCert::System), _) => {
            let roots = crate::trust::system_roots();
            if roots.is_empty() {
                return Err(DbTlsError::NoSystemRoots);
            }
            Some(roots)
        }
        (Some(RootCert::File(path)), _) => {
            let mut store = RootCertStore::empty();
            for cert in certificates("sslrootcert", path)? {
                store.add(cert).map_err(|error| DbTlsError::UnusableRoot {
                    path: path.clone(),
                    error,
                })?;
            }
            Some(Arc::new(store))
        }
        // DatabaseUrl::parse refuses verify-ca and verify-full without sslrootcert.
        (None, _) => return Err(DbTlsError::NoRootCert),
    };
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|error| DbTlsError::Rustls { what: "tls", error })?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(crate::trust::Verifier {
            provider,
            roots,
            check_name: verify == Verify::ChainAndName,
        }));
    let mut config = match &tls.client_cert {
        None => builder.with_no_client_auth(),
        Some((cert_path, key_path)) => {
            let chain = certificates("sslcert", cert_path)?;
            let key = private_key(key_path)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|error| DbTlsError::Rustls {
                    what: "database.url sslcert/sslkey",
                    error,
                })?
        }
    };
    // As libpq 17 sends it; servers before 17 ignore it.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(Arc::new(config))
}

fn certificates(
    param: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, DbTlsError> {
    let pem = read_pem_file(path).map_err(|error| DbTlsError::File {
        param,
        path: path.to_owned(),
        error,
    })?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| DbTlsError::NotPem {
            param,
            path: path.to_owned(),
            error,
        })?;
    if certs.is_empty() {
        return Err(DbTlsError::NoCertificate {
            param,
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// A certificate or key file: regular, at most 1 MiB (as the brokers' are).
fn read_pem_file(path: &Path) -> Result<Vec<u8>, crate::files::ReadError> {
    crate::files::read_regular(path, crate::files::MAX_PEM_FILE_BYTES)
}

/// The client key: refused, as libpq does, when others may read it.
fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, DbTlsError> {
    use std::os::unix::fs::MetadataExt;

    let unreadable = |error| DbTlsError::File {
        param: "sslkey",
        path: path.to_owned(),
        error,
    };
    let metadata = std::fs::metadata(path).map_err(|error| unreadable(ReadError::Io(error)))?;
    let mode = metadata.mode() & 0o777;
    let too_open = if metadata.uid() == 0 {
        mode & 0o037 != 0
    } else {
        mode & 0o077 != 0
    };
    if too_open {
        return Err(DbTlsError::KeyTooOpen {
            path: path.to_owned(),
            mode,
        });
    }
    let pem = read_pem_file(path).map_err(unreadable)?;
    // The parse error could quote nothing secret, but says little: keep ours.
    PrivateKeyDer::from_pem_slice(&pem).map_err(|_| DbTlsError::NoPrivateKey {
        path: path.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn errors_name_the_parameter_and_its_file() {
        let dir = std::env::temp_dir().join(format!("mkb-pg-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("client.key");
        std::fs::write(&key, "not a key").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = private_key(&key).unwrap_err();
        assert!(
            matches!(&error, DbTlsError::KeyTooOpen { path, mode: 0o644 } if *path == key),
            "{error:?}"
        );
        assert!(error
            .to_string()
            .contains("mode 644 lets others read the key"));
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            private_key(&key),
            Err(DbTlsError::NoPrivateKey { .. })
        ));

        let missing = dir.join("missing.pem");
        let error = certificates("sslrootcert", &missing).unwrap_err();
        assert!(
            matches!(
                &error,
                DbTlsError::File {
                    param: "sslrootcert",
                    error: ReadError::Io(_),
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(error
            .to_string()
            .starts_with(&format!("database.url sslrootcert {}: ", missing.display())));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
