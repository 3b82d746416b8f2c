//! `canary`: a real one-page fax, sent through the fax server every `interval` (default
//! 1h, at least 5m) and followed to its end: proof that faxes get through, end to end.
//!
//! With `via = "hylafax"` the page goes out with HylaFAX's `sendfax` (one dial, one try;
//! pinned to `modem` when set, job tag `telagent-canary-…`), its job is followed in the
//! spool (`sendq`, then `doneq`) and its `SEND` record read from xferfaxlog: rate, pages,
//! time on the line, the remote CSI, the reason. With `receive`, the page must also
//! arrive: a successful `RECV` on the receiving line with the same page count and the
//! expected CSI, within `receive.timeout`, read from its xferfaxlog on this host or asked of
//! the receiving server's agent (`GET /v1/attempts`); only then is the canary ok. Without it, ok
//! means the fax server reports the fax delivered. The page carries the check's name, a
//! sequence number and the time it was sent.
//!
//! - **ok**: delivered (and received).
//! - **degraded**: `slow`: more than `max_duration` on the line, or trained below
//!   `min_rate`; `skipped`: no canary could be sent yet (every line busy, or another canary
//!   in flight on the line): a skip after a verdict repeats that verdict.
//! - **fail**: `send_failed` (the failure class and HylaFAX's reason in the detail),
//!   `not_received` (delivered, but no matching reception), `queue_stuck` (the job never
//!   left the queue within `send_timeout`; it is removed), `submit_failed` (sendfax
//!   refused the job), `no_modem` (no HylaFAX status file for the modem: a wrong spool or
//!   modem name).
//!
//! Never more than one canary in flight per line. The canary's own SEND record is counted
//! apart (`kind="canary"` in `telagent_fax_attempts_total`) and left out of the totals.
//! Metrics: `telagent_canary_duration_seconds`, `telagent_canary_pages`,
//! `telagent_canary_rate_bps`, `telagent_canary_last_success_timestamp_seconds`,
//! `telagent_canary_sequence`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde::Deserialize;

use super::{Check, Observation};
use crate::serial::hylafax;
use crate::traffic::outcome::{self, Class};
use crate::traffic::xferfaxlog;
use crate::vocab::check_config;

/// Shortest interval between canaries.
pub const MIN_INTERVAL: Duration = Duration::from_secs(300);
/// Bytes of an xferfaxlog's end searched for a record.
const TAIL: u64 = 1 << 20;
/// How long the SEND record may lag behind the job's end.
const RECORD_WAIT: Duration = Duration::from_secs(15);

check_config! {
    /// `[[canary]]`: a test fax, end to end.
    CanaryConfig {
        /// How the fax is sent: `hylafax`.
        via: String,
        /// The number dialled (as `sendfax -d` takes it).
        number: String,
        /// hfaxd to submit to: `host` or `host:port`.
        #[serde(default = "default_host")]
        host: String,
        /// The HylaFAX spool: its `sendq`, `doneq`, `status` and `log/xferfaxlog`.
        #[serde(default = "default_spool")]
        spool: PathBuf,
        /// The modem to send from, as HylaFAX names it (`ttyS0`); default any.
        #[serde(default)]
        modem: Option<String>,
        /// The transfer log with the SEND record; default `<spool>/log/xferfaxlog`.
        #[serde(default)]
        xferfaxlog: Option<PathBuf>,
        /// Longest the job may take from submission to its end.
        #[serde(default = "default_send_timeout", with = "crate::vocab::duration")]
        send_timeout: Duration,
        /// More time on the line than this is `slow`.
        #[serde(default = "default_max_duration", with = "crate::vocab::duration")]
        max_duration: Duration,
        /// A lower signalling rate (bit/s) is `slow`; 0: off.
        #[serde(default = "default_min_rate")]
        min_rate: u32,
        /// The receiving end, when a line of this host takes the canary.
        #[serde(default)]
        receive: Option<ReceiveConfig>,
    }
}

/// `receive = {...}`: where the canary must arrive: an xferfaxlog on this host, or the
/// agent of the receiving server (its `GET /v1/attempts`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiveConfig {
    /// The receiving server's xferfaxlog, on this host.
    #[serde(default)]
    pub xferfaxlog: Option<PathBuf>,
    /// The receiving server's agent (`http://fax2:9847`), which tails its xferfaxlog.
    #[serde(default)]
    pub agent: Option<String>,
    /// The receiving modem (HylaFAX's name); default any.
    #[serde(default)]
    pub modem: Option<String>,
    /// The TSI the page must arrive with (the sending modem's LocalIdentifier).
    #[serde(default)]
    pub csi: Option<String>,
    /// Longest wait for the RECV record after the send ended.
    #[serde(default = "default_receive_timeout", with = "crate::vocab::duration")]
    pub timeout: Duration,
}

