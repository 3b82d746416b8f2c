//! The `modem` check against a fake modem on a socat pty pair (every quirk and fault), a
//! real soft fax modem (iaxmodem), UUCP locks held by live and dead processes, HylaFAX
//! status files, and faxstate calls on transitions.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use telagent_tests::agent::Agent;
use telagent_tests::iaxmodem::IaxModem;
use telagent_tests::modem::{FakeModem, Quirks};
use telagent_tests::{agent_bin, poll};

struct Run {
    code: Option<i32>,
    out: String,
}

/// `telagent check line1` with a modem config; the lock directory is the fake's temp dir.
fn check(lock_dir: &Path, port: &Path, extra: &str) -> Run {
    let cfg = lock_dir.join(format!("check-{}.toml", std::process::id()));
    std::fs::write(
        &cfg,
        format!(
            "[[modem]]\nname = \"line1\"\nport = \"{}\"\ndevice = \"ttyFAKE\"\nlock_dir = \"{}\"\ncommand_timeout = \"500ms\"\n{extra}",
            port.display(),
            lock_dir.display()
        ),
    )
    .unwrap();
    let out: Output = Command::new(agent_bin())
        .args(["check", "line1", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let run = Run {
        code: out.status.code(),
        out: String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr),
    };
    assert!(
        !lock_dir.join("LCK..ttyFAKE").exists() || extra.contains("# lock held"),
        "the lock file is gone after the probe:\n{}",
        run.out
    );
    run
}

fn fake(q: Quirks) -> FakeModem {
    FakeModem::start(q)
}

fn probe(q: Quirks, extra: &str) -> (Run, FakeModem) {
    let m = fake(q);
    let r = check(m.dir.path(), &m.port, extra);
    (r, m)
}

#[test]
fn a_healthy_modem_reports_identity_classes_and_timing() {
    let (r, m) = probe(Quirks::default(), "");
    assert_eq!(r.code, Some(0), "{}", r.out);
    assert!(
        r.out
            .contains("detail    ttyFAKE: LabCorp LabModem 1.0, classes 0,1,1.0"),
        "{}",
        r.out
    );
    assert!(
        r.out.contains("telagent_modem_info{check=\"line1\",manufacturer=\"LabCorp\",model=\"LabModem\",revision=\"1.0\",classes=\"0,1,1.0\"} 1"),
        "{}",
        r.out
    );
    assert!(
        r.out
            .contains("telagent_modem_response_seconds{check=\"line1\"} "),
        "{}",
        r.out
    );
    assert!(String::from_utf8_lossy(&m.received()).starts_with("ATE0V1\rAT\r"));
}

#[test]
fn numeric_result_codes_are_understood() {
    let (r, _m) = probe(
        Quirks {
            verbose: false,
            echo: false,
            ..Default::default()
        },
        "",
    );
    assert_eq!(r.code, Some(0), "{}", r.out);
    assert!(r.out.contains("classes 0,1,1.0"), "{}", r.out);
}

#[test]
fn a_data_only_modem_is_degraded() {
    let (r, _m) = probe(
        Quirks {
            classes: "0",
            ..Default::default()
        },
        "",
    );
    assert_eq!(r.code, Some(1), "{}", r.out);
    assert!(
        r.out.contains("status    degraded") && r.out.contains("error     no_fax_class"),
        "{}",
        r.out
    );
}

#[test]
fn error_to_an_unknown_command_fails_a_required_step() {
    let (r, _m) = probe(
        Quirks::default(),
        "script = [{ send = \"AT\" }, { send = \"AT+FBOGUS\" }]\n",
    );
    assert_eq!(r.code, Some(1), "{}", r.out);
    assert!(r.out.contains("error     error_reply"), "{}", r.out);
    assert!(r.out.contains("answered ERROR to AT+FBOGUS"), "{}", r.out);
}

#[test]
fn a_modem_that_stops_answering_mid_script() {
    let (r, _m) = probe(
        Quirks {
            mute_from: Some(2),
            ..Default::default()
        },
        "",
    );
    assert_eq!(r.code, Some(1), "{}", r.out);
    assert!(r.out.contains("error     no_response"), "{}", r.out);
    // AT+FCLASS=? is optional: skipped; the AT that should get the session back in step
    // goes unanswered too.
    assert!(
        r.out
            .contains("no answer to AT (sent to get back in step after AT+FCLASS=?) within 500ms"),
        "{}",
        r.out
    );
}

#[test]
fn noise_is_garbage() {
    let (r, _m) = probe(
        Quirks {
            noise: true,
            ..Default::default()
        },
        "",
    );
    assert_eq!(r.code, Some(1), "{}", r.out);
    assert!(r.out.contains("error     garbage"), "{}", r.out);
    assert!(r.out.contains("check the baud rate"), "{}", r.out);
}

#[test]
fn a_flood_without_line_ends_is_garbage() {
    let (r, _m) = probe(
        Quirks {
            flood: Some(70 * 1024),
            ..Default::default()
        },
        "",
    );
    assert_eq!(r.code, Some(1), "{}", r.out);
    assert!(r.out.contains("error     garbage"), "{}", r.out);
    assert!(
        r.out.contains("65536 bytes without a line end"),
        "{}",
        r.out
    );
}

#[test]
fn no_dialtone_fails_and_the_modem_is_hung_up() {
    let (r, m) = probe(
        Quirks {
            dial_result: "NO DIALTONE",
            ..Default::default()
        },
        "dialtone = {}\n",
    );
    assert_eq!(r.code, Some(1), "{}", r.out);
    assert!(r.out.contains("error     no_dialtone"), "{}", r.out);
    assert!(
        r.out.contains("telagent_modem_dialtone{check=\"line1\"} 0"),
        "{}",
        r.out
    );
    let sent = String::from_utf8_lossy(&m.received()).into_owned();
    assert!(
        sent.contains("ATX4DT;\rATH0\r"),
        "hung up right after the test: {sent:?}"
    );

    let (ok, _m) = probe(Quirks::default(), "dialtone = {}\n");
    assert_eq!(ok.code, Some(0), "{}", ok.out);
    assert!(
        ok.out
            .contains("telagent_modem_dialtone{check=\"line1\"} 1"),
        "{}",
        ok.out
    );
}

#[test]
fn line_voltage_below_the_minimum_is_no_line() {
    let (r, _m) = probe(
        Quirks {
            volts: "0.4",
            ..Default::default()
        },
        "voltage = { min_volts = 3.0 }\n",
    );
    assert_eq!(r.code, Some(1), "{}", r.out);
    assert!(r.out.contains("error     no_line"), "{}", r.out);
    let (ok, _m) = probe(Quirks::default(), "voltage = {}\n");
    assert_eq!(ok.code, Some(0), "{}", ok.out);
    assert!(
        ok.out
            .contains("telagent_modem_line_volts{check=\"line1\"} 48.2"),
        "{}",
        ok.out
    );
}

#[test]
fn a_port_that_vanishes_mid_probe() {
    let (r, _m) = probe(
        Quirks {
            vanish_at: Some(2),
            ..Default::default()
        },
        "",
    );
    assert_eq!(r.code, Some(1), "{}", r.out);
    assert!(
        r.out.contains("error     port_missing") || r.out.contains("error     no_response"),
        "{}",
        r.out
    );
    assert!(!r.out.contains("panicked"), "{}", r.out);
}

#[test]
fn a_missing_port_says_what_to_check() {
    let dir = tempfile::tempdir().unwrap();
    let r = check(dir.path(), &dir.path().join("ttyNONE"), "");
    assert_eq!(r.code, Some(1), "{}", r.out);
    assert!(r.out.contains("error     port_missing"), "{}", r.out);
    assert!(r.out.contains("check the cable"), "{}", r.out);
}

#[test]
fn a_live_lock_holder_is_never_disturbed() {
    let m = fake(Quirks::default());
    let mut holder = Command::new("sleep").arg("60").spawn().unwrap();
    let lock = m.dir.path().join("LCK..ttyFAKE");
    std::fs::write(&lock, format!("{:>10}\n", holder.id())).unwrap();
    let r = check(m.dir.path(), &m.port, "# lock held\n");
    assert_eq!(r.code, Some(0), "{}", r.out);
    assert!(
        r.out.contains(&format!(
            "in use by sleep (pid {}); not probed",
            holder.id()
        )),
        "{}",
        r.out
    );
    assert!(
        r.out.contains("telagent_modem_in_use{check=\"line1\"} 1"),
        "{}",
        r.out
    );
    assert_eq!(
        std::fs::read_to_string(&lock).unwrap(),
        format!("{:>10}\n", holder.id())
    );

    // Released: the next probe talks, and the first bytes the modem ever saw are its own.
    holder.kill().unwrap();
    holder.wait().unwrap();
    std::fs::remove_file(&lock).unwrap();
    let r = check(m.dir.path(), &m.port, "");
    assert_eq!(r.code, Some(0), "{}", r.out);
    assert!(
        String::from_utf8_lossy(&m.received()).starts_with("ATE0V1\r"),
        "nothing was written while locked"
    );
}

#[test]
fn a_stale_lock_is_probed_normally_and_left_in_place() {
    let m = fake(Quirks::default());
    let mut dead = Command::new("true").spawn().unwrap();
    let pid = dead.id();
    dead.wait().unwrap();
    let lock = m.dir.path().join("LCK..ttyFAKE");
    std::fs::write(&lock, format!("{pid:>10}\n")).unwrap();
    let r = check(m.dir.path(), &m.port, "# lock held\n");
    assert_eq!(r.code, Some(0), "{}", r.out);
    assert!(
        r.out.contains(&format!(
            "stale lock {} of dead pid {pid} left in place",
            lock.display()
        )),
        "{}",
        r.out
    );
    assert!(lock.exists());
    assert!(!m.received().is_empty());
}

#[test]
fn hylafax_status_decides_while_faxgetty_holds_the_port() {
    let m = fake(Quirks::default());
    let spool = m.dir.path().join("spool");
    std::fs::create_dir_all(spool.join("status")).unwrap();
    let mut holder = Command::new("sleep").arg("60").spawn().unwrap();
    std::fs::write(
        m.dir.path().join("LCK..ttyFAKE"),
        format!("{:>10}\n", holder.id()),
    )
    .unwrap();
    let extra = format!("hylafax_spool = \"{}\"\n# lock held\n", spool.display());
    for (status, code, says) in [
        ("Running and idle\n", 0, "status    ok"),
        ("Sending job 12\n", 0, "status    ok"),
        (
            "Waiting for modem to come ready\n",
            1,
            "error     hylafax_not_ready",
        ),
        (
            "Initializing server and modem\n",
            1,
            "error     hylafax_waiting",
        ),
    ] {
        std::fs::write(spool.join("status/ttyFAKE"), status).unwrap();
        let r = check(m.dir.path(), &m.port, &extra);
        assert_eq!(r.code, Some(code), "{status}: {}", r.out);
        assert!(r.out.contains(says), "{status}: {}", r.out);
        assert!(
            r.out.contains(&format!("HylaFAX says: {}", status.trim())),
            "{}",
            r.out
        );
    }
    assert!(m.received().is_empty(), "the port was never touched");
    holder.kill().unwrap();
    holder.wait().unwrap();
}

#[test]
fn iaxmodem_answers_as_a_real_soft_fax_modem() {
    let iax = IaxModem::start();
    let r = check(iax.dir.path(), &iax.port, "");
    assert_eq!(r.code, Some(0), "{}", r.out);
    assert!(
        r.out
            .contains("manufacturer=\"www.soft-switch.org\",model=\"spandsp\""),
        "{}",
        r.out
    );
    assert!(r.out.contains("classes=\"0,1,1.0\""), "{}", r.out);
}

#[tokio::test(flavor = "multi_thread")]
async fn faxstate_is_told_on_transitions() {
    let m = fake(Quirks::default());
    let log = m.dir.path().join("faxstate.log");
    let stub = m.dir.path().join("faxstate");
    std::fs::write(
        &stub,
        format!("#!/bin/sh\necho \"$@\" >> {}\n", log.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
    let agent = Agent::start(&format!(
        "[ports]\nscan = false\nmin_probe_interval = \"1s\"\n\n[[modem]]\nname = \"line1\"\nport = \"{}\"\ndevice = \"ttyFAKE\"\nlock_dir = \"{}\"\nhylafax_spool = \"/var/spool/hylafax\"\nfaxstate = \"{}\"\ninterval = \"1s\"\ntimeout = \"900ms\"\ncommand_timeout = \"100ms\"\nrise = 1\nfall = 1\n",
        m.port.display(),
        m.dir.path().display(),
        stub.display()
    ))
    .await;
    let calls = || std::fs::read_to_string(&log).unwrap_or_default();
    poll(Duration::from_secs(20), "faxstate ready", || async {
        (calls() == "-s ready -q /var/spool/hylafax ttyFAKE\n").then_some(())
    })
    .await;
    m.set_mute(true);
    poll(Duration::from_secs(20), "faxstate down", || async {
        calls()
            .ends_with("-s down -q /var/spool/hylafax ttyFAKE\n")
            .then_some(())
    })
    .await;
    m.set_mute(false);
    poll(Duration::from_secs(20), "faxstate ready again", || async {
        calls()
            .ends_with("-s ready -q /var/spool/hylafax ttyFAKE\n")
            .then_some(())
    })
    .await;
    assert_eq!(calls().lines().count(), 3, "{}", calls());
    let t = agent.target("line1").await.unwrap();
    assert_eq!(t["state"], "up");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unplugged_modem_is_down_and_up_again_when_plugged_back() {
    let m = fake(Quirks::default());
    let agent = Agent::start(&format!(
        "[ports]\nscan = false\nmin_probe_interval = \"1s\"\n\n[[modem]]\nname = \"line1\"\nport = \"{}\"\ndevice = \"ttyFAKE\"\nlock_dir = \"{}\"\ninterval = \"1s\"\ntimeout = \"900ms\"\ncommand_timeout = \"100ms\"\nrise = 1\nfall = 1\n",
        m.port.display(),
        m.dir.path().display(),
    ))
    .await;
    let state = |want: &'static str| {
        let agent = &agent;
        async move {
            let t = agent.target("line1").await?;
            (t["state"] == want).then_some(t)
        }
    };
    poll(Duration::from_secs(20), "line up", || state("up")).await;
    m.unplug();
    let t = poll(Duration::from_secs(20), "line down", || state("down")).await;
    assert_eq!(t["last"]["error_type"], "port_missing", "{t}");
    m.plug();
    let t = poll(Duration::from_secs(20), "line up again", || state("up")).await;
    assert!(
        t["last"]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("LabCorp LabModem")),
        "{t}"
    );
}
