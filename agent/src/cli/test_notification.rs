//! `telagent test-notification`: sends test notifications to the configured receivers,
//! directly (not through the outbox), and reports what each receiver acknowledged and how
//! fast: to check a receiver's setup, and to measure.
//!
//! v3 traps use the agent's engine id with the engineBoots of the running agent (read,
//! not incremented) and its engine time (from when the boots file was written), so a
//! receiver keeps accepting the agent's own traps afterwards.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Instant, SystemTime};

use serde::Serialize;

use crate::notify::{traps, Kind, NState, Notification, Severity};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Config file (default: the one `run` would use).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Only this receiver.
    #[arg(long)]
    receiver: Option<String>,
    /// Notifications sent to each receiver, one after the other.
    #[arg(long, default_value_t = 1)]
    count: u32,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Report {
    receiver: String,
    inform: bool,
    sent: u32,
    delivered: u32,
    seconds: f64,
    per_second: f64,
    /// Inform round trips (send to acknowledgement), milliseconds.
    rtt_p50_ms: Option<f64>,
    rtt_p99_ms: Option<f64>,
    last_error: Option<String>,
}

pub async fn run(args: Args) -> ExitCode {
    let source = crate::config::resolve_source(args.config.as_deref());
    let config = match crate::config::load(&source) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("telagent: {e}");
            return ExitCode::from(2);
        }
    };
    let receivers: Vec<_> = config
        .notify
        .receiver
        .iter()
        .filter(|r| args.receiver.as_ref().is_none_or(|n| *n == r.name))
        .cloned()
        .collect();
    if receivers.is_empty() {
        eprintln!(
            "telagent: {source} has no [[notify.receiver]]{}",
            args.receiver
                .as_ref()
                .map_or(String::new(), |n| format!(" named {n}"))
        );
        return ExitCode::from(2);
    }
    let boots_file = config.agent.state_dir.join("snmp-engine-boots");
    let boots = std::fs::read_to_string(&boots_file)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1);
    let since_boot = std::fs::metadata(&boots_file)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .unwrap_or_default();
    let engine = traps::Engine {
        id: config
            .notify
            .engine_id
            .as_deref()
            .and_then(crate::notify::parse_hex)
            .unwrap_or_else(|| traps::default_engine_id(&config.agent.server)),
        boots,
        started: Instant::now()
            .checked_sub(since_boot)
            .unwrap_or_else(Instant::now),
    };
    let mut all_ok = true;
    for r in receivers {
        let mut sender = traps::Sender::new(r.clone());
        let mut rtts = Vec::new();
        let mut delivered = 0;
        let mut last_error = None;
        let t0 = Instant::now();
        for i in 0..args.count {
            // Not an event of the agent: sequence 0, kind `test`.
            let n = Notification {
                target: "telagent-test".into(),
                check_kind: "test".into(),
                ..Notification::agent(
                    Kind::CheckUp,
                    &config.agent.server,
                    NState::Up,
                    Severity::Info,
                    format!(
                        "test notification {} of {} (telagent test-notification)",
                        i + 1,
                        args.count
                    ),
                )
            };
            let t = Instant::now();
            match sender.deliver(&n, &engine, config.notify.timeout).await {
                traps::Outcome::Sent => delivered += 1,
                traps::Outcome::Acked => {
                    delivered += 1;
                    rtts.push(t.elapsed());
                }
                traps::Outcome::NoAnswer(e) | traps::Outcome::AuthFailed(e) => last_error = Some(e),
            }
        }
        let seconds = t0.elapsed().as_secs_f64();
        rtts.sort();
        let pct = |p: f64| -> Option<f64> {
            (!rtts.is_empty()).then(|| {
                let i = ((rtts.len() as f64 * p).ceil() as usize).clamp(1, rtts.len()) - 1;
                rtts[i].as_secs_f64() * 1000.0
            })
        };
        let report = Report {
            receiver: r.name.clone(),
            inform: r.inform,
            sent: args.count,
            delivered,
            seconds,
            per_second: f64::from(delivered) / seconds.max(1e-9),
            rtt_p50_ms: pct(0.5),
            rtt_p99_ms: pct(0.99),
            last_error,
        };
        all_ok &= delivered == args.count;
        if args.json {
            println!("{}", serde_json::to_string(&report).unwrap_or_default());
        } else {
            println!(
                "{}: {} of {} {} in {:.2}s{}{}",
                report.receiver,
                report.delivered,
                report.sent,
                if r.inform { "acknowledged" } else { "sent" },
                report.seconds,
                report
                    .rtt_p50_ms
                    .map_or(String::new(), |p| format!(", round trip p50 {p:.2} ms")),
                report
                    .last_error
                    .as_ref()
                    .map_or(String::new(), |e| format!("; last error: {e}")),
            );
        }
    }
    if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
