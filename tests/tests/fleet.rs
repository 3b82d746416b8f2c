//! A small fleet on a real metrics engine: five agents in one cluster (each with a fax
//! modem and its line voltage, an ISDN gateway over SNMP, a SIP gateway, a queue, a
//! notification receiver and posted traffic) scraped by a Prometheus in agent mode
//! (`--enable-feature=agent`) that remote-writes to VictoriaMetrics. Every panel query of
//! the dashboards, with Grafana's variables substituted, answers with data from
//! VictoriaMetrics' PromQL API, and `telagent totals --prometheus` pointed at it lists the
//! five servers. `tests/bench/run fleet` is the same with 50 agents, measured.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use telagent_tests::agent::{token_access, Agent, TOKEN};
use telagent_tests::modem::{FakeModem, Quirks};
use telagent_tests::poll;
use telagent_tests::service::{Behaviour, Service};
use telagent_tests::sip::{free_udp_port, Sipp};
use telagent_tests::snmpsim::SnmpSim;
use tempfile::TempDir;

const AGENTS: usize = 5;
/// Prometheus' scrape interval, and the data source's in Grafana's arithmetic.
const SCRAPE_S: u64 = 1;
/// The panels' time range: the last five minutes.
const RANGE_S: u64 = 300;

/// Panics, naming what is missing, unless every peer program of this test is installed.
fn require_peers() {
    let mut missing: Vec<String> = ["victoria-metrics", "prometheus", "socat", "sipp"]
        .into_iter()
        .filter(|p| !telagent_tests::have(p))
        .map(String::from)
        .collect();
    let snmpsim = telagent_tests::snmpsim::venv().join("bin/snmpsim-command-responder");
    if !snmpsim.is_file() {
        missing.push(snmpsim.display().to_string());
    }
    assert!(
        missing.is_empty(),
        "missing peer programs: {}; run tests/run, which installs them (Debian packages \
         victoria-metrics, prometheus, socat, sip-tester; snmpsim in its venv)",
        missing.join(", ")
    );
}

/// A peer program on a loopback port of its own, its output in a log file of its temp dir,
/// stopped by PID when dropped (its log shown if the test failed).
struct Peer {
    name: &'static str,
    port: u16,
    dir: TempDir,
    child: Child,
}

