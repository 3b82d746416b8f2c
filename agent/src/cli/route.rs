//! `telagent route GROUP`: the hosts a client should try, in order, for
//! `client -host $(telagent route alerts)`.

use std::process::ExitCode;
use std::time::Duration;

use crate::routing::decision::GroupRoutes;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The routing group.
    group: String,
    /// Base URL of an agent of the cluster.
    #[arg(long, default_value = "http://127.0.0.1:9847")]
    url: String,
}

pub async fn run(args: Args) -> ExitCode {
    let url = format!(
        "{}/v1/routes?group={}",
        args.url.trim_end_matches('/'),
        args.group
    );
    let resp = match tokio::time::timeout(
        Duration::from_secs(5),
        crate::http_client::get(&url, 8 << 20),
    )
    .await
    {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            eprintln!("telagent: {e}; is the agent running? (--url)");
            return ExitCode::from(2);
        }
        Err(_) => {
            eprintln!("telagent: {url} did not answer within 5s");
            return ExitCode::from(2);
        }
    };
    if resp.status != 200 {
        eprintln!(
            "telagent: {url}: {}",
            String::from_utf8_lossy(&resp.body).trim()
        );
        return ExitCode::from(2);
    }
    let groups: Vec<GroupRoutes> = match serde_json::from_slice(&resp.body) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("telagent: {url} sent routes this version cannot read: {e}");
            return ExitCode::from(2);
        }
    };
    let hosts: Vec<&str> = groups
        .iter()
        .flat_map(|g| g.servers.iter())
        .filter(|s| s.routable)
        .map(|s| s.host.as_str())
        .collect();
    if hosts.is_empty() {
        eprintln!("telagent: no server of group `{}` is routable", args.group);
        return ExitCode::from(1);
    }
    if groups.iter().any(|g| g.panic) {
        eprintln!(
            "telagent: group `{}` is in panic mode: every server is listed",
            args.group
        );
    }
    println!("{}", hosts.join(" "));
    ExitCode::SUCCESS
}
