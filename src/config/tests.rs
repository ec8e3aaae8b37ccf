use std::path::Path;
use std::time::Duration;

use super::*;

fn dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("mkb-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn minimal() -> String {
    format!(
        r#"
[spool]
path = "{}/spool.db"
max_bytes = "64MiB"

[kinesis]
stream = "telemetry"
region = "eu-west-1"

[database]
url = "postgres://gateway:s3cret-pw@db.example/iot"
"#,
        dir().display()
    )
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("gateway.toml"), |_| None)
}

/// `text` must fail with an error whose message contains `expected`.
#[track_caller]
fn check_error(text: &str, expected: &str) {
    let error = parse(text).expect_err("config should be rejected");
    let message = error.to_string();
    assert!(
        message.contains(expected),
        "error {message:?} does not mention {expected:?}"
    );
    assert!(!message.contains("s3cret-pw"), "secret leaked: {message}");
}

#[test]
fn minimal_file_gets_documented_defaults() {
    let config = parse(&minimal()).unwrap();
    assert_eq!(config.spool.max_bytes, 64 << 20);
    assert_eq!(config.spool.overflow, OverflowPolicy::DropOldest);
    assert_eq!(
        config.kinesis.endpoint,
        "https://kinesis.eu-west-1.amazonaws.com"
    );
    assert_eq!(config.kinesis.record_format, RecordFormat::Json);
    assert_eq!(config.catalog.refresh_interval, Duration::from_secs(60));
    assert_eq!(
        config.catalog.notify_channel.as_deref(),
        Some(DEFAULT_NOTIFY_CHANNEL)
    );
    assert_eq!(
        config.catalog.snapshot_path,
        dir().join("catalog-snapshot.db")
    );
    assert_eq!(config.mqtt.partition_key, PartitionKeyScheme::Topic);
    assert_eq!(config.log.level, log::LevelFilter::Info);
    assert!(!config.gateway_id.is_empty());
}

#[test]
fn secrets_stay_out_of_debug() {
    let config = parse(&minimal()).unwrap();
    let printed = format!("{config:?}");
    assert!(!printed.contains("s3cret-pw"), "{printed}");
}

#[test]
fn region_falls_back_to_aws_region() {
    let text = minimal().replace("region = \"eu-west-1\"\n", "");
    let config = Config::parse(&text, Path::new("g.toml"), |name| {
        (name == "AWS_REGION").then(|| "ap-south-1".to_owned())
    })
    .unwrap();
    assert_eq!(config.kinesis.region, "ap-south-1");
    check_error(&text, "`kinesis.region`: missing");
}

#[test]
fn bad_input_names_the_key() {
    let base = minimal();
    check_error(
        &base.replace("[spool]", "[spool]\ncolour = \"blue\""),
        "unknown field `colour`",
    );
    check_error(
        &base.replace("stream = \"telemetry\"\n", ""),
        "config key `kinesis.stream`: is required",
    );
    check_error(&base.replace("\"64MiB\"", "64"), "max_bytes");
    check_error(&base.replace("64MiB", "64 lots"), "`spool.max_bytes`");
    check_error(&base.replace("64MiB", "1KiB"), "below the minimum");
    check_error(
        &base.replace("\"telemetry\"", "\"tele metry\""),
        "`kinesis.stream`",
    );
    check_error(
        &base.replace("[kinesis]", "[kinesis]\nendpoint = \"ftp://x\""),
        "`kinesis.endpoint`",
    );
    check_error(
        &base.replace("[kinesis]", "[kinesis]\nrecord_format = \"xml\""),
        "`kinesis.record_format`",
    );
    check_error(
        &base.replace("[spool]", "[spool]\noverflow = \"panic\""),
        "`spool.overflow`",
    );
    check_error(
        &base.replace("[database]", "[database]\nrefresh_interval = \"soon\""),
        "`database.refresh_interval`",
    );
    check_error(&base.replace("postgres://", "mysql://"), "`database.url`");
    check_error(
        &base.replace("db.example/iot", "db.example/iot?sslmode=verify-fool"),
        "config key `database.url`: sslmode \"verify-fool\" is not one of disable, allow, prefer, require, verify-ca, verify-full",
    );
    check_error(
        &base.replace("db.example/iot", "db.example/iot?sslmode=verify-full"),
        "config key `database.url`: sslmode verify-full needs sslrootcert",
    );
    check_error(
        &format!("{base}\n[mqtt]\npartition_key = \"random\"\n"),
        "`mqtt.partition_key`",
    );
    check_error(&format!("{base}\n[log]\nlevel = \"loud\"\n"), "`log.level`");
    check_error("gateway_id = \"a b\"\n", "config key `spool`: is required");
    check_error(
        &base.replace("max_bytes = \"64MiB\"\n", ""),
        "config key `spool.max_bytes`: is required",
    );
    // A syntax error on the URL's line names the key and does not quote the password.
    let broken = base.replace("s3cret-pw@db.example/iot\"", "s3cret-pw@db.example/iot");
    check_error(&broken, "config key `database.url`: invalid basic string");
    assert!(!parse(&broken).unwrap_err().to_string().contains("s3cret"));
    check_error(
        "[spool\n",
        "config file gateway.toml: unclosed table, expected `]` (line 1, column 7)",
    );
}

