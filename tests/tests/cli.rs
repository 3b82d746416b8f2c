//! The CLI as a user runs it: check-config, check, status, --version.

use std::process::{Command, Output};
use std::time::Duration;

use telagent_tests::agent::Agent;
use telagent_tests::service::{Behaviour, Service};
use telagent_tests::{agent_bin, poll};

fn telagent(args: &[&str]) -> Output {
    Command::new(agent_bin())
        .args(args)
        .output()
        .expect("run telagent")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn config(dir: &tempfile::TempDir, body: &str) -> String {
    let path = dir.path().join("telagent.toml");
    std::fs::write(&path, body).unwrap();
    path.display().to_string()
}

#[test]
fn check_config_accepts_good_and_names_file_line_key_of_bad() {
    let dir = tempfile::tempdir().unwrap();
    let good = config(
        &dir,
        "[agent]\nserver = \"fax1\"\n[[tcp]]\nname = \"smtp\"\naddress = \"127.0.0.1:25\"\n[[command]]\nname = \"c\"\ncommand = [\"true\"]\n",
    );
    let out = telagent(&["check-config", &good]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!("{good}: ok, server fax1, 2 checks (command 1, tcp 1)\n")
    );

    let bad = config(
        &dir,
        "[[tcp]]\nname = \"smtp\"\naddress = \"127.0.0.1:25\"\ntimeout = \"20s\"\n",
    );
    let out = telagent(&["check-config", &bad]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!("config error in {bad}, line 4, key `tcp[0].timeout`: timeout (20s) must be shorter than interval (10s)\n")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn check_probes_once_and_exits_by_result() {
    let svc = Service::start(Behaviour::Accept).await;
    let closed = telagent_tests::free_port();
    let dir = tempfile::tempdir().unwrap();
    let path = config(
        &dir,
        &format!(
            "[[tcp]]\nname = \"up\"\naddress = \"{}\"\n[[tcp]]\nname = \"down\"\naddress = \"127.0.0.1:{closed}\"\n",
            svc.addr
        ),
    );
    let p = path.clone();
    let ok = tokio::task::spawn_blocking(move || telagent(&["check", "up", "--config", &p]))
        .await
        .unwrap();
    let out = text(&ok.stdout);
    assert_eq!(ok.status.code(), Some(0), "{out}");
    assert!(out.contains("status    ok"), "{out}");
    assert!(
        out.contains(&format!("detail    connected to {}", svc.addr)),
        "{out}"
    );
    assert!(
        out.contains("telagent_check_success{check=\"up\",kind=\"tcp\"} 1"),
        "{out}"
    );

    let fail = telagent(&["check", "down", "--config", &path]);
    let out = text(&fail.stdout);
    assert_eq!(fail.status.code(), Some(1), "{out}");
    assert!(out.contains("error     connect_refused"), "{out}");
    assert!(
        out.contains("telagent_check_failures_total{check=\"down\",kind=\"tcp\",error_type=\"connect_refused\"} 1"),
        "{out}"
    );

    let unknown = telagent(&["check", "nope", "--config", &path]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(text(&unknown.stderr).contains("the checks are: up, down"));
}

#[test]
fn samples_print_and_parse() {
    let dir = tempfile::tempdir().unwrap();
    for kind in ["tcp", "http", "command"] {
        let out = telagent(&["check", kind, "--sample"]);
        assert!(out.status.success());
        let path = config(&dir, &text(&out.stdout));
        let check = telagent(&["check-config", &path]);
        assert!(check.status.success(), "{kind}: {}", text(&check.stderr));
    }
    assert_eq!(
        telagent(&["check", "fax", "--sample"]).status.code(),
        Some(2)
    );
}

#[test]
fn version() {
    let out = telagent(&["--version"]);
    assert_eq!(
        text(&out.stdout),
        format!("telagent {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn status_shows_the_live_table_and_json() {
    let svc = Service::start(Behaviour::Accept).await;
    let agent = Agent::start(&format!(
        "[[tcp]]\nname = \"smtp\"\naddress = \"{}\"\ninterval = \"300ms\"\ntimeout = \"100ms\"\n",
        svc.addr
    ))
    .await;
    poll(Duration::from_secs(20), "smtp up", || async {
        (agent.target("smtp").await?["state"] == "up").then_some(())
    })
    .await;
    let url = agent.url("");
    let u = url.clone();
    let table = tokio::task::spawn_blocking(move || telagent(&["status", "--url", &u]))
        .await
        .unwrap();
    assert!(table.status.success());
    let out = text(&table.stdout);
    assert!(out.starts_with("server test (telagent "), "{out}");
    let row = out
        .lines()
        .find(|l| l.contains("smtp"))
        .expect("a row for smtp");
    assert!(row.contains("tcp") && row.contains(" up "), "{row}");

    let json = tokio::task::spawn_blocking(move || telagent(&["status", "--url", &url, "--json"]))
        .await
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON");
    assert_eq!(doc["targets"][0]["name"], "smtp");

    let dead = telagent(&[
        "status",
        "--url",
        &format!("http://127.0.0.1:{}", telagent_tests::free_port()),
    ]);
    assert_eq!(dead.status.code(), Some(2));
    assert!(text(&dead.stderr).contains("is the agent running?"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_agent_on_the_same_state_directory_is_refused() {
    let svc = Service::start(Behaviour::Accept).await;
    let agent = Agent::start(&format!(
        "[[tcp]]\nname = \"svc\"\naddress = \"{}\"\ninterval = \"1s\"\ntimeout = \"500ms\"\n",
        svc.addr
    ))
    .await;
    // The same config (so the same state dir) on another port.
    let port = telagent_tests::free_port();
    let out = Command::new(agent_bin())
        .args(["run", "--listen", &format!("127.0.0.1:{port}"), "--config"])
        .arg(&agent.config)
        .output()
        .unwrap();
    let said = text(&out.stderr) + &text(&out.stdout);
    assert_ne!(out.status.code(), Some(0), "{said}");
    assert!(
        said.contains("another telagent") && said.contains(&agent.pid().to_string()),
        "{said}"
    );
    // The first one runs on untouched.
    assert!(agent.get("/healthz").await.is_some());
}
