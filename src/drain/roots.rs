//! The certificates the drain trusts for an `https://` Kinesis endpoint.
//!
//! The system's roots (the `ca-certificates` package), as the MQTT sessions
//! use them, so an operator's store and its updates count. An image without
//! any falls back to the roots AWS endpoints chain to (Amazon Root CA 1–4,
//! Starfield Services Root G2), which is enough for Kinesis itself but not for
//! a proxy or a private endpoint with its own CA.
//! Replaces ureq's built-in copy of the whole Mozilla list (about 80 KB).

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use ureq::tls::{Certificate, RootCerts};

/// Amazon Trust Services roots, public certificates copied from Debian's ca-certificates.
const AMAZON_ROOTS: &str = include_str!("amazon-roots.pem");

/// The roots to verify Kinesis with, and where they came from.
pub fn kinesis_roots() -> (RootCerts, &'static str) {
    let system: Vec<Certificate<'static>> = crate::trust::system_root_certs()
        .iter()
        .map(|der| Certificate::from_der(der.as_ref()).to_owned())
        .collect();
    if !system.is_empty() {
        return (RootCerts::Specific(Arc::new(system)), "the system's roots");
    }
    (
        RootCerts::Specific(Arc::new(amazon_roots())),
        "the built-in Amazon roots (no system roots found)",
    )
}

fn amazon_roots() -> Vec<Certificate<'static>> {
    CertificateDer::pem_slice_iter(AMAZON_ROOTS.as_bytes())
        .filter_map(Result::ok)
        .map(|der| Certificate::from_der(der.as_ref()).to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_built_in_amazon_roots_parse() {
        assert_eq!(super::amazon_roots().len(), 5);
    }
}
