//! The embedded default on a fax host: with no config file, the agent finds a HylaFAX
//! spool with two modems (one held by a live lock), its sendq and xferfaxlog, a SIP
//! responder (SIPp) bound on this host and snmpd's AgentX socket, monitors each, and
//! writes not one byte to either modem. `telagent discover` prints the same as a config
//! that `check-config` accepts; a modem that disappears from the spool is removed.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use telagent_tests::agent::{metric, Agent};
use telagent_tests::modem::{FakeModem, Quirks};
use telagent_tests::poll;
use telagent_tests::sip::Sipp;
use telagent_tests::snmpd::{Snmpd, V2C};

const LIMIT: Duration = Duration::from_secs(60);

/// A SEND record as HylaFAX 6 writes it (xferfaxlog(5)): 3 pages, delivered.
const SEND: &str = "11/23/26 08:33\tSEND\t000000001\tttyA\t3\t\"\"\troot@vm\t\"5550003\"\t\"\"\t2220056\t3\t0:00:40\t0:00:31\t\"\"\t\"\"\t\"\"\t\"\"\t\"root\"\t\"00 00 00\"\n";

/// HylaFAX's id of a device outside /dev: the path with `/` written as `_`.
fn modem_id(port: &Path) -> String {
    port.display().to_string().replace('/', "_")
}

/// A spool as faxaddmodem and faxgetty leave it: `etc/config.<id>` and `status/<id>`.
fn add_modem(spool: &Path, port: &Path, status: &str, lock_dir: Option<&Path>) -> String {
    let id = modem_id(port);
    let mut config = String::from(
        "# Written by faxaddmodem\nCountryCode:\t\t1\nAreaCode:\t\t800\nFAXNumber:\t\t+1.800.555.1001\n\
         ModemType:\t\tClass1\nRingsBeforeAnswer:\t1\n",
    );
    if let Some(d) = lock_dir {
        config.push_str(&format!("UUCPLockDir:\t\t{}\n", d.display()));
    }
    std::fs::write(spool.join(format!("etc/config.{id}")), config).unwrap();
    std::fs::write(spool.join(format!("status/{id}")), format!("{status}\n")).unwrap();
    id
}

