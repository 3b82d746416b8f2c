//! `telagent discover`

use std::path::PathBuf;
use std::process::ExitCode;

use crate::discovery::{discover, Places};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory of UUCP lock files of lines whose HylaFAX config names none.
    #[arg(long, default_value = "/var/lock")]
    lock_dir: PathBuf,
}

/// Prints what this host runs as a commented config (passive: nothing is written to any
/// device).
pub fn run(args: Args) -> ExitCode {
    let found = discover(&Places::of_host(&args.lock_dir));
    print!("{}", found.to_toml());
    ExitCode::SUCCESS
}
