//! `new-key` and `encrypt-password` run as the real binary: where the key comes
//! from, what goes to stdout and stderr, and that the library opens what the
//! command sealed.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use mqtt_kinesis_bridge::sealed::{Binding, SealKey, KEY_ENV, PREFIX, PREFIX_V2};

use crate::support::*;

const PASSWORD: &str = "hunter2 pässwörd";

/// Runs the binary with `args`, `stdin` fed in, and `MKB_PASSWORD_KEY` set only
/// when `env_key` is given.
fn run(args: &[&str], env_key: Option<&str>, stdin: &str) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mqtt-kinesis-bridge"));
    command
        .args(args)
        .env_remove(KEY_ENV)
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(key) = env_key {
        command.env(KEY_ENV, key);
    }
    let mut child = command.spawn().expect("start the binary");
    // The command may exit before reading (no key); a closed pipe is fine then.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().expect("wait for the binary")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A key file only its owner can read, as an operator would make it.
fn key_file(dir: &TempDir, name: &str, key: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{key}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// Where `--broker 7` seals a password.
const ROW_7: Binding<'static> = Binding {
    broker_id: 7,
    column: "mqtt_password",
};

/// Checks a successful run: one `enc:v2:` line that `key` opens to `password`
/// for broker 7's mqtt_password (and for no other row), nothing on stderr, and
/// the password nowhere in clear.
fn assert_sealed(output: &Output, key: &str, password: &str) {
    let stdout = text(&output.stdout);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert_eq!(stderr, "");
    let value = stdout.strip_suffix('\n').expect("one line");
    assert!(
        value.starts_with(PREFIX_V2) && !value.contains('\n'),
        "{stdout}"
    );
    assert!(!stdout.contains(password), "{stdout}");
    let key = SealKey::from_base64(key).unwrap();
    let (opened, _) = key.open_for(value, ROW_7).unwrap();
    assert_eq!(opened.expose(), password);
    let row_8 = Binding {
        broker_id: 8,
        ..ROW_7
    };
    assert!(key.open_for(value, row_8).is_err(), "opens in row 8 too");
}

fn path_arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn new_key_prints_32_random_bytes_in_base64() -> TestResult {
    let output = run(&["new-key"], None, "");
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    let key = stdout.strip_suffix('\n').expect("one line");
    assert_eq!(key.len(), 44, "{stdout}");
    assert_eq!(STANDARD.decode(key)?.len(), 32);
    assert_ne!(stdout, text(&run(&["new-key"], None, "").stdout));
    Ok(())
}

#[test]
fn encrypt_password_with_a_key_file() -> TestResult {
    let dir = TempDir::new("cli-sealed-key-file");
    let key = SealKey::generate();
    let path = key_file(&dir, "password.key", &key);
    let output = run(
        &[
            "encrypt-password",
            "--broker",
            "7",
            "--key-file",
            path_arg(&path),
        ],
        None,
        &format!("{PASSWORD}\n"),
    );
    assert_sealed(&output, &key, PASSWORD);
    Ok(())
}

#[test]
fn encrypt_password_with_the_key_in_the_environment() -> TestResult {
    let key = SealKey::generate();
    let output = run(
        &["encrypt-password", "--broker", "7"],
        Some(&key),
        &format!("{PASSWORD}\n"),
    );
    assert_sealed(&output, &key, PASSWORD);
    Ok(())
}

#[test]
fn the_key_file_option_wins_over_the_environment() -> TestResult {
    let dir = TempDir::new("cli-sealed-precedence");
    let key = SealKey::generate();
    let path = key_file(&dir, "password.key", &key);
    let output = run(
        &[
            "encrypt-password",
            "--broker",
            "7",
            "--key-file",
            path_arg(&path),
        ],
        Some(&SealKey::generate()),
        PASSWORD,
    );
    assert_sealed(&output, &key, PASSWORD);
    Ok(())
}

#[test]
fn encrypt_password_with_the_config_key_file() -> TestResult {
    let dir = TempDir::new("cli-sealed-config");
    let key = SealKey::generate();
    let path = key_file(&dir, "password.key", &key);
    let config = dir.join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[spool]\npath = \"{}\"\nmax_bytes = \"64MiB\"\n\
             [kinesis]\nstream = \"s\"\nregion = \"eu-west-1\"\n\
             [database]\nurl = \"postgres://u@db/x\"\npassword_key_file = \"{}\"\n",
            dir.join("spool.db").display(),
            path.display(),
        ),
    )?;
    let output = run(
        &[
            "encrypt-password",
            "--broker",
            "7",
            "--config",
            path_arg(&config),
        ],
        None,
        &format!("{PASSWORD}\n"),
    );
    assert_sealed(&output, &key, PASSWORD);
    Ok(())
}

#[test]
fn only_the_first_line_is_the_password_and_crlf_is_stripped() -> TestResult {
    let key = SealKey::generate();
    let output = run(
        &["encrypt-password", "--broker", "7"],
        Some(&key),
        "  spaced pw \r\nsecond line\n",
    );
    assert_sealed(&output, &key, "  spaced pw ");
    Ok(())
}

#[test]
fn without_a_key_it_exits_2_and_says_where_keys_come_from() -> TestResult {
    let output = run(
        &["encrypt-password", "--broker", "7"],
        None,
        &format!("{PASSWORD}\n"),
    );
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert_eq!(
        stderr,
        "error: no key: give --key-file FILE, set MKB_PASSWORD_KEY, \
         or --config FILE whose database.password_key_file is set\n"
    );
    assert_eq!(text(&output.stdout), "");
    Ok(())
}

