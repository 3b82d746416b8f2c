use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = telagent::cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_max_level(cli.log_level())
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    telagent::cli::execute(cli)
}
