//! A throwaway PKI for TLS tests, made with the `openssl` command line.
//!
//! [`TestPki::new`] writes into a test's own directory (tests run in parallel
//! threads, so nothing is shared):
//!
//! | file                                  | what                                                    |
//! |---------------------------------------|---------------------------------------------------------|
//! | `ca.pem`, `ca.key`                    | the test CA (CA:TRUE, keyCertSign)                      |
//! | `server.pem`, `server.key`            | server cert from the CA, SAN `DNS:localhost, IP:127.0.0.1`, serverAuth |
//! | `client.pem`, `client.key`            | client cert from the CA, CN `gateway-test`, clientAuth  |
//! | `other-ca.pem`, `other-ca.key`        | an unrelated CA, for "unknown issuer" failures          |
//! | `other-client.pem`, `other-client.key`| client cert (CN `gateway-test`) from the *other* CA     |
//!
//! All keys are EC P-256 in PKCS#8 PEM (`BEGIN PRIVATE KEY`); all certs are
//! X.509 v3, SHA-256, valid for 10 days; leaves carry `CA:FALSE`, so rustls /
//! webpki accept them as end-entity certs. `openssl` runs with a minimal
//! config of our own (`openssl.cnf` in the dir), not the system one, so the
//! extensions are exactly the ones listed here. The whole PKI (8 openssl
//! runs) takes about 0.1 s.
//!
//! The directory must outlive any broker using these files: Mosquitto reads
//! them again on [`restart`](super::mosquitto::Mosquitto::restart).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::mosquitto::TlsListener;

const OPENSSL: &str = "/usr/bin/openssl";
const DAYS: &str = "10";

/// A CA, a server cert, a client cert and an unrelated CA with its own client cert.
pub struct TestPki {
    dir: PathBuf,
}

impl TestPki {
    /// Generates every file listed in the module docs into `dir` (which must exist).
    /// Panics with openssl's stderr when a step fails.
    pub fn new(dir: &Path) -> TestPki {
        let pki = TestPki {
            dir: dir.to_path_buf(),
        };
        std::fs::write(
            pki.path("openssl.cnf"),
            "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\n",
        )
        .expect("write openssl.cnf");
        pki.ca("ca", "mqtt-kinesis-bridge test CA");
        pki.ca("other-ca", "unrelated test CA");
        pki.leaf(
            "server",
            "localhost",
            "ca",
            "extendedKeyUsage = serverAuth\nsubjectAltName = DNS:localhost, IP:127.0.0.1\n",
        );
        pki.leaf(
            "client",
            "gateway-test",
            "ca",
            "extendedKeyUsage = clientAuth\n",
        );
        pki.leaf(
            "other-client",
            "gateway-test",
            "other-ca",
            "extendedKeyUsage = clientAuth\n",
        );
        for key in ["ca", "other-ca", "server", "client", "other-client"] {
            let pem = pki.read(&format!("{key}.key"));
            assert!(
                pem.starts_with("-----BEGIN PRIVATE KEY-----"),
                "{key}.key is not PKCS#8 PEM:\n{pem}"
            );
        }
        pki
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `dir/name`, e.g. `path("server.pem")`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The text of `dir/name`, e.g. the PEM of `read("ca.pem")`.
    pub fn read(&self, name: &str) -> String {
        let path = self.path(name);
        std::fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("read {}: {error}", path.display()))
    }

    pub fn ca_pem(&self) -> PathBuf {
        self.path("ca.pem")
    }

    pub fn ca_key(&self) -> PathBuf {
        self.path("ca.key")
    }

    pub fn server_pem(&self) -> PathBuf {
        self.path("server.pem")
    }

    pub fn server_key(&self) -> PathBuf {
        self.path("server.key")
    }

    pub fn client_pem(&self) -> PathBuf {
        self.path("client.pem")
    }

    pub fn client_key(&self) -> PathBuf {
        self.path("client.key")
    }

    pub fn other_ca_pem(&self) -> PathBuf {
        self.path("other-ca.pem")
    }

    pub fn other_client_pem(&self) -> PathBuf {
        self.path("other-client.pem")
    }

    pub fn other_client_key(&self) -> PathBuf {
        self.path("other-client.key")
    }

    /// A Mosquitto TLS listener serving `server.pem`; with `require_client_cert`
    /// it also demands a client cert issued by `ca.pem` (mutual TLS).
    pub fn tls_listener(&self, require_client_cert: bool) -> TlsListener {
        TlsListener {
            cafile: self.ca_pem(),
            certfile: self.server_pem(),
            keyfile: self.server_key(),
            require_client_cert,
        }
    }

    /// A self-signed CA `name.pem` with key `name.key`.
    fn ca(&self, name: &str, cn: &str) {
        self.openssl(
            &format!("make the CA {name}"),
            &[
                "req",
                "-x509",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &self.path_str(&format!("{name}.key")),
                "-out",
                &self.path_str(&format!("{name}.pem")),
                "-days",
                DAYS,
                "-sha256",
                "-subj",
                &format!("/CN={cn}"),
                "-addext",
                "basicConstraints = critical, CA:TRUE",
                "-addext",
                "keyUsage = critical, keyCertSign, cRLSign",
                "-addext",
                "subjectKeyIdentifier = hash",
            ],
        );
    }

    /// A leaf `name.pem`/`name.key` issued by the CA `issuer`, with `extensions`
    /// on top of CA:FALSE, digitalSignature and the key identifiers.
    fn leaf(&self, name: &str, cn: &str, issuer: &str, extensions: &str) {
        let csr = self.path_str(&format!("{name}.csr"));
        let ext = self.path(&format!("{name}.ext"));
        std::fs::write(
            &ext,
            format!(
                "basicConstraints = critical, CA:FALSE\n\
                 keyUsage = critical, digitalSignature\n\
                 subjectKeyIdentifier = hash\n\
                 authorityKeyIdentifier = keyid\n\
                 {extensions}"
            ),
        )
        .expect("write the extensions file");
        self.openssl(
            &format!("make the key and CSR for {name}"),
            &[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &self.path_str(&format!("{name}.key")),
                "-out",
                &csr,
                "-subj",
                &format!("/CN={cn}"),
            ],
        );
        self.openssl(
            &format!("sign {name} with {issuer}"),
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &self.path_str(&format!("{issuer}.pem")),
                "-CAkey",
                &self.path_str(&format!("{issuer}.key")),
                "-CAserial",
                &self.path_str(&format!("{issuer}.srl")),
                "-CAcreateserial",
                "-out",
                &self.path_str(&format!("{name}.pem")),
                "-days",
                DAYS,
                "-sha256",
                "-extfile",
                &ext.to_string_lossy(),
            ],
        );
    }

    fn openssl(&self, step: &str, args: &[&str]) {
        let output = Command::new(OPENSSL)
            .args(args)
            .env("OPENSSL_CONF", self.path("openssl.cnf"))
            .current_dir(&self.dir)
            .output()
            .unwrap_or_else(|error| panic!("test PKI: run {OPENSSL} to {step}: {error}"));
        assert!(
            output.status.success(),
            "test PKI: openssl failed to {step} ({}):\n$ openssl {}\n{}",
            output.status,
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn path_str(&self, name: &str) -> String {
        self.path(name).to_string_lossy().into_owned()
    }
}
