//! SIGHUP reloads: unchanged checks keep their state and counts, removed ones leave the
//! model and /metrics, added ones start; a broken file is rejected, the old config keeps
//! running and `telagent_config_last_reload_successful` goes to 0 until a good reload.

use std::time::Duration;

use telagent_tests::agent::{metric, Agent};
use telagent_tests::poll;
use telagent_tests::service::{Behaviour, Service};

const LIMIT: Duration = Duration::from_secs(20);

fn tcp(name: &str, svc: &Service) -> String {
    format!(
        "[[tcp]]\nname = \"{name}\"\naddress = \"{}\"\ninterval = \"200ms\"\ntimeout = \"100ms\"\n\n",
        svc.addr
    )
}

async fn probes(agent: &Agent, name: &str) -> Option<u64> {
    agent.target(name).await?["probes_total"].as_u64()
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_applies_a_changed_config_and_rejects_a_broken_one() {
    let svc = Service::start(Behaviour::Accept).await;
    let agent = Agent::start(&(tcp("keep", &svc) + &tcp("drop", &svc))).await;
    poll(LIMIT, "both checks probed", || async {
        let k = probes(&agent, "keep").await.unwrap_or(0);
        let d = probes(&agent, "drop").await.unwrap_or(0);
        (k >= 2 && d >= 1).then_some(())
    })
    .await;
    let kept = agent.target("keep").await.unwrap();

    agent.write_config(&(tcp("keep", &svc) + &tcp("added", &svc)));
    agent.hup();
    poll(LIMIT, "added probed and drop gone", || async {
        let added = probes(&agent, "added").await.unwrap_or(0) >= 1;
        let dropped = agent.target("drop").await.is_none();
        (added && dropped).then_some(())
    })
    .await;
    let keep_now = agent.target("keep").await.unwrap();
    assert_eq!(
        keep_now["since"], kept["since"],
        "unchanged check kept its state"
    );
    assert!(
        keep_now["probes_total"].as_u64() >= kept["probes_total"].as_u64(),
        "unchanged check kept its counts"
    );
    let m = agent.metrics().await;
    assert!(
        !m.contains("check=\"drop\""),
        "removed check's series are gone"
    );
    assert!(m.contains("check=\"added\""));
    assert_eq!(
        metric(&m, "telagent_config_last_reload_successful"),
        Some(1.0)
    );

    // A broken file: rejected, reported, the running checks go on.
    let good = std::fs::read_to_string(&agent.config).unwrap();
    agent.write_raw_config(&good.replace("timeout = \"100ms\"", "timeout = \"1s\""));
    agent.hup();
    poll(LIMIT, "reload reported as failed", || async {
        let m = agent.metrics().await;
        (metric(&m, "telagent_config_last_reload_successful") == Some(0.0)).then_some(())
    })
    .await;
    let status = agent.status().await;
    let error = status["config"]["error"].as_str().unwrap();
    assert!(
        error.starts_with(&format!(
            "config error in {}, line ",
            agent.config.display()
        )),
        "{error}"
    );
    assert!(
        error.ends_with("timeout (1s) must be shorter than interval (200ms)"),
        "{error}"
    );
    let before = probes(&agent, "keep").await.unwrap();
    poll(LIMIT, "old config still probing", || async {
        (probes(&agent, "keep").await? > before).then_some(())
    })
    .await;
    assert!(agent.log().contains("Configuration rejected"));

    agent.write_raw_config(&good);
    agent.hup();
    poll(LIMIT, "reload successful again", || async {
        let m = agent.metrics().await;
        (metric(&m, "telagent_config_last_reload_successful") == Some(1.0)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_cleanly() {
    let svc = Service::start(Behaviour::Accept).await;
    let mut agent = Agent::start(&tcp("svc", &svc)).await;
    poll(LIMIT, "probed", || async {
        probes(&agent, "svc").await.filter(|n| *n >= 1)
    })
    .await;
    assert!(
        agent.stop(),
        "the agent exits on SIGTERM without being killed"
    );
    assert_eq!(agent.exit_code(), Some(0));
    assert!(agent.log().contains("Stopped."));
}
