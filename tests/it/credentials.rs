//! AWS credentials (#18): the IoT credentials provider (mutual TLS, refresh
//! before expiry, outages, expired keys), the `auto` chain's sources
//! (credential_process, container endpoint, IMDSv2) and their order, and what
//! `check` and `status` say. Every source is a local stand-in speaking the
//! real protocol (support/http_stub.rs); the Kinesis fake checks each
//! request's signature with the secret that was served for its key id.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use mqtt_kinesis_bridge::config::{CredentialsConfig, IotConfig, RecordFormat};
use mqtt_kinesis_bridge::drain::{self, credentials};
use mqtt_kinesis_bridge::sealed::SealKey;
use mqtt_kinesis_bridge::secret::Secret;
use mqtt_kinesis_bridge::shutdown::Shutdown;
use serde_json::Value;

use crate::drain::{append_all, counts, kinesis_config, new_record, open_spool, stop};
use crate::gateway::Gateway;
use crate::support::http_stub::{container_stand_in, imds_stand_in, iso8601, IotMode, IotStandIn};
use crate::support::kinesis::{FakeKinesis, KeyRing};
use crate::support::mosquitto::{publish, Mosquitto};
use crate::support::postgres::TestDb;
use crate::support::tls::TestPki;
use crate::support::*;

const ROLE_ALIAS: &str = "gw-kinesis";
const DEADLINE: Duration = Duration::from_secs(60);

/// `[kinesis.iot]` for the stand-in at `url`, with the PKI's client certificate.
fn iot_config(pki: &TestPki, url: &str) -> CredentialsConfig {
    CredentialsConfig::Iot(IotConfig {
        endpoint: url.to_owned(),
        role_alias: ROLE_ALIAS.to_owned(),
        thing_name: "it-thing".to_owned(),
        cert_pem: pki.read("client.pem"),
        cert_label: pki.client_pem().display().to_string(),
        key_pem: Secret::new(pki.read("client.key")),
        ca_pem: Some(pki.read("ca.pem")),
    })
}

fn distinct(ids: &[String]) -> usize {
    ids.iter().collect::<BTreeSet<_>>().len()
}

fn record(n: usize) -> mqtt_kinesis_bridge::spool::NewRecord {
    new_record(1, "plant/line", format!("m{n}").into_bytes())
}

#[test]
fn iot_credentials_are_refreshed_before_each_expiry_and_sign_every_request() -> TestResult {
    let dir = TempDir::new("iot-refresh");
    let pki = TestPki::new(dir.path());
    let fake = FakeKinesis::start(vec![]);
    // Short lifetimes: a refresh every 4-5 s, an expiry every 8 s.
    let lifetime = Duration::from_secs(8);
    let provider = IotStandIn::start(&pki, ROLE_ALIAS, fake.key_ring(), lifetime);
    let (spool, _writer) = open_spool(&dir);
    let mut config = kinesis_config(fake.endpoint(), RecordFormat::Json);
    config.credentials = iot_config(&pki, &provider.url());
    let shutdown = Shutdown::new();
    let handle = drain::start(config, spool.clone(), shutdown.clone(), Default::default())?;

    // Records keep arriving while the keys turn over: four keys span three expiries.
    let mut n_appended = 0;
    wait_until(
        "records signed with four successive served keys",
        DEADLINE,
        || {
            append_all(&spool, vec![record(n_appended)]);
            n_appended += 1;
            distinct(&fake.accepted_key_ids()) >= 4
        },
    );
    wait_until("every record delivered", DEADLINE, || counts(&spool).0 == 0);
    stop(&shutdown, handle);

    assert_eq!(fake.accepted().len(), n_appended, "nothing lost");
    assert_eq!(fake.bad_signatures(), Vec::<String>::new());
    assert_eq!(fake.n_expired_uses(), 0, "never signed with an expired key");
    let served = provider.served();
    let used: BTreeSet<String> = fake.accepted_key_ids().into_iter().collect();
    assert!(used
        .iter()
        .all(|id| served.iter().any(|(served_id, _)| served_id == id)));
    // Each key was replaced before it expired (the next one was served while it was valid).
    for pair in served.windows(2) {
        let next_served_at = pair[1].1.expires_at - lifetime;
        assert!(
            next_served_at <= pair[0].1.expires_at,
            "{} replaced after it expired",
            pair[0].0
        );
    }
    assert!(provider.thing_names().iter().all(|name| name == "it-thing"));
    Ok(())
}

