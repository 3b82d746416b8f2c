//! Routing decisions, as pure functions of what the agent knows: this server's state from
//! its checks, which agent speaks for a server that cannot, and the routes of each group.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::cluster::{Group, Member, ServerRules};
use crate::engine::model::Target;
use crate::engine::tracker::State;

/// A server's routing state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerState {
    Unknown,
    Down,
    Drain,
    Up,
}

impl ServerState {
    pub const ALL: [ServerState; 4] = [
        ServerState::Unknown,
        ServerState::Up,
        ServerState::Drain,
        ServerState::Down,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ServerState::Unknown => "unknown",
            ServerState::Up => "up",
            ServerState::Drain => "drain",
            ServerState::Down => "down",
        }
    }

    /// The tracker's states stand for server states: degraded is drain.
    pub fn from_state(s: State) -> Self {
        match s {
            State::Unknown => ServerState::Unknown,
            State::Up => ServerState::Up,
            State::Degraded => ServerState::Drain,
            State::Down => ServerState::Down,
        }
    }

    pub fn to_status(self) -> crate::checks::Status {
        use crate::checks::Status;
        match self {
            ServerState::Up | ServerState::Unknown => Status::Ok,
            ServerState::Drain => Status::Degraded,
            ServerState::Down => Status::Fail,
        }
    }
}

/// This server's state from its checks (and a maintenance drain set through the API).
pub fn own_state(
    rules: &ServerRules,
    targets: &BTreeMap<String, Target>,
    maintenance: Option<&str>,
) -> (ServerState, String) {
    let state_of = |n: &String| targets.get(n).map_or(State::Unknown, |t| t.state);
    let detail = |n: &String| {
        targets
            .get(n)
            .and_then(|t| t.last_error.as_ref().or(t.last.as_ref()))
            .map(|p| p.observation.detail.clone())
            .unwrap_or_default()
    };
    if let Some(n) = rules.critical.iter().find(|n| state_of(n) == State::Down) {
        return (
            ServerState::Down,
            format!("critical check {n} is down: {}", detail(n)),
        );
    }
    // Nothing is said before every check that decides it has been observed once: a
    // server is never told up just before its queue is found over high water.
    if let Some(n) = rules
        .critical
        .iter()
        .chain(&rules.drain)
        .find(|n| state_of(n) == State::Unknown)
    {
        return (
            ServerState::Unknown,
            format!("waiting for the first probe of {n}"),
        );
    }
    if !rules.lines.is_empty() {
        let up = rules
            .lines
            .iter()
            .filter(|n| state_of(n) == State::Up)
            .count() as u32;
        let unknown = rules.lines.iter().any(|n| state_of(n) == State::Unknown);
        if up == 0 && unknown {
            return (
                ServerState::Unknown,
                "waiting for the first probe of the lines".into(),
            );
        }
        if up == 0 {
            return (
                ServerState::Down,
                format!("no usable line ({} configured, none up)", rules.lines.len()),
            );
        }
        if up < rules.min_lines {
            return (
                ServerState::Drain,
                format!("{up} usable lines, fewer than {}", rules.min_lines),
            );
        }
    }
    // A flapping service check drains the server: it is neither up nor down.
    if let Some((n, why)) = rules
        .critical
        .iter()
        .find_map(|n| Some((n, targets.get(n)?.flapping.as_deref()?)))
    {
        return (ServerState::Drain, format!("critical check {n} is {why}"));
    }
    if let Some(n) = rules
        .drain
        .iter()
        .find(|n| matches!(state_of(n), State::Degraded | State::Down))
    {
        return (
            ServerState::Drain,
            format!("{n} is {}: {}", state_of(n), detail(n)),
        );
    }
    if let Some(reason) = maintenance {
        return (ServerState::Drain, format!("maintenance: {reason}"));
    }
    (ServerState::Up, "all routing checks pass".into())
}

