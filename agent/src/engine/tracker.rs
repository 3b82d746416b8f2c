//! The per-target state machine: the only place that decides a target's state.
//!
//! Observations are ok / degraded / fail; states are unknown / up / degraded / down. A
//! target moves to a worse state after `fall` consecutive worse observations, at once
//! whatever came before; to a better one after `rise` consecutive better observations, and
//! never before `hold` has passed since its last change: hold damps returns, never the
//! taking out of a target that fails again. Fewer than that is a transient: counted, shown, not acted on.
//! The first observation of a new target sets its state at once: there is no earlier
//! state to protect.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::checks::Status;

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub from: State,
    pub to: State,
    /// Consecutive observations that led here (1 for the first observation).
    pub streak: u32,
}

#[derive(Debug, Clone)]
pub struct Tracker {
    rise: u32,
    fall: u32,
    hold: Duration,
    state: State,
    changed_at: Option<Instant>,
    better: u32,
    worse: u32,
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
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// Consecutive observations worse than the current state (a transient while < fall).
    pub fn worse_streak(&self) -> u32 {
        self.worse
    }

    /// Feeds one observation; returns the change it decides, if any.
    pub fn observe(&mut self, status: Status, now: Instant) -> Option<Change> {
        let seen = State::of(status);
        let (streak, needed) = if self.state == State::Unknown {
            (1, 1)
        } else if seen == self.state {
            self.better = 0;
            self.worse = 0;
            return None;
        } else if seen > self.state {
            self.worse = 0;
            self.better += 1;
            (self.better, self.rise)
        } else {
            self.better = 0;
            self.worse += 1;
            (self.worse, self.fall)
        };
        // Hold damps returns only: a target that fails again is taken out at once.
        let better = seen > self.state && self.state != State::Unknown;
        let held = !better
            || self
                .changed_at
                .is_none_or(|at| now.duration_since(at) >= self.hold);
        if streak < needed || !held {
            return None;
        }
        let change = Change {
            from: self.state,
            to: seen,
            streak,
        };
        self.state = seen;
        self.changed_at = Some(now);
        self.better = 0;
        self.worse = 0;
        Some(change)
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
}