fn default_host() -> String {
    "localhost".into()
}
fn default_spool() -> PathBuf {
    PathBuf::from("/var/spool/hylafax")
}
fn default_send_timeout() -> Duration {
    Duration::from_secs(600)
}
fn default_max_duration() -> Duration {
    Duration::from_secs(120)
}
fn default_min_rate() -> u32 {
    9600
}
fn default_receive_timeout() -> Duration {
    Duration::from_secs(120)
}

impl CanaryConfig {
    pub(crate) fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.via != "hylafax" {
            return Err((
                "via",
                format!(
                    "`{}` is not a way this agent sends: use \"hylafax\"",
                    self.via
                ),
            ));
        }
        if self.number.is_empty()
            || self.number.len() > 64
            || self.number.starts_with('-')
            || !self
                .number
                .chars()
                .all(|c| c.is_ascii_digit() || " +-().*#,".contains(c))
        {
            return Err((
                "number",
                "must be 1 to 64 characters of digits, spaces and + - ( ) . * # , (not starting with -)".into(),
            ));
        }
        let host_ok = |h: &str| {
            !h.is_empty()
                && !h.starts_with('-')
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        };
        if !host_ok(&self.host) {
            return Err((
                "host",
                "must be a host or host:port (letters, digits, . - : [ ])".into(),
            ));
        }
        if !self.spool.is_absolute() {
            return Err(("spool", "must be an absolute path".into()));
        }
        let receive = self.receive.as_ref();
        for m in [self.modem.as_ref(), receive.and_then(|r| r.modem.as_ref())]
            .into_iter()
            .flatten()
        {
            if !crate::vocab::valid_name(m) || m.starts_with('-') {
                return Err(("modem", crate::vocab::name_rule("modem")));
            }
        }
        if self.send_timeout < Duration::from_secs(30) {
            return Err(("send_timeout", "must be at least 30s".into()));
        }
        if self.max_duration < Duration::from_secs(1) {
            return Err(("max_duration", "must be at least 1s".into()));
        }
        if self.min_rate > 33_600 {
            return Err((
                "min_rate",
                "must be at most 33600 bit/s (the fastest fax rate; 0: off)".into(),
            ));
        }
        if let Some(r) = receive {
            match (&r.xferfaxlog, &r.agent) {
                (Some(x), None) if x.is_absolute() => {}
                (Some(_), None) => {
                    return Err(("receive", "xferfaxlog must be an absolute path".into()))
                }
                (None, Some(a)) if a.starts_with("http://") || a.starts_with("https://") => {
                    if r.modem.is_none() {
                        return Err((
                            "receive",
                            "agent needs modem: the receiving line, as that agent names it".into(),
                        ));
                    }
                }
                _ => {
                    return Err((
                        "receive",
                        "give either xferfaxlog (a path on this host) or agent (http://host:port of the receiving server's agent)".into(),
                    ))
                }
            }
            if r.modem.is_some() && r.modem == self.modem {
                return Err((
                    "receive",
                    "modem is the sending modem: a line cannot receive its own call".into(),
                ));
            }
            // T.30 identities are at most 20 characters.
            if let Some(csi) = &r.csi {
                if csi.trim().is_empty()
                    || csi.chars().count() > 20
                    || csi.chars().any(|c| c.is_control() || c == '"')
                {
                    return Err((
                        "receive",
                        "csi must be 1 to 20 printable characters without quotes (T.30 identities are at most 20)".into(),
                    ));
                }
            }
            if r.timeout < Duration::from_secs(10) {
                return Err(("receive", "timeout must be at least 10s".into()));
            }
        }
        Ok(())
    }

    /// A canary must be able to end before the next one, and within its timeout.
    pub(crate) fn check_timeouts(&self, interval: Duration) -> Result<(), (&'static str, String)> {
        let longest = self.longest();
        let took = humantime::format_duration(longest);
        if longest >= interval {
            return Err((
                "send_timeout",
                format!(
                    "a canary can take {took} (send_timeout, receive.timeout and 45s for its record): shorten them or raise interval ({})",
                    humantime::format_duration(interval)
                ),
            ));
        }
        if self.timeout.is_some_and(|t| t < longest) {
            return Err((
                "timeout",
                format!("a canary can take {took} (send_timeout, receive.timeout and 45s for its record): leave timeout out or make it at least that"),
            ));
        }
        Ok(())
    }

    /// The longest a canary can take: sending, the record, receiving.
    pub fn longest(&self) -> Duration {
        self.send_timeout
            + RECORD_WAIT
            + self.receive.as_ref().map_or(Duration::ZERO, |r| r.timeout)
            + Duration::from_secs(30)
    }

    fn log(&self) -> PathBuf {
        self.xferfaxlog
            .clone()
            .unwrap_or_else(|| self.spool.join("log/xferfaxlog"))
    }
}

