//! A fresh PostgreSQL database per test, with the catalog tables, dropped on drop.
//!
//! Uses the machine's server at 127.0.0.1:5432 (trust auth, user postgres).

use std::sync::atomic::{AtomicUsize, Ordering};

use postgres::{Client, NoTls};

const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

pub struct TestDb {
    name: String,
}

impl TestDb {
    /// Creates `mkb_test_<pid>_<n>` and applies every `buffer-schema/catalog/*.sql`.
    pub fn new() -> TestDb {
        let db = TestDb::seed_only();
        let mut client = db.client();
        for sql in [
            include_str!("../../../buffer-schema/catalog/0003_broker_options.sql"),
            include_str!("../../../buffer-schema/catalog/0004_connection_status.sql"),
            include_str!("../../../buffer-schema/catalog/0005_clock_offset.sql"),
            include_str!("../../../buffer-schema/catalog/0006_broker_gateway.sql"),
            include_str!("../../../buffer-schema/catalog/0007_devices.sql"),
        ] {
            client.batch_execute(sql).expect("apply catalog schema");
        }
        db
    }

    /// Only the seed tables and triggers (0001, 0002): no option columns, no status table.
    pub fn seed_only() -> TestDb {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("mkb_test_{}_{n}", std::process::id());
        let mut admin = Client::connect(ADMIN_URL, NoTls).expect("PostgreSQL at 127.0.0.1:5432");
        // One statement per call: DROP/CREATE DATABASE refuse to run in a batch.
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .and_then(|()| admin.batch_execute(&format!("CREATE DATABASE {name}")))
            .expect("create test database");
        let db = TestDb { name };
        let mut client = db.client();
        for sql in [
            include_str!("../../../buffer-schema/catalog/0001_iot_data.sql"),
            include_str!("../../../buffer-schema/catalog/0002_notify_trigger.sql"),
        ] {
            client.batch_execute(sql).expect("apply catalog schema");
        }
        db
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:5432/{}", self.name)
    }

    pub fn client(&self) -> Client {
        Client::connect(&self.url(), NoTls).expect("connect to test database")
    }

    /// Runs SQL statements against the test database.
    pub fn execute(&self, sql: &str) {
        self.client()
            .batch_execute(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Inserts an active broker with no credentials.
    pub fn add_broker(&self, mqtt_id: i32, port: u16) {
        self.execute(&format!(
            "INSERT INTO iot_data.mqtt_broker (mqtt_id, mqtt_host, mqtt_port, status) \
             VALUES ({mqtt_id}, '127.0.0.1', {port}, TRUE)"
        ));
    }

    /// Inserts an active topic; `mqtt_id = None` applies it to every broker.
    pub fn add_topic(&self, mqtt_id: Option<i32>, filter: &str, qos: i16) {
        let mqtt_id = mqtt_id.map_or("NULL".to_owned(), |id| id.to_string());
        self.execute(&format!(
            "INSERT INTO iot_data.mqtt_topic (mqtt_id, topic, qos, status) \
             VALUES ({mqtt_id}, '{filter}', {qos}, TRUE)"
        ));
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut admin) = Client::connect(ADMIN_URL, NoTls) {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}
