use std::path::PathBuf;

use super::*;

fn parse(url: &str) -> Result<DatabaseUrl, UrlError> {
    DatabaseUrl::parse(&Secret::new(url))
}

/// `url` parses to these TLS parameters (mode, mode given, root cert, client cert).
#[track_caller]
fn check(url: &str, mode: SslMode, given: bool, root: Option<RootCert>, verify: Verify) {
    let parsed = parse(url).unwrap_or_else(|error| panic!("{url}: {error}"));
    assert_eq!(parsed.tls.mode, mode, "{url}");
    assert_eq!(parsed.tls.mode_given, given, "{url}");
    assert_eq!(parsed.tls.root_cert, root, "{url}");
    assert_eq!(parsed.tls.verify(), verify, "{url}");
}

/// `url` is refused with a message containing `expected` and no password.
#[track_caller]
fn check_error(url: &str, expected: &str) {
    let error = parse(url).expect_err(url).to_string();
    assert!(error.contains(expected), "{error:?} lacks {expected:?}");
    assert!(!error.contains("s3cret-pw"), "the password leaked: {error}");
}

fn file(path: &str) -> Option<RootCert> {
    Some(RootCert::File(PathBuf::from(path)))
}

#[test]
fn sslmode_in_both_forms_with_libpq_defaults() {
    use SslMode::*;
    use Verify::*;
    let url = "postgres://gw:s3cret-pw@db.example:5433/iot";
    check(url, Prefer, false, None, Nothing);
    check(
        &format!("{url}?sslmode=disable"),
        Disable,
        true,
        None,
        Nothing,
    );
    check(&format!("{url}?sslmode=allow"), Allow, true, None, Nothing);
    check(
        &format!("{url}?sslmode=require"),
        Require,
        true,
        None,
        Nothing,
    );
    check(
        &format!("{url}?sslmode=verify-ca&sslrootcert=/etc/ca.pem"),
        VerifyCa,
        true,
        file("/etc/ca.pem"),
        Chain,
    );
    check(
        &format!("{url}?application_name=x&sslrootcert=%2Fetc%2Fca%201.pem&sslmode=verify-full"),
        VerifyFull,
        true,
        file("/etc/ca 1.pem"),
        ChainAndName,
    );
    // libpq: require with a root certificate checks the chain.
    check(
        &format!("{url}?sslmode=require&sslrootcert=/ca.pem"),
        Require,
        true,
        file("/ca.pem"),
        Chain,
    );
    // The system's roots imply verify-full.
    check(
        &format!("{url}?sslrootcert=system"),
        VerifyFull,
        false,
        Some(RootCert::System),
        ChainAndName,
    );
    // The last of a key given twice counts.
    check(
        &format!("{url}?sslmode=disable&sslmode=require"),
        Require,
        true,
        None,
        Nothing,
    );

    let kv = "host=db.example port=5433 user=gw password=s3cret-pw dbname=iot";
    check(kv, Prefer, false, None, Nothing);
    check(
        &format!("{kv} sslmode=disable"),
        Disable,
        true,
        None,
        Nothing,
    );
    check(
        &format!("sslmode = verify-full {kv} sslrootcert='/etc/my ca.pem'"),
        VerifyFull,
        true,
        file("/etc/my ca.pem"),
        ChainAndName,
    );
    check(
        &format!("{kv} sslmode=verify-ca sslrootcert=/etc/a\\ b.pem"),
        VerifyCa,
        true,
        file("/etc/a b.pem"),
        Chain,
    );
}

