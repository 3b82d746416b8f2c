//! The command line: one file per subcommand. `main.rs` parses and starts tracing; each
//! subcommand returns its process exit code.

mod check;
mod check_config;
mod discover;
mod lines;
mod route;
mod run;
mod status;
mod test_notification;
mod totals;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Monitoring agent for fax and messaging servers.
#[derive(Debug, Parser)]
#[command(name = "telagent", version, about, propagate_version = true)]
pub struct Cli {
    /// More log output: -v for debug, -vv for trace.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent: probe every configured check, serve /metrics and /v1/status.
    Run(run::Args),
    /// Show the live states of a running agent.
    Status(status::Args),
    /// Probe one check now and print what it saw and the metrics it would export
    /// (exit 0 ok, 1 degraded or failed, 2 error).
    Check(check::Args),
    /// Print the routable hosts of a routing group in precedence order, one argument per
    /// host (exit 1 if none is routable, 2 on error).
    Route(route::Args),
    /// Traffic per server (sent, failed, received, pages, share) over a window, from this
    /// agent, the whole cluster or Prometheus (exit 1 if a source did not answer).
    Totals(totals::Args),
    /// Per fax line and direction: attempts, success, pages, average rate, top failure
    /// class, last success (like xferfaxstats); --by destination for the remote ends with
    /// the most failures.
    Lines(lines::Args),
    /// Send test notifications to the configured SNMP receivers and report what each
    /// acknowledged (exit 1 if any was not delivered).
    TestNotification(test_notification::Args),
    /// Print the manual page (roff) generated from this command line.
    #[command(hide = true)]
    Manpage,
    /// Print what this host runs (HylaFAX spool and modems, SIP listeners, snmpd's AgentX
    /// socket) as a commented config to save and edit; nothing is written to any device.
    Discover(discover::Args),
    /// Validate a configuration file (default: the one `run` would use).
    CheckConfig {
        /// Config file.
        file: Option<PathBuf>,
    },
}

impl Cli {
    /// The default log level: `run` logs its state changes; one-shot commands stay quiet.
    pub fn log_level(&self) -> tracing::Level {
        let base = match self.command {
            Command::Run(_) => 2,
            _ => 0,
        };
        match base + self.verbose {
            0 => tracing::Level::WARN,
            1 | 2 => tracing::Level::INFO,
            3 => tracing::Level::DEBUG,
            _ => tracing::Level::TRACE,
        }
    }
}

/// Runs the parsed command and returns the exit code.
///
/// One worker thread unless `TOKIO_WORKER_THREADS` says otherwise: a probe is mostly a wait,
/// and a second worker mostly costs wake-ups handed between threads (about a tenth of the
/// agent's CPU at 1,000 probes per second). Blocking work (disk, SQLite, programs) runs on
/// the runtime's blocking threads either way.
pub fn execute(cli: Cli) -> ExitCode {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        builder.worker_threads(1);
    }
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("telagent: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Run(args) => run::run(args).await,
            Command::Status(args) => status::run(args).await,
            Command::Check(args) => check::run(args).await,
            Command::Route(args) => route::run(args).await,
            Command::Totals(args) => totals::run(args).await,
            Command::Lines(args) => lines::run(args).await,
            Command::TestNotification(args) => test_notification::run(args).await,
            Command::CheckConfig { file } => check_config::run(file),
            Command::Discover(args) => discover::run(args),
            Command::Manpage => manpage(),
        }
    })
}

/// Writes telagent(1), generated from the clap definitions, to standard output.
fn manpage() -> ExitCode {
    use clap::CommandFactory;
    let mut out = Vec::new();
    match clap_mangen::Man::new(Cli::command()).render(&mut out) {
        Ok(()) => {
            use std::io::Write;
            let _ = std::io::stdout().write_all(&out);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("telagent: cannot render the manual page: {e}");
            ExitCode::from(2)
        }
    }
}
