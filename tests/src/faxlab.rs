//! A real fax line on this machine (tests/peers/fax-lab.sh, as root): two iaxmodems
//! dialling each other with no PBX, and one HylaFAX spool with faxq, hfaxd and a faxgetty
//! on each modem. A fax from A to B is a real T.30 call (V.17 14,400 bit/s, ECM).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub struct FaxLab {
    pub dir: TempDir,
    /// hfaxd's port on 127.0.0.1.
    pub port: u16,
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
        let lab = FaxLab {
            dir,
            port: crate::free_port(),
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

impl Drop for FaxLab {
    fn drop(&mut self) {
        // A failed test shows what HylaFAX did: its jobs, modem states and FIFO messages.
        if std::thread::panicking() {
            let log = self.log("syslog");
            let lines: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("FaxQueuer") || l.contains("CAUGHT SIGNAL"))
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
