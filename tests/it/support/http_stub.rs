//! Stand-ins for the places AWS credentials come from, speaking real HTTP:
//! a small HTTP/1.1 server (plain, or TLS that requires a client certificate
//! from the test CA), and on it the IoT credentials provider, the container
//! endpoint and IMDSv2.
//!
//! One request per connection (`Connection: close`), every request recorded,
//! every answer with a `Date`. Handlers are closures over the test's state.

use std::io::{BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;

use super::kinesis::{civil_from_days, http_date, KeyRing, ServedKey};
use super::tls::TestPki;

/// A request as the stand-in saw it.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Names in lower case.
    pub headers: Vec<(String, String)>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// An answer: status and body, after an optional delay.
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub delay: Duration,
    /// The server's clock minus the machine's, in seconds, as its `Date` says.
    pub clock_offset_s: i64,
}

impl Reply {
    pub fn new(status: u16, body: impl Into<String>) -> Reply {
        Reply {
            status,
            body: body.into(),
            delay: Duration::ZERO,
            clock_offset_s: 0,
        }
    }
}

type Handler = Arc<dyn Fn(&Request) -> Reply + Send + Sync>;

/// An HTTP server on 127.0.0.1, stopped on drop.
pub struct HttpStub {
    port: u16,
    tls: bool,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
}

impl HttpStub {
    /// Plain HTTP.
    pub fn start(handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> HttpStub {
        HttpStub::spawn(None, Arc::new(handler))
    }

    /// HTTPS with the PKI's server certificate, requiring a client certificate
    /// signed by the PKI's CA (`ca.pem`); other clients fail the handshake.
    pub fn start_mtls(
        pki: &TestPki,
        handler: impl Fn(&Request) -> Reply + Send + Sync + 'static,
    ) -> HttpStub {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(pki.ca_pem()).expect("ca.pem") {
            roots.add(cert.expect("ca cert")).expect("add ca");
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::clone(&provider),
        )
        .build()
        .expect("client verifier");
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(pki.server_pem())
            .expect("server.pem")
            .map(|cert| cert.expect("server cert"))
            .collect();
        let key = PrivateKeyDer::from_pem_file(pki.server_key()).expect("server.key");
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .expect("server config");
        HttpStub::spawn(Some(Arc::new(config)), Arc::new(handler))
    }

    fn spawn(tls: Option<Arc<rustls::ServerConfig>>, handler: Handler) -> HttpStub {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind stub");
        let port = listener.local_addr().expect("local addr").port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let stub = HttpStub {
            port,
            tls: tls.is_some(),
            requests: Arc::clone(&requests),
            stop: Arc::clone(&stop),
        };
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (tls, handler, requests) =
                    (tls.clone(), Arc::clone(&handler), Arc::clone(&requests));
                std::thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                    match tls {
                        None => serve(stream, &handler, &requests),
                        Some(config) => {
                            let Ok(connection) = rustls::ServerConnection::new(config) else {
                                return;
                            };
                            let tls_stream = rustls::StreamOwned::new(connection, stream);
                            serve(tls_stream, &handler, &requests);
                        }
                    }
                });
            }
        });
        stub
    }

    /// `http://127.0.0.1:{port}`, or `https://localhost:{port}` (the name on the server certificate).
    pub fn url(&self) -> String {
        if self.tls {
            format!("https://localhost:{}", self.port)
        } else {
            format!("http://127.0.0.1:{}", self.port)
        }
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for HttpStub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// One request, one answer, close.
fn serve<S: Read + Write>(stream: S, handler: &Handler, requests: &Mutex<Vec<Request>>) {
    let mut reader = BufReader::new(stream);
    // None: a TLS handshake the client gave up, or a refused client certificate.
    let Some(super::http_head::Head {
        method,
        path,
        headers,
        content_length,
    }) = super::http_head::read_head(&mut reader)
    else {
        return;
    };
    let mut body = vec![0; content_length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let request = Request {
        method,
        path,
        headers,
    };
    requests
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(request.clone());
    let reply = handler(&request);
    std::thread::sleep(reply.delay);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let answer = format!(
        "HTTP/1.1 {} Whatever\r\nDate: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        reply.status,
        http_date(now + reply.clock_offset_s),
        reply.body.len(),
        reply.body
    );
    let stream = reader.get_mut();
    let _ = stream.write_all(answer.as_bytes());
    let _ = stream.flush();
}

/// Unix seconds as `2026-11-30T10:00:00Z`.
pub fn iso8601(secs: i64) -> String {
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let rest = secs.rem_euclid(86_400);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// A fresh key valid for `lifetime`, put in `ring`: (key id, the key).
pub fn serve_key(
    ring: &KeyRing,
    prefix: &str,
    n: usize,
    lifetime: Duration,
) -> (String, ServedKey) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let expires_s = now + lifetime.as_secs() as i64;
    let key = ServedKey {
        secret: format!("{prefix}-secret-{n}-{}", fastrand::u64(..)),
        token: format!("{prefix}-token-{n}-{}", fastrand::u64(..)),
        expires_at: UNIX_EPOCH + Duration::from_secs(expires_s as u64),
    };
    let key_id = format!("ASIA{}{n:04}", prefix.to_ascii_uppercase());
    ring.lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key_id.clone(), key.clone());
    (key_id, key)
}

fn expiration(key: &ServedKey) -> String {
    iso8601(
        key.expires_at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64),
    )
}

