//! `line_quality`: whether faxes get through a line, judged from its attempts (HylaFAX's
//! xferfaxlog records and posted events, as the traffic store committed them), not from
//! whether its modem answers.
//!
//! Each direction (`sent`, `received`, or both) is judged on its own, over the last
//! `window` attempts and over the attempts of the last `period`; a judgement needs at
//! least `min_attempts` attempts.
//!
//! - **ok**: the success ratio is at least `min_success` in both views (or there are too
//!   few attempts to judge: the detail says so).
//! - **degraded**: `poor_success`: the ratio fell below `min_success` (the detail names the
//!   top failure class and the ratio); `low_rate`: every attempt of the window that reports
//!   a signalling rate trained at `low_rate` bit/s or less.
//! - **fail**: `no_store`: the traffic store is not open, so nothing can be judged.
//!
//! A line whose quality drops notifies `telagentLineQualityLow`, and `telagentLineQualityOk`
//! once it recovers. Metrics: the check's `telagent_line_quality_success_ratio{direction}`
//! over the window; per line, whatever its checks, `telagent_fax_success_ratio`,
//! `telagent_fax_attempts_total`, `telagent_fax_signalling_rate_bps` and
//! `telagent_fax_ecm_attempts_total` (see the README's metrics list).

use std::sync::Arc;

use async_trait::async_trait;

use super::{Check, Observation, Value};
use crate::traffic::outcome::Class;
use crate::traffic::quality::{self, Recent};
use crate::traffic::{Direction, Stats};
use crate::vocab::check_config;

check_config! {
    /// `[[line_quality]]`: the success of a fax line's attempts.
    LineQualityConfig {
        /// The line as the sources name it: xferfaxlog's modem field (HylaFAX's device id,
        /// `ttyS0`), or an event's `line`.
        line: String,
        /// The server the attempts are counted for; default `agent.server`.
        #[serde(default)]
        server: Option<String>,
        /// `sent`, `received` or `both` (each judged on its own).
        #[serde(default = "default_direction")]
        direction: String,
        /// Attempts judged: the last this many (at most 256).
        #[serde(default = "default_window")]
        window: usize,
        /// Attempts of the last `period` are judged too.
        #[serde(default = "default_period", with = "crate::vocab::duration")]
        period: std::time::Duration,
        /// Lowest success ratio that is still ok.
        #[serde(default = "default_min_success")]
        min_success: f64,
        /// Fewest attempts a judgement needs.
        #[serde(default = "default_min_attempts")]
        min_attempts: usize,
        /// A line whose attempts all trained at this rate or lower is `low_rate`; 0: off.
        #[serde(default = "default_low_rate")]
        low_rate: u32,
    }
}

fn default_direction() -> String {
    "both".into()
}
fn default_window() -> usize {
    32
}
fn default_period() -> std::time::Duration {
    std::time::Duration::from_secs(3600)
}
fn default_min_success() -> f64 {
    0.7
}
fn default_min_attempts() -> usize {
    8
}
fn default_low_rate() -> u32 {
    4800
}

