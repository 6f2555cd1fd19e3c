use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    vnid::cli::Cli::parse().run()
}
