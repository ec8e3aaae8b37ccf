//! Log lines for a condition that repeats (records dropped at every commit,
//! say): one line when it starts, a count per interval while it lasts, one
//! line when it ends; never a line per occurrence. Pure: the caller passes
//! the time and writes the lines.

use std::time::{Duration, Instant};

/// What to log now, if anything.
#[derive(Debug, PartialEq, Eq)]
pub enum Report {
    /// The first occurrence after a quiet spell, with its count.
    Started(u64),
    /// Occurrences counted since the last line, and over how long.
    Summary { count: u64, over: Duration },
    /// No occurrence for a whole interval: how many there were, over how long.
    Ended { total: u64, lasted: Duration },
}

#[derive(Debug)]
pub struct Repeating {
    interval: Duration,
    active: Option<Active>,
}

#[derive(Debug)]
struct Active {
    started: Instant,
    last_seen: Instant,
    last_report: Instant,
    since_report: u64,
    total: u64,
}

impl Repeating {
    /// Summaries at most every `interval`; quiet for `interval` means ended.
    pub fn new(interval: Duration) -> Repeating {
        Repeating {
            interval,
            active: None,
        }
    }

    /// `count` more occurrences at `now`.
    pub fn occurred(&mut self, count: u64, now: Instant) -> Option<Report> {
        let ended = self.ended(now);
        match &mut self.active {
            None => {
                self.active = Some(Active {
                    started: now,
                    last_seen: now,
                    last_report: now,
                    since_report: 0,
                    total: count,
                });
                // An end and a new start at once: the start is the news.
                let _ = ended;
                Some(Report::Started(count))
            }
            Some(active) => {
                active.last_seen = now;
                active.total += count;
                active.since_report += count;
                let over = now.duration_since(active.last_report);
                if over < self.interval {
                    return None;
                }
                let report = Report::Summary {
                    count: active.since_report,
                    over,
                };
                active.last_report = now;
                active.since_report = 0;
                Some(report)
            }
        }
    }

    /// Nothing occurred at `now`: the end, once a whole interval has passed quietly.
    pub fn quiet(&mut self, now: Instant) -> Option<Report> {
        self.ended(now)
    }

    fn ended(&mut self, now: Instant) -> Option<Report> {
        let active = self.active.as_ref()?;
        if now.duration_since(active.last_seen) < self.interval {
            return None;
        }
        let report = Report::Ended {
            total: active.total,
            lasted: active.last_seen.duration_since(active.started),
        };
        self.active = None;
        Some(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn one_line_to_start_one_per_interval_and_one_to_end() {
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        let mut drops = Repeating::new(MINUTE);
        assert_eq!(drops.occurred(5, at(0)), Some(Report::Started(5)));
        // 1,851 commits' worth in the next minute: silent until the interval is up.
        for second in 1..60 {
            assert_eq!(drops.occurred(10, at(second)), None);
            assert_eq!(drops.quiet(at(second)), None);
        }
        assert_eq!(
            drops.occurred(10, at(60)),
            Some(Report::Summary {
                count: 600,
                over: MINUTE
            })
        );
        assert_eq!(drops.quiet(at(119)), None, "not a whole quiet interval yet");
        assert_eq!(
            drops.quiet(at(120)),
            Some(Report::Ended {
                total: 605,
                lasted: MINUTE
            })
        );
        assert_eq!(drops.quiet(at(500)), None, "ended once");
        assert_eq!(drops.occurred(1, at(501)), Some(Report::Started(1)));
    }
}