#[test]
fn uncreatable_spool_directory_is_named() {
    let text = minimal().replace(
        &format!("{}/spool.db", dir().display()),
        "/proc/no-such-dir/spool.db",
    );
    check_error(
        &text,
        "`spool.path`: cannot create directory /proc/no-such-dir",
    );
}

#[test]
fn units() {
    assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
    assert_eq!(parse_bytes("10MB"), Ok(10_000_000));
    assert_eq!(parse_bytes("1 GiB"), Ok(1 << 30));
    assert!(parse_bytes("12").is_err());
    assert!(parse_bytes("-1MiB").is_err());
    assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
    assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
    assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
    assert!(parse_duration("1.5s").is_err());
    assert!(parse_duration("s").is_err());
    assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
    assert_eq!(
        parse_duration("25h"),
        Err(UnitError {
            text: "25h".into(),
            problem: UnitProblem::DurationTooLong
        })
    );
    assert_eq!(
        parse_bytes("12").unwrap_err().to_string(),
        "\"12\" is not a size: write a whole number and a unit, such as \"512MiB\" (B, kB, KiB, MB, MiB, GB, GiB)"
    );
}

#[test]
fn a_duration_too_long_for_a_deadline_is_an_error_naming_the_key() {
    for text in [
        "18446744073709551615s",
        "5124095576030431h",
        "99999999999999ms",
    ] {
        check_error(
            &minimal().replace(
                "[database]",
                &format!("[database]\nrefresh_interval = \"{text}\""),
            ),
            "database.refresh_interval",
        );
    }
}

#[test]
fn batching_keys_have_defaults_and_bounds() {
    let config = parse(&minimal()).unwrap();
    assert_eq!(config.spool.commit_interval, Duration::from_millis(100));
    assert_eq!(config.spool.queue_capacity, 256);
    assert_eq!(config.kinesis.linger, Duration::from_millis(250));
    assert_eq!(config.mqtt.commit_at_unacked, 16);
    assert_eq!(config.mqtt.read_pause, Duration::from_millis(50));
    assert!(config.warnings.is_empty());

    let tuned = minimal()
        .replace(
            "[spool]",
            "[spool]\ncommit_interval = \"0ms\"\nqueue_capacity = 64",
        )
        .replace("[kinesis]", "[kinesis]\nlinger = \"1s\"")
        + "[mqtt]\ncommit_at_unacked = 8\nread_pause = \"0s\"\n";
    let config = parse(&tuned).unwrap();
    assert_eq!(config.spool.commit_interval, Duration::ZERO);
    assert_eq!(config.spool.queue_capacity, 64);
    assert_eq!(config.kinesis.linger, Duration::from_secs(1));
    assert_eq!(config.mqtt.commit_at_unacked, 8);
    assert_eq!(config.mqtt.read_pause, Duration::ZERO);

    check_error(
        &minimal().replace("[spool]", "[spool]\ncommit_interval = \"11s\""),
        "spool.commit_interval",
    );
    check_error(
        &minimal().replace("[kinesis]", "[kinesis]\nlinger = \"1h\""),
        "kinesis.linger",
    );
    check_error(
        &minimal().replace("[spool]", "[spool]\nqueue_capacity = 0"),
        "spool.queue_capacity",
    );
    check_error(
        &(minimal() + "[mqtt]\ncommit_at_unacked = 0\n"),
        "mqtt.commit_at_unacked",
    );
    check_error(
        &(minimal() + "[mqtt]\nread_pause = \"2s\"\n"),
        "mqtt.read_pause",
    );
}

