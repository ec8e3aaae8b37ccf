//! The `mqtt-kinesis-bridge` command: parse the command line, load the config, run.
//! Also the small tools around it (`status`, `new-key`, `encrypt-password`); their
//! work lives in the library, only the reading and printing are here.
//!
//! Exit codes: 0 after a clean shutdown, 1 when the gateway fails while running,
//! 2 for a bad command line, config, key or stdin input (nothing has started then).

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use mqtt_kinesis_bridge::config::Config;
use mqtt_kinesis_bridge::sealed::{self, SealKey};
use mqtt_kinesis_bridge::secret::Secret;
use mqtt_kinesis_bridge::shutdown::Shutdown;

const USAGE: &str = "\
usage: mqtt-kinesis-bridge run --config FILE
       mqtt-kinesis-bridge status --config FILE [--json]
       mqtt-kinesis-bridge check --config FILE [--json]
       mqtt-kinesis-bridge new-key
       mqtt-kinesis-bridge encrypt-password --broker ID [--column COLUMN] [--key-file FILE | --config FILE] < secret
       mqtt-kinesis-bridge --version | --help

commands:
  run               run the gateway: brokers from the catalog -> spool -> Kinesis
  status            print each broker's connection state and counters, the spool's depth
                    and the drain rate (works while the gateway runs)
  check             try everything the config points at (database, every broker endpoint,
                    Kinesis, spool) without running the gateway; exit 1 if anything fails
  new-key           print a new key for broker passwords (base64 of 32 random bytes)
  encrypt-password  read a secret from stdin and print it sealed for one row and column of
                    iot_data.mqtt_broker, as `enc:v2:...` (a copy in another row does not
                    open); mqtt_password: stdin's first line, client_key: all of stdin (PEM);
                    the key is, first found: --key-file FILE, $MKB_PASSWORD_KEY,
                    the config's database.password_key_file

options:
  -c, --config FILE   the TOML config file (see README.md, examples/gateway.toml)
      --json          status or check as one JSON object
      --key-file FILE the key for encrypt-password, as new-key prints it
      --broker ID     encrypt-password: the row's mqtt_id
      --column COLUMN encrypt-password: mqtt_password (the default) or client_key
      --v1            encrypt-password: the old `enc:v1:` format, bound to no row
  -V, --version       print the version
  -h, --help          print this help";