#[test]
fn iot_outage_is_ridden_out_then_expiry_pauses_and_recovery_resumes() -> TestResult {
    let dir = TempDir::new("iot-outage");
    let pki = TestPki::new(dir.path());
    let fake = FakeKinesis::start(vec![]);
    // 14 s: refreshed after 7-8.4 s, used until 10.5 s, expired at 14 s.
    let provider = IotStandIn::start(&pki, ROLE_ALIAS, fake.key_ring(), Duration::from_secs(14));
    let (spool, _writer) = open_spool(&dir);
    let mut config = kinesis_config(fake.endpoint(), RecordFormat::Json);
    config.credentials = iot_config(&pki, &provider.url());
    let shutdown = Shutdown::new();
    let handle = drain::start(config, spool.clone(), shutdown.clone(), Default::default())?;
    wait_until("the first key", DEADLINE, || provider.n_served() == 1);
    let first_key = provider.served()[0].clone();

    // The provider goes down; its refresh fails, the first key still serves.
    provider.set_mode(IotMode::Fail(503));
    wait_until("a failed refresh", DEADLINE, || provider.n_failed() >= 1);
    assert!(SystemTime::now() < first_key.1.expires_at, "test too slow");
    append_all(&spool, (0..5).map(record).collect());
    wait_until("records delivered during the outage", DEADLINE, || {
        counts(&spool).0 == 0
    });
    assert!(fake.accepted_key_ids().iter().all(|id| *id == first_key.0));

    // The first key expires with the provider still down: records wait.
    wait_until("the first key to expire", DEADLINE, || {
        SystemTime::now() >= first_key.1.expires_at
    });
    append_all(&spool, (5..10).map(record).collect());
    let n_failed = provider.n_failed();
    wait_until("two more failed fetches after expiry", DEADLINE, || {
        provider.n_failed() >= n_failed + 2
    });
    assert_eq!(counts(&spool).0, 5, "records wait in the spool");
    assert_eq!(
        fake.n_expired_uses(),
        0,
        "never signed with the expired key"
    );

    // The provider answers again: the waiting records go with the new key.
    provider.set_mode(IotMode::Serve);
    wait_until("the waiting records delivered", DEADLINE, || {
        counts(&spool).0 == 0
    });
    stop(&shutdown, handle);
    let ids = fake.accepted_key_ids();
    assert_eq!(ids.len(), 10, "nothing lost");
    assert!(ids[5..].iter().all(|id| *id == provider.served()[1].0));
    assert_eq!(fake.n_expired_uses(), 0);
    assert_eq!(fake.bad_signatures(), Vec::<String>::new());
    Ok(())
}

#[test]
fn expired_token_exception_fetches_new_credentials_at_once() -> TestResult {
    let dir = TempDir::new("iot-expired-token");
    let pki = TestPki::new(dir.path());
    let fake = FakeKinesis::start(vec![]);
    let ring = fake.key_ring();
    // An hour: no refresh is due during the test.
    let provider = IotStandIn::start(&pki, ROLE_ALIAS, ring.clone(), Duration::from_secs(3600));
    let (spool, _writer) = open_spool(&dir);
    let mut config = kinesis_config(fake.endpoint(), RecordFormat::Json);
    config.credentials = iot_config(&pki, &provider.url());
    let shutdown = Shutdown::new();
    let handle = drain::start(config, spool.clone(), shutdown.clone(), Default::default())?;
    wait_until("the first key", DEADLINE, || provider.n_served() == 1);
    // AWS revokes the session early: Kinesis answers ExpiredTokenException.
    let first = provider.served()[0].0.clone();
    ring.lock().unwrap().get_mut(&first).unwrap().expires_at = SystemTime::now();
    append_all(&spool, (0..3).map(record).collect());
    wait_until("the records delivered", DEADLINE, || counts(&spool).0 == 0);
    stop(&shutdown, handle);
    assert_eq!(
        provider.n_served(),
        2,
        "one fetch, at once, after the refusal"
    );
    assert!(fake
        .accepted_key_ids()
        .iter()
        .all(|id| *id == provider.served()[1].0));
    Ok(())
}