#[test]
fn the_old_queue_key_still_works_with_a_warning() {
    let config = parse(&(minimal() + "[mqtt]\nchannel_capacity = 32\n")).unwrap();
    assert_eq!(config.spool.queue_capacity, 32);
    assert_eq!(config.warnings.len(), 1);
    assert!(config.warnings[0].contains("spool.queue_capacity"));
    check_error(
        &(minimal().replace("[spool]", "[spool]\nqueue_capacity = 64")
            + "[mqtt]\nchannel_capacity = 32\n"),
        "set only spool.queue_capacity",
    );
}

#[test]
fn spool_snapshot_and_status_files_must_differ() {
    let dir = dir();
    let spool = format!("{}/spool.db", dir.display());
    check_error(
        &format!("{}\n[status]\nfile = \"{spool}\"\n", minimal()),
        &format!("config key `status.file`: {spool} is (or is written beside) spool.path {spool}"),
    );
    // The same file by another spelling, and a file SQLite writes beside the spool.
    let other_spelling = format!("{}/./spool.db", dir.display());
    check_error(
        &minimal().replace(
            "url = ",
            &format!("snapshot_path = \"{other_spelling}\"\nurl = "),
        ),
        "config key `database.snapshot_path`",
    );
    check_error(
        &format!("{}\n[status]\nfile = \"{spool}-wal\"\n", minimal()),
        "config key `status.file`",
    );
    // Each its own: fine.
    let config = parse(&format!(
        "{}\n[status]\nfile = \"{}/status-own.json\"\n",
        minimal(),
        dir.display()
    ))
    .unwrap();
    assert_ne!(config.status.file, config.spool.path);
}

#[test]
fn errors_never_quote_a_password_or_user_info() {
    let base = minimal();
    let password = "s3cret-pw";
    let url = "postgres://gateway:s3cret-pw@db.example/iot";
    for text in [
        // An inline table with a syntax error after the URL.
        base.replace(
            &format!("[database]\nurl = \"{url}\""),
            &format!("database = {{ url = \"{url}\", 5 }}"),
        ),
        // A dotted key, the syntax error on its line.
        base.replace(
            &format!("[database]\nurl = \"{url}\""),
            &format!("database.url = \"{url}\" x"),
        ),
        // The URL where a number belongs: serde quotes the value.
        base.replace("\"64MiB\"", &format!("\"{url}\"")),
        base.replace("max_bytes = \"64MiB\"", &format!("max_bytes = [\"{url}\"]")),
        // User info in the Kinesis endpoint.
        base.replace(
            "[kinesis]",
            "[kinesis]\nendpoint = \"https://AKID:s3cret-pw@kinesis.example\"",
        ),
    ] {
        let message = parse(&text).expect_err(&text).to_string();
        assert!(!message.contains(password), "{message}\nfrom:\n{text}");
    }
    check_error(
        &base.replace(
            "[kinesis]",
            "[kinesis]\nendpoint = \"https://AKID:s3cret-pw@kinesis.example\"",
        ),
        "config key `kinesis.endpoint`: holds user info",
    );
    assert_eq!(
        redact_urls("invalid type: string \"postgres://u:p@h/x\", expected u64"),
        "invalid type: string \"postgres://***@h/x\", expected u64"
    );
    assert_eq!(
        redact_urls("see https://example.com/a@b"),
        "see https://example.com/a@b"
    );
}

