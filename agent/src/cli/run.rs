//! `telagent run`

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Config file (default: /etc/telagent/telagent.toml if present, else the embedded one).
    #[arg(short, long)]
    config: Option<PathBuf>,
    /// Address of the HTTP endpoint, overriding agent.listen.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Directory of the agent's state, overriding agent.state_dir.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Run on the embedded default (discovery on) even if /etc/telagent/telagent.toml exists.
    #[arg(long, conflicts_with = "config")]
    default_config: bool,
}

pub async fn run(args: Args) -> ExitCode {
    let opts = crate::agent::RunOptions {
        config: args.config,
        listen: args.listen,
        state_dir: args.state_dir,
        embedded: args.default_config,
    };
    match crate::agent::run(opts).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("telagent: {e:#}");
            ExitCode::from(2)
        }
    }
}
