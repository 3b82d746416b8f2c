//! The routing layer: which servers may take work, decided here and told to HAProxy,
//! Kamailio, hooks and clients (HylaFAX hears of its modems from [`crate::faxstate`]).
//!
//! One task evaluates, every `cluster.evaluate_interval`, this server's state from its
//! checks (`[server]` rules) and each peer's state: what the peer's own agent reports while
//! it answers (each agent is authoritative for its server). A peer is inactive only when a
//! majority of the members cannot reach its agent ([`decision::reach`], from the `sees` each
//! agent publishes); then its service is probed directly, and after `inactive_after`
//! without its agent and without its service the peer is down. An agent without quorum
//! changes nothing. States pass rise / fall / hold damping. The result, a
//! [`Snapshot`], is published on a watch channel to every output (and the API and AgentX,
//! which render it), each of which acts only for the
//! servers this agent speaks for (see [`decision::speaks_for`]), and only once it has
//! learned the cluster's view (every peer polled once, its own state known).

pub mod cluster;
pub mod decision;
pub mod haproxy;
pub mod hook;
pub mod kamailio;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::engine::bus::{Bus, Transition};
use crate::engine::model::Model;
use crate::engine::tracker::{State, Tracker};
use crate::metrics::{bool01, seconds, Collector, Families};
use decision::{GroupRoutes, ServerState, ServerView};

/// Changes told to, and failures of, one routing output (`kamailio`, `hook`).
#[derive(Debug)]
pub struct OutputStats {
    output: &'static str,
    changes: AtomicU64,
    errors: AtomicU64,
}

impl OutputStats {
    pub fn new(output: &'static str) -> Arc<OutputStats> {
        Arc::new(OutputStats {
            output,
            changes: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        })
    }

    pub fn changed(&self) {
        self.changes.fetch_add(1, Ordering::Relaxed);
    }

    pub fn failed(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }
}

impl Collector for OutputStats {
    fn collect(&self, f: &mut Families) {
        let l = [("output", self.output)];
        f.counter(
            "telagent_routing_changes_total",
            "State changes told to a routing output.",
            &l,
            self.changes.load(Ordering::Relaxed) as f64,
        );
        f.counter(
            "telagent_routing_errors_total",
            "Failed attempts to tell a routing output.",
            &l,
            self.errors.load(Ordering::Relaxed) as f64,
        );
    }
}

/// The published snapshot, as metrics: server states, routes per group, learned.
pub struct Published(pub watch::Receiver<Arc<Snapshot>>);

impl Collector for Published {
    fn collect(&self, f: &mut Families) {
        let c = self.0.borrow().clone();
        for v in &c.servers {
            let l = [("server", v.name.as_str())];
            for st in ServerState::ALL {
                f.gauge(
                    "telagent_server_state",
                    "Routing state of the server as this agent sees it (1 for the current state of unknown / up / drain / down), refreshed every evaluation.",
                    &[l[0], ("state", st.as_str())],
                    bool01(v.state == st),
                );
            }
            if let Some(t) = v.last_active {
                f.gauge(
                    "telagent_server_last_active_timestamp_seconds",
                    "Last time the server's agent answered (this server: now), seconds since the Unix epoch.",
                    &l,
                    seconds(t),
                );
            }
            f.gauge(
                "telagent_server_speaker",
                "1 if this agent tells the routing layer about the server (its own, or a dead peer it speaks for).",
                &l,
                bool01(v.speaker),
            );
            if let Some(c) = v.capacity {
                f.gauge(
                    "telagent_server_capacity_ratio",
                    "Free capacity of the server (idle lines and channels, room below queue high water), 0 to 1, damped; routing weights scale by it. Absent when its checks measure none.",
                    &l,
                    f64::from(c) / 100.0,
                );
            }
            f.gauge(
                "telagent_cluster_config_drift",
                "1 if the server's agent publishes other cluster / member / group sections than this agent.",
                &l,
                bool01(v.config_drift),
            );
        }
        for g in &c.routes {
            f.gauge(
                "telagent_routing_panic",
                "1 while fewer servers of the group are routable than the panic threshold (every server is routed).",
                &[("group", g.group.as_str())],
                bool01(g.panic),
            );
            f.gauge(
                "telagent_routing_routable_servers",
                "Servers of the group that take new work.",
                &[("group", g.group.as_str())],
                g.servers.iter().filter(|s| s.routable).count() as f64,
            );
        }
        f.gauge(
            "telagent_cluster_quorum",
            "1 while this agent reaches a majority of the cluster's agents (it changes routing outputs only then).",
            &[],
            bool01(c.quorum),
        );
        f.gauge(
            "telagent_routing_learned",
            "1 once every peer was polled and this server's state is known (outputs act only then).",
            &[],
            bool01(c.learned),
        );
    }
}

