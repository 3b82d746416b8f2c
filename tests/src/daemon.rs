//! A peer program a test starts, waits for, stops by PID and whose log it shows when the
//! test fails.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Daemon {
    name: &'static str,
    log: PathBuf,
    child: Option<Child>,
}

impl Daemon {
    /// `log` is the file the program writes its log to.
    pub fn new(name: &'static str, log: PathBuf) -> Daemon {
        Daemon {
            name,
            log,
            child: None,
        }
    }

    /// Stops the running instance, starts `cmd` and waits up to 15 s for `ready`.
    pub fn run(&mut self, cmd: &mut Command, ready: impl Fn() -> bool) {
        self.stop();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} (apt-get install it): {e}", self.name));
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while !ready() {
            assert!(
                std::time::Instant::now() < deadline,
                "{} did not get ready:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, waiting for the process to end.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            crate::stop(&mut c, Duration::from_secs(5));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("--- {} log ---\n{}", self.name, self.log());
        }
    }
}
