//! A real Prometheus scrapes the agent; promtool accepts its exposition.

use std::time::Duration;

use telagent_tests::agent::Agent;
use telagent_tests::poll;
use telagent_tests::prometheus::{check_metrics, Prometheus};
use telagent_tests::service::{Behaviour, Service};

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_scrapes_the_agent_and_promtool_accepts_it() {
    let svc = Service::start(Behaviour::Accept).await;
    let agent = Agent::start(&format!(
        "[[tcp]]\nname = \"svc\"\naddress = \"{}\"\ninterval = \"500ms\"\ntimeout = \"200ms\"\n\n[[http]]\nname = \"web\"\nurl = \"http://127.0.0.1:1/\"\ninterval = \"500ms\"\ntimeout = \"200ms\"\n",
        svc.addr
    ))
    .await;
    poll(Duration::from_secs(20), "both checks probed", || async {
        let m = agent.metrics().await;
        (m.contains("telagent_check_success{check=\"svc\"")
            && m.contains("telagent_check_success{check=\"web\""))
        .then_some(())
    })
    .await;
    check_metrics(&agent.metrics().await).expect("promtool check metrics");

    let prom = Prometheus::start("telagent", &[format!("127.0.0.1:{}", agent.port)]).await;
    // Prometheus applies new targets on a 5 s cycle, then scrapes every second.
    let up = poll(Duration::from_secs(60), "a successful scrape", || async {
        prom.query("up{job=\"telagent\"}")
            .into_iter()
            .find(|(_, v)| *v == 1.0)
    })
    .await;
    assert!(
        up.0.contains(&format!("127.0.0.1:{}", agent.port)),
        "{up:?}"
    );
    let state = prom.query("telagent_check_state{check=\"svc\",state=\"up\"}");
    assert_eq!(state.len(), 1, "{state:?}");
    assert_eq!(state[0].1, 1.0);
    let failing = prom.query("telagent_check_state{check=\"web\",state=\"down\"}");
    assert_eq!(failing.len(), 1, "{failing:?}");
    assert_eq!(failing[0].1, 1.0);
}
