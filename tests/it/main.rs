//! The one integration-test binary. Each module tests one stage against real parts.

mod support;

// Spool: kill -9 safety, the size bound and drop accounting, schema migration.
mod spool;

// Sessions: the supervisor against real Mosquitto brokers (reconcile, outages, auth, shutdown).
mod sessions;
