//! `modem`: a fax modem or fax board on a serial port, spoken to with AT commands, safely.
//!
//! Safety first: before opening the port the check takes the port's UUCP lock
//! (`LCK..<device>` in the host's one lock directory, `[ports] lock_dir`, unless the check
//! sets its own). If a live process holds it (faxgetty, mgetty, cu), or a lock file was
//! created less than 5 s ago and its PID is not written yet, the port is not opened and
//! not a byte is written: the line is `in_use`, which is alive, not a failure; with
//! `hylafax_spool` set, HylaFAX's `status/<device>` file then says how the fax server sees
//! the modem. A stale lock (dead PID) is noted and left alone unless `remove_stale_locks`
//! is on. Our own lock is removed on every exit path: a timeout, a shutdown, Ctrl-C or a
//! TERM to `telagent check`. Serial lines are probed at their own interval (default 5m,
//! never below `[ports] min_probe_interval`) and never faster while failing.
//!
//! The fax server must win: a `RING` at any point (an incoming call) stops the probe at
//! once; nothing is hung up, the port and the lock are released, and the line is reported
//! in use. Other unsolicited result codes (`NO CARRIER` of a dropped call, `+FCERROR`),
//! answers that arrive too late and noise bytes are skipped and counted; a command is
//! judged by its own final result code. Answers must line up with commands: input waiting
//! on the port is dropped before each command, and after a command timed out the session
//! waits for the line to go quiet and for a lone `OK` to `AT` before it sends anything
//! else; an identity is exported only from answers that lined up.
//!
//! The probe script (default: `ATE0V1`, `AT`, `AT+FCLASS=?`, `AT+FMI?`, `AT+FMM?`,
//! `AT+FMR?`, `ATI3`; the identity steps are optional, and skipped if left unanswered)
//! tolerates echo and numeric result codes. Optional line checks run on their own long
//! interval, only while the line is idle and unlocked: a line-voltage reading first
//! (`AT-TRV` or the model's command; no voltage, no dial-tone test), then a dial-tone test
//! (off-hook without dialing, always followed by `ATH0`, and `ATZ` if the modem stops
//! answering; a probe stopped mid-test still sends `ATH0`). The script and line tests must
//! fit inside the check's `timeout` (checked when the config is loaded).
//!
//! - **ok**: every required step got its expected answer; or the line is in use (locked,
//!   or ringing) and HylaFAX (if configured) reports it running.
//! - **degraded**: no fax class among the supported classes (`no_fax_class`), a line in use
//!   by an extension during the dial-tone test (`line_in_use`), a voltage reply that is not
//!   a number (`bad_voltage_reply`), HylaFAX waiting / unknown (`hylafax_waiting`,
//!   `hylafax_unknown_status`), or HylaFAX in one sending or receiving state for longer
//!   than `max_session` (default 30m: `stuck_session`, a call that dropped while the fax
//!   server still shows "Receiving facsimile").
//! - **fail**: `port_missing`, `permission_denied`, `open_error`, `lock_error`,
//!   `no_response` (the modem left a command unanswered), `garbage` (only noise, a wrong
//!   baud rate, a flood without line ends), `error_reply`, `unexpected_reply`,
//!   `no_dialtone` (the modem reported NO DIALTONE, BUSY...), `dialtone_timeout` (the modem
//!   answered every command but gave no result to the dial: a dead line), `no_line`
//!   (voltage below `min_volts`), `hylafax_not_ready`, `hylafax_down`, or `timeout`.
//!
//! Metrics: `telagent_modem_info{check,manufacturer,model,revision,classes}` (1),
//! `telagent_modem_response_seconds{check}` (AT to OK), `telagent_modem_in_use{check}`,
//! `telagent_modem_unsolicited_total{check}`, `telagent_modem_session_seconds{check}`
//! (when HylaFAX's status is read), `telagent_modem_dialtone{check}` and
//! `telagent_modem_line_volts{check}` when those line checks are configured.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde::Deserialize;
use tokio::time::Instant;

use super::{excerpt, Check, Observation, Status};
use crate::serial::at::{AtError, Final, Session};
use crate::serial::{hylafax, lock};
use crate::vocab::check_config;

