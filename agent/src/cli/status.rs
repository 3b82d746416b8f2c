//! `telagent status`: the live states of a running agent, as a table or JSON.

use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};

use crate::api::StatusDoc;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Base URL of the agent.
    #[arg(long, default_value = "http://127.0.0.1:9847")]
    url: String,
    /// Print the agent's JSON document as it is.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args) -> ExitCode {
    let url = format!("{}/v1/status", args.url.trim_end_matches('/'));
    let resp = match tokio::time::timeout(
        Duration::from_secs(10),
        crate::http_client::get(&url, 64 * 1024 * 1024),
    )
    .await
    {
        Ok(Ok(r)) if r.status == 200 => r,
        Ok(Ok(r)) => {
            eprintln!(
                "telagent: {url} answered {}; is that a telagent agent?",
                r.status
            );
            return ExitCode::from(2);
        }
        Ok(Err(e)) => {
            eprintln!("telagent: {e}; is the agent running? (--url)");
            return ExitCode::from(2);
        }
        Err(_) => {
            eprintln!("telagent: {url} did not answer within 10s");
            return ExitCode::from(2);
        }
    };
    if args.json {
        println!("{}", String::from_utf8_lossy(&resp.body));
        return ExitCode::SUCCESS;
    }
    let doc: StatusDoc = match serde_json::from_slice(&resp.body) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("telagent: {url} sent a status document this version cannot read: {e}");
            return ExitCode::from(2);
        }
    };
    print!("{}", render(&doc, SystemTime::now()));
    ExitCode::SUCCESS
}

/// The table for people.
pub fn render(doc: &StatusDoc, now: SystemTime) -> String {
    let mut out = format!(
        "server {} (telagent {}), config {}{}\n",
        doc.server,
        doc.version,
        doc.config.source,
        if doc.config.successful {
            String::new()
        } else {
            format!(
                " -- LAST RELOAD REJECTED: {}",
                doc.config.error.as_deref().unwrap_or("")
            )
        }
    );
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(["CHECK", "KIND", "STATE", "SINCE", "LAST", "DETAIL"]);
    for target in &doc.targets {
        let (last, detail) = match &target.last {
            Some(p) => (
                format!("{} {:.1}ms", p.status.as_str(), p.duration_seconds * 1000.0),
                p.detail.clone(),
            ),
            None => ("-".into(), "not probed yet".into()),
        };
        t.add_row([
            target.name.clone(),
            target.kind.clone(),
            target.state.to_string(),
            ago(now, target.since),
            last,
            detail,
        ]);
    }
    if doc.targets.is_empty() {
        out.push_str("no checks configured\n");
    } else {
        out.push_str(&t.to_string());
        out.push('\n');
    }
    if let Some(c) = doc.cluster.as_ref().filter(|c| !c.servers.is_empty()) {
        let mut t = Table::new();
        t.load_preset(UTF8_FULL_CONDENSED);
        t.set_header([
            "SERVER", "STATE", "SINCE", "AGENT", "SPEAKS", "CAPACITY", "REASON",
        ]);
        for s in &c.servers {
            let agent = match (s.name == c.me, s.agent_reachable, s.config_drift) {
                (true, _, _) => "this one".to_string(),
                (_, _, true) => format!("CONFIG DRIFT: {}", s.drift_sections.join(", ")),
                (_, true, _) => "answers".to_string(),
                (_, false, _) => "unreachable".to_string(),
            };
            t.add_row([
                s.name.clone(),
                s.state.as_str().to_string(),
                ago(now, s.since),
                agent,
                if s.speaker { "yes" } else { "" }.to_string(),
                s.capacity.map_or(String::new(), |c| format!("{c} %")),
                s.reason.clone(),
            ]);
        }
        out.push_str(&t.to_string());
        out.push('\n');
        for g in &c.routes {
            let order: Vec<String> = g
                .servers
                .iter()
                .map(|s| {
                    if s.routable {
                        s.host.clone()
                    } else {
                        format!("({})", s.host)
                    }
                })
                .collect();
            out.push_str(&format!(
                "group {}: {}{}\n",
                g.group,
                order.join(" "),
                if g.panic {
                    "  -- PANIC: every server routed"
                } else {
                    ""
                }
            ));
        }
    }
    if !doc.ports.is_empty() {
        let mut p = Table::new();
        p.load_preset(UTF8_FULL_CONDENSED);
        p.set_header(["PORT", "DRIVER", "LOCK"]);
        for port in &doc.ports {
            let lock = match &port.lock {
                None => "free".to_string(),
                Some(l) if l.stale => format!("stale lock (pid {:?} gone)", l.pid),
                Some(l) => format!(
                    "held by {} (pid {})",
                    l.program.as_deref().unwrap_or("?"),
                    l.pid.unwrap_or(0)
                ),
            };
            p.add_row([port.path.clone(), port.driver.clone(), lock]);
        }
        out.push_str(&p.to_string());
        out.push('\n');
    }
    out
}

fn ago(now: SystemTime, then: SystemTime) -> String {
    let secs = now.duration_since(then).unwrap_or_default().as_secs();
    let text = humantime::format_duration(Duration::from_secs(secs)).to_string();
    format!("{text} ago")
}
