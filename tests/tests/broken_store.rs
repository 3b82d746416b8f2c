//! A broken traffic store never stops monitoring: a damaged file (garbage, or one page
//! overwritten in a real store) is moved aside and a new store started; a store that
//! cannot be opened at all leaves the agent running without it, refusing posted events
//! with 503 so that senders keep them. Either way the agent says it is degraded.

use std::io::{Seek, SeekFrom, Write};
use std::time::Duration;

use serde_json::Value;
use telagent_tests::agent::{metric, token_access, Agent, TOKEN};
use telagent_tests::poll;
use telagent_tests::snmptrapd::Snmptrapd;

const LIMIT: Duration = Duration::from_secs(20);

fn body(dir: &std::path::Path, service: std::net::SocketAddr) -> String {
    format!(
        "[defaults]\ninterval = \"1s\"\ntimeout = \"500ms\"\nrise = 1\nfall = 1\n\n[[tcp]]\nname = \"smtp\"\naddress = \"{service}\"\n\n{}",
        token_access(dir)
    )
}

fn events(n: usize) -> String {
    let evs: Vec<Value> = (0..n)
        .map(
            |_| serde_json::json!({"direction": "sent", "result": "ok", "pages": 2, "line": "ch1"}),
        )
        .collect();
    serde_json::json!({ "events": evs }).to_string()
}

/// An agent with a healthy tcp check (the listener is returned to keep it open) and the
/// test token, with `extra` config.
async fn agent_with(extra: &str) -> (Agent, std::net::TcpListener, tempfile::TempDir) {
    let service = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(&(body(dir.path(), service.local_addr().unwrap()) + extra)).await;
    (agent, service, dir)
}

/// Removes the store and its WAL and shared-memory files from `state`.
fn remove_store(state: &std::path::Path) {
    for f in ["traffic.db", "traffic.db-wal", "traffic.db-shm"] {
        let _ = std::fs::remove_file(state.join(f));
    }
}

/// The first problem the agent reports in /v1/status, with the whole status.
async fn first_problem(agent: &Agent) -> (String, Value) {
    let status = agent.status().await;
    let problem = status["problems"][0]
        .as_str()
        .unwrap_or_default()
        .to_string();
    (problem, status)
}