check_config! {
    /// `[[modem]]`: a fax modem on a serial port.
    ModemConfig {
        /// Serial port: `/dev/ttyS0`, `/dev/serial/by-id/...`.
        port: String,
        /// Device name of the lock and HylaFAX files; default: the basename of the port
        /// after symlinks are resolved (`ttyUSB0`).
        #[serde(default)]
        device: Option<String>,
        /// Line speed.
        #[serde(default = "default_baud")]
        baud: u32,
        /// Longest wait for the answer to one AT command.
        #[serde(default = "default_command_timeout", with = "crate::vocab::duration")]
        command_timeout: Duration,
        /// The probe script; default: identity and fax classes (see the module doc).
        #[serde(default)]
        script: Option<Vec<Step>>,
        /// Directory of UUCP lock files; default: `[ports] lock_dir`, the host's one lock
        /// directory. Set it only for a program that locks elsewhere.
        #[serde(default)]
        lock_dir: Option<PathBuf>,
        /// Remove locks left by dead processes (default: note them, leave them).
        #[serde(default)]
        remove_stale_locks: bool,
        /// HylaFAX spool (`/var/spool/hylafax`): read `status/<device>` while the fax
        /// server holds the port.
        #[serde(default)]
        hylafax_spool: Option<PathBuf>,
        /// The modem's id in the HylaFAX spool (`status/<id>`, `etc/config.<id>`): the
        /// device path below /dev, or the whole path with `/` as `_`; default: `device`.
        #[serde(default)]
        hylafax_device: Option<String>,
        /// Never open the port, whoever holds it: judge the line only by HylaFAX's
        /// `status/<id>` file (needs `hylafax_spool`). What discovery sets up.
        #[serde(default)]
        passive: bool,
        /// Program run on transitions to tell HylaFAX to stop (`-s down`) or resume
        /// (`-s ready`) using this modem, normally `faxstate`; default: not run.
        #[serde(default)]
        faxstate: Option<String>,
        /// Longest a HylaFAX sending or receiving state may last before the session is
        /// taken as stuck (`stuck_session`): a call that dropped while the fax server
        /// still shows "Receiving facsimile".
        #[serde(default = "default_max_session", with = "crate::vocab::duration")]
        max_session: Duration,
        /// Dial-tone test.
        #[serde(default)]
        dialtone: Option<DialtoneConfig>,
        /// Line-voltage reading.
        #[serde(default)]
        voltage: Option<VoltageConfig>,
    }
}

fn default_baud() -> u32 {
    19200
}
fn default_command_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_max_session() -> Duration {
    Duration::from_secs(30 * 60)
}
fn default_line_interval() -> Duration {
    Duration::from_secs(3600)
}

/// One command of the probe script.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// The command, `AT...`.
    pub send: String,
    /// Expected answer: a result code (`OK`) or text in an information line.
    #[serde(default = "default_expect")]
    pub expect: String,
    /// What the information lines of the answer are.
    #[serde(default)]
    pub capture: Option<Capture>,
    /// An unexpected answer (ERROR, say) is not a failure.
    #[serde(default)]
    pub optional: bool,
}

fn default_expect() -> String {
    "OK".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Capture {
    Manufacturer,
    Model,
    Revision,
    Classes,
}

/// `dialtone = { ... }`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DialtoneConfig {
    /// Time between two tests while the line passes.
    #[serde(default = "default_line_interval", with = "crate::vocab::duration")]
    pub interval: Duration,
    /// Goes off-hook and returns to command mode without dialing.
    #[serde(default = "default_dialtone_command")]
    pub command: String,
    /// Longest wait for the answer.
    #[serde(default = "default_dialtone_timeout", with = "crate::vocab::duration")]
    pub timeout: Duration,
}

fn default_dialtone_command() -> String {
    "ATX4DT;".into()
}
fn default_dialtone_timeout() -> Duration {
    Duration::from_secs(10)
}

/// `voltage = { ... }`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoltageConfig {
    /// Time between two readings while the line passes.
    #[serde(default = "default_line_interval", with = "crate::vocab::duration")]
    pub interval: Duration,
    /// The model's command that answers the line voltage.
    #[serde(default = "default_voltage_command")]
    pub command: String,
    /// Below this many volts there is no line.
    #[serde(default = "default_min_volts")]
    pub min_volts: f64,
}

fn default_voltage_command() -> String {
    "AT-TRV".into()
}
fn default_min_volts() -> f64 {
    3.0
}

