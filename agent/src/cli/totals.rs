//! `telagent totals`: sent / failed / received / pages per server over a window, from the
//! local agent, every member of the cluster, or Prometheus.
//!
//! Exit 0 when every source answered, 1 when some did not (they are listed, never dropped
//! silently from the sum), 2 on error (a bad window, an unknown server, a config or store
//! that cannot be read).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use serde::Deserialize;

use crate::traffic::events::unix_now;
use crate::traffic::totals::{parse_time, Query, Report, Row, SourceStatus, Split};

/// How long one source may take to answer.
const SOURCE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Start of the window: a duration before now (1h, 24h, 7d) or a UTC date
    /// (2026-11-01, "2026-11-01 08:00").
    #[arg(long, default_value = "24h")]
    since: String,
    /// End of the window (same forms); default now.
    #[arg(long)]
    until: Option<String>,
    /// Split each server's row by line or by hour.
    #[arg(long, value_enum)]
    by: Option<Split>,
    /// Only this server.
    #[arg(long)]
    server: Option<String>,
    /// Base URL of the agent asked (default: the config's agent.listen, else
    /// http://127.0.0.1:9847).
    #[arg(long, conflicts_with_all = ["cluster", "state_dir"])]
    url: Option<String>,
    /// Ask every [[member]] of the config's cluster, concurrently.
    #[arg(long, conflicts_with_all = ["prometheus", "state_dir"])]
    cluster: bool,
    /// Config file: the members for --cluster, the agent's address otherwise (default:
    /// the one `run` would use).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Read the traffic store in this state directory directly, read-only (the agent may
    /// be stopped).
    #[arg(long, value_name = "DIR", conflicts_with = "prometheus")]
    state_dir: Option<PathBuf>,
    /// Compute the totals from a Prometheus server's counters (PromQL increase) instead.
    #[arg(long, value_name = "URL")]
    prometheus: Option<String>,
    /// Print JSON.
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// Print CSV.
    #[arg(long)]
    csv: bool,
}

pub async fn run(args: Args) -> ExitCode {
    match report(&args).await {
        Ok(r) => {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
            } else if args.csv {
                print!("{}", r.csv());
            } else {
                print!("{}", r.table());
            }
            if r.complete {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("telagent: {e}");
            ExitCode::from(2)
        }
    }
}

async fn report(args: &Args) -> Result<Report, String> {
    let now = unix_now();
    let since = parse_time(&args.since, now).map_err(|e| format!("--since: {e}"))?;
    let until = match &args.until {
        Some(u) => parse_time(u, now).map_err(|e| format!("--until: {e}"))?,
        // After the current second: an event of this second counts.
        None => now + 1,
    };
    if since < 0 {
        return Err(format!(
            "--since {}: before 1970, when nothing was counted",
            args.since
        ));
    }
    if since >= until {
        return Err(format!(
            "the window is empty: --since ({}) is not before --until ({})",
            crate::traffic::totals::minute_text(since),
            crate::traffic::totals::minute_text(until)
        ));
    }
    let q = Query {
        since,
        until,
        server: args.server.clone(),
        by: args.by,
    };
    if let Some(prom) = &args.prometheus {
        return prometheus(prom, &q, args.until.is_none()).await;
    }
    if let Some(dir) = &args.state_dir {
        return from_store(dir, &q, args.config.as_deref());
    }
    if !args.cluster {
        let url = agent_url(args.url.as_deref(), args.config.as_ref())?;
        let (mut status, answer) = ask_agent(&url, None, &q).await;
        let rows = match answer {
            Answer::Rows(rows) => rows,
            Answer::UnknownServer(why) | Answer::Refused(why) => return Err(why),
            Answer::Failed => {
                if let Some(e) = &mut status.error {
                    e.push_str("; is the agent running? (--url, or --state-dir to read its store while it is stopped)");
                }
                Vec::new()
            }
        };
        return Ok(Report::new(&q, vec![status], rows));
    }
    let source = crate::config::resolve_source(args.config.as_deref());
    let config = crate::config::load(&source).map_err(|e| e.to_string())?;
    if config.member.is_empty() {
        return Err(format!(
            "{source} lists no [[member]]; --cluster asks the agent of every member"
        ));
    }
    // Every agent is asked for every server (or --server): events posted to one agent
    // may name another server, and each agent counts only what it was given.
    let asks = config
        .member
        .iter()
        .map(|m| ask_agent(&m.agent, Some(&m.name), &q));
    let answers = futures_join_all(asks).await;
    let mut sources = Vec::new();
    let mut rows = Vec::new();
    let mut unknown = Vec::new();
    for (s, a) in answers {
        match a {
            Answer::Rows(r) => rows.extend(r),
            Answer::UnknownServer(why) => unknown.push(why),
            Answer::Refused(why) => return Err(why),
            Answer::Failed => {}
        }
        sources.push(s);
    }
    let answered = sources.iter().filter(|s| s.error.is_none()).count();
    if answered > 0 && unknown.len() == answered {
        return Err(format!(
            "no agent of the cluster counted traffic for server `{}`: {}",
            q.server.as_deref().unwrap_or(""),
            unknown.join("; ")
        ));
    }
    Ok(Report::new(&q, sources, rows))
}

