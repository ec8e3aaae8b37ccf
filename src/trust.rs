//! The system's trusted roots (the `ca-certificates` package), read once per
//! process for every TLS client the gateway has: brokers without a `ca_cert`,
//! the database with `sslrootcert=system`, and the drain. A few hundred
//! certificates parsed from disk are not worth reading again at every
//! connection attempt; a change to the system's store counts from the next start.

use std::sync::{Arc, OnceLock};

use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;

/// The system's root certificates as found (DER); empty when none are installed.
pub fn system_root_certs() -> &'static [CertificateDer<'static>] {
    static CERTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    CERTS.get_or_init(|| rustls_native_certs::load_native_certs().certs)
}

/// [`system_root_certs`] as a rustls store (those that parse); empty when
/// none are installed (each user says what to do then).
pub fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    Arc::clone(ROOTS.get_or_init(|| {
        let mut store = RootCertStore::empty();
        store.add_parsable_certificates(system_root_certs().iter().cloned());
        Arc::new(store)
    }))
}
