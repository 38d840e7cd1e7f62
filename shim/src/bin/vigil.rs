//! `vigil`: the operator's command (profiles, audit, doctor).

use std::process::ExitCode;

use clap::Parser;
use vigil_shim::cli::{self, Cli};

fn main() -> ExitCode {
    cli::run(Cli::parse())
}