/// This server's free capacity in percent, from what its routing checks measure, or None
/// when none measures any. Lines (`[server] lines`): a modem line is free when it is up and
/// not in use; a gateway offers its idle channels out of all its channels while it is not
/// down; any other line check is one line, free when up. Queues (`[server] drain` queue
/// checks with a `high_water`) scale that by the room left below their high water.
pub fn capacity(rules: &ServerRules, targets: &BTreeMap<String, Target>) -> Option<u8> {
    let (mut slots, mut free) = (0.0, 0.0);
    for t in rules.lines.iter().filter_map(|n| targets.get(n)) {
        let usable = matches!(t.state, State::Up | State::Degraded);
        match (t.kind, t.value("channels", None)) {
            ("gateway", Some(total)) if total > 0.0 => {
                slots += total;
                if usable {
                    free += t.value("channels", Some(("state", "idle"))).unwrap_or(0.0);
                }
            }
            ("modem", _) => {
                slots += 1.0;
                // HylaFAX's status says whether the line is in a session (faxgetty holds
                // the lock of an idle line too); without it, a held lock is a busy line.
                let busy = match t.value("session_seconds", None) {
                    Some(s) => s > 0.0,
                    None => t.value("in_use", None) == Some(1.0),
                };
                if t.state == State::Up && !busy {
                    free += 1.0;
                }
            }
            _ => {
                slots += 1.0;
                if t.state == State::Up {
                    free += 1.0;
                }
            }
        }
    }
    let mut share: Option<f64> = (slots > 0.0).then(|| free / slots);
    for t in rules.drain.iter().filter_map(|n| targets.get(n)) {
        if let (Some(depth), Some(high)) = (t.value("depth", None), t.value("high_water", None)) {
            // high_water 0: any job is too many.
            let room = if high > 0.0 {
                (1.0 - depth / high).clamp(0.0, 1.0)
            } else if depth > 0.0 {
                0.0
            } else {
                1.0
            };
            share = Some(share.unwrap_or(1.0) * room);
        }
    }
    share.map(|s| (s * 100.0).round().clamp(0.0, 100.0) as u8)
}

/// A weight scaled by a capacity in percent, down to a tenth of it at most: a routed
/// server never gets 0 from its capacity alone, and when every server is full they keep
/// the shares their weights give them.
pub fn scaled(weight: u8, capacity: Option<u8>) -> u8 {
    match capacity {
        None => weight,
        Some(c) => ((u32::from(weight) * u32::from(c.max(10)) + 50) / 100).max(1) as u8,
    }
}

/// What this agent knows of one server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerView {
    pub name: String,
    pub state: ServerState,
    pub reason: String,
    #[serde(with = "crate::engine::model::rfc3339")]
    pub since: SystemTime,
    /// Last time its agent answered (for this server: now).
    #[serde(default, with = "opt_rfc3339")]
    pub last_active: Option<SystemTime>,
    /// Its agent answers (or this is our own server).
    pub agent_reachable: bool,
    /// The hash its agent publishes of the cluster sections, when known.
    pub config_hash: Option<String>,
    /// Its agent's shared sections differ from ours.
    pub config_drift: bool,
    /// Which (`cluster`, `server`, `kamailio`, `haproxy`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drift_sections: Vec<String>,
    /// This agent tells the routing layer about this server (its own, or an inactive peer
    /// it speaks for by agreement; see [`speaks_for`]).
    pub speaker: bool,
    /// Its free capacity in percent (see [`capacity`]), damped; None when not measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<u8>,
}

