//! The `mqtt-kinesis-bridge` command: parse the command line, load the config,
//! run the gateway or one of the small tools around it (`status`, `check`,
//! `new-key`, `encrypt-password`). Their work lives in the stages; only the
//! reading and printing are here.
//!
//! Exit codes: 0 after a clean shutdown, 1 when the gateway fails while running,
//! 2 for a bad command line, config, key or stdin input (nothing has started then).

mod args;
mod keys;

use std::path::Path;
use std::process::ExitCode;

use crate::config::Config;
use crate::sealed::SealKey;
use crate::shutdown::Shutdown;
use args::{parse_args, Command, USAGE};

/// Runs the command `args` (without the program name) asks for.
pub fn main(args: impl Iterator<Item = String>) -> ExitCode {
    let config_path = match parse_args(args) {
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
        Ok(Command::Check { config, json }) => return check(&config, json),
        Ok(Command::NewKey) => {
            println!("{}", SealKey::generate());
            return ExitCode::SUCCESS;
        }
        Ok(Command::EncryptPassword {
            key_file,
            config,
            seal_for,
        }) => return keys::encrypt_password(key_file.as_deref(), config.as_deref(), seal_for),
        Err(message) => {
            eprintln!("error: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let config = match load_config(&config_path) {
        Ok(config) => config,
        Err(exit) => return exit,
    };
    crate::logger::init(config.log.level);
    let shutdown = Shutdown::new();
    if let Err(error) = shutdown.on_signals() {
        log::error!("cannot install signal handlers: {error}");
        return ExitCode::from(1);
    }
    match crate::run(config, shutdown) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            log::error!("{error}");
            ExitCode::from(1)
        }
    }
}

/// The config at `path`, or exit code 2 after saying what is wrong with it.
fn load_config(path: &Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|error| {
        eprintln!("error: {error}");
        ExitCode::from(2)
    })
}

fn status(config_path: &Path, json: bool) -> ExitCode {
    let config = match load_config(config_path) {
        Ok(config) => config,
        Err(exit) => return exit,
    };
    let now_ms = crate::clock::unix_ms();
    match crate::status::report(&config.spool.path, &config.status.file, now_ms, json) {
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

/// Exit 0 when every check passed, 1 when any failed, 2 for a bad config.
fn check(config_path: &Path, json: bool) -> ExitCode {
    let config = match load_config(config_path) {
        Ok(config) => config,
        Err(exit) => return exit,
    };
    // The report says what failed; the library's own info lines would only repeat it.
    crate::logger::init(log::LevelFilter::Error);
    let checks = crate::check::run(&config);
    if json {
        println!("{}", crate::check::as_json(&checks));
    } else {
        print!("{}", crate::check::as_text(&checks));
    }
    if crate::check::all_ok(&checks) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