/// The agent asked: `--url`, else the listen address of `--config`, else the default.
pub(super) fn agent_url(url: Option<&str>, config: Option<&PathBuf>) -> Result<String, String> {
    Ok(match (url, config) {
        (Some(u), _) => u.to_string(),
        (None, Some(file)) => {
            let c = crate::config::load(&crate::config::Source::File(file.clone()))
                .map_err(|e| e.to_string())?;
            local_url(c.agent.listen)
        }
        (None, None) => "http://127.0.0.1:9847".to_string(),
    })
}

/// The URL of an agent listening on `listen`, from this host.
fn local_url(listen: std::net::SocketAddr) -> String {
    let host = match listen.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_string(),
        ip if ip.is_unspecified() => "[::1]".to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    format!("http://{host}:{}", listen.port())
}

/// The traffic store in the state directory `dir`, opened read-only with the retention of
/// the config (which decides how old windows are widened) when it can be read; and its path.
pub(super) fn read_store(
    dir: &std::path::Path,
    config: Option<&std::path::Path>,
) -> Result<(crate::traffic::store::Store, PathBuf), String> {
    let path = dir.join("traffic.db");
    if !path.is_file() {
        return Err(format!(
            "{} does not exist; is --state-dir the agent's agent.state_dir?",
            path.display()
        ));
    }
    let traffic = crate::config::load(&crate::config::resolve_source(config))
        .map(|c| c.traffic)
        .unwrap_or_default();
    let store = crate::traffic::store::Store::open_read_only(
        &path,
        crate::traffic::store::Limits::from(&traffic),
    )
    .map_err(|e| e.to_string())?;
    Ok((store, path))
}

/// Totals read from the store in `dir`, read-only.
fn from_store(
    dir: &std::path::Path,
    q: &Query,
    config: Option<&std::path::Path>,
) -> Result<Report, String> {
    let (store, path) = read_store(dir, config)?;
    store.check().map_err(|e| {
        format!("{e}; the store is damaged: its totals cannot be trusted (the agent moves it aside at its next start)")
    })?;
    if let Some(server) = &q.server {
        let known = store.servers();
        if !known.contains(server) {
            return Err(format!(
                "no traffic was ever counted for server `{server}` in {}; the servers known are: {}",
                path.display(),
                known.join(", ")
            ));
        }
    }
    let rows = store.totals(q, unix_now()).map_err(|e| e.to_string())?;
    let sources = store
        .servers()
        .into_iter()
        .filter(|s| q.server.as_ref().is_none_or(|w| w == s))
        .map(|server| SourceStatus {
            server,
            from: path.display().to_string(),
            error: None,
        })
        .collect();
    Ok(Report::new(q, sources, rows))
}