#[test]
fn iot_expiration_is_read_in_aws_time_so_a_wrong_clock_does_not_expire_fresh_keys() -> TestResult {
    let dir = TempDir::new("iot-clock");
    let pki = TestPki::new(dir.path());
    let provider = IotStandIn::start(
        &pki,
        ROLE_ALIAS,
        KeyRing::default(),
        Duration::from_secs(3600),
    );
    let config = iot_config(&pki, &provider.url());
    // This machine's clock is 2 h ahead of AWS's (or behind): the
    // expiration, an hour after AWS's now, is still an hour away.
    for offset_s in [-7200, 7200] {
        provider.set_clock_offset(offset_s);
        let credentials = drain::refresher::fetch_once(&config)?;
        let left = credentials
            .expires_in(std::time::Instant::now())
            .expect("expires");
        assert!(
            left > Duration::from_secs(3500) && left <= Duration::from_secs(3601),
            "offset {offset_s}: {left:?}"
        );
    }
    Ok(())
}

/// A config for `check` / `run` with `[kinesis.iot]` at the stand-in, the
/// client certificate `cert`/`key` (paths or values).
fn iot_tables(provider_url: &str, pki: &TestPki, cert: &str, key: &str) -> String {
    format!(
        "[kinesis.iot]\nendpoint = \"{provider_url}\"\nrole_alias = \"{ROLE_ALIAS}\"\n\
         cert = \"{cert}\"\nkey = \"{key}\"\nca = \"{}\"\n",
        pki.ca_pem().display()
    )
}

fn write_check_config(
    dir: &TempDir,
    name: &str,
    endpoint: &str,
    tables: &str,
) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "gateway_id = \"it-gw\"\n\
             [spool]\npath = \"{}\"\nmax_bytes = \"64MiB\"\n\
             [kinesis]\nstream = \"s\"\nregion = \"us-east-1\"\nendpoint = \"{endpoint}\"\n\
             request_timeout = \"5s\"\ncredentials = \"iot\"\n\
             [database]\nurl = \"postgres://nobody@127.0.0.1:1/none\"\n{tables}",
            dir.join("spool.db").display()
        ),
    )
    .expect("write config");
    path
}