#[tokio::test(flavor = "multi_thread")]
async fn the_embedded_default_finds_hylafax_sip_and_agentx_and_writes_nothing_to_a_modem() {
    let held = FakeModem::start(Quirks::default());
    let free = FakeModem::start(Quirks::default());
    let spool_dir = tempfile::Builder::new()
        .prefix("telagent-spool-")
        .tempdir()
        .unwrap();
    let spool = spool_dir.path();
    for d in ["etc", "status", "sendq", "log"] {
        std::fs::create_dir_all(spool.join(d)).unwrap();
    }
    // faxgetty holds `held`: a live process's lock in the lock directory its config names.
    let locks = spool.join("locks");
    std::fs::create_dir_all(&locks).unwrap();
    let mut holder = Command::new("sleep")
        .arg("600")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    std::fs::write(locks.join("LCK..ttyA"), format!("{:>10}\n", holder.id())).unwrap();
    let held_id = add_modem(spool, &held.port, "Running and idle", Some(&locks));
    let free_id = add_modem(
        spool,
        &free.port,
        "Waiting for modem to come ready",
        Some(&spool.join("other-locks")),
    );
    // One job waiting in sendq (a HylaFAX 6 job file, sleeping).
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../agent/fixtures/hylafax-spool/sendq/q3"
        ),
        spool.join("sendq/q3"),
    )
    .unwrap();
    std::fs::write(spool.join("log/xferfaxlog"), SEND).unwrap();

    let sipp = Sipp::start("u1", "200");
    let snmpd = Snmpd::start();
    let env = vec![
        (
            "TELAGENT_HYLAFAX_SPOOL".to_string(),
            spool.display().to_string(),
        ),
        ("TELAGENT_SIP_PORTS".into(), sipp.port.to_string()),
        (
            "TELAGENT_AGENTX_SOCKET".into(),
            snmpd.agentx_socket().display().to_string(),
        ),
    ];
    let agent = Agent::start_default(env.clone()).await;
    let held_name = format!("modem-{}", held_id.trim_start_matches('_'));
    let free_name = format!("modem-{}", free_id.trim_start_matches('_'));
    let sip_name = format!("sip-local-udp-{}", sipp.port);

    let status = poll(LIMIT, "every discovered check decided", || async {
        let s = agent.status().await;
        let targets = s["targets"].as_array()?;
        (targets.len() == 4 && targets.iter().all(|t| t["state"] != "unknown")).then_some(s)
    })
    .await;
    let state = |name: &str| {
        let t = status["targets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("no target {name}: {status:#}"));
        assert_eq!(t["discovered"], true, "{t:#}");
        (
            t["state"].as_str().unwrap().to_string(),
            t["last"]["detail"].as_str().unwrap().to_string(),
        )
    };
    let (s, detail) = state(&held_name);
    assert_eq!(s, "up", "{detail}");
    assert!(
        detail.contains("held by sleep") && detail.contains("Running and idle"),
        "{detail}"
    );
    let (s, detail) = state(&free_name);
    assert_eq!(s, "down", "HylaFAX says the modem is not ready: {detail}");
    assert!(
        detail.contains("Waiting for modem to come ready"),
        "{detail}"
    );
    let (s, detail) = state("hylafax-sendq");
    assert_eq!(s, "up", "{detail}");
    let (s, detail) = state(&sip_name);
    assert_eq!(s, "up", "{detail}");

    let metrics = agent.metrics().await;
    assert_eq!(
        metric(&metrics, "telagent_queue_depth{check=\"hylafax-sendq\"}"),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            &format!("telagent_modem_in_use{{check=\"{held_name}\"}}")
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &metrics,
            &format!("telagent_modem_in_use{{check=\"{free_name}\"}}")
        ),
        Some(0.0)
    );
    // The ptys HylaFAX names are in the port inventory, with their holder.
    let ports = status["ports"].as_array().unwrap();
    let pty = ports
        .iter()
        .find(|p| p["path"] == held.port.display().to_string())
        .unwrap_or_else(|| panic!("the held pty is not listed: {ports:#?}"));
    assert_eq!(pty["lock"]["pid"], holder.id());
    // The xferfaxlog is counted.
    poll(LIMIT, "the SEND record counted", || async {
        let (code, body) = agent.get("/v1/totals?since=0").await?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        (code == 200 && v["rows"][0]["sent"] == 1 && v["rows"][0]["pages_sent"] == 3).then_some(())
    })
    .await;
    // TELAGENT-MIB is served through the snmpd socket that was found.
    let walk = poll(LIMIT, "the MIB walked through snmpd", || async {
        snmpd
            .walk(V2C, "TELAGENT-MIB::telagentMIB")
            .ok()
            .filter(|w| w.iter().any(|l| l.contains(&sip_name)))
    })
    .await;
    assert!(walk.iter().any(|l| l.contains(&held_name)), "{walk:#?}");
    // One log line per item found.
    let log = agent.log();
    for needle in [
        format!(
            "HylaFAX spool {}: 2 modem(s), queue check on sendq, traffic from",
            spool.display()
        ),
        format!("HylaFAX modem {held_id} on {}", held.port.display()),
        format!("SIP listener on udp 127.0.0.1:{}", sipp.port),
        format!("snmpd AgentX socket {}", snmpd.agentx_socket().display()),
    ] {
        assert_eq!(log.matches(&needle).count(), 1, "{needle} in:\n{log}");
    }

    // `telagent discover` prints the same as a config that check-config accepts.
    let out = Command::new(telagent_tests::agent_bin())
        .arg("discover")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert!(out.status.success());
    let toml = String::from_utf8(out.stdout).unwrap();
    for name in [&held_name, &free_name, "hylafax-sendq", &sip_name] {
        assert!(toml.contains(&format!("name = \"{name}\"")), "{toml}");
    }
    let file = agent.dir.path().join("discovered.toml");
    std::fs::write(&file, &toml).unwrap();
    let check = Command::new(telagent_tests::agent_bin())
        .arg("check-config")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{toml}\n{}",
        String::from_utf8_lossy(&check.stderr)
    );

    // A modem removed from HylaFAX is removed, not down forever.
    std::fs::remove_file(spool.join(format!("etc/config.{free_id}"))).unwrap();
    std::fs::remove_file(spool.join(format!("status/{free_id}"))).unwrap();
    agent.hup();
    poll(LIMIT, "the removed modem gone", || async {
        agent.target(&free_name).await.is_none().then_some(())
    })
    .await;
    assert!(agent.target(&held_name).await.is_some());
    assert!(!agent.metrics().await.contains(&free_name));

    assert!(
        held.received().is_empty(),
        "bytes written to the held modem: {:?}",
        held.received()
    );
    assert!(
        free.received().is_empty(),
        "bytes written to the free modem: {:?}",
        free.received()
    );
    let _ = holder.kill();
    let _ = holder.wait();
}