/// Optional RFC 3339 timestamps.
pub mod opt_rfc3339 {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.collect_str(&humantime::format_rfc3339_millis(*t)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
        let s = Option::<String>::deserialize(d)?;
        s.map(|s| humantime::parse_rfc3339_weak(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// Who reaches whom, as agent `me` knows it: its own polls, and the `sees` each peer it
/// reaches publishes. A server is judged by agreement, never by one agent alone.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reach {
    /// `me` and the peers whose agents it reaches now.
    pub alive: Vec<String>,
    /// `alive` is a majority of the members (half exactly, when it holds the first
    /// member: the tie-breaker of even clusters). Without it, this agent changes nothing.
    pub quorum: bool,
    /// Servers that a majority of the members cannot reach (half, when the first member is
    /// among them), as far as `me` knows, each with the agents that cannot, in member
    /// order: inactive, spoken for by one of those agents.
    pub inactive: BTreeMap<String, Vec<String>>,
}

/// Works out [`Reach`] for agent `me`: `sees` is what `me` reaches (peer name -> its agent
/// answers), `published` what each peer that `me` reaches publishes of its own reach.
pub fn reach(
    members: &[Member],
    me: &str,
    sees: &BTreeMap<String, bool>,
    published: &BTreeMap<String, BTreeMap<String, bool>>,
) -> Reach {
    let alive: Vec<String> = members
        .iter()
        .filter(|m| m.name == me || sees.get(&m.name) == Some(&true))
        .map(|m| m.name.clone())
        .collect();
    let n = members.len();
    let first = members.first().map(|m| m.name.as_str());
    let quorum = alive.len() * 2 > n
        || (alive.len() * 2 == n && first.is_some_and(|f| alive.iter().any(|a| a == f)));
    let reaches = |voter: &str, server: &str| {
        voter == server
            || if voter == me {
                sees.get(server) == Some(&true)
            } else {
                published
                    .get(voter)
                    .and_then(|p| p.get(server))
                    .copied()
                    .unwrap_or(false)
            }
    };
    let mut inactive = BTreeMap::new();
    if quorum {
        for m in members {
            let cannot: Vec<String> = alive
                .iter()
                .filter(|v| !reaches(v, &m.name))
                .cloned()
                .collect();
            // Counted against every member, not against the agents this one happens to
            // reach: two agents that reach different sets still agree. Half exactly
            // counts when the first member is among them (even clusters).
            let tie = cannot.len() * 2 == n && first.is_some_and(|f| cannot.iter().any(|c| c == f));
            if cannot.len() * 2 > n || tie {
                inactive.insert(m.name.clone(), cannot);
            }
        }
    }
    Reach {
        alive,
        quorum,
        inactive,
    }
}

/// Whether `me` writes `server`'s state into the routing outputs: exactly one agent does
/// (see [`speaker_of`]).
pub fn speaks_for(
    members: &[Member],
    reach: &Reach,
    sees: &BTreeMap<String, bool>,
    published: &BTreeMap<String, BTreeMap<String, bool>>,
    me: &str,
    server: &str,
) -> bool {
    speaker_of(members, reach, sees, published, me, server) == Some(me)
}

/// The agent that writes `server`'s state into the routing outputs, as `me` works it out:
/// its own agent, while `me` holds a quorum and it is not inactive; else, once it is
/// inactive, the first agent in member order that is alive (reached by `me`, or by an
/// agent `me` reaches) and not known to reach it. Every agent of the majority works out
/// the same one, even when they reach different agents. Without quorum, `me` knows of
/// none and writes nothing, not even its own server.
pub fn speaker_of<'a>(
    members: &'a [Member],
    reach: &Reach,
    sees: &BTreeMap<String, bool>,
    published: &BTreeMap<String, BTreeMap<String, bool>>,
    me: &str,
    server: &'a str,
) -> Option<&'a str> {
    if !reach.quorum {
        return None;
    }
    if !reach.inactive.contains_key(server) {
        return Some(server);
    }
    let alive = |m: &str| {
        m == me || sees.get(m) == Some(&true) || published.values().any(|p| p.get(m) == Some(&true))
    };
    let reaches_server = |m: &str| {
        if m == me {
            sees.get(server) == Some(&true)
        } else {
            published
                .get(m)
                .is_some_and(|p| p.get(server) == Some(&true))
        }
    };
    members
        .iter()
        .map(|m| m.name.as_str())
        .find(|m| *m != server && alive(m) && !reaches_server(m))
}

/// One server in a group's routes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteEntry {
    pub server: String,
    pub host: String,
    pub state: ServerState,
    pub reason: String,
    /// Its weight for new work: the configured weight scaled by its capacity.
    pub weight: u8,
    /// Its free capacity in percent, when its checks measure it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<u8>,
    #[serde(with = "crate::engine::model::rfc3339")]
    pub since: SystemTime,
    pub routable: bool,
}

/// A group's routes, in precedence order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupRoutes {
    pub group: String,
    /// Fewer servers routable than the panic threshold: every server is routed.
    pub panic: bool,
    pub servers: Vec<RouteEntry>,
}

