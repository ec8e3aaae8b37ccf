//! Pure: Prometheus's text exposition format, version 0.0.4. Families with
//! `# HELP` and `# TYPE`, samples with escaped label values, histograms from
//! folded buckets. Knows nothing of what the gateway measures.

use std::fmt::Write;

use crate::histogram::{Folded, BOUNDS_SECONDS};

/// Every metric name starts with this.
pub const PREFIX: &str = "mqtt_kinesis_bridge_";

/// The `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// The exposition being written.
#[derive(Default)]
pub struct Exposition {
    text: String,
}

impl Exposition {
    /// Starts the family `name` (without [`PREFIX`]); its samples follow.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.text, "# HELP {PREFIX}{name} {help}");
        let _ = writeln!(self.text, "# TYPE {PREFIX}{name} {kind}");
    }

    /// One sample of the family just started (`name` may add `_bucket`…).
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(PREFIX);
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (label_idx, (label, value)) in labels.iter().enumerate() {
                if label_idx > 0 {
                    self.text.push(',');
                }
                self.text.push_str(label);
                self.text.push_str("=\"");
                for c in value.chars() {
                    match c {
                        '\\' => self.text.push_str("\\\\"),
                        '"' => self.text.push_str("\\\""),
                        '\n' => self.text.push_str("\\n"),
                        c => self.text.push(c),
                    }
                }
                self.text.push('"');
            }
            self.text.push('}');
        }
        self.text.push(' ');
        push_value(&mut self.text, value);
        self.text.push('\n');
    }

    /// A whole histogram family in seconds: buckets, `+Inf`, sum and count.
    pub fn histogram(&mut self, name: &str, help: &str, folded: &Folded) {
        self.family(name, Kind::Histogram, help);
        let bucket = format!("{name}_bucket");
        for (bound, count) in BOUNDS_SECONDS.iter().zip(folded.cumulative) {
            self.sample(&bucket, &[("le", &bound.to_string())], count as f64);
        }
        self.sample(&bucket, &[("le", "+Inf")], folded.count as f64);
        self.sample(&format!("{name}_sum"), &[], folded.sum_seconds);
        self.sample(&format!("{name}_count"), &[], folded.count as f64);
    }

    pub fn into_text(self) -> String {
        self.text
    }
}

/// Go's float syntax as Prometheus parses it: `+Inf`, `-Inf`, `NaN`, integers without a point.
fn push_value(text: &mut String, value: f64) {
    if value.is_nan() {
        text.push_str("NaN");
    } else if value.is_infinite() {
        text.push_str(if value > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(text, "{value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::histogram::Histogram;

    #[test]
    fn families_samples_and_escaped_labels() {
        let mut exposition = Exposition::default();
        exposition.family("things_total", Kind::Counter, "Things.\nWith a \\ newline.");
        exposition.sample("things_total", &[("a", "x\"y\\z\nw"), ("b", "2")], 3.0);
        exposition.family("ratio", Kind::Gauge, "A ratio.");
        exposition.sample("ratio", &[], 0.25);
        exposition.sample("ratio", &[("k", "inf")], f64::INFINITY);
        assert_eq!(
            exposition.into_text(),
            "# HELP mqtt_kinesis_bridge_things_total Things.\\nWith a \\\\ newline.\n\
             # TYPE mqtt_kinesis_bridge_things_total counter\n\
             mqtt_kinesis_bridge_things_total{a=\"x\\\"y\\\\z\\nw\",b=\"2\"} 3\n\
             # HELP mqtt_kinesis_bridge_ratio A ratio.\n\
             # TYPE mqtt_kinesis_bridge_ratio gauge\n\
             mqtt_kinesis_bridge_ratio 0.25\n\
             mqtt_kinesis_bridge_ratio{k=\"inf\"} +Inf\n"
        );
    }

    #[test]
    fn a_histogram_has_cumulative_buckets_sum_and_count() {
        let histogram = Histogram::default();
        histogram.observe(std::time::Duration::from_millis(2));
        histogram.observe(std::time::Duration::from_secs(100));
        let mut exposition = Exposition::default();
        exposition.histogram("wait_seconds", "Waits.", &histogram.fold());
        let text = exposition.into_text();
        assert!(text.contains("# TYPE mqtt_kinesis_bridge_wait_seconds histogram\n"));
        assert!(text.contains("mqtt_kinesis_bridge_wait_seconds_bucket{le=\"0.001\"} 0\n"));
        assert!(text.contains("mqtt_kinesis_bridge_wait_seconds_bucket{le=\"0.0025\"} 1\n"));
        assert!(text.contains("mqtt_kinesis_bridge_wait_seconds_bucket{le=\"30\"} 1\n"));
        assert!(text.contains("mqtt_kinesis_bridge_wait_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("mqtt_kinesis_bridge_wait_seconds_sum 100.002\n"));
        assert!(text.ends_with("mqtt_kinesis_bridge_wait_seconds_count 2\n"));
    }
}
