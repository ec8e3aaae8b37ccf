//! The command line: what was asked for, or why it cannot be understood.

use std::path::PathBuf;

use crate::sealed;

pub const USAGE: &str = "\
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

pub enum Command {
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

pub fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Command, String> {
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
