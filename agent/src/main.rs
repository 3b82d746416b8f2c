use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = telagent::cli::Cli::parse();
    if !matches!(cli.command, telagent::cli::Command::Run(_)) {
        // One-shot commands end quietly when their reader goes away (`| head`), like other
        // Unix tools; the agent keeps SIGPIPE ignored and sees EPIPE as an error instead.
        // SAFETY: setting a signal disposition before any thread starts.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    tracing_subscriber::fmt()
        .with_max_level(cli.log_level())
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    telagent::cli::execute(cli)
}
