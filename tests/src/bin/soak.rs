//! The soak run behind `tests/bench/run soak`: one agent with every check kind and every
//! output at once, for a given time, while the peers are restarted at random moments.
//!
//! usage: soak [--seconds N] [--seed N]   (the agent: `$TELAGENT_BIN`, else a debug build)
//!
//! Checks: tcp, http, command (the critical one, flapped by the run), modem (the serial
//! fake), sip (Kamailio), gateway (snmpsim), queue (a directory), the xferfaxlog tail and
//! `POST /v1/events`. Outputs: SNMP informs (v2c and v3) and traps into snmptrapd, AgentX
//! into snmpd, HAProxy's agent-check, Kamailio's dispatcher, /metrics. Restarted at random:
//! snmptrapd, snmpd, Kamailio, HAProxy and the serial fake (unplugged, plugged in again).
//!
//! Prints JSON lines: RSS and open file descriptors over time, notifications lost, message
//! counts lost or doubled, panics.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use telagent::traffic::totals::Row;
use telagent::traffic::Direction;
use telagent_tests::agent::{metric, token_access, Agent, TOKEN};
use telagent_tests::haproxy::{Backend, Haproxy};
use telagent_tests::modem::{FakeModem, Quirks};
use telagent_tests::service::{Behaviour, Service};
use telagent_tests::sip::{Kamailio, Sipp};
use telagent_tests::snmpd::{Snmpd, V2C};
use telagent_tests::snmpsim::SnmpSim;
use telagent_tests::snmptrapd::Snmptrapd;

/// The agent's SNMPv3 engine id (`[notify] engine_id`).
const ENGINE: &str = "8001860704736f616b";
/// The inform receivers whose every notification must arrive.
const INFORMS: [(&str, &str); 2] = [
    ("v2c-inform", "INFORM, SNMP v2c, community public"),
    ("v3-inform", "INFORM, SNMP v3, user informuser"),
];
const PEERS: [&str; 5] = ["snmptrapd", "snmpd", "kamailio", "haproxy", "modem"];

/// xorshift64*: the run's random moments, reproducible from the seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }

    fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        lo + Duration::from_millis(self.below((hi - lo).as_millis() as u64 + 1))
    }
}

/// A message's direction, as the traffic store takes it.
fn direction(sent: bool) -> Direction {
    if sent {
        Direction::Sent
    } else {
        Direction::Received
    }
}

/// The counts of a totals row, by name.
fn fields(r: &Row) -> [(&'static str, u64); 6] {
    [
        ("sent", r.sent),
        ("failed", r.failed),
        ("received", r.received),
        ("receive_failed", r.receive_failed),
        ("pages_sent", r.pages_sent),
        ("pages_received", r.pages_received),
    ]
}

/// The rows of a `/v1/totals` answer summed into one.
fn sum_rows(body: &str) -> Row {
    let mut answer: Value = serde_json::from_str(body).unwrap_or_default();
    let rows: Vec<Row> = answer
        .get_mut("rows")
        .and_then(|r| serde_json::from_value(r.take()).ok())
        .unwrap_or_default();
    rows.iter().fold(Row::default(), |mut sum, r| {
        sum.merge(r);
        sum
    })
}

/// One sample of the agent process.
struct Sample {
    at: Duration,
    rss_kib: u64,
    fds: u64,
}

fn sample(pid: u32, at: Duration) -> Sample {
    let rss_kib = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64);
    Sample { at, rss_kib, fds }
}

/// The peers that stay up the whole run.
struct Steady {
    svc: Service,
    web: Service,
    sipp: Sipp,
    sim: SnmpSim,
}

/// The peers the run restarts.
struct Peers {
    trapd: Snmptrapd,
    snmpd: Snmpd,
    kamailio: Option<Kamailio>,
    haproxy: Option<Haproxy>,
    backend: Backend,
    modem: FakeModem,
}

impl Peers {
    fn stop(&mut self, which: &str) {
        match which {
            "snmptrapd" => self.trapd.stop(),
            "snmpd" => self.snmpd.stop(),
            // Kamailio is stopped and started in one go by its launcher.
            "kamailio" => {}
            "haproxy" => self.haproxy = None,
            _ => self.modem.unplug(),
        }
    }

    fn start(&mut self, which: &str) {
        match which {
            "snmptrapd" => self.trapd.restart(),
            "snmpd" => self.snmpd.restart(),
            "kamailio" => self.kamailio = self.kamailio.take().map(Kamailio::restart),
            "haproxy" => self.haproxy = Some(Haproxy::start(std::slice::from_ref(&self.backend))),
            _ => self.modem.plug(),
        }
    }
}

