//! The routing layer against the real programs: HAProxy (agent-check + health check),
//! Kamailio's dispatcher (JSON-RPC), three agents of which one dies, a flapping service,
//! changes pushed over HAProxy's runtime API, and the access rules of state-changing
//! endpoints.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use telagent::routing::kamailio::{dests, flags, rpc, Dest};
use telagent_tests::agent::Agent;
use telagent_tests::haproxy::{Backend, Haproxy};
use telagent_tests::service::{Behaviour, Service};
use telagent_tests::sip::{Kamailio, Sipp};
use telagent_tests::{free_port, poll};

const LIMIT: Duration = Duration::from_secs(30);

struct Node {
    name: String,
    port: u16,
    check_port: u16,
    svc: Service,
    sip: String,
}

async fn nodes(n: usize, reply: impl Fn(usize) -> Behaviour) -> Vec<Node> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(Node {
            name: format!("fax{}", i + 1),
            port: free_port(),
            check_port: free_port(),
            svc: Service::start(reply(i)).await,
            sip: String::new(),
        });
    }
    out
}

/// The config of node `me`: the shared cluster sections, its own checks and outputs.
fn body(nodes: &[Node], me: usize, hold: &str, extra: &str) -> String {
    let mut b = format!(
        "[cluster]\npoll_interval = \"200ms\"\npoll_timeout = \"150ms\"\ninactive_after = \"1s\"\nevaluate_interval = \"50ms\"\nrise = 2\nfall = 1\nhold = \"{hold}\"\n\n"
    );
    for n in nodes {
        b.push_str(&format!(
            "[[member]]\nname = \"{}\"\nagent = \"http://127.0.0.1:{}\"\nservice = \"{}\"\nhost = \"{}.example\"\n{}\n",
            n.name,
            n.port,
            n.svc.addr,
            n.name,
            if n.sip.is_empty() { String::new() } else { format!("sip = \"{}\"\n", n.sip) }
        ));
    }
    let order: Vec<String> = nodes.iter().map(|n| format!("\"{}\"", n.name)).collect();
    b.push_str(&format!(
        "[[group]]\nname = \"alerts\"\norder = [{}]\n\n",
        order.join(", ")
    ));
    b.push_str("[server]\ncritical = [\"svc\"]\n\n");
    b.push_str(&format!(
        "[[tcp]]\nname = \"svc\"\naddress = \"{}\"\ninterval = \"200ms\"\nfailing_interval = \"200ms\"\ntimeout = \"100ms\"\nrise = 1\nfall = 1\n\n[haproxy]\nlisten = \"127.0.0.1:{}\"\n\n{extra}",
        nodes[me].svc.addr, nodes[me].check_port
    ));
    b
}

async fn start(nodes: &[Node], me: usize, hold: &str, extra: &str) -> Agent {
    Agent::start_as(
        &nodes[me].name,
        nodes[me].port,
        &body(nodes, me, hold, extra),
    )
    .await
    .unwrap_or_else(|log| panic!("agent {} did not start: {log}", nodes[me].name))
}

async fn server_state(agent: &Agent, name: &str) -> Option<String> {
    let s = agent.status().await;
    s["cluster"]["servers"]
        .as_array()?
        .iter()
        .find(|v| v["name"] == name)
        .and_then(|v| v["state"].as_str().map(str::to_string))
}

/// HAProxy asks the agent only once a minute: every change seen within seconds came through
/// the runtime API.
#[tokio::test(flavor = "multi_thread")]
async fn haproxy_is_told_at_once_through_its_runtime_api() {
    const SOON: Duration = Duration::from_secs(10);
    let mut ns = nodes(1, |_| Behaviour::Accept).await;
    let mut queue = Service::start(Behaviour::Accept).await;
    let hap = Haproxy::start_with(
        &[Backend {
            name: "fax1".into(),
            addr: ns[0].svc.addr,
            agent_check: ns[0].check_port,
        }],
        "check inter 60s agent-check agent-port {agent} agent-inter 60s weight 100",
    );
    let extra = format!(
        "runtime_socket = \"{}\"\nbackend = \"be\"\n\n[[tcp]]\nname = \"queue\"\naddress = \"{}\"\ninterval = \"200ms\"\nfailing_interval = \"200ms\"\ntimeout = \"100ms\"\nrise = 1\nfall = 1\n",
        hap.socket().display(),
        queue.addr
    );
    let config = body(&ns, 0, "0s", &extra).replace(
        "critical = [\"svc\"]",
        "critical = [\"svc\"]\ndrain = [\"queue\"]",
    );
    let agent = Agent::start_as(&ns[0].name, ns[0].port, &config)
        .await
        .unwrap_or_else(|log| panic!("{log}"));
    let status = |want: &'static str| {
        let hap = &hap;
        async move { hap.server("fax1").filter(|(s, _)| s.starts_with(want)) }
    };
    let pushed = || async {
        telagent_tests::agent::metric(
            &agent.metrics().await,
            "telagent_routing_changes_total{output=\"haproxy\"}",
        )
        .unwrap_or(0.0)
    };
    poll(LIMIT, "fax1 up, told through the runtime API", || async {
        (pushed().await >= 1.0).then_some(())
    })
    .await;
    poll(SOON, "fax1 UP in HAProxy", || status("UP")).await;

    ns[0].svc.stop().await;
    let (s, _) = poll(SOON, "fax1 out of HAProxy at once", || async {
        hap.server("fax1").filter(|(s, _)| !s.starts_with("UP"))
    })
    .await;
    assert!(s.starts_with("DOWN") || s.starts_with("DRAIN"), "{s}");
    ns[0].svc.restart().await;
    let (_, weight) = poll(SOON, "fax1 UP again at once", || status("UP")).await;
    assert_eq!(weight, "100");

    queue.stop().await;
    poll(SOON, "fax1 DRAIN at once", || status("DRAIN")).await;
    queue.restart().await;
    let (_, weight) = poll(SOON, "fax1 UP after the drain", || status("UP")).await;
    assert_eq!(weight, "100");
    let m = agent.metrics().await;
    assert!(pushed().await >= 5.0, "up, down, up, drain, up: {m}");
    assert_eq!(
        telagent_tests::agent::metric(&m, "telagent_routing_errors_total{output=\"haproxy\"}"),
        Some(0.0),
        "{}",
        agent.log()
    );
}