/// `check --json`'s kinesis line, and the whole output (for secrets).
fn kinesis_check(config: &Path, env: &[(&str, &str)]) -> (Value, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_mqtt-kinesis-bridge"))
        .args(["check", "--json", "--config"])
        .arg(config)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("MKB_PASSWORD_KEY")
        .envs(env.iter().copied())
        .output()
        .expect("run check");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let report: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|error| {
        panic!(
            "no JSON ({error}): {stdout} {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let line = report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|check| check["area"] == "kinesis")
        .expect("a kinesis check")
        .clone();
    (line, stdout + &String::from_utf8_lossy(&output.stderr))
}

#[test]
fn check_names_the_iot_source_and_refuses_a_wrong_client_certificate() -> TestResult {
    let dir = TempDir::new("iot-check");
    let pki = TestPki::new(dir.path());
    let fake = FakeKinesis::start(vec![]);
    let provider = IotStandIn::start(&pki, ROLE_ALIAS, fake.key_ring(), Duration::from_secs(3600));

    // The right certificate, its key sealed (enc:v1:) with the gateway's key.
    let seal_key_text = SealKey::generate();
    let sealed_key = SealKey::from_base64(&seal_key_text)?.seal(&pki.read("client.key"));
    let client_pem = pki.client_pem().display().to_string();
    let config = write_check_config(
        &dir,
        "right.toml",
        &fake.endpoint(),
        &iot_tables(&provider.url(), &pki, &client_pem, &sealed_key),
    );
    let (line, output) = kinesis_check(&config, &[("MKB_PASSWORD_KEY", &seal_key_text)]);
    assert_eq!(line["ok"], true, "{line}");
    let detail = line["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(
            "credentials from iot credentials provider, role alias gw-kinesis, expires in 59m"
        ),
        "{detail}"
    );
    let (_, served) = provider.served()[0].clone();
    for secret in [&served.secret, &served.token] {
        assert!(
            !output.contains(secret.as_str()),
            "a secret printed: {output}"
        );
    }

    // A certificate from another CA: the handshake is refused, kind `credentials`.
    let config = write_check_config(
        &dir,
        "wrong.toml",
        &fake.endpoint(),
        &iot_tables(
            &provider.url(),
            &pki,
            &pki.other_client_pem().display().to_string(),
            &pki.other_client_key().display().to_string(),
        ),
    );
    let (line, _) = kinesis_check(&config, &[]);
    assert_eq!(line["ok"], false, "{line}");
    assert_eq!(line["kind"], "credentials", "{line}");
    let detail = line["detail"].as_str().unwrap_or_default();
    assert!(
        detail.starts_with("iot credentials provider, role alias gw-kinesis: no answer from"),
        "{detail}"
    );
    assert!(detail.contains("client certificate"), "{detail}");
    assert_eq!(provider.n_served(), 1, "the wrong certificate got nothing");
    Ok(())
}

/// The real binary with `credentials = "iot"`: a broker's messages reach
/// Kinesis signed with the served key, and `status` says where it came from.
#[test]
fn the_gateway_delivers_with_iot_credentials_and_status_shows_source_and_expiry() -> TestResult {
    let dir = TempDir::new("iot-status");
    let pki = TestPki::new(dir.path());
    let db = TestDb::new();
    let broker = Mosquitto::start();
    db.add_broker(1, broker.port());
    db.add_topic(None, "plant/#", 1);
    let fake = FakeKinesis::start(vec![]);
    let provider = IotStandIn::start(&pki, ROLE_ALIAS, fake.key_ring(), Duration::from_secs(3600));
    let tables = iot_tables(
        &provider.url(),
        &pki,
        &pki.client_pem().display().to_string(),
        &pki.client_key().display().to_string(),
    );
    let gateway = Gateway::start_with_kinesis(
        &dir,
        &db,
        &fake.endpoint(),
        "credentials = \"iot\"",
        &tables,
        &[],
    );
    let mut status = Value::Null;
    wait_until("status to show the iot credentials", DEADLINE, || {
        status = gateway.try_status().unwrap_or_default();
        status["gateway"]["credentials"]["expires_at_ms"].is_i64()
    });
    let credentials = &status["gateway"]["credentials"];
    assert_eq!(
        credentials["source"],
        "iot credentials provider, role alias gw-kinesis"
    );
    assert_eq!(credentials["valid"], true);
    let output = Command::new(env!("CARGO_BIN_EXE_mqtt-kinesis-bridge"))
        .args(["status", "--config"])
        .arg(dir.join("gateway.toml"))
        .output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains(
            "credentials: iot credentials provider, role alias gw-kinesis, expires in 59m"
        ),
        "{text}"
    );
    // The thing name defaults to gateway_id.
    assert_eq!(provider.thing_names(), vec!["it-gw".to_owned()]);
    gateway.wait_log("the broker subscribed", |log| {
        log.contains("connected, subscribed")
    });
    publish(broker.port(), "plant/a", "iot", 20);
    wait_until("20 records in Kinesis", DEADLINE, || {
        fake.accepted().len() >= 20
    });
    let served_id = provider.served()[0].0.clone();
    assert!(fake.accepted_key_ids().iter().all(|id| *id == served_id));
    assert_eq!(fake.bad_signatures(), Vec::<String>::new());
    let (_, served) = provider.served()[0].clone();
    let everything = format!(
        "{text}{status}{}{}",
        gateway.log(),
        std::fs::read_to_string(dir.join("status.json"))?
    );
    for secret in [&served.secret, &served.token] {
        assert!(!everything.contains(secret.as_str()), "a secret printed");
    }
    assert_eq!(gateway.terminate(), Some(0));
    Ok(())
}

/// An environment for the chain: the given variables and nothing else
/// (instance metadata off unless the test turns it on).
fn env_of(vars: &[(&str, String)]) -> impl Fn(&str) -> Option<String> {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    move |name| vars.get(name).cloned()
}

