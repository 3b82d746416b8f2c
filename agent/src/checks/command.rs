//! `command`: runs a program and judges its exit status (Nagios plugin convention).
//!
//! - **ok**: the exit code is in `ok_codes` (default `[0]`).
//! - **degraded**: the exit code is in `degraded_codes` (default `[1]`, Nagios WARNING).
//! - **fail**: `exit_code` (any other code), `signal` (killed by a signal), `spawn_error`
//!   (not found, not executable), `io_error`, or `timeout` (from the scheduler: the whole
//!   process group is killed).
//!
//! The first line of standard output (else of standard error) is the detail, as Nagios
//! plugins print it. The program runs in its own process group; when the probe ends for any
//! reason, whatever is left of that group is killed, so no process outlives its probe.
//!
//! Metrics: `telagent_command_exit_code{check}` of the last run, beside the common
//! `telagent_check_*` series.

use std::collections::BTreeMap;
use std::process::Stdio;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::{excerpt, Check, Observation};
use crate::vocab::check_config;

/// Most bytes of each output stream kept (the rest is read and discarded).
const MAX_OUTPUT: usize = 4096;

check_config! {
    /// `[[command]]`: a program whose exit status tells the health.
    CommandConfig {
        /// Program and arguments, run without a shell: `["/usr/lib/nagios/plugins/check_smtp", "-H", "127.0.0.1"]`.
        command: Vec<String>,
        /// Extra environment variables.
        #[serde(default)]
        env: BTreeMap<String, String>,
        /// Exit codes that mean ok.
        #[serde(default = "default_ok_codes")]
        ok_codes: Vec<i32>,
        /// Exit codes that mean degraded.
        #[serde(default = "default_degraded_codes")]
        degraded_codes: Vec<i32>,
    }
}

fn default_ok_codes() -> Vec<i32> {
    vec![0]
}

fn default_degraded_codes() -> Vec<i32> {
    vec![1]
}

impl CommandConfig {
    pub(crate) fn validate(&self) -> Result<(), (&'static str, String)> {
        match self.command.first() {
            None => Err((
                "command",
                "must name a program: [\"/path/to/program\", \"arg\", ...]".into(),
            )),
            Some(p) if p.is_empty() => Err(("command", "the program name is empty".into())),
            _ if self.ok_codes.is_empty() => {
                Err(("ok_codes", "must list at least one exit code".into()))
            }
            _ => match self
                .ok_codes
                .iter()
                .find(|c| self.degraded_codes.contains(c))
            {
                Some(c) => Err((
                    "degraded_codes",
                    format!("exit code {c} is listed in both ok_codes and degraded_codes"),
                )),
                None => Ok(()),
            },
        }
    }
}

pub struct CommandCheck {
    config: CommandConfig,
}

impl CommandCheck {
    pub fn new(config: CommandConfig) -> Self {
        CommandCheck { config }
    }
}

/// Kills a process group when dropped: on timeout (the probe future is dropped), on
/// shutdown, and after the leader exits (its background children go too).
struct GroupGuard(libc::pid_t);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        // SAFETY: kill(2) with a negative pid signals the group we created; no memory is
        // involved. ESRCH (group already gone) is fine.
        unsafe {
            libc::kill(-self.0, libc::SIGKILL);
        }
    }
}

#[async_trait]
impl Check for CommandCheck {
    fn kind(&self) -> &'static str {
        "command"
    }

    fn error_types(&self) -> &'static [&'static str] {
        &["exit_code", "signal", "spawn_error", "io_error"]
    }

    async fn probe(&self) -> Observation {
        let c = &self.config;
        let program = &c.command[0];
        let Finished {
            status,
            stdout,
            stderr,
        } = match execute(&c.command, &c.env).await {
            Ok(f) => f,
            Err(o) => return o,
        };
        let first_line = |b: &[u8]| excerpt(b.split(|&x| x == b'\n').next().unwrap_or(b), 200);
        let mut said = first_line(&stdout);
        if said.is_empty() {
            said = first_line(&stderr);
        }
        let Some(code) = status.code() else {
            use std::os::unix::process::ExitStatusExt;
            let sig = status.signal().unwrap_or(0);
            return Observation::fail("signal", format!("{program} was killed by signal {sig}"));
        };
        let detail = if said.is_empty() {
            format!("{program} exited with {code}")
        } else {
            format!("{program} exited with {code}: {said}")
        };
        let obs = if c.ok_codes.contains(&code) {
            Observation::ok(detail)
        } else if c.degraded_codes.contains(&code) {
            Observation::degraded("exit_code", detail)
        } else {
            Observation::fail("exit_code", detail)
        };
        obs.with_value("exit_code", "Exit code of the last run.", code.into())
    }
}

