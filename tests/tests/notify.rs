//! SNMP notifications received by the real snmptrapd: v2c and v3 (authPriv) traps and
//! informs decoded by name with TELAGENT-MIB, refused credentials, a receiver outage with
//! and without a kill -9 of the agent, failover, and engine boots across restarts.

use std::time::Duration;

use telagent_tests::agent::{metric, Agent};
use telagent_tests::poll;
use telagent_tests::service::{Behaviour, Service};
use telagent_tests::snmptrapd::Snmptrapd;

const LIMIT: Duration = Duration::from_secs(60);

/// The engine id of the test agents (`[notify] engine_id`), known to snmptrapd for v3 traps.
const ENGINE: &str = "8001860704746573746167656e74";

fn trapd_conf() -> String {
    format!(
        "authCommunity log public\n\
         createUser -e 0x{ENGINE} trapuser SHA-256 authpass123 AES privpass123\n\
         createUser informuser SHA authpass123 AES privpass123\n\
         authUser log trapuser priv\n\
         authUser log informuser priv\n"
    )
}

fn receiver(name: &str, port: u16, extra: &str) -> String {
    format!("[[notify.receiver]]\nname = \"{name}\"\naddress = \"127.0.0.1:{port}\"\n{extra}\n")
}

const V2C: &str = "version = \"v2c\"\ncommunity = \"public\"\n";
const V3_TRAP: &str = "version = \"v3\"\nuser = \"trapuser\"\nauth = \"sha256\"\nauth_password = \"authpass123\"\npriv_password = \"privpass123\"\n";
const V3_INFORM: &str = "version = \"v3\"\ninform = true\nuser = \"informuser\"\nauth = \"sha\"\nauth_password = \"authpass123\"\npriv_password = \"privpass123\"\n";

/// A tcp check on `svc` that decides at every probe (fall 1, rise 1), without flap
/// detection: these tests flip it on purpose, many times a minute.
fn check(svc: &Service) -> String {
    format!(
        "[[tcp]]\nname = \"svc\"\naddress = \"{}\"\ninterval = \"100ms\"\ntimeout = \"80ms\"\nfall = 1\nrise = 1\nflap_window = \"0s\"\n",
        svc.addr
    )
}

fn notify_section(extra: &str) -> String {
    format!("[notify]\nhold = \"0s\"\ntimeout = \"300ms\"\nmax_backoff = \"500ms\"\nengine_id = \"{ENGINE}\"\n{extra}\n")
}

