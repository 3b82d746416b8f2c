//! `telagent lines`: per fax line and direction, like HylaFAX's xferfaxstats: attempts,
//! success, pages, average signalling rate, ECM, the top failure class and the last
//! success; `--by destination` lists the remote ends with the most failures instead.
//!
//! Exit 0 on an answer, 2 on error (no agent, a bad window, a store that cannot be read).

use std::path::PathBuf;
use std::process::ExitCode;

use serde::Deserialize;

use crate::traffic::events::unix_now;
use crate::traffic::quality::{DestinationStats, LineStats};
use crate::traffic::totals::{minute_text, parse_time};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum By {
    Line,
    Destination,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Start of the window: a duration before now (1h, 24h, 7d, 365d) or a UTC date.
    #[arg(long, default_value = "24h")]
    since: String,
    /// Only this server.
    #[arg(long)]
    server: Option<String>,
    /// Per line (default) or per destination (remote number or CSI/TSI).
    #[arg(long, value_enum, default_value = "line")]
    by: By,
    /// Destinations listed (most failures first), 1 to 1000.
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// Base URL of the agent asked (default: the config's agent.listen, else
    /// http://127.0.0.1:9847).
    #[arg(long, conflicts_with = "state_dir")]
    url: Option<String>,
    /// Config file (the agent's address; default: the one `run` would use).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Read the traffic store in this state directory directly, read-only.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Deserialize, serde::Serialize)]
struct Answer {
    #[serde(default)]
    lines: Vec<LineStats>,
    #[serde(default)]
    destinations: Vec<DestinationStats>,
}

pub async fn run(args: Args) -> ExitCode {
    match answer(&args).await {
        Ok(a) => {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&a).unwrap_or_default());
            } else if args.by == By::Destination {
                print!("{}", destination_table(&a.destinations));
            } else {
                print!("{}", line_table(&a.lines));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("telagent: {e}");
            ExitCode::from(2)
        }
    }
}

async fn answer(args: &Args) -> Result<Answer, String> {
    let now = unix_now();
    let since = parse_time(&args.since, now).map_err(|e| format!("--since: {e}"))?;
    if since < 0 {
        return Err(format!("--since {}: before 1970", args.since));
    }
    if since >= now {
        return Err(format!(
            "--since {}: the window is empty (it must start before now)",
            args.since
        ));
    }
    if !(1..=1000).contains(&args.limit) {
        return Err("--limit must be 1 to 1000".into());
    }
    let server = args.server.as_deref();
    if let Some(dir) = &args.state_dir {
        let (store, _) = super::totals::read_store(dir, args.config.as_deref())?;
        return Ok(match args.by {
            By::Line => Answer {
                lines: store.lines(since, server, now).map_err(|e| e.to_string())?,
                destinations: Vec::new(),
            },
            By::Destination => Answer {
                lines: Vec::new(),
                destinations: store
                    .destinations(since, server, args.limit)
                    .map_err(|e| e.to_string())?,
            },
        });
    }
    let base = super::totals::agent_url(args.url.as_deref(), args.config.as_ref())?;
    let mut url = format!(
        "{}/v1/lines?since={since}&limit={}",
        base.trim_end_matches('/'),
        args.limit
    );
    if args.by == By::Destination {
        url.push_str("&by=destination");
    }
    if let Some(s) = server {
        url.push_str(&format!("&server={}", crate::http_client::encode(s)));
    }
    super::totals::get_json::<Answer>(&url)
        .await
        .map_err(|(status, e)| match status {
            Some(_) => e,
            None => format!("{e}; is the agent running? (--url, or --state-dir to read its store)"),
        })
}

fn when(t: Option<i64>) -> String {
    t.map_or("-".into(), minute_text)
}

/// The lines as a table.
pub fn line_table(lines: &[LineStats]) -> String {
    let mut rows = vec![[
        "SERVER",
        "LINE",
        "DIRECTION",
        "ATTEMPTS",
        "SUCCESS",
        "PAGES",
        "AVG RATE",
        "ECM",
        "TOP FAILURE",
        "LAST SUCCESS",
    ]
    .map(String::from)];
    for l in lines {
        rows.push([
            l.server.clone(),
            l.line.clone(),
            l.direction.as_str().to_string(),
            l.attempts.to_string(),
            l.success_ratio
                .map_or("-".into(), |r| format!("{:.1} %", r * 100.0)),
            if l.pages_attempted > l.pages {
                format!("{}/{}", l.pages, l.pages_attempted)
            } else {
                l.pages.to_string()
            },
            l.avg_rate.map_or("-".into(), |r| r.to_string()),
            format!(
                "{:.0} %",
                l.ecm_attempts as f64 * 100.0 / l.attempts.max(1) as f64
            ),
            l.top_failure
                .map_or("-".into(), |(c, n)| format!("{} ({n})", c.as_str())),
            when(l.last_success),
        ]);
    }
    table(&rows)
}

/// The destinations as a table.
pub fn destination_table(d: &[DestinationStats]) -> String {
    let mut rows = vec![[
        "SERVER",
        "REMOTE",
        "ATTEMPTS",
        "FAILURES",
        "TOP FAILURE",
        "LAST SUCCESS",
    ]
    .map(String::from)];
    for x in d {
        rows.push([
            x.server.clone(),
            x.remote.clone(),
            x.attempts.to_string(),
            x.failures.to_string(),
            x.top_failure
                .map_or("-".into(), |(c, n)| format!("{} ({n})", c.as_str())),
            when(x.last_success),
        ]);
    }
    table(&rows)
}

fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}
