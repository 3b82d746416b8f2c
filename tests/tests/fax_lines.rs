//! Fax lines as real ones behave, against `v250::SpecModem` (a modem written from ITU-T
//! V.250 and T.31/T.32, not from the check): the host's lock directory, late answers,
//! unsolicited result codes and noise, RING during a probe, an interrupted
//! `telagent check`, the order and outcomes of the line tests, stuck HylaFAX sessions and
//! jobs, and a seeded property test over 200 conversations.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use telagent_tests::agent_bin;
use telagent_tests::v250::{Behaviour, SpecModem};

/// A fake modem with its temp dir, lock directory and config file.
struct Line {
    modem: SpecModem,
    dir: tempfile::TempDir,
}

impl Line {
    fn new(b: Behaviour) -> Line {
        let dir = tempfile::Builder::new()
            .prefix("telagent-line-")
            .tempdir()
            .unwrap();
        std::fs::create_dir(dir.path().join("locks")).unwrap();
        let modem = SpecModem::start(b, &dir.path().join("ttySPEC"));
        Line { modem, dir }
    }

    fn port(&self) -> PathBuf {
        self.dir.path().join("ttySPEC")
    }

    fn locks(&self) -> PathBuf {
        self.dir.path().join("locks")
    }

    fn lock_file(&self) -> PathBuf {
        self.locks().join("LCK..ttySPEC")
    }

    /// A config with the host's lock directory in `[ports]` and `modem` keys added.
    fn config(&self, modem: &str) -> PathBuf {
        let path = self.dir.path().join("telagent.toml");
        std::fs::write(
            &path,
            format!(
                "[ports]\nlock_dir = \"{}\"\n\n[[modem]]\nname = \"line1\"\nport = \"{}\"\ndevice = \"ttySPEC\"\ncommand_timeout = \"500ms\"\n{modem}",
                self.locks().display(),
                self.port().display()
            ),
        )
        .unwrap();
        path
    }

    fn check(&self, modem: &str) -> Run {
        let cfg = self.config(modem);
        run(Command::new(agent_bin())
            .args(["check", "line1", "--config"])
            .arg(cfg)
            .output()
            .unwrap())
    }

    fn sent(&self) -> String {
        String::from_utf8_lossy(&self.modem.received()).into_owned()
    }
}

struct Run {
    code: Option<i32>,
    out: String,
}

fn run(out: Output) -> Run {
    Run {
        code: out.status.code(),
        out: String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr),
    }
}

/// A live process to hold a lock: `sleep`, killed on drop.
struct Holder(Child);

impl Holder {
    fn start() -> Holder {
        Holder(Command::new("sleep").arg("600").spawn().unwrap())
    }

