//! Credentials over HTTP from the host: the container endpoint and the EC2
//! instance metadata service (IMDSv2), the last two steps of the `auto` chain.
//!
//! Container (ECS, EKS Pod Identity, Greengrass-like agents):
//! `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` (on `http://169.254.170.2`) or
//! else `AWS_CONTAINER_CREDENTIALS_FULL_URI` (`http://` only to a loopback or
//! the ECS/EKS link-local addresses, as the SDKs require; `https://` to
//! anything), with `Authorization` from `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`
//! (read at every fetch, it rotates) or `AWS_CONTAINER_AUTHORIZATION_TOKEN`.
//!
//! IMDSv2: a session token by `PUT /latest/api/token`, then the role name and
//! its credentials, each request with a 1 s timeout. A token PUT that times
//! out inside a container usually means the instance's hop limit is 1.
//! `AWS_EC2_METADATA_DISABLED=true` turns it off; `AWS_EC2_METADATA_SERVICE_ENDPOINT`
//! moves it (for tests, as the SDKs allow). No IMDSv1 fallback.
//!
//! Both run on the drain's credentials thread. Only ureq + rustls, like the drain.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::document::{self, Document, DocumentError};
use super::{Credentials, CredentialsError, Env};
use crate::clock;
use crate::drain::resolver::CachingResolver;
use crate::drain::{roots, skew};
use crate::secret::Secret;

/// Answers are a few hundred bytes.
const MAX_ANSWER: u64 = 64 * 1024;
/// The ECS agent's address for relative URIs.
const ECS_HOST: &str = "http://169.254.170.2";
/// Per request of the container endpoint.
const CONTAINER_TIMEOUT: Duration = Duration::from_secs(5);
/// Per request of instance metadata.
const IMDS_TIMEOUT: Duration = Duration::from_secs(1);
const IMDS_DEFAULT_ENDPOINT: &str = "http://169.254.169.254";
/// Lifetime asked for the IMDSv2 session token (6 h, the maximum).
const IMDS_TOKEN_TTL_S: &str = "21600";

/// A ureq agent for one short exchange: rustls (ring) for `https://`, the
/// system's roots, no redirects, statuses as answers.
pub(super) fn agent(timeout: Duration, tls: Option<ureq::tls::TlsConfig>) -> ureq::Agent {
    let tls = tls.unwrap_or_else(|| {
        ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::Rustls)
            .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .root_certs(roots::kinesis_roots().0)
            .build()
    });
    let config = ureq::Agent::config_builder()
        .tls_config(tls)
        .timeout_global(Some(timeout))
        .timeout_connect(Some(timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        .user_agent(concat!("mqtt-kinesis-bridge/", env!("CARGO_PKG_VERSION")))
        .build();
    // The same parts as the Kinesis client's agent, so no second copy of ureq's
    // request machinery is compiled in.
    ureq::Agent::with_parts(
        config,
        ureq::unversioned::transport::DefaultConnector::new(),
        CachingResolver::default(),
    )
}

/// An answer: status, body, and AWS's time from its `Date` (Unix ms), if any.
pub(super) struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
    pub date_ms: Option<i64>,
}

impl Answer {
    pub fn read(mut response: http::Response<ureq::Body>) -> Result<Answer, ureq::Error> {
        let date_ms = response
            .headers()
            .get("date")
            .and_then(|value| value.to_str().ok())
            .and_then(skew::parse_http_date)
            // `Date` drops the milliseconds: the middle of its second.
            .map(|ms| ms + 500);
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER)
            .read_to_vec()?;
        Ok(Answer {
            status: response.status().as_u16(),
            body,
            date_ms,
        })
    }

    /// AWS's time now: the answer's `Date`, else our clock corrected by the
    /// offset the drain learned from Kinesis.
    pub fn aws_now_ms(&self, aws_offset_ms: i64) -> i64 {
        self.date_ms
            .unwrap_or_else(|| clock::unix_ms() + aws_offset_ms)
    }

    /// The body as text for an error message: short, one line.
    pub fn excerpt(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
        line.chars().take(200).collect()
    }

    pub fn credentials(
        &self,
        parse: fn(&[u8]) -> Result<Document, DocumentError>,
        source: &str,
        aws_offset_ms: i64,
    ) -> Result<Credentials, CredentialsError> {
        let document = parse(&self.body).map_err(|detail| CredentialsError::Source {
            source: source.to_owned(),
            detail: format!("its answer: {detail}"),
        })?;
        Ok(document.into_credentials(
            source.to_owned(),
            self.aws_now_ms(aws_offset_ms),
            Instant::now(),
        ))
    }
}