/// What routing reads of the config: this server's name and the cluster sections.
#[derive(Debug, Clone, PartialEq)]
pub struct Section {
    pub me: String,
    pub cluster: cluster::ClusterConfig,
    pub members: Vec<cluster::Member>,
    pub groups: Vec<cluster::Group>,
    pub server: cluster::ServerRules,
    /// Hashes of the other sections the agents of a cluster should share, by name:
    /// `server` (the rules and the kind and schedule of the checks they name), `kamailio`,
    /// `haproxy` (the agent-check port HAProxy's backend expects of every agent).
    pub shared: BTreeMap<String, String>,
}

/// A stable hash of `v`: FNV-1a 64 of its canonical JSON.
pub fn hash_of(v: &serde_json::Value) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in v.to_string().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

impl Section {
    /// A stable hash of the sections every agent of a cluster must share: peers that
    /// publish another hash route differently.
    pub fn config_hash(&self) -> String {
        hash_of(&serde_json::json!({
            "cluster": self.cluster,
            "member": self.members,
            "group": self.groups,
        }))
    }

    /// The sections a peer's document shows differ from ours: `cluster` (the
    /// [`Self::config_hash`] sections), and each of [`Self::shared`] it publishes.
    fn drift(&self, hash: &str, doc: &ServerDoc) -> Vec<String> {
        let mut out = Vec::new();
        if doc.config_hash != hash {
            out.push("cluster".to_string());
        }
        for (name, theirs) in &doc.hashes {
            if self.shared.get(name).is_some_and(|ours| ours != theirs) {
                out.push(name.clone());
            }
        }
        out
    }
}

/// An operator's maintenance drain: `Some(reason)` while it lasts. Sent by the API to the
/// routing task.
pub type Maintenance = watch::Receiver<Option<String>>;

/// Where a maintenance drain is kept: it lasts until it is ended, restarts included.
pub fn maintenance_file(state_dir: &std::path::Path) -> std::path::PathBuf {
    state_dir.join("maintenance.json")
}

/// The maintenance drain kept in `file`, if any. A file that cannot be read is logged and
/// taken as a drain (with that as its reason): an operator's drain is never lost silently.
pub fn load_maintenance(file: &std::path::Path) -> Option<String> {
    let text = match crate::files::read_text(file, 64 * 1024) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            let why = format!("cannot read {}: {e}", file.display());
            warn!(reason = %why, "Keeping the server drained: the maintenance drain file is unreadable. End the drain through the API once the cause is fixed.");
            return Some(why);
        }
    };
    #[derive(Deserialize)]
    struct Kept {
        reason: String,
    }
    match serde_json::from_str::<Kept>(&text) {
        Ok(k) => Some(k.reason),
        Err(e) => {
            let why = format!("{} is damaged ({e})", file.display());
            warn!(reason = %why, "Keeping the server drained: the maintenance drain file is damaged. End the drain through the API to remove it.");
            Some(why)
        }
    }
}