impl LineQualityConfig {
    pub(crate) fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.line.is_empty()
            || self.line.len() > 64
            || self.line.chars().any(char::is_control)
            || self.line.trim() != self.line
        {
            return Err((
                "line",
                "must be 1 to 64 printable characters, as the sources name the line".into(),
            ));
        }
        if let Some(s) = &self.server {
            if !crate::vocab::valid_name(s) {
                return Err(("server", crate::vocab::name_rule("server name")));
            }
        }
        if self.low_rate > 33_600 {
            return Err((
                "low_rate",
                "must be at most 33600 bit/s (the fastest fax rate; 0: off)".into(),
            ));
        }
        if !matches!(self.direction.as_str(), "sent" | "received" | "both") {
            return Err((
                "direction",
                format!("`{}` is not sent, received or both", self.direction),
            ));
        }
        if !(1..=quality::RECENT).contains(&self.window) {
            return Err((
                "window",
                format!("must be 1 to {} attempts", quality::RECENT),
            ));
        }
        if self.min_attempts == 0 || self.min_attempts > self.window {
            return Err((
                "min_attempts",
                format!("must be 1 to window ({})", self.window),
            ));
        }
        if !(0.0..=1.0).contains(&self.min_success) || self.min_success.is_nan() {
            return Err(("min_success", "must be 0 to 1 (0.7 is 70 %)".into()));
        }
        if self.period < std::time::Duration::from_secs(60)
            || self.period > std::time::Duration::from_secs(30 * 86400)
        {
            return Err((
                "period",
                "must be 1m to 30d (older attempts are judged by the window)".into(),
            ));
        }
        Ok(())
    }

    fn directions(&self) -> &'static [Direction] {
        match self.direction.as_str() {
            "sent" => &[Direction::Sent],
            "received" => &[Direction::Received],
            _ => &[Direction::Sent, Direction::Received],
        }
    }
}

pub struct LineQualityCheck {
    config: LineQualityConfig,
    server: String,
    traffic: Arc<Stats>,
}

impl LineQualityCheck {
    pub fn new(config: LineQualityConfig, ctx: &super::Context) -> Self {
        LineQualityCheck {
            server: config.server.clone().unwrap_or_else(|| ctx.server.clone()),
            config,
            traffic: ctx.traffic.clone(),
        }
    }
}

/// The verdict on one set of attempts.
struct Verdict {
    attempts: usize,
    ok: usize,
    top: Option<(Class, u64)>,
}

fn verdict<'a>(set: impl Iterator<Item = &'a Recent>) -> Verdict {
    let mut v = Verdict {
        attempts: 0,
        ok: 0,
        top: None,
    };
    let mut failures = std::collections::BTreeMap::new();
    for a in set {
        v.attempts += 1;
        match a.class {
            None => v.ok += 1,
            Some(c) => *failures.entry(c).or_insert(0u64) += 1,
        }
    }
    v.top = quality::top(&failures);
    v
}

impl Verdict {
    fn ratio(&self) -> f64 {
        self.ok as f64 / self.attempts.max(1) as f64
    }
}

/// Judges one direction's recent attempts at `now`.
fn judge(c: &LineQualityConfig, dir: Direction, recent: &[Recent], now: i64) -> Observation {
    let window = verdict(recent.iter().rev().take(c.window));
    let since = now - c.period.as_secs() as i64;
    let period = verdict(recent.iter().filter(|a| a.time > since));
    let pct = |v: &Verdict| format!("{}/{} ({:.0} %)", v.ok, v.attempts, v.ratio() * 100.0);
    let d = dir.as_str();
    let ratio_value = Value {
        name: "success_ratio",
        help: "Share of the check's last `window` attempts that succeeded, per direction.",
        labels: vec![("direction", d.to_string())],
        value: window.ratio(),
    };
    let with_ratio = |o: Observation| {
        if window.attempts > 0 {
            Observation {
                values: vec![ratio_value.clone()],
                ..o
            }
        } else {
            o
        }
    };
    for (what, v) in [("last", &window), ("past period", &period)] {
        if v.attempts >= c.min_attempts && v.ratio() < c.min_success {
            let top = v.top.map_or(String::new(), |(cl, n)| {
                format!("; top failure {} ({n})", cl.as_str())
            });
            return with_ratio(Observation::degraded(
                "poor_success",
                format!(
                    "{d}: {} succeeded over the {what} {} (min_success {:.0} %){top}",
                    pct(v),
                    if what == "last" {
                        format!("{} attempts", v.attempts)
                    } else {
                        humantime::format_duration(c.period).to_string()
                    },
                    c.min_success * 100.0
                ),
            ));
        }
    }
    let rates: Vec<u32> = recent
        .iter()
        .rev()
        .take(c.window)
        .filter_map(|a| a.rate)
        .collect();
    if c.low_rate > 0 && rates.len() >= c.min_attempts {
        let best = rates.iter().copied().max().unwrap_or(0);
        if best <= c.low_rate {
            return with_ratio(Observation::degraded(
                "low_rate",
                format!(
                    "{d}: the last {} attempts that trained never got above {best} bit/s (low_rate {}): check the line's noise and the modem's rate settings",
                    rates.len(),
                    c.low_rate
                ),
            ));
        }
    }
    if window.attempts < c.min_attempts {
        return with_ratio(Observation::ok(format!(
            "{d}: {} attempts, too few to judge (min_attempts {})",
            window.attempts, c.min_attempts
        )));
    }
    with_ratio(Observation::ok(format!(
        "{d}: {} succeeded over the last {} attempts",
        pct(&window),
        window.attempts
    )))
}

