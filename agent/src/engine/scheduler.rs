//! The scheduler owns the outcome of a check: it runs each check on its interval (a
//! per-check phase spreads checks over time), applies the timeout, times the call, bounds
//! how many probes run at once, probes faster while a target is failing (at once, every
//! `confirm_interval`, while a failure awaits its `fall` confirmations), and hands each
//! observation to the target's tracker and the model.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use super::bus::{Bus, Transition};
use super::model::{Model, Probe, Target};
use super::tracker::{Change, State, Tracker};
use crate::checks::CheckSpec;
use crate::checks::{self, Check, Observation, Status};
use crate::config::{Config, Schedule};
use crate::faults::{self, Faults};

/// The first probe of each check lands within this window after it starts, at a phase
/// derived from its name, so that many checks do not all fire at once.
const SPREAD: Duration = Duration::from_secs(2);

/// Probes start on a grid of this step, counted from the scheduler's start: the probes due
/// within one step share one wake-up of the worker instead of one each (1,000 checks a
/// second: 100 wake-ups instead of 1,000). An interval that is not a multiple of it is
/// rounded up to one.
const TICK: Duration = Duration::from_millis(10);

/// The first instant of the grid at or after `t`.
fn on_grid(epoch: Instant, t: Instant) -> Instant {
    let tick = TICK.as_nanos();
    let steps = t.saturating_duration_since(epoch).as_nanos().div_ceil(tick);
    epoch + Duration::from_nanos(u64::try_from(steps * tick).unwrap_or(u64::MAX))
}

/// Runs one probe under a timeout; the timeout drops the probe's future (which cleans up
/// after itself) and is recorded as a `timeout` failure.
pub async fn probe_once(check: &dyn Check, timeout: Duration) -> (Observation, Duration) {
    let start = Instant::now();
    let obs = match tokio::time::timeout(timeout, check.probe()).await {
        Ok(obs) => obs,
        Err(_) => Observation::fail(
            checks::TIMEOUT,
            format!(
                "no result within {}; raise timeout if the target is just slow",
                humantime::format_duration(timeout)
            ),
        ),
    };
    (obs, start.elapsed())
}

struct Shared {
    model: Arc<Model>,
    bus: Arc<Bus>,
    faults: Arc<Faults>,
    permits: Semaphore,
    /// Where the grid of probe starts (`TICK`) begins.
    epoch: Instant,
    server: String,
    /// What checks of the agent's own data are built with.
    context: checks::Context,
}

struct Running {
    spec: CheckSpec,
    schedule: Schedule,
    cancel: CancellationToken,
    handle: JoinHandle<()>,
}

pub struct Scheduler {
    shared: Arc<Shared>,
    running: HashMap<String, Running>,
    cancel: CancellationToken,
}

impl Scheduler {
    pub fn new(
        model: Arc<Model>,
        bus: Arc<Bus>,
        faults: Arc<Faults>,
        server: &str,
        max_concurrent: usize,
        traffic: Arc<crate::traffic::Stats>,
    ) -> Self {
        Scheduler {
            shared: Arc::new(Shared {
                model,
                bus,
                faults,
                permits: Semaphore::new(max_concurrent),
                epoch: Instant::now(),
                server: server.to_string(),
                context: checks::Context {
                    server: server.to_string(),
                    traffic,
                },
            }),
            running: HashMap::new(),
            cancel: CancellationToken::new(),
        }
    }

