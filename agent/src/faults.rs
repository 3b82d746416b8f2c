//! The agent's own faults: running out of file descriptors. A probe that fails because the
//! agent cannot open a socket says nothing about its target, so the target keeps its state
//! and the fault is counted here (`telagent_agent_errors_total{kind}`) instead.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::metrics::{Collector, Families};

/// The process or the system is out of file descriptors (EMFILE, ENFILE).
pub const FD_EXHAUSTED: &str = "fd_exhausted";

/// Counts of the agent's own faults, by kind.
#[derive(Debug, Default)]
pub struct Faults {
    fd_exhausted: AtomicU64,
    /// Unix second of the last WARN line, so that a storm logs once per interval.
    logged: AtomicU64,
}

/// Seconds between two WARN lines about the agent's own faults.
const LOG_EVERY: u64 = 10;

impl Faults {
    /// Counts one fault of `kind`, with a WARN line at most every 10 s naming `context`.
    pub fn count(&self, kind: &'static str, context: &str) {
        if kind == FD_EXHAUSTED {
            self.fd_exhausted.fetch_add(1, Ordering::Relaxed);
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = self.logged.load(Ordering::Relaxed);
        if now >= last + LOG_EVERY
            && self
                .logged
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                kind,
                context,
                total = self.fd_exhausted.load(Ordering::Relaxed),
                "The agent is out of file descriptors; probes that fail for that reason do not change any target's state. Raise LimitNOFILE or find what holds the descriptors (see telagent_api_connections)."
            );
        }
    }
}

impl Collector for Faults {
    fn collect(&self, f: &mut Families) {
        f.counter(
            "telagent_agent_errors_total",
            "Faults of the agent itself, by kind (fd_exhausted: out of file descriptors); never counted against a target.",
            &[("kind", FD_EXHAUSTED)],
            self.fd_exhausted.load(Ordering::Relaxed) as f64,
        );
    }
}

/// True when an I/O error is the agent's lack of file descriptors.
pub fn is_fd_exhaustion(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

/// True when the agent cannot open a descriptor now, or a failed probe's detail says it
/// could not and the agent is within 16 descriptors of its limit. (The detail alone is
/// not enough: a target could put those words in what it sends back.)
pub fn failed_for_want_of_fds(detail: &str) -> bool {
    if std::fs::File::open("/dev/null").is_err_and(|e| is_fd_exhaustion(&e)) {
        return true;
    }
    let said = detail.contains("(os error 24)") || detail.contains("(os error 23)");
    said && near_fd_limit(16)
}

/// The process' soft descriptor limit (RLIMIT_NOFILE), if it can be read.
pub fn fd_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    (rc == 0).then_some(limit.rlim_cur)
}

/// True when fewer than `margin` descriptors are left under the soft RLIMIT_NOFILE.
fn near_fd_limit(margin: u64) -> bool {
    let Some(limit) = fd_limit() else {
        return false;
    };
    match std::fs::read_dir("/proc/self/fd") {
        Ok(fds) => fds.count() as u64 + margin >= limit,
        Err(e) => is_fd_exhaustion(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_errors_24_and_23_are_the_agents() {
        assert!(is_fd_exhaustion(&std::io::Error::from_raw_os_error(
            libc::EMFILE
        )));
        assert!(!is_fd_exhaustion(&std::io::Error::from_raw_os_error(
            libc::ECONNREFUSED
        )));
        // Far from the limit, a detail that says so is not believed.
        let e = std::io::Error::from_raw_os_error(libc::EMFILE);
        assert!(!failed_for_want_of_fds(&format!(
            "cannot connect to 10.0.0.1:25: {e}"
        )));
        assert!(!failed_for_want_of_fds(
            "connection to 10.0.0.1:25 refused: nothing listens there"
        ));
    }
}
