//! The `mqtt-kinesis-bridge` binary: everything is in the library's `cli`.

use std::process::ExitCode;

fn main() -> ExitCode {
    mqtt_kinesis_bridge::cli::main(std::env::args().skip(1))
}