/// The default probe script.
pub fn default_script() -> Vec<Step> {
    let step = |send: &str, capture: Option<Capture>, optional: bool| Step {
        send: send.into(),
        expect: "OK".into(),
        capture,
        optional,
    };
    vec![
        // Echo off and verbose result codes: in verbose mode every answer is framed by
        // CR LF (V.250 5.7.1), so line noise before an answer stays on a line of its own.
        step("ATE0V1", None, false),
        step("AT", None, false),
        step("AT+FCLASS=?", Some(Capture::Classes), true),
        step("AT+FMI?", Some(Capture::Manufacturer), true),
        step("AT+FMM?", Some(Capture::Model), true),
        step("AT+FMR?", Some(Capture::Revision), true),
        step("ATI3", Some(Capture::Model), true),
    ]
}

impl ModemConfig {
    pub(crate) fn validate(&self) -> Result<(), (&'static str, String)> {
        if !self.port.starts_with('/') {
            return Err((
                "port",
                format!(
                    "`{}` is not an absolute device path such as \"/dev/ttyS0\"",
                    self.port
                ),
            ));
        }
        if self.confirm_interval.is_some_and(|c| !c.is_zero()) {
            return Err((
                "confirm_interval",
                "a serial line is never probed sooner than its interval: a quick second probe would take the modem from the fax server; leave confirm_interval unset".into(),
            ));
        }
        if self.baud == 0 {
            return Err(("baud", "must be a line speed such as 19200".into()));
        }
        if self.command_timeout.is_zero() {
            return Err(("command_timeout", "must be longer than 0s".into()));
        }
        if let Some(d) = &self.device {
            if d.is_empty() || d.contains('/') {
                return Err(("device", "must be a device name such as \"ttyS0\"".into()));
            }
        }
        if self.passive && self.hylafax_spool.is_none() {
            return Err((
                "passive",
                "a passive line is judged by HylaFAX's status file: set hylafax_spool".into(),
            ));
        }
        if let Some(d) = &self.hylafax_device {
            if d.is_empty() || d.contains('/') {
                return Err((
                    "hylafax_device",
                    "must be a HylaFAX modem id such as \"ttyS0\"".into(),
                ));
            }
        }
        if let Some(script) = &self.script {
            if script.is_empty() {
                return Err(("script", "must have at least one step".into()));
            }
            if let Some(s) = script.iter().find(|s| !is_at(&s.send)) {
                return Err((
                    "script",
                    format!("`{}` is not an AT command (it must start with AT)", s.send),
                ));
            }
        }
        if self.dialtone.as_ref().is_some_and(|d| !is_at(&d.command)) {
            return Err(("dialtone", "command must start with AT".into()));
        }
        if let Some(v) = &self.voltage {
            if !is_at(&v.command) {
                return Err(("voltage", "command must start with AT".into()));
            }
            if v.min_volts.is_nan() || v.min_volts < 0.0 {
                return Err(("voltage", "min_volts must be 0 or more".into()));
            }
        }
        Ok(())
    }

    /// The longest a probe can take when every command waits its full time: the script,
    /// then the line checks with their hang-up. It must fit in the check's `timeout`,
    /// or the scheduler would cancel probes that are merely slow.
    pub fn budget(&self) -> Duration {
        if self.passive {
            return Duration::ZERO;
        }
        let steps = self
            .script
            .as_ref()
            .map_or(default_script().len(), Vec::len) as u32;
        let mut b = self.command_timeout * steps;
        if let Some(d) = &self.dialtone {
            // The dial, then ATH0 (and ATZ if ATH0 goes unanswered).
            b += d.timeout + self.command_timeout * 2;
        }
        if self.voltage.is_some() {
            b += self.command_timeout;
        }
        b
    }

    /// The device name of locks and HylaFAX files: symlinks such as /dev/serial/by-id are
    /// resolved to the device node, except links to a pty (iaxmodem's `ttyIAX0`), whose
    /// link name is the line's name.
    pub fn device_name(&self) -> String {
        if let Some(d) = &self.device {
            return d.clone();
        }
        let path = Path::new(&self.port);
        let real = std::fs::canonicalize(path)
            .ok()
            .filter(|r| !r.starts_with("/dev/pts"))
            .unwrap_or_else(|| path.to_path_buf());
        real.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.port.clone())
    }
}

