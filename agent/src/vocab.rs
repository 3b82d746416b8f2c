//! The shared vocabulary of the configuration: the keys every check kind has (name,
//! schedule, hysteresis), `[defaults]`, what a name may be, and the serial lines' own
//! schedule. A leaf: it imports nothing of ours, so the check kinds and the config can
//! both use it without importing each other.

use std::time::Duration;

use serde::Deserialize;

/// Every duration of the config: humantime text ("1m 30s", "500ms"), as `humantime_serde`
/// reads and writes it, and at most [`duration::LONGEST`]: a longer one (a typo, a hostile
/// file) would overflow the clock when added to it.
pub mod duration {
    use std::time::Duration;

    use serde::{de::Error as _, Deserialize, Deserializer, Serialize, Serializer};

    /// A century (36500d): longer than any interval, timeout, window or retention means
    /// anything, and far from where arithmetic on the clock overflows.
    pub const LONGEST: Duration = Duration::from_secs(36_500 * 86_400);

    /// A duration, or an optional one.
    pub trait Checked {
        fn longest(&self) -> Duration;
    }

    impl Checked for Duration {
        fn longest(&self) -> Duration {
            *self
        }
    }

    impl Checked for Option<Duration> {
        fn longest(&self) -> Duration {
            self.unwrap_or_default()
        }
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: Checked,
        humantime_serde::Serde<T>: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        let v: T = humantime_serde::deserialize(d)?;
        if v.longest() > LONGEST {
            return Err(D::Error::custom(format!(
                "{} is longer than 100 years (36500d), the longest duration a setting takes",
                humantime::format_duration(v.longest())
            )));
        }
        Ok(v)
    }

    pub fn serialize<T, S>(v: &T, s: S) -> Result<S::Ok, S::Error>
    where
        for<'a> humantime_serde::Serde<&'a T>: Serialize,
        S: Serializer,
    {
        humantime_serde::serialize(v, s)
    }
}

/// `[defaults]`: schedule and hysteresis for every check.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// Time between two probes of a healthy target.
    #[serde(default = "default_interval", with = "crate::vocab::duration")]
    pub interval: Duration,
    /// Longest a probe may take; it is abandoned (and counted as `timeout`) after that.
    #[serde(default = "default_timeout", with = "crate::vocab::duration")]
    pub timeout: Duration,
    /// Time between probes while the last probe was not ok (capped at `interval`).
    #[serde(default = "default_failing_interval", with = "crate::vocab::duration")]
    pub failing_interval: Duration,
    /// Network checks (tcp, http, sip, gateway): after a failure that has not yet reached
    /// `fall`, the next probe comes this soon, until `fall` is reached or a probe succeeds
    /// (0s: off, probes keep `failing_interval`). Other kinds confirm only when the check
    /// sets its own; a serial line never does.
    #[serde(default = "default_confirm_interval", with = "crate::vocab::duration")]
    pub confirm_interval: Duration,
    /// Consecutive better observations needed to move to a better state.
    #[serde(default = "default_rise")]
    pub rise: u32,
    /// Consecutive worse observations needed to move to a worse state.
    #[serde(default = "default_fall")]
    pub fall: u32,
    /// Shortest time after a change before a target may return to a better state; a
    /// worse state is never delayed.
    #[serde(default, with = "crate::vocab::duration")]
    pub hold: Duration,
    /// Flap detection: the window over which state changes and transient failures are
    /// counted (0s: off).
    #[serde(default = "default_flap_window", with = "crate::vocab::duration")]
    pub flap_window: Duration,
    /// More state changes than this within `flap_window` is flapping.
    #[serde(default = "default_flap_transitions")]
    pub flap_transitions: u32,
    /// More than this share of transient failures (worse observations that never reached
    /// `fall`) within `flap_window` is flapping.
    #[serde(default = "default_flap_ratio")]
    pub flap_ratio: f64,
}

fn default_flap_window() -> Duration {
    Duration::from_secs(120)
}
fn default_flap_transitions() -> u32 {
    4
}
fn default_flap_ratio() -> f64 {
    0.3
}

fn default_interval() -> Duration {
    Duration::from_secs(10)
}
fn default_timeout() -> Duration {
    Duration::from_secs(3)
}
fn default_failing_interval() -> Duration {
    Duration::from_secs(2)
}
fn default_confirm_interval() -> Duration {
    Duration::from_millis(100)
}
fn default_rise() -> u32 {
    2
}
fn default_fall() -> u32 {
    3
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            interval: default_interval(),
            timeout: default_timeout(),
            failing_interval: default_failing_interval(),
            confirm_interval: default_confirm_interval(),
            rise: default_rise(),
            fall: default_fall(),
            hold: Duration::ZERO,
            flap_window: default_flap_window(),
            flap_transitions: default_flap_transitions(),
            flap_ratio: default_flap_ratio(),
        }
    }
}

/// A serial line's interval and timeout when the check sets none.
pub const SERIAL_INTERVAL: Duration = Duration::from_secs(300);
pub const SERIAL_TIMEOUT: Duration = Duration::from_secs(30);

