//! Tools for `benches/e2e.sh`, the end-to-end bench: a Kinesis stand-in that
//! counts what the gateway delivers and how late, an MQTT QoS 1 publisher
//! that stamps each payload with its send time, and free local ports.
//!
//! The script runs the built binary directly; `cargo bench` alone has nothing
//! to measure here (harness = false, and without a subcommand it only says so).
//! The stand-in is not a Kinesis emulator: it accepts every record, keeps
//! none, and answers only the two calls the gateway makes.
//!
//! ```text
//! e2e_tools kinesis-sink --stats FILE [--port 0]
//! e2e_tools publish --port P --topic T --count N [--rate R] [--size 200] [--qos 1] [--host 127.0.0.1]
//! e2e_tools free-ports --count K
//! ```

#[path = "e2e/flags.rs"]
mod flags;
#[path = "e2e/kinesis_sink.rs"]
mod kinesis_sink;
#[path = "e2e/latency.rs"]
mod latency;
#[path = "e2e/publisher.rs"]
mod publisher;

use std::net::TcpListener;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use flags::Flags;

fn main() -> ExitCode {
    // `cargo bench` adds `--bench`; it means nothing here.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| arg != "--bench")
        .collect();
    let Some((subcommand, rest)) = args.split_first() else {
        println!("e2e_tools: helpers for the end-to-end bench; run `bash benches/e2e.sh`");
        return ExitCode::SUCCESS;
    };
    let result = Flags::parse(rest).and_then(|flags| match subcommand.as_str() {
        "kinesis-sink" => kinesis_sink(&flags),
        "publish" => publish(&flags),
        "free-ports" => free_ports(&flags),
        other => Err(format!(
            "unknown subcommand {other:?} (kinesis-sink, publish, free-ports)"
        )),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("e2e_tools {subcommand}: {message}");
            ExitCode::FAILURE
        }
    }
}

fn kinesis_sink(flags: &Flags) -> Result<(), String> {
    flags.allow_only(&["port", "stats"])?;
    kinesis_sink::run(flags.or("port", 0)?, flags.required("stats")?)
}

fn publish(flags: &Flags) -> Result<(), String> {
    flags.allow_only(&["host", "port", "topic", "count", "rate", "size", "qos"])?;
    let plan = publisher::Plan {
        host: flags.or("host", "127.0.0.1".to_owned())?,
        port: flags.required("port")?,
        topic: flags.required("topic")?,
        n_messages: flags.required("count")?,
        rate: flags.optional("rate")?,
        payload_size: flags.or("size", 200)?,
        qos: flags.or("qos", 1)?,
    };
    let report = publisher::run(&plan)?;
    println!(
        "published {} messages to {}:{} {} in {:.2}s ({:.0} msg/s)",
        plan.n_messages,
        plan.host,
        plan.port,
        plan.topic,
        report.seconds,
        plan.n_messages as f64 / report.seconds.max(1e-9)
    );
    Ok(())
}

/// Ports free right now; all are held until printed, so they are distinct.
fn free_ports(flags: &Flags) -> Result<(), String> {
    flags.allow_only(&["count"])?;
    let n_ports: usize = flags.required("count")?;
    let listeners = (0..n_ports)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| format!("cannot bind 127.0.0.1:0: {error}"))?;
    let ports = listeners
        .iter()
        .map(|listener| {
            listener
                .local_addr()
                .map(|address| address.port().to_string())
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| format!("cannot read a bound port: {error}"))?;
    println!("{}", ports.join(" "));
    Ok(())
}

/// Wall-clock µs: the publisher stamps it and the stand-in compares with it,
/// both on this machine, so one clock serves both ends.
fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_micros() as u64)
}