/// Keeps (or, with None, removes) the maintenance drain in `file`, durably.
pub fn save_maintenance(file: &std::path::Path, reason: Option<&str>) -> std::io::Result<()> {
    let Some(reason) = reason else {
        return match std::fs::remove_file(file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    };
    crate::files::write_durably(
        file,
        serde_json::json!({ "reason": reason })
            .to_string()
            .as_bytes(),
    )
}

/// What an agent publishes about its own server (`GET /v1/server`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerDoc {
    pub server: String,
    pub state: ServerState,
    pub reason: String,
    #[serde(with = "crate::engine::model::rfc3339")]
    pub since: SystemTime,
    pub config_hash: String,
    pub version: String,
    /// Which peers' agents this agent reaches now: peers judge a server inactive only when
    /// a majority of the live agents cannot reach it.
    #[serde(default)]
    pub sees: BTreeMap<String, bool>,
    /// The operator's maintenance drain, while it lasts: peers keep the server drained
    /// while its agent is away.
    #[serde(default)]
    pub maintenance: Option<String>,
    /// Its free capacity in percent (damped), when its checks measure it: routing
    /// outputs scale its weight by it.
    #[serde(default)]
    pub capacity: Option<u8>,
    /// Hashes of the other sections peers should share ([`Section::shared`]).
    #[serde(default)]
    pub hashes: BTreeMap<String, String>,
}

/// The cluster as this agent sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub me: String,
    /// Every peer polled once and our own state known: outputs may act.
    pub learned: bool,
    /// This agent and the agents it reaches are a majority: it may change the routing.
    #[serde(default)]
    pub quorum: bool,
    pub config_hash: String,
    /// Hashes of the other sections peers should share ([`Section::shared`]).
    #[serde(default)]
    pub hashes: BTreeMap<String, String>,
    pub servers: Vec<ServerView>,
    pub routes: Vec<GroupRoutes>,
    /// Which peers' agents this agent reaches now.
    #[serde(default)]
    pub sees: BTreeMap<String, bool>,
    /// The operator's maintenance drain, while it lasts.
    #[serde(default)]
    pub maintenance: Option<String>,
}

impl Snapshot {
    /// Before the first evaluation: nothing learned, no server, no route.
    pub fn empty(me: &str) -> Snapshot {
        Snapshot {
            me: me.to_string(),
            learned: false,
            quorum: false,
            config_hash: String::new(),
            hashes: BTreeMap::new(),
            servers: Vec::new(),
            routes: Vec::new(),
            sees: BTreeMap::new(),
            maintenance: None,
        }
    }

    pub fn server(&self, name: &str) -> Option<&ServerView> {
        self.servers.iter().find(|s| s.name == name)
    }

    pub fn own(&self) -> Option<&ServerView> {
        self.server(&self.me)
    }

    /// True when a group of `server` is in panic: every output keeps it routed, whatever
    /// its state (the routes, Kamailio, HAProxy's agent-check and health check alike).
    pub fn in_panic(&self, server: &str) -> bool {
        self.routes
            .iter()
            .any(|g| g.panic && g.servers.iter().any(|s| s.server == server))
    }

    pub fn doc(&self) -> Option<ServerDoc> {
        let v = self.own()?;
        Some(ServerDoc {
            server: v.name.clone(),
            state: v.state,
            reason: v.reason.clone(),
            since: v.since,
            config_hash: self.config_hash.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            sees: self.sees.clone(),
            maintenance: self.maintenance.clone(),
            capacity: v.capacity,
            hashes: self.hashes.clone(),
        })
    }
}

/// The last poll of one peer.
#[derive(Debug, Clone, Default)]
struct PeerReport {
    polled: bool,
    reachable: bool,
    last_ok: Option<(Instant, SystemTime)>,
    doc: Option<ServerDoc>,
    error: Option<String>,
    service_ok: Option<bool>,
}

