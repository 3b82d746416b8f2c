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
}

pub async fn run(args: Args) -> ExitCode {
    let opts = crate::agent::RunOptions {
        config: args.config,
        listen: args.listen,
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