/// A backend HAProxy does not have: each push fails with HAProxy's own words, counted and
/// logged once; the agent-check still answers.
#[tokio::test(flavor = "multi_thread")]
async fn a_runtime_api_push_haproxy_refuses_is_an_error_not_a_change() {
    let ns = nodes(1, |_| Behaviour::Accept).await;
    let hap = Haproxy::start(&[Backend {
        name: "fax1".into(),
        addr: ns[0].svc.addr,
        agent_check: ns[0].check_port,
    }]);
    let extra = format!(
        "runtime_socket = \"{}\"\nbackend = \"nope\"\n",
        hap.socket().display()
    );
    let agent = Agent::start_as(&ns[0].name, ns[0].port, &body(&ns, 0, "0s", &extra))
        .await
        .unwrap_or_else(|log| panic!("{log}"));
    let errors = poll(LIMIT, "the refused push counted", || async {
        telagent_tests::agent::metric(
            &agent.metrics().await,
            "telagent_routing_errors_total{output=\"haproxy\"}",
        )
        .filter(|e| *e >= 2.0)
    })
    .await;
    assert!(errors >= 2.0, "retried");
    let log = agent.log();
    assert_eq!(
        log.matches("Cannot tell HAProxy through its runtime API")
            .count(),
        1,
        "logged once: {log}"
    );
    assert!(log.contains("No such backend."), "{log}");
    assert_eq!(
        telagent_tests::agent::metric(
            &agent.metrics().await,
            "telagent_routing_changes_total{output=\"haproxy\"}"
        ),
        Some(0.0)
    );
    poll(LIMIT, "fax1 UP by its agent-check", || async {
        hap.server("fax1").filter(|(s, _)| s.starts_with("UP"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn haproxy_takes_a_down_server_out_and_back_at_full_weight() {
    let mut ns = nodes(2, |i| {
        let body = ["A", "B"][i];
        Behaviour::Reply(
            format!("HTTP/1.0 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\n{body}")
                .into_bytes(),
        )
    })
    .await;
    let mut queue = Service::start(Behaviour::Accept).await;
    let drain = format!(
        "[[tcp]]\nname = \"queue\"\naddress = \"{}\"\ninterval = \"200ms\"\nfailing_interval = \"200ms\"\ntimeout = \"100ms\"\nrise = 1\nfall = 1\n",
        queue.addr
    );
    // fax1 drains when its queue check fails.
    let body_a = body(&ns, 0, "500ms", &drain).replace(
        "critical = [\"svc\"]",
        "critical = [\"svc\"]\ndrain = [\"queue\"]",
    );
    let mut a = Agent::start_as(&ns[0].name, ns[0].port, &body_a)
        .await
        .unwrap_or_else(|log| panic!("{log}"));
    let b = start(&ns, 1, "500ms", "").await;
    let backends: Vec<Backend> = ns
        .iter()
        .map(|n| Backend {
            name: n.name.clone(),
            addr: n.svc.addr,
            agent_check: n.check_port,
        })
        .collect();
    let hap = Haproxy::start(&backends);
    let status = |name: &'static str, want: &'static str| {
        let hap = &hap;
        async move { hap.server(name).filter(|(s, _)| s.starts_with(want)) }
    };
    poll(LIMIT, "both UP", || async {
        status("fax1", "UP").await.and(status("fax2", "UP").await)
    })
    .await;
    let bodies: Vec<String> = (0..6).map(|_| hap.get()).collect();
    assert!(
        bodies.contains(&"A".into()) && bodies.contains(&"B".into()),
        "{bodies:?}"
    );

    ns[0].svc.stop().await;
    poll(LIMIT, "fax1 DOWN in HAProxy", || status("fax1", "DOWN")).await;
    let bodies: Vec<String> = (0..6).map(|_| hap.get()).collect();
    assert!(
        bodies.iter().all(|b| b == "B"),
        "all requests on fax2: {bodies:?}"
    );

    ns[0].svc.restart().await;
    let (_, weight) = poll(LIMIT, "fax1 UP again", || status("fax1", "UP")).await;
    assert_eq!(weight, "100", "back at full weight");

    queue.stop().await;
    poll(LIMIT, "fax1 DRAIN", || status("fax1", "DRAIN")).await;
    assert_eq!(server_state(&a, "fax1").await.as_deref(), Some("drain"));
    queue.restart().await;
    let (_, weight) = poll(LIMIT, "fax1 UP after drain", || status("fax1", "UP")).await;
    assert_eq!(weight, "100");

    // fax1's agent restarts (an upgrade) while its service answers: HAProxy keeps it UP.
    a.kill();
    for _ in 0..20 {
        assert!(
            status("fax1", "UP").await.is_some(),
            "a healthy server stays in while its agent is away: {:?}",
            hap.server("fax1")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.restart().await;
    poll(LIMIT, "fax1 UP with its agent back", || {
        status("fax1", "UP")
    })
    .await;
    drop(b);
}

async fn dispatcher(k: &Kamailio) -> BTreeMap<String, String> {
    rpc(&k.rpc_url(), "dispatcher.list", Value::Array(vec![]))
        .await
        .map(|l| flags(&l, 1))
        .unwrap_or_default()
}

/// Waits until the dispatcher flags of `uri` start with `prefix` (`A` active, `D` disabled).
async fn wait_flag(k: &Kamailio, uri: &str, prefix: char, what: &str) {
    poll(LIMIT, what, || async {
        dispatcher(k)
            .await
            .get(uri)?
            .starts_with(prefix)
            .then_some(())
    })
    .await;
}

/// Sends OPTIONS with a user part through Kamailio (dispatched), distinct Call-IDs.
fn send_through(k: &Kamailio, count: usize, tag: &str) {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let local = sock.local_addr().unwrap();
    for i in 0..count {
        let msg = format!(
            "OPTIONS sip:route@127.0.0.1:{p} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{tag}{i}\r\nMax-Forwards: 70\r\nFrom: <sip:t@127.0.0.1>;tag={tag}\r\nTo: <sip:route@127.0.0.1:{p}>\r\nCall-ID: {tag}-{i}@test\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
            p = k.udp_port
        );
        sock.send_to(msg.as_bytes(), ("127.0.0.1", k.udp_port))
            .unwrap();
    }
}

/// Connections Kamailio has accepted so far (each JSON-RPC call is one): `tcp:passive_open`.
async fn accepted(k: &Kamailio) -> u64 {
    let stats = rpc(
        &k.rpc_url(),
        "stats.get_statistics",
        serde_json::json!(["tcp:"]),
    )
    .await
    .unwrap();
    stats
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .find_map(|l| l.strip_prefix("tcp:passive_open = "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no tcp:passive_open in {stats}"))
}

fn routed(k: &Kamailio, tag: &str) -> Vec<String> {
    k.log()
        .lines()
        .filter(|l| l.contains("DSROUTE") && l.contains(&format!("{tag}-")))
        .filter_map(|l| l.rsplit("-> ").next().map(|d| d.trim().to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn kamailio_dispatcher_follows_and_is_reasserted_after_a_restart() {
    let gw: Vec<Sipp> = (0..2).map(|_| Sipp::start("u1", "200 OK")).collect();
    let mut ns = nodes(2, |_| Behaviour::Accept).await;
    for (n, g) in ns.iter_mut().zip(&gw) {
        n.sip = format!("sip:127.0.0.1:{}", g.port);
    }
    let mut k = Kamailio::start_dispatcher(&ns.iter().map(|n| n.sip.clone()).collect::<Vec<_>>());
    let kam = |k: &Kamailio| {
        format!(
            "[kamailio]\nrpc_url = \"{}\"\nreassert_interval = \"500ms\"\n",
            k.rpc_url()
        )
    };
    let _a = start(&ns, 0, "500ms", &kam(&k)).await;
    let _b = start(&ns, 1, "500ms", &kam(&k)).await;
    let (d1, d2) = (ns[0].sip.clone(), ns[1].sip.clone());
    poll(LIMIT, "both active in Kamailio", || async {
        let f = dispatcher(&k).await;
        (f.get(&d1)?.starts_with('A') && f.get(&d2)?.starts_with('A')).then_some(())
    })
    .await;
    // Idle agents compare decisions, not timestamps: each asks Kamailio once per
    // reassert_interval (500 ms), not at each evaluation (50 ms).
    let (before, since) = (accepted(&k).await, std::time::Instant::now());
    tokio::time::sleep(Duration::from_secs(5)).await; // a measuring window, not a wait
    let calls = accepted(&k).await - before - 1;
    let per_second = calls as f64 / since.elapsed().as_secs_f64();
    assert!(
        per_second <= 8.0,
        "{calls} RPC calls in {:?} from two idle agents",
        since.elapsed()
    );

    ns[0].svc.stop().await;
    wait_flag(&k, &d1, 'D', "fax1 disabled (d)").await;
    send_through(&k, 6, "down");
    let seen = poll(LIMIT, "6 requests dispatched", || async {
        let r = routed(&k, "down");
        (r.len() >= 6).then_some(r)
    })
    .await;
    assert!(seen.iter().all(|d| *d == d2), "all on fax2: {seen:?}");

    // Kamailio restarts with its list from the file (both active): the agent re-asserts.
    k = k.restart();
    wait_flag(&k, &d1, 'D', "fax1 disabled again after the restart").await;

    ns[0].svc.restart().await;
    wait_flag(&k, &d1, 'A', "fax1 active again").await;
    send_through(&k, 8, "up");
    let seen = poll(LIMIT, "8 requests dispatched", || async {
        let r = routed(&k, "up");
        (r.len() >= 8).then_some(r)
    })
    .await;
    assert!(
        seen.contains(&d1) && seen.contains(&d2),
        "traffic shared again: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn one_survivor_speaks_for_a_dead_server() {
    let gw: Vec<Sipp> = (0..3).map(|_| Sipp::start("u1", "200 OK")).collect();
    let mut ns = nodes(3, |_| Behaviour::Accept).await;
    for (n, g) in ns.iter_mut().zip(&gw) {
        n.sip = format!("sip:127.0.0.1:{}", g.port);
    }
    let k = Kamailio::start_dispatcher(&ns.iter().map(|n| n.sip.clone()).collect::<Vec<_>>());
    let hooks = tempfile::tempdir().unwrap();
    let log = hooks.path().join("hook.log");
    let extra = format!(
        "[kamailio]\nrpc_url = \"{}\"\nreassert_interval = \"500ms\"\n\n[hook]\ncommand = [\"sh\", \"-c\", \"echo \\\"$TELAGENT_SPEAKER $TELAGENT_SERVER $TELAGENT_PREVIOUS->$TELAGENT_STATE\\\" >> {}\"]\n",
        k.rpc_url(),
        log.display()
    );
    let mut agents = Vec::new();
    for i in 0..3 {
        agents.push(start(&ns, i, "500ms", &extra).await);
    }
    poll(LIMIT, "every agent sees three up servers", || async {
        for a in &agents {
            for n in ["fax1", "fax2", "fax3"] {
                if server_state(a, n).await.as_deref() != Some("up") {
                    return None;
                }
            }
        }
        Some(())
    })
    .await;
    // fax3 started last, with both peers answering: it never had reason to say it reaches
    // only a minority (a peer not yet polled is not a peer out of reach).
    let log3 = agents[2].log();
    assert!(
        log3.contains("reaches a majority") && !log3.contains("reaches only a minority"),
        "{log3}"
    );

    // fax1 dies whole: agent and service.
    agents[0].kill();
    ns[0].svc.stop().await;
    let d1 = ns[0].sip.clone();
    wait_flag(&k, &d1, 'D', "fax1 disabled in Kamailio").await;
    let hook_lines = || std::fs::read_to_string(&log).unwrap_or_default();
    poll(LIMIT, "the down notification", || async {
        hook_lines().contains("fax1 up->down").then_some(())
    })
    .await;
    // Give the other survivor every chance to speak too: wait until both survivors have
    // seen fax1 down for a while (several evaluations and re-assertions).
    for a in &agents[1..] {
        poll(LIMIT, "fax1 down seen", || async {
            (server_state(a, "fax1").await.as_deref() == Some("down")).then_some(())
        })
        .await;
    }
    // Who speaks is each agent's own decision: fax2 (first live in order) does, fax3 not.
    let speaker = |i: usize| {
        let agents = &agents;
        async move {
            let s = agents[i].status().await;
            s["cluster"]["servers"]
                .as_array()?
                .iter()
                .find(|v| v["name"] == "fax1")?["speaker"]
                .as_bool()
        }
    };
    assert_eq!(speaker(1).await, Some(true));
    assert_eq!(speaker(2).await, Some(false));
    // The hook ran once for fax1's death, with the state the cluster had before (no
    // `unknown->up` as fax2 became its speaker), and from fax2 only.
    let about_fax1: Vec<String> = hook_lines()
        .lines()
        .filter(|l| l.split(' ').nth(1) == Some("fax1") && !l.starts_with("fax1 "))
        .map(str::to_string)
        .collect();
    assert_eq!(
        about_fax1,
        ["fax2 fax1 up->down"],
        "exactly one survivor (the first in order) spoke, once"
    );
    assert!(agents[1].log().contains("Kamailio dispatcher set") && agents[1].log().contains(&d1));
    assert!(
        !agents[2].log().contains(&format!("uri={d1} state=d")),
        "fax3 left it to fax2"
    );
    // Both survivors' audit lines name the speaker of the dead server.
    for a in &agents[1..] {
        let line = a
            .audit()
            .into_iter()
            .rfind(|l| l["target"] == "fax1" && l["to"] == "down")
            .expect("fax1 down audited");
        assert_eq!(line["speaker"], "fax2", "{line}");
    }

    // Clients asking fax3 for hosts no longer get fax1.
    let out = std::process::Command::new(telagent_tests::agent_bin())
        .args(["route", "alerts", "--url", &agents[2].url("")])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "fax2.example fax3.example\n"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flapping_service_returns_no_faster_than_the_hold_and_leaves_at_once() {
    let mut ns = nodes(1, |_| Behaviour::Accept).await;
    let hooks = tempfile::tempdir().unwrap();
    let log = hooks.path().join("hook.log");
    let extra = format!(
        "[hook]\ncommand = [\"sh\", \"-c\", \"echo $(date +%s.%N) $TELAGENT_STATE >> {}\"]\n",
        log.display()
    );
    let _a = start(&ns, 0, "2s", &extra).await;
    poll(LIMIT, "first hook call (up)", || async {
        std::fs::read_to_string(&log).ok().filter(|s| !s.is_empty())
    })
    .await;
    // Up and down every 200 ms for 6 s.
    for _ in 0..15 {
        ns[0].svc.stop().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        ns[0].svc.restart().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let changes: Vec<(f64, String)> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let (t, state) = l.trim().split_once(' ')?;
            Some((t.parse().ok()?, state.to_string()))
        })
        .collect();
    assert!(changes.len() >= 3, "the flapping was seen: {changes:?}");
    // Returns are held; leaving is not: every "up" comes at least the hold after the
    // change before it, and the server went down more than once in 6 s.
    for w in changes.windows(2) {
        if w[1].1 == "up" {
            assert!(
                w[1].0 - w[0].0 >= 1.9,
                "routed again {:.2}s after the last change, hold is 2s: {changes:?}",
                w[1].0 - w[0].0
            );
        }
    }
    let downs = changes.iter().filter(|(_, s)| s == "down").count();
    assert!(downs >= 2, "taken out at once each time: {changes:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn state_changes_need_the_token_and_an_allowed_address() {
    let ns = nodes(1, |_| Behaviour::Accept).await;
    let dir = tempfile::tempdir().unwrap();
    let token = "s3cret-token-0123456789";
    std::fs::write(dir.path().join("token"), format!("{token}\n")).unwrap();
    let allow = dir.path().join("allow");
    std::fs::write(&allow, "# nobody local\n192.0.2.0/24\n").unwrap();
    let access = format!(
        "[access]\ntoken_file = \"{}\"\nallowlist_file = \"{}\"\n",
        dir.path().join("token").display(),
        allow.display()
    );
    let a = start(&ns, 0, "500ms", &access).await;
    let post = |auth: Option<&str>| {
        let url = a.url("/v1/server/maintenance");
        let headers: Vec<(String, String)> = auth
            .map(|t| vec![("Authorization".into(), format!("Bearer {t}"))])
            .unwrap_or_default();
        async move {
            let r = telagent::http_client::request(
                "POST",
                &url,
                &headers,
                br#"{"drain": true, "reason": "patching"}"#.to_vec(),
                1 << 16,
            )
            .await
            .unwrap();
            (r.status, String::from_utf8_lossy(&r.body).into_owned())
        }
    };
    // The right token from an address not in the allowlist.
    let (code, body) = post(Some(token)).await;
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("127.0.0.1 is not in the allowlist"));
    assert!(
        a.log().contains("API call refused"),
        "rejections are logged"
    );

    std::fs::write(&allow, "127.0.0.1   # this host\n").unwrap();
    a.hup();
    poll(LIMIT, "allowlist reloaded", || async {
        let (code, _) = post(Some("wrong-token")).await;
        (code == 401).then_some(())
    })
    .await;
    let (code, _) = post(None).await;
    assert_eq!(code, 401);
    let (code, body) = post(Some(token)).await;
    assert_eq!(code, 200, "{body}");
    poll(LIMIT, "drained for maintenance", || async {
        (server_state(&a, "fax1").await.as_deref() == Some("drain")).then_some(())
    })
    .await;

    // A malformed allowlist line: the reload is rejected with file and line, the old rules stay.
    std::fs::write(&allow, "127.0.0.1\n10.0.0.0/40\n").unwrap();
    a.hup();
    let error = poll(LIMIT, "reload rejected", || async {
        let s = a.status().await;
        s["config"]["error"].as_str().map(str::to_string)
    })
    .await;
    assert!(
        error.ends_with(&format!(
            "allowlist {}, line 2: `10.0.0.0/40`: the prefix length must be 0 to 32",
            allow.display()
        )),
        "{error}"
    );
    let (code, _) = post(Some(token)).await;
    assert_eq!(code, 200, "the previous rules still apply");
}

#[tokio::test(flavor = "multi_thread")]
async fn peers_with_other_routing_sections_are_reported() {
    let ns = nodes(2, |_| Behaviour::Accept).await;
    let a = start(&ns, 0, "500ms", "").await;
    let other = body(&ns, 1, "500ms", "")
        .replace("name = \"alerts\"", "name = \"alerts-elsewhere\"")
        .replace("critical = [\"svc\"]", "critical = []\ndrain = [\"svc\"]");
    let _b = Agent::start_as(&ns[1].name, ns[1].port, &other)
        .await
        .unwrap_or_else(|log| panic!("{log}"));
    let view = poll(LIMIT, "fax2 reported as drifting", || async {
        let s = a.status().await;
        let v = s["cluster"]["servers"]
            .as_array()?
            .iter()
            .find(|v| v["name"] == "fax2")?
            .clone();
        (v["config_drift"] == true).then_some(v)
    })
    .await;
    assert_ne!(
        view["config_hash"],
        a.status().await["cluster"]["config_hash"]
    );
    let sections: Vec<&str> = view["drift_sections"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        sections.contains(&"cluster") && sections.contains(&"server"),
        "{view}"
    );
    let m = a.metrics().await;
    assert_eq!(
        telagent_tests::agent::metric(&m, "telagent_cluster_config_drift{server=\"fax2\"}"),
        Some(1.0)
    );
    assert_eq!(
        telagent_tests::agent::metric(&m, "telagent_cluster_config_drift{server=\"fax1\"}"),
        Some(0.0)
    );
    assert!(a.log().contains("Config drift"), "{}", a.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn protected_reads_refuse_callers_outside_the_allowlist() {
    let ns = nodes(1, |_| Behaviour::Accept).await;
    let dir = tempfile::tempdir().unwrap();
    let allow = dir.path().join("allow");
    std::fs::write(&allow, "192.0.2.0/24\n").unwrap();
    let a = start(
        &ns,
        0,
        "500ms",
        &format!(
            "[access]\nallowlist_file = \"{}\"\nprotect_reads = true\n",
            allow.display()
        ),
    )
    .await;
    for path in ["/metrics", "/v1/status", "/v1/server", "/v1/routes"] {
        let (code, body) = a.get(path).await.expect("answers");
        assert_eq!(code, 403, "{path}: {body}");
        assert!(
            body.contains("127.0.0.1 is not in the allowlist"),
            "{path}: {body}"
        );
    }
    // Liveness and HAProxy's health check stay open.
    assert_eq!(a.get("/healthz").await.map(|r| r.0), Some(200));
    poll(LIMIT, "health check answers 200", || async {
        (a.get("/v1/server/health").await?.0 == 200).then_some(())
    })
    .await;

    std::fs::write(&allow, "127.0.0.1\n").unwrap();
    a.hup();
    poll(LIMIT, "reads allowed after the reload", || async {
        (a.get("/v1/status").await?.0 == 200).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_maintenance_drain_survives_a_restart_and_the_agents_absence() {
    let ns = nodes(2, |_| Behaviour::Accept).await;
    let dir = tempfile::tempdir().unwrap();
    let access = telagent_tests::agent::token_access(dir.path());
    let a = start(&ns, 0, "0s", &access).await;
    let mut b = start(&ns, 1, "0s", &access).await;
    poll(LIMIT, "fax2 up everywhere", || both(&a, &b, "up")).await;
    let (code, body) = b
        .post(
            "/v1/server/maintenance",
            r#"{"drain": true, "reason": "disk swap"}"#,
            telagent_tests::agent::TOKEN,
        )
        .await
        .unwrap();
    assert_eq!(code, 200, "{body}");
    poll(LIMIT, "fax2 drained everywhere", || both(&a, &b, "drain")).await;

    // A restart of fax2's agent keeps the drain.
    assert!(b.stop());
    b.restart().await;
    poll(LIMIT, "still drained after the restart", || {
        both(&a, &b, "drain")
    })
    .await;
    assert!(
        b.log().contains("stays drained for maintenance"),
        "{}",
        b.log()
    );

    // fax2's agent stopped (an upgrade): its service answers, yet fax1 keeps it drained.
    assert!(b.stop());
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(server_state(&a, "fax2").await.as_deref(), Some("drain"));
    let s = a.status().await;
    let v = s["cluster"]["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "fax2")
        .unwrap()
        .clone();
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .contains("maintenance: disk swap"),
        "{v}"
    );

    // Ended: the drain is gone for good.
    b.restart().await;
    let (code, _) = b
        .post(
            "/v1/server/maintenance",
            r#"{"drain": false}"#,
            telagent_tests::agent::TOKEN,
        )
        .await
        .unwrap();
    assert_eq!(code, 200);
    poll(LIMIT, "fax2 up again", || both(&a, &b, "up")).await;
    assert!(b.stop());
    b.restart().await;
    poll(LIMIT, "still up after a restart", || both(&a, &b, "up")).await;
}

/// fax2's state as both agents see it, when it is `want`.
async fn both(a: &Agent, b: &Agent, want: &str) -> Option<()> {
    (server_state(a, "fax2").await.as_deref() == Some(want)
        && server_state(b, "fax2").await.as_deref() == Some(want))
    .then_some(())
}

/// A service that answers for `up` and refuses for `down`, over and over, until dropped.
fn flap(mut svc: Service, up: Duration, down: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(up).await;
            svc.stop().await;
            tokio::time::sleep(down).await;
            svc.restart().await;
        }
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn services_flapping_1s_and_3s_are_flapping_within_the_window_and_drain() {
    // The README's timing: interval 1 s, fall 2, rise 2; flap detection at its defaults
    // (2m window, more than 4 changes or 30 % transient failures). No confirmation probes:
    // with them, a service down every other second is simply down (the failure confirmed
    // within 100 ms, never two successes in a row), and the transients are what is tested.
    let fast = Service::start(Behaviour::Accept).await;
    let slow = Service::start(Behaviour::Accept).await;
    let port = free_port();
    let check = |name: &str, svc: &Service| {
        format!(
            "[[tcp]]\nname = \"{name}\"\naddress = \"{}\"\ninterval = \"1s\"\nfailing_interval = \"1s\"\nconfirm_interval = \"0s\"\ntimeout = \"300ms\"\nrise = 2\nfall = 2\n\n",
            svc.addr
        )
    };
    let config = format!(
        "[cluster]\nevaluate_interval = \"100ms\"\n\n[[member]]\nname = \"fax1\"\nagent = \"http://127.0.0.1:{port}\"\n\n[server]\ncritical = [\"fast\"]\n\n{}{}",
        check("fast", &fast),
        check("slow", &slow)
    );
    let agent = Agent::start_as("fax1", port, &config)
        .await
        .unwrap_or_else(|log| panic!("{log}"));
    poll(LIMIT, "both up", || async {
        let f = agent.target("fast").await?;
        let s = agent.target("slow").await?;
        (f["state"] == "up" && s["state"] == "up").then_some(())
    })
    .await;
    let started = std::time::Instant::now();
    let _fast = flap(fast, Duration::from_secs(1), Duration::from_secs(1));
    let _slow = flap(slow, Duration::from_secs(3), Duration::from_secs(3));
    let within = Duration::from_secs(120);
    let (fast, slow) = poll(within, "both flapping", || async {
        let f = agent.target("fast").await?;
        let s = agent.target("slow").await?;
        (f["flapping"].is_string() && s["flapping"].is_string()).then_some((f, s))
    })
    .await;
    assert!(started.elapsed() < within);
    assert_ne!(fast["state"], "up", "{fast}");
    assert_ne!(slow["state"], "up", "{slow}");
    let m = agent.metrics().await;
    for c in ["fast", "slow"] {
        assert_eq!(
            telagent_tests::agent::metric(
                &m,
                &format!("telagent_check_flapping{{check=\"{c}\",kind=\"tcp\"}}")
            ),
            Some(1.0),
            "{c}"
        );
    }
    // A flapping service check drains its server: neither routed nor declared down.
    let reason = poll(LIMIT, "fax1 drained for flapping", || async {
        let s = agent.status().await;
        let v = s["cluster"]["servers"].as_array()?.first()?.clone();
        (v["state"] == "drain").then(|| v["reason"].as_str().unwrap_or("").to_string())
    })
    .await;
    assert!(reason.contains("fast is flapping"), "{reason}");
    let flapped: Vec<Value> = agent
        .audit()
        .into_iter()
        .filter(|l| {
            l["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("flapping"))
        })
        .collect();
    assert!(flapped.iter().any(|l| l["target"] == "fast"), "{flapped:?}");
    assert!(flapped.iter().any(|l| l["target"] == "slow"), "{flapped:?}");
}

/// A directory queue holding `n` jobs.
fn fill(dir: &std::path::Path, n: usize) {
    for e in std::fs::read_dir(dir).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    for i in 0..n {
        std::fs::write(dir.join(format!("q{i}")), "job").unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn capacity_scales_the_weight_in_haproxy_kamailio_and_the_routes() {
    let svc = Service::start(Behaviour::Reply(
        b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\nA".to_vec(),
    ))
    .await;
    let gw = Sipp::start("u1", "200 OK");
    let sip = format!("sip:127.0.0.1:{}", gw.port);
    let k = Kamailio::start_dispatcher(std::slice::from_ref(&sip));
    let queue = tempfile::tempdir().unwrap();
    fill(queue.path(), 5);
    let (port, check_port) = (free_port(), free_port());
    let config = format!(
        "[cluster]\nevaluate_interval = \"50ms\"\nhold = \"500ms\"\n\n\
         [[member]]\nname = \"fax1\"\nagent = \"http://127.0.0.1:{port}\"\nsip = \"{sip}\"\n\n\
         [[group]]\nname = \"alerts\"\norder = [\"fax1\"]\n\n\
         [server]\ncritical = [\"svc\"]\ndrain = [\"outq\"]\n\n\
         [[tcp]]\nname = \"svc\"\naddress = \"{}\"\ninterval = \"200ms\"\ntimeout = \"100ms\"\nrise = 1\nfall = 1\n\n\
         [[queue]]\nname = \"outq\"\nsource = \"directory\"\npath = \"{}\"\nhigh_water = 10\ninterval = \"200ms\"\ntimeout = \"100ms\"\nrise = 1\nfall = 1\n\n\
         [haproxy]\nlisten = \"127.0.0.1:{check_port}\"\n\n\
         [kamailio]\nrpc_url = \"{}\"\nreassert_interval = \"500ms\"\nrweight = true\n",
        svc.addr,
        queue.path().display(),
        k.rpc_url()
    );
    let agent = Agent::start_as("fax1", port, &config)
        .await
        .unwrap_or_else(|log| panic!("{log}"));
    let hap = Haproxy::start(&[Backend {
        name: "fax1".into(),
        addr: svc.addr,
        agent_check: check_port,
    }]);
    let dest = |k: &Kamailio| {
        let url = k.rpc_url();
        let sip = sip.clone();
        async move {
            let list = rpc(&url, "dispatcher.list", Value::Array(vec![]))
                .await
                .ok()?;
            dests(&list, 1).get(&sip).cloned()
        }
    };
    let initial = poll(LIMIT, "fax1 in the dispatcher", || dest(&k)).await;
    // Half the room below high water left: weight 50 everywhere; then 10, then 30.
    for (weight, jobs) in [(50, 5), (10, 9), (30, 7)] {
        fill(queue.path(), jobs);
        let what = format!("weight {weight} with {jobs} jobs");
        poll(LIMIT, &format!("HAProxy {what}"), || async {
            hap.server("fax1")
                .filter(|(s, w)| s.starts_with("UP") && *w == weight.to_string())
        })
        .await;
        let d: Dest = poll(LIMIT, &format!("Kamailio {what}"), || async {
            dest(&k)
                .await
                .filter(|d| d.rweight == Some(weight) && d.flags.starts_with('A'))
        })
        .await;
        // Active as before (the second letter is Kamailio's own probing, which comes and goes).
        assert_eq!(d.flags[..1], initial.flags[..1], "state kept: {d:?}");
        assert_eq!(d.attrs, format!("rweight={weight}"));
        let (_, body) = agent.get("/v1/routes?group=alerts").await.unwrap();
        let routes: Value = serde_json::from_str(&body).unwrap();
        let entry = &routes[0]["servers"][0];
        assert_eq!(entry["weight"], weight, "{routes}");
        assert_eq!(entry["capacity"], weight, "{routes}");
    }
    let m = agent.metrics().await;
    assert_eq!(
        telagent_tests::agent::metric(&m, "telagent_server_capacity_ratio{server=\"fax1\"}"),
        Some(0.3)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn haproxy_takes_out_a_server_its_agent_says_is_down_while_its_port_answers() {
    // HAProxy's own health check goes to a port that stays up: only the agent's word can
    // take the server out.
    let mut ns = nodes(1, |_| Behaviour::Accept).await;
    let front = Service::start(Behaviour::Reply(
        b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\nA".to_vec(),
    ))
    .await;
    let _a = start(&ns, 0, "500ms", "").await;
    let hap = Haproxy::start(&[Backend {
        name: "fax1".into(),
        addr: front.addr,
        agent_check: ns[0].check_port,
    }]);
    poll(LIMIT, "fax1 UP", || async {
        hap.server("fax1").filter(|(s, _)| s.starts_with("UP"))
    })
    .await;
    ns[0].svc.stop().await;
    poll(LIMIT, "fax1 DOWN by its agent's word", || async {
        hap.server("fax1").filter(|(s, _)| s.starts_with("DOWN"))
    })
    .await;
    ns[0].svc.restart().await;
    poll(LIMIT, "fax1 UP again", || async {
        hap.server("fax1").filter(|(s, _)| s.starts_with("UP"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_hook_runs_once_per_decision_across_restarts_and_retries_every_5s() {
    let mut ns = nodes(1, |_| Behaviour::Accept).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("hook.log");
    let fail = dir.path().join("fail");
    let hook = format!(
        "[hook]\ncommand = [\"sh\", \"-c\", \"echo \\\"$TELAGENT_SERVER $TELAGENT_PREVIOUS->$TELAGENT_STATE\\\" >> {}; test ! -e {}\"]\n",
        log.display(),
        fail.display()
    );
    let lines = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let mut a = start(&ns, 0, "0s", &hook).await;
    poll(LIMIT, "the first decision told", || async {
        (lines() == ["fax1 unknown->up"]).then_some(())
    })
    .await;
    // Restarted, nothing changed: nothing to tell.
    a.kill();
    a.restart().await;
    poll(LIMIT, "fax1 up after the restart", || async {
        (server_state(&a, "fax1").await.as_deref() == Some("up")).then_some(())
    })
    .await;
    ns[0].svc.stop().await;
    poll(LIMIT, "the down told", || async {
        (lines().len() == 2).then_some(())
    })
    .await;
    assert_eq!(lines(), ["fax1 unknown->up", "fax1 up->down"]);
    // Restarted while down: still nothing new; the return is told from down.
    a.kill();
    a.restart().await;
    poll(LIMIT, "fax1 down after the restart", || async {
        (server_state(&a, "fax1").await.as_deref() == Some("down")).then_some(())
    })
    .await;
    // A failing hook is retried every 5 s, not at every evaluation.
    std::fs::write(&fail, "").unwrap();
    ns[0].svc.restart().await;
    poll(LIMIT, "the return tried", || async {
        (lines().len() >= 3).then_some(())
    })
    .await;
    let since = std::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await; // a measuring window
    let tries = lines().len() - 2;
    assert!(
        tries <= 2,
        "{tries} runs of a failing hook in {:?}",
        since.elapsed()
    );
    std::fs::remove_file(&fail).unwrap();
    poll(LIMIT, "the retry succeeds", || async {
        let l = lines();
        (l.len() >= 4).then_some(())
    })
    .await;
    assert!(
        lines()[2..].iter().all(|l| l == "fax1 down->up"),
        "{:?}",
        lines()
    );
}