/// Declares a check kind's config struct with the keys every kind shares (name, schedule,
/// hysteresis) ahead of its own, keeping `deny_unknown_fields` on the struct itself.
macro_rules! check_config {
    ($(#[$meta:meta])* $name:ident { $($(#[$fmeta:meta])* $field:ident : $ty:ty),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            /// Unique name of the check (the `check` label).
            pub name: String,
            /// Time between two probes; default `[defaults] interval`.
            #[serde(default, with = "crate::vocab::duration")]
            pub interval: Option<std::time::Duration>,
            /// Longest a probe may take; default `[defaults] timeout`.
            #[serde(default, with = "crate::vocab::duration")]
            pub timeout: Option<std::time::Duration>,
            /// Time between probes while failing; default `[defaults] failing_interval`.
            #[serde(default, with = "crate::vocab::duration")]
            pub failing_interval: Option<std::time::Duration>,
            /// Time to the next probe after a failure not yet confirmed by `fall`;
            /// default `[defaults] confirm_interval` for network checks, else off.
            #[serde(default, with = "crate::vocab::duration")]
            pub confirm_interval: Option<std::time::Duration>,
            /// Consecutive better observations to recover; default `[defaults] rise`.
            #[serde(default)]
            pub rise: Option<u32>,
            /// Consecutive worse observations to fail; default `[defaults] fall`.
            #[serde(default)]
            pub fall: Option<u32>,
            /// Shortest time before a return to a better state; default `[defaults] hold`.
            #[serde(default, with = "crate::vocab::duration")]
            pub hold: Option<std::time::Duration>,
            /// Flap detection window; default `[defaults] flap_window` (0s: off).
            #[serde(default, with = "crate::vocab::duration")]
            pub flap_window: Option<std::time::Duration>,
            /// State changes within the window that make it flapping; default `[defaults]`.
            #[serde(default)]
            pub flap_transitions: Option<u32>,
            /// Share of transient failures within the window that makes it flapping.
            #[serde(default)]
            pub flap_ratio: Option<f64>,
            $($(#[$fmeta])* pub $field: $ty,)*
        }

        impl $name {
            /// The keys shared by every check kind.
            pub fn common(&self) -> $crate::vocab::Common<'_> {
                $crate::vocab::Common {
                    name: &self.name,
                    interval: self.interval,
                    timeout: self.timeout,
                    failing_interval: self.failing_interval,
                    confirm_interval: self.confirm_interval,
                    rise: self.rise,
                    fall: self.fall,
                    hold: self.hold,
                    flap_window: self.flap_window,
                    flap_transitions: self.flap_transitions,
                    flap_ratio: self.flap_ratio,
                }
            }
        }
    };
}
pub(crate) use check_config;

/// The keys every check kind shares, as written (before defaults apply).
#[derive(Debug, Clone, Copy)]
pub struct Common<'a> {
    pub name: &'a str,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub failing_interval: Option<Duration>,
    pub confirm_interval: Option<Duration>,
    pub rise: Option<u32>,
    pub fall: Option<u32>,
    pub hold: Option<Duration>,
    pub flap_window: Option<Duration>,
    pub flap_transitions: Option<u32>,
    pub flap_ratio: Option<f64>,
}

/// When a target is flapping: more than `transitions` state changes, or more than `ratio`
/// of its observations transient failures, within `window` (zero: never).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FlapRule {
    pub window: Duration,
    pub transitions: u32,
    pub ratio: f64,
}

impl FlapRule {
    pub const OFF: FlapRule = FlapRule {
        window: Duration::ZERO,
        transitions: 0,
        ratio: 1.0,
    };
}

/// A check's schedule and hysteresis once defaults are applied.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    pub interval: Duration,
    pub timeout: Duration,
    pub failing_interval: Duration,
    /// Time to the next probe while a failure awaits confirmation (zero: off).
    pub confirm_interval: Duration,
    pub rise: u32,
    pub fall: u32,
    pub hold: Duration,
    pub flap: FlapRule,
}

impl Common<'_> {
    /// Applies `[defaults]` to what the check left unset; `network`: the kind confirms a
    /// failure at `[defaults] confirm_interval` unless it sets its own.
    pub fn schedule(&self, d: &Defaults, network: bool) -> Schedule {
        let interval = self.interval.unwrap_or(d.interval);
        let failing_interval = self
            .failing_interval
            .unwrap_or(d.failing_interval)
            .min(interval);
        let confirm = match self.confirm_interval {
            Some(c) => c,
            None if network => d.confirm_interval,
            None => Duration::ZERO,
        };
        Schedule {
            interval,
            timeout: self.timeout.unwrap_or(d.timeout),
            failing_interval,
            confirm_interval: confirm.min(failing_interval),
            rise: self.rise.unwrap_or(d.rise),
            fall: self.fall.unwrap_or(d.fall),
            hold: self.hold.unwrap_or(d.hold),
            flap: FlapRule {
                window: self.flap_window.unwrap_or(d.flap_window),
                transitions: self.flap_transitions.unwrap_or(d.flap_transitions),
                ratio: self.flap_ratio.unwrap_or(d.flap_ratio),
            },
        }
    }
}

/// Names become label values and file names: keep them plain.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
}

pub(crate) fn name_rule(what: &str) -> String {
    format!("a {what} is 1 to 64 characters of A-Z, a-z, 0-9, '-', '_', '.', ':'")
}