#[async_trait]
impl Check for LineQualityCheck {
    fn kind(&self) -> &'static str {
        "line_quality"
    }

    fn error_types(&self) -> &'static [&'static str] {
        &["poor_success", "low_rate", "no_store"]
    }

    async fn probe(&self) -> Observation {
        if !self.traffic.available() {
            return Observation::fail(
                "no_store",
                "the traffic store is not open (see /v1/status problems): the line's attempts cannot be judged",
            );
        }
        let now = crate::traffic::events::unix_now();
        let mut out: Option<Observation> = None;
        for dir in self.config.directions() {
            let key = (self.server.clone(), self.config.line.clone(), *dir);
            let recent: Vec<Recent> = self.traffic.with_quality(|q| {
                q.recent
                    .get(&key)
                    .map(|r| r.iter().copied().collect())
                    .unwrap_or_default()
            });
            let o = judge(&self.config, *dir, &recent, now);
            out = Some(match out {
                None => o,
                Some(prev) => {
                    let detail = format!("{}; {}", prev.detail, o.detail);
                    let w = prev.worse(o);
                    Observation { detail, ..w }
                }
            });
        }
        let mut o = out.unwrap_or_else(|| Observation::ok("no direction to judge"));
        o.detail = format!("line {}: {}", self.config.line, o.detail);
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> LineQualityConfig {
        crate::config::parse(
            "[[line_quality]]\nname = \"q\"\nline = \"ttyS0\"\n",
            "t.toml",
        )
        .unwrap()
        .line_quality
        .remove(0)
    }

    fn attempt(time: i64, class: Option<Class>, rate: Option<u32>) -> Recent {
        Recent { time, class, rate }
    }

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn a_one_second_check_needs_no_timeout_and_decides_at_once() {
        let c = crate::config::parse(
            "[[line_quality]]\nname = \"q\"\nline = \"ttyS0\"\ninterval = \"1s\"\n",
            "t.toml",
        )
        .unwrap();
        let s = c.checks()[0].1.schedule(&c.defaults);
        assert!(s.timeout < s.interval);
        assert_eq!((s.rise, s.fall), (1, 1));
    }

    #[test]
    fn a_line_whose_faxes_fail_is_degraded_with_its_top_class() {
        let c = config();
        let mut r: Vec<Recent> = (0..20)
            .map(|i| attempt(NOW - 7200 + i, None, Some(14400)))
            .collect();
        // 8 of the last 20 fail in phase B, 4 are busy: 8/20 ok.
        for (i, a) in r.iter_mut().rev().take(12).enumerate() {
            a.class = Some(if i < 8 {
                Class::TrainingFailed
            } else {
                Class::Busy
            });
        }
        let o = judge(&c, Direction::Sent, &r, NOW);
        assert_eq!(o.error_type, Some("poor_success"), "{}", o.detail);
        assert!(
            o.detail.contains("8/20 (40 %)") && o.detail.contains("training_failed (8)"),
            "{}",
            o.detail
        );
        assert_eq!(o.values[0].value, 0.4);
    }

    #[test]
    fn too_few_attempts_are_not_judged_and_recovery_is_ok() {
        let c = config();
        let few: Vec<Recent> = (0..7)
            .map(|i| attempt(NOW - i, Some(Class::Busy), None))
            .collect();
        let o = judge(&c, Direction::Sent, &few, NOW);
        assert_eq!(o.status, crate::checks::Status::Ok);
        assert!(o.detail.contains("too few to judge"), "{}", o.detail);
        // 10 failures then 30 successes, all older than the period: the window sees 30 ok
        // of the last 32.
        let mut r: Vec<Recent> = (0..10)
            .map(|i| attempt(NOW - 9000 + i, Some(Class::NoCarrier), Some(9600)))
            .collect();
        r.extend((0..30).map(|i| attempt(NOW - 8000 + i, None, Some(9600))));
        let o = judge(&c, Direction::Sent, &r, NOW);
        assert_eq!(o.status, crate::checks::Status::Ok, "{}", o.detail);
        assert!(o.detail.contains("30/32"), "{}", o.detail);
    }

    #[test]
    fn the_last_hour_is_judged_beside_the_window() {
        let c = config();
        // 40 old successes, then 8 failures in the last hour: the window has 24/32 = 75 %
        // (ok), the hour 0/8.
        let mut r: Vec<Recent> = (0..40)
            .map(|i| attempt(NOW - 9000 + i, None, None))
            .collect();
        r.extend((0..8).map(|i| attempt(NOW - 60 + i, Some(Class::NoAnswer), None)));
        let o = judge(&c, Direction::Received, &r, NOW);
        assert_eq!(o.error_type, Some("poor_success"));
        assert!(o.detail.contains("past period 1h"), "{}", o.detail);
    }

    #[test]
    fn a_line_that_only_trains_slowly_is_low_rate() {
        let c = config();
        let r: Vec<Recent> = (0..10)
            .map(|i| {
                attempt(
                    NOW - 100 + i,
                    None,
                    Some(if i % 2 == 0 { 2400 } else { 4800 }),
                )
            })
            .collect();
        let o = judge(&c, Direction::Sent, &r, NOW);
        assert_eq!(o.error_type, Some("low_rate"), "{}", o.detail);
        let mut fast = r.clone();
        fast[3].rate = Some(9600);
        assert_eq!(
            judge(&c, Direction::Sent, &fast, NOW).status,
            crate::checks::Status::Ok
        );
    }

    /// Seeded: whatever the attempts, the check is degraded exactly when a view with
    /// enough attempts is below min_success, or all trained rates are low; never ok with a
    /// judged ratio below min_success.
    #[test]
    fn never_ok_below_min_success() {
        let c = config();
        let mut rng = crate::testing::Lcg(7);
        for _ in 0..2000 {
            let n = rng.below(80);
            let fail_share = rng.below(101);
            let r: Vec<Recent> = (0..n)
                .map(|i| {
                    let failed = rng.below(100) < fail_share;
                    attempt(
                        NOW - 7200 + (i as i64) * rng.below(200) as i64,
                        failed.then_some(crate::traffic::outcome::CLASSES[rng.below(9)]),
                        [None, Some(2400), Some(9600), Some(14400)][rng.below(4)],
                    )
                })
                .collect();
            let o = judge(&c, Direction::Sent, &r, NOW);
            let last: Vec<_> = r.iter().rev().take(c.window).collect();
            let ok = last.iter().filter(|a| a.class.is_none()).count();
            if last.len() >= c.min_attempts && (ok as f64) / (last.len() as f64) < c.min_success {
                assert_eq!(o.error_type, Some("poor_success"), "{n} {}", o.detail);
            }
            if o.status == crate::checks::Status::Ok {
                assert!(o.error_type.is_none());
            }
        }
    }
}
