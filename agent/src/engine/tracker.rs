//! The per-target state machine: the only place that decides a target's state.
//!
//! Observations are ok / degraded / fail; states are unknown / up / degraded / down. A
//! target moves to a worse state after `fall` consecutive worse observations, at once
//! whatever came before; to a better one after `rise` consecutive better observations, and
//! never before `hold` has passed since its last change: hold damps returns, never the
//! taking out of a target that fails again. Fewer than that is a transient: counted, shown, not acted on.
//! The first observation of a new target sets its state at once: there is no earlier
//! state to protect.
//!
//! Flapping: a target that changes state more than `flap_transitions` times, or whose
//! observations are transient failures (worse ones that never reached `fall`) more than
//! `flap_ratio` of the time, within `flap_window`, is flapping: it is shown `degraded`
//! (drained, not down; a target that is down stays down) with the reason, until the last
//! window has held no state change and at most half that ratio of transients. Counts are
//! kept in a few buckets per window: constant memory whatever the interval.

use std::collections::VecDeque;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::checks::Status;
use crate::vocab::FlapRule;

/// A target's decided state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Unknown,
    Down,
    Degraded,
    Up,
}

impl State {
    pub const ALL: [State; 4] = [State::Unknown, State::Up, State::Degraded, State::Down];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Unknown => "unknown",
            State::Up => "up",
            State::Degraded => "degraded",
            State::Down => "down",
        }
    }

    fn of(status: Status) -> State {
        match status {
            Status::Ok => State::Up,
            Status::Degraded => State::Degraded,
            Status::Fail => State::Down,
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A decided change of state, with the streak that caused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub from: State,
    pub to: State,
    /// Consecutive observations that led here (1 for the first observation).
    pub streak: u32,
    /// Set when the change is the start or the end of flapping: why.
    pub flapping: Option<String>,
}

/// Buckets per flap window.
const BUCKETS: u32 = 12;
/// The transient ratio is judged from this many observations in the window at least.
const MIN_OBSERVATIONS: u32 = 10;

/// Counts of one slice of the flap window.
#[derive(Debug, Clone)]
struct Bucket {
    start: Instant,
    observations: u32,
    transients: u32,
    transitions: u32,
}

/// Flap detection over a sliding window.
#[derive(Debug, Clone)]
struct Flaps {
    rule: FlapRule,
    buckets: VecDeque<Bucket>,
    /// While flapping: why.
    flapping: Option<String>,
}

impl Flaps {
    /// The current bucket, after dropping those older than the window.
    fn bucket(&mut self, now: Instant) -> &mut Bucket {
        let width = self.rule.window / BUCKETS;
        while self
            .buckets
            .front()
            .is_some_and(|b| now.duration_since(b.start) >= self.rule.window + width)
        {
            self.buckets.pop_front();
        }
        if self
            .buckets
            .back()
            .is_none_or(|b| now.duration_since(b.start) >= width)
        {
            self.buckets.push_back(Bucket {
                start: now,
                observations: 0,
                transients: 0,
                transitions: 0,
            });
        }
        self.buckets.back_mut().expect("just pushed")
    }

    /// Re-judges after an observation; returns true when flapping started or ended.
    fn judge(&mut self) -> bool {
        let (mut observations, mut transients, mut transitions) = (0, 0, 0);
        for b in &self.buckets {
            observations += b.observations;
            transients += b.transients;
            transitions += b.transitions;
        }
        let ratio = if observations >= MIN_OBSERVATIONS {
            f64::from(transients) / f64::from(observations)
        } else {
            0.0
        };
        let window = humantime::format_duration(self.rule.window);
        let was = self.flapping.is_some();
        if transitions > self.rule.transitions {
            self.flapping = Some(format!(
                "flapping: {transitions} state changes in the last {window} (more than {})",
                self.rule.transitions
            ));
        } else if ratio > self.rule.ratio {
            self.flapping = Some(format!(
                "flapping: {transients} of {observations} observations in the last {window} were transient failures ({:.1} %, more than {:.1} %)",
                ratio * 100.0,
                self.rule.ratio * 100.0
            ));
        } else if was && transitions == 0 && ratio <= self.rule.ratio / 2.0 {
            self.flapping = None;
        }
        was != self.flapping.is_some()
    }
}

#[derive(Debug, Clone)]
pub struct Tracker {
    rise: u32,
    fall: u32,
    hold: Duration,
    /// The state decided from the streaks, before flapping caps it.
    state: State,
    changed_at: Option<Instant>,
    better: u32,
    worse: u32,
    flaps: Option<Flaps>,
}

impl Tracker {
    pub fn new(rise: u32, fall: u32, hold: Duration) -> Self {
        Tracker {
            rise: rise.max(1),
            fall: fall.max(1),
            hold,
            state: State::Unknown,
            changed_at: None,
            better: 0,
            worse: 0,
            flaps: None,
        }
    }

    /// Adds flap detection (none when the rule's window is zero).
    pub fn with_flap(mut self, rule: FlapRule) -> Self {
        self.flaps = (!rule.window.is_zero()).then(|| Flaps {
            rule,
            buckets: VecDeque::with_capacity(BUCKETS as usize + 2),
            flapping: None,
        });
        self
    }

    /// The decided state: a flapping target is at best degraded.
    pub fn state(&self) -> State {
        match self.flapping() {
            Some(_) => self.state.min(State::Degraded),
            None => self.state,
        }
    }

    /// Why the target is flapping, while it is.
    pub fn flapping(&self) -> Option<&str> {
        self.flaps.as_ref().and_then(|f| f.flapping.as_deref())
    }

    /// Consecutive observations worse than the current state (a transient while < fall).
    pub fn worse_streak(&self) -> u32 {
        self.worse
    }

    /// Feeds one observation; returns the change it decides, if any.
    pub fn observe(&mut self, status: Status, now: Instant) -> Option<Change> {
        let before = self.state();
        let (streak, transient, changed) = self.follow(status, now);
        let mut flap_changed = false;
        if let Some(f) = self.flaps.as_mut() {
            let b = f.bucket(now);
            b.observations += 1;
            b.transients += transient;
            // The first decision is not a change of state.
            b.transitions += u32::from(changed && before != State::Unknown);
            flap_changed = f.judge();
        }
        let after = self.state();
        (after != before).then(|| Change {
            from: before,
            to: after,
            streak,
            flapping: flap_changed.then(|| {
                self.flapping().map_or(
                    "stable again: no longer flapping".to_string(),
                    str::to_string,
                )
            }),
        })
    }

    /// The streak rules: returns the streak, the transient failures that a better
    /// observation just ended (worse observations that never reached `fall`), and whether
    /// the state changed.
    fn follow(&mut self, status: Status, now: Instant) -> (u32, u32, bool) {
        let seen = State::of(status);
        let (streak, needed) = if self.state == State::Unknown {
            (1, 1)
        } else if seen == self.state {
            let transient = self.worse;
            self.better = 0;
            self.worse = 0;
            return (0, transient, false);
        } else if seen > self.state {
            let transient = self.worse;
            self.worse = 0;
            self.better += 1;
            if self.better < self.rise || !self.held(now) {
                return (self.better, transient, false);
            }
            (self.better, self.rise)
        } else {
            self.better = 0;
            self.worse += 1;
            (self.worse, self.fall)
        };
        if streak < needed {
            return (streak, 0, false);
        }
        self.state = seen;
        self.changed_at = Some(now);
        self.better = 0;
        self.worse = 0;
        (streak, 0, true)
    }

    /// Hold damps returns only: a target that fails again is taken out at once.
    fn held(&self, now: Instant) -> bool {
        self.changed_at
            .is_none_or(|at| now.duration_since(at) >= self.hold)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Status::{Degraded, Fail, Ok};

    fn feed(t: &mut Tracker, seq: &[Status]) -> Vec<Option<(State, State)>> {
        seq.iter()
            .map(|s| t.observe(*s, Instant::now()).map(|c| (c.from, c.to)))
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn first_observation_decides_at_once() {
        let mut t = Tracker::new(2, 3, Duration::ZERO);
        assert_eq!(
            feed(&mut t, &[Fail]),
            vec![Some((State::Unknown, State::Down))]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn down_only_after_fall_consecutive_failures() {
        let mut t = Tracker::new(2, 3, Duration::ZERO);
        feed(&mut t, &[Ok]);
        assert_eq!(feed(&mut t, &[Fail, Fail]), vec![None, None]);
        assert_eq!(t.worse_streak(), 2, "two transients counted");
        // An ok in between resets the streak: transient, not permanent.
        assert_eq!(feed(&mut t, &[Ok, Fail, Fail]), vec![None, None, None]);
        let c = t.observe(Fail, Instant::now()).unwrap();
        assert_eq!((c.from, c.to, c.streak), (State::Up, State::Down, 3));
    }

    #[tokio::test(start_paused = true)]
    async fn up_only_after_rise_consecutive_successes() {
        let mut t = Tracker::new(2, 1, Duration::ZERO);
        feed(&mut t, &[Fail]);
        assert_eq!(feed(&mut t, &[Ok, Fail, Ok]), vec![None, None, None]);
        assert_eq!(feed(&mut t, &[Ok]), vec![Some((State::Down, State::Up))]);
    }

    #[tokio::test(start_paused = true)]
    async fn degraded_sits_between_up_and_down() {
        let mut t = Tracker::new(1, 2, Duration::ZERO);
        feed(&mut t, &[Ok]);
        assert_eq!(
            feed(&mut t, &[Degraded, Degraded]),
            vec![None, Some((State::Up, State::Degraded))]
        );
        // Mixed worse observations count together; the latest decides where it lands.
        assert_eq!(
            feed(&mut t, &[Fail, Fail]),
            vec![None, Some((State::Degraded, State::Down))]
        );
        assert_eq!(
            feed(&mut t, &[Degraded]),
            vec![Some((State::Down, State::Degraded))]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn hold_time_delays_the_next_change() {
        let mut t = Tracker::new(1, 1, Duration::from_secs(30));
        feed(&mut t, &[Ok]);
        tokio::time::advance(Duration::from_secs(31)).await;
        assert!(
            t.observe(Fail, Instant::now()).is_some(),
            "held long enough"
        );
        // Back up at once is refused: the hold has not passed.
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(t.observe(Ok, Instant::now()), None);
        assert_eq!(t.state(), State::Down);
        tokio::time::advance(Duration::from_secs(20)).await;
        let c = t.observe(Ok, Instant::now()).unwrap();
        assert_eq!((c.from, c.to), (State::Down, State::Up));
    }

    #[tokio::test(start_paused = true)]
    async fn flapping_never_returns_faster_than_hold_and_is_taken_out_at_once() {
        let mut t = Tracker::new(1, 1, Duration::from_secs(5));
        let mut last_change = None;
        let mut outs = 0;
        for i in 0..200u64 {
            let s = if i % 2 == 0 { Ok } else { Fail };
            if let Some(c) = t.observe(s, Instant::now()) {
                let now = Instant::now();
                if let (Some(prev), true) = (last_change, c.to > c.from) {
                    assert!(now.duration_since(prev) >= Duration::from_secs(5));
                }
                if c.to < c.from {
                    outs += 1;
                    assert_eq!(s, Fail, "taken out by the failure itself");
                }
                last_change = Some(now);
            }
            tokio::time::advance(Duration::from_millis(200)).await;
        }
        assert!(outs > 1);
    }

    #[tokio::test(start_paused = true)]
    async fn failing_again_right_after_a_return_is_not_held() {
        let mut t = Tracker::new(1, 1, Duration::from_secs(30));
        feed(&mut t, &[Fail]);
        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(feed(&mut t, &[Ok]), vec![Some((State::Down, State::Up))]);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            feed(&mut t, &[Fail]),
            vec![Some((State::Up, State::Down))],
            "out at once, 1 s after coming back"
        );
    }

    fn flappy(rise: u32, fall: u32) -> Tracker {
        Tracker::new(rise, fall, Duration::ZERO).with_flap(FlapRule {
            window: Duration::from_secs(120),
            transitions: 4,
            ratio: 0.3,
        })
    }

    /// Feeds `seq` one per second; returns the seconds at which flapping started.
    async fn run_for(t: &mut Tracker, seq: impl Iterator<Item = Status>) -> Vec<u64> {
        let mut starts = vec![];
        for (i, s) in seq.enumerate() {
            if let Some(c) = t.observe(s, Instant::now()) {
                if c.flapping
                    .as_deref()
                    .is_some_and(|f| f.starts_with("flapping"))
                {
                    starts.push(i as u64);
                }
            }
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        starts
    }

    #[tokio::test(start_paused = true)]
    async fn one_second_up_one_second_down_is_flapping_though_no_streak_reaches_fall() {
        let mut t = flappy(2, 2);
        let seq = (0..120).map(|i| if i % 2 == 0 { Ok } else { Fail });
        let starts = run_for(&mut t, seq).await;
        assert_eq!(starts.len(), 1, "{starts:?}");
        assert!(starts[0] <= 30, "flapping after {} s", starts[0]);
        assert_eq!(t.state(), State::Degraded);
        assert!(t.flapping().unwrap().contains("transient failures"));
    }

    #[tokio::test(start_paused = true)]
    async fn three_seconds_up_three_down_is_flapping_by_its_state_changes() {
        let mut t = flappy(2, 2);
        let seq = (0..120).map(|i| if (i / 3) % 2 == 0 { Ok } else { Fail });
        let starts = run_for(&mut t, seq).await;
        assert_eq!(starts.len(), 1, "{starts:?}");
        assert!(starts[0] <= 30, "flapping after {} s", starts[0]);
        assert!(t.flapping().unwrap().contains("state changes"));
        // Down while it fails (taken out at once, never held up by flapping), degraded
        // at best while it answers.
        let mut seen = vec![];
        for s in [Ok, Ok, Fail, Fail] {
            t.observe(s, Instant::now());
            seen.push(t.state());
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        assert_eq!(
            seen,
            [State::Down, State::Degraded, State::Degraded, State::Down]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_clean_outage_and_recovery_is_not_flapping() {
        let mut t = flappy(2, 3);
        let seq = (0..300).map(|i| if (60..160).contains(&i) { Fail } else { Ok });
        assert_eq!(run_for(&mut t, seq).await, Vec::<u64>::new());
        assert_eq!(t.state(), State::Up);
    }

    #[tokio::test(start_paused = true)]
    async fn flapping_ends_once_a_whole_window_is_stable() {
        let mut t = flappy(2, 2);
        run_for(&mut t, (0..60).map(|i| if i % 2 == 0 { Ok } else { Fail })).await;
        assert!(t.flapping().is_some());
        let mut ended = None;
        for i in 0..300u64 {
            if let Some(c) = t.observe(Ok, Instant::now()) {
                assert_eq!((c.from, c.to), (State::Degraded, State::Up));
                assert_eq!(
                    c.flapping.as_deref(),
                    Some("stable again: no longer flapping")
                );
                ended = Some(i);
            }
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        let ended = ended.expect("flapping ended");
        // Half the window's transients have aged out, and none came since.
        assert!(
            (60..=125).contains(&ended),
            "ended after {ended} s of stability"
        );
    }

    /// Seeded: random loss below the ratio never flaps; whatever the sequence, `fall`
    /// consecutive failures always take the target out, and a flapping target is never up.
    #[tokio::test(start_paused = true)]
    async fn flapping_never_hides_a_failure_and_light_loss_never_flaps() {
        let mut rng: u64 = 0x5eed_f1a9;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for case in 0..200u32 {
            let loss = if case % 2 == 0 { 5 } else { 10 + next() % 80 };
            let mut t = flappy(2, 3);
            let mut fails = 0;
            let mut flapped = false;
            for _ in 0..600 {
                let s = if next() % 100 < loss { Fail } else { Ok };
                t.observe(s, Instant::now());
                fails = if s == Fail { fails + 1 } else { 0 };
                if fails >= 3 {
                    assert_eq!(t.state(), State::Down, "case {case}: {fails} failures");
                }
                if t.flapping().is_some() {
                    flapped = true;
                    assert_ne!(t.state(), State::Up, "case {case}");
                }
                tokio::time::advance(Duration::from_secs(1)).await;
            }
            if loss == 5 {
                assert!(!flapped, "case {case}: 5 % loss flapped");
            }
        }
    }
}