/// Runs the futures concurrently and returns their outputs in order.
async fn futures_join_all<F>(futs: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        if let Ok(v) = h.await {
            out.push(v);
        }
    }
    out
}

#[derive(Deserialize)]
struct AgentTotals {
    server: String,
    rows: Vec<Row>,
}

/// GETs JSON within [`SOURCE_TIMEOUT`]; the error has the HTTP status, if there was one,
/// and says what went wrong with the URL.
pub(super) async fn get_json<T: serde::de::DeserializeOwned>(
    url: &str,
) -> Result<T, (Option<u16>, String)> {
    let resp =
        match tokio::time::timeout(SOURCE_TIMEOUT, crate::http_client::get(url, 64 << 20)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Err((None, e.to_string())),
            Err(_) => {
                return Err((
                    None,
                    format!("no answer within {}s", SOURCE_TIMEOUT.as_secs()),
                ))
            }
        };
    if resp.status != 200 {
        return Err((
            Some(resp.status),
            format!(
                "{url} answered {}: {}",
                resp.status,
                String::from_utf8_lossy(&resp.body).trim()
            ),
        ));
    }
    serde_json::from_slice(&resp.body).map_err(|e| {
        (
            None,
            format!("{url} sent JSON this version cannot read: {e}"),
        )
    })
}

/// What one agent answered.
enum Answer {
    Rows(Vec<Row>),
    /// It never counted traffic for the server asked about (404), with its message.
    UnknownServer(String),
    /// It refused the question (400): the window is wrong, whoever is asked.
    Refused(String),
    /// No answer (the source's status says why).
    Failed,
}

/// Asks one agent (of `member`, when asking a cluster) for its totals.
fn ask_agent(
    base: &str,
    member: Option<&str>,
    q: &Query,
) -> impl std::future::Future<Output = (SourceStatus, Answer)> + Send + 'static {
    let base = base.trim_end_matches('/').to_string();
    let mut url = format!("{base}/v1/totals?since={}&until={}", q.since, q.until);
    if let Some(s) = &q.server {
        url.push_str(&format!("&server={}", crate::http_client::encode(s)));
    }
    if let Some(by) = q.by {
        url.push_str(match by {
            Split::Line => "&by=line",
            Split::Hour => "&by=hour",
        });
    }
    let name = member.map(String::from);
    async move {
        match get_json::<AgentTotals>(&url).await {
            Ok(t) => (
                SourceStatus {
                    server: name.unwrap_or(t.server),
                    from: base,
                    error: None,
                },
                Answer::Rows(t.rows),
            ),
            Err((Some(404), e)) => (
                SourceStatus {
                    server: name.unwrap_or_else(|| base.clone()),
                    from: base,
                    error: None,
                },
                Answer::UnknownServer(e),
            ),
            Err((Some(400), e)) => (
                SourceStatus {
                    server: name.unwrap_or_else(|| base.clone()),
                    from: base,
                    error: None,
                },
                Answer::Refused(e),
            ),
            Err((_, e)) => (
                SourceStatus {
                    server: name.unwrap_or_else(|| base.clone()),
                    from: base,
                    error: Some(e),
                },
                Answer::Failed,
            ),
        }
    }
}

#[derive(Deserialize)]
struct PromAnswer {
    status: String,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    data: Option<PromData>,
}

#[derive(Deserialize)]
struct PromData {
    result: Vec<PromSeries>,
}

#[derive(Deserialize)]
struct PromSeries {
    metric: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    value: Option<(f64, String)>,
    #[serde(default)]
    values: Vec<(f64, String)>,
}

/// The counters behind each column, in the order `Row` fields are filled.
const PROM_COUNTERS: [&str; 6] = [
    "telagent_messages_sent_total",
    "telagent_messages_failed_total",
    "telagent_messages_received_total",
    "telagent_messages_receive_failed_total",
    "telagent_pages_sent_total",
    "telagent_pages_received_total",
];