/// `date TYPE commid modem jobid jobtag sender "number" "CSI" params pages jobtime
/// conntime "reason"` ...: one xferfaxlog record.
fn xferfaxlog_record(sent: bool, ok: bool, pages: u64, n: u64) -> String {
    let kind = if sent { "SEND" } else { "RECV" };
    let reason = if ok { "" } else { "No carrier detected" };
    format!(
        "11/23/26 08:33\t{kind}\t{n:09}\tttyS{}\t{n}\t\"\"\tfax@soak\t\"5550{}\"\t\"\"\t2220056\t{pages}\t0:00:40\t0:00:31\t\"{reason}\"\t\"\"\t\"\"\t\"\"\t\"fax\"\t\"00 00 00\"\n",
        n % 4,
        n % 10
    )
}

fn write_flap(path: &Path, down: bool, n: u64) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{} {n}\n", if down { 2 } else { 0 })).expect("flap file");
    std::fs::rename(&tmp, path).expect("flap file");
}

fn config(dir: &Path, port: u16, check_port: u16, p: &Peers, s: &Steady) -> String {
    let d = dir.display();
    let kam = p.kamailio.as_ref().expect("kamailio");
    let mut c = token_access(dir);
    let _ = write!(
        c,
        r#"
[ports]
scan = false
min_probe_interval = "5s"

[cluster]
hold = "1s"

[[member]]
name = "fax1"
agent = "http://127.0.0.1:{port}"
service = "{svc}"
sip = "sip:127.0.0.1:{sipp}"

[server]
critical = ["flap"]

[defaults]
interval = "1s"
timeout = "900ms"
rise = 1
fall = 1

[[tcp]]
name = "svc"
address = "{svc}"

[[http]]
name = "web"
url = "http://{web}/health"

[[command]]
name = "flap"
command = ["sh", "-c", "read code n < {d}/flap; echo \"flap $n\"; exit $code"]

[[modem]]
name = "line1"
port = "{modem}"
device = "ttySOAK"
lock_dir = "{locks}"
command_timeout = "500ms"
interval = "5s"
timeout = "4s"

[[sip]]
name = "proxy"
uri = "sip:127.0.0.1:{kam}"

[[gateway]]
name = "gw"
address = "127.0.0.1:{sim}"
min_idle = 1
interval = "5s"
timeout = "4s"
request_timeout = "1s"
retries = 1

[[queue]]
name = "outq"
source = "directory"
path = "{d}/outq"
high_water = 5

[[traffic.xferfaxlog]]
path = "{d}/xferfaxlog"
interval = "500ms"

[notify]
hold = "1s"
timeout = "1s"
max_backoff = "5s"
engine_id = "{ENGINE}"

[[notify.receiver]]
name = "v2c-inform"
address = "127.0.0.1:{trapd}"
version = "v2c"
community = "public"
inform = true

[[notify.receiver]]
name = "v3-inform"
address = "127.0.0.1:{trapd}"
version = "v3"
inform = true
user = "informuser"
auth = "sha"
auth_password = "authpass123"
priv_password = "privpass123"

[[notify.receiver]]
name = "v2c-trap"
address = "127.0.0.1:{trapd}"
version = "v2c"
community = "public"

[snmp]
agentx = "{agentx}"

[haproxy]
listen = "127.0.0.1:{check_port}"

[kamailio]
rpc_url = "{rpc}"
reassert_interval = "5s"
"#,
        svc = s.svc.addr,
        web = s.web.addr,
        sipp = s.sipp.port,
        modem = p.modem.port.display(),
        locks = p.modem.dir.path().display(),
        kam = kam.udp_port,
        sim = s.sim.port,
        trapd = p.trapd.port,
        agentx = p.snmpd.agentx(),
        rpc = kam.rpc_url(),
    );
    c
}

/// Flap numbers whose `kind` notification (telagentCheckDown/Up) reached snmptrapd from
/// the receiver `who` (the start of snmptrapd's `%P`), with how often each arrived.
fn flaps_received(trapd: &Snmptrapd, who: &str, kind: &str) -> BTreeMap<u64, u64> {
    let mut out = BTreeMap::new();
    for (security, vbs) in trapd.received() {
        if !security.starts_with(who) || !vbs.iter().any(|v| v.ends_with(kind)) {
            continue;
        }
        let flap = vbs.iter().find_map(|v| {
            let reason = v.split_once("telagentNotifyReason.0 = STRING: ")?.1;
            reason
                .trim_matches('"')
                .rsplit_once("flap ")?
                .1
                .parse::<u64>()
                .ok()
        });
        if let Some(n) = flap {
            *out.entry(n).or_default() += 1;
        }
    }
    out
}

