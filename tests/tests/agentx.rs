//! TELAGENT-MIB served through the real snmpd as AgentX master: snmpwalk v2c and v3
//! authPriv shows what /v1/status shows, and the walk works again after snmpd restarts.

use std::time::Duration;

use telagent_tests::agent::{metric, token_access, Agent, TOKEN};
use telagent_tests::poll;
use telagent_tests::service::{Behaviour, Service};
use telagent_tests::snmpd::{Snmpd, V2C, V3};

const LIMIT: Duration = Duration::from_secs(60);

/// The value part of `TELAGENT-MIB::name.index = TYPE: value`.
fn value<'a>(walk: &'a [String], object: &str) -> Option<&'a str> {
    walk.iter()
        .find(|l| l.starts_with(&format!("TELAGENT-MIB::{object} = ")))
        .and_then(|l| l.split_once(": "))
        .map(|(_, v)| v)
}

#[tokio::test(flavor = "multi_thread")]
async fn walks_agree_with_status_and_survive_an_snmpd_restart() {
    let mut snmpd = Snmpd::start();
    let svc = Service::start(Behaviour::Accept).await;
    let tokens = tempfile::tempdir().unwrap();
    let port = telagent_tests::free_port();
    let agent = Agent::start_as("test", port, &format!(
        "{}[[member]]\nname = \"test\"\nagent = \"http://127.0.0.1:{port}\"\n\n[snmp]\nagentx = \"{}\"\n\n[[tcp]]\nname = \"up-svc\"\naddress = \"{}\"\ninterval = \"200ms\"\ntimeout = \"100ms\"\nrise = 1\n\n[[tcp]]\nname = \"down-svc\"\naddress = \"127.0.0.1:1\"\ninterval = \"200ms\"\ntimeout = \"100ms\"\nfall = 1\n\n[server]\ndrain = [\"outq\"]\n\n[[queue]]\nname = \"outq\"\nsource = \"command\"\ncommand = [\"echo\", \"7\"]\nhigh_water = 10\ninterval = \"200ms\"\ntimeout = \"150ms\"\n",
        token_access(tokens.path()),
        snmpd.agentx(),
        svc.addr
    ))
    .await
    .expect("agent starts");
    let body = r#"{"events": [{"direction": "sent", "result": "ok", "pages": 3}, {"direction": "received", "result": "failed"}]}"#;
    assert_eq!(agent.post("/v1/events", body, TOKEN).await.unwrap().0, 200);
    poll(LIMIT, "every check decided", || async {
        let s = agent.status().await;
        s["targets"]
            .as_array()?
            .iter()
            .all(|t| t["state"] != "unknown")
            .then_some(())
    })
    .await;
    // 7 jobs against a high water of 10: 30 % capacity left.
    let walk = poll(
        LIMIT,
        "the v2c walk, with the server's capacity",
        || async {
            let w = snmpd.walk(V2C, "TELAGENT-MIB::telagentMIB").ok()?;
            let c = value(&w, "telagentServerCapacity.1")?;
            (c == "30" || c == "30 percent").then_some(w)
        },
    )
    .await;
    // The check table is in name order, as /v1/status lists the targets.
    let status = agent.status().await;
    let targets = status["targets"].as_array().unwrap();
    for (i, t) in targets.iter().enumerate() {
        let name = t["name"].as_str().unwrap();
        let state = t["state"].as_str().unwrap();
        assert_eq!(
            value(&walk, &format!("telagentCheckName.{}", i + 1)),
            Some(name),
            "{walk:#?}"
        );
        let want = format!("{state}(");
        assert!(
            value(&walk, &format!("telagentCheckState.{}", i + 1))
                .is_some_and(|v| v.starts_with(&want)),
            "{name} is {state}: {walk:#?}"
        );
    }
    let own = status["cluster"]["servers"][0].clone();
    assert_eq!(
        value(&walk, "telagentServerName.1"),
        Some("test"),
        "{walk:#?}"
    );
    let want = format!(
        "{}(",
        if own["state"] == "drain" {
            "degraded"
        } else {
            own["state"].as_str().unwrap()
        }
    );
    assert!(
        value(&walk, "telagentServerState.1").is_some_and(|v| v.starts_with(&want)),
        "{own}: {walk:#?}"
    );
    let q = targets.iter().position(|t| t["name"] == "outq").unwrap() + 1;
    assert_eq!(value(&walk, &format!("telagentQueueDepth.{q}")), Some("7"));
    assert_eq!(value(&walk, "telagentAgentServer.0"), Some("test"));
    assert_eq!(value(&walk, "telagentTrafficSent.1"), Some("1"));
    assert_eq!(value(&walk, "telagentTrafficReceiveFailed.1"), Some("1"));
    assert_eq!(value(&walk, "telagentTrafficPagesSent.1"), Some("3"));

    let v3 = snmpd
        .walk(V3, "TELAGENT-MIB::telagentCheckTable")
        .expect("v3 authPriv walk");
    assert!(
        v3.iter()
            .any(|l| l.contains("telagentCheckName") && l.contains("down-svc")),
        "{v3:#?}"
    );
    assert!(
        snmpd
            .walk(&["-v2c", "-c", "wrong"], "TELAGENT-MIB::telagentMIB")
            .is_err(),
        "snmpd's access control applies"
    );

    snmpd.restart();
    let again = poll(LIMIT, "the walk after snmpd restarted", || async {
        snmpd.walk(V2C, "TELAGENT-MIB::telagentCheckTable").ok()
    })
    .await;
    assert!(again.iter().any(|l| l.contains("up-svc")), "{again:#?}");
    let m = agent.metrics().await;
    assert!(
        metric(&m, "telagent_agentx_sessions_total").unwrap() >= 2.0,
        "{m}"
    );
    assert_eq!(metric(&m, "telagent_agentx_registered"), Some(1.0));
}