/// Totals from Prometheus: `sum by (server) (increase(counter[window]))` at `until`, or
/// per hour with a range query. PromQL extrapolates `increase` to the window's edges, so
/// these are estimates, rounded to whole messages.
async fn prometheus(base: &str, q: &Query, now_is_until: bool) -> Result<Report, String> {
    let base = base.trim_end_matches('/');
    let mut by = vec!["server"];
    if q.by == Some(Split::Line) {
        by.push("line");
    }
    let selector = match &q.server {
        Some(s) => format!(
            "{{server=\"{}\"}}",
            s.replace('\\', "\\\\").replace('"', "\\\"")
        ),
        None => String::new(),
    };
    let range = if q.by == Some(Split::Hour) {
        3600
    } else {
        q.until - q.since
    };
    let urls: Vec<String> = PROM_COUNTERS
        .iter()
        .map(|c| {
            let promql = format!(
                "sum by ({}) (increase({c}{selector}[{range}s]))",
                by.join(", ")
            );
            match q.by {
                Some(Split::Hour) => format!(
                    "{base}/api/v1/query_range?query={}&start={}&end={}&step=3600",
                    crate::http_client::encode(&promql),
                    crate::traffic::store::ceil(q.since, 3600) + 3600,
                    crate::traffic::store::ceil(q.until, 3600)
                ),
                // Without --until, Prometheus evaluates at its own now, so the latest
                // scrape counts (a whole-second time could fall just before it).
                _ if now_is_until => format!(
                    "{base}/api/v1/query?query={}",
                    crate::http_client::encode(&promql)
                ),
                _ => format!(
                    "{base}/api/v1/query?query={}&time={}",
                    crate::http_client::encode(&promql),
                    q.until
                ),
            }
        })
        .collect();
    let answers = futures_join_all(
        urls.into_iter()
            .map(|u| async move { get_json::<PromAnswer>(&u).await }),
    )
    .await;
    let mut rows: std::collections::BTreeMap<(String, String, i64), Row> = Default::default();
    for (i, a) in answers.into_iter().enumerate() {
        let a = a.map_err(|(_, e)| format!("Prometheus at {base}: {e}"))?;
        if a.status != "success" {
            return Err(format!(
                "Prometheus at {base} refused the query: {}",
                a.error.unwrap_or_default()
            ));
        }
        for s in a.data.map(|d| d.result).unwrap_or_default() {
            let server = s.metric.get("server").cloned().unwrap_or_default();
            let line = s.metric.get("line").cloned();
            let points: Vec<(f64, String)> = s.value.into_iter().chain(s.values).collect();
            for (t, v) in points {
                let hour = (q.by == Some(Split::Hour)).then_some(t as i64 - 3600);
                let n = v.parse::<f64>().unwrap_or(0.0).round().max(0.0) as u64;
                let row = rows
                    .entry((
                        server.clone(),
                        line.clone().unwrap_or_default(),
                        hour.unwrap_or(0),
                    ))
                    .or_insert_with(|| Row {
                        server: server.clone(),
                        line: line.clone(),
                        hour,
                        ..Row::default()
                    });
                let field = match i {
                    0 => &mut row.sent,
                    1 => &mut row.failed,
                    2 => &mut row.received,
                    3 => &mut row.receive_failed,
                    4 => &mut row.pages_sent,
                    _ => &mut row.pages_received,
                };
                *field += n;
            }
        }
    }
    let servers: std::collections::BTreeSet<String> =
        rows.values().map(|r| r.server.clone()).collect();
    let sources = servers
        .into_iter()
        .map(|server| SourceStatus {
            server,
            from: base.to_string(),
            error: None,
        })
        .collect();
    let mut report = Report::new(q, sources, rows.into_values().collect());
    report.estimate = true;
    Ok(report)
}