fn mkfifo(p: &Path) {
    let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(
        unsafe { libc::mkfifo(c.as_ptr(), 0o600) },
        0,
        "mkfifo {p:?}"
    );
}

/// A spool left broken or hostile: FIFOs as a modem's config, status and lock file and as
/// a job in sendq, a status file that is /dev/zero, one with an escape sequence. The agent
/// starts, answers, judges the good modem up and no broken one up, and stops on SIGTERM.
#[tokio::test(flavor = "multi_thread")]
async fn a_hostile_spool_neither_blocks_nor_fools_the_agent() {
    let dir = tempfile::Builder::new()
        .prefix("telagent-hostile-")
        .tempdir()
        .unwrap();
    let spool = dir.path().join("spool");
    let locks = dir.path().join("locks");
    for d in ["etc", "status", "sendq", "log"] {
        std::fs::create_dir_all(spool.join(d)).unwrap();
    }
    std::fs::create_dir_all(&locks).unwrap();
    let config = format!("ModemType: Class1\nUUCPLockDir: {}\n", locks.display());
    for id in ["ttyGOOD", "ttyFIFO", "ttyZERO", "ttyESC", "ttyLOCK"] {
        std::fs::write(spool.join(format!("etc/config.{id}")), &config).unwrap();
    }
    mkfifo(&spool.join("etc/config.ttyPIPE"));
    std::fs::write(spool.join("status/ttyGOOD"), "Running and idle\n").unwrap();
    mkfifo(&spool.join("status/ttyFIFO"));
    std::os::unix::fs::symlink("/dev/zero", spool.join("status/ttyZERO")).unwrap();
    std::fs::write(spool.join("status/ttyESC"), "Running and idle\x1b[2J\n").unwrap();
    std::fs::write(spool.join("status/ttyLOCK"), "Running and idle\n").unwrap();
    mkfifo(&locks.join("LCK..ttyLOCK"));
    mkfifo(&spool.join("sendq/q1"));
    mkfifo(&spool.join("log/xferfaxlog"));

    let mut agent = Agent::start_default(vec![
        (
            "TELAGENT_HYLAFAX_SPOOL".to_string(),
            spool.display().to_string(),
        ),
        ("TELAGENT_SIP_PORTS".into(), "1".into()),
        (
            "TELAGENT_AGENTX_SOCKET".into(),
            dir.path().join("none").display().to_string(),
        ),
    ])
    .await;
    let status = poll(LIMIT, "every discovered modem decided", || async {
        let s = agent.status().await;
        let modems: Vec<_> = s["targets"]
            .as_array()?
            .iter()
            .filter(|t| t["kind"] == "modem")
            .cloned()
            .collect();
        (modems.len() == 5 && modems.iter().all(|t| t["state"] != "unknown")).then_some(modems)
    })
    .await;
    for t in &status {
        let up = t["state"] == "up";
        let good = t["name"] == "modem-ttyGOOD" || t["name"] == "modem-ttyLOCK";
        assert_eq!(up, good, "{t:#}");
    }
    assert!(
        matches!(agent.get("/healthz").await, Some((200, _))),
        "the agent stopped answering"
    );
    assert!(
        agent.stop(),
        "the agent did not stop on SIGTERM:\n{}",
        agent.log()
    );
}