/// Lines with a canary in flight, process-wide.
static IN_FLIGHT: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// A line taken for one canary; released when dropped (also when the probe is dropped).
struct Flight(String);

impl Flight {
    fn take(line: String) -> Option<Flight> {
        let mut set = IN_FLIGHT
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        set.insert(line.clone()).then(|| Flight(line))
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        IN_FLIGHT
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.0);
    }
}

pub struct CanaryCheck {
    config: CanaryConfig,
    check: String,
    server: String,
    seq: AtomicU64,
    /// The last verdict (repeated by a skip) and the last success.
    last: Mutex<(Option<Observation>, Option<SystemTime>)>,
    /// RECV records already matched (commid): a page is matched once.
    matched: Mutex<BTreeSet<String>>,
}

impl CanaryCheck {
    pub fn new(config: CanaryConfig, ctx: &super::Context) -> Self {
        CanaryCheck {
            check: config.name.clone(),
            config,
            server: ctx.server.clone(),
            seq: AtomicU64::new(1),
            last: Mutex::new((None, None)),
            matched: Mutex::new(BTreeSet::new()),
        }
    }
}

/// A HylaFAX job file (`sendq/qN`, `doneq/qN`): `key:value` lines.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Job {
    /// 1 suspended ... 6 active, 7 done, 8 failed.
    pub state: u32,
    pub status: String,
    pub npages: u32,
    pub totdials: u32,
    pub commid: String,
}

pub fn parse_job(text: &str) -> Job {
    let mut j = Job::default();
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        match k.trim() {
            "state" => j.state = v.parse().unwrap_or(0),
            "status" => j.status = v.to_string(),
            "npages" => j.npages = v.parse().unwrap_or(0),
            "totdials" => j.totdials = v.parse().unwrap_or(0),
            "commid" => j.commid = v.to_string(),
            _ => {}
        }
    }
    j
}

/// What an xferfaxlog record of the canary says.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub time: i64,
    pub modem: String,
    pub commid: String,
    pub remote_id: String,
    pub rate: Option<u32>,
    pub pages: u32,
    pub conntime: u32,
    pub reason: String,
}

/// The records of `kind` at the end of an xferfaxlog (its last [`TAIL`] bytes) that
/// `keep` accepts, oldest first.
pub fn records(path: &Path, kind: &str, keep: impl Fn(&[String]) -> bool) -> Vec<Record> {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = crate::files::open_regular(path) else {
        return Vec::new();
    };
    let len = f.metadata().map_or(0, |m| m.len());
    let mut buf = Vec::new();
    if f.seek(SeekFrom::Start(len.saturating_sub(TAIL))).is_err()
        || f.take(TAIL).read_to_end(&mut buf).is_err()
    {
        return Vec::new();
    }
    String::from_utf8_lossy(&buf)
        .lines()
        .filter_map(|l| {
            let f = xferfaxlog::fields(l);
            if f.len() < 14 || f[1] != kind || !keep(&f) {
                return None;
            }
            Some(Record {
                time: xferfaxlog::parse_date(&f[0])?,
                modem: f[3].clone(),
                commid: f[2].clone(),
                remote_id: f[8].clone(),
                rate: f[9]
                    .trim()
                    .parse()
                    .ok()
                    .and_then(|p| outcome::decode_params(p).0),
                pages: f[10].trim().parse().ok()?,
                conntime: xferfaxlog::parse_hms(&f[12]).unwrap_or(0),
                reason: f[13].clone(),
            })
        })
        .collect()
}