/// The container credentials endpoint, as the environment configures it.
pub struct Container {
    url: String,
    token: ContainerToken,
}

enum ContainerToken {
    None,
    Value(Secret),
    /// Read at each fetch.
    File(String),
}

impl Container {
    /// `None` when neither URI variable is set; an error for a URI the SDKs refuse.
    pub fn from_env(env: Env<'_>) -> Result<Option<Container>, CredentialsError> {
        let url = match (
            env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"),
            env("AWS_CONTAINER_CREDENTIALS_FULL_URI"),
        ) {
            (Some(relative), _) => container_url(Some(&relative), None)?,
            (None, Some(full)) => container_url(None, Some(&full))?,
            (None, None) => return Ok(None),
        };
        let token = match (
            env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"),
            env("AWS_CONTAINER_AUTHORIZATION_TOKEN"),
        ) {
            (Some(file), _) => ContainerToken::File(file),
            (None, Some(token)) => ContainerToken::Value(Secret::new(token)),
            (None, None) => ContainerToken::None,
        };
        Ok(Some(Container { url, token }))
    }

    pub fn source(&self) -> String {
        format!("container endpoint {}", self.url)
    }

    pub fn fetch(&self, aws_offset_ms: i64) -> Result<Credentials, CredentialsError> {
        let source = self.source();
        let failed = |detail: String| CredentialsError::Source {
            source: source.clone(),
            detail,
        };
        let token = match &self.token {
            ContainerToken::None => None,
            ContainerToken::Value(token) => Some(token.clone()),
            ContainerToken::File(path) => Some(Secret::new(
                std::fs::read_to_string(path)
                    .map_err(|error| {
                        failed(format!(
                            "cannot read AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE {path}: {error}"
                        ))
                    })?
                    .trim(),
            )),
        };
        let mut request = agent(CONTAINER_TIMEOUT, None).get(&self.url);
        if let Some(token) = &token {
            request = request.header("Authorization", token.expose());
        }
        let answer = request
            .call()
            .and_then(Answer::read)
            .map_err(|error| failed(format!("no answer: {error}")))?;
        if answer.status != 200 {
            return Err(failed(format!(
                "HTTP {}: {}",
                answer.status,
                answer.excerpt()
            )));
        }
        answer.credentials(document::parse_container, &source, aws_offset_ms)
    }
}

/// The URL to ask: a relative URI on the ECS agent, or a full URI the SDKs allow.
pub fn container_url(
    relative: Option<&str>,
    full: Option<&str>,
) -> Result<String, CredentialsError> {
    let refused = |detail: String| CredentialsError::Source {
        source: "the container endpoint".into(),
        detail,
    };
    if let Some(relative) = relative {
        let relative = if relative.starts_with('/') {
            relative.to_owned()
        } else {
            format!("/{relative}")
        };
        return Ok(format!("{ECS_HOST}{relative}"));
    }
    let full = full.unwrap_or_default();
    let uri: http::Uri = full.parse().map_err(|_| {
        refused(format!(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI {full:?} is not a URL"
        ))
    })?;
    match (uri.scheme_str(), uri.host()) {
        (Some("https"), Some(_)) => Ok(full.to_owned()),
        (Some("http"), Some(host)) => {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let allowed = host == "localhost"
                || host == "169.254.170.2"
                || host == "169.254.170.23"
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback() || ip.to_string() == "fd00:ec2::23");
            if allowed {
                Ok(full.to_owned())
            } else {
                Err(refused(format!(
                    "AWS_CONTAINER_CREDENTIALS_FULL_URI {full:?}: plain http only to a loopback \
                     address, 169.254.170.2, 169.254.170.23 or fd00:ec2::23"
                )))
            }
        }
        _ => Err(refused(format!(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI {full:?} is not an http:// or https:// URL"
        ))),
    }
}