fn is_at(s: &str) -> bool {
    s.len() >= 2 && s[..2].eq_ignore_ascii_case("AT") && s.is_ascii()
}

/// What a modem said about itself.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Identity {
    pub manufacturer: String,
    pub model: String,
    pub revision: String,
    pub classes: String,
}

/// Last result of a line check, kept between probes.
#[derive(Debug, Clone, Copy)]
struct LineResult {
    at: Instant,
    passed: bool,
    value: f64,
}

pub struct ModemCheck {
    config: ModemConfig,
    /// `lock_dir`, or the host's when the config was not resolved by `Config::checks`.
    lock_dir: PathBuf,
    script: Vec<Step>,
    dialtone: Mutex<Option<LineResult>>,
    voltage: Mutex<Option<LineResult>>,
    /// Unsolicited result codes and noise skipped, over all probes.
    unsolicited: AtomicU64,
}

impl ModemCheck {
    pub fn new(config: ModemConfig) -> Self {
        let script = config.script.clone().unwrap_or_else(default_script);
        ModemCheck {
            lock_dir: config
                .lock_dir
                .clone()
                .unwrap_or_else(|| crate::config::PortsConfig::default().lock_dir),
            config,
            script,
            dialtone: Mutex::new(None),
            voltage: Mutex::new(None),
            unsolicited: AtomicU64::new(0),
        }
    }
}

/// A `RING` arrived during the probe: it stopped at once and released the port.
struct Ringing;

/// Hangs the modem up if a probe is dropped (the scheduler's timeout, a signal to
/// `telagent check`) while it is off-hook: on drop, while armed, writes `ATH0` on its own
/// handle of the port. Any character aborts a dial in progress (V.250 6.3.1).
struct OnHook {
    port: Option<std::fs::File>,
    armed: bool,
}

impl OnHook {
    fn new(port: &impl std::os::fd::AsRawFd) -> Self {
        // SAFETY: the descriptor belongs to `port`, open for the duration of this call;
        // it is duplicated at once into a handle of our own.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(port.as_raw_fd()) };
        OnHook {
            port: fd.try_clone_to_owned().ok().map(std::fs::File::from),
            armed: false,
        }
    }
}

impl Drop for OnHook {
    fn drop(&mut self) {
        if let (true, Some(port)) = (self.armed, self.port.as_mut()) {
            use std::io::Write;
            // Best effort on a non-blocking port: 7 bytes fit any output buffer.
            let _ = port.write_all(b"\rATH0\r");
            tracing::info!("A probe was stopped during the dial-tone test; sent ATH0.");
        }
    }
}

fn in_use_value(obs: Observation, in_use: bool) -> Observation {
    obs.with_value(
        "in_use",
        "1 if another program held the line at the last probe.",
        if in_use { 1.0 } else { 0.0 },
    )
}

#[async_trait]
impl Check for ModemCheck {
    fn kind(&self) -> &'static str {
        "modem"
    }

    fn error_types(&self) -> &'static [&'static str] {
        &[
            "port_missing",
            "permission_denied",
            "open_error",
            "lock_error",
            "no_response",
            "garbage",
            "error_reply",
            "unexpected_reply",
            "no_fax_class",
            "no_dialtone",
            "dialtone_timeout",
            "line_in_use",
            "stuck_session",
            "no_line",
            "bad_voltage_reply",
            "hylafax_not_ready",
            "hylafax_down",
            "hylafax_waiting",
            "hylafax_unknown_status",
        ]
    }

    async fn probe(&self) -> Observation {
        let c = &self.config;
        let device = c.device_name();
        if c.passive {
            return self.passive(&device);
        }
        let mut note = String::new();
        let guard = match lock::acquire(&self.lock_dir, &device, c.remove_stale_locks) {
            Ok(lock::Acquired::Held(g)) => Some(g),
            Ok(lock::Acquired::InUse(info)) => {
                return self.counted(in_use_value(self.in_use(&device, &info), true))
            }
            Ok(lock::Acquired::Stale(info)) => {
                note = format!(
                    "; stale lock {} of dead pid {} left in place",
                    info.file.display(),
                    info.pid.map_or("?".into(), |p| p.to_string())
                );
                None
            }
            Err(e) => {
                return self.counted(Observation::fail(
                    "lock_error",
                    format!(
                        "cannot lock {device} in {}: {e}; the agent needs write access to the lock directory (group uucp or dialout)",
                        self.lock_dir.display()
                    ),
                ))
            }
        };
        let talked = self.talk(&device).await;
        // The port is closed (talk owned it); now the lock goes.
        drop(guard);
        let obs = match talked {
            Ok(obs) => in_use_value(obs, false),
            Err(Ringing) => {
                let who = format!("{device}: RING during the probe, a call is coming in; the probe stopped and released the port, nothing was hung up");
                let obs = match &c.hylafax_spool {
                    Some(spool) => self.hylafax_says(spool, &who),
                    None => Observation::ok(who),
                };
                in_use_value(obs, true)
            }
        };
        let mut obs = self.counted(obs);
        obs.detail.push_str(&note);
        obs
    }
}