/// Received notifications of `kind` (a TELAGENT-MIB name) about target `svc`.
fn about_svc(trapd: &Snmptrapd, kind: &str) -> Vec<(String, Vec<String>)> {
    trapd
        .received()
        .into_iter()
        .filter(|(_, vbs)| {
            vbs.iter()
                .any(|v| v.ends_with(&format!("OID: TELAGENT-MIB::{kind}")))
                && vbs
                    .iter()
                    .any(|v| v == "TELAGENT-MIB::telagentNotifyTarget.0 = STRING: svc")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn traps_and_informs_v2c_and_v3_arrive_decoded_by_name() {
    let trapd = Snmptrapd::start(&trapd_conf());
    let mut svc = Service::start(Behaviour::Accept).await;
    let p = trapd.port;
    let agent = Agent::start(&format!(
        "{}{}{}{}{}{}",
        check(&svc),
        notify_section(""),
        receiver("v2c-trap", p, V2C),
        receiver("v2c-inform", p, &format!("{V2C}inform = true\n")),
        receiver("v3-trap", p, V3_TRAP),
        receiver("v3-inform", p, V3_INFORM),
    ))
    .await;
    poll(LIMIT, "svc up", || async {
        agent.target("svc").await.filter(|t| t["state"] == "up")
    })
    .await;
    svc.stop().await;
    let got = poll(LIMIT, "four telagentCheckDown", || async {
        let g = about_svc(&trapd, "telagentCheckDown");
        (g.len() >= 4).then_some(g)
    })
    .await;
    let mut security: Vec<&str> = got.iter().map(|(s, _)| s.as_str()).collect();
    security.sort();
    assert_eq!(
        security,
        [
            "INFORM, SNMP v2c, community public",
            "INFORM, SNMP v3, user informuser, context",
            "TRAP2, SNMP v2c, community public",
            "TRAP2, SNMP v3, user trapuser, context",
        ]
    );
    for (_, vbs) in &got {
        assert!(
            vbs.contains(&"TELAGENT-MIB::telagentNotifyState.0 = INTEGER: down(4)".to_string()),
            "{vbs:?}"
        );
        assert!(
            vbs.contains(
                &"TELAGENT-MIB::telagentNotifySeverity.0 = INTEGER: critical(4)".to_string()
            ),
            "{vbs:?}"
        );
        assert!(
            vbs.contains(&"TELAGENT-MIB::telagentNotifyServer.0 = STRING: test".to_string()),
            "{vbs:?}"
        );
        assert!(
            vbs[0].starts_with("SNMPv2-SMI::mib-2.1.3.0 = Timeticks:"),
            "sysUpTime first: {vbs:?}"
        );
    }
    let m = agent.metrics().await;
    for r in ["v2c-inform", "v3-inform"] {
        assert!(
            metric(
                &m,
                &format!("telagent_notifications_acknowledged_total{{receiver=\"{r}\"}}")
            )
            .unwrap()
                >= 2.0,
            "{r}: start and down acknowledged\n{m}"
        );
    }
    assert_eq!(
        metric(
            &m,
            "telagent_notifications_acknowledged_total{receiver=\"v2c-trap\"}"
        ),
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_community_and_wrong_keys_are_refused_and_counted() {
    let trapd = Snmptrapd::start(&trapd_conf());
    let p = trapd.port;
    let agent = Agent::start(&format!(
        "{}{}{}",
        notify_section(""),
        receiver(
            "bad-community",
            p,
            "version = \"v2c\"\ncommunity = \"private\"\ninform = true\n"
        ),
        receiver(
            "bad-keys",
            p,
            &V3_INFORM.replace("authpass123", "wrongpass99")
        ),
    ))
    .await;
    poll(LIMIT, "both failures counted", || async {
        let m = agent.metrics().await;
        let retried = metric(
            &m,
            "telagent_notifications_retried_total{receiver=\"bad-community\"}",
        )?;
        let auth = metric(
            &m,
            "telagent_notifications_auth_failures_total{receiver=\"bad-keys\"}",
        )?;
        (retried >= 2.0 && auth >= 1.0).then_some(())
    })
    .await;
    assert!(
        trapd.received().is_empty(),
        "nothing was accepted: {:?}",
        trapd.received()
    );
    let m = agent.metrics().await;
    assert_eq!(
        metric(
            &m,
            "telagent_notifications_acknowledged_total{receiver=\"bad-community\"}"
        ),
        Some(0.0)
    );
    assert!(
        metric(
            &m,
            "telagent_notification_outbox_depth{receiver=\"bad-keys\"}"
        )
        .unwrap()
            >= 1.0,
        "kept for later"
    );
    assert!(agent.log().contains("wrong digest"), "{}", agent.log());
}

/// Flips the service `n` times, waiting each time for the check to follow.
async fn flip(agent: &Agent, svc: &mut Service, n: usize) {
    for _ in 0..n {
        let before = agent.audit().len();
        if agent.target("svc").await.unwrap()["state"] == "up" {
            svc.stop().await;
        } else {
            svc.restart().await;
        }
        poll(LIMIT, "the transition", || async {
            (agent.audit().len() > before).then_some(())
        })
        .await;
    }
}

/// The states of the svc transitions in the audit log, in order (first observation up
/// is not notified).
fn audited(agent: &Agent) -> Vec<String> {
    agent
        .audit()
        .iter()
        .filter(|a| a["target"] == "svc" && !(a["from"] == "unknown" && a["to"] == "up"))
        .map(|a| a["to"].as_str().unwrap().to_string())
        .collect()
}

/// The states carried by the svc notifications received, in log order.
fn received_states(trapd: &Snmptrapd) -> Vec<String> {
    trapd
        .received()
        .into_iter()
        .filter(|(_, vbs)| {
            vbs.iter()
                .any(|v| v == "TELAGENT-MIB::telagentNotifyTarget.0 = STRING: svc")
        })
        .filter_map(|(_, vbs)| {
            vbs.iter().find_map(|v| {
                v.strip_prefix("TELAGENT-MIB::telagentNotifyState.0 = INTEGER: ")
                    .map(|s| s.split('(').next().unwrap_or("").to_string())
            })
        })
        .collect()
}

async fn outage(kill_agent: bool) {
    let mut trapd = Snmptrapd::start(&trapd_conf());
    let mut svc = Service::start(Behaviour::Accept).await;
    let mut agent = Agent::start(&format!(
        "{}{}{}",
        check(&svc),
        notify_section(""),
        receiver("nms", trapd.port, &format!("{V2C}inform = true\n")),
    ))
    .await;
    poll(LIMIT, "svc up", || async {
        agent.target("svc").await.filter(|t| t["state"] == "up")
    })
    .await;
    let started = std::time::Instant::now();
    trapd.stop();
    flip(&agent, &mut svc, 10).await;
    if kill_agent {
        agent.kill();
        agent.restart().await;
        poll(LIMIT, "svc decided again", || async {
            agent
                .target("svc")
                .await
                .filter(|t| t["state"] == "up" || t["state"] == "down")
        })
        .await;
    }
    flip(&agent, &mut svc, 10).await;
    let m = agent.metrics().await;
    assert!(
        metric(&m, "telagent_notification_outbox_depth{receiver=\"nms\"}").unwrap() >= 10.0,
        "{m}"
    );
    // The receiver stays away for 30 s in all.
    while started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    trapd.restart();
    let want = audited(&agent);
    assert!(want.len() >= 20, "{want:?}");
    poll(LIMIT, "every transition notified", || async {
        (received_states(&trapd).len() >= want.len()).then_some(())
    })
    .await;
    // A moment more: nothing arrives twice.
    poll(LIMIT, "outbox empty", || async {
        let m = agent.metrics().await;
        (metric(&m, "telagent_notification_outbox_depth{receiver=\"nms\"}") == Some(0.0))
            .then_some(())
    })
    .await;
    assert_eq!(received_states(&trapd), want, "in order, none twice");
    // Each carries its event's time (not its sending time, 30 s later) and a number that
    // grows by one per event, across the kill -9 too.
    let times: Vec<String> = agent
        .audit()
        .iter()
        .filter(|a| a["target"] == "svc" && !(a["from"] == "unknown" && a["to"] == "up"))
        .map(|a| date_and_time(a["time"].as_str().unwrap()))
        .collect();
    let got = about(&trapd, "svc");
    assert_eq!(
        got.iter().map(|g| g.time.clone()).collect::<Vec<_>>(),
        times,
        "event times, to the tenth of a second"
    );
    let seqs: Vec<u64> = got.iter().map(|g| g.sequence).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] > w[0]),
        "increasing sequence numbers: {seqs:?}"
    );
    assert!(
        got.iter().all(|g| g.kind == "tcp"),
        "the check kind is sent"
    );
}

/// One notification as snmptrapd logged it.
struct Got {
    name: String,
    time: String,
    sequence: u64,
    kind: String,
    dropped: Option<u64>,
}

/// The notifications about `target` received, in order.
fn about(trapd: &Snmptrapd, target: &str) -> Vec<Got> {
    let target = format!("TELAGENT-MIB::telagentNotifyTarget.0 = STRING: {target}");
    trapd
        .received()
        .into_iter()
        .filter(|(_, vbs)| vbs.contains(&target))
        .map(|(_, vbs)| {
            let field = |name: &str| {
                vbs.iter()
                    .find_map(|v| v.strip_prefix(&format!("TELAGENT-MIB::{name}.0 = ")))
                    .map(|v| v.split_once(": ").map_or(v, |(_, x)| x).to_string())
                    .unwrap_or_default()
            };
            Got {
                name: vbs
                    .iter()
                    .find_map(|v| v.split_once("= OID: TELAGENT-MIB::").map(|(_, n)| n))
                    .unwrap_or("")
                    .to_string(),
                time: field("telagentNotifyTime"),
                sequence: field("telagentNotifySequence").parse().unwrap_or(0),
                kind: field("telagentNotifyKind").trim_matches('"').to_string(),
                dropped: field("telagentNotifyDropped").parse().ok(),
            }
        })
        .collect()
}

/// The numbers of a printed DateAndTime, in order (comparable).
fn numbers(t: &str) -> Vec<u32> {
    t.split(|c: char| !c.is_ascii_digit())
        .filter(|x| !x.is_empty())
        .map(|x| x.parse().unwrap())
        .collect()
}

/// An RFC 3339 UTC time as net-snmp prints a DateAndTime: `2026-12-1,17:34:0.7,+0:0`.
fn date_and_time(rfc3339: &str) -> String {
    let (date, rest) = rfc3339.split_once('T').unwrap();
    let d: Vec<u32> = date.split('-').map(|x| x.parse().unwrap()).collect();
    let t: Vec<&str> = rest.trim_end_matches('Z').split(':').collect();
    let (sec, frac) = t[2].split_once('.').unwrap_or((t[2], "0"));
    format!(
        "{}-{}-{},{}:{}:{}.{},+0:0",
        d[0],
        d[1],
        d[2],
        t[0].parse::<u32>().unwrap(),
        t[1].parse::<u32>().unwrap(),
        sec.parse::<u32>().unwrap(),
        &frac[..1]
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn informs_held_through_a_30s_receiver_outage_arrive_in_order_once() {
    outage(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn informs_held_through_an_outage_and_a_kill_9_arrive_in_order_once() {
    outage(true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn failover_sends_to_the_backup_while_the_primary_is_down() {
    let mut primary = Snmptrapd::start(&trapd_conf());
    let backup = Snmptrapd::start(&trapd_conf());
    let mut svc = Service::start(Behaviour::Accept).await;
    let inform = format!("{V2C}inform = true\n");
    let agent = Agent::start(&format!(
        "{}{}{}{}",
        check(&svc),
        notify_section("mode = \"failover\""),
        receiver("primary", primary.port, &inform),
        receiver("backup", backup.port, &inform),
    ))
    .await;
    poll(LIMIT, "start notified to the primary", || async {
        (!primary.received().is_empty()).then_some(())
    })
    .await;
    assert!(
        backup.received().is_empty(),
        "the backup is not used while the primary answers"
    );
    primary.stop();
    svc.stop().await;
    poll(LIMIT, "the backup gets the down", || async {
        (!about_svc(&backup, "telagentCheckDown").is_empty()).then_some(())
    })
    .await;
    let m = agent.metrics().await;
    assert!(
        metric(
            &m,
            "telagent_notifications_retried_total{receiver=\"primary\"}"
        )
        .unwrap()
            >= 1.0
    );
    assert!(
        metric(
            &m,
            "telagent_notifications_acknowledged_total{receiver=\"backup\"}"
        )
        .unwrap()
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn v3_traps_are_accepted_after_three_restarts() {
    let trapd = Snmptrapd::start(&trapd_conf());
    let mut agent = Agent::start(&format!(
        "{}{}",
        notify_section(""),
        receiver("v3", trapd.port, V3_TRAP)
    ))
    .await;
    for _ in 0..3 {
        assert!(agent.stop());
        agent.restart().await;
    }
    let starts = poll(LIMIT, "four agent starts", || async {
        let s: Vec<String> = trapd
            .received()
            .into_iter()
            .filter(|(_, vbs)| {
                vbs.iter()
                    .any(|v| v.ends_with("TELAGENT-MIB::telagentAgentStart"))
            })
            .map(|(sec, _)| sec)
            .collect();
        (s.len() >= 4).then_some(s)
    })
    .await;
    assert!(
        starts
            .iter()
            .all(|s| s == "TRAP2, SNMP v3, user trapuser, context"),
        "{starts:?}"
    );
    let boots = std::fs::read_to_string(agent.dir.path().join("state/snmp-engine-boots")).unwrap();
    assert_eq!(boots.trim(), "4");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flapping_target_gets_one_notification_per_hold_and_a_summary() {
    let trapd = Snmptrapd::start(&trapd_conf());
    let mut svc = Service::start(Behaviour::Accept).await;
    let agent = Agent::start(&format!(
        "{}{}{}",
        check(&svc),
        notify_section("").replace("hold = \"0s\"", "hold = \"8s\""),
        receiver("nms", trapd.port, V2C),
    ))
    .await;
    poll(LIMIT, "svc up", || async {
        agent.target("svc").await.filter(|t| t["state"] == "up")
    })
    .await;
    let started = std::time::Instant::now();
    flip(&agent, &mut svc, 5).await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the flaps fit in one hold time"
    );
    let summary = poll(LIMIT, "the storm summary", || async {
        about_svc(&trapd, "telagentNotificationsSuppressed").pop()
    })
    .await;
    assert!(
        summary
            .1
            .contains(&"TELAGENT-MIB::telagentNotifySuppressed.0 = Gauge32: 4".to_string()),
        "{summary:?}"
    );
    assert!(
        summary
            .1
            .contains(&"TELAGENT-MIB::telagentNotifyState.0 = INTEGER: down(4)".to_string()),
        "the summary carries the state now: {summary:?}"
    );
    let downs = about_svc(&trapd, "telagentCheckDown").len();
    let ups = about_svc(&trapd, "telagentCheckUp").len();
    assert_eq!(
        (downs, ups),
        (1, 0),
        "one notification, then only the summary"
    );
    let m = agent.metrics().await;
    assert_eq!(
        metric(&m, "telagent_notifications_suppressed_total"),
        Some(4.0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn test_notification_reports_each_receiver() {
    let trapd = Snmptrapd::start(&trapd_conf());
    let closed = telagent_tests::sip::free_udp_port();
    let agent = Agent::start(&format!(
        "{}{}{}{}",
        notify_section(""),
        receiver("trap", trapd.port, V2C),
        receiver("inform", trapd.port, V3_INFORM),
        receiver("nobody", closed, &format!("{V2C}inform = true\n")),
    ))
    .await;
    let run = |receiver: &str| {
        let out = std::process::Command::new(telagent_tests::agent_bin())
            .args([
                "test-notification",
                "--count",
                "3",
                "--json",
                "--receiver",
                receiver,
                "--config",
            ])
            .arg(&agent.config)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let v: serde_json::Value =
            serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"));
        (out.status.code(), v)
    };
    let (code, v) = run("inform");
    assert_eq!(
        (code, &v["delivered"]),
        (Some(0), &serde_json::json!(3)),
        "{v}"
    );
    assert!(v["rtt_p50_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(run("trap").0, Some(0));
    let (code, v) = run("nobody");
    assert_eq!(
        (code, &v["delivered"]),
        (Some(1), &serde_json::json!(0)),
        "{v}"
    );
    let tests = poll(LIMIT, "six test notifications", || async {
        let n = trapd
            .received()
            .iter()
            .filter(|(_, vbs)| vbs.iter().any(|v| v.ends_with("STRING: telagent-test")))
            .count();
        (n >= 6).then_some(n)
    })
    .await;
    assert_eq!(tests, 6);
}

/// A UDP relay in front of `port` that answers every message from the agent first with
/// forgeries: three copies with a byte changed (the HMAC no longer matches) and one
/// unchanged copy (authentic, but the agent's own inform, not an answer), then relays the
/// receiver's genuine answer.
async fn forging_relay(port: u16) -> u16 {
    let front = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let back = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    back.connect(("127.0.0.1", port)).await.unwrap();
    let listen = front.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut a, mut b) = (vec![0u8; 65536], vec![0u8; 65536]);
        let mut agent = None;
        loop {
            tokio::select! {
                r = front.recv_from(&mut a) => {
                    let Ok((n, from)) = r else { return };
                    agent = Some(from);
                    let msg = &a[..n];
                    for i in 0..3 {
                        let mut forged = msg.to_vec();
                        let at = forged.len() - 1 - i;
                        forged[at] ^= 0x5a;
                        let _ = front.send_to(&forged, from).await;
                    }
                    let _ = front.send_to(msg, from).await;
                    let _ = back.send(msg).await;
                }
                r = back.recv(&mut b) => {
                    let Ok(n) = r else { return };
                    if let Some(to) = agent {
                        let _ = front.send_to(&b[..n], to).await;
                    }
                }
            }
        }
    });
    listen
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_answers_never_abort_a_v3_inform() {
    let trapd = Snmptrapd::start(&trapd_conf());
    let relay = forging_relay(trapd.port).await;
    let agent = Agent::start(&format!(
        "{}{}",
        notify_section(""),
        receiver("inform", relay, V3_INFORM),
    ))
    .await;
    let out = std::process::Command::new(telagent_tests::agent_bin())
        .args([
            "test-notification",
            "--count",
            "100",
            "--json",
            "--receiver",
            "inform",
            "--config",
        ])
        .arg(&agent.config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let v: serde_json::Value =
        serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(
        (out.status.code(), &v["delivered"]),
        (Some(0), &serde_json::json!(100)),
        "every inform acknowledged despite four forgeries ahead of each answer: {v}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("failed authentication"),
        "the forgeries are logged: {stderr}"
    );
}

/// Starts the agent again and waits until svc is decided `state`.
async fn restarted(agent: &mut Agent, state: &str) {
    agent.restart().await;
    poll(LIMIT, &format!("svc {state} after the restart"), || async {
        agent.target("svc").await.filter(|t| t["state"] == state)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_alarm_that_cleared_while_the_agent_was_stopped_is_cleared_once() {
    let trapd = Snmptrapd::start(&trapd_conf());
    let mut svc = Service::start(Behaviour::Accept).await;
    svc.stop().await;
    let mut agent = Agent::start(&format!(
        "{}{}{}",
        check(&svc),
        notify_section(""),
        receiver("nms", trapd.port, &format!("{V2C}inform = true\n")),
    ))
    .await;
    poll(LIMIT, "the down notified", || async {
        (!about_svc(&trapd, "telagentCheckDown").is_empty()).then_some(())
    })
    .await;
    // Restarted while still down: the NMS knows already, nothing is sent again.
    assert!(agent.stop());
    restarted(&mut agent, "down").await;
    // Stopped; the service recovers meanwhile; started again.
    assert!(agent.stop());
    svc.restart().await;
    agent.restart().await;
    poll(LIMIT, "the clear", || async {
        (!about_svc(&trapd, "telagentCheckUp").is_empty()).then_some(())
    })
    .await;
    // Once more, with nothing changed: no second clear.
    assert!(agent.stop());
    restarted(&mut agent, "up").await;
    poll(LIMIT, "the last start notified", || async {
        let starts = trapd
            .received()
            .iter()
            .filter(|(_, v)| v.iter().any(|x| x.ends_with("telagentAgentStart")))
            .count();
        (starts >= 4).then_some(())
    })
    .await;
    let names: Vec<String> = about(&trapd, "svc").into_iter().map(|g| g.name).collect();
    assert_eq!(
        names,
        ["telagentCheckDown", "telagentCheckUp"],
        "one alarm, one clear, across four starts"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn notifications_queued_for_a_renamed_receiver_are_delivered() {
    let mut trapd = Snmptrapd::start(&trapd_conf());
    trapd.stop();
    let mut svc = Service::start(Behaviour::Accept).await;
    let inform = format!("{V2C}inform = true\n");
    let mut agent = Agent::start(&format!(
        "{}{}{}",
        check(&svc),
        notify_section(""),
        receiver("nms", trapd.port, &inform),
    ))
    .await;
    poll(LIMIT, "svc up", || async {
        agent.target("svc").await.filter(|t| t["state"] == "up")
    })
    .await;
    flip(&agent, &mut svc, 4).await;
    let want = audited(&agent);
    assert!(agent.stop());
    // The operator renames the receiver; its address stays.
    agent.write_config(&format!(
        "{}{}{}",
        check(&svc),
        notify_section(""),
        receiver("scom", trapd.port, &inform),
    ));
    trapd.restart();
    agent.restart().await;
    poll(LIMIT, "the queued notifications delivered", || async {
        (received_states(&trapd).len() >= want.len()).then_some(())
    })
    .await;
    assert_eq!(received_states(&trapd), want);
    assert!(
        agent
            .log()
            .contains("go to the receiver at the same address"),
        "{}",
        agent.log()
    );
    let m = agent.metrics().await;
    assert_eq!(
        metric(&m, "telagent_notification_outbox_depth{receiver=\"scom\"}"),
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_overflow_is_reported_once_when_delivery_resumes() {
    let mut trapd = Snmptrapd::start(&trapd_conf());
    trapd.stop();
    let mut svc = Service::start(Behaviour::Accept).await;
    let agent = Agent::start(&format!(
        "{}{}{}",
        check(&svc),
        notify_section("outbox_limit = 5"),
        receiver("nms", trapd.port, &format!("{V2C}inform = true\n")),
    ))
    .await;
    poll(LIMIT, "svc up", || async {
        agent.target("svc").await.filter(|t| t["state"] == "up")
    })
    .await;
    flip(&agent, &mut svc, 12).await;
    let m = agent.metrics().await;
    let dropped = metric(&m, "telagent_notifications_dropped_total{receiver=\"nms\"}").unwrap();
    assert!(dropped >= 8.0, "{m}");
    let warned = agent
        .log()
        .lines()
        .filter(|l| l.contains("Outbox full"))
        .count();
    assert_eq!(warned, 1, "one summary line per minute, not one per drop");
    trapd.restart();
    let report = poll(LIMIT, "the dropped report", || async {
        about(&trapd, "nms")
            .into_iter()
            .find(|g| g.name == "telagentNotificationsDropped")
    })
    .await;
    assert_eq!(report.dropped, Some(dropped as u64), "how many were lost");
    // The oldest lost is the AgentStart, from before the first flip.
    let first_flip = agent
        .audit()
        .into_iter()
        .find(|a| a["target"] == "svc" && a["from"] == "up")
        .unwrap();
    let flip_time = date_and_time(first_flip["time"].as_str().unwrap());
    assert!(
        numbers(&report.time) <= numbers(&flip_time),
        "{} is not before {flip_time}",
        report.time
    );
    poll(LIMIT, "the outbox drained", || async {
        let m = agent.metrics().await;
        (metric(&m, "telagent_notification_outbox_depth{receiver=\"nms\"}") == Some(0.0))
            .then_some(())
    })
    .await;
    let reports = about(&trapd, "nms")
        .into_iter()
        .filter(|g| g.name == "telagentNotificationsDropped")
        .count();
    assert_eq!(reports, 1, "reported once");
}

#[tokio::test(flavor = "multi_thread")]
async fn failover_drains_200_through_the_standby_while_the_primary_is_silent() {
    let standby = Snmptrapd::start(&trapd_conf());
    // A primary that takes every datagram and never answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let primary = silent.local_addr().unwrap().port();
    let inform = format!("{V2C}inform = true\n");
    let checks: String = (0..200)
        .map(|i| {
            format!("[[tcp]]\nname = \"c{i}\"\naddress = \"127.0.0.1:1\"\ninterval = \"10s\"\ntimeout = \"200ms\"\nfall = 1\n\n")
        })
        .collect();
    let started = std::time::Instant::now();
    let agent = Agent::start(&format!(
        "{checks}{}{}{}",
        notify_section("mode = \"failover\""),
        receiver("primary", primary, &inform),
        receiver("standby", standby.port, &inform),
    ))
    .await;
    let downs = || {
        standby
            .received()
            .iter()
            .filter(|(_, v)| v.iter().any(|x| x.ends_with("telagentCheckDown")))
            .count()
    };
    poll(
        Duration::from_secs(120),
        "200 downs at the standby",
        || async { (downs() >= 200).then_some(()) },
    )
    .await;
    let took = started.elapsed();
    // Without skipping the silent primary, each would wait its timeout (300 ms): 60 s.
    assert!(took < Duration::from_secs(20), "drained in {took:?}");
    let m = agent.metrics().await;
    let tried = metric(
        &m,
        "telagent_notifications_sent_total{receiver=\"primary\"}",
    )
    .unwrap();
    assert!(
        tried < 20.0,
        "the primary was probed, not tried with each: {tried}"
    );
    drop(silent);
}

#[tokio::test(flavor = "multi_thread")]
async fn alarms_of_removed_checks_and_of_a_check_named_like_the_server_are_cleared() {
    let trapd = Snmptrapd::start(&trapd_conf());
    let mut svc = Service::start(Behaviour::Accept).await;
    svc.stop().await;
    // A check named like the server ("test"), and one that will be removed.
    let checks = |with_gone: bool| {
        let mut c = format!(
            "[[tcp]]\nname = \"test\"\naddress = \"{}\"\ninterval = \"100ms\"\ntimeout = \"80ms\"\nfall = 1\nrise = 1\nflap_window = \"0s\"\n\n",
            svc.addr
        );
        if with_gone {
            c.push_str("[[tcp]]\nname = \"gone\"\naddress = \"127.0.0.1:1\"\ninterval = \"100ms\"\ntimeout = \"80ms\"\nfall = 1\nflap_window = \"0s\"\n\n");
        }
        c
    };
    let nms = receiver("nms", trapd.port, &format!("{V2C}inform = true\n"));
    let mut agent = Agent::start(&format!("{}{}{nms}", checks(true), notify_section(""))).await;
    poll(LIMIT, "both downs", || async {
        let n = about(&trapd, "test").len() + about(&trapd, "gone").len();
        (n >= 2).then_some(())
    })
    .await;
    assert!(agent.stop());
    // While stopped: "gone" leaves the config, the service comes back.
    agent.write_config(&format!("{}{}{nms}", checks(false), notify_section("")));
    svc.restart().await;
    agent.restart().await;
    poll(LIMIT, "both cleared", || async {
        // The agent's own start and stop carry the server's name too: the check's only.
        let checks_of = |t: &str| -> Vec<String> {
            about(&trapd, t)
                .into_iter()
                .map(|g| g.name)
                .filter(|n| n.starts_with("telagentCheck"))
                .collect()
        };
        let (test, gone) = (checks_of("test"), checks_of("gone"));
        (test == ["telagentCheckDown", "telagentCheckUp"]
            && gone == ["telagentCheckDown", "telagentCheckUp"])
        .then_some(())
    })
    .await;
}
