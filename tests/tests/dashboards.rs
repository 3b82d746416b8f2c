//! The Grafana dashboards: every panel query returns data from a real Prometheus scraping a
//! running agent with checks in each state (a fake modem with line voltage, a simulated
//! ISDN gateway, a queue, a failing SIP target, a cluster member, a notification receiver
//! and posted traffic), and the JSON has no dangling datasource or variable.

use std::time::Duration;

use serde_json::Value;
use telagent_tests::agent::{token_access, Agent, TOKEN};
use telagent_tests::modem::{FakeModem, Quirks};
use telagent_tests::poll;
use telagent_tests::prometheus::Prometheus;
use telagent_tests::snmpsim::SnmpSim;

/// Every (panel title, expr) of a dashboard.
fn queries(d: &Value) -> Vec<(String, String)> {
    d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap_or("").to_string();
            p["targets"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |t| (title.clone(), t["expr"].as_str().unwrap_or("").to_string()))
        })
        .collect()
}

#[test]
fn no_dangling_datasource_or_variable() {
    for (name, d) in telagent_tests::dashboards() {
        let inputs: Vec<String> = d["__inputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| format!("${{{}}}", i["name"].as_str().unwrap()))
            .collect();
        let vars: Vec<String> = d["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap().to_string())
            .collect();
        let text = d.to_string();
        for uid in text
            .split("\"uid\":\"")
            .skip(1)
            .map(|s| s.split('"').next().unwrap())
        {
            if uid.starts_with('$') {
                assert!(
                    inputs.iter().any(|i| i == uid),
                    "{name}: datasource {uid} is not in __inputs"
                );
            }
        }
        for (title, expr) in queries(&d) {
            assert!(!expr.is_empty(), "{name}: panel {title} has no query");
            for used in expr.split('$').skip(1) {
                let var: String = used
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                assert!(
                    var.starts_with("__") || vars.contains(&var),
                    "{name}: panel {title} uses ${var}, which is not a variable"
                );
            }
        }
        assert!(
            d["uid"]
                .as_str()
                .is_some_and(|u| u.starts_with("telagent-")),
            "{name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_panel_query_returns_data_from_a_real_prometheus() {
    let sim = SnmpSim::start(5, 2); // 5 busy channels, the trunk in alarm
    let modem = FakeModem::start(Quirks::default());
    let tokens = tempfile::tempdir().unwrap();
    let port = telagent_tests::free_port();
    let closed = telagent_tests::sip::free_udp_port();
    let agent = Agent::start_as(
        "test",
        port,
        &format!(
            "{access}\n[[member]]\nname = \"test\"\nagent = \"http://127.0.0.1:{port}\"\n\n\
             [[modem]]\nname = \"line1\"\nport = \"{modem}\"\ndevice = \"ttyFAKE\"\nlock_dir = \"{locks}\"\ncommand_timeout = \"500ms\"\nvoltage = {{}}\n\n\
             [[gateway]]\nname = \"gw\"\naddress = \"127.0.0.1:{gw}\"\ninterval = \"1s\"\ntimeout = \"900ms\"\nrequest_timeout = \"300ms\"\n\n\
             [[sip]]\nname = \"sipgw\"\nuri = \"sip:127.0.0.1:{closed}\"\ninterval = \"1s\"\ntimeout = \"500ms\"\n\n\
             [[queue]]\nname = \"outq\"\nsource = \"command\"\ncommand = [\"echo\", \"4\"]\ninterval = \"1s\"\ntimeout = \"500ms\"\n\n\
             [notify]\nhold = \"0s\"\n[[notify.receiver]]\nname = \"nms\"\naddress = \"127.0.0.1:{closed}\"\nversion = \"v2c\"\ncommunity = \"public\"\n",
            access = token_access(tokens.path()),
            modem = modem.port.display(),
            locks = modem.dir.path().display(),
            gw = sim.port,
        ),
    )
    .await
    .expect("agent starts");
    let events = r#"{"events": [{"direction": "sent", "result": "ok", "pages": 2, "line": "ttyS0"}, {"direction": "received", "result": "ok", "line": "ttyS0"}, {"direction": "sent", "result": "failed", "line": "ttyS0"}]}"#;
    assert_eq!(
        agent.post("/v1/events", events, TOKEN).await.unwrap().0,
        200
    );
    let prom = Prometheus::start("telagent", &[format!("127.0.0.1:{port}")]).await;
    poll(
        Duration::from_secs(90),
        "every kind of series scraped a few times",
        || async {
            let ready = [
                "telagent_modem_line_volts",
                "telagent_gateway_channels",
                "telagent_messages_sent_total",
                "telagent_notifications_sent_total",
            ]
            .iter()
            .all(|m| {
                prom.query(&format!("count_over_time({m}[1m])"))
                    .iter()
                    .any(|(_, v)| *v >= 3.0)
            });
            ready.then_some(())
        },
    )
    .await;
    assert_eq!(
        agent.post("/v1/events", events, TOKEN).await.unwrap().0,
        200
    );
    for (name, d) in telagent_tests::dashboards() {
        for (title, expr) in queries(&d) {
            let q = expr
                .replace("$__rate_interval", "1m")
                .replace("$__range", "1h")
                .replace("$server", ".*")
                .replace("$instance", ".*");
            poll(
                Duration::from_secs(30),
                &format!("{name}: {title}: {q}"),
                || async { (!prom.query(&q).is_empty()).then_some(()) },
            )
            .await;
        }
    }
}