/// Whether a modem may take a canary now, by HylaFAX's status file.
fn idle(spool: &Path, modem: &str) -> bool {
    hylafax::read_status(spool, modem).is_ok_and(|(line, _)| {
        hylafax::judge(&line).0 == super::Status::Ok && !hylafax::in_session(&line)
    })
}

/// The modems of a spool, by their status files.
fn modems(spool: &Path) -> Vec<String> {
    std::fs::read_dir(spool.join("status"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| !n.ends_with(".info"))
                .collect()
        })
        .unwrap_or_default()
}

impl CanaryCheck {
    /// A skip: the last verdict again, or `skipped` before the first.
    fn skipped(&self, why: &str) -> Observation {
        let last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match &last.0 {
            Some(o) => Observation {
                detail: format!("{why}: canary skipped; last verdict: {}", o.detail),
                ..o.clone()
            },
            None => Observation::degraded(
                "skipped",
                format!("{why}: no canary could be sent yet; trying again next interval"),
            ),
        }
    }

    fn with_values(&self, o: Observation, rec: Option<&Record>, seq: u64) -> Observation {
        let mut o = o.with_value(
            "sequence",
            "Sequence number of the last canary sent.",
            seq as f64,
        );
        if let Some(r) = rec {
            o = o
                .with_value(
                    "duration_seconds",
                    "Time the last canary spent on the line (xferfaxlog conntime).",
                    f64::from(r.conntime),
                )
                .with_value("pages", "Pages the last canary moved.", f64::from(r.pages));
            if let Some(rate) = r.rate {
                o = o.with_value(
                    "rate_bps",
                    "Signalling rate the last canary trained at, bit/s.",
                    f64::from(rate),
                );
            }
        }
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if o.status == super::Status::Ok {
            last.1 = Some(SystemTime::now());
        }
        if let Some(t) = last.1 {
            o = o.with_value(
                "last_success_timestamp_seconds",
                "When a canary last got through (since this agent started), seconds since the Unix epoch.",
                crate::metrics::seconds(t),
            );
        }
        last.0 = Some(o.clone());
        o
    }