/// How the IoT stand-in answers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum IotMode {
    /// Fresh credentials valid for `lifetime`.
    Serve,
    /// This HTTP status with an error message (an outage).
    Fail(u16),
}

struct IotState {
    mode: IotMode,
    /// AWS's clock minus the machine's, in seconds: the answers' `Date` and
    /// `expiration` are in AWS's time (the keys' real expiry is not moved).
    clock_offset_s: i64,
    lifetime: Duration,
    n_served: usize,
    n_failed: usize,
    served: Vec<(String, ServedKey)>,
}

/// The AWS IoT credentials provider: mutual TLS with the test CA,
/// `GET /role-aliases/{alias}/credentials`, the documented JSON.
pub struct IotStandIn {
    stub: HttpStub,
    state: Arc<Mutex<IotState>>,
}

impl IotStandIn {
    pub fn start(pki: &TestPki, role_alias: &str, ring: KeyRing, lifetime: Duration) -> IotStandIn {
        let state = Arc::new(Mutex::new(IotState {
            mode: IotMode::Serve,
            clock_offset_s: 0,
            lifetime,
            n_served: 0,
            n_failed: 0,
            served: Vec::new(),
        }));
        let path = format!("/role-aliases/{role_alias}/credentials");
        let handler_state = Arc::clone(&state);
        let stub = HttpStub::start_mtls(pki, move |request| {
            let mut state = handler_state.lock().unwrap_or_else(|e| e.into_inner());
            if request.method != "GET" || request.path != path {
                return Reply::new(
                    404,
                    json!({"message": "Role alias does not exist"}).to_string(),
                );
            }
            match state.mode {
                IotMode::Fail(status) => {
                    state.n_failed += 1;
                    Reply::new(status, json!({"message": "injected outage"}).to_string())
                }
                IotMode::Serve => {
                    state.n_served += 1;
                    let n = state.n_served;
                    let (key_id, key) = serve_key(&ring, "iot", n, state.lifetime);
                    state.served.push((key_id.clone(), key.clone()));
                    let expires_s = key
                        .expires_at
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs() as i64);
                    Reply {
                        clock_offset_s: state.clock_offset_s,
                        ..Reply::new(
                            200,
                            json!({"credentials": {
                                "accessKeyId": key_id,
                                "secretAccessKey": key.secret,
                                "sessionToken": key.token,
                                "expiration": iso8601(expires_s + state.clock_offset_s),
                            }})
                            .to_string(),
                        )
                    }
                }
            }
        });
        IotStandIn { stub, state }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, IotState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `https://localhost:{port}`: `kinesis.iot.endpoint` for the gateway.
    pub fn url(&self) -> String {
        self.stub.url()
    }

