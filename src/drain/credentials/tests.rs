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