    fn lock(&self, file: &Path) {
        std::fs::write(file, format!("{:>10}\n", self.0.id())).unwrap();
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits for a condition, polling every 20 ms, or panics naming it.
fn wait_for(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The value of the first metric line starting with `prefix`.
fn metric(out: &str, prefix: &str) -> Option<f64> {
    out.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn the_hosts_lock_directory_protects_every_modem_check() {
    let line = Line::new(Behaviour::default());
    let holder = Holder::start();
    holder.lock(&line.lock_file());
    let r = line.check("");
    assert_eq!(r.code, Some(0), "{}", r.out);
    assert!(r.out.contains("in use by sleep"), "{}", r.out);
    assert_eq!(
        line.sent(),
        "",
        "not a byte to a port locked in [ports] lock_dir"
    );
    assert!(line.lock_file().exists(), "the holder's lock is untouched");

    // check-config says which directory protects the line.
    let cfg = line.config("");
    let out = run(Command::new(agent_bin())
        .arg("check-config")
        .arg(&cfg)
        .output()
        .unwrap());
    assert!(
        out.out.contains(&format!(
            "modem line1: {}, UUCP locks in {}",
            line.port().display(),
            line.locks().display()
        )),
        "{}",
        out.out
    );

    // A check's own lock_dir overrides the host's: this one says the port is free.
    let own = line.dir.path().join("own-locks");
    std::fs::create_dir(&own).unwrap();
    let r = line.check(&format!("lock_dir = \"{}\"\n", own.display()));
    assert_eq!(r.code, Some(0), "{}", r.out);
    assert!(line.sent().starts_with("ATE0V1\r"), "{:?}", line.sent());
}

#[test]
fn a_lock_being_written_is_respected() {
    let line = Line::new(Behaviour::default());
    // Created, its PID not written yet: another program is taking the port.
    std::fs::File::create(line.lock_file()).unwrap();
    let r = line.check("");
    assert_eq!(r.code, Some(0), "{}", r.out);
    assert!(r.out.contains("just now"), "{}", r.out);
    assert_eq!(line.sent(), "");
    assert!(line.lock_file().exists());
}

/// The identity labels of `telagent_modem_info` in a check's output.
fn identity(out: &str) -> Vec<(String, String)> {
    let Some(l) = out.lines().find(|l| l.starts_with("telagent_modem_info{")) else {
        return Vec::new();
    };
    let inner = &l[l.find('{').unwrap() + 1..l.rfind('}').unwrap()];
    inner
        .split("\",")
        .filter_map(|kv| kv.split_once("=\""))
        .map(|(k, v)| (k.to_string(), v.trim_end_matches('"').to_string()))
        .filter(|(k, _)| k != "check")
        .collect()
}

#[test]
fn a_late_answer_is_never_taken_for_the_next_commands_answer() {
    // ATE0V1, AT, AT+FCLASS=?, AT+FMI? (3): the manufacturer comes 1.2 s late, after the
    // 500 ms command timeout, while the check would already be asking for the model.
    let line = Line::new(Behaviour {
        answer_delay: vec![(3, Duration::from_millis(1200))],
        ..Default::default()
    });
    let r = line.check("");
    assert_eq!(r.code, Some(0), "{}", r.out);
    let id = identity(&r.out);
    let want = [
        ("manufacturer", ""),
        ("model", "SM-56K"),
        ("revision", "1.0"),
        ("classes", "0,1,1.0,2,2.0"),
    ];
    for (k, v) in want {
        assert!(
            id.contains(&(k.to_string(), v.to_string())),
            "{k} should be {v:?}: {id:?}\n{}",
            r.out
        );
    }
    assert!(r.out.contains("no answer to AT+FMI?"), "{}", r.out);
    assert!(
        metric(&r.out, "telagent_modem_unsolicited_total{").unwrap() >= 2.0,
        "the late answer was counted: {}",
        r.out
    );
}

#[test]
fn unsolicited_codes_and_noise_do_not_fail_a_working_modem() {
    let line = Line::new(Behaviour {
        unsolicited_before: vec![
            (1, "NO CARRIER".into()),
            (2, "+FCERROR".into()),
            (4, "+FRH:3".into()),
        ],
        noise_before: vec![(3, vec![0x00, 0x11, 0xff, 0x13])],
        ..Default::default()
    });
    let r = line.check("");
    assert_eq!(r.code, Some(0), "{}", r.out);
    assert!(r.out.contains("status    ok"), "{}", r.out);
    let id = identity(&r.out);
    assert!(
        id.contains(&("manufacturer".into(), "SPECMODEM".into()))
            && id.contains(&("model".into(), "SM-56K".into())),
        "{id:?}"
    );
    assert!(
        metric(&r.out, "telagent_modem_unsolicited_total{").unwrap() >= 4.0,
        "{}",
        r.out
    );
}

#[test]
fn ring_stops_the_probe_at_once_and_hangs_nothing_up() {
    // RING just before the answer to AT+FCLASS=? (command 2).
    let line = Line::new(Behaviour {
        ring_before: vec![2],
        ..Default::default()
    });
    let r = line.check("dialtone = {}\n");
    assert_eq!(r.code, Some(0), "the line is alive, and in use: {}", r.out);
    assert!(r.out.contains("RING during the probe"), "{}", r.out);
    assert_eq!(
        metric(&r.out, "telagent_modem_in_use{"),
        Some(1.0),
        "{}",
        r.out
    );
    assert_eq!(
        line.sent(),
        "ATE0V1\rAT\rAT+FCLASS=?\r",
        "nothing after the RING: no further command, no ATH"
    );
    assert!(!line.lock_file().exists(), "the port's lock was released");
    assert!(!line.modem.off_hook());
}

/// `telagent check` started in the background.
fn spawn_check(line: &Line, modem: &str) -> Child {
    let cfg = line.config(modem);
    Command::new(agent_bin())
        .args(["check", "line1", "--config"])
        .arg(cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn an_interrupted_check_removes_its_lock_and_hangs_up() {
    for (signal, code) in [(libc::SIGTERM, 143), (libc::SIGINT, 130)] {
        // The dial never ends: no dial tone and no NO DIALTONE either.
        let line = Line::new(Behaviour {
            dial_result: String::new(),
            ..Default::default()
        });
        let mut child = spawn_check(
            &line,
            "timeout = \"20s\"\ndialtone = { timeout = \"10s\" }\n",
        );
        wait_for(Duration::from_secs(10), "the dial-tone test", || {
            line.modem.off_hook()
        });
        assert!(line.lock_file().exists(), "the check holds the lock");
        telagent_tests::signal(child.id(), signal);
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(code));
        assert!(
            !line.lock_file().exists(),
            "signal {signal}: the lock went with the check"
        );
        wait_for(Duration::from_secs(5), "the modem back on-hook", || {
            !line.modem.off_hook()
        });
        assert!(line.sent().ends_with("ATH0\r"), "{:?}", line.sent());
    }
}

#[test]
fn a_dial_without_any_result_is_the_lines_fault_not_the_modems() {
    let line = Line::new(Behaviour {
        dial_result: String::new(),
        ..Default::default()
    });
    let r = line.check("dialtone = { timeout = \"1s\" }\n");
    assert_eq!(r.code, Some(1), "{}", r.out);
    assert!(r.out.contains("error     dialtone_timeout"), "{}", r.out);
    assert!(r.out.contains("it answered the hang-up"), "{}", r.out);
    assert!(!line.modem.off_hook(), "hung up: {:?}", line.sent());
}

#[test]
fn no_line_voltage_means_no_off_hook_test() {
    let line = Line::new(Behaviour {
        volts: Some("0.40".into()),
        ..Default::default()
    });
    let r = line.check("dialtone = {}\nvoltage = {}\n");
    assert_eq!(r.code, Some(1), "{}", r.out);
    assert!(r.out.contains("error     no_line"), "{}", r.out);
    assert!(
        r.out.contains("the dial-tone test was skipped"),
        "{}",
        r.out
    );
    let sent = line.sent();
    assert!(sent.contains("AT-TRV\r"), "{sent:?}");
    assert!(
        !sent.contains("ATX4DT;"),
        "never off-hook on a dead line: {sent:?}"
    );

    // With a line, the voltage is read on-hook, before the dial-tone test.
    let line = Line::new(Behaviour::default());
    let r = line.check("dialtone = {}\nvoltage = {}\n");
    assert_eq!(r.code, Some(0), "{}", r.out);
    let sent = line.sent();
    let (volts, dial) = (sent.find("AT-TRV").unwrap(), sent.find("ATX4DT;").unwrap());
    assert!(volts < dial, "{sent:?}");
    assert_eq!(metric(&r.out, "telagent_modem_line_volts{"), Some(48.2));
}

#[test]
fn check_prints_the_state_it_computed() {
    let line = Line::new(Behaviour::default());
    let r = line.check("");
    assert_eq!(r.code, Some(0), "{}", r.out);
    assert!(
        r.out
            .contains("telagent_check_state{check=\"line1\",kind=\"modem\",state=\"up\"} 1"),
        "{}",
        r.out
    );
    assert!(!line.lock_file().exists());
}

/// A HylaFAX spool whose modem `ttySPEC` shows `status`, written `age` ago.
fn spool_with_status(dir: &Path, status: &str, age: Duration) -> PathBuf {
    let spool = dir.join("spool");
    std::fs::create_dir_all(spool.join("status")).unwrap();
    let file = spool.join("status/ttySPEC");
    std::fs::write(&file, format!("{status}\n")).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(SystemTime::now() - age)
        .unwrap();
    spool
}

#[test]
fn a_session_stuck_in_receiving_is_degraded() {
    let line = Line::new(Behaviour::default());
    let spool = spool_with_status(
        line.dir.path(),
        "Receiving facsimile",
        Duration::from_secs(2 * 3600),
    );
    let r = line.check(&format!(
        "passive = true\nhylafax_spool = \"{}\"\n",
        spool.display()
    ));
    assert_eq!(r.code, Some(1), "{}", r.out);
    assert!(r.out.contains("error     stuck_session"), "{}", r.out);
    assert!(r.out.contains("for 2h"), "{}", r.out);
    assert!(
        metric(&r.out, "telagent_modem_session_seconds{").unwrap() >= 7200.0,
        "{}",
        r.out
    );
    assert_eq!(line.sent(), "", "passive: never opened");

    // A receive that started a minute ago is a call in progress.
    let spool = spool_with_status(
        line.dir.path(),
        "Receiving facsimile",
        Duration::from_secs(60),
    );
    let r = line.check(&format!(
        "passive = true\nhylafax_spool = \"{}\"\n",
        spool.display()
    ));
    assert_eq!(r.code, Some(0), "{}", r.out);
    let s = metric(&r.out, "telagent_modem_session_seconds{").unwrap();
    assert!((59.0..600.0).contains(&s), "{s}");
}

#[test]
fn a_job_active_without_progress_is_a_stuck_job() {
    let dir = tempfile::tempdir().unwrap();
    let sendq = dir.path().join("sendq");
    std::fs::create_dir_all(&sendq).unwrap();
    let job = |n: u32, state: u32, age: Duration| {
        let f = sendq.join(format!("q{n}"));
        std::fs::write(&f, format!("state:{state}\ntotpages:3\nnpages:1\n")).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&f)
            .unwrap()
            .set_modified(SystemTime::now() - age)
            .unwrap();
    };
    job(11, 6, Duration::from_secs(90)); // active, sending
    job(12, 3, Duration::from_secs(7200)); // sleeping: waiting is not stuck
    let cfg = dir.path().join("t.toml");
    let write = |extra: &str| {
        std::fs::write(
            &cfg,
            format!(
                "[[queue]]\nname = \"q\"\nsource = \"hylafax\"\nspool = \"{}\"\n{extra}",
                dir.path().display()
            ),
        )
        .unwrap();
        run(Command::new(agent_bin())
            .args(["check", "q", "--config"])
            .arg(&cfg)
            .output()
            .unwrap())
    };
    let r = write("");
    assert_eq!(r.code, Some(0), "{}", r.out);
    let s = metric(&r.out, "telagent_queue_session_seconds{").unwrap();
    assert!((89.0..600.0).contains(&s), "{s}: {}", r.out);

    job(13, 6, Duration::from_secs(3 * 3600));
    let r = write("");
    assert_eq!(r.code, Some(1), "{}", r.out);
    assert!(r.out.contains("error     stuck_job"), "{}", r.out);
    assert!(r.out.contains("job 13 has been active for 3h"), "{}", r.out);
    let r = write("max_session = \"4h\"\n");
    assert_eq!(r.code, Some(0), "{}", r.out);
}

/// What the check may report for each identity field: what the fake modem sends in
/// answer to the command that asks for it (or nothing, if that answer never lined up).
fn identity_is_what_the_modem_sent(labels: &[(&'static str, String)], b: &Behaviour) -> bool {
    labels.iter().all(|(k, v)| {
        let allowed: Vec<&str> = match *k {
            "manufacturer" => vec![&b.manufacturer],
            "model" => vec![&b.model, b.ati3.as_deref().unwrap_or("")],
            "revision" => vec![&b.revision],
            "classes" => vec![&b.classes],
            _ => return false,
        };
        v.is_empty() || allowed.contains(&v.as_str())
    })
}

/// One seeded conversation: returns (ringed, in use, late answers injected).
async fn conversation(seed: u64, holder: u32) -> (bool, bool, usize) {
    let b = Behaviour {
        seed: Some(seed),
        ..Default::default()
    };
    let line = Line::new(b.clone());
    let locked = seed.is_multiple_of(5);
    if locked {
        std::fs::write(line.lock_file(), format!("{holder:>10}\n")).unwrap();
    }
    let dialtone = if seed.is_multiple_of(3) {
        "dialtone = { timeout = \"2s\" }\n"
    } else {
        ""
    };
    let text = format!(
        "[ports]\nlock_dir = \"{}\"\n\n[[modem]]\nname = \"line1\"\nport = \"{}\"\ndevice = \"ttySPEC\"\ncommand_timeout = \"300ms\"\n{dialtone}",
        line.locks().display(),
        line.port().display()
    );
    let c = telagent::config::parse(&text, "property").unwrap();
    let spec = c.check("line1").unwrap();
    let schedule = spec.schedule(&c.defaults);
    let check = telagent::checks::build(
        &spec,
        &schedule,
        &telagent::checks::Context::standalone("fax1"),
    );
    let (obs, _) = telagent::engine::scheduler::probe_once(check.as_ref(), schedule.timeout).await;
    let context = format!(
        "seed {seed}: {:?} {:?}\nsent {:?}\nunsolicited {:?}",
        obs.status,
        obs.detail,
        line.sent(),
        line.modem.unsolicited()
    );
    assert_ne!(obs.error_type, Some("timeout"), "bounded waits: {context}");
    if let Some(info) = obs.values.iter().find(|v| v.name == "info") {
        let labels: Vec<(&'static str, String)> = info.labels.clone();
        assert!(
            identity_is_what_the_modem_sent(&labels, &b),
            "an identity the modem did not send for it: {labels:?}\n{context}"
        );
    }
    if locked {
        assert_eq!(
            line.sent(),
            "",
            "wrote while a live lock existed: {context}"
        );
        assert!(line.lock_file().exists(), "the holder's lock: {context}");
    } else {
        assert!(
            !line.lock_file().exists(),
            "a lock was left behind: {context}"
        );
    }
    // The guard's ATH0 is written as the probe ends; the modem reads it a moment later.
    let deadline = Instant::now() + Duration::from_secs(3);
    while line.modem.off_hook() {
        assert!(Instant::now() < deadline, "left off-hook: {context}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let ringed = obs.detail.contains("RING during the probe");
    if ringed {
        let sent = line.sent();
        assert!(
            !sent.contains("ATH") || !dialtone.is_empty() && sent.contains("ATX4DT;"),
            "hung up after a RING: {context}"
        );
    }
    let in_use = obs
        .values
        .iter()
        .any(|v| v.name == "in_use" && v.value == 1.0);
    let late = line
        .modem
        .unsolicited()
        .iter()
        .filter(|u| u.starts_with("<late"))
        .count();
    (ringed, in_use, late)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_seeded_conversations_keep_every_promise() {
    let holder = Holder::start();
    let pid = holder.0.id();
    let (mut rings, mut in_use, mut late) = (0, 0, 0);
    for batch in 0..20u64 {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..10u64 {
            let seed = 0x5eed_0000 + batch * 10 + i;
            set.spawn(conversation(seed, pid));
        }
        while let Some(r) = set.join_next().await {
            let (r, u, l) = r.expect("a conversation panicked");
            rings += r as usize;
            in_use += u as usize;
            late += l;
        }
    }
    // The property is not vacuous: the seeds did ring, lock and answer late.
    assert!(rings >= 5, "{rings} conversations rang");
    assert!(in_use >= 40, "{in_use} lines in use (locked or ringing)");
    assert!(late >= 20, "{late} late answers");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_probe_cancelled_by_the_schedulers_timeout_hangs_up_and_unlocks() {
    // The dial never ends; the scheduler's timeout (probe_once, as the agent runs every
    // probe) cancels the probe in the middle of the dial-tone test.
    let line = Line::new(Behaviour {
        dial_result: String::new(),
        ..Default::default()
    });
    let text = format!(
        "[ports]\nlock_dir = \"{}\"\n\n[[modem]]\nname = \"line1\"\nport = \"{}\"\ndevice = \"ttySPEC\"\ncommand_timeout = \"300ms\"\ndialtone = {{ timeout = \"10s\" }}\n",
        line.locks().display(),
        line.port().display()
    );
    let c = telagent::config::parse(&text, "cancel").unwrap();
    let spec = c.check("line1").unwrap();
    let check = telagent::checks::build(
        &spec,
        &spec.schedule(&c.defaults),
        &telagent::checks::Context::standalone("fax1"),
    );
    let (obs, _) =
        telagent::engine::scheduler::probe_once(check.as_ref(), Duration::from_millis(1500)).await;
    assert_eq!(obs.error_type, Some("timeout"), "{obs:?}");
    assert!(line.sent().contains("ATX4DT;\r"), "{:?}", line.sent());
    assert!(!line.lock_file().exists(), "the lock went with the probe");
    let deadline = Instant::now() + Duration::from_secs(5);
    while line.modem.off_hook() {
        assert!(
            Instant::now() < deadline,
            "still off-hook: {:?}",
            line.sent()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(line.sent().ends_with("ATH0\r"), "{:?}", line.sent());
}
