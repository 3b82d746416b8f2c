//! The status page at `/`: what an operator needs at a glance, on a phone, with no
//! internet: this server's routing state, what is down (first, with why), every target
//! grouped by kind (lines, gateways with a channel bar, SIP, queues with depth and oldest
//! age, services), the peers with their last activity, the last changes of the audit
//! trail and today's traffic.
//!
//! One renderer: the page is HTML from the server, and its small script replaces the
//! `<main>` element every 5 s with `/?part=main` (the same renderer), so the page and its
//! refresh cannot disagree. No external assets; a page stays well under 50 KB (at most
//! [`MAX_TARGETS`] targets are listed per group, the rest counted).

use std::fmt::Write as _;
use std::time::SystemTime;

use std::collections::BTreeMap;

use crate::audit::Entry;
use crate::engine::model::Target;
use crate::engine::tracker::State;
use crate::routing::Snapshot;
use crate::traffic::totals::Row;

/// The checks, by name.
pub type Targets = BTreeMap<String, Target>;

/// Most targets listed in one group; the rest are counted in a line.
pub const MAX_TARGETS: usize = 40;

/// Escapes text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font:15px/1.4 system-ui,sans-serif;margin:0;background:#f4f5f7;color:#111}\
header{padding:12px 16px;background:#555}header[class],header a,header small{color:#fff}\
header.up{background:#1b7f3b}header.drain{background:#9a6b00}header.down{background:#b3261e}\
header h1{margin:0;font-size:20px}\
main{padding:8px 12px;max-width:960px}section{background:#fff;border-radius:8px;margin:10px 0;padding:8px 12px}\
h2{font-size:16px;margin:4px 0 8px}table{border-collapse:collapse;width:100%}\
td,th{text-align:left;padding:4px 6px;border-top:1px solid #eee;vertical-align:top}\
.s{font-weight:600;white-space:nowrap}.up{color:#1b7f3b}.degraded,.drain{color:#b8860b}\
.down{color:#b3261e}.unknown{color:#777}.d{color:#444;font-size:13px;overflow-wrap:anywhere}\
.bar{display:flex;height:12px;min-width:120px;border-radius:3px;overflow:hidden;background:#ddd}\
.bar i{display:block}.busy{background:#2f6fde}.idle{background:#9cc3ff}.oos{background:#b3261e}\
small{color:#666}#down td{background:#fdecea}";

/// Refreshes `<main>` from the server every 5 s; keeps the old content when it fails.
const SCRIPT: &str = "setInterval(function(){fetch('/?part=main',{cache:'no-store'})\
.then(function(r){if(!r.ok)throw r.status;return r.text()})\
.then(function(t){document.querySelector('main').outerHTML=t;\
document.getElementById('stale').hidden=true})\
.catch(function(){document.getElementById('stale').hidden=false})},5000);";

/// What the page shows besides the checks.
pub struct Extras<'a> {
    pub server: &'a str,
    /// The routing snapshot (servers and routes; empty without members).
    pub cluster: &'a Snapshot,
    pub recent: &'a [Entry],
    /// Today's traffic per server (UTC day), or why it could not be read.
    pub today: Result<&'a [Row], &'a str>,
    pub now: SystemTime,
}

/// The whole page.
pub fn page(targets: &Targets, x: &Extras) -> String {
    let (state, reason) = routing_state(targets, x.cluster);
    let mut out = String::with_capacity(16 * 1024);
    let _ = write!(
        out,
        "<!doctype html><html lang=en><head><meta charset=utf-8>\
         <meta name=viewport content=\"width=device-width,initial-scale=1\">\
         <title>{server}: {state} · telagent</title><style>{STYLE}</style></head><body>\
         <header class=\"{state}\" id=header><h1>{server}: {state}</h1><div>{reason}</div>\
         <small>telagent {v} · <a href=/metrics>metrics</a> · \
         <a href=/v1/status>status JSON</a> · \
         <span id=stale hidden>not refreshing: the agent does not answer</span></small></header>",
        server = escape(x.server),
        state = state,
        reason = escape(&reason),
        v = env!("CARGO_PKG_VERSION"),
    );
    out.push_str(&main(targets, x, "page"));
    let _ = writeln!(out, "<script>{SCRIPT}</script></body></html>");
    out
}

/// This server's routing state and why: from the cluster when members are configured,
/// else from its own targets.
fn routing_state(targets: &Targets, cluster: &Snapshot) -> (&'static str, String) {
    if let Some(own) = cluster.own() {
        return (own.state.as_str(), own.reason.clone());
    }
    let count = |s: State| targets.values().filter(|t| t.state == s).count();
    let (down, degraded, total) = (count(State::Down), count(State::Degraded), targets.len());
    let why = format!(
        "{total} targets: {down} down, {degraded} degraded (no [[member]] configured: no routing decision is published)"
    );
    match (down, degraded) {
        (0, 0) => ("up", why),
        (0, _) => ("drain", why),
        _ => ("down", why),
    }
}

/// The refreshed part of the page; `source` (`page` or `refresh`) says which request
/// rendered it.
pub fn main(targets: &Targets, x: &Extras, source: &str) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let _ = write!(out, "<main data-source={source}>");
    let down: Vec<&Target> = targets
        .values()
        .filter(|t| t.state == State::Down)
        .collect();
    if !down.is_empty() {
        out.push_str("<section id=down><h2 class=down>Down</h2><table>");
        for t in down.iter().take(MAX_TARGETS) {
            row(&mut out, t, x.now, "");
        }
        more(&mut out, down.len());
        out.push_str("</table></section>");
    }
    for (title, kinds) in [
        ("Lines", &["modem"][..]),
        ("Fax quality", &["line_quality", "canary"][..]),
        ("Gateways", &["gateway"][..]),
        ("SIP", &["sip"][..]),
        ("Queues", &["queue"][..]),
        ("Services", &["tcp", "http", "command"][..]),
    ] {
        let group: Vec<&Target> = targets
            .values()
            .filter(|t| kinds.contains(&t.kind))
            .collect();
        if group.is_empty() {
            continue;
        }
        let _ = write!(out, "<section><h2>{title}</h2><table>");
        for t in group.iter().take(MAX_TARGETS) {
            let extra = match t.kind {
                "gateway" => channel_bar(t),
                "queue" => queue_figures(t),
                _ => String::new(),
            };
            row(&mut out, t, x.now, &extra);
        }
        more(&mut out, group.len());
        out.push_str("</table></section>");
    }
    if targets.is_empty() {
        out.push_str(
            "<section><h2>Targets</h2><p>Nothing is monitored: no check is configured and \
             discovery found nothing. Run <code>telagent discover</code> for a config to start from.</p></section>",
        );
    }
    peers(&mut out, x.cluster, x.now);
    recent(&mut out, x.recent);
    today(&mut out, &x.today);
    out.push_str("</main>");
    out
}

fn more(out: &mut String, n: usize) {
    if n > MAX_TARGETS {
        let _ = write!(
            out,
            "<tr><td colspan=3><small>and {} more: see /v1/status</small></td></tr>",
            n - MAX_TARGETS
        );
    }
}

fn row(out: &mut String, t: &Target, now: SystemTime, extra: &str) {
    let last = t.last.as_ref();
    let why = match (t.state, last) {
        (State::Up, Some(p)) => escape(&p.observation.detail),
        (_, Some(p)) => format!(
            "<b>{}</b>: {}",
            escape(p.observation.error_type.unwrap_or("ok")),
            escape(&p.observation.detail)
        ),
        (_, None) => "not probed yet".into(),
    };
    let _ = write!(
        out,
        "<tr><td><b>{name}</b>{disc}<br><small>{kind}</small></td>\
         <td class=\"s {state}\">{state}<br><small>{since}</small></td><td class=d>{extra}{why}</td></tr>",
        name = escape(&t.name),
        disc = if t.discovered { " <small>(discovered)</small>" } else { "" },
        kind = t.kind,
        state = t.state.as_str(),
        since = ago(t.since, now),
    );
}

/// `5s ago`, `3m ago`, `2h ago`, `4d ago`.
fn ago(t: SystemTime, now: SystemTime) -> String {
    let s = now.duration_since(t).map_or(0, |d| d.as_secs());
    match s {
        0..=119 => format!("{s}s ago"),
        120..=7199 => format!("{}m ago", s / 60),
        7200..=172_799 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86400),
    }
}

/// Channels busy / idle / out of service as a bar and in figures.
fn channel_bar(t: &Target) -> String {
    let get = |s| t.value("channels", Some(("state", s))).unwrap_or(0.0);
    let (busy, idle, oos) = (get("busy"), get("idle"), get("out_of_service"));
    let total = busy + idle + oos;
    if total <= 0.0 {
        return String::new();
    }
    let pct = |n: f64| n * 100.0 / total;
    format!(
        "<div class=bar title=\"busy {busy} · idle {idle} · out of service {oos}\">\
         <i class=busy style=\"width:{:.1}%\"></i><i class=idle style=\"width:{:.1}%\"></i>\
         <i class=oos style=\"width:{:.1}%\"></i></div><small>{busy} used · {idle} idle · {oos} out of service</small><br>",
        pct(busy),
        pct(idle),
        pct(oos)
    )
}

fn queue_figures(t: &Target) -> String {
    match (t.value("depth", None), t.value("oldest_age_seconds", None)) {
        (Some(d), Some(a)) => format!(
            "<b>{d}</b> waiting · oldest {}<br>",
            humantime::format_duration(std::time::Duration::from_secs(a as u64))
        ),
        _ => String::new(),
    }
}

fn peers(out: &mut String, c: &Snapshot, now: SystemTime) {
    if c.servers.is_empty() {
        return;
    }
    out.push_str("<section><h2>Servers</h2><table>");
    for s in &c.servers {
        let active = match s.last_active {
            Some(t) => format!("last active {}", ago(t, now)),
            None => "never seen".into(),
        };
        let _ = write!(
            out,
            "<tr><td><b>{name}</b>{me}</td><td class=\"s {state}\">{state}</td>\
             <td class=d>{reason}<br><small>{active}{reach}</small></td></tr>",
            name = escape(&s.name),
            me = if s.name == c.me {
                " <small>(this server)</small>"
            } else {
                ""
            },
            state = s.state.as_str(),
            reason = escape(&s.reason),
            reach = if s.agent_reachable {
                ""
            } else {
                " · agent unreachable"
            },
        );
    }
    out.push_str("</table></section>");
}

fn recent(out: &mut String, entries: &[Entry]) {
    out.push_str("<section><h2>Recent changes</h2>");
    if entries.is_empty() {
        out.push_str("<p><small>No change recorded yet.</small></p></section>");
        return;
    }
    out.push_str("<table>");
    for e in entries {
        let _ = write!(
            out,
            "<tr><td><small>{time}</small></td><td><b>{target}</b> <span class={from}>{from}</span> → \
             <span class=\"s {to}\">{to}</span></td><td class=d>{reason}</td></tr>",
            time = escape(e.time.get(..19).unwrap_or(&e.time)).replace('T', " "),
            target = escape(&e.target),
            from = escape(&e.from),
            to = escape(&e.to),
            reason = escape(&e.reason),
        );
    }
    out.push_str("</table></section>");
}

fn today(out: &mut String, rows: &Result<&[Row], &str>) {
    out.push_str("<section><h2>Traffic today <small>(UTC)</small></h2>");
    match rows {
        Err(e) => {
            let _ = write!(
                out,
                "<p class=down>Cannot read the traffic store: {}</p>",
                escape(e)
            );
        }
        Ok([]) => out.push_str("<p><small>No traffic counted today.</small></p>"),
        Ok(rows) => {
            out.push_str(
                "<table><tr><th>server</th><th>sent</th><th>failed</th><th>received</th><th>pages out / in</th></tr>",
            );
            for r in rows.iter() {
                let _ = write!(
                    out,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} / {}</td></tr>",
                    escape(&r.server),
                    r.sent,
                    r.failed,
                    r.received,
                    r.pages_sent,
                    r.pages_received
                );
            }
            out.push_str("</table>");
        }
    }
    out.push_str("</section>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::Observation;
    use crate::engine::model::Probe;

    fn alone(me: &str) -> Snapshot {
        Snapshot::empty(me)
    }

    fn target(name: &str, kind: &'static str, state: State, obs: Observation) -> Target {
        let mut t = Target::new(name, kind, &[], std::time::Duration::from_secs(10));
        t.state = state;
        t.last = Some(Probe {
            at: SystemTime::now(),
            duration: std::time::Duration::ZERO,
            observation: obs,
        });
        t
    }

    #[test]
    fn down_targets_come_first_with_why_and_everything_is_escaped() {
        let mut targets = Targets::new();
        {
            let m = &mut targets;
            let gw = Observation::ok("30 channels").with_value("x", "x", 1.0);
            let mut gw = target("gw1", "gateway", State::Up, gw);
            for (s, n) in [("busy", 20.0), ("idle", 8.0), ("out_of_service", 2.0)] {
                gw.last
                    .as_mut()
                    .unwrap()
                    .observation
                    .values
                    .push(crate::checks::Value {
                        name: "channels",
                        help: "",
                        labels: vec![("state", s.into())],
                        value: n,
                    });
            }
            m.insert("gw1".into(), gw);
            m.insert(
                "line<2>".into(),
                target(
                    "line<2>",
                    "modem",
                    State::Down,
                    Observation::fail("no_response", "ttyS1 <silent>"),
                ),
            );
        }
        let entries = vec![Entry {
            time: "2026-12-01T12:00:00.000Z".into(),
            target: "line<2>".into(),
            kind: "modem".into(),
            from: "up".into(),
            to: "down".into(),
            reason: "3 consecutive failures (fall 3): no_response".into(),
        }];
        let rows = [Row {
            server: "fax1".into(),
            line: None,
            hour: None,
            sent: 7,
            failed: 1,
            received: 3,
            receive_failed: 0,
            pages_sent: 12,
            pages_received: 4,
        }];
        let cluster = alone("fax<1>");
        let html = page(
            &targets,
            &Extras {
                server: "fax<1>",
                cluster: &cluster,
                recent: &entries,
                today: Ok(&rows),
                now: SystemTime::now(),
            },
        );
        assert!(!html.contains("<2>") && !html.contains("<1>"), "{html}");
        let down = html.find("<section id=down>").expect("a down section");
        let lines = html.find("<h2>Lines</h2>").unwrap();
        let failing = html.find("line&lt;2&gt;").unwrap();
        assert!(
            down < failing && failing < lines,
            "the failing line is listed under Down first"
        );
        assert!(html[down..lines].contains("no_response"));
        assert!(html.contains("20 used · 8 idle · 2 out of service"));
        assert!(html.contains("<header class=\"down\""));
        assert!(html.contains("<td>fax1</td><td>7</td><td>1</td><td>3</td><td>12 / 4</td>"));
        assert!(html.contains("3 consecutive failures (fall 3): no_response"));
    }

    #[test]
    fn a_page_of_many_targets_stays_under_50_kb() {
        let mut targets = Targets::new();
        {
            let m = &mut targets;
            for i in 0..2000 {
                let name = format!("check-{i:04}-{}", "x".repeat(40));
                let obs = Observation::fail("connect_refused", "y".repeat(120));
                m.insert(name.clone(), target(&name, "tcp", State::Down, obs));
            }
        }
        let entries: Vec<Entry> = (0..crate::audit::RECENT)
            .map(|i| Entry {
                time: "2026-12-01T12:00:00.000Z".into(),
                target: format!("check-{i}"),
                kind: "tcp".into(),
                from: "up".into(),
                to: "down".into(),
                reason: "z".repeat(80),
            })
            .collect();
        let cluster = alone("fax1");
        let html = page(
            &targets,
            &Extras {
                server: "fax1",
                cluster: &cluster,
                recent: &entries,
                today: Err("locked"),
                now: SystemTime::now(),
            },
        );
        assert!(html.len() < 50 * 1024, "{} bytes", html.len());
        assert!(html.contains("and 1960 more"));
    }
}
