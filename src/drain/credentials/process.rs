//! `credential_process`: runs a profile's command and reads the credentials it prints.
//!
//! The command line runs with `sh -c` (as the Go and Rust SDKs do), its
//! stderr going to the gateway's (the journal); stdout must be the
//! documented JSON (`{"Version": 1, "AccessKeyId": …, "SecretAccessKey": …,
//! "SessionToken": …, "Expiration": …}`, the last two optional). A command
//! that runs longer than [`TIMEOUT`] is killed. It runs on the drain's
//! credentials thread, never on an executor.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::document;
use super::{Credentials, CredentialsError};
use crate::clock;

/// How long the command may run.
pub const TIMEOUT: Duration = Duration::from_secs(60);
/// Its output is a few hundred bytes; more is not credentials.
const MAX_OUTPUT: u64 = 64 * 1024;

/// Runs `command` and returns what it printed; `source` names it in errors and logs.
pub fn run(
    command: &str,
    source: &str,
    aws_offset_ms: i64,
) -> Result<Credentials, CredentialsError> {
    let failed = |detail: String| CredentialsError::Source {
        source: source.to_owned(),
        detail,
    };
    let mut child = Command::new("sh")
        .args(["-c", command])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|error| failed(format!("cannot start: {error}")))?;
    let mut stdout = child.stdout.take().expect("stdout is piped");
    // Read on another thread, so a command that prints much and never exits
    // cannot block the wait below.
    let reader = std::thread::Builder::new()
        .name("credential-process".into())
        .spawn(move || {
            let mut output = Vec::new();
            let _ = (&mut stdout).take(MAX_OUTPUT).read_to_end(&mut output);
            output
        })
        .map_err(|error| failed(format!("cannot start a thread: {error}")))?;
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(failed(format!("still running after {TIMEOUT:?}: killed")));
            }
            Err(error) => return Err(failed(format!("cannot wait for it: {error}"))),
        }
    };
    let output = reader.join().unwrap_or_default();
    if !status.success() {
        return Err(failed(format!("exited with {status}")));
    }
    let document = document::parse_process(&output)
        .map_err(|detail| failed(format!("its output: {detail}")))?;
    Ok(document.into_credentials(
        source.to_owned(),
        clock::unix_ms() + aws_offset_ms,
        Instant::now(),
    ))
}