    async fn submit(&self, seq: u64, page: &Path) -> Result<String, String> {
        let host = match &self.config.modem {
            Some(m) => format!("{m}@{}", self.config.host),
            None => self.config.host.clone(),
        };
        let tag = format!("{}-{}-{seq}", xferfaxlog::CANARY_TAG, self.check);
        let mut cmd = tokio::process::Command::new("sendfax");
        cmd.args([
            "-n",
            "-T",
            "1",
            "-t",
            "1",
            "-i",
            &tag,
            "-h",
            &host,
            "-d",
            &self.config.number,
        ])
        .arg(page)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
        let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
            .await
            .map_err(|_| "sendfax did not end within 60 s".to_string())?
            .map_err(|e| format!("cannot run sendfax ({e}); install hylafax-client"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let id = text
            .split("request id is ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()));
        match (out.status.success(), id) {
            (true, Some(id)) => Ok(id.to_string()),
            _ => Err(format!(
                "sendfax refused the canary: {}{}",
                super::excerpt(&out.stdout, 200),
                super::excerpt(&out.stderr, 200)
            )),
        }
    }

    async fn remove(&self, id: &str) {
        let mut cmd = tokio::process::Command::new("faxrm");
        cmd.args(["-h", &self.config.host, id])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        let _ = tokio::time::timeout(Duration::from_secs(30), cmd.status()).await;
    }

    /// Follows job `id` to its end: the done job, or why it did not end.
    async fn follow(&self, id: &str) -> Result<Job, Observation> {
        let deadline = tokio::time::Instant::now() + self.config.send_timeout;
        let (sendq, doneq) = (
            self.config.spool.join("sendq").join(format!("q{id}")),
            self.config.spool.join("doneq").join(format!("q{id}")),
        );
        let mut queued = Job::default();
        loop {
            if let Ok(t) = crate::files::read_text(&doneq, 64 << 10) {
                let j = parse_job(&t);
                if j.state >= 7 {
                    return Ok(j);
                }
            }
            if let Ok(t) = crate::files::read_text(&sendq, 64 << 10) {
                queued = parse_job(&t);
            }
            if tokio::time::Instant::now() >= deadline {
                self.remove(id).await;
                let took = humantime::format_duration(self.config.send_timeout);
                return Err(if queued.totdials == 0 && queued.state != 6 {
                    Observation::fail(
                        "queue_stuck",
                        format!("job {id} never left the queue in {took} (state {}): is faxq running and the modem free? The job was removed", queued.state),
                    )
                } else {
                    Observation::fail(
                        "send_failed",
                        format!("timeout: job {id} did not end within {took} ({} dials); the job was removed", queued.totdials),
                    )
                });
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The job's SEND record, once faxsend has written it.
    async fn send_record(&self, id: &str) -> Option<Record> {
        let deadline = tokio::time::Instant::now() + RECORD_WAIT;
        let log = self.config.log();
        loop {
            let l = log.clone();
            let job = id.to_string();
            let found = tokio::task::spawn_blocking(move || {
                records(&l, "SEND", |f| {
                    f[4] == job && f[5].starts_with(xferfaxlog::CANARY_TAG)
                })
                .pop()
            })
            .await
            .ok()
            .flatten();
            if found.is_some() || tokio::time::Instant::now() >= deadline {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The receptions the canary may be: from the xferfaxlog, or from the receiving agent.
    async fn receptions(&self, r: &ReceiveConfig, since: i64) -> Result<Vec<Record>, String> {
        if let Some(log) = &r.xferfaxlog {
            let (log, rc) = (log.clone(), r.clone());
            return tokio::task::spawn_blocking(move || {
                records(&log, "RECV", |f| {
                    rc.modem.as_ref().is_none_or(|m| &f[3] == m)
                        && rc.csi.as_ref().is_none_or(|c| f[8].trim() == c.trim())
                })
            })
            .await
            .map_err(|e| e.to_string());
        }
        let base = r.agent.as_deref().unwrap_or_default().trim_end_matches('/');
        let url = format!(
            "{base}/v1/attempts?since={since}&direction=received&line={}",
            crate::http_client::encode(r.modem.as_deref().unwrap_or_default())
        );
        let resp = tokio::time::timeout(
            Duration::from_secs(5),
            crate::http_client::get(&url, 4 << 20),
        )
        .await
        .map_err(|_| format!("{base} did not answer within 5 s"))?
        .map_err(|e| format!("{base}: {e}"))?;
        if resp.status != 200 {
            return Err(format!("{url} answered {}", resp.status));
        }
        #[derive(Deserialize)]
        struct Answer {
            attempts: Vec<crate::traffic::quality::AttemptRow>,
        }
        let a: Answer = serde_json::from_slice(&resp.body)
            .map_err(|e| format!("{url} sent JSON this version cannot read: {e}"))?;
        Ok(a.attempts
            .into_iter()
            .filter(|x| r.csi.as_ref().is_none_or(|c| x.remote.trim() == c.trim()))
            .map(|x| Record {
                time: x.time,
                modem: x.line,
                commid: format!("{}:{}:{}", x.time, x.remote, x.pages),
                remote_id: x.remote,
                rate: x.rate,
                pages: x.pages,
                conntime: 0,
                reason: x.class.map_or(String::new(), |c| c.as_str().to_string()),
            })
            .collect())
    }

    /// The RECV of the canary: same pages, expected TSI, not before `since`, a success.
    async fn received(&self, r: &ReceiveConfig, pages: u32, since: i64) -> Result<Record, String> {
        let deadline = tokio::time::Instant::now() + r.timeout;
        loop {
            let last_error = match self.receptions(r, since).await {
                Ok(found) => {
                    let mut seen = self
                        .matched
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    let hit = found.into_iter().rev().find(|x| {
                        x.time >= since
                            && x.pages == pages
                            && x.reason.trim().is_empty()
                            && !seen.contains(&x.commid)
                    });
                    if let Some(h) = hit {
                        seen.insert(h.commid.clone());
                        return Ok(h);
                    }
                    None
                }
                Err(e) => Some(e),
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(last_error.unwrap_or_default());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn run(&self) -> Observation {
        let spool = &self.config.spool;
        let lines: Vec<String> = match &self.config.modem {
            Some(m) => vec![m.clone()],
            None => modems(spool),
        };
        let flight_key = |m: &str| format!("{}:{m}", spool.display());
        // Another canary on the line (or, unpinned, on any line) waits for its turn.
        let flights: Option<Vec<Flight>> = if self.config.modem.is_some() {
            lines.iter().map(|m| Flight::take(flight_key(m))).collect()
        } else {
            Flight::take(flight_key("any")).map(|f| vec![f])
        };
        let Some(_flights) = flights else {
            return self.skipped("another canary is in flight on this line");
        };
        if !lines.iter().any(|m| spool.join("status").join(m).is_file()) {
            return self.with_values(
                Observation::fail(
                    "no_modem",
                    format!(
                        "no HylaFAX status file for {} in {}: is spool the HylaFAX spool, and modem the name HylaFAX gives the device (ttyS0 for /dev/ttyS0)?",
                        if lines.is_empty() { "any modem".to_string() } else { lines.join(", ") },
                        spool.join("status").display()
                    ),
                ),
                None,
                0,
            );
        }
        if !lines.iter().any(|m| idle(spool, m)) {
            return self.skipped(&format!(
                "every line is busy or not ready ({})",
                lines.join(", ")
            ));
        }
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let now = crate::traffic::events::unix_now();
        let submitted = xferfaxlog_minute(now);
        let page = Page(std::env::temp_dir().join(format!(
            "telagent-canary-{}-{}-{seq}.txt",
            std::process::id(),
            self.check
        )));
        let text = format!(
            "telagent canary\n\nserver {}\ncheck {}\nsequence {seq}\nsent {}\n",
            self.server,
            self.check,
            humantime::format_rfc3339_seconds(SystemTime::now())
        );
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&page.0)
            .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()));
        if let Err(e) = written {
            return self.with_values(
                Observation::fail(
                    "submit_failed",
                    format!("cannot write the canary page {}: {e}", page.0.display()),
                ),
                None,
                seq,
            );
        }
        let id = match self.submit(seq, &page.0).await {
            Ok(id) => id,
            Err(e) => return self.with_values(Observation::fail("submit_failed", e), None, seq),
        };
        let job = match self.follow(&id).await {
            Ok(j) => j,
            Err(o) => return self.with_values(o, None, seq),
        };
        let rec = self.send_record(&id).await;
        if job.state == 8 || !job.status.trim().is_empty() {
            let reason = rec
                .as_ref()
                .map_or(job.status.clone(), |r| r.reason.clone());
            let connected = rec.as_ref().map(|r| r.conntime > 0);
            let class = outcome::classify(&reason, connected).unwrap_or(Class::Other);
            return self.with_values(
                Observation::fail(
                    "send_failed",
                    format!(
                        "{}: job {id} to {} failed: {}",
                        class.as_str(),
                        self.config.number,
                        reason.trim()
                    ),
                ),
                rec.as_ref(),
                seq,
            );
        }
        let Some(rec) = rec else {
            return self.with_values(
                Observation::degraded(
                    "no_record",
                    format!("job {id} was delivered, but its SEND record is not in {} (is it the spool's transfer log?)", self.config.log().display()),
                ),
                None,
                seq,
            );
        };
        let mut said = format!(
            "job {id} delivered to {} (\"{}\"): {} page(s) in {} s at {} bit/s",
            self.config.number,
            rec.remote_id,
            rec.pages,
            rec.conntime,
            rec.rate.map_or("?".into(), |r| r.to_string())
        );
        if let Some(r) = &self.config.receive {
            match self.received(r, rec.pages, submitted).await {
                Ok(got) => said.push_str(&format!(
                    "; received on {} from \"{}\" ({} page(s))",
                    got.modem, got.remote_id, got.pages
                )),
                Err(why) => {
                    let place = r.xferfaxlog.as_ref().map_or_else(
                        || r.agent.clone().unwrap_or_default(),
                        |x| x.display().to_string(),
                    );
                    let why = if why.is_empty() {
                        String::new()
                    } else {
                        format!(" ({why})")
                    };
                    return self.with_values(
                        Observation::fail(
                            "not_received",
                            format!(
                                "{said}, but no reception of {} page(s){} arrived in {place} within {}{why}",
                                rec.pages,
                                r.csi
                                    .as_ref()
                                    .map_or(String::new(), |c| format!(" from \"{c}\"")),
                                humantime::format_duration(r.timeout)
                            ),
                        ),
                        Some(&rec),
                        seq,
                    );
                }
            }
        }
        let slow_rate =
            self.config.min_rate > 0 && rec.rate.is_some_and(|r| r < self.config.min_rate);
        let o = if u64::from(rec.conntime) > self.config.max_duration.as_secs() || slow_rate {
            Observation::degraded(
                "slow",
                format!(
                    "{said}; slower than max_duration {} / min_rate {} bit/s",
                    humantime::format_duration(self.config.max_duration),
                    self.config.min_rate
                ),
            )
        } else {
            Observation::ok(said)
        };
        self.with_values(o, Some(&rec), seq)
    }
}

/// The page file of one canary, removed when dropped.
struct Page(PathBuf);

impl Drop for Page {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The start of the minute of `t`: xferfaxlog's dates have minutes only.
fn xferfaxlog_minute(t: i64) -> i64 {
    t - t.rem_euclid(60)
}

#[async_trait]
impl Check for CanaryCheck {
    fn kind(&self) -> &'static str {
        "canary"
    }

    fn error_types(&self) -> &'static [&'static str] {
        &[
            "send_failed",
            "not_received",
            "queue_stuck",
            "submit_failed",
            "slow",
            "skipped",
            "no_record",
            "no_modem",
        ]
    }

    async fn probe(&self) -> Observation {
        self.run().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_files_are_read_as_hylafax_writes_them() {
        let j = parse_job(
            "state:8\nstatus:No carrier detected\nnpages:0\ntotdials:1\ncommid:000000005\nbogus\n",
        );
        assert_eq!(
            j,
            Job {
                state: 8,
                status: "No carrier detected".into(),
                npages: 0,
                totdials: 1,
                commid: "000000005".into()
            }
        );
        assert_eq!(parse_job("\u{0}garbage:::\n"), Job::default());
    }

    #[test]
    fn records_are_found_at_the_end_of_the_log() {
        let dir = std::env::temp_dir().join(format!("telagent-canary-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("xferfaxlog");
        // As the lab's HylaFAX 6.0.7 wrote them.
        std::fs::write(
            &log,
            "12/01/26 19:32\tRECV\t000000004\t_tmp_lab_ttyB\trecvq/fax000000002.tif\t\"\"\tfax\t\"+1.800.555.1002\"\t\"ModemA\"\t2220072\t1\t0:00:13\t0:00:13\t\"\"\t\"\"\t\"\"\t\"\"\t\"\"\t\"00 44 1F 22\"\n\
             12/01/26 19:32\tSEND\t000000003\t_tmp_lab_ttyA\t2\t\"telagent-canary-c-1\"\troot@vm\t\"5551002\"\t\"ModemB\"\t2220072\t1\t0:00:18\t0:00:15\t\"\"\t\"\"\t\"\"\t\"\"\t\"root\"\t\"00 44 1F 22\"\n",
        )
        .unwrap();
        let send = records(&log, "SEND", |f| f[4] == "2");
        assert_eq!(send.len(), 1);
        assert_eq!(
            (
                send[0].rate,
                send[0].pages,
                send[0].conntime,
                send[0].remote_id.as_str()
            ),
            (Some(14400), 1, 15, "ModemB")
        );
        let recv = records(&log, "RECV", |f| f[8] == "ModemA");
        assert_eq!(
            (recv[0].modem.as_str(), recv[0].commid.as_str()),
            ("_tmp_lab_ttyB", "000000004")
        );
        assert!(records(&log, "SEND", |f| f[4] == "3").is_empty());
        assert!(records(&dir.join("none"), "SEND", |_| true).is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_spool_without_the_modem_is_said_so() {
        let spool =
            std::env::temp_dir().join(format!("telagent-canary-spool-{}", std::process::id()));
        std::fs::create_dir_all(spool.join("status")).unwrap();
        let config = crate::config::parse(
            &format!(
                "[[canary]]\nname = \"c\"\nvia = \"hylafax\"\nnumber = \"5551002\"\nspool = \"{}\"\nmodem = \"ttyS9\"\n",
                spool.display()
            ),
            "t.toml",
        )
        .unwrap()
        .canary
        .remove(0);
        let check = CanaryCheck::new(config, &super::super::Context::standalone("fax1"));
        let o = check.probe().await;
        assert_eq!(o.error_type, Some("no_modem"), "{}", o.detail);
        assert!(o.detail.contains("ttyS9"), "{}", o.detail);
        std::fs::remove_dir_all(&spool).unwrap();
    }

    #[test]
    fn one_canary_per_line() {
        let a = Flight::take("s:ttyA".into()).unwrap();
        assert!(Flight::take("s:ttyA".into()).is_none());
        assert!(Flight::take("s:ttyB".into()).is_some());
        drop(a);
        assert!(Flight::take("s:ttyA".into()).is_some());
    }
}
