//! Host name lookups for the drain's HTTP client, at most once a minute.
//!
//! ureq looks the host up before every request, even on a pooled connection,
//! and with a timeout set it does so on a new thread: a thread per PutRecords.
//! Keeping the answer for [`TTL`] makes that one thread a minute, and DNS
//! changes (a moved VPC endpoint) still arrive within a minute.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use ureq::config::Config;
use ureq::http::Uri;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;

/// How long an answer is used.
const TTL: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
pub struct CachingResolver {
    lookup: DefaultResolver,
    /// The last answer: for which URI authority, and when it was looked up.
    last: Mutex<Option<(String, ResolvedSocketAddrs, Instant)>>,
}

impl Resolver for CachingResolver {
    fn resolve(
        &self,
        uri: &Uri,
        config: &Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let key = format!(
            "{}{}",
            uri.scheme_str().unwrap_or(""),
            uri.authority().map_or("", |a| a.as_str())
        );
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((cached_key, addrs, at)) = last.as_ref() {
            if *cached_key == key && at.elapsed() < TTL {
                return Ok(addrs.clone());
            }
        }
        // Failures are not kept: the next request looks again.
        let addrs = self.lookup.resolve(uri, config, timeout)?;
        *last = Some((key, addrs.clone(), Instant::now()));
        Ok(addrs)
    }
}