/// The routes of every group. Only `up` servers take new work; in panic mode (fewer
/// routable than `panic_threshold` percent) every server of the group stays routed.
pub fn routes(
    groups: &[Group],
    members: &[Member],
    views: &BTreeMap<String, ServerView>,
    panic_threshold: u8,
) -> Vec<GroupRoutes> {
    groups
        .iter()
        .map(|g| {
            let mut servers: Vec<RouteEntry> = g
                .order
                .iter()
                .filter_map(|name| {
                    let m = members.iter().find(|m| &m.name == name)?;
                    let v = views.get(name)?;
                    Some(RouteEntry {
                        server: name.clone(),
                        host: m.host.clone().unwrap_or_else(|| m.name.clone()),
                        state: v.state,
                        reason: v.reason.clone(),
                        weight: scaled(
                            g.weights.get(name).copied().unwrap_or(m.weight),
                            v.capacity,
                        ),
                        capacity: v.capacity,
                        since: v.since,
                        routable: v.state == ServerState::Up,
                    })
                })
                .collect();
            let routable = servers.iter().filter(|s| s.routable).count();
            let panic = panic_threshold > 0
                && routable * 100 < usize::from(panic_threshold) * servers.len();
            if panic {
                for s in &mut servers {
                    s.routable = true;
                }
            }
            GroupRoutes {
                group: g.name.clone(),
                panic,
                servers,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::Observation;
    use crate::engine::model::Probe;
    use std::time::Duration;

    fn target(name: &str, state: State) -> (String, Target) {
        let mut t = Target::new(name, "tcp", &[], Duration::from_secs(1));
        t.state = state;
        t.last = Some(Probe {
            at: SystemTime::now(),
            duration: Duration::ZERO,
            observation: Observation::ok(format!("{name} says hi")),
        });
        (name.to_string(), t)
    }

    /// A value of a probe: name, label, value.
    type Measure<'a> = (&'static str, Option<(&'static str, &'a str)>, f64);

    /// A target of `kind` whose last probe carried `values`.
    fn measured(
        name: &str,
        kind: &'static str,
        state: State,
        values: &[Measure],
    ) -> (String, Target) {
        let (n, mut t) = target(name, state);
        t.kind = kind;
        let obs = &mut t.last.as_mut().unwrap().observation;
        for (v, label, x) in values {
            obs.values.push(crate::checks::Value {
                name: v,
                help: "",
                labels: label.iter().map(|(k, l)| (*k, l.to_string())).collect(),
                value: *x,
            });
        }
        (n, t)
    }

    #[test]
    fn capacity_counts_free_lines_idle_channels_and_queue_room() {
        use State::*;
        let modem = |n, st, busy: f64| measured(n, "modem", st, &[("in_use", None, busy)]);
        let gw = |idle: f64, busy: f64| {
            measured(
                "gw",
                "gateway",
                Up,
                &[
                    ("channels", Some(("state", "idle")), idle),
                    ("channels", Some(("state", "busy")), busy),
                    ("channels", Some(("state", "out_of_service")), 0.0),
                ],
            )
        };
        let q = |depth: f64| {
            measured(
                "q",
                "queue",
                Up,
                &[("depth", None, depth), ("high_water", None, 10.0)],
            )
        };
        let rules = |lines: &[&str], drain: &[&str]| ServerRules {
            critical: vec![],
            drain: drain.iter().map(|s| s.to_string()).collect(),
            lines: lines.iter().map(|s| s.to_string()).collect(),
            min_lines: 1,
        };
        let all: BTreeMap<String, Target> = [
            modem("l1", Up, 0.0),
            modem("l2", Up, 0.0),
            modem("l3", Up, 1.0),
            modem("l4", Down, 0.0),
            gw(15.0, 45.0),
            q(5.0),
            target("smtp", Up),
        ]
        .into_iter()
        .collect();
        // A passive line: faxgetty holds the lock of an idle line; HylaFAX's status says
        // whether it is in a session.
        let passive = |n, session: f64| {
            measured(
                n,
                "modem",
                Up,
                &[("in_use", None, 1.0), ("session_seconds", None, session)],
            )
        };
        let hylafax: BTreeMap<String, Target> =
            [passive("p1", 0.0), passive("p2", 0.0), passive("p3", 42.0)]
                .into_iter()
                .collect();
        assert_eq!(
            capacity(&rules(&["p1", "p2", "p3"], &[]), &hylafax),
            Some(67)
        );
        // 2 of 4 modem lines free.
        assert_eq!(
            capacity(&rules(&["l1", "l2", "l3", "l4"], &[]), &all),
            Some(50)
        );
        // 15 of 60 channels idle, one slot per channel, not one per gateway.
        assert_eq!(capacity(&rules(&["gw"], &[]), &all), Some(25));
        assert_eq!(capacity(&rules(&["l1", "l4", "gw"], &[]), &all), Some(26));
        // Half the room below high water left halves it.
        assert_eq!(
            capacity(&rules(&["l1", "l2", "l3", "l4"], &["q"]), &all),
            Some(25)
        );
        assert_eq!(capacity(&rules(&[], &["q"]), &all), Some(50));
        // Nothing measured: no capacity, weights stay as configured.
        assert_eq!(capacity(&rules(&[], &["smtp"]), &all), None);
        assert_eq!(scaled(100, None), 100);
        assert_eq!(scaled(50, Some(50)), 25);
        assert_eq!(scaled(100, Some(0)), 10, "never 0 from capacity alone");
        assert_eq!(
            (scaled(100, Some(0)), scaled(50, Some(0))),
            (10, 5),
            "full servers keep their shares"
        );
        assert_eq!(scaled(5, Some(0)), 1);
    }

    fn rules() -> ServerRules {
        ServerRules {
            critical: vec!["smtp".into()],
            drain: vec!["queue".into()],
            lines: vec!["line1".into(), "line2".into()],
            min_lines: 2,
        }
    }

    #[test]
    fn own_state_rules() {
        let all = |smtp, queue, l1, l2| -> BTreeMap<String, Target> {
            [
                target("smtp", smtp),
                target("queue", queue),
                target("line1", l1),
                target("line2", l2),
            ]
            .into_iter()
            .collect()
        };
        use State::*;
        assert_eq!(
            own_state(&rules(), &all(Up, Up, Up, Up), None).0,
            ServerState::Up
        );
        assert_eq!(
            own_state(&rules(), &all(Down, Up, Up, Up), None).0,
            ServerState::Down
        );
        assert_eq!(
            own_state(&rules(), &all(Unknown, Up, Up, Up), None).0,
            ServerState::Unknown
        );
        assert_eq!(
            own_state(&rules(), &all(Up, Degraded, Up, Up), None).0,
            ServerState::Drain
        );
        assert_eq!(
            own_state(&rules(), &all(Up, Unknown, Up, Up), None).0,
            ServerState::Unknown,
            "not up before the queue was looked at"
        );
        assert_eq!(
            own_state(&rules(), &all(Up, Up, Up, Down), None).0,
            ServerState::Drain
        );
        let (s, why) = own_state(&rules(), &all(Up, Up, Down, Down), None);
        assert_eq!(
            (s, why.as_str()),
            (ServerState::Down, "no usable line (2 configured, none up)")
        );
        let (s, why) = own_state(&rules(), &all(Up, Up, Up, Up), Some("patching"));
        assert_eq!(
            (s, why.as_str()),
            (ServerState::Drain, "maintenance: patching")
        );
    }

    fn member(name: &str) -> Member {
        Member {
            name: name.into(),
            agent: format!("http://{name}:9847"),
            service: None,
            host: None,
            sip: None,
            weight: 100,
        }
    }

    fn view(name: &str, state: ServerState, reachable: bool) -> (String, ServerView) {
        (
            name.into(),
            ServerView {
                name: name.into(),
                state,
                reason: String::new(),
                since: SystemTime::UNIX_EPOCH,
                last_active: None,
                agent_reachable: reachable,
                config_hash: None,
                config_drift: false,
                drift_sections: Vec::new(),
                speaker: false,
                capacity: None,
            },
        )
    }

    /// Each agent's [`Reach`] for a directed graph `links` (a -> b: a's agent reaches b's),
    /// with the `sees` every agent publishes.
    type Seen = BTreeMap<String, bool>;

    fn views_of(
        names: &[&str],
        links: &dyn Fn(&str, &str) -> bool,
    ) -> Vec<(String, Reach, Seen, BTreeMap<String, Seen>)> {
        let members: Vec<Member> = names.iter().map(|n| member(n)).collect();
        let sees = |a: &str| -> BTreeMap<String, bool> {
            names
                .iter()
                .filter(|b| **b != a)
                .map(|b| (b.to_string(), links(a, b)))
                .collect()
        };
        names
            .iter()
            .map(|me| {
                let published: BTreeMap<String, Seen> = names
                    .iter()
                    .filter(|p| **p != *me && links(me, p))
                    .map(|p| (p.to_string(), sees(p)))
                    .collect();
                let r = reach(&members, me, &sees(me), &published);
                (me.to_string(), r, sees(me), published)
            })
            .collect()
    }

    fn writers(names: &[&str], links: &dyn Fn(&str, &str) -> bool, server: &str) -> Vec<String> {
        let members: Vec<Member> = names.iter().map(|n| member(n)).collect();
        views_of(names, links)
            .into_iter()
            .filter(|(me, r, sees, published)| speaks_for(&members, r, sees, published, me, server))
            .map(|(me, ..)| me)
            .collect()
    }

    #[test]
    fn exactly_one_survivor_speaks_for_the_dead() {
        let names = ["fax1", "fax2", "fax3"];
        // fax1's agent is dead: nobody reaches it, it reaches nobody.
        let dead = |a: &str, b: &str| a != "fax1" && b != "fax1";
        assert_eq!(writers(&names, &dead, "fax1"), ["fax2"]);
        assert_eq!(writers(&names, &dead, "fax2"), ["fax2"]);
        // fax1 cannot reach fax2 (one way); fax3 reaches both: fax2 is not inactive, and
        // only fax2 writes its state.
        let one_way = |a: &str, b: &str| !(a == "fax1" && b == "fax2");
        for s in names {
            assert_eq!(writers(&names, &one_way, s), [s], "{s}");
        }
        let r = &views_of(&names, &one_way)[0].1;
        assert!(r.inactive.is_empty(), "{r:?}");
        // fax1 cut off both ways: it has no quorum and writes nothing; fax2 speaks for it.
        let isolated = |a: &str, b: &str| a != "fax1" && b != "fax1";
        let r = &views_of(&names, &isolated)[0].1;
        assert!(!r.quorum);
        assert_eq!(writers(&names, &isolated, "fax1"), ["fax2"]);
        // Nobody reaches fax3, fax3 still reaches the others: fax3 yields to fax1.
        let deaf = |_: &str, b: &str| b != "fax3";
        assert_eq!(writers(&names, &deaf, "fax3"), ["fax1"]);
    }

    #[test]
    fn at_most_one_writer_per_server_under_random_partitions() {
        // 300 seeded clusters of 2 to 5 agents (3,000 pass too): symmetric partitions into sides, plus one
        // one-way cut. However the links fall, no server ever has two writers, and a
        // server whose agent reaches and is reached by a majority writes itself.
        let mut rng = crate::testing::Lcg(0x5eed_2026);
        let all = ["fax1", "fax2", "fax3", "fax4", "fax5"];
        for round in 0..300 {
            let n = 2 + (rng.next_u64() >> 33) as usize % 4;
            let names = &all[..n];
            let side: Vec<u64> = (0..n).map(|_| (rng.next_u64() >> 33) % 3).collect();
            let cut = (
                (rng.next_u64() >> 33) as usize % n,
                (rng.next_u64() >> 33) as usize % n,
            );
            let idx = |s: &str| names.iter().position(|x| *x == s).unwrap_or(0);
            let links = |a: &str, b: &str| {
                let (i, j) = (idx(a), idx(b));
                side[i] == side[j] && (i, j) != cut
            };
            for s in names {
                let w = writers(names, &links, s);
                assert!(
                    w.len() <= 1,
                    "round {round}: {s} has writers {w:?} (sides {side:?}, cut {cut:?})"
                );
            }
        }
    }

    #[test]
    fn routes_in_order_with_panic_mode() {
        let members: Vec<Member> = ["fax1", "fax2", "fax3", "fax4"]
            .iter()
            .map(|n| member(n))
            .collect();
        let groups = vec![Group {
            name: "alerts".into(),
            order: vec!["fax2".into(), "fax1".into(), "fax3".into(), "fax4".into()],
            weights: [("fax1".to_string(), 50)].into_iter().collect(),
        }];
        use ServerState::*;
        let views: BTreeMap<_, _> = [
            view("fax1", Up, true),
            view("fax2", Down, false),
            view("fax3", Drain, true),
            view("fax4", Up, true),
        ]
        .into_iter()
        .collect();
        let r = routes(&groups, &members, &views, 0);
        let routable: Vec<_> = r[0]
            .servers
            .iter()
            .filter(|s| s.routable)
            .map(|s| (s.server.as_str(), s.weight))
            .collect();
        assert_eq!(routable, [("fax1", 50), ("fax4", 100)]);
        assert!(!r[0].panic);
        // 2 of 4 routable is below a 75 % threshold: panic, every server routed.
        let r = routes(&groups, &members, &views, 75);
        assert!(r[0].panic);
        assert!(r[0].servers.iter().all(|s| s.routable));
    }
}