/// Issue 21: the free-space floor defaults by the filesystem (None here), takes a size, and has a minimum.
#[test]
fn min_free_bytes_is_a_size_of_at_least_1mib() {
    assert_eq!(parse(&minimal()).unwrap().spool.min_free_bytes, None);
    let config =
        parse(&minimal().replace("[spool]", "[spool]\nmin_free_bytes = \"2MiB\"")).unwrap();
    assert_eq!(config.spool.min_free_bytes, Some(2 << 20));
    check_error(
        &minimal().replace("[spool]", "[spool]\nmin_free_bytes = \"512KiB\""),
        "config key `spool.min_free_bytes`: \"512KiB\" is below the minimum of 1MiB",
    );
    check_error(
        &minimal().replace("[spool]", "[spool]\nmin_free_bytes = \"lots\""),
        "`spool.min_free_bytes`",
    );
}

/// A throwaway self-signed certificate and its key (never used for anything else).
const TEST_CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIBgDCCASegAwIBAgIUPFEwbXye3bi72LBNtLDS8WgazXYwCgYIKoZIzj0EAwIw\nFjEUMBIGA1UEAwwLY29uZmlnLXRlc3QwHhcNMjYxMTMwMDkwODE5WhcNMzYxMTI3\nMDkwODE5WjAWMRQwEgYDVQQDDAtjb25maWctdGVzdDBZMBMGByqGSM49AgEGCCqG\nSM49AwEHA0IABHqVPeraYf659Hju13z5loiR5Fv83XQJ0GQunHKl2YH76XIGLV5T\n6OkgB012VuUsMe0MGxR+FSXPf37uge1mRNajUzBRMB0GA1UdDgQWBBTkK/VH9mp4\nMCtPcsXLOD04iKYuCTAfBgNVHSMEGDAWgBTkK/VH9mp4MCtPcsXLOD04iKYuCTAP\nBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0cAMEQCIE2km33XQeouuXgZXHEh\no4FdN0ubmlJXyEiQjohVZEpbAiAmJQV1VoTU9X/f0vxemM4w8Z6fD7FEU+UBS+0+\ntyHifA==\n-----END CERTIFICATE-----\n";
const TEST_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg7cvdR656yLSMibOk\nh5Oav8Q7RY56+upObhj7NDif65qhRANCAAR6lT3q2mH+ufR47td8+ZaIkeRb/N10\nCdBkLpxypdmB++lyBi1eU+jpIAdNdlblLDHtDBsUfhUlz39+7oHtZkTW\n-----END PRIVATE KEY-----\n";

/// `minimal()` with `credentials = "iot"` and `[kinesis.iot]` holding `iot_keys`.
fn with_iot(iot_keys: &str) -> String {
    minimal().replace(
        "region = \"eu-west-1\"\n",
        &format!("region = \"eu-west-1\"\ncredentials = \"iot\"\n\n[kinesis.iot]\n{iot_keys}\n"),
    )
}

fn iot_files() -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir().join("device.pem"), dir().join("device.key"));
    std::fs::write(&cert, TEST_CERT).unwrap();
    std::fs::write(&key, TEST_KEY).unwrap();
    (cert, key)
}

#[test]
fn credentials_default_to_the_auto_chain() {
    let config = parse(&minimal()).unwrap();
    assert!(matches!(
        config.kinesis.credentials,
        CredentialsConfig::Auto
    ));
    let auto = minimal().replace(
        "region = \"eu-west-1\"\n",
        "region = \"eu-west-1\"\ncredentials = \"auto\"\n",
    );
    assert!(matches!(
        parse(&auto).unwrap().kinesis.credentials,
        CredentialsConfig::Auto
    ));
}

