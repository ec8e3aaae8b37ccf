//! A tiny stderr logger for the `log` facade: `LEVEL target: message`, one line each.
//!
//! No timestamps or colours: journald adds the time, and a log read over a bad
//! link wants plain text. `RUST_LOG` (a level name) overrides the config's level.
//! Under systemd (`JOURNAL_STREAM` set) each line starts with its syslog
//! priority (`<3>` for errors …), which journald turns into the entry's level.

use std::io::Write;

struct StderrLogger {
    level: log::LevelFilter,
    journald: bool,
}

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= self.level && is_ours_or_warning(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let target = record.target();
        // The stage is enough: `drain`, `sessions`, `catalog`, not the file.
        let stage = target
            .strip_prefix("mqtt_kinesis_bridge::")
            .unwrap_or(target)
            .split("::")
            .next()
            .unwrap_or(target);
        let message = escape_controls(&record.args().to_string());
        let priority = match (self.journald, record.level()) {
            (false, _) => "",
            (true, log::Level::Error) => "<3>",
            (true, log::Level::Warn) => "<4>",
            (true, log::Level::Info) => "<6>",
            (true, _) => "<7>",
        };
        let level = record.level();
        // Messages that already open with their stage are not prefixed twice.
        let line = match message
            .strip_prefix(stage)
            .and_then(|m| m.strip_prefix(": "))
        {
            Some(_) => format!("{priority}{level:<5} {message}\n"),
            None => format!("{priority}{level:<5} {stage}: {message}\n"),
        };
        // One write per line, so lines from threads never interleave.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// Control characters escaped (`\n` as `\\n`, others as `\\x1b`): log lines
/// carry text from brokers, servers and the catalog (error messages, topics),
/// and a newline there could start a forged line (with its own `<3>` priority
/// under journald).
fn escape_controls(message: &str) -> String {
    if !message.chars().any(char::is_control) {
        return message.to_owned();
    }
    let mut escaped = String::with_capacity(message.len() + 8);
    for c in message.chars() {
        match c {
            '\n' => escaped.push_str("\\n"),
            '\r' => escaped.push_str("\\r"),
            '\t' => escaped.push_str("\\t"),
            c if c.is_control() => escaped.push_str(&format!("\\x{:02x}", c as u32)),
            c => escaped.push(c),
        }
    }
    escaped
}

/// Dependencies' chatter (rumqttc, rustls, ureq) only at warn and above.
fn is_ours_or_warning(metadata: &log::Metadata<'_>) -> bool {
    metadata.target().starts_with("mqtt_kinesis_bridge") || metadata.level() <= log::Level::Warn
}

/// Installs the logger; `RUST_LOG=debug` (a bare level) wins over `level`.
pub fn init(level: log::LevelFilter) {
    let level = std::env::var("RUST_LOG")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(level);
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    if log::set_boxed_logger(Box::new(StderrLogger { level, journald })).is_ok() {
        log::set_max_level(level);
    }
}

#[cfg(test)]
mod tests {
    use super::escape_controls;

    #[test]
    fn text_from_outside_cannot_start_a_line_of_its_own() {
        assert_eq!(escape_controls("plain text, µs"), "plain text, µs");
        assert_eq!(
            escape_controls("refused\n<3>ERROR drain: forged\r\x1b[31m"),
            "refused\\n<3>ERROR drain: forged\\r\\x1b[31m"
        );
        assert!(!escape_controls("a\u{0}b\u{7f}c")
            .chars()
            .any(char::is_control));
    }
}