#[test]
fn an_empty_password_exits_2() -> TestResult {
    let key = SealKey::generate();
    for stdin in ["", "\n", "\r\n"] {
        let output = run(&["encrypt-password", "--broker", "7"], Some(&key), stdin);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stdin:?}: {stderr}");
        assert!(stderr.contains("no password on stdin"), "{stderr}");
        assert_eq!(text(&output.stdout), "");
    }
    Ok(())
}

#[test]
fn a_bad_key_exits_2_without_printing_key_or_password() -> TestResult {
    let dir = TempDir::new("cli-sealed-bad-key");
    let short_key = STANDARD.encode([9u8; 31]);
    let path = key_file(&dir, "short.key", &short_key);
    let missing = dir.join("missing.key");
    let cases = [
        (path_arg(&path), "is 31 bytes, not 32"),
        (path_arg(&missing), "cannot read key file"),
    ];
    for (key_path, expected) in cases {
        let output = run(
            &["encrypt-password", "--broker", "7", "--key-file", key_path],
            None,
            &format!("{PASSWORD}\n"),
        );
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
        assert!(stderr.contains(key_path), "{stderr}");
        assert!(
            !stderr.contains(PASSWORD) && !stderr.contains(&short_key),
            "{stderr}"
        );
        assert_eq!(text(&output.stdout), "");
    }
    Ok(())
}

#[test]
fn a_key_file_others_can_read_is_refused_unless_allowed() -> TestResult {
    let dir = TempDir::new("cli-sealed-open-key");
    let key = SealKey::generate();
    let path = key_file(&dir, "password.key", &key);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
    let args = [
        "encrypt-password",
        "--broker",
        "7",
        "--key-file",
        path_arg(&path),
    ];
    let output = run(&args, None, PASSWORD);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "key file {} is readable by group or others (mode 644): chmod 600 it",
            path.display()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("MKB_ALLOW_OPEN_KEY_FILE=1"), "{stderr}");
    assert!(
        !stderr.contains(PASSWORD) && !stderr.contains(&key),
        "{stderr}"
    );
    assert_eq!(text(&output.stdout), "");

    // The documented override: used, with a warning.
    let mut command = Command::new(env!("CARGO_BIN_EXE_mqtt-kinesis-bridge"));
    let output = command
        .args(args)
        .env_remove(KEY_ENV)
        .env("MKB_ALLOW_OPEN_KEY_FILE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child.stdin.take().unwrap().write_all(PASSWORD.as_bytes())?;
            child.wait_with_output()
        })?;
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("WARN") && stderr.contains("is readable by group or others"),
        "{stderr}"
    );
    let value = text(&output.stdout);
    let (opened, _) = SealKey::from_base64(&key)?.open_for(value.trim_end(), ROW_7)?;
    assert_eq!(opened.expose(), PASSWORD);
    Ok(())
}

#[test]
fn key_options_go_with_encrypt_password_only() -> TestResult {
    let output = run(&["run", "--config", "x.toml", "--key-file", "k"], None, "");
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr)
        .contains("--key-file, --broker, --column and --v1 go with encrypt-password"));
    Ok(())
}

#[test]
fn v1_only_on_request_and_broker_required_otherwise() -> TestResult {
    let key = SealKey::generate();
    let output = run(&["encrypt-password", "--v1"], Some(&key), PASSWORD);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let value = text(&output.stdout);
    assert!(value.starts_with(PREFIX), "{value}");
    let opened = SealKey::from_base64(&key)?.open(value.trim_end())?;
    assert_eq!(opened.expose(), PASSWORD);

    for (args, expected) in [
        (
            vec!["encrypt-password"],
            "encrypt-password needs --broker ID",
        ),
        (
            vec!["encrypt-password", "--broker", "7", "--v1"],
            "give --broker or --v1, not both",
        ),
        (
            vec!["encrypt-password", "--broker", "x7"],
            "--broker \"x7\" is not an mqtt_id",
        ),
        (
            vec!["encrypt-password", "--broker", "7", "--column", "mqtt_host"],
            "--column \"mqtt_host\" is not mqtt_password or client_key",
        ),
    ] {
        let output = run(&args, Some(&key), PASSWORD);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!stderr.contains(PASSWORD), "{stderr}");
    }
    Ok(())
}

#[test]
fn a_client_key_is_sealed_whole_for_its_column() -> TestResult {
    let key = SealKey::generate();
    let pem = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49\nAgEGCCqGSM49AwEHBG0w\n-----END PRIVATE KEY-----\n";
    let output = run(
        &[
            "encrypt-password",
            "--broker",
            "7",
            "--column",
            "client_key",
        ],
        Some(&key),
        pem,
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let value = text(&output.stdout);
    let value = value.trim_end();
    assert!(
        value.starts_with(PREFIX_V2) && !value.contains("MIGH"),
        "{value}"
    );
    let key = SealKey::from_base64(&key)?;
    let for_column = Binding {
        column: "client_key",
        ..ROW_7
    };
    let (opened, _) = key.open_for(value, for_column)?;
    assert_eq!(opened.expose(), pem.trim_end());
    assert!(
        key.open_for(value, ROW_7).is_err(),
        "a client_key value must not open as a password"
    );
    Ok(())
}
