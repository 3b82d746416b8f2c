//! `telagent check NAME` (probe one check now) and `telagent check KIND --sample`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use crate::checks::{self, Status};
use crate::config;
use crate::engine::model::{Model, Probe, Target};
use crate::engine::tracker::Tracker;

/// Waits for SIGINT or SIGTERM; names the one that came, with the shell's exit code.
async fn interrupted() -> (&'static str, u8) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => ("interrupted", 130),
        _ = term.recv() => ("terminated", 143),
    }
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The check's name (with --sample: a check kind).
    name: String,
    /// Config file (default: the one `run` would use).
    #[arg(short, long)]
    config: Option<PathBuf>,
    /// Print the sample configuration of the check kind NAME.
    #[arg(long)]
    sample: bool,
}

pub async fn run(args: Args) -> ExitCode {
    if args.sample {
        return match checks::sample(&args.name) {
            Some(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            None => {
                eprintln!(
                    "telagent: no check kind `{}`; the kinds are: {}",
                    args.name,
                    checks::KINDS.join(", ")
                );
                ExitCode::from(2)
            }
        };
    }
    let source = config::resolve_source(args.config.as_deref());
    let c = match config::load(&source) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let Some(spec) = c.check(&args.name) else {
        let names: Vec<String> = c
            .checks()
            .iter()
            .map(|(_, s)| s.name().to_string())
            .collect();
        eprintln!(
            "telagent: no check named `{}` in {source}; the checks are: {}",
            args.name,
            if names.is_empty() {
                "(none)".to_string()
            } else {
                names.join(", ")
            }
        );
        return ExitCode::from(2);
    };
    let schedule = spec.schedule(&c.defaults);
    let ctx = checks::Context {
        server: c.agent.server.clone(),
        traffic: crate::traffic::Traffic::read_only(&c.agent.state_dir, &c.traffic),
    };
    let check = checks::build(&spec, &schedule, &ctx);
    // Ctrl-C or a TERM mid-probe drops the probe: its lock is removed and a modem that
    // was off-hook is hung up, before the process exits.
    let (obs, duration) = tokio::select! {
        r = crate::engine::scheduler::probe_once(check.as_ref(), schedule.timeout) => r,
        (signal, code) = interrupted() => {
            eprintln!("telagent: {signal}: the probe was stopped and its port released");
            return ExitCode::from(code);
        }
    };

    println!("check     {} ({})", spec.name(), spec.kind());
    println!("status    {}", obs.status.as_str());
    if let Some(t) = obs.error_type {
        println!("error     {t}");
    }
    println!("time      {:.1} ms", duration.as_secs_f64() * 1000.0);
    println!("detail    {}", obs.detail);
    println!();
    println!("metrics it would export:");
    let status = obs.status;
    let model = Arc::new(Model::new());
    {
        let mut target = Target::new(
            spec.name(),
            check.kind(),
            check.error_types(),
            schedule.interval,
        );
        target.probes_total = 1;
        // A first observation decides the state at once (see the tracker).
        target.state = Tracker::new(schedule.rise, schedule.fall, schedule.hold)
            .with_flap(schedule.flap)
            .observe(status, tokio::time::Instant::now())
            .map_or(target.state, |c| c.to);
        if let Some(t) = obs.error_type.filter(|_| status != Status::Ok) {
            *target.failures_total.entry(t).or_default() += 1;
        }
        target.last = Some(Probe {
            at: std::time::SystemTime::now(),
            duration,
            observation: obs,
        });
        model
            .write()
            .targets
            .insert(spec.name().to_string(), target);
    }
    let metrics = crate::metrics::Metrics::new(false);
    metrics.register(model);
    let text = metrics.render();
    let label = format!("check=\"{}\"", spec.name());
    for line in text.lines().filter(|l| l.contains(&label)) {
        println!("{line}");
    }
    match status {
        Status::Ok => ExitCode::SUCCESS,
        Status::Degraded | Status::Fail => ExitCode::from(1),
    }
}
