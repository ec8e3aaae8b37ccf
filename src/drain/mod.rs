//! Spool → Kinesis (placeholder; see issue 2).

use std::fmt;
use std::thread::JoinHandle;

use crate::config::KinesisConfig;
use crate::shutdown::Shutdown;
use crate::spool::Spool;

#[derive(Debug)]
pub enum DrainError {
    /// No usable AWS credentials at start-up.
    Credentials(String),
}

impl fmt::Display for DrainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DrainError::Credentials(message) => write!(f, "aws credentials: {message}"),
        }
    }
}

impl std::error::Error for DrainError {}

/// Starts the drain thread. It sends the oldest records until shutdown, then
/// finishes the request in flight and returns.
pub fn start(
    config: KinesisConfig,
    spool: Spool,
    shutdown: Shutdown,
) -> Result<JoinHandle<()>, DrainError> {
    let _ = (config, spool);
    Ok(std::thread::spawn(move || {
        shutdown.wait_timeout(std::time::Duration::MAX);
    }))
}