#[test]
fn iot_credentials_from_files_with_defaults() {
    let (cert, key) = iot_files();
    let text = with_iot(&format!(
        "endpoint = \"c2abc.credentials.iot.eu-west-1.amazonaws.com\"\nrole_alias = \"gw-kinesis\"\n\
         cert = \"{}\"\nkey = \"{}\"",
        cert.display(),
        key.display()
    ));
    let text = format!("gateway_id = \"gw-17\"\n{text}");
    let config = parse(&text).unwrap();
    let CredentialsConfig::Iot(iot) = &config.kinesis.credentials else {
        panic!("not iot: {:?}", config.kinesis.credentials)
    };
    assert_eq!(
        iot.endpoint,
        "https://c2abc.credentials.iot.eu-west-1.amazonaws.com"
    );
    assert_eq!(iot.role_alias, "gw-kinesis");
    assert_eq!(iot.thing_name, "gw-17", "gateway_id by default");
    assert_eq!(iot.cert_label, cert.display().to_string());
    assert!(iot.ca_pem.is_none(), "the system's roots");
    assert!(
        !format!("{config:?}").contains("MIGHAgEA"),
        "the key is never printed"
    );
}

#[test]
fn an_iot_key_sealed_with_enc_v1_opens_with_the_gateway_key() {
    let (cert, _) = iot_files();
    let key_text = SealKey::generate();
    let sealed = SealKey::from_base64(&key_text).unwrap().seal(TEST_KEY);
    let text = with_iot(&format!(
        "endpoint = \"https://127.0.0.1:8443\"\nrole_alias = \"a\"\nthing_name = \"t1\"\n\
         cert = \"{}\"\nkey = \"{sealed}\"",
        cert.display()
    ));
    let config = Config::parse(&text, Path::new("gateway.toml"), |name| {
        (name == "MKB_PASSWORD_KEY").then(|| key_text.clone())
    })
    .unwrap();
    let CredentialsConfig::Iot(iot) = &config.kinesis.credentials else {
        panic!("not iot")
    };
    assert_eq!(iot.key_pem.expose(), TEST_KEY);
    assert_eq!(iot.endpoint, "https://127.0.0.1:8443");
    // Without the key it cannot be opened; enc:v2 is for catalog rows only.
    check_error(
        &text,
        "kinesis.iot.key`: is sealed (enc:v1:) but no key is configured",
    );
    let v2 = text.replace("enc:v1:", "enc:v2:");
    check_error(&v2, "encrypt-password --v1");
}

#[test]
fn bad_iot_settings_name_the_key() {
    let (cert, key) = iot_files();
    let good = format!(
        "endpoint = \"iot.example.com\"\nrole_alias = \"gw\"\ncert = \"{}\"\nkey = \"{}\"",
        cert.display(),
        key.display()
    );
    for (from, to, expected) in [
        (
            "endpoint = \"iot.example.com\"",
            "endpoint = \"http://iot.example.com\"",
            "kinesis.iot.endpoint",
        ),
        (
            "endpoint = \"iot.example.com\"",
            "endpoint = \"https://u:pw@iot.example.com\"",
            "user info",
        ),
        (
            "role_alias = \"gw\"",
            "role_alias = \"gw/../x\"",
            "kinesis.iot.role_alias",
        ),
        (
            "role_alias = \"gw\"",
            "role_alias = \"gw\"\nthing_name = \"a b\"",
            "kinesis.iot.thing_name",
        ),
        (
            "role_alias = \"gw\"",
            "role_alias = \"gw\"\nca = \"/nonexistent/ca.pem\"",
            "kinesis.iot.ca`: cannot read /nonexistent/ca.pem",
        ),
        (
            "role_alias = \"gw\"",
            "role_alias = \"gw\"\nport = 1",
            "unknown field `port`",
        ),
    ] {
        check_error(&with_iot(&good.replace(from, to)), expected);
    }
    let key_as_cert = good.replace(&cert.display().to_string(), &key.display().to_string());
    check_error(&with_iot(&key_as_cert), "holds no PEM certificate");
    let cert_as_key = good.replace(&key.display().to_string(), &cert.display().to_string());
    check_error(
        &with_iot(&cert_as_key),
        "kinesis.iot.key`: holds no PEM private key",
    );
    // A gateway_id with a '.' is no thing name: say so, and where it came from.
    let dotted = format!("gateway_id = \"gw.17\"\n{}", with_iot(&good));
    check_error(&dotted, "kinesis.iot.thing_name (here gateway_id)");
    // One without the other.
    check_error(
        &minimal().replace(
            "region = \"eu-west-1\"\n",
            "region = \"eu-west-1\"\ncredentials = \"iot\"\n",
        ),
        "kinesis.iot`: is required",
    );
    check_error(
        &with_iot(&good).replace("credentials = \"iot\"\n", ""),
        "kinesis.credentials`: is \"auto\" but [kinesis.iot] is given",
    );
    check_error(
        &with_iot(&good).replace("credentials = \"iot\"", "credentials = \"sso\""),
        "\"sso\" is not one of",
    );
}

