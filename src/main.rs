//! The `mqtt-kinesis-bridge` command: parse the command line, load the config, run.
//!
//! Exit codes: 0 after a clean shutdown, 1 when the gateway fails while running,
//! 2 for a bad command line or config (nothing has started then).

use std::path::PathBuf;
use std::process::ExitCode;

use mqtt_kinesis_bridge::config::Config;
use mqtt_kinesis_bridge::shutdown::Shutdown;

const USAGE: &str = "\
usage: mqtt-kinesis-bridge run --config FILE
       mqtt-kinesis-bridge status --config FILE [--json]
       mqtt-kinesis-bridge --version | --help

commands:
  run     run the gateway: brokers from the catalog -> spool -> Kinesis
  status  print the spool's depth and per-broker counters (works while the gateway runs)

options:
  -c, --config FILE   the TOML config file (see README.md, examples/gateway.toml)
      --json          status as one JSON object
  -V, --version       print the version
  -h, --help          print this help";

enum Command {
    Run { config: PathBuf },
    Status { config: PathBuf, json: bool },
    Help,
    Version,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Command, String> {
    let mut command = None;
    let mut config = None;
    let mut json = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            "-c" | "--config" => {
                config = Some(args.next().ok_or("--config needs a file path")?);
            }
            "--json" => json = true,
            "run" | "status" if command.is_none() => command = Some(arg),
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    let Some(command) = command else {
        return Err("no command given".into());
    };
    let config = PathBuf::from(config.ok_or_else(|| format!("{command} needs --config FILE"))?);
    match command.as_str() {
        "status" => Ok(Command::Status { config, json }),
        _ if json => Err("--json goes with status".into()),
        _ => Ok(Command::Run { config }),
    }
}

fn main() -> ExitCode {
    let config_path = match parse_args(std::env::args().skip(1)) {
        Ok(Command::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("mqtt-kinesis-bridge {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Ok(Command::Run { config }) => config,
        Ok(Command::Status { config, json }) => return status(&config, json),
        Err(message) => {
            eprintln!("error: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let config = match Config::load(&config_path) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    mqtt_kinesis_bridge::logger::init(config.log.level);
    let shutdown = Shutdown::new();
    if let Err(error) = shutdown.on_signals() {
        log::error!("cannot install signal handlers: {error}");
        return ExitCode::from(1);
    }
    match mqtt_kinesis_bridge::run(config, shutdown) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            log::error!("{error}");
            ExitCode::from(1)
        }
    }
}

fn status(config_path: &std::path::Path, json: bool) -> ExitCode {
    let config = match Config::load(config_path) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    match mqtt_kinesis_bridge::status::report(&config.spool.path, now_ms, json) {
        Ok(report) => {
            print!("{report}");
            if json {
                println!();
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(1)
        }
    }
}