    /// Makes the running checks match `config`: unchanged checks keep running with their
    /// state, changed ones restart, new ones start, removed ones stop and leave the model.
    pub fn apply(&mut self, config: &Config) {
        let wanted: HashMap<String, CheckSpec> = config
            .checks()
            .into_iter()
            .map(|(_, spec)| (spec.name().to_string(), spec))
            .collect();
        let stale: Vec<String> = self
            .running
            .iter()
            .filter(|(name, r)| {
                wanted.get(*name).is_none_or(|spec| {
                    *spec != r.spec || spec.schedule(&config.defaults) != r.schedule
                })
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in stale {
            if let Some(r) = self.running.remove(&name) {
                r.cancel.cancel();
                self.shared.model.write().targets.remove(&name);
                info!(check = %name, "Check stopped (removed or changed by the new config).");
            }
        }
        for (name, spec) in wanted {
            let discovered = config.discovered.contains(&name);
            if self.running.contains_key(&name) {
                if let Some(t) = self.shared.model.write().targets.get_mut(&name) {
                    t.discovered = discovered;
                }
                continue;
            }
            let schedule = spec.schedule(&config.defaults);
            let check = checks::build(&spec, &schedule, &self.shared.context);
            let mut target =
                Target::new(&name, check.kind(), check.error_types(), schedule.interval);
            target.discovered = discovered;
            self.shared
                .model
                .write()
                .targets
                .insert(name.clone(), target);
            let cancel = self.cancel.child_token();
            let handle = tokio::spawn(run(
                self.shared.clone(),
                check,
                name.clone(),
                schedule,
                cancel.clone(),
            ));
            self.running.insert(
                name,
                Running {
                    spec,
                    schedule,
                    cancel,
                    handle,
                },
            );
        }
    }

    /// Stops every check and waits for their tasks (probes are dropped, cleaning up).
    pub async fn shutdown(self) {
        self.cancel.cancel();
        for (_, r) in self.running {
            let _ = r.handle.await;
        }
    }
}

/// A stable phase in `[0, min(interval, SPREAD))` from the check's name.
fn phase(name: &str, interval: Duration) -> Duration {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    name.hash(&mut h);
    let window = interval.min(SPREAD).as_millis().max(1) as u64;
    Duration::from_millis(h.finish() % window)
}

async fn run(
    shared: Arc<Shared>,
    check: Box<dyn Check>,
    name: String,
    schedule: Schedule,
    cancel: CancellationToken,
) {
    let mut tracker =
        Tracker::new(schedule.rise, schedule.fall, schedule.hold).with_flap(schedule.flap);
    let grid = |t: Instant| on_grid(shared.epoch, t.max(Instant::now()));
    let mut next = grid(Instant::now() + phase(&name, schedule.interval));
    let span = tracing::info_span!("check", check = %name, kind = check.kind());
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep_until(next) => {}
        }
        // The next start counts from this one's place on the grid; from the wake-up itself
        // when that came a whole step late (a stalled process), so that a late probe is
        // never followed by another sooner than its period.
        let woke = Instant::now();
        let from = if woke.duration_since(next) < TICK {
            next
        } else {
            woke
        };
        let probe = async {
            // The semaphore is never closed, so acquire only fails if it were.
            let _permit = shared.permits.acquire().await.ok();
            probe_once(check.as_ref(), schedule.timeout).await
        };
        let (obs, duration) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = probe.instrument(span.clone()) => r,
        };
        // The agent out of file descriptors: the target is not to blame and keeps its
        // state; the fault is the agent's.
        if obs.status != Status::Ok && faults::failed_for_want_of_fds(&obs.detail) {
            shared.faults.count(faults::FD_EXHAUSTED, &name);
            next = grid(from + schedule.failing_interval);
            continue;
        }
        let ok = obs.status == Status::Ok;
        let change = tracker.observe(obs.status, Instant::now());
        let period = next_period(&schedule, ok, tracker.worse_streak());
        span.in_scope(|| record(&shared, &name, &schedule, &tracker, obs, duration, change));
        next = grid(from + period);
    }
}

/// Time from one probe's start to the next: `interval` after a success; `confirm_interval`
/// while a worse observation awaits its `fall` confirmations (`worse_streak` > 0: the
/// tracker has not decided yet), when on; else `failing_interval`.
fn next_period(schedule: &Schedule, ok: bool, worse_streak: u32) -> Duration {
    if ok {
        schedule.interval
    } else if worse_streak > 0 && !schedule.confirm_interval.is_zero() {
        schedule.confirm_interval
    } else {
        schedule.failing_interval
    }
}

