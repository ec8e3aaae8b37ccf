//! How far this gateway's clock is from AWS's, learned from the `Date` header
//! of every answer. Pure.
//!
//! SigV4 signatures more than 5 minutes off AWS's clock are refused, and a
//! Raspberry Pi without RTC or NTP boots with whatever time it saved last.
//! The drain signs with its clock plus this offset. `Date` has a resolution
//! of one second, so offsets under two seconds count as none; one odd header
//! cannot move the offset (the median of the last few answers decides), but an
//! answer that says the signature's time was refused is believed at once.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Answers the median is taken over.
const WINDOW: usize = 5;
/// Below this the offset is noise of the header's one-second resolution.
const NOISE_MS: i64 = 2_000;
/// Above this the operator is told the clock is wrong.
pub const WARN_MS: i64 = 30_000;

#[derive(Debug, Default)]
pub struct ClockSkew {
    /// AWS's clock minus ours, in ms, per recent answer (newest last).
    samples: VecDeque<i64>,
    offset_ms: i64,
}

/// A change worth a log line.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    /// The clock is off by more than [`WARN_MS`]: AWS's minus ours, in ms.
    Off(i64),
    /// It agrees with AWS again.
    Agrees,
}

impl ClockSkew {
    /// AWS's clock minus ours, in ms, as used for signing.
    pub fn offset_ms(&self) -> i64 {
        self.offset_ms
    }

    /// Our time corrected by the offset.
    pub fn corrected(&self, local: SystemTime) -> SystemTime {
        let offset = Duration::from_millis(self.offset_ms.unsigned_abs());
        if self.offset_ms >= 0 {
            local + offset
        } else {
            local.checked_sub(offset).unwrap_or(UNIX_EPOCH)
        }
    }

    /// The newest answer's own offset, before any median: what one answer says.
    pub fn last_sample_ms(&self) -> Option<i64> {
        self.samples.back().copied()
    }

    /// An answer's `Date` (server, Unix ms) received at our `local` Unix ms.
    pub fn observe(&mut self, server_ms: i64, local_ms: i64) -> Option<Change> {
        self.samples.push_back(server_ms - local_ms);
        while self.samples.len() > WINDOW {
            self.samples.pop_front();
        }
        let mut sorted: Vec<i64> = self.samples.iter().copied().collect();
        sorted.sort_unstable();
        // With fewer than three answers a single odd one must not decide.
        let median = if sorted.len() >= 3 {
            sorted[sorted.len() / 2]
        } else {
            self.offset_ms
        };
        self.set(median)
    }

    /// AWS refused a request as signed at the wrong time; its `Date` says when it is.
    pub fn refused(&mut self, server_ms: i64, local_ms: i64) -> Option<Change> {
        let sample = server_ms - local_ms;
        self.samples.clear();
        self.samples.push_back(sample);
        self.set(sample)
    }

    fn set(&mut self, offset_ms: i64) -> Option<Change> {
        let offset_ms = if offset_ms.abs() < NOISE_MS {
            0
        } else {
            offset_ms
        };
        let was_off = self.offset_ms.abs() > WARN_MS;
        self.offset_ms = offset_ms;
        match (was_off, offset_ms.abs() > WARN_MS) {
            (false, true) => Some(Change::Off(offset_ms)),
            (true, false) => Some(Change::Agrees),
            _ => None,
        }
    }
}

/// An HTTP `Date` (IMF-fixdate, `Sun, 06 Nov 1994 08:49:37 GMT`) as Unix ms.
pub fn parse_http_date(text: &str) -> Option<i64> {
    let mut words = text.split_whitespace();
    let _weekday = words.next()?;
    let day: i64 = words.next()?.parse().ok()?;
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month_name = words.next()?;
    let month = MONTHS.iter().position(|m| *m == month_name)? as i64 + 1;
    let year: i64 = words.next()?.parse().ok()?;
    let mut time = words.next()?.split(':');
    let hour: i64 = time.next()?.parse().ok()?;
    let minute: i64 = time.next()?.parse().ok()?;
    let second: i64 = time.next()?.parse().ok()?;
    if words.next()? != "GMT" || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60
    {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub(crate) fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;

    #[test]
    fn http_dates_parse_to_unix_milliseconds() {
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777_000)
        );
        assert_eq!(
            parse_http_date("Mon, 30 Nov 2026 07:05:17 GMT"),
            Some(1_796_022_317_000)
        );
        assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), None);
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 CET"), None);
        assert_eq!(parse_http_date(""), None);
    }

    #[test]
    fn a_steady_offset_is_learned_and_said_once() {
        let mut skew = ClockSkew::default();
        let local = 1_000 * HOUR;
        assert_eq!(
            skew.observe(local + 2 * HOUR, local),
            None,
            "one answer is not enough"
        );
        assert_eq!(skew.observe(local + 2 * HOUR + 400, local), None);
        assert_eq!(
            skew.observe(local + 2 * HOUR - 300, local),
            Some(Change::Off(2 * HOUR))
        );
        assert_eq!(skew.offset_ms(), 2 * HOUR);
        assert_eq!(
            skew.observe(local + 2 * HOUR + 1_000, local),
            None,
            "said once"
        );
        assert_eq!(
            crate::clock::describe_offset(skew.offset_ms()),
            "2h0m0s behind"
        );
    }

    #[test]
    fn one_odd_header_does_not_move_it_and_drift_does() {
        let mut skew = ClockSkew::default();
        for _ in 0..5 {
            skew.observe(10_000, 0);
        }
        assert_eq!(skew.offset_ms(), 10_000);
        skew.observe(5 * HOUR, 0);
        assert_eq!(skew.offset_ms(), 10_000, "a single outlier");
        for offset in [12_000, 12_000, 12_000] {
            skew.observe(offset, 0);
        }
        assert_eq!(skew.offset_ms(), 12_000, "drift followed");
    }

    #[test]
    fn a_refusal_is_believed_at_once_and_noise_is_no_offset() {
        let mut skew = ClockSkew::default();
        assert_eq!(skew.refused(-2 * HOUR, 0), Some(Change::Off(-2 * HOUR)));
        assert_eq!(
            crate::clock::describe_offset(skew.offset_ms()),
            "2h0m0s ahead of"
        );
        assert_eq!(skew.refused(1_500, 0), Some(Change::Agrees));
        assert_eq!(skew.offset_ms(), 0, "under the header's resolution");
    }

    #[test]
    fn the_corrected_time_moves_by_the_offset() {
        let mut skew = ClockSkew::default();
        let local = UNIX_EPOCH + Duration::from_secs(1_000_000);
        skew.refused(0, 2 * HOUR);
        assert_eq!(skew.corrected(local), local - Duration::from_secs(7200));
    }
}
