//! The one integration-test binary. Each module tests one stage against real parts.

mod support;

// Spool: kill -9 safety, the size bound and drop accounting, schema migration.
mod spool;

// Catalog: PostgreSQL reads, NOTIFY and polling, bad rows, the offline snapshot.
mod broker_options;
mod catalog;

// TLS to PostgreSQL: libpq's sslmodes against throw-away clusters, the gateway over verify-full.
mod catalog_tls;

// Drain: delivery to kinesis-local, and faults (throttling, 5xx, cut connections) via a fake.
mod drain;

// AWS credentials (#18): the IoT credentials provider and its refresh, the auto chain's sources.
mod credentials;

// Drain rate figures (opt-in, ignored: run with --release --ignored --nocapture).
mod drain_rate;

// Test fixtures for TLS: the openssl-made PKI and Mosquitto with TLS, mTLS, passwords.
mod fixtures_tls;

// Sessions: the supervisor against real Mosquitto brokers (reconcile, outages, auth, shutdown).
mod sessions;

// The real binary end to end: catalog, brokers, spool, kinesis-local, SIGTERM.
mod gateway;

// A fleet (issue 16): two real gateways, brokers assigned to each, one moved live.
mod fleet;

// Devices (issue 16 part 2): device ids from topics, per-device rows, keys, the tracking bound.
mod devices;

// A full disk (issue 21): the spool on a small tmpfs, filled by the gateway or another program.
mod full_disk;

// The operator's options as the real binary: check, the status table and command, sealed passwords.
mod gateway_options;

// The password-key commands as the real binary: new-key, encrypt-password.
mod cli_sealed;

// Metrics (issue 15): a real Prometheus scraping the gateway, promtool, /health, the textfile, hostile clients.
mod metrics;

// Installing like firmware: systemd notify and watchdog, the unit and sysusers files.
mod systemd;

// The Yocto recipe's crate list against Cargo.lock.
mod yocto;

// The Debian package: lintian, its contents, install/upgrade/purge with dpkg --root.
mod deb;

// The module graph flows one way; checked on the source text.
mod layering;

// Hostile and broken inputs against the real binary, its address space limited.
mod hostile;

// KPL aggregation, de-aggregated by awslabs' independent module.
mod aggregation;
// The fuzz targets' kept corpus and found cases, replayed without libFuzzer (fuzz/harness.rs).
mod fuzz_replay;