/// The one place a probe's outcome lands: the model, the failure count and log, and, when
/// the tracker decided a change, the transition event and its log line.
fn record(
    shared: &Shared,
    name: &str,
    schedule: &Schedule,
    tracker: &Tracker,
    obs: Observation,
    duration: Duration,
    change: Option<Change>,
) {
    let now = SystemTime::now();
    let mut model = shared.model.write();
    // A target removed by a reload while its last probe ran: drop the result.
    let Some(t) = model.targets.get_mut(name) else {
        return;
    };
    t.probes_total += 1;
    t.worse_streak = tracker.worse_streak();
    t.flapping = tracker.flapping().map(str::to_string);
    if let Some(et) = obs.error_type.filter(|_| obs.status != Status::Ok) {
        *t.failures_total.entry(et).or_insert(0) += 1;
        debug!(error_type = et, detail = %obs.detail, "Probe did not succeed.");
    }
    let probe = Probe {
        at: now,
        duration,
        observation: obs,
    };
    if probe.observation.status != Status::Ok {
        t.last_error = Some(probe.clone());
    }
    let transition = change.map(|c| {
        t.state = c.to;
        t.since = now;
        t.transitions_total += 1;
        let needed = if c.to > c.from {
            schedule.rise
        } else {
            schedule.fall
        };
        Transition {
            time: now,
            server: shared.server.clone(),
            target: name.to_string(),
            kind: t.kind,
            from: c.from,
            to: c.to,
            reason: c.flapping.clone().unwrap_or_else(|| {
                Transition::reason_for(c.from, c.streak, needed, &probe.observation)
            }),
            status: probe.observation.status,
            error_type: probe.observation.error_type,
            detail: probe.observation.detail.clone(),
            duration,
            speaker: None,
        }
    });
    t.last = Some(probe);
    drop(model);
    if let Some(tr) = transition {
        match tr.to {
            State::Up => info!(from = %tr.from, reason = %tr.reason, "Target is up."),
            State::Degraded => {
                warn!(from = %tr.from, reason = %tr.reason, detail = %tr.detail, "Target is degraded.")
            }
            _ => {
                warn!(from = %tr.from, reason = %tr.reason, detail = %tr.detail, "Target is down.")
            }
        }
        shared.bus.publish(tr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_is_stable_and_inside_the_window() {
        let a = phase("smtp", Duration::from_secs(10));
        assert_eq!(a, phase("smtp", Duration::from_secs(10)));
        assert!(a < SPREAD);
        assert!(phase("x", Duration::from_millis(300)) < Duration::from_millis(300));
    }

    #[test]
    fn the_grid_is_the_next_step_at_or_after() {
        // Seeded: any instant maps to a step of the grid, never earlier, less than a step
        // later; an instant on the grid stays where it is.
        let epoch = Instant::now();
        let mut rng = crate::testing::Lcg(0x9e1d);
        for _ in 0..2_000 {
            let micros = rng.below(50_000_000) as u64;
            let t = epoch + Duration::from_nanos(micros * 1_000 + rng.below(1_000) as u64);
            let g = on_grid(epoch, t);
            assert!(g >= t && g - t < TICK, "{:?} -> {:?}", t - epoch, g - epoch);
            assert_eq!((g - epoch).as_nanos() % TICK.as_nanos(), 0);
            assert_eq!(on_grid(epoch, g), g);
        }
        assert_eq!(
            on_grid(epoch + TICK, epoch),
            epoch + TICK,
            "before the epoch"
        );
    }

    /// Fails (`Status::Fail`) on the probes whose number is in `fails`, else ok; keeps
    /// the instant of every probe.
    struct Scripted {
        fails: fn(usize) -> bool,
        at: Arc<std::sync::Mutex<Vec<Instant>>>,
    }

    #[async_trait::async_trait]
    impl Check for Scripted {
        fn kind(&self) -> &'static str {
            "tcp"
        }
        fn error_types(&self) -> &'static [&'static str] {
            &["refused"]
        }
        async fn probe(&self) -> Observation {
            let mut at = self.at.lock().unwrap();
            at.push(Instant::now());
            if (self.fails)(at.len() - 1) {
                Observation::fail("refused", "connection refused")
            } else {
                Observation::ok("open")
            }
        }
    }

    fn schedule(confirm_ms: u64, fall: u32) -> Schedule {
        Schedule {
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            failing_interval: Duration::from_secs(1),
            confirm_interval: Duration::from_millis(confirm_ms),
            rise: 2,
            fall,
            hold: Duration::ZERO,
            flap: crate::vocab::FlapRule::OFF,
        }
    }

    /// Runs a scripted check for `secs` of (paused) time; returns the probe times relative
    /// to the first and the states of the transitions published. Every probe must have
    /// started on the grid. `stall`: after the first of the pair, the clock jumps by the
    /// second at once, as for a process stopped and continued.
    async fn run_for(
        fails: fn(usize) -> bool,
        schedule: Schedule,
        secs: u64,
        stall: Option<(Duration, Duration)>,
    ) -> (Vec<Duration>, Vec<State>) {
        let bus = Arc::new(Bus::default());
        let mut events = bus.subscribe();
        let shared = Arc::new(Shared {
            model: Arc::new(Model::new()),
            bus,
            faults: Arc::default(),
            permits: Semaphore::new(4),
            epoch: Instant::now(),
            server: "s".into(),
            context: checks::Context::standalone("s"),
        });
        shared.model.write().targets.insert(
            "t".into(),
            Target::new("t", "tcp", &["refused"], schedule.interval),
        );
        let at = Arc::new(std::sync::Mutex::new(Vec::new()));
        let check = Box::new(Scripted {
            fails,
            at: at.clone(),
        });
        let cancel = CancellationToken::new();
        let epoch = shared.epoch;
        let task = tokio::spawn(run(shared, check, "t".into(), schedule, cancel.clone()));
        if let Some((after, stopped)) = stall {
            tokio::time::sleep(after).await;
            tokio::time::advance(stopped).await;
        }
        tokio::time::sleep(Duration::from_secs(secs)).await;
        cancel.cancel();
        task.await.unwrap();
        let at = at.lock().unwrap().clone();
        for t in at.iter().filter(|_| stall.is_none()) {
            let since = t.duration_since(epoch);
            assert_eq!(
                since.as_nanos() % TICK.as_nanos(),
                0,
                "{since:?} is off the grid"
            );
        }
        let first = at[0];
        let mut seen = Vec::new();
        while let Ok(tr) = events.try_recv() {
            seen.push(tr.to);
        }
        (at.iter().map(|t| t.duration_since(first)).collect(), seen)
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_is_confirmed_at_the_confirm_interval_until_fall() {
        // Up on the first probe, then every probe fails: fall 3 is reached 200 ms after the
        // first failure, not 2 s; once down, probes go back to failing_interval.
        let (times, seen) = run_for(|n| n >= 1, schedule(100, 3), 6, None).await;
        let ms: Vec<u128> = times.iter().map(|d| d.as_millis()).collect();
        assert_eq!(&ms[..6], &[0, 1000, 1100, 1200, 2200, 3200], "{ms:?}");
        assert_eq!(seen, [State::Up, State::Down]);
        // Off: the same failures take failing_interval each.
        let (times, _) = run_for(|n| n >= 1, schedule(0, 3), 6, None).await;
        let ms: Vec<u128> = times.iter().map(|d| d.as_millis()).collect();
        assert_eq!(&ms[..4], &[0, 1000, 2000, 3000], "{ms:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_single_failure_is_confirmed_away_and_changes_nothing() {
        // Probe 1 fails, its confirmation succeeds: the streak ends, the target stays up and
        // the next probe is a whole interval later.
        let (times, seen) = run_for(|n| n == 1, schedule(100, 3), 4, None).await;
        let ms: Vec<u128> = times.iter().map(|d| d.as_millis()).collect();
        assert_eq!(&ms[..4], &[0, 1000, 1100, 2100], "{ms:?}");
        assert_eq!(seen, [State::Up]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_wake_up_is_not_followed_by_a_probe_sooner_than_the_interval() {
        // The process stops for 1.7 s between two probes: the late probe runs at once, and
        // the next one a whole interval after it, not at the next step of the grid.
        let stall = (Duration::from_millis(2_500), Duration::from_millis(1_700));
        let (times, _) = run_for(|_| false, schedule(100, 3), 4, Some(stall)).await;
        assert!(times.len() >= 5, "{times:?}");
        for w in times.windows(2) {
            assert!(w[1] - w[0] >= Duration::from_secs(1), "{times:?}");
        }
    }

    #[test]
    fn confirmation_probes_only_while_a_streak_is_undecided() {
        // Seeded: random outcomes through a real tracker. A confirmation probe follows a
        // non-ok observation exactly when the tracker has not yet decided (worse streak
        // below fall); a decided failure and a success never get one.
        let mut rng = crate::testing::Lcg(0x5eed_c0f1);
        for case in 0..500 {
            let fall = 1 + rng.below(5) as u32;
            let s = schedule(100, fall);
            let mut tracker = Tracker::new(s.rise, s.fall, s.hold);
            let mut streak = 0u32;
            let mut now = Instant::now();
            for _ in 0..60 {
                let status = match rng.below(3) {
                    0 => Status::Ok,
                    1 => Status::Degraded,
                    _ => Status::Fail,
                };
                let before = tracker.state();
                let change = tracker.observe(status, now);
                let period = next_period(&s, status == Status::Ok, tracker.worse_streak());
                let seen = match status {
                    Status::Ok => State::Up,
                    Status::Degraded => State::Degraded,
                    Status::Fail => State::Down,
                };
                let worse = before != State::Unknown && seen < before;
                streak = if worse && change.is_none() {
                    streak + 1
                } else {
                    0
                };
                let confirming = period == s.confirm_interval;
                assert_eq!(
                    confirming,
                    streak > 0,
                    "case {case}: fall {fall}, {status:?} after {before:?}, change {change:?}"
                );
                assert!(
                    streak < fall,
                    "case {case}: a streak at fall must have decided"
                );
                if status == Status::Ok {
                    assert_eq!(period, s.interval);
                }
                now += period;
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_probe_is_a_timeout() {
        struct Hang;
        #[async_trait::async_trait]
        impl Check for Hang {
            fn kind(&self) -> &'static str {
                "hang"
            }
            fn error_types(&self) -> &'static [&'static str] {
                &[]
            }
            async fn probe(&self) -> Observation {
                std::future::pending().await
            }
        }
        let (obs, took) = probe_once(&Hang, Duration::from_secs(3)).await;
        assert_eq!(obs.error_type, Some(checks::TIMEOUT));
        assert_eq!(took, Duration::from_secs(3));
    }
}