/// The instance metadata service.
pub struct Imds {
    endpoint: String,
}

/// Why instance metadata gave no credentials.
#[derive(Debug)]
pub enum ImdsError {
    /// Not there (not on EC2, no role): the chain simply ends. Says why.
    Absent(String),
    /// There, with a role, but its credentials cannot be had.
    Failed(CredentialsError),
}

impl Imds {
    /// `None` when `AWS_EC2_METADATA_DISABLED` is `true`.
    pub fn from_env(env: Env<'_>) -> Option<Imds> {
        if env("AWS_EC2_METADATA_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return None;
        }
        let endpoint = env("AWS_EC2_METADATA_SERVICE_ENDPOINT")
            .unwrap_or_else(|| IMDS_DEFAULT_ENDPOINT.to_owned());
        Some(Imds {
            endpoint: endpoint.trim_end_matches('/').to_owned(),
        })
    }

    pub fn fetch(&self, aws_offset_ms: i64) -> Result<Credentials, ImdsError> {
        let agent = agent(IMDS_TIMEOUT, None);
        let token = agent
            .put(format!("{}/latest/api/token", self.endpoint))
            .header("X-aws-ec2-metadata-token-ttl-seconds", IMDS_TOKEN_TTL_S)
            .send_empty()
            .and_then(Answer::read)
            .map_err(|error| {
                ImdsError::Absent(format!(
                    "no answer from {} ({error}): not on EC2, or a hop limit of 1 keeps the answer from a container",
                    self.endpoint
                ))
            })?;
        if token.status != 200 {
            return Err(ImdsError::Absent(format!(
                "{} refused an IMDSv2 token: HTTP {}",
                self.endpoint, token.status
            )));
        }
        let token = Secret::new(String::from_utf8_lossy(&token.body).trim());
        let get = |path: &str| {
            agent
                .get(format!(
                    "{}/latest/meta-data/iam/security-credentials/{path}",
                    self.endpoint
                ))
                .header("X-aws-ec2-metadata-token", token.expose())
                .call()
                .and_then(Answer::read)
        };
        let roles = get("")
            .map_err(|error| ImdsError::Absent(format!("{}: no answer: {error}", self.endpoint)))?;
        let role = String::from_utf8_lossy(&roles.body)
            .lines()
            .next()
            .map(str::trim)
            .unwrap_or_default()
            .to_owned();
        if roles.status != 200 || role.is_empty() {
            return Err(ImdsError::Absent(
                "the instance has no IAM role (instance profile)".into(),
            ));
        }
        let source = format!("instance metadata (IMDSv2), role {role}");
        let failed = |detail: String| {
            ImdsError::Failed(CredentialsError::Source {
                source: source.clone(),
                detail,
            })
        };
        let answer = get(&role).map_err(|error| failed(format!("no answer: {error}")))?;
        if answer.status != 200 {
            return Err(failed(format!(
                "HTTP {}: {}",
                answer.status,
                answer.excerpt()
            )));
        }
        answer
            .credentials(document::parse_imds, &source, aws_offset_ms)
            .map_err(ImdsError::Failed)
    }
}

#[cfg(test)]
mod tests {
    use super::container_url;

    #[test]
    fn container_urls_as_the_sdks_allow_them() {
        assert_eq!(
            container_url(Some("/v2/credentials/abc"), Some("http://ignored")).unwrap(),
            "http://169.254.170.2/v2/credentials/abc"
        );
        for allowed in [
            "http://127.0.0.1:8080/creds",
            "http://localhost/creds",
            "http://169.254.170.23/v1/credentials",
            "http://[fd00:ec2::23]/v1/credentials",
            "http://[::1]:9/x",
            "https://creds.example.com/x",
        ] {
            assert_eq!(container_url(None, Some(allowed)).unwrap(), allowed);
        }
        for refused in ["http://10.0.0.5/creds", "ftp://127.0.0.1/x", "not a url"] {
            assert!(container_url(None, Some(refused)).is_err(), "{refused}");
        }
    }
}
