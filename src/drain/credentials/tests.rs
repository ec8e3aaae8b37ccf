use std::collections::HashMap;
use std::io;
use std::path::Path;

use super::{load_from, CredentialsError};

const FILE: &str = "
# comment
[default]
aws_access_key_id = AKIDDEFAULT
aws_secret_access_key = default-secret

[gateway]
; another comment
aws_access_key_id=AKIDGATEWAY
aws_secret_access_key=gateway-secret
aws_session_token = gateway-token

[broken]
aws_access_key_id = AKIDBROKEN
";

fn load(env: &[(&str, &str)], file: Option<&str>) -> Result<super::Credentials, CredentialsError> {
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    load_from(
        |name| env.get(name).cloned(),
        |path: &Path| match file {
            Some(text) if path.ends_with(".aws/credentials") || path.ends_with("creds") => {
                Ok(text.to_owned())
            }
            _ => Err(io::Error::from(io::ErrorKind::NotFound)),
        },
    )
}

#[test]
fn environment_first() {
    let credentials = load(
        &[
            ("AWS_ACCESS_KEY_ID", "AKIDENV"),
            ("AWS_SECRET_ACCESS_KEY", "env-secret"),
            ("AWS_SESSION_TOKEN", "env-token"),
            ("HOME", "/home/x"),
        ],
        Some(FILE),
    )
    .unwrap();
    assert_eq!(credentials.access_key_id(), "AKIDENV");
    assert_eq!(credentials.source(), "environment");
    let aws = credentials.to_aws();
    assert_eq!(aws.secret_access_key(), "env-secret");
    assert_eq!(aws.session_token(), Some("env-token"));
}

#[test]
fn environment_without_secret_is_an_error() {
    let error = load(&[("AWS_ACCESS_KEY_ID", "AKIDENV")], Some(FILE)).unwrap_err();
    assert_eq!(
        error.to_string(),
        "the environment has an access key id but no AWS_SECRET_ACCESS_KEY"
    );
}

#[test]
fn shared_file_default_profile() {
    let credentials = load(&[("HOME", "/home/x")], Some(FILE)).unwrap();
    assert_eq!(credentials.access_key_id(), "AKIDDEFAULT");
    assert_eq!(credentials.source(), "/home/x/.aws/credentials [default]");
    assert_eq!(credentials.to_aws().session_token(), None);
}

#[test]
fn shared_file_named_profile_and_path() {
    let credentials = load(
        &[
            ("AWS_SHARED_CREDENTIALS_FILE", "/etc/bridge/creds"),
            ("AWS_PROFILE", "gateway"),
        ],
        Some(FILE),
    )
    .unwrap();
    assert_eq!(credentials.access_key_id(), "AKIDGATEWAY");
    assert_eq!(credentials.to_aws().secret_access_key(), "gateway-secret");
    assert_eq!(credentials.to_aws().session_token(), Some("gateway-token"));
}

#[test]
fn problems_name_the_source_never_a_value() {
    let error = load(&[("HOME", "/h"), ("AWS_PROFILE", "broken")], Some(FILE)).unwrap_err();
    assert_eq!(
        error.to_string(),
        "/h/.aws/credentials [broken] has an access key id but no aws_secret_access_key"
    );
    let error = load(&[("HOME", "/h"), ("AWS_PROFILE", "nope")], Some(FILE)).unwrap_err();
    assert!(error.to_string().contains("no profile [nope]"), "{error}");
    let error = load(&[("HOME", "/h")], None).unwrap_err();
    assert_eq!(
        error.to_string(),
        "none found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or create /h/.aws/credentials"
    );
}

#[test]
fn debug_hides_secrets() {
    let credentials = load(
        &[
            ("AWS_SHARED_CREDENTIALS_FILE", "creds"),
            ("AWS_PROFILE", "gateway"),
        ],
        Some(FILE),
    )
    .unwrap();
    let printed = format!("{credentials:?}");
    assert!(!printed.contains("gateway-secret"), "{printed}");
    assert!(!printed.contains("gateway-token"), "{printed}");
    assert!(printed.contains("AKIDGATEWAY"), "{printed}");
}

fn found(
    env: &[(&str, &str)],
    files: &[(&str, &str)],
) -> Result<Option<super::Found>, CredentialsError> {
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let files: HashMap<String, String> = files
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    super::from_env_and_files(&|name| env.get(name).cloned(), &|path: &Path| {
        files
            .get(&path.display().to_string())
            .cloned()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    })
}

const CONFIG: &str = "
[default]
region = eu-west-1
credential_process = /usr/bin/get-creds --default

[profile vault]
credential_process = vault-aws gateway

[profile keys]
aws_access_key_id = AKIDCONFIG
aws_secret_access_key = config-secret

[profile sso]
sso_session = corp
";

#[test]
fn credential_process_comes_from_the_config_file_profile() {
    let env = [("HOME", "/h"), ("AWS_PROFILE", "vault")];
    match found(&env, &[("/h/.aws/config", CONFIG)]).unwrap() {
        Some(super::Found::Process { command, source }) => {
            assert_eq!(command, "vault-aws gateway");
            assert_eq!(source, "credential_process of /h/.aws/config [vault]");
        }
        other => panic!("{other:?}"),
    }
    // The default profile is `[default]` in the config file.
    let env = [("AWS_CONFIG_FILE", "/etc/aws.conf")];
    match found(&env, &[("/etc/aws.conf", CONFIG)]).unwrap() {
        Some(super::Found::Process { command, .. }) => {
            assert_eq!(command, "/usr/bin/get-creds --default")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn keys_win_over_credential_process_and_the_credentials_file_over_config() {
    let env = [("HOME", "/h")];
    let files = [("/h/.aws/config", CONFIG), ("/h/.aws/credentials", FILE)];
    match found(&env, &files).unwrap() {
        Some(super::Found::Static(credentials)) => {
            assert_eq!(credentials.access_key_id(), "AKIDDEFAULT");
            assert_eq!(credentials.source(), "/h/.aws/credentials [default]");
        }
        other => panic!("{other:?}"),
    }
    let env = [("HOME", "/h"), ("AWS_PROFILE", "keys")];
    match found(&env, &files).unwrap() {
        Some(super::Found::Static(credentials)) => {
            assert_eq!(credentials.access_key_id(), "AKIDCONFIG");
            assert_eq!(credentials.source(), "/h/.aws/config [keys]");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_absent_default_profile_passes_on_and_a_named_one_must_exist() {
    assert!(found(&[("HOME", "/h")], &[]).unwrap().is_none());
    assert!(found(
        &[("HOME", "/h")],
        &[("/h/.aws/config", "[profile x]\nregion=a\n")]
    )
    .unwrap()
    .is_none());
    let error = found(
        &[("HOME", "/h"), ("AWS_PROFILE", "nope")],
        &[("/h/.aws/config", CONFIG)],
    )
    .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("/h/.aws/config has no profile [nope]"),
        "{error}"
    );
    let error = found(
        &[("HOME", "/h"), ("AWS_PROFILE", "sso")],
        &[("/h/.aws/config", CONFIG)],
    )
    .unwrap_err();
    assert!(
        error.to_string().contains("sso are not supported"),
        "{error}"
    );
}