impl ModemCheck {
    /// Adds the running count of unsolicited codes skipped.
    fn counted(&self, obs: Observation) -> Observation {
        obs.with_value(
            "unsolicited_total",
            "Unsolicited result codes (RING, NO CARRIER, +FCERROR), stale answers and noise bursts skipped while probing.",
            self.unsolicited.load(Ordering::Relaxed) as f64,
        )
    }

    /// The line is held by another program: never touch the port.
    fn in_use(&self, device: &str, holder: &lock::LockInfo) -> Observation {
        let who = format!("{device} in use by {}", holder_text(holder));
        match &self.config.hylafax_spool {
            Some(spool) => self.hylafax_says(spool, &who),
            None => Observation::ok(format!("{who}; not probed")),
        }
    }

    /// A passive line: the port is never opened; the lock says whether a program holds
    /// it and HylaFAX's status file says how the fax server sees the modem.
    fn passive(&self, device: &str) -> Observation {
        let c = &self.config;
        let holder = lock::read(&self.lock_dir, device).filter(|l| !l.stale);
        let who = match &holder {
            Some(h) => format!("{device} held by {}, not opened", holder_text(h)),
            None => format!("{device} not opened (passive)"),
        };
        let obs = match &c.hylafax_spool {
            Some(spool) => self.hylafax_says(spool, &who),
            // Validated: a passive line has a spool.
            None => Observation::degraded("hylafax_unknown_status", who),
        };
        in_use_value(obs, holder.is_some())
    }

    /// The line as HylaFAX's `status/<id>` file describes it.
    fn hylafax_says(&self, spool: &Path, who: &str) -> Observation {
        let id = self.hylafax_id();
        match hylafax::read_status(spool, &id) {
            Ok((line, written)) => {
                let detail = format!("{who}; HylaFAX says: {line}");
                let obs = match hylafax::judge(&line) {
                    (Status::Ok, _) => Observation::ok(detail),
                    (Status::Degraded, t) => {
                        Observation::degraded(t.unwrap_or("hylafax_waiting"), detail)
                    }
                    (Status::Fail, t) => Observation::fail(t.unwrap_or("hylafax_down"), detail),
                };
                // faxgetty rewrites the file at every change of state: its time is when
                // the session entered the state it is in.
                let session = if hylafax::in_session(&line) {
                    SystemTime::now()
                        .duration_since(written)
                        .unwrap_or_default()
                } else {
                    Duration::ZERO
                };
                let max = self.config.max_session;
                let obs = if session > max {
                    obs.worse(Observation::degraded(
                        "stuck_session",
                        format!(
                            "{who}; HylaFAX has said \"{line}\" for {} (max_session {}): the call probably dropped and the session is stuck; check faxgetty and the line",
                            humantime::format_duration(Duration::from_secs(session.as_secs())),
                            humantime::format_duration(max)
                        ),
                    ))
                } else {
                    obs
                };
                obs.with_value(
                    "session_seconds",
                    "How long HylaFAX has been in its current sending or receiving state (0 when idle).",
                    session.as_secs_f64(),
                )
            }
            Err(e) => Observation::degraded(
                "hylafax_unknown_status",
                format!(
                    "{who}; cannot read {}: {e}",
                    spool.join("status").join(&id).display()
                ),
            ),
        }
    }

    /// The modem's id in the HylaFAX spool.
    fn hylafax_id(&self) -> String {
        self.config
            .hylafax_device
            .clone()
            .unwrap_or_else(|| self.config.device_name())
    }

