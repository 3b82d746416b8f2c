//! TELAGENT-MIB's objects as an ordered map from OID to value, built for each request the
//! AgentX subagent answers from what /v1/status shows too (the checks of the model, the
//! routing snapshot, the traffic counters), so SNMP and /v1/status always agree.

use std::collections::BTreeMap;
use std::time::SystemTime;

use super::ber::Val;
use super::mib::{self, Table};
use crate::engine::model::Target;
use crate::engine::tracker::State;
use crate::routing::decision::ServerState;
use crate::routing::Snapshot;
use crate::traffic::{Count, Key};

pub type View = BTreeMap<Vec<u32>, Val>;

fn unix(t: Option<SystemTime>) -> Val {
    Val::Gauge32(
        t.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs().min(u64::from(u32::MAX)) as u32),
    )
}

fn text(s: &str, max: usize) -> Val {
    Val::Str(super::ber::cut(s, max).as_bytes().to_vec())
}

fn state(s: State) -> Val {
    Val::Int(crate::notify::NState::from(s).mib_value())
}

fn server_state(s: ServerState) -> Val {
    Val::Int(match s {
        ServerState::Unknown => 1,
        ServerState::Up => 2,
        ServerState::Drain => 3,
        ServerState::Down => 4,
    })
}

/// Puts one row: `values` in the order of the table's columns.
fn row(view: &mut View, t: &Table, index: u32, values: Vec<Val>) {
    for ((col, _, _), v) in t.columns.iter().zip(values) {
        let mut oid = t.entry.clone();
        oid.extend([*col, index]);
        view.insert(oid, v);
    }
}

/// A value of the target's last probe, 0 when it had none.
fn value(t: &Target, name: &str, label: Option<(&str, &str)>) -> f64 {
    t.value(name, label).unwrap_or(0.0)
}

fn gauge(v: f64) -> Val {
    Val::Gauge32(v.clamp(0.0, f64::from(u32::MAX)) as u32)
}

/// What the MIB shows.
pub struct Sources<'a> {
    pub server: &'a str,
    pub targets: &'a BTreeMap<String, Target>,
    pub cluster: &'a Snapshot,
    pub traffic: &'a BTreeMap<Key, Count>,
    /// Stable row numbers.
    pub indexes: &'a super::index::Indexes,
}

pub fn build(src: &Sources) -> View {
    let mut view = View::new();
    for (oid, v) in [
        (mib::agent_version(), text(env!("CARGO_PKG_VERSION"), 64)),
        (mib::agent_server(), text(src.server, 64)),
    ] {
        let mut o = oid;
        o.push(0);
        view.insert(o, v);
    }
    servers(&mut view, src.cluster, src.indexes);
    checks(&mut view, src.targets, src.indexes);
    traffic(&mut view, src.traffic, src.indexes);
    view
}

/// telagentServerTable: every server of the cluster as this agent sees it.
fn servers(view: &mut View, c: &Snapshot, indexes: &super::index::Indexes) {
    let t = mib::server_table();
    let numbers = indexes.of("server", c.servers.iter().map(|s| s.name.as_str()));
    for s in &c.servers {
        row(
            view,
            &t,
            numbers[&s.name],
            vec![
                text(&s.name, 64),
                server_state(s.state),
                text(&s.reason, 255),
                unix(s.last_active),
                Val::Int(s.capacity.map_or(-1, i64::from)),
            ],
        );
    }
}

/// telagentCheckTable, and the line, gateway and queue tables that share its index.
fn checks(view: &mut View, targets: &BTreeMap<String, Target>, indexes: &super::index::Indexes) {
    let checks = mib::check_table();
    let numbers = indexes.of("check", targets.keys().map(String::as_str));
    for t in targets.values() {
        let index = numbers[&t.name];
        let detail = t
            .last
            .as_ref()
            .map_or("", |p| p.observation.detail.as_str());
        row(
            view,
            &checks,
            index,
            vec![
                text(&t.name, 64),
                text(t.kind, 16),
                state(t.state),
                text(detail, 255),
                unix(t.last.as_ref().map(|p| p.at)),
            ],
        );
        match t.kind {
            "modem" => line(view, index, t),
            "gateway" => gateway(view, index, t),
            "queue" => queue(view, index, t),
            _ => {}
        }
    }
}

/// telagentLineTable: a modem's state and identity.
fn line(view: &mut View, index: u32, t: &Target) {
    let info = |label: &str| {
        t.values()
            .iter()
            .find(|v| v.name == "info")
            .and_then(|v| v.labels.iter().find(|(k, _)| *k == label))
            .map_or(String::new(), |(_, x)| x.clone())
    };
    row(
        view,
        &mib::line_table(),
        index,
        vec![
            text(&t.name, 64),
            state(t.state),
            text(&info("manufacturer"), 128),
            text(&info("model"), 128),
            unix(t.last.as_ref().map(|p| p.at)),
        ],
    );
}

/// telagentGatewayTable: channels by state and the trunk alarm.
fn gateway(view: &mut View, index: u32, t: &Target) {
    let ch = |s: &str| value(t, "channels", Some(("state", s)));
    let (idle, busy, oos) = (ch("idle"), ch("busy"), ch("out_of_service"));
    row(
        view,
        &mib::gateway_table(),
        index,
        vec![
            text(&t.name, 64),
            state(t.state),
            gauge(idle + busy + oos),
            gauge(idle),
            gauge(busy),
            gauge(oos),
            Val::Int(if value(t, "trunk_alarm", None) > 0.0 {
                1
            } else {
                2
            }),
        ],
    );
}

/// telagentQueueTable: depth and oldest age.
fn queue(view: &mut View, index: u32, t: &Target) {
    row(
        view,
        &mib::queue_table(),
        index,
        vec![
            text(&t.name, 64),
            state(t.state),
            gauge(value(t, "depth", None)),
            gauge(value(t, "oldest_age_seconds", None)),
        ],
    );
}

/// telagentTrafficTable: lifetime counters per server.
fn traffic(view: &mut View, lifetime: &BTreeMap<Key, Count>, indexes: &super::index::Indexes) {
    let mut per_server: BTreeMap<&str, crate::traffic::totals::Row> = BTreeMap::new();
    for (k, c) in lifetime {
        per_server.entry(k.server.as_str()).or_default().add(
            k.direction,
            k.ok,
            c.messages,
            c.pages,
        );
    }
    let t = mib::traffic_table();
    let numbers = indexes.of("traffic", per_server.keys().copied());
    for (server, r) in &per_server {
        row(
            view,
            &t,
            numbers[*server],
            vec![
                text(server, 64),
                Val::Counter64(r.sent),
                Val::Counter64(r.failed),
                Val::Counter64(r.received),
                Val::Counter64(r.receive_failed),
                Val::Counter64(r.pages_sent),
                Val::Counter64(r.pages_received),
            ],
        );
    }
}
