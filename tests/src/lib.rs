//! Launchers for end-to-end tests: the agent under test, real peers (Prometheus), TCP
//! services the test controls, and polling with a deadline.
//!
//! Every process is started on loopback ports chosen at run time, in its own temp dir, and
//! stopped by PID (SIGTERM, then SIGKILL if it does not exit in time).

pub mod agent;
pub mod daemon;
pub mod faxlab;
pub mod haproxy;
pub mod hylafax;
pub mod iaxmodem;
pub mod lab;
pub mod modem;
pub mod postgres;
pub mod prometheus;
pub mod service;
pub mod sip;
pub mod snmpd;
pub mod snmpsim;
pub mod snmptrapd;
pub mod v250;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::OnceLock;
use std::time::Duration;

/// The agent binary: `$TELAGENT_BIN` when set (the benchmarks' release build), else built
/// once per test process so that it is never stale.
pub fn agent_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("TELAGENT_BIN") {
            return PathBuf::from(bin);
        }
        let status = std::process::Command::new(env!("CARGO"))
            .args(["build", "--quiet", "-p", "telagent", "--bin", "telagent"])
            .status()
            .expect("cannot run cargo to build the agent");
        assert!(status.success(), "building the agent failed");
        // Tests run as target/<profile>/deps/<test>, the soak as target/<profile>/soak;
        // the agent is target/<profile>/telagent.
        let exe = std::env::current_exe().expect("current_exe");
        let mut dir = exe.parent().expect("target dir");
        if dir.ends_with("deps") {
            dir = dir.parent().expect("target dir");
        }
        dir.join("telagent")
    })
}

/// A free loopback TCP port (bound once, released for the caller).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Polls `f` every 50 ms until it returns Some, or panics naming `what` after `limit`.
pub async fn poll<T, F, Fut>(limit: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends a signal to a process.
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a PID this test started; no memory is involved.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// Stops a child: SIGTERM, then SIGKILL after `grace`; returns whether it exited on
/// SIGTERM within the grace time.
pub fn stop(child: &mut Child, grace: Duration) -> bool {
    if let Ok(Some(_)) = child.try_wait() {
        return true;
    }
    signal(child.id(), libc::SIGTERM);
    let deadline = std::time::Instant::now() + grace;
    while std::time::Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

/// True when `program` is on PATH.
pub fn have(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// Processes whose command line contains `needle` (from /proc).
pub fn processes_with(needle: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(needle))
                .unwrap_or(false)
        })
        .collect()
}

/// The JSON dashboards of dashboards/, by file name (at least the fleet's and the server's).
pub fn dashboards() -> Vec<(String, serde_json::Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards");
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().and_then(|x| x.to_str()) == Some("json") {
            let v = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            out.push((p.file_name().unwrap().to_string_lossy().into_owned(), v));
        }
    }
    assert!(out.len() >= 2, "{} dashboards", out.len());
    out
}
