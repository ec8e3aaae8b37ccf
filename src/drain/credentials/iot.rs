//! The AWS IoT credentials provider (`kinesis.credentials = "iot"`): the
//! gateway's X.509 device certificate (mutual TLS) buys temporary credentials
//! for the IAM role behind a role alias, as Greengrass's token exchange does.
//!
//! `GET https://{endpoint}/role-aliases/{role_alias}/credentials` with
//! `x-amzn-iot-thingname: {thing_name}` answers
//! `{"credentials": {"accessKeyId", "secretAccessKey", "sessionToken", "expiration"}}`.
//! The expiration is compared with the answer's own `Date` (AWS's clock), so a
//! gateway whose clock is off does not take fresh credentials for expired
//! ones. No long-lived key leaves the device: a stolen SD card holds a
//! certificate that can be revoked in AWS IoT.
//! One fetch per call; when to fetch again is [`crate::drain::refresher`]'s business.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts};

use super::document;
use super::remote::{agent, Answer};
use super::{Credentials, CredentialsError};
use crate::config::IotConfig;
use crate::drain::roots;

/// Per request: the whole exchange, TLS handshake included.
const TIMEOUT: Duration = Duration::from_secs(10);

/// A configured IoT credentials provider: the TLS client, ready to fetch.
pub struct IotProvider {
    agent: ureq::Agent,
    /// `https://{endpoint}/role-aliases/{alias}/credentials`.
    url: String,
    thing_name: String,
    source: String,
    /// The certificate file or "the PEM in kinesis.iot.cert", for hints.
    cert_label: String,
}

impl IotProvider {
    /// The client for `config`; an error naming the config key when the
    /// certificate, key or CA do not parse.
    pub fn new(config: &IotConfig) -> Result<IotProvider, CredentialsError> {
        let unusable = |key, problem| CredentialsError::IotPem { key, problem };
        let chain = certificates(&config.cert_pem)
            .map_err(|problem| unusable("kinesis.iot.cert", problem))?;
        let key = PrivateKey::from_pem(config.key_pem.expose().as_bytes())
            .map_err(|_| unusable("kinesis.iot.key", PemProblem::NoPrivateKey))?;
        let roots = match &config.ca_pem {
            Some(ca) => RootCerts::Specific(Arc::new(
                certificates(ca).map_err(|problem| unusable("kinesis.iot.ca", problem))?,
            )),
            None => roots::kinesis_roots().0,
        };
        let tls = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::Rustls)
            .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .root_certs(roots)
            .client_cert(Some(ClientCert::new_with_certs(&chain, key)))
            .build();
        Ok(IotProvider {
            agent: agent(TIMEOUT, Some(tls)),
            url: format!(
                "{}/role-aliases/{}/credentials",
                config.endpoint.trim_end_matches('/'),
                config.role_alias
            ),
            thing_name: config.thing_name.clone(),
            source: format!("iot credentials provider, role alias {}", config.role_alias),
            cert_label: config.cert_label.clone(),
        })
    }

    /// `iot credentials provider, role alias X`.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// One fetch; `aws_offset_ms` is used only when the answer has no `Date`.
    pub fn fetch(&self, aws_offset_ms: i64) -> Result<Credentials, CredentialsError> {
        let failed = |detail: String| CredentialsError::Source {
            source: self.source.clone(),
            detail,
        };
        let answer = self
            .agent
            .get(&self.url)
            .header("x-amzn-iot-thingname", &self.thing_name)
            .call()
            .and_then(Answer::read)
            .map_err(|error| {
                let text = error.to_string();
                let hint = if text.contains("alert")
                    || text.contains("certificate")
                    || text.contains("Certificate")
                    || text.contains("tls")
                {
                    format!(
                        " (is the client certificate {} registered with AWS IoT, active, and \
                         signed by a CA the endpoint trusts?)",
                        self.cert_label
                    )
                } else {
                    String::new()
                };
                failed(format!("no answer from {}: {text}{hint}", self.url))
            })?;
        if answer.status != 200 {
            return Err(failed(format!(
                "HTTP {} for thing {}: {}",
                answer.status,
                self.thing_name,
                answer.excerpt()
            )));
        }
        answer.credentials(document::parse_iot, &self.source, aws_offset_ms)
    }
}

/// Why the PEM of a `kinesis.iot` key is unusable; never quotes the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PemProblem {
    /// The PEM parser's reason (it names a section or base64, not the contents).
    Unreadable {
        reason: String,
    },
    NoCertificate,
    NoPrivateKey,
}

impl fmt::Display for PemProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PemProblem::Unreadable { reason } => write!(f, "unreadable PEM: {reason}"),
            PemProblem::NoCertificate => f.write_str("no certificate in it"),
            PemProblem::NoPrivateKey => f.write_str("no usable private key in it"),
        }
    }
}

/// Every certificate in `pem`; an error when there is none.
pub fn certificates(pem: &str) -> Result<Vec<Certificate<'static>>, PemProblem> {
    let chain: Vec<Certificate<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|der| {
            der.map(|der| Certificate::from_der(der.as_ref()).to_owned())
                .map_err(|error| PemProblem::Unreadable {
                    reason: error.to_string(),
                })
        })
        .collect::<Result<_, _>>()?;
    if chain.is_empty() {
        return Err(PemProblem::NoCertificate);
    }
    Ok(chain)
}