#[test]
fn the_rest_reaches_tokio_postgres_unchanged() {
    let parsed = parse(
        "postgres://gw:s3cret-pw@db.example:5433/iot?sslmode=require&application_name=gw-7&sslcert=/c.pem&sslkey=/k.pem",
    )
    .unwrap();
    assert_eq!(parsed.config.get_user(), Some("gw"));
    assert_eq!(parsed.config.get_password(), Some(&b"s3cret-pw"[..]));
    assert_eq!(parsed.config.get_dbname(), Some("iot"));
    assert_eq!(parsed.config.get_application_name(), Some("gw-7"));
    assert_eq!(
        parsed.tls.client_cert,
        Some((PathBuf::from("/c.pem"), PathBuf::from("/k.pem")))
    );
    assert_eq!(parsed.hosts(), "db.example:5433");

    // A password with quotes, backslashes and spaces survives the rewrite.
    let parsed =
        parse(r"host=db.example user=gw password='it\'s \\ a pw' sslmode=require").unwrap();
    assert_eq!(parsed.config.get_password(), Some(&br"it's \ a pw"[..]));
    assert_eq!(parsed.tls.mode, SslMode::Require);

    // A `?` inside the password is not the query.
    let parsed = parse("postgres://gw:pa?ss@db.example/iot?sslmode=disable").unwrap();
    assert_eq!(parsed.config.get_password(), Some(&b"pa?ss"[..]));
    assert_eq!(parsed.tls.mode, SslMode::Disable);
}

#[test]
fn bad_tls_parameters_are_named_without_the_password() {
    let url = "postgres://gw:s3cret-pw@db.example/iot";
    check_error(
        &format!("{url}?sslmode=verify-fool"),
        "sslmode \"verify-fool\" is not one of disable, allow, prefer, require, verify-ca, verify-full",
    );
    check_error(
        "host=db.example password=s3cret-pw sslmode=REQUIRE",
        "sslmode \"REQUIRE\" is not one of",
    );
    // A value that might be a password gone astray is not quoted.
    check_error(
        &format!("{url}?sslmode=s3cret-pw!"),
        "sslmode \"(not shown)\" is not one of",
    );
    check_error(&format!("{url}?sslmode=verify-full"), "needs sslrootcert");
    check_error(
        &format!("{url}?sslmode=require&sslrootcert=system"),
        "sslmode require may not be used with sslrootcert=system",
    );
    check_error(
        &format!("{url}?sslcert=/c.pem"),
        "sslcert and sslkey go together",
    );
    check_error(&format!("{url}?sslrootcert="), "sslrootcert is empty");
    check_error(
        "host=db.example password='s3cret-pw",
        "unterminated quoted value",
    );
    check_error(
        "host=db.example password=s3cret pw",
        "has a word without `=`",
    );
    check_error(
        &format!("{url}?sslmode=require&port=notaport"),
        "cannot be parsed as a PostgreSQL connection string",
    );
    check_error(
        "host=db.example password=s3cret-pw sslcompression=1",
        "cannot be parsed",
    );
}

#[test]
fn loopback_and_password_decide_whether_unencrypted_may_be_tried() {
    let may = |url: &str| parse(url).unwrap().may_go_unencrypted();
    assert!(may("postgres://gw:s3cret-pw@127.0.0.1/iot"));
    assert!(may("postgres://gw:s3cret-pw@localhost/iot"));
    assert!(may("postgres://gw:s3cret-pw@[::1]:5432/iot"));
    assert!(may("host=/run/postgresql user=gw password=s3cret-pw"));
    assert!(may("postgres://gw@db.example/iot"), "no password to lose");
    assert!(!may("postgres://gw:s3cret-pw@db.example/iot"));
    assert!(!may(
        "postgres://gw:s3cret-pw@db.example/iot?sslmode=prefer"
    ));
    assert!(!may("postgres://gw:s3cret-pw@localhost,db.example/iot"));
    // hostaddr is where the connection goes.
    assert!(!may(
        "host=localhost hostaddr=10.0.0.5 user=gw password=s3cret-pw"
    ));
    assert!(may(
        "host=db.example hostaddr=127.0.0.1 user=gw password=s3cret-pw"
    ));
    // Only an explicit disable.
    assert!(may(
        "postgres://gw:s3cret-pw@db.example/iot?sslmode=disable"
    ));
}

#[test]
fn debug_never_shows_the_password() {
    let parsed = parse("postgres://gw:s3cret-pw@db.example/iot?sslmode=require").unwrap();
    let debug = format!("{parsed:?}");
    assert!(!debug.contains("s3cret-pw"), "{debug}");
    assert!(debug.contains("db.example:5432"), "{debug}");
}