/// What a program left when it ended.
pub(crate) struct Finished {
    pub status: std::process::ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Runs `argv` in its own process group and collects its bounded output; whatever is left
/// of the group is killed when the program ends or the future is dropped. The error is a
/// failed observation (`spawn_error`, `io_error`).
pub(crate) async fn execute(
    argv: &[String],
    env: &BTreeMap<String, String>,
) -> Result<Finished, Observation> {
    let program = &argv[0];
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(&argv[1..])
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| {
        Observation::fail(
            "spawn_error",
            format!("cannot run {program}: {e}; check the path and its permissions"),
        )
    })?;
    let Some(pid) = child.id() else {
        return Err(Observation::fail(
            "spawn_error",
            format!("{program} exited at once"),
        ));
    };
    let guard = GroupGuard(pid as libc::pid_t);
    let stdout = read_bounded(child.stdout.take());
    let stderr = read_bounded(child.stderr.take());
    let wait = async {
        let status = child.wait().await;
        // The leader is done: end what it left behind, so the pipes close.
        drop(guard);
        status
    };
    let (status, stdout, stderr) = tokio::join!(wait, stdout, stderr);
    let status =
        status.map_err(|e| Observation::fail("io_error", format!("waiting for {program}: {e}")))?;
    Ok(Finished {
        status,
        stdout,
        stderr,
    })
}

/// Reads a pipe to its end, keeping the first `MAX_OUTPUT` bytes.
async fn read_bounded(pipe: Option<impl AsyncRead + Unpin>) -> Vec<u8> {
    let mut kept = Vec::new();
    let Some(mut pipe) = pipe else { return kept };
    let mut buf = [0u8; 4096];
    while let Ok(n) = pipe.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let room = MAX_OUTPUT.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::Status;

    fn check(argv: &[&str]) -> CommandCheck {
        let text = format!(
            "[[command]]\nname = \"c\"\ncommand = {:?}\n",
            argv.iter().map(|s| s.to_string()).collect::<Vec<_>>()
        );
        let config = crate::config::parse(&text, "t.toml").unwrap();
        CommandCheck::new(config.command[0].clone())
    }

    #[tokio::test]
    async fn exit_codes_follow_the_nagios_convention() {
        let ok = check(&["sh", "-c", "echo fine; exit 0"]).probe().await;
        assert_eq!(
            (ok.status, ok.detail.as_str()),
            (Status::Ok, "sh exited with 0: fine")
        );
        let warn = check(&["sh", "-c", "echo 'queue long' >&2; exit 1"])
            .probe()
            .await;
        assert_eq!(warn.status, Status::Degraded);
        assert!(warn.detail.ends_with("queue long"), "{}", warn.detail);
        let crit = check(&["sh", "-c", "exit 2"]).probe().await;
        assert_eq!(
            (crit.status, crit.error_type),
            (Status::Fail, Some("exit_code"))
        );
        assert_eq!(crit.values[0].value, 2.0);
    }

    #[tokio::test]
    async fn missing_program_is_a_spawn_error() {
        let o = check(&["/nonexistent/check_thing"]).probe().await;
        assert_eq!(o.error_type, Some("spawn_error"));
        assert!(
            o.detail.contains("/nonexistent/check_thing"),
            "{}",
            o.detail
        );
    }

    #[tokio::test]
    async fn background_children_do_not_hold_the_probe() {
        // The leader exits at once, leaving a child that keeps stdout open.
        let o = check(&["sh", "-c", "sleep 30 & echo started"])
            .probe()
            .await;
        assert_eq!(o.status, Status::Ok, "{}", o.detail);
    }

    #[tokio::test]
    async fn flood_of_output_is_bounded() {
        let o = check(&["sh", "-c", "head -c 1000000 /dev/zero | tr '\\0' x; exit 0"])
            .probe()
            .await;
        assert_eq!(o.status, Status::Ok);
        assert!(o.detail.len() < 300, "{}", o.detail.len());
    }
}