async fn up(agent: &Agent) {
    poll(LIMIT, "the check up", || async {
        let t = agent.target("smtp").await?;
        (t["state"] == "up").then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_store_is_moved_aside_and_monitoring_goes_on() {
    let (mut agent, _service, _dir) = agent_with("").await;
    // A real store with some pages of data.
    for _ in 0..20 {
        let (code, _) = agent.post("/v1/events", &events(200), TOKEN).await.unwrap();
        assert_eq!(code, 200);
    }
    assert!(agent.stop(), "stopped cleanly");
    let state = agent.dir.path().join("state");
    let db = state.join("traffic.db");
    let len = std::fs::metadata(&db).unwrap().len();
    assert!(len >= 4 * 4096, "a store of several pages: {len} bytes");
    // One page in the middle overwritten, as a bad sector or a torn write leaves it.
    let mut f = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
    f.seek(SeekFrom::Start(2 * 4096)).unwrap();
    f.write_all(&[0xA5; 4096]).unwrap();
    drop(f);

    agent.restart().await;
    up(&agent).await;
    let (problem, status) = first_problem(&agent).await;
    assert!(problem.contains("was damaged"), "{status}");
    assert!(problem.contains("moved to"), "{problem}");
    let aside: Vec<_> = std::fs::read_dir(&state)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("traffic.db.corrupt-")
        })
        .collect();
    assert_eq!(aside.len(), 1, "the damaged file was kept for recovery");
    // Counting goes on in the new store.
    let (code, _) = agent.post("/v1/events", &events(3), TOKEN).await.unwrap();
    assert_eq!(code, 200);
    let m = agent.metrics().await;
    assert_eq!(metric(&m, "telagent_traffic_store_available"), Some(1.0));
    assert_eq!(
        metric(
            &m,
            "telagent_messages_sent_total{server=\"test\",line=\"ch1\"}"
        ),
        Some(3.0)
    );
    assert!(
        agent.log().contains("The traffic store was damaged"),
        "{}",
        agent.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_garbage_store_file_is_moved_aside() {
    let (mut agent, _service, _dir) = agent_with("").await;
    assert!(agent.stop());
    let state = agent.dir.path().join("state");
    remove_store(&state);
    std::fs::write(state.join("traffic.db"), vec![b'x'; 8192]).unwrap();
    agent.restart().await;
    up(&agent).await;
    let (problem, status) = first_problem(&agent).await;
    assert!(problem.contains("moved to"), "{status}");
    let (code, _) = agent.post("/v1/events", &events(1), TOKEN).await.unwrap();
    assert_eq!(code, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_that_cannot_be_opened_leaves_monitoring_running() {
    let trapd = Snmptrapd::start("authCommunity log public\n");
    let (mut agent, _service, _dir) = agent_with(&format!(
        "\n[notify]\nhold = \"0s\"\n\n[[notify.receiver]]\nname = \"nms\"\naddress = \"127.0.0.1:{}\"\nversion = \"v2c\"\ncommunity = \"public\"\n",
        trapd.port
    ))
    .await;
    assert!(agent.stop());
    // In its place, something SQLite cannot open (as an unwritable directory would be).
    let state = agent.dir.path().join("state");
    remove_store(&state);
    std::fs::create_dir(state.join("traffic.db")).unwrap();

    agent.restart().await;
    up(&agent).await;
    let (problem, status) = first_problem(&agent).await;
    assert!(
        problem.contains("cannot open the traffic store"),
        "{status}"
    );
    assert!(problem.contains("restart"), "says what to do: {problem}");
    let (code, text) = agent.post("/v1/events", &events(1), TOKEN).await.unwrap();
    assert_eq!(code, 503, "senders keep their events: {text}");
    let m = agent.metrics().await;
    assert_eq!(metric(&m, "telagent_traffic_store_available"), Some(0.0));
    assert!(
        m.contains("telagent_check_state{check=\"smtp\""),
        "monitoring goes on"
    );
    let (code, _) = agent.get("/healthz").await.unwrap();
    assert_eq!(code, 200);
    // The NMS hears that the agent started degraded, and why.
    poll(LIMIT, "a degraded AgentStart", || async {
        trapd
            .received()
            .into_iter()
            .any(|(_, vbs)| {
                vbs.iter()
                    .any(|v| v.ends_with("TELAGENT-MIB::telagentAgentStart"))
                    && vbs.iter().any(|v| {
                        v.starts_with("TELAGENT-MIB::telagentNotifyState.0")
                            && v.contains("degraded")
                    })
                    && vbs
                        .iter()
                        .any(|v| v.contains("cannot open the traffic store"))
            })
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_emptied_or_removed_is_never_taken_for_a_working_one() {
    let (mut agent, _service, _dir) = agent_with("").await;
    let (code, _) = agent.post("/v1/events", &events(5), TOKEN).await.unwrap();
    assert_eq!(code, 200);
    // Removed while the agent runs: what it would write now would be lost.
    let state = agent.dir.path().join("state");
    remove_store(&state);
    let (code, text) = agent.post("/v1/events", &events(5), TOKEN).await.unwrap();
    assert_eq!(code, 503, "never 200 while not storing: {text}");
    let status = agent.status().await;
    assert!(
        status["problems"]
            .to_string()
            .contains("removed or replaced"),
        "{status}"
    );
    let m = agent.metrics().await;
    assert_eq!(metric(&m, "telagent_traffic_store_available"), Some(0.0));

    // Emptied while stopped: not a new store whose counts start at 0 unannounced.
    assert!(agent.stop());
    std::fs::write(state.join("traffic.db"), "").unwrap();
    agent.restart().await;
    up(&agent).await;
    let (problem, status) = first_problem(&agent).await;
    assert!(
        problem.contains("empty") && problem.contains("moved to"),
        "{status}"
    );
}
