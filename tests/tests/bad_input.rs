//! Peers that misbehave: garbage instead of HTTP, silence, a response cut in the middle, a
//! command that hangs. Each gives a clear error in /v1/status within its timeout; the agent
//! neither panics nor leaks a process.

use std::time::Duration;

use serde_json::Value;
use telagent_tests::agent::Agent;
use telagent_tests::service::{Behaviour, Service};
use telagent_tests::{poll, processes_with};

const LIMIT: Duration = Duration::from_secs(20);

fn http(name: &str, svc: &Service) -> String {
    format!(
        "[[http]]\nname = \"{name}\"\nurl = \"http://{}/health\"\ninterval = \"500ms\"\ntimeout = \"300ms\"\nfall = 1\n\n",
        svc.addr
    )
}

async fn last_error(agent: &Agent, name: &str) -> Option<Value> {
    let t = agent.target(name).await?;
    (t["state"] == "down").then(|| t["last_error"].clone())
}

#[tokio::test(flavor = "multi_thread")]
async fn misbehaving_peers_give_clear_errors() {
    let garbage = Service::start(Behaviour::Reply(
        b"\x00\xff\xfeSSH-2.0-garbage\r\n\r\n".to_vec(),
    ))
    .await;
    let silent = Service::start(Behaviour::Silent).await;
    let cut = Service::start(Behaviour::Reply(
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly a part".to_vec(),
    ))
    .await;
    let marker = format!("987.{}", std::process::id());
    let agent = Agent::start(&format!(
        "{}{}{}[[command]]\nname = \"hang\"\ncommand = [\"sh\", \"-c\", \"sleep {marker} & sleep {marker}\"]\ninterval = \"1s\"\ntimeout = \"300ms\"\nfall = 1\n",
        http("garbage", &garbage),
        http("silent", &silent),
        http("cut", &cut),
    ))
    .await;

    for (name, error_type, says) in [
        ("garbage", "bad_response", "is not HTTP"),
        ("silent", "timeout", "no result within 300ms"),
        (
            "cut",
            "closed_early",
            "closed the connection in the middle of the response",
        ),
        ("hang", "timeout", "no result within 300ms"),
    ] {
        let e = poll(LIMIT, name, || last_error(&agent, name)).await;
        assert_eq!(e["error_type"], error_type, "{name}: {e}");
        let detail = e["detail"].as_str().unwrap();
        assert!(detail.contains(says), "{name}: {detail}");
    }

    // The hung command's whole process group was killed at the timeout.
    poll(LIMIT, "no leftover sleep processes", || async {
        processes_with(&marker).is_empty().then_some(())
    })
    .await;
    let (code, _) = agent.get("/healthz").await.expect("agent alive");
    assert_eq!(code, 200);
    assert!(!agent.log().contains("panicked"), "{}", agent.log());
}