type Reports = Arc<Mutex<BTreeMap<String, PeerReport>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Plain data: a panic elsewhere cannot leave it half-written.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Polls one peer until cancelled or no longer a member.
async fn poll_peer(
    name: String,
    mut config: watch::Receiver<Section>,
    reports: Reports,
    cancel: CancellationToken,
) {
    loop {
        let c = config.borrow_and_update().clone();
        let Some(member) = c.members.iter().find(|m| m.name == name).cloned() else {
            lock(&reports).remove(&name);
            return;
        };
        let cl = &c.cluster;
        let url = format!("{}/v1/server", member.agent.trim_end_matches('/'));
        let answer =
            tokio::time::timeout(cl.poll_timeout, crate::http_client::get(&url, 1 << 20)).await;
        let result = match answer {
            Err(_) => Err(format!(
                "{url} did not answer within {}",
                humantime::format_duration(cl.poll_timeout)
            )),
            Ok(Err(e)) => Err(e.to_string()),
            Ok(Ok(r)) if r.status != 200 => Err(format!("{url} answered {}", r.status)),
            Ok(Ok(r)) => serde_json::from_slice::<ServerDoc>(&r.body)
                .map_err(|e| format!("{url}: not a server document: {e}")),
        };
        let service_ok = match (&result, &member.service) {
            (Err(_), Some(addr)) => Some(matches!(
                tokio::time::timeout(
                    cl.poll_timeout,
                    crate::net::connect_redundant(addr, cl.poll_timeout / 3, 3)
                )
                .await,
                Ok(Ok(_))
            )),
            _ => None,
        };
        {
            let mut all = lock(&reports);
            let r = all.entry(name.clone()).or_default();
            r.polled = true;
            match result {
                Ok(doc) => {
                    r.reachable = true;
                    r.last_ok = Some((Instant::now(), SystemTime::now()));
                    r.doc = Some(doc);
                    r.error = None;
                }
                Err(e) => {
                    r.reachable = false;
                    r.error = Some(e);
                }
            }
            r.service_ok = service_ok;
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(cl.poll_interval) => {}
            _ = config.changed() => {}
        }
    }
}

/// Decided state of one server, with damping for the states this agent infers.
struct Decided {
    tracker: Tracker,
    /// The peer's sections that differed from ours at the last evaluation.
    drift: Vec<String>,
    state: ServerState,
    reason: String,
    since: SystemTime,
}

impl Decided {
    fn new(c: &cluster::ClusterConfig) -> Self {
        Decided {
            tracker: Tracker::new(c.rise, c.fall, c.hold),
            drift: Vec::new(),
            state: ServerState::Unknown,
            reason: "not evaluated yet".into(),
            since: SystemTime::now(),
        }
    }

    /// Feeds a raw state; returns the previous state when the decision changed.
    fn feed(&mut self, raw: ServerState, reason: String, now: Instant) -> Option<ServerState> {
        if raw == ServerState::Unknown {
            return None;
        }
        self.tracker.observe(raw.to_status(), now);
        let decided = ServerState::from_state(self.tracker.state());
        if decided == raw {
            self.reason = reason;
        }
        if decided != self.state {
            let before = self.state;
            self.state = decided;
            self.since = SystemTime::now();
            return Some(before);
        }
        None
    }
}

/// Runs the routing evaluation until cancelled.
pub async fn run(
    model: Arc<Model>,
    bus: Arc<Bus>,
    mut config: watch::Receiver<Section>,
    mut maintenance: Maintenance,
    out: watch::Sender<Arc<Snapshot>>,
    cancel: CancellationToken,
) {
    let reports: Reports = Arc::default();
    let mut pollers: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
    let mut memory = Memory::default();
    let mut c = config.borrow_and_update().clone();
    // A check's change is judged at once, not at the next evaluate_interval.
    let mut changes = bus.subscribe();
    loop {
        // Only on start and after a reload: the members, their pollers, the config hash.
        let me = c.me.clone();
        pollers.retain(|name, h| !h.is_finished() && c.members.iter().any(|m| &m.name == name));
        for m in c.members.iter().filter(|m| m.name != me) {
            pollers.entry(m.name.clone()).or_insert_with(|| {
                tokio::spawn(poll_peer(
                    m.name.clone(),
                    config.clone(),
                    reports.clone(),
                    cancel.child_token(),
                ))
            });
        }
        memory
            .decided
            .retain(|name, _| c.members.iter().any(|m| &m.name == name));
        let hash = c.config_hash();
        loop {
            let drain = maintenance.borrow_and_update().clone();
            let snapshot = evaluate(
                &c,
                &hash,
                &model,
                drain.as_deref(),
                &bus,
                &reports,
                &mut memory,
            );
            if **out.borrow() != snapshot {
                out.send_replace(Arc::new(snapshot));
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(c.cluster.evaluate_interval) => {}
                Some(_) = changes.recv() => while changes.try_recv().is_ok() {},
                Ok(()) = maintenance.changed() => {}
                _ = config.changed() => break,
            }
        }
        c = config.borrow_and_update().clone();
    }
}