impl Peer {
    /// Starts `program` with `args(port, dir)` on a free port and waits until GET
    /// `ready_path` answers 200; three tries, in case another test took the port first.
    async fn start(
        program: &'static str,
        ready_path: &str,
        args: impl Fn(u16, &Path) -> Vec<String>,
    ) -> Peer {
        let dir = tempfile::Builder::new()
            .prefix("telagent-fleet-")
            .tempdir()
            .expect("tempdir");
        let log = dir.path().join(format!("{program}.log"));
        for _ in 0..3 {
            let port = telagent_tests::free_port();
            let out = std::fs::File::create(&log).expect("log file");
            let mut child = Command::new(program)
                .args(args(port, dir.path()))
                .stdin(Stdio::null())
                .stdout(out.try_clone().expect("dup"))
                .stderr(out)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {program} (run tests/run): {e}"));
            let url = format!("http://127.0.0.1:{port}{ready_path}");
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            let ready = loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break false;
                }
                let answer = tokio::time::timeout(
                    Duration::from_secs(2),
                    telagent::http_client::get(&url, 1 << 20),
                )
                .await;
                if matches!(answer, Ok(Ok(ref r)) if r.status == 200) {
                    break true;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{program} did not answer {url} within 60s:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            if ready {
                return Peer {
                    name: program,
                    port,
                    dir,
                    child,
                };
            }
            telagent_tests::stop(&mut child, Duration::from_secs(5));
        }
        panic!(
            "{program} exited before it was ready (three ports tried):\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        telagent_tests::stop(&mut self.child, Duration::from_secs(10));
        if std::thread::panicking() {
            let log = self.dir.path().join(format!("{}.log", self.name));
            eprintln!(
                "--- {} log ---\n{}",
                self.name,
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
    }
}

/// GET `url`: (status, body); fails the test if nothing answers within 30 s.
async fn get(url: &str) -> (u16, String) {
    let r = tokio::time::timeout(
        Duration::from_secs(30),
        telagent::http_client::get(url, 64 << 20),
    )
    .await
    .unwrap_or_else(|_| panic!("{url}: no answer within 30s"))
    .unwrap_or_else(|e| panic!("{url}: {e}"));
    (r.status, String::from_utf8_lossy(&r.body).into_owned())
}

/// GET a path of VictoriaMetrics' HTTP API as JSON; a refused query fails the test at
/// once with VictoriaMetrics' answer.
async fn api(base: &str, path: &str) -> Value {
    let url = format!("{base}{path}");
    let (status, body) = get(&url).await;
    assert_eq!(status, 200, "{url}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{url}: not JSON ({e}): {body}"))
}

/// The series an instant query returns now.
async fn instant(base: &str, expr: &str) -> Vec<Value> {
    let q = telagent::http_client::encode(expr);
    api(base, &format!("/api/v1/query?query={q}")).await["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The value of a query that returns one number (None while it returns nothing).
async fn scalar(base: &str, expr: &str) -> Option<f64> {
    instant(base, expr).await.first()?["value"][1]
        .as_str()?
        .parse()
        .ok()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `expr` as Grafana sends it for a panel over the last `RANGE_S` seconds, with the data
/// source's scrape interval set to `SCRAPE_S`: `$__interval` is the step, max(scrape
/// interval, range / 1,000 points); `$__rate_interval` is max($__interval + scrape
/// interval, 4 × scrape interval); `$__range` is the range; every dashboard variable
/// (`$server`, `$instance`, `${server}`) is at its default, All, whose allValue is `.*`.
fn grafana(expr: &str) -> String {
    let step = SCRAPE_S.max(RANGE_S.div_ceil(1000));
    let builtin = |name: &str| -> Option<String> {
        Some(match name {
            "__rate_interval" => format!("{}s", (step + SCRAPE_S).max(4 * SCRAPE_S)),
            "__interval" => format!("{step}s"),
            "__interval_ms" => (step * 1000).to_string(),
            "__range" => format!("{RANGE_S}s"),
            "__range_s" => RANGE_S.to_string(),
            "__range_ms" => (RANGE_S * 1000).to_string(),
            _ => return None,
        })
    };
    let mut out = String::new();
    let mut rest = expr;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let braced = after.starts_with('{');
        let body = if braced { &after[1..] } else { after };
        let len = body
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(body.len());
        let name = &body[..len];
        let mut used = len + usize::from(braced);
        if braced {
            // ${name} or ${name:format}
            used += body[len..].find('}').map_or(0, |j| j + 1);
        }
        out.push_str(&builtin(name).unwrap_or_else(|| ".*".to_string()));
        rest = &after[used..];
    }
    out.push_str(rest);
    out
}

/// The number of series a panel's target returns from VictoriaMetrics now: an instant
/// query at the end of the range for `"instant": true` targets (as Grafana sends them),
/// else a range query over it, aligned to the step.
async fn panel_series(base: &str, target: &Value) -> usize {
    let expr = grafana(target["expr"].as_str().unwrap_or(""));
    let q = telagent::http_client::encode(&expr);
    let step = SCRAPE_S.max(RANGE_S.div_ceil(1000));
    let path = if target["instant"].as_bool() == Some(true) {
        format!("/api/v1/query?query={q}&time={}", now())
    } else {
        let end = now() / step * step;
        format!(
            "/api/v1/query_range?query={q}&start={}&end={end}&step={step}",
            end - RANGE_S
        )
    };
    let v = api(base, &path).await;
    assert_eq!(v["status"], "success", "{expr}: {v}");
    v["data"]["result"].as_array().map_or(0, Vec::len)
}

fn totals(args: &[&str]) -> (i32, String) {
    let out = Command::new(telagent_tests::agent_bin())
        .arg("totals")
        .args(args)
        .output()
        .expect("run telagent totals");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn grafana_variables_are_substituted() {
    assert_eq!(
        grafana(r#"sum by (server) (rate(x{server=~"$server"}[$__rate_interval]))"#),
        r#"sum by (server) (rate(x{server=~".*"}[4s]))"#
    );
    assert_eq!(
        grafana(r#"increase(x{instance=~"${instance:regex}"}[$__range]) / $__interval_ms"#),
        r#"increase(x{instance=~".*"}[300s]) / 1000"#
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn five_agents_through_prometheus_agent_mode_into_victoriametrics() {
    require_peers();
    let sim = SnmpSim::start(5, 1); // an E1 gateway, 5 of 30 channels busy, no alarm
    let sipp = Sipp::start("u1", "200");
    let traps = free_udp_port(); // nothing listens: v2c traps are sent all the same
    let tokens = tempfile::tempdir().unwrap();
    let access = token_access(tokens.path());
    let mut services = Vec::new();
    let mut modems = Vec::new();
    for _ in 0..AGENTS {
        services.push(Service::start(Behaviour::Accept).await);
        modems.push(FakeModem::start(Quirks::default()));
    }
    let names: Vec<String> = (1..=AGENTS).map(|i| format!("fax{i}")).collect();
    let ports: Vec<u16> = (0..AGENTS).map(|_| telagent_tests::free_port()).collect();
    // One cluster: the same [[member]] list on every agent.
    let members: String = names
        .iter()
        .zip(&ports)
        .zip(&services)
        .map(|((name, port), svc)| {
            format!(
                "[[member]]\nname = \"{name}\"\nagent = \"http://127.0.0.1:{port}\"\nservice = \"{}\"\n\n",
                svc.addr
            )
        })
        .collect();
    let mut agents = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let body = format!(
            "{access}\n{members}[server]\ncritical = [\"svc\"]\nlines = [\"line1\", \"gw\"]\n\n\
             [[tcp]]\nname = \"svc\"\naddress = \"{svc}\"\ninterval = \"1s\"\ntimeout = \"500ms\"\n\n\
             [[modem]]\nname = \"line1\"\nport = \"{modem}\"\ndevice = \"ttyFAKE\"\nlock_dir = \"{locks}\"\ncommand_timeout = \"500ms\"\nvoltage = {{}}\n\n\
             [[gateway]]\nname = \"gw\"\naddress = \"127.0.0.1:{gw}\"\ninterval = \"1s\"\ntimeout = \"900ms\"\nrequest_timeout = \"300ms\"\n\n\
             [[sip]]\nname = \"sipgw\"\nuri = \"sip:{name}@127.0.0.1:{sip}\"\ninterval = \"1s\"\ntimeout = \"500ms\"\n\n\
             [[queue]]\nname = \"outq\"\nsource = \"command\"\ncommand = [\"echo\", \"4\"]\ninterval = \"1s\"\ntimeout = \"500ms\"\n\n\
             [notify]\n[[notify.receiver]]\nname = \"nms\"\naddress = \"127.0.0.1:{traps}\"\nversion = \"v2c\"\ncommunity = \"public\"\n",
            svc = services[i].addr,
            modem = modems[i].port.display(),
            locks = modems[i].dir.path().display(),
            gw = sim.port,
            sip = sipp.port,
        );
        let agent = Agent::start_as(name, ports[i], &body)
            .await
            .unwrap_or_else(|log| panic!("{name} did not start:\n{log}"));
        agents.push(agent);
    }
    let events = |n: usize| {
        let e = [
            r#"{"direction": "sent", "result": "ok", "pages": 2, "line": "ttyS0"}"#,
            r#"{"direction": "received", "result": "ok", "pages": 1, "line": "ttyS1"}"#,
            r#"{"direction": "sent", "result": "failed", "line": "ttyS0"}"#,
        ];
        format!("{{\"events\": [{}]}}", vec![e.join(", "); n].join(", "))
    };
    for a in &agents {
        assert_eq!(
            a.post("/v1/events", &events(2), TOKEN).await.unwrap().0,
            200
        );
    }

    let vm = Peer::start("victoria-metrics", "/health", |port, dir| {
        vec![
            format!("-storageDataPath={}", dir.join("data").display()),
            format!("-httpListenAddr=127.0.0.1:{port}"),
            "-retentionPeriod=1d".into(),
            // The default (30 s) hides the newest samples from queries.
            "-search.latencyOffset=1s".into(),
        ]
    })
    .await;
    let vm_url = vm.url();
    let targets: Vec<String> = ports.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
    let prom_yml = format!(
        "global:\n  scrape_interval: {SCRAPE_S}s\n  scrape_timeout: {}ms\n\
         scrape_configs:\n  - job_name: telagent\n    static_configs:\n      - targets: [{}]\n\
         remote_write:\n  - url: {vm_url}/api/v1/write\n    queue_config:\n      batch_send_deadline: 1s\n",
        SCRAPE_S * 900,
        targets.join(", ")
    );
    let prom = Peer::start("prometheus", "/-/ready", |port, dir| {
        let cfg = dir.join("agent.yml");
        std::fs::write(&cfg, &prom_yml).expect("write agent.yml");
        vec![
            "--enable-feature=agent".into(),
            format!("--config.file={}", cfg.display()),
            format!("--storage.agent.path={}", dir.join("wal").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
        ]
    })
    .await;
    // An agent-mode Prometheus has no query API: what answers below is VictoriaMetrics.
    let (status, body) = get(&format!("{}/api/v1/query?query=up", prom.url())).await;
    assert!(
        status != 200 && body.contains("unavailable with Prometheus Agent"),
        "not in agent mode: {status} {body}"
    );

    poll(
        Duration::from_secs(120),
        "every agent scraped, remote-written and queryable in VictoriaMetrics",
        || async {
            let up = scalar(&vm_url, "count(up{job=\"telagent\"} == 1)").await;
            (up == Some(AGENTS as f64)).then_some(())
        },
    )
    .await;
    poll(
        Duration::from_secs(120),
        "every kind of series in VictoriaMetrics a few times, from every agent",
        || async {
            for m in [
                "telagent_modem_line_volts",
                "telagent_gateway_channels{state=\"idle\"}",
                "telagent_messages_sent_total{line=\"ttyS0\"}",
                "telagent_notifications_sent_total",
                "telagent_queue_depth",
            ] {
                let n = scalar(&vm_url, &format!("count(count_over_time({m}[1m]) >= 3)")).await;
                if n != Some(AGENTS as f64) {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
    // Traffic while the fleet is scraped: what `totals --prometheus` sees as an increase.
    for a in &agents {
        assert_eq!(
            a.post("/v1/events", &events(3), TOKEN).await.unwrap().0,
            200
        );
    }

    let mut panels = 0;
    for (file, d) in telagent_tests::dashboards() {
        for v in d["templating"]["list"].as_array().unwrap() {
            // label_values(metric, label), as Grafana asks for a variable's values.
            let q = v["query"]["query"]
                .as_str()
                .or(v["query"].as_str())
                .unwrap();
            let (metric, label) = q
                .strip_prefix("label_values(")
                .and_then(|r| r.strip_suffix(')'))
                .and_then(|r| r.rsplit_once(','))
                .unwrap_or_else(|| panic!("{file}: variable query {q}"));
            let m = telagent::http_client::encode(metric.trim());
            let values = api(
                &vm_url,
                &format!("/api/v1/label/{}/values?match%5B%5D={m}", label.trim()),
            )
            .await;
            assert_eq!(
                values["data"].as_array().map_or(0, Vec::len),
                AGENTS,
                "{file}: variable {}: {q}: {values}",
                v["name"]
            );
        }
        for p in d["panels"].as_array().unwrap() {
            let title = p["title"].as_str().unwrap_or("");
            for t in p["targets"].as_array().cloned().unwrap_or_default() {
                panels += 1;
                let expr = grafana(t["expr"].as_str().unwrap_or(""));
                poll(
                    Duration::from_secs(60),
                    &format!("{file}: panel {title}: data for {expr}"),
                    || async { (panel_series(&vm_url, &t).await > 0).then_some(()) },
                )
                .await;
            }
        }
    }
    assert!(panels >= 20, "{panels} panel queries");

    poll(
        Duration::from_secs(60),
        "telagent totals --prometheus: every server's traffic sent while scraped",
        || async {
            let (code, out) = totals(&["--prometheus", &vm_url, "--json"]);
            assert_eq!(code, 0, "{out}");
            let r: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
            assert_eq!(r["estimate"], true, "{r}");
            let sent_by = |n: &str| {
                r["rows"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|row| row["server"] == n)
                    .map(|row| row["sent"].as_u64().unwrap_or(0))
                    .sum::<u64>()
            };
            names.iter().all(|n| sent_by(n.as_str()) > 0).then_some(())
        },
    )
    .await;
    let (code, table) = totals(&["--prometheus", &vm_url]);
    assert_eq!(code, 0, "{table}");
    assert!(table.contains("Estimates from Prometheus"), "{table}");
    for n in &names {
        assert!(
            table.lines().any(|l| l.starts_with(&format!("{n} "))),
            "{n} missing from the totals:\n{table}"
        );
    }
    // Samples reached VictoriaMetrics by remote write, not by a scrape of its own.
    let (_, inserted) = get(&format!("{vm_url}/metrics")).await;
    let remote_written: f64 = inserted
        .lines()
        .filter(|l| l.starts_with("vm_rows_inserted_total{type=\"promremotewrite\"}"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(remote_written > 0.0, "{inserted}");
}