enum Command {
    Run {
        config: PathBuf,
    },
    Status {
        config: PathBuf,
        json: bool,
    },
    Check {
        config: PathBuf,
        json: bool,
    },
    NewKey,
    EncryptPassword {
        key_file: Option<PathBuf>,
        config: Option<PathBuf>,
        /// `None`: `--v1`.
        seal_for: Option<(i64, &'static str)>,
    },
    Help,
    Version,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Command, String> {
    let mut command = None;
    // Options are gathered first; each command then checks which ones it takes.
    let mut config: Option<PathBuf> = None;
    let mut key_file: Option<PathBuf> = None;
    let mut json = false;
    let mut broker: Option<i64> = None;
    let mut column: Option<&'static str> = None;
    let mut v1 = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            "-c" | "--config" => {
                config = Some(args.next().ok_or("--config needs a file path")?.into());
            }
            "--key-file" => {
                key_file = Some(args.next().ok_or("--key-file needs a file path")?.into());
            }
            "--json" => json = true,
            "--broker" => {
                let id = args.next().ok_or("--broker needs the row's mqtt_id")?;
                broker = Some(
                    id.parse()
                        .map_err(|_| format!("--broker {id:?} is not an mqtt_id (an integer)"))?,
                );
            }
            "--column" => {
                let name = args
                    .next()
                    .ok_or("--column needs mqtt_password or client_key")?;
                column = Some(
                    sealed::COLUMNS
                        .into_iter()
                        .find(|known| *known == name)
                        .ok_or_else(|| {
                            format!("--column {name:?} is not mqtt_password or client_key")
                        })?,
                );
            }
            "--v1" => v1 = true,
            "run" | "status" | "check" | "new-key" | "encrypt-password" if command.is_none() => {
                command = Some(arg)
            }
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    let Some(command) = command else {
        return Err("no command given".into());
    };
    if (key_file.is_some() || broker.is_some() || column.is_some() || v1)
        && command != "encrypt-password"
    {
        return Err("--key-file, --broker, --column and --v1 go with encrypt-password".into());
    }
    match command.as_str() {
        "run" | "status" | "check" => {
            let config = config.ok_or_else(|| format!("{command} needs --config FILE"))?;
            match command.as_str() {
                "status" => Ok(Command::Status { config, json }),
                "check" => Ok(Command::Check { config, json }),
                _ if json => Err("--json goes with status or check".into()),
                _ => Ok(Command::Run { config }),
            }
        }
        _ if json => Err("--json goes with status or check".into()),
        "new-key" if config.is_some() => Err("new-key takes no --config".into()),
        "new-key" => Ok(Command::NewKey),
        _ => {
            let seal_for = match (broker, v1) {
                (Some(_), true) => return Err("--v1 values are bound to no row: give --broker or --v1, not both".into()),
                (None, true) if column.is_some() => return Err("--column goes with --broker, not --v1".into()),
                (None, true) => None,
                (None, false) => return Err("encrypt-password needs --broker ID (the row's mqtt_id the value is sealed for; --v1 for the old format bound to no row)".into()),
                (Some(id), false) => Some((id, column.unwrap_or("mqtt_password"))),
            };
            Ok(Command::EncryptPassword {
                key_file,
                config,
                seal_for,
            })
        }
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
        Ok(Command::Check { config, json }) => return check(&config, json),
        Ok(Command::NewKey) => {
            println!("{}", SealKey::generate());
            return ExitCode::SUCCESS;
        }
        Ok(Command::EncryptPassword {
            key_file,
            config,
            seal_for,
        }) => return encrypt_password(key_file.as_deref(), config.as_deref(), seal_for),
        Err(message) => {
            eprintln!("error: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let config = match load_config(&config_path) {
        Ok(config) => config,
        Err(exit) => return exit,
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
    let now_ms = mqtt_kinesis_bridge::clock::unix_ms();
    match mqtt_kinesis_bridge::status::report(&config.spool.path, &config.status.file, now_ms, json)
    {
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
    mqtt_kinesis_bridge::logger::init(log::LevelFilter::Error);
    let checks = mqtt_kinesis_bridge::check::run(&config);
    if json {
        println!("{}", mqtt_kinesis_bridge::check::as_json(&checks));
    } else {
        print!("{}", mqtt_kinesis_bridge::check::as_text(&checks));
    }
    if mqtt_kinesis_bridge::check::all_ok(&checks) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

const NO_KEY: &str = "no key: give --key-file FILE, set MKB_PASSWORD_KEY, \
                      or --config FILE whose database.password_key_file is set";

/// Prints the secret on stdin sealed for `seal_for` (broker id, column), or
/// as `enc:v1:` when `None`. It never comes from argv, which shell history
/// and `ps` would show.
fn encrypt_password(
    key_file: Option<&Path>,
    config_path: Option<&Path>,
    seal_for: Option<(i64, &'static str)>,
) -> ExitCode {
    // Without it, a warning about the key file's mode would go nowhere.
    mqtt_kinesis_bridge::logger::init(log::LevelFilter::Warn);
    let sealed = find_key(key_file, config_path).and_then(|key| {
        let stdin = std::io::stdin().lock();
        Ok(match seal_for {
            None => key.seal(read_password(stdin)?.expose()),
            Some((broker_id, column)) => {
                let secret = match column {
                    "client_key" => read_pem(stdin)?,
                    _ => read_password(stdin)?,
                };
                key.seal_for(secret.expose(), sealed::Binding { broker_id, column })
            }
        })
    });
    match sealed {
        Ok(sealed) => {
            println!("{sealed}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

/// All of `input` (a PEM key), trailing line ending removed; empty is an error.
fn read_pem(mut input: impl std::io::Read) -> Result<Secret, String> {
    let mut text = String::new();
    input
        .read_to_string(&mut text)
        .map_err(|error| format!("cannot read the key from stdin: {error}"))?;
    let text = text.trim_end_matches(['\n', '\r']);
    if text.trim().is_empty() {
        return Err("no key on stdin: give the client key's PEM".into());
    }
    Ok(Secret::new(text))
}

/// The first key source given: --key-file, the environment, the config's key file.
fn find_key(key_file: Option<&Path>, config_path: Option<&Path>) -> Result<SealKey, String> {
    // A non-UTF-8 value is kept (lossily) so it fails as "not base64" instead of vanishing.
    let env_value =
        std::env::var_os(sealed::KEY_ENV).map(|value| value.to_string_lossy().into_owned());
    let config_key_file = match config_path {
        Some(path) if key_file.is_none() && env_value.is_none() => key_file_from_config(path)?,
        _ => None,
    };
    SealKey::load(key_file.or(config_key_file.as_deref()), env_value)
        .map_err(|error| error.to_string())?
        .ok_or_else(|| NO_KEY.to_owned())
}

fn key_file_from_config(config_path: &Path) -> Result<Option<PathBuf>, String> {
    let config = Config::load(config_path).map_err(|error| error.to_string())?;
    Ok(config.catalog.password_key_file)
}

/// The first line of `input`, without its line ending; empty is an error.
fn read_password(mut input: impl BufRead) -> Result<Secret, String> {
    let mut line = String::new();
    input
        .read_line(&mut line)
        .map_err(|error| format!("cannot read the password from stdin: {error}"))?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        return Err("no password on stdin: give it as the first line".into());
    }
    Ok(Secret::new(password))
}
