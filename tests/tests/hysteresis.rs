//! A TCP service the test controls goes away and comes back: the agent's state follows
//! only after `fall` failures and `rise` successes, the audit log has one line per
//! transition, and /v1/status and /metrics agree.

use std::time::Duration;

use serde_json::Value;
use telagent_tests::agent::{metric, Agent};
use telagent_tests::poll;
use telagent_tests::service::{Behaviour, Service};

const LIMIT: Duration = Duration::from_secs(20);

async fn state_of(agent: &Agent, name: &str) -> (String, u64) {
    let t = agent.target(name).await.expect("target listed");
    (
        t["state"].as_str().unwrap_or_default().to_string(),
        t["worse_streak"].as_u64().unwrap_or(0),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn down_after_fall_up_after_rise_one_audit_line_each() {
    let mut svc = Service::start(Behaviour::Accept).await;
    let agent = Agent::start(&format!(
        "[[tcp]]\nname = \"msgsvc\"\naddress = \"{}\"\ninterval = \"300ms\"\nfailing_interval = \"300ms\"\ntimeout = \"200ms\"\nrise = 2\nfall = 3\n",
        svc.addr
    ))
    .await;

    poll(LIMIT, "msgsvc up", || async {
        (state_of(&agent, "msgsvc").await.0 == "up").then_some(())
    })
    .await;

    svc.stop().await;
    // While failures accumulate the state holds; every streak seen while still up is < fall.
    let transients = std::cell::RefCell::new(Vec::new());
    let (a, seen) = (&agent, &transients);
    poll(LIMIT, "msgsvc down", move || async move {
        let (state, streak) = state_of(a, "msgsvc").await;
        if state == "up" {
            seen.borrow_mut().push(streak);
        }
        (state == "down").then_some(())
    })
    .await;
    let transients = transients.into_inner();
    assert!(transients.iter().all(|s| *s < 3), "{transients:?}");
    assert!(
        transients.iter().any(|s| *s > 0),
        "a transient failure was visible before the state changed: {transients:?}"
    );

    let downs: Vec<Value> = agent
        .audit()
        .into_iter()
        .filter(|l| l["to"] == "down")
        .collect();
    assert_eq!(downs.len(), 1, "{downs:?}");
    let d = &downs[0];
    assert_eq!(d["from"], "up");
    assert_eq!(d["target"], "msgsvc");
    assert_eq!(d["server"], "test");
    assert_eq!(
        d["reason"],
        "3 consecutive failures (fall 3): connect_refused"
    );
    assert_eq!(d["observation"]["error_type"], "connect_refused");

    // /v1/status and /metrics tell the same story.
    let t = agent.target("msgsvc").await.unwrap();
    assert_eq!(t["state"], "down");
    assert_eq!(t["last_error"]["error_type"], "connect_refused");
    let m = agent.metrics().await;
    let series = |state: &str| {
        metric(
            &m,
            &format!("telagent_check_state{{check=\"msgsvc\",kind=\"tcp\",state=\"{state}\"}}"),
        )
    };
    assert_eq!(series("down"), Some(1.0));
    assert_eq!(series("up"), Some(0.0));
    let refused = metric(
        &m,
        "telagent_check_failures_total{check=\"msgsvc\",kind=\"tcp\",error_type=\"connect_refused\"}",
    )
    .unwrap();
    assert!(refused >= 3.0, "{refused}");

    svc.restart().await;
    poll(LIMIT, "msgsvc up again", || async {
        (state_of(&agent, "msgsvc").await.0 == "up").then_some(())
    })
    .await;
    let audit = agent.audit();
    let ups: Vec<&Value> = audit.iter().filter(|l| l["from"] == "down").collect();
    assert_eq!(ups.len(), 1, "{audit:?}");
    assert_eq!(ups[0]["to"], "up");
    assert_eq!(ups[0]["reason"], "2 consecutive successes (rise 2)");
    // unknown -> up, up -> down, down -> up: nothing else.
    assert_eq!(audit.len(), 3, "{audit:?}");
    assert_eq!(audit[0]["from"], "unknown");
}
