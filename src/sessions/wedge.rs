//! A broker wedged by one message: it redelivers, at every reconnect, a
//! message the MQTT library cannot read (over `mqtt.max_packet_size`, a topic
//! that is not UTF-8), and every connection dies on it. Nothing the gateway
//! can do reads past it; it can say so, once, with the remedy.
//!
//! Pure: fed what happened to each connection, it says when the broker counts
//! as wedged and when it is free again.

use std::time::{Duration, SystemTime};

/// Connections in a row that died on the same unreadable data before the
/// broker counts as wedged (one could be chance; three are a loop).
pub const WEDGED_AFTER: u32 = 3;
/// A connection up this long has read past whatever wedged it.
pub const FREE_AFTER: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
pub struct WedgeWatch {
    streak: u32,
    reason: Option<String>,
    first_at: Option<SystemTime>,
    wedged: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    None,
    /// Now wedged: since the first of the streak, on `reason`.
    Wedged {
        since: SystemTime,
        reason: String,
    },
    /// Messages flow again after `n_connections` that died.
    Freed {
        n_connections: u32,
    },
}

impl WedgeWatch {
    /// A connection that had been up for `up_for` ended: on unreadable data
    /// (`malformed`: what the library said) or for another reason (`None`).
    pub fn on_disconnect(
        &mut self,
        up_for: Duration,
        malformed: Option<&str>,
        now: SystemTime,
    ) -> Change {
        let Some(reason) = malformed else {
            // A network error says nothing about the message; a long
            // connection read past it.
            return if up_for >= FREE_AFTER {
                self.free()
            } else {
                Change::None
            };
        };
        if self.reason.as_deref() != Some(reason) {
            // Another unreadable thing: a new streak.
            self.streak = 0;
            self.reason = Some(reason.to_owned());
            self.first_at = Some(now);
        }
        self.streak += 1;
        if self.streak >= WEDGED_AFTER && !self.wedged {
            self.wedged = true;
            return Change::Wedged {
                since: self.first_at.unwrap_or(now),
                reason: reason.to_owned(),
            };
        }
        Change::None
    }

    /// A message arrived intact on a connection up for `up_for()` (asked
    /// only while a streak is open: this runs for every message).
    pub fn on_message(&mut self, up_for: impl FnOnce() -> Duration) -> Change {
        if self.streak > 0 && up_for() >= FREE_AFTER {
            return self.free();
        }
        Change::None
    }

    pub fn is_wedged(&self) -> bool {
        self.wedged
    }

    fn free(&mut self) -> Change {
        let was = std::mem::take(self);
        if was.wedged {
            Change::Freed {
                n_connections: was.streak,
            }
        } else {
            Change::None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOO_BIG: &str = "malformed data from the broker: payload size limit exceeded";

    #[test]
    fn the_same_unreadable_message_three_times_in_a_row_wedges_once() {
        let mut watch = WedgeWatch::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let short = Duration::from_millis(50);
        assert_eq!(watch.on_disconnect(short, Some(TOO_BIG), t0), Change::None);
        // A network error in between neither breaks nor counts.
        assert_eq!(watch.on_disconnect(short, None, t0), Change::None);
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(watch.on_disconnect(short, Some(TOO_BIG), t1), Change::None);
        assert_eq!(
            watch.on_disconnect(short, Some(TOO_BIG), t1),
            Change::Wedged {
                since: t0,
                reason: TOO_BIG.into()
            }
        );
        assert!(watch.is_wedged());
        // Said once.
        assert_eq!(watch.on_disconnect(short, Some(TOO_BIG), t1), Change::None);
        // Messages on a short connection: not yet free (the redelivery may
        // still be ahead); on a long one: free.
        assert_eq!(watch.on_message(|| short), Change::None);
        assert_eq!(
            watch.on_message(|| FREE_AFTER),
            Change::Freed { n_connections: 4 }
        );
        assert!(!watch.is_wedged());
        assert_eq!(watch.on_message(|| FREE_AFTER), Change::None);
    }

    #[test]
    fn different_reasons_start_a_new_streak() {
        let mut watch = WedgeWatch::default();
        let now = SystemTime::UNIX_EPOCH;
        let short = Duration::ZERO;
        watch.on_disconnect(short, Some("a"), now);
        watch.on_disconnect(short, Some("a"), now);
        assert_eq!(watch.on_disconnect(short, Some("b"), now), Change::None);
        assert!(!watch.is_wedged());
        // A long connection that ends on a network error frees a streak that
        // never wedged, silently.
        assert_eq!(watch.on_disconnect(FREE_AFTER, None, now), Change::None);
        assert_eq!(watch.on_disconnect(short, Some("b"), now), Change::None);
        assert_eq!(watch.on_disconnect(short, Some("b"), now), Change::None);
        assert!(
            !watch.is_wedged(),
            "the streak restarted at the long connection"
        );
    }
}