/// What this agent sees of one server before damping.
struct Seen {
    state: ServerState,
    capacity: Option<u8>,
    reason: String,
    reachable: bool,
    last_active: Option<SystemTime>,
    hash: Option<String>,
}

/// A peer as its polls show it: what its agent reports while it answers (or answered
/// within `inactive_after`); else up if its service answers, down if not.
fn peer_seen(r: &PeerReport, now: Instant, inactive_after: std::time::Duration) -> Seen {
    let fresh = r
        .last_ok
        .is_some_and(|(at, _)| now.duration_since(at) < inactive_after);
    let last_active = r.last_ok.map(|(_, t)| t);
    let hash = r.doc.as_ref().map(|d| d.config_hash.clone());
    let capacity = r.doc.as_ref().and_then(|d| d.capacity);
    let seen = |state, reason: String, reachable| Seen {
        state,
        capacity,
        reason,
        reachable,
        last_active,
        hash: hash.clone(),
    };
    if !r.polled {
        return Seen {
            state: ServerState::Unknown,
            capacity: None,
            reason: "not polled yet".into(),
            reachable: false,
            last_active: None,
            hash: None,
        };
    }
    match (&r.doc, r.reachable || fresh) {
        (Some(doc), true) => seen(doc.state, doc.reason.clone(), r.reachable),
        _ => {
            let since = last_active.map_or("start".to_string(), |t| {
                humantime::format_rfc3339_seconds(t).to_string()
            });
            let error = r.error.clone().unwrap_or_default();
            // Its operator drained it for maintenance: it stays drained while its agent
            // is away (stopped for an upgrade, say), whatever its service answers.
            if let Some(why) = r.doc.as_ref().and_then(|d| d.maintenance.clone()) {
                return seen(
                    ServerState::Drain,
                    format!("maintenance: {why} (its agent unreachable since {since}: {error})"),
                    false,
                );
            }
            match r.service_ok {
                Some(true) => seen(ServerState::Up, format!("agent unreachable since {since} ({error}); its service answers"), false),
                Some(false) => seen(ServerState::Down, format!("inactive: agent unreachable since {since} ({error}) and its service does not answer"), false),
                None => seen(ServerState::Down, format!("inactive: agent unreachable since {since} ({error})"), false),
            }
        }
    }
}

/// Logs a server's change once and publishes it on the bus.
/// `speaker` is the agent that writes its state into the routing outputs, if known.
fn announce(
    bus: &Bus,
    me: &str,
    server: &str,
    before: ServerState,
    d: &Decided,
    speaker: Option<&str>,
) {
    let after = d.state;
    let by = speaker.unwrap_or("none (no quorum here)");
    match (before, after) {
        (_, ServerState::Up) => {
            info!(server = %server, from = before.as_str(), reason = %d.reason, speaker = %by, "Server is up.")
        }
        (ServerState::Up | ServerState::Unknown, _) => {
            warn!(server = %server, from = before.as_str(), to = after.as_str(), reason = %d.reason, speaker = %by, "Server is no longer up.")
        }
        _ => {
            warn!(server = %server, from = before.as_str(), to = after.as_str(), reason = %d.reason, speaker = %by, "Server is still not up; its state changed.")
        }
    }
    bus.publish(Transition {
        time: SystemTime::now(),
        server: me.to_string(),
        target: server.to_string(),
        kind: "server",
        from: to_state(before),
        to: to_state(after),
        reason: d.reason.clone(),
        status: after.to_status(),
        error_type: None,
        detail: d.reason.clone(),
        duration: std::time::Duration::ZERO,
        speaker: speaker.map(str::to_string),
    });
}

/// What the evaluation keeps from one round to the next.
#[derive(Default)]
struct Memory {
    decided: BTreeMap<String, Decided>,
    /// Whether the last round had a quorum (None before the first).
    had_quorum: Option<bool>,
    /// This server's published capacity and when it last changed.
    capacity: Option<(Option<u8>, Instant)>,
}