    /// Opens the port and runs the script and the line checks that are due.
    async fn talk(&self, device: &str) -> Result<Observation, Ringing> {
        let c = &self.config;
        let port = match open(&c.port, c.baud) {
            Ok(p) => p,
            Err(o) => return Ok(o),
        };
        let mut hook = OnHook::new(&port);
        let mut s = Session::new(port);
        let result = self.converse(&mut s, &mut hook, device).await;
        self.unsolicited.fetch_add(s.skipped(), Ordering::Relaxed);
        result
    }

    async fn converse<S>(
        &self,
        s: &mut Session<S>,
        hook: &mut OnHook,
        device: &str,
    ) -> Result<Observation, Ringing>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let c = &self.config;
        let mut id = Identity::default();
        let mut response = None;
        let mut unanswered = Vec::new();
        for step in &self.script {
            let reply = match s.command(&step.send, c.command_timeout).await {
                Ok(r) => r,
                Err(AtError::Ring { .. }) => return Err(Ringing),
                // An optional step the modem left unanswered: skipped. Its answer may
                // still come, so the session gets back in step before the next command
                // (and if that fails, the probe ends with it).
                Err(AtError::NoResponse { command, .. })
                    if step.optional && command == step.send =>
                {
                    unanswered.push(step.send.as_str());
                    continue;
                }
                Err(e) => return Ok(at_failure(&e, device)),
            };
            let matched = reply.result.as_str().eq_ignore_ascii_case(&step.expect)
                || reply.lines.iter().any(|l| l.contains(step.expect.as_str()));
            if !matched {
                if step.optional {
                    continue;
                }
                let error_type = if reply.result == Final::Error {
                    "error_reply"
                } else {
                    "unexpected_reply"
                };
                return Ok(Observation::fail(
                    error_type,
                    format!(
                        "{device} answered {} to {} (expected {}){}",
                        reply.result.as_str(),
                        step.send,
                        step.expect,
                        if reply.lines.is_empty() {
                            String::new()
                        } else {
                            format!(
                                " after {:?}",
                                excerpt(reply.lines.join(" / ").as_bytes(), 80)
                            )
                        }
                    ),
                ));
            }
            if step.send.eq_ignore_ascii_case("AT") || response.is_none() {
                response = Some(reply.elapsed);
            }
            if let Some(cap) = step.capture {
                let text = excerpt(reply.lines.join(" ").trim_matches('"').as_bytes(), 64);
                let slot = match cap {
                    Capture::Manufacturer => &mut id.manufacturer,
                    Capture::Model => &mut id.model,
                    Capture::Revision => &mut id.revision,
                    Capture::Classes => &mut id.classes,
                };
                let text = text.trim_matches('"');
                // A class list is numbers, ranges and lists (T.31 8.2); anything else
                // did not come from the modem's answer to +FCLASS=?.
                let fits = cap != Capture::Classes
                    || text.bytes().all(|b| b"0123456789.,()- ".contains(&b));
                if slot.is_empty() && fits {
                    *slot = text.to_string();
                }
            }
        }
        let response = response.unwrap_or_default();
        let mut obs = if !id.classes.is_empty() && !has_fax_class(&id.classes) {
            Observation::degraded(
                "no_fax_class",
                format!(
                    "{device} supports classes {} and no fax class (1, 1.0, 2, 2.0)",
                    id.classes
                ),
            )
        } else {
            Observation::ok(format!(
                "{device}: {} {} {}, classes {}, answered AT in {:.1} ms{}",
                or_unknown(&id.manufacturer),
                or_unknown(&id.model),
                id.revision,
                or_unknown(&id.classes),
                response.as_secs_f64() * 1000.0,
                if unanswered.is_empty() {
                    String::new()
                } else {
                    format!("; no answer to {}", unanswered.join(", "))
                }
            ))
        };
        // The voltage first: a line without voltage explains a missing dial tone, and
        // then there is no point going off-hook.
        if let Some(v) = &c.voltage {
            obs = self.voltage_test(s, v, device, obs).await?;
        }
        if let Some(d) = &c.dialtone {
            obs = if obs.error_type == Some("no_line") {
                obs
            } else {
                self.dialtone_test(s, hook, d, device, obs).await?
            };
        }
        Ok(obs
            .with_value(
                "response_seconds",
                "Time from AT to OK at the last probe.",
                response.as_secs_f64(),
            )
            .with_info(
                "info",
                "Identity and fax classes the modem reported (value 1).",
                vec![
                    ("manufacturer", id.manufacturer),
                    ("model", id.model),
                    ("revision", id.revision),
                    ("classes", id.classes),
                ],
            ))
    }

    async fn dialtone_test<S>(
        &self,
        s: &mut Session<S>,
        hook: &mut OnHook,
        d: &DialtoneConfig,
        device: &str,
        obs: Observation,
    ) -> Result<Observation, Ringing>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let timeout = self.config.command_timeout;
        let due = due(&self.dialtone, d.interval);
        let result = if due {
            hook.armed = true;
            let reply = s.dial(&d.command, d.timeout).await;
            if let Err(AtError::Ring { sent, .. }) = reply {
                // Waiting before the dial, the line is on-hook: nothing to hang up. After
                // it (a line cannot ring off-hook, but a modem may say so), the guard
                // hangs up as the port closes.
                hook.armed = sent;
                return Err(Ringing);
            }
            // Always hang up; a modem that does not answer ATH0 gets ATZ.
            if !s.hang_up(timeout).await {
                return Ok(Observation::fail(
                    "no_response",
                    format!("{device} stopped answering after the dial-tone test (ATH0 and ATZ unanswered)"),
                ));
            }
            hook.armed = false;
            let passed = matches!(&reply, Ok(r) if r.result == Final::Ok);
            let r = LineResult {
                at: Instant::now(),
                passed,
                value: if passed { 1.0 } else { 0.0 },
            };
            *lock_ignore_poison(&self.dialtone) = Some(r);
            Some(reply)
        } else {
            None
        };
        let cached = *lock_ignore_poison(&self.dialtone);
        let obs = match &result {
            Some(Ok(r)) if r.result == Final::LineInUse => obs.worse(Observation::degraded(
                "line_in_use",
                format!("{device}: the line is in use (LINE IN USE at the dial-tone test)"),
            )),
            Some(Ok(r)) if r.result != Final::Ok => obs.worse(Observation::fail(
                "no_dialtone",
                format!(
                    "{device}: no dial tone ({} to {})",
                    r.result.as_str(),
                    d.command
                ),
            )),
            // The modem answered every other command: it is the line that is silent.
            Some(Err(AtError::NoResponse { waited, .. })) => obs.worse(Observation::fail(
                "dialtone_timeout",
                format!(
                    "{device}: no result to {} within {}: the modem went off-hook and heard no dial tone it could report (a dead or disconnected line); it answered the hang-up",
                    d.command,
                    humantime::format_duration(*waited)
                ),
            )),
            Some(Err(e)) => obs.worse(at_failure(e, device)),
            None if cached.is_some_and(|c| !c.passed) => obs.worse(Observation::fail(
                "no_dialtone",
                format!("{device}: no dial tone at the last test"),
            )),
            _ => obs,
        };
        Ok(match cached {
            Some(c) => obs.with_value(
                "dialtone",
                "1 if the last dial-tone test heard a dial tone.",
                c.value,
            ),
            None => obs,
        })
    }

    async fn voltage_test<S>(
        &self,
        s: &mut Session<S>,
        v: &VoltageConfig,
        device: &str,
        obs: Observation,
    ) -> Result<Observation, Ringing>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        if due(&self.voltage, v.interval) {
            let volts = match s.command(&v.command, self.config.command_timeout).await {
                Ok(r) if r.result == Final::Ok => r.lines.iter().find_map(|l| parse_volts(l)),
                Ok(r) => {
                    return Ok(obs.worse(Observation::degraded(
                        "bad_voltage_reply",
                        format!("{device} answered {} to {}", r.result.as_str(), v.command),
                    )))
                }
                Err(AtError::Ring { .. }) => return Err(Ringing),
                Err(e) => return Ok(obs.worse(at_failure(&e, device))),
            };
            let Some(volts) = volts else {
                return Ok(obs.worse(Observation::degraded(
                    "bad_voltage_reply",
                    format!("{device} gave no number in answer to {}", v.command),
                )));
            };
            *lock_ignore_poison(&self.voltage) = Some(LineResult {
                at: Instant::now(),
                passed: volts >= v.min_volts,
                value: volts,
            });
        }
        let Some(last) = *lock_ignore_poison(&self.voltage) else {
            return Ok(obs);
        };
        let obs = if last.passed {
            obs
        } else {
            obs.worse(Observation::fail(
                "no_line",
                format!(
                    "{device}: line voltage {:.1} V is below {:.1} V: no line{}",
                    last.value,
                    v.min_volts,
                    if self.config.dialtone.is_some() {
                        "; the dial-tone test was skipped"
                    } else {
                        ""
                    }
                ),
            ))
        };
        Ok(obs.with_value(
            "line_volts",
            "Line voltage at the last reading, in volts.",
            last.value,
        ))
    }
}