    /// Runs AWS's clock `offset_s` seconds off the machine's (a gateway whose clock is wrong).
    pub fn set_clock_offset(&self, offset_s: i64) {
        self.lock().clock_offset_s = offset_s;
    }

    pub fn set_mode(&self, mode: IotMode) {
        self.lock().mode = mode;
    }

    pub fn n_served(&self) -> usize {
        self.lock().n_served
    }

    pub fn n_failed(&self) -> usize {
        self.lock().n_failed
    }

    /// Every key handed out, oldest first.
    pub fn served(&self) -> Vec<(String, ServedKey)> {
        self.lock().served.clone()
    }

    /// The `x-amzn-iot-thingname` of every request.
    pub fn thing_names(&self) -> Vec<String> {
        self.stub
            .requests()
            .iter()
            .map(|r| r.header("x-amzn-iot-thingname").unwrap_or("").to_owned())
            .collect()
    }
}

/// The container credentials endpoint: answers `path` when the
/// `Authorization` header is `token`, with a key from `ring`.
pub fn container_stand_in(ring: KeyRing, path: &'static str, token: &'static str) -> HttpStub {
    let n = Arc::new(Mutex::new(0));
    HttpStub::start(move |request| {
        if request.path != path {
            return Reply::new(404, "not found");
        }
        if request.header("authorization") != Some(token) {
            return Reply::new(401, json!({"message": "unauthorized"}).to_string());
        }
        let mut n = n.lock().unwrap_or_else(|e| e.into_inner());
        *n += 1;
        let (key_id, key) = serve_key(&ring, "ecs", *n, Duration::from_secs(3600));
        Reply::new(
            200,
            json!({
                "AccessKeyId": key_id,
                "SecretAccessKey": key.secret,
                "Token": key.token,
                "Expiration": expiration(&key),
            })
            .to_string(),
        )
    })
}

/// IMDSv2 with one role, `role`: a token from `PUT /latest/api/token` (with
/// the TTL header) is required on every GET.
pub fn imds_stand_in(ring: KeyRing, role: &'static str) -> HttpStub {
    const TOKEN: &str = "imds-session-token";
    let n = Arc::new(Mutex::new(0));
    HttpStub::start(move |request| {
        let base = "/latest/meta-data/iam/security-credentials/";
        match (request.method.as_str(), request.path.as_str()) {
            ("PUT", "/latest/api/token") => {
                if request
                    .header("x-aws-ec2-metadata-token-ttl-seconds")
                    .is_none()
                {
                    return Reply::new(400, "missing ttl");
                }
                Reply::new(200, TOKEN)
            }
            ("GET", path) if path.starts_with(base) => {
                if request.header("x-aws-ec2-metadata-token") != Some(TOKEN) {
                    return Reply::new(401, "IMDSv2 token required");
                }
                match &path[base.len()..] {
                    "" => Reply::new(200, format!("{role}\n")),
                    asked if asked == role => {
                        let mut n = n.lock().unwrap_or_else(|e| e.into_inner());
                        *n += 1;
                        let (key_id, key) =
                            serve_key(&ring, "imds", *n, Duration::from_secs(6 * 3600));
                        Reply::new(
                            200,
                            json!({
                                "Code": "Success",
                                "Type": "AWS-HMAC",
                                "AccessKeyId": key_id,
                                "SecretAccessKey": key.secret,
                                "Token": key.token,
                                "Expiration": expiration(&key),
                            })
                            .to_string(),
                        )
                    }
                    _ => Reply::new(404, "no such role"),
                }
            }
            _ => Reply::new(404, "not found"),
        }
    })
}
