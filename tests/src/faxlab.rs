//! A real fax line on this machine (tests/peers/fax-lab.sh, as root): two iaxmodems
//! dialling each other with no PBX, and one HylaFAX spool with faxq, hfaxd and a faxgetty
//! on each modem. A fax from A to B is a real T.30 call (V.17 14,400 bit/s, ECM).

use std::collections::HashMap;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub struct FaxLab {
    pub dir: TempDir,
    /// hfaxd's port on 127.0.0.1.
    pub port: u16,
    /// Wakes faxq's scheduler while a job waits (see `wake_scheduler`).
    _waker: Waker,
    /// One lab at a time in a test process: fewer processes competing on two cores.
    _turn: std::sync::MutexGuard<'static, ()>,
}

static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("peers/fax-lab.sh")
}

impl FaxLab {
    /// Starts the lab and waits until HylaFAX has both modems "Running and idle".
    pub fn start() -> FaxLab {
        let dir = tempfile::Builder::new()
            .prefix("telagent-faxlab-")
            .tempdir()
            .expect("tempdir");
        let turn = TURN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (stop, rx) = mpsc::channel();
        let spool = dir.path().join("spool");
        let lab = FaxLab {
            dir,
            port: crate::free_port(),
            _waker: Waker {
                stop: Some(stop),
                thread: Some(std::thread::spawn(move || wake_scheduler(&spool, &rx))),
            },
            _turn: turn,
        };
        let out = Command::new("bash")
            .arg(script())
            .arg("start")
            .arg(lab.dir.path())
            .arg(lab.port.to_string())
            .arg(crate::sip::free_udp_port().to_string())
            .arg(crate::sip::free_udp_port().to_string())
            .output()
            .expect("fax-lab.sh");
        assert!(
            out.status.success(),
            "fax-lab.sh start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        lab.wait_idle(Duration::from_secs(90));
        lab
    }

    /// Waits until both modems are "Running and idle" (after a call, a modem is "Waiting
    /// for modem to come ready" for a few seconds).
    pub fn wait_idle(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let out = Command::new("faxstat")
                .args(["-s", "-h", &self.host()])
                .output()
                .expect("faxstat (apt-get install hylafax-client)");
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            if text.matches("Running and idle").count() == 2 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the fax lab's modems are not idle: {text}{} (faxstat: {})\nprocesses: {}\nhfaxd: {}\nfaxq: {}\ngetty A: {}\nlocks: {:?}",
                String::from_utf8_lossy(&out.stderr),
                out.status,
                self.processes(),
                self.log("hfaxd.log"),
                self.log("faxq.log"),
                self.log("gettyA.log"),
                std::fs::read_dir(self.dir.path().join("lock"))
                    .map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Each process of the lab and whether it still runs.
    fn processes(&self) -> String {
        ["faxq", "hfaxd", "gettyA", "gettyB", "iaxA", "iaxB"]
            .iter()
            .map(|n| {
                let pid = self.log(&format!("{n}.pid"));
                let alive = std::path::Path::new(&format!("/proc/{}", pid.trim())).exists();
                format!(
                    "{n} {} {}",
                    pid.trim(),
                    if alive { "running" } else { "gone" }
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    /// Whether the lab listens on /dev/log itself (a host without syslog): then
    /// [`FaxLab::syslog`] has what faxq, faxgetty and faxsend said.
    pub fn owns_syslog(&self) -> bool {
        self.dir.path().join("syslog.pid").exists()
    }

    pub fn syslog(&self) -> String {
        self.log("syslog")
    }

    pub fn spool(&self) -> PathBuf {
        self.dir.path().join("spool")
    }

    pub fn xferfaxlog(&self) -> PathBuf {
        self.spool().join("log/xferfaxlog")
    }

    /// hfaxd's address, as sendfax and faxstat take it.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// HylaFAX's name of modem `m` ("A" or "B"): its device path with '/' as '_'.
    pub fn modem(&self, m: &str) -> String {
        self.dir
            .path()
            .join(format!("tty{m}"))
            .display()
            .to_string()
            .replace('/', "_")
    }

    /// Stops modem `m`'s faxgetty: its line rings and nobody answers.
    pub fn stop_getty(&self, m: &str) {
        self.run(&["stop-getty", m]);
    }

    /// Kills modem `m`'s iaxmodem: a call in progress drops.
    pub fn kill_modem(&self, m: &str) {
        self.run(&["stop-modem", m]);
    }

    /// Whether a session log of the spool contains `needle`.
    pub fn session_log_has(&self, needle: &str) -> bool {
        std::fs::read_dir(self.spool().join("log"))
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with('c'))
                    .any(|e| std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains(needle)))
            })
            .unwrap_or(false)
    }

    fn run(&self, args: &[&str]) {
        let status = Command::new("bash")
            .arg(script())
            .arg(args[0])
            .arg(self.dir.path())
            .args(&args[1..])
            .status()
            .expect("fax-lab.sh");
        assert!(status.success(), "fax-lab.sh {args:?}");
    }
}

/// faxq 6.0.7 can lose a wake-up of its scheduler (`SchedTimeout::start`): two wake-ups in
/// one second (both faxgettys saying "ready") leave `pending` set after its timer has run,
/// and a job submitted later in the next second then starts no timer at all. It stays
/// "ready" until faxq's next event; a busy server soon has one, the lab has none. Reproduced
/// by hand: two modem-ready FIFO messages at the start of a second and a `sendfax` 1.4 s
/// later leave the job waiting for good. So while a job has been "ready" (state 5) for 3 s,
/// the lab sends faxq the FIFO's "Z" (show debug state), which runs the scheduler; a job
/// that cannot be sent (no modem free) stays where it is.
fn wake_scheduler(spool: &std::path::Path, stop: &mpsc::Receiver<()>) {
    let mut ready_since: HashMap<std::ffi::OsString, Instant> = HashMap::new();
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(Duration::from_millis(500)) {
        let now = Instant::now();
        let ready: Vec<_> = std::fs::read_dir(spool.join("sendq"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with('q'))
            .filter(|e| {
                std::fs::read_to_string(e.path()).is_ok_and(|t| t.lines().any(|l| l == "state:5"))
            })
            .map(|e| e.file_name())
            .collect();
        ready_since.retain(|name, _| ready.contains(name));
        for name in ready {
            let since = ready_since.entry(name).or_insert(now);
            if now.duration_since(*since) >= Duration::from_secs(3) {
                // No reader (faxq stopped by the test): nothing to wake.
                let _ = std::fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_NONBLOCK)
                    .open(spool.join("FIFO"))
                    .and_then(|mut f| std::io::Write::write_all(&mut f, b"Z\0"));
                *since = now;
            }
        }
    }
}

struct Waker {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Waker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for FaxLab {
    fn drop(&mut self) {
        // A failed test shows what HylaFAX did: its jobs, modem states and FIFO messages.
        if std::thread::panicking() {
            let log = self.syslog();
            let lines: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("FaxQueuer") || l.contains("CAUGHT SIGNAL"))
                // What faxq prints for each of the lab's wake-ups ("Z").
                .filter(|l| {
                    !["DEBUG:", "DestInfo (", "): In ", "SHOULD NOT BE"]
                        .iter()
                        .any(|n| l.contains(n))
                })
                .collect();
            eprintln!(
                "--- what faxq said (last 80 lines; <LAB>/syslog) ---\n{}",
                lines[lines.len().saturating_sub(80)..].join("\n")
            );
        }
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}
