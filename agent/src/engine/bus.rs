//! Transition events, pushed to every output that reacts to changes (the audit log, SNMP
//! notifications, faxstate) and published by the scheduler (checks) and the routing task
//! (servers). Each subscriber has its own unbounded queue: transitions are few (rise, fall
//! and hold bound them) and none may be lost to a slow subscriber.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;

use super::tracker::State;
use crate::checks::{Observation, Status};

/// A decided change of a target's state.
#[derive(Debug, Clone)]
pub struct Transition {
    pub time: SystemTime,
    pub server: String,
    pub target: String,
    pub kind: &'static str,
    pub from: State,
    pub to: State,
    /// Why, for people: "3 consecutive failures (fall 3): connect_refused".
    pub reason: String,
    /// The observation that completed the streak.
    pub status: Status,
    pub error_type: Option<&'static str>,
    pub detail: String,
    pub duration: Duration,
    /// For a server: the agent that writes its state into the routing outputs, as the
    /// publishing agent knows it (itself, or the survivor that speaks for a dead peer).
    pub speaker: Option<String>,
}

impl Transition {
    /// A state as the audit log names it: servers drain where checks are degraded.
    pub fn state_name(&self, s: State) -> &'static str {
        match (self.kind, s) {
            ("server", State::Degraded) => "drain",
            _ => s.as_str(),
        }
    }

    pub fn reason_for(from: State, streak: u32, needed: u32, obs: &Observation) -> String {
        let what = match obs.status {
            Status::Ok => "successes",
            Status::Degraded => "degraded observations",
            Status::Fail => "failures",
        };
        let base = if from == State::Unknown {
            "first observation".to_string()
        } else {
            let word = if obs.status == Status::Ok {
                "rise"
            } else {
                "fall"
            };
            format!("{streak} consecutive {what} ({word} {needed})")
        };
        match obs.error_type {
            Some(t) => format!("{base}: {t}"),
            None => base,
        }
    }
}

#[derive(Default)]
pub struct Bus {
    subscribers: Mutex<Vec<mpsc::UnboundedSender<Transition>>>,
}

impl Bus {
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<Transition> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().push(tx);
        rx
    }

    /// Drops every subscriber's sender: each subscriber drains its queue, then ends.
    pub fn close(&self) {
        self.lock().clear();
    }

    pub fn publish(&self, t: Transition) {
        self.lock().retain(|tx| tx.send(t.clone()).is_ok());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<mpsc::UnboundedSender<Transition>>> {
        // A poisoned lock only means a subscriber list push panicked; the Vec is intact.
        self.subscribers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