/// Capacity hysteresis: a measured capacity moves by 10 points at least, and not more
/// than once per `hold`; starting or ending to be measured counts at once.
fn damp_capacity(
    last: &mut Option<(Option<u8>, Instant)>,
    raw: Option<u8>,
    hold: std::time::Duration,
    now: Instant,
) -> Option<u8> {
    let moves = match *last {
        None => true,
        // A step of 10 points, or reaching an end (empty, full: facts, not noise, and
        // never left a few points short), once per hold.
        Some((Some(was), at)) if raw.is_some() => {
            let to = raw.unwrap_or(was);
            (to.abs_diff(was) >= 10 || to != was && (to == 0 || to == 100))
                && now.duration_since(at) >= hold
        }
        Some((was, _)) => was.is_some() != raw.is_some(),
    };
    if moves {
        *last = Some((raw, now));
    }
    last.and_then(|(c, _)| c)
}

fn evaluate(
    c: &Section,
    hash: &str,
    model: &Model,
    maintenance: Option<&str>,
    bus: &Bus,
    reports: &Reports,
    memory: &mut Memory,
) -> Snapshot {
    let Memory {
        decided,
        had_quorum,
        capacity,
    } = memory;
    let me = &c.me;
    let now = Instant::now();
    let hash = hash.to_string();
    let reports = lock(reports).clone();
    let (own_raw, own_reason, own_capacity) = {
        let targets = &model.read().targets;
        let (state, reason) = decision::own_state(&c.server, targets, maintenance);
        (state, reason, decision::capacity(&c.server, targets))
    };
    let own_capacity = damp_capacity(capacity, own_capacity, c.cluster.hold, now);
    // Who reaches whom: our polls, and what each peer we reach says it reaches.
    let fresh = |r: &PeerReport| {
        r.reachable
            || r.last_ok
                .is_some_and(|(at, _)| now.duration_since(at) < c.cluster.inactive_after)
    };
    let sees: BTreeMap<String, bool> = c
        .members
        .iter()
        .filter(|m| &m.name != me)
        .map(|m| {
            let up = reports.get(&m.name).is_some_and(fresh);
            (m.name.clone(), up)
        })
        .collect();
    let published: BTreeMap<String, BTreeMap<String, bool>> = reports
        .iter()
        .filter(|(name, r)| sees.get(*name) == Some(&true) && r.doc.is_some())
        .filter_map(|(name, r)| Some((name.clone(), r.doc.as_ref()?.sees.clone())))
        .collect();
    let reach = decision::reach(&c.members, me, &sees, &published);
    let polled_all = c
        .members
        .iter()
        .all(|m| &m.name == me || reports.get(&m.name).is_some_and(|r| r.polled));
    // Before every peer was polled once, a peer not yet asked is not a peer out of reach:
    // nothing is said about the majority until then.
    if (polled_all || had_quorum.is_some()) && *had_quorum != Some(reach.quorum) {
        if reach.quorum {
            info!(agents = %reach.alive.join(", "), "This agent reaches a majority of the cluster: it takes part in routing decisions.");
        } else if c.members.len() > 1 {
            warn!(agents = %reach.alive.join(", "), members = c.members.len(), "This agent reaches only a minority of the cluster: it changes no routing output until it reaches a majority again.");
        }
        *had_quorum = Some(reach.quorum);
    }
    let mut views = BTreeMap::new();
    for member in &c.members {
        let d = decided
            .entry(member.name.clone())
            .or_insert_with(|| Decided::new(&c.cluster));
        let r = reports.get(&member.name).cloned().unwrap_or_default();
        let seen = if &member.name == me {
            Seen {
                state: own_raw,
                capacity: own_capacity,
                reason: own_reason.clone(),
                reachable: true,
                last_active: Some(SystemTime::now()),
                hash: Some(hash.clone()),
            }
        } else if sees.get(&member.name) == Some(&true)
            || reach.inactive.contains_key(&member.name)
            || !r.polled
        {
            peer_seen(&r, now, c.cluster.inactive_after)
        } else {
            // Out of our reach, but not of the majority's: its own agent still speaks for
            // it; we keep what we knew and decide nothing.
            let reached_by: Vec<&str> = published
                .iter()
                .filter(|(_, p)| p.get(&member.name) == Some(&true))
                .map(|(n, _)| n.as_str())
                .collect();
            d.reason = format!(
                "its agent is unreachable from here but not from {}: no decision made here",
                if reached_by.is_empty() {
                    "a majority".to_string()
                } else {
                    reached_by.join(", ")
                }
            );
            Seen {
                state: ServerState::Unknown,
                capacity: r.doc.as_ref().and_then(|d| d.capacity),
                reason: String::new(),
                reachable: false,
                last_active: r.last_ok.map(|(_, t)| t),
                hash: r.doc.as_ref().map(|d| d.config_hash.clone()),
            }
        };
        let Seen {
            state: raw,
            capacity: seen_capacity,
            reason,
            reachable,
            last_active,
            hash: peer_hash,
        } = seen;
        if let Some(before) = d.feed(raw, reason, now) {
            let speaker =
                decision::speaker_of(&c.members, &reach, &sees, &published, me, &member.name);
            announce(bus, me, &member.name, before, d, speaker);
        }
        let drift = match r.doc.as_ref().filter(|_| &member.name != me) {
            Some(doc) => c.drift(&hash, doc),
            None => Vec::new(),
        };
        if drift != d.drift {
            if drift.is_empty() {
                info!(server = %member.name, "Config drift resolved.");
            } else {
                warn!(server = %member.name, sections = %drift.join(", "), "Config drift: this peer's sections differ from ours (cluster: [cluster], [[member]], [[group]]; server: [server] and the checks it names; kamailio; haproxy: the agent-check port); routing may be inconsistent.");
            }
            d.drift = drift.clone();
        }
        views.insert(
            member.name.clone(),
            ServerView {
                name: member.name.clone(),
                state: d.state,
                reason: d.reason.clone(),
                since: d.since,
                last_active,
                agent_reachable: reachable,
                config_hash: peer_hash,
                config_drift: !drift.is_empty(),
                drift_sections: drift,
                speaker: false,
                capacity: seen_capacity,
            },
        );
    }
    let speakers: Vec<String> = c
        .members
        .iter()
        .filter(|m| decision::speaks_for(&c.members, &reach, &sees, &published, me, &m.name))
        .map(|m| m.name.clone())
        .collect();
    for s in speakers {
        if let Some(v) = views.get_mut(&s) {
            v.speaker = true;
        }
    }
    let learned = polled_all
        && views
            .get(me)
            .is_some_and(|v| v.state != ServerState::Unknown);
    let routes = decision::routes(&c.groups, &c.members, &views, c.cluster.panic_threshold);
    Snapshot {
        me: me.clone(),
        learned,
        quorum: reach.quorum,
        config_hash: hash,
        hashes: c.shared.clone(),
        servers: c
            .members
            .iter()
            .filter_map(|m| views.remove(&m.name))
            .collect(),
        routes,
        sees,
        maintenance: maintenance.map(str::to_string),
    }
}

fn to_state(s: ServerState) -> State {
    match s {
        ServerState::Unknown => State::Unknown,
        ServerState::Up => State::Up,
        ServerState::Drain => State::Degraded,
        ServerState::Down => State::Down,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn capacity_moves_by_ten_points_at_most_once_per_hold() {
        let hold = Duration::from_secs(5);
        let mut last = None;
        let mut at = |raw| damp_capacity(&mut last, raw, hold, Instant::now());
        assert_eq!(at(Some(80)), Some(80), "the first measure counts");
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(at(Some(75)), Some(80), "5 points is noise");
        assert_eq!(at(Some(60)), Some(60));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(at(Some(20)), Some(60), "not twice within hold");
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(at(Some(20)), Some(20));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(at(Some(25)), Some(20));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(at(Some(100)), Some(100));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(at(Some(95)), Some(100));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(at(Some(100)), Some(100));
        assert_eq!(at(None), None, "no longer measured: at once");
        assert_eq!(at(Some(90)), Some(90), "measured again: at once");
    }
}
