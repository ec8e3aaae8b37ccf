//! The sd_notify protocol: a few lines over the datagram socket systemd names
//! in `NOTIFY_SOCKET`, so a `Type=notify` unit knows when the gateway is ready
//! and a wedged gateway stops feeding the watchdog and is restarted.
//!
//! Outside systemd (no `NOTIFY_SOCKET`) every call here is a no-op.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Where to send notifications; `None` when not started by systemd.
#[derive(Debug, Clone)]
pub struct Notifier {
    socket: String,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`: a path, or `@name` for the abstract namespace.
    pub fn from_env() -> Option<Notifier> {
        let socket = std::env::var("NOTIFY_SOCKET").ok()?;
        (!socket.is_empty()).then_some(Notifier { socket })
    }

    /// Sends one notification such as `READY=1`. A failure is logged, not
    /// fatal: the gateway's job matters more than its supervisor's view of it.
    pub fn notify(&self, state: &str) {
        if let Err(error) = self.send(state) {
            log::warn!(
                "cannot notify systemd ({}) of {state}: {error}",
                self.socket
            );
        }
    }

    fn send(&self, state: &str) -> std::io::Result<()> {
        let socket = UnixDatagram::unbound()?;
        match self.socket.strip_prefix('@') {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                socket.send_to_addr(state.as_bytes(), &address)?;
            }
            None => {
                socket.send_to(state.as_bytes(), &self.socket)?;
            }
        }
        Ok(())
    }
}

/// The watchdog timeout systemd expects pings within (`WatchdogSec=`), when it
/// is enabled for this process (`WATCHDOG_USEC`, and `WATCHDOG_PID` is ours or unset).
pub fn watchdog_timeout() -> Option<Duration> {
    let usec = std::env::var("WATCHDOG_USEC").ok()?;
    watchdog_timeout_from(
        &usec,
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

fn watchdog_timeout_from(usec: &str, pid: Option<&str>, our_pid: u32) -> Option<Duration> {
    if let Some(pid) = pid {
        if pid.parse::<u32>().ok()? != our_pid {
            return None;
        }
    }
    match usec.parse::<u64>().ok()? {
        0 => None,
        usec => Some(Duration::from_micros(usec)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_timeout_is_read_for_our_pid_only() {
        let timeout = |usec, pid| watchdog_timeout_from(usec, pid, 42);
        assert_eq!(timeout("30000000", None), Some(Duration::from_secs(30)));
        assert_eq!(
            timeout("30000000", Some("42")),
            Some(Duration::from_secs(30))
        );
        assert_eq!(timeout("30000000", Some("43")), None);
        assert_eq!(timeout("0", None), None);
        assert_eq!(timeout("soon", None), None);
    }

    #[test]
    fn notifications_reach_a_path_socket_and_an_abstract_one() {
        let dir = std::env::temp_dir().join(format!("mkb-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).unwrap();
        Notifier {
            socket: path.display().to_string(),
        }
        .send("READY=1")
        .unwrap();
        let mut buffer = [0; 64];
        let n = listener.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..n], b"READY=1");
        std::fs::remove_dir_all(&dir).unwrap();

        use std::os::linux::net::SocketAddrExt;
        let name = format!("mkb-notify-test-{}", std::process::id());
        let address = std::os::unix::net::SocketAddr::from_abstract_name(&name).unwrap();
        let listener = UnixDatagram::bind_addr(&address).unwrap();
        Notifier {
            socket: format!("@{name}"),
        }
        .send("WATCHDOG=1")
        .unwrap();
        let n = listener.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..n], b"WATCHDOG=1");
    }
}