#[tokio::test(flavor = "multi_thread")]
async fn sysortable_names_the_mib_and_rows_keep_their_index_across_a_reload() {
    let snmpd = Snmpd::start();
    let svc = Service::start(Behaviour::Accept).await;
    let port = telagent_tests::free_port();
    let tcp = |name: &str| {
        format!(
            "[[tcp]]\nname = \"{name}\"\naddress = \"{}\"\ninterval = \"200ms\"\ntimeout = \"100ms\"\n\n",
            svc.addr
        )
    };
    let body = |checks: &str| {
        format!(
            "[[member]]\nname = \"test\"\nagent = \"http://127.0.0.1:{port}\"\n\n[snmp]\nagentx = \"{}\"\n\n{checks}",
            snmpd.agentx()
        )
    };
    let agent = Agent::start_as("test", port, &body(&(tcp("m-svc") + &tcp("z-svc"))))
        .await
        .expect("agent starts");
    let walk = poll(LIMIT, "the check table", || async {
        let w = snmpd.walk(V2C, "TELAGENT-MIB::telagentCheckTable").ok()?;
        value(&w, "telagentCheckName.2").is_some().then_some(w)
    })
    .await;
    assert_eq!(value(&walk, "telagentCheckName.1"), Some("m-svc"));
    assert_eq!(value(&walk, "telagentCheckName.2"), Some("z-svc"));
    // sysORTable tells an NMS what this host implements.
    let or = snmpd
        .walk(V2C, "SNMPv2-MIB::sysORTable")
        .expect("sysORTable walk");
    assert!(
        or.iter()
            .any(|l| l.contains("sysORDescr") && l.contains("TELAGENT-MIB")),
        "{or:#?}"
    );
    assert!(
        or.iter()
            .any(|l| l.contains("sysORID") && l.contains("telagentMIB")),
        "{or:#?}"
    );
    // A reload adds a check that sorts first and removes one: the rows the NMS knows keep
    // their numbers.
    agent.write_config(&body(&(tcp("a-new") + &tcp("m-svc"))));
    agent.hup();
    let walk = poll(LIMIT, "the new check served", || async {
        let w = snmpd.walk(V2C, "TELAGENT-MIB::telagentCheckTable").ok()?;
        value(&w, "telagentCheckName.3").is_some().then_some(w)
    })
    .await;
    assert_eq!(
        value(&walk, "telagentCheckName.1"),
        Some("m-svc"),
        "{walk:#?}"
    );
    assert_eq!(
        value(&walk, "telagentCheckName.3"),
        Some("a-new"),
        "{walk:#?}"
    );
    assert_eq!(
        value(&walk, "telagentCheckName.2"),
        None,
        "z-svc is gone, its number unused"
    );
}