/// Issue 15: metrics are off unless asked for; the keys are checked like the others.
#[test]
fn metrics_are_off_by_default_and_checked_when_set() {
    let config = parse(&minimal()).unwrap();
    assert!(!config.metrics.is_enabled());
    assert_eq!(config.metrics.interval, DEFAULT_METRICS_INTERVAL);

    let textfile = dir().join("textfile/mkb.prom");
    let text = format!(
        "{}\n[metrics]\nlisten = \"127.0.0.1:9464\"\ntextfile = \"{}\"\ninterval = \"5s\"\n",
        minimal(),
        textfile.display()
    );
    let config = parse(&text).unwrap();
    assert_eq!(
        config.metrics.listen,
        Some("127.0.0.1:9464".parse().unwrap())
    );
    assert_eq!(config.metrics.textfile.as_deref(), Some(textfile.as_path()));
    assert_eq!(config.metrics.interval, Duration::from_secs(5));
    assert!(
        textfile.parent().unwrap().is_dir(),
        "its directory is created"
    );

    let with = |line: &str| format!("{}\n[metrics]\n{line}\n", minimal());
    let ipv6 = parse(&with("listen = \"[::1]:9464\"")).unwrap();
    assert_eq!(ipv6.metrics.listen, Some("[::1]:9464".parse().unwrap()));
    check_error(&with("listen = \"127.0.0.1\""), "metrics.listen");
    check_error(&with("listen = \"9464\""), "metrics.listen");
    check_error(&with("interval = \"500ms\""), "metrics.interval");
    check_error(&with("textfile = \"\""), "metrics.textfile");
    check_error(&with("port = 9464"), "port");
    let over_status = format!("textfile = \"{}/status.json\"", dir().display());
    check_error(&with(&over_status), "metrics.textfile");
}

#[test]
fn devices_keys_have_defaults_and_bounds() {
    let config = parse(&minimal()).unwrap();
    assert_eq!(config.devices.max_tracked, 100_000);
    let config = parse(&(minimal() + "[devices]\nmax_tracked = 10\n")).unwrap();
    assert_eq!(config.devices.max_tracked, 10);
    let config = parse(&(minimal() + "[mqtt]\npartition_key = \"broker_device\"\n")).unwrap();
    assert_eq!(config.mqtt.partition_key, PartitionKeyScheme::BrokerDevice);
    let config = parse(&(minimal() + "[mqtt]\npartition_key = \"device\"\n")).unwrap();
    assert_eq!(config.mqtt.partition_key, PartitionKeyScheme::Device);
    check_error(
        &(minimal() + "[devices]\nmax_tracked = -1\n"),
        "config key `devices.max_tracked`: -1 is not 0..10000000",
    );
    check_error(
        &(minimal() + "[devices]\nmax_tracked = 10000001\n"),
        "devices.max_tracked",
    );
    check_error(&(minimal() + "[devices]\nmax_trackd = 1\n"), "max_trackd");
}