/// Who holds a lock, for a detail line.
fn holder_text(h: &lock::LockInfo) -> String {
    match (h.pid, &h.program) {
        (Some(pid), Some(p)) => format!("{p} (pid {pid})"),
        (Some(pid), None) => format!("another program (pid {pid})"),
        (None, _) => format!("a program writing {} just now", h.file.display()),
    }
}

/// A line check is due when it never ran, when it last failed, or after its interval.
fn due(slot: &Mutex<Option<LineResult>>, interval: Duration) -> bool {
    lock_ignore_poison(slot).is_none_or(|r| !r.passed || r.at.elapsed() >= interval)
}

fn lock_ignore_poison<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The slot holds plain Copy data: a panic elsewhere cannot leave it half-written.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn or_unknown(s: &str) -> &str {
    if s.is_empty() {
        "?"
    } else {
        s
    }
}

/// True when a `+FCLASS=?` answer lists a fax class (1, 1.0, 2, 2.0, 2.1).
pub fn has_fax_class(classes: &str) -> bool {
    classes
        .split([',', '(', ')', '-', ' '])
        .map(str::trim)
        .any(|c| matches!(c, "1" | "1.0" | "2" | "2.0" | "2.1"))
}

/// The first number in a voltage answer (`48.2`, `Line voltage: -48 V`), as magnitude.
pub fn parse_volts(line: &str) -> Option<f64> {
    let start = line.find(|c: char| c.is_ascii_digit())?;
    let num: String = line[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    num.parse::<f64>().ok().filter(|v| v.is_finite())
}

fn at_failure(e: &AtError, device: &str) -> Observation {
    Observation::fail(e.error_type(), format!("{device}: {e}"))
}

/// Opens the port, with an error observation that says what to do.
fn open(path: &str, baud: u32) -> Result<tokio_serial::SerialStream, Observation> {
    use tokio_serial::{SerialPort, SerialPortBuilderExt};
    let port = tokio_serial::new(path, baud).open_native_async().map_err(|e| {
        let kind = std::io::Error::from(e.clone()).kind();
        if kind == std::io::ErrorKind::NotFound || !Path::new(path).exists() {
            Observation::fail(
                "port_missing",
                format!("{path} does not exist; check the cable, the USB adapter and the port name"),
            )
        } else if kind == std::io::ErrorKind::PermissionDenied {
            Observation::fail(
                "permission_denied",
                format!("cannot open {path}: permission denied; add the telagent user to group dialout"),
            )
        } else {
            Observation::fail("open_error", format!("cannot open {path}: {e}"))
        }
    })?;
    // Whatever the modem sent while the port was closed is no answer to us.
    let _ = port.clear(tokio_serial::ClearBuffer::Input);
    Ok(port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fax_classes() {
        assert!(has_fax_class("0,1,1.0"));
        assert!(has_fax_class("(0-2,2.0)"));
        assert!(has_fax_class("0,2.0"));
        assert!(!has_fax_class("0"));
        assert!(!has_fax_class("0,8"));
    }

    #[test]
    fn volts() {
        assert_eq!(parse_volts("48.2"), Some(48.2));
        assert_eq!(parse_volts("Line voltage: -48 V"), Some(48.0));
        assert_eq!(parse_volts("no number"), None);
    }

    #[test]
    fn device_name_follows_symlinks() {
        let dir = std::env::temp_dir().join(format!("telagent-dev-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("ttyUSB7");
        std::fs::write(&target, "").unwrap();
        let link = dir.join("usb-Modem_Co_Fax-if00");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let text = format!("[[modem]]\nname = \"m\"\nport = \"{}\"\n", link.display());
        let c = crate::config::parse(&text, "t.toml").unwrap();
        assert_eq!(c.modem[0].device_name(), "ttyUSB7");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