fn write_script(dir: &TempDir, name: &str, body: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path.display().to_string()
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[test]
fn credential_process_with_and_without_expiration() -> TestResult {
    let dir = TempDir::new("credential-process");
    let expiring = write_script(
        &dir,
        "expiring.sh",
        &format!(
            "echo '{{\"Version\": 1, \"AccessKeyId\": \"AKIDPROC\", \"SecretAccessKey\": \"proc-secret\", \
             \"SessionToken\": \"proc-token\", \"Expiration\": \"{}\"}}'",
            iso8601(unix_now() + 3600)
        ),
    );
    let lasting = write_script(
        &dir,
        "lasting.sh",
        "printf '{\"Version\":1,\"AccessKeyId\":\"AKIDLONG\",\"SecretAccessKey\":\"long-secret\"}'",
    );
    let failing = write_script(&dir, "failing.sh", "echo 'vault sealed' >&2; exit 3");
    let config = dir.join("config");
    std::fs::write(
        &config,
        format!(
            "[profile expiring]\ncredential_process = {expiring}\n\
             [profile lasting]\ncredential_process = {lasting} --flag\n\
             [profile failing]\ncredential_process = {failing}\n"
        ),
    )?;
    let load = |profile: &str| {
        let env = env_of(&[
            ("HOME", dir.path().display().to_string()),
            ("AWS_CONFIG_FILE", config.display().to_string()),
            ("AWS_PROFILE", profile.to_owned()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
        ]);
        credentials::load_with(&env, 0)
    };
    let expiring = load("expiring")?;
    assert_eq!(expiring.access_key_id(), "AKIDPROC");
    assert_eq!(expiring.secret_access_key().expose(), "proc-secret");
    assert_eq!(
        expiring.session_token().map(Secret::expose),
        Some("proc-token")
    );
    assert_eq!(
        expiring.source(),
        format!("credential_process of {} [expiring]", config.display())
    );
    let left = expiring
        .expires_in(std::time::Instant::now())
        .expect("expires");
    assert!(
        left > Duration::from_secs(3500) && left <= Duration::from_secs(3601),
        "{left:?}"
    );

    let lasting = load("lasting")?;
    assert_eq!(lasting.access_key_id(), "AKIDLONG");
    assert_eq!(lasting.expires_in(std::time::Instant::now()), None);
    assert!(lasting.session_token().is_none());

    let error = load("failing").unwrap_err().to_string();
    assert!(
        error.starts_with(&format!(
            "credential_process of {} [failing]: exited with",
            config.display()
        )),
        "{error}"
    );
    Ok(())
}

#[test]
fn container_endpoint_with_a_token_or_a_token_file() -> TestResult {
    let dir = TempDir::new("container-credentials");
    let ring = KeyRing::default();
    let stand_in = container_stand_in(ring.clone(), "/v1/creds", "Bearer pod-token");
    let full_uri = format!("{}/v1/creds", stand_in.url());
    let base = [
        ("HOME", dir.path().display().to_string()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
        ("AWS_CONTAINER_CREDENTIALS_FULL_URI", full_uri.clone()),
    ];
    let with = |extra: &[(&str, String)]| {
        let vars: Vec<(&str, String)> = base.iter().cloned().chain(extra.iter().cloned()).collect();
        credentials::load_with(&env_of(&vars), 0)
    };
    let credentials = with(&[(
        "AWS_CONTAINER_AUTHORIZATION_TOKEN",
        "Bearer pod-token".into(),
    )])?;
    assert_eq!(
        credentials.source(),
        format!("container endpoint {full_uri}")
    );
    let served = ring.lock().unwrap()[credentials.access_key_id()].clone();
    assert_eq!(credentials.secret_access_key().expose(), served.secret);
    assert_eq!(
        credentials.session_token().map(Secret::expose),
        Some(served.token.as_str())
    );
    assert!(credentials.expires_in(std::time::Instant::now()).is_some());

    // The token file wins over the variable (EKS Pod Identity rotates the file).
    let token_file = dir.join("token");
    std::fs::write(&token_file, "Bearer pod-token\n")?;
    with(&[
        ("AWS_CONTAINER_AUTHORIZATION_TOKEN", "Bearer stale".into()),
        (
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
            token_file.display().to_string(),
        ),
    ])?;
    let error = with(&[("AWS_CONTAINER_AUTHORIZATION_TOKEN", "Bearer stale".into())])
        .unwrap_err()
        .to_string();
    assert!(error.contains("HTTP 401"), "{error}");
    assert!(
        !error.contains("stale"),
        "the token is not printed: {error}"
    );
    Ok(())
}

#[test]
fn imds_v2_token_first_and_off_when_disabled() -> TestResult {
    let dir = TempDir::new("imds-credentials");
    let ring = KeyRing::default();
    let stand_in = imds_stand_in(ring.clone(), "gateway-role");
    let vars = [
        ("HOME", dir.path().display().to_string()),
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT", stand_in.url()),
    ];
    let credentials = credentials::load_with(&env_of(&vars), 0)?;
    assert_eq!(
        credentials.source(),
        "instance metadata (IMDSv2), role gateway-role"
    );
    assert!(ring
        .lock()
        .unwrap()
        .contains_key(credentials.access_key_id()));
    let requests = stand_in.requests();
    assert_eq!(
        requests
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect::<Vec<_>>(),
        [
            "PUT /latest/api/token",
            "GET /latest/meta-data/iam/security-credentials/",
            "GET /latest/meta-data/iam/security-credentials/gateway-role",
        ]
    );

    let disabled = [
        vars[0].clone(),
        vars[1].clone(),
        ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
    ];
    let error = credentials::load_with(&env_of(&disabled), 0)
        .unwrap_err()
        .to_string();
    assert!(error.contains("instance metadata: disabled"), "{error}");
    assert_eq!(stand_in.requests().len(), 3, "not asked when disabled");
    Ok(())
}

#[test]
fn the_chain_runs_in_the_sdks_order_and_the_environment_wins() -> TestResult {
    let dir = TempDir::new("credential-chain");
    let ring = KeyRing::default();
    let container = container_stand_in(ring.clone(), "/creds", "t");
    let imds = imds_stand_in(ring.clone(), "role");
    let process = write_script(
        &dir,
        "process.sh",
        "echo '{\"Version\":1,\"AccessKeyId\":\"AKIDPROCESS\",\"SecretAccessKey\":\"p\"}'",
    );
    std::fs::write(
        dir.join("credentials"),
        "[default]\naws_access_key_id = AKIDFILE\naws_secret_access_key = f\n",
    )?;
    std::fs::write(
        dir.join("config"),
        format!("[default]\ncredential_process = {process}\n"),
    )?;
    let mut vars: Vec<(&str, String)> = vec![
        ("AWS_ACCESS_KEY_ID", "AKIDENV".into()),
        ("AWS_SECRET_ACCESS_KEY", "e".into()),
        (
            "AWS_SHARED_CREDENTIALS_FILE",
            dir.join("credentials").display().to_string(),
        ),
        ("AWS_CONFIG_FILE", dir.join("config").display().to_string()),
        (
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            format!("{}/creds", container.url()),
        ),
        ("AWS_CONTAINER_AUTHORIZATION_TOKEN", "t".into()),
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.url()),
    ];
    let mut order = Vec::new();
    loop {
        let credentials = credentials::load_with(&env_of(&vars), 0)?;
        let id = credentials.access_key_id().to_owned();
        order.push(if id.starts_with("ASIAECS") {
            "container".to_owned()
        } else if id.starts_with("ASIAIMDS") {
            "imds".to_owned()
        } else {
            id
        });
        // Take away the source that answered; the next one must answer next.
        match order.last().map(String::as_str) {
            Some("AKIDENV") => {
                vars.retain(|(k, _)| !k.starts_with("AWS_ACCESS") && !k.starts_with("AWS_SECRET"))
            }
            Some("AKIDFILE") => std::fs::remove_file(dir.join("credentials"))?,
            Some("AKIDPROCESS") => std::fs::remove_file(dir.join("config"))?,
            Some("container") => vars.retain(|(k, _)| !k.starts_with("AWS_CONTAINER")),
            _ => break,
        }
        if order.len() == 2 || order.len() == 3 {
            assert!(container.requests().is_empty() && imds.requests().is_empty());
        }
    }
    assert_eq!(
        order,
        ["AKIDENV", "AKIDFILE", "AKIDPROCESS", "container", "imds"]
    );
    Ok(())
}