/// median, p99, min, max of `xs` (not empty).
fn spread(xs: &[f64]) -> Value {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    json!({"median": at(0.5), "p99": at(0.99), "min": v[0], "max": v[v.len() - 1], "samples": v.len()})
}

/// Least-squares slope of `ys` over `xs`, per unit of x.
fn slope(xs: &[f64], ys: &[f64]) -> f64 {
    let n = xs.len() as f64;
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let num: f64 = xs.iter().zip(ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let den: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
    if den == 0.0 {
        0.0
    } else {
        num / den
    }
}

fn result(name: &str, parameters: &Value, stats: Value, unit: &str, extra: Value) -> Value {
    let mut r = json!({"name": name, "parameters": parameters, "unit": unit,
                       "cores": std::thread::available_parallelism().map_or(1, |n| n.get())});
    for src in [stats, extra] {
        if let (Some(r), Value::Object(m)) = (r.as_object_mut(), src) {
            r.extend(m);
        }
    }
    r
}

/// A count as a result of its own: median = p99 = min = max.
fn count(name: &str, parameters: &Value, value: u64, extra: Value) -> Value {
    result(name, parameters, spread(&[value as f64]), "count", extra)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map(|v| {
                v.parse::<u64>()
                    .unwrap_or_else(|_| panic!("{name} wants a number"))
            })
    };
    let seconds = arg("--seconds").unwrap_or(3600);
    let seed = arg("--seed").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1
    });
    // Two streams: the traffic's, and the restarts' (which peer, when), so that a seed names
    // the same restarts whatever the traffic did.
    let mut rng = Rng(seed);
    let mut chaos = Rng(seed.rotate_left(32) | 1);
    let run = Duration::from_secs(seconds);

    let dir = tempfile::Builder::new()
        .prefix("telagent-soak-")
        .tempdir()
        .expect("tempdir");
    let d = dir.path().to_path_buf();
    std::fs::create_dir(d.join("outq")).expect("queue dir");
    std::fs::write(d.join("xferfaxlog"), "").expect("xferfaxlog");
    write_flap(&d.join("flap"), false, 0);

    let steady = Steady {
        svc: Service::start(Behaviour::Accept).await,
        web: Service::start(Behaviour::Reply(
            b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
        ))
        .await,
        sipp: Sipp::start_for("u1", "200 OK", run + Duration::from_secs(900)),
        sim: SnmpSim::start(5, 1),
    };
    let port = telagent_tests::free_port();
    let check_port = telagent_tests::free_port();
    let mut peers = Peers {
        trapd: Snmptrapd::start(
            "authCommunity log public\n\
             createUser informuser SHA authpass123 AES privpass123\n\
             authUser log informuser priv\n",
        ),
        snmpd: Snmpd::start(),
        kamailio: Some(Kamailio::start_dispatcher(&[format!(
            "sip:127.0.0.1:{}",
            steady.sipp.port
        )])),
        haproxy: None,
        backend: Backend {
            name: "fax1".into(),
            addr: steady.svc.addr,
            agent_check: check_port,
        },
        modem: FakeModem::start(Quirks::default()),
    };
    let body = config(&d, port, check_port, &peers, &steady);
    let mut agent = Agent::start_as("fax1", port, &body)
        .await
        .unwrap_or_else(|log| panic!("the agent did not start:\n{log}"));
    peers.start("haproxy");
    let pid = agent.pid();
    eprintln!(
        "soak: {seconds} s, seed {seed}, agent pid {pid}, dir {}",
        agent.dir.path().display()
    );

    let started = Instant::now();
    let mut expected = Row::default();
    let (mut tick, mut record, mut batch) = (0u64, 0u64, 0u64);
    let (mut flaps, mut rotations) = (0u64, 0u64);
    let mut restarts: BTreeMap<&str, u64> = BTreeMap::new();
    let (mut rejected, mut walks_failed, mut scrapes_failed) = (0u64, 0u64, 0u64);
    let mut samples = vec![sample(pid, Duration::ZERO)];
    let mut flapping_down = false;
    let mut next_restart =
        started + chaos.between(Duration::from_secs(20), Duration::from_secs(90));
    let mut next_flap = started + Duration::from_secs(15);
    let mut next_sample = started + Duration::from_secs(10);
    let mut next_rotation = started + Duration::from_secs(600);
    let mut next_walk = started + Duration::from_secs(60);
    let xferfaxlog = d.join("xferfaxlog");

    while started.elapsed() < run {
        // Traffic: a few xferfaxlog records every second, a batch of events every other.
        let mut lines = String::new();
        for _ in 0..rng.below(6) {
            record += 1;
            let (sent, ok, pages) = (rng.below(3) > 0, rng.below(10) > 0, rng.below(5));
            expected.add(direction(sent), ok, 1, pages);
            lines.push_str(&xferfaxlog_record(sent, ok, pages, record));
        }
        append(&xferfaxlog, &lines);
        tick += 1;
        if tick % 2 == 0 {
            batch += 1;
            let mut events = Vec::new();
            let mut fed = Row::default();
            for _ in 0..1 + rng.below(20) {
                let (sent, ok, pages) = (rng.below(2) > 0, rng.below(8) > 0, rng.below(4));
                fed.add(direction(sent), ok, 1, pages);
                events.push(json!({"direction": if sent { "sent" } else { "received" },
                                   "result": if ok { "ok" } else { "failed" },
                                   "pages": pages, "line": format!("ttyE{}", batch % 3)}));
            }
            let body = json!({"batch": format!("soak-{batch}"), "events": events}).to_string();
            // Retried with the same batch id until acknowledged: exactly once.
            loop {
                match agent.post("/v1/events", &body, TOKEN).await {
                    Some((200, _)) => {
                        expected.merge(&fed);
                        break;
                    }
                    Some((code, text)) => {
                        rejected += 1;
                        eprintln!("soak: batch {batch} refused ({code}): {text}");
                        break;
                    }
                    None => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        }
        let now = Instant::now();
        if now >= next_flap {
            // The critical check fails and recovers: one telagentCheckDown and one
            // telagentCheckUp per flap, told apart by the number in their reason.
            if !flapping_down {
                flaps += 1;
            }
            flapping_down = !flapping_down;
            write_flap(&d.join("flap"), flapping_down, flaps);
            next_flap = now + Duration::from_secs(15);
            // The queue grows past its high water and drains.
            let files = if flapping_down { 7 } else { 1 };
            set_queue(&d.join("outq"), files);
        }
        if now >= next_sample {
            samples.push(sample(pid, started.elapsed()));
            match agent.get("/metrics").await {
                Some((200, _)) => {}
                _ => scrapes_failed += 1,
            }
            next_sample = now + Duration::from_secs(10);
        }
        if now >= next_walk {
            if peers
                .snmpd
                .walk(V2C, "TELAGENT-MIB::telagentAgentServer")
                .is_err()
            {
                walks_failed += 1;
            }
            next_walk = now + Duration::from_secs(60);
        }
        if now >= next_rotation {
            rotations += 1;
            std::fs::rename(&xferfaxlog, d.join(format!("xferfaxlog.{rotations}")))
                .expect("rotate");
            std::fs::write(&xferfaxlog, "").expect("new xferfaxlog");
            next_rotation = now + Duration::from_secs(600);
        }
        if now >= next_restart {
            let which = PEERS[chaos.below(PEERS.len() as u64) as usize];
            let down = chaos.between(Duration::ZERO, Duration::from_secs(5));
            eprintln!(
                "soak: {} s: {which} stopped for {:.1} s",
                started.elapsed().as_secs(),
                down.as_secs_f64()
            );
            peers.stop(which);
            tokio::time::sleep(down).await;
            peers.start(which);
            *restarts.entry(which).or_default() += 1;
            next_restart =
                Instant::now() + chaos.between(Duration::from_secs(20), Duration::from_secs(90));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // The end: the last flap recovers; everything still owed must arrive.
    write_flap(&d.join("flap"), false, flaps);
    let settle = Instant::now() + Duration::from_secs(120);
    let recovered = format!(": flap {flaps}");
    while Instant::now() < settle {
        let t = agent.target("flap").await.unwrap_or_default();
        if t["state"] == "up"
            && t["last"]["detail"]
                .as_str()
                .is_some_and(|d| d.ends_with(&recovered))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (mut got, mut m) = (Row::default(), String::new());
    while Instant::now() < settle {
        m = agent.get("/metrics").await.map(|r| r.1).unwrap_or_default();
        let owed: f64 = INFORMS
            .iter()
            .map(|(r, _)| {
                metric(
                    &m,
                    &format!("telagent_notification_outbox_depth{{receiver=\"{r}\"}}"),
                )
                .unwrap_or(1.0)
            })
            .sum();
        got = match agent.get("/v1/totals?since=0").await {
            Some((200, body)) => sum_rows(&body),
            _ => Row::default(),
        };
        if owed == 0.0 && got == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    samples.push(sample(pid, started.elapsed()));
    let alive = agent.running();
    let log = std::fs::read_to_string(agent.dir.path().join("agent.log")).unwrap_or_default();
    let panics = log.matches("panicked at").count() as u64;

    let parameters = json!({"seconds": seconds, "seed": seed, "flaps": flaps,
                            "restarts": restarts, "xferfaxlog_rotations": rotations,
                            "records": record, "batches": batch});
    let mut out = Vec::new();
    // Memory and descriptors over time, and their growth after the first tenth (warm-up).
    let warm = samples
        .iter()
        .filter(|s| s.at >= run / 10)
        .collect::<Vec<_>>();
    let hours: Vec<f64> = warm.iter().map(|s| s.at.as_secs_f64() / 3600.0).collect();
    let rss: Vec<f64> = warm.iter().map(|s| s.rss_kib as f64 / 1024.0).collect();
    let fds: Vec<f64> = warm.iter().map(|s| s.fds as f64).collect();
    let over_time: Vec<Value> = samples
        .iter()
        .filter(|s| s.at.as_secs() % 300 < 10 || s.at >= run)
        .map(|s| {
            json!([
                s.at.as_secs(),
                (s.rss_kib as f64 / 1024.0 * 100.0).round() / 100.0,
                s.fds
            ])
        })
        .collect();
    let all_rss: Vec<f64> = samples.iter().map(|s| s.rss_kib as f64 / 1024.0).collect();
    let all_fds: Vec<f64> = samples.iter().map(|s| s.fds as f64).collect();
    out.push(result(
        "soak-rss",
        &parameters,
        spread(&all_rss),
        "MiB",
        json!({"growth_mib_per_hour": round2(slope(&hours, &rss)),
               "over_time": over_time, "over_time_columns": ["second", "rss_mib", "fds"],
               "goal": {"growth_mib_per_hour": "< 1"}}),
    ));
    out.push(result(
        "soak-fds",
        &parameters,
        spread(&all_fds),
        "open file descriptors",
        json!({"growth_per_hour": round2(slope(&hours, &fds))}),
    ));
    // Notifications: every flap's down and up notification through each inform receiver.
    for (receiver, who) in INFORMS {
        let (mut lost, mut repeated) = (0u64, 0u64);
        for kind in ["telagentCheckDown", "telagentCheckUp"] {
            let seen = flaps_received(&peers.trapd, who, kind);
            lost += (1..=flaps).filter(|n| !seen.contains_key(n)).count() as u64;
            repeated += seen.values().map(|c| c - 1).sum::<u64>();
        }
        let ack = metric(
            &m,
            &format!("telagent_notifications_acknowledged_total{{receiver=\"{receiver}\"}}"),
        );
        let dropped = metric(
            &m,
            &format!("telagent_notifications_dropped_total{{receiver=\"{receiver}\"}}"),
        );
        out.push(count(
            &format!("soak-notifications-lost-{receiver}"),
            &parameters,
            lost,
            json!({"expected": 2 * flaps, "received_twice": repeated,
                   "acknowledged": ack, "dropped": dropped, "goal": 0}),
        ));
    }
    // Message counts: what was fed against what the agent counted.
    let (mut lost, mut doubled) = (0u64, 0u64);
    let mut diff = serde_json::Map::new();
    for ((k, want), (_, have)) in fields(&expected).into_iter().zip(fields(&got)) {
        lost += want.saturating_sub(have);
        doubled += have.saturating_sub(want);
        diff.insert(k.into(), json!({"fed": want, "counted": have}));
    }
    out.push(count(
        "soak-counts-lost",
        &parameters,
        lost,
        json!({"by_field": diff, "batches_refused": rejected, "goal": 0}),
    ));
    out.push(count(
        "soak-counts-doubled",
        &parameters,
        doubled,
        json!({"goal": 0}),
    ));
    out.push(count(
        "soak-panics",
        &parameters,
        panics + u64::from(!alive),
        json!({"agent_running_at_end": alive, "goal": 0,
               "metrics_scrapes_failed": scrapes_failed, "agentx_walks_failed": walks_failed}),
    ));
    for r in out {
        println!("{r}");
    }
    agent.stop();
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open xferfaxlog");
    f.write_all(text.as_bytes()).expect("append to xferfaxlog");
}

/// Makes the queue directory hold exactly `n` files.
fn set_queue(dir: &Path, n: usize) {
    for e in std::fs::read_dir(dir).expect("queue dir").flatten() {
        let _ = std::fs::remove_file(e.path());
    }
    for i in 0..n {
        std::fs::write(dir.join(format!("q{i}")), "job").expect("queue file");
    }
}
