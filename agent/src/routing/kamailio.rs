//! Kamailio's dispatcher, over JSON-RPC on HTTP (modules xhttp + jsonrpcs): each server this
//! agent speaks for is set `a` (active) when up, and `d` (disabled) when down or draining
//! (`i`, inactive, would be undone by Kamailio's own OPTIONS probing). On every change and
//! every `reassert_interval` the wanted states are compared with `dispatcher.list` and
//! re-asserted, so a Kamailio that restarted (its list back from the file) or drifted is put
//! right. In panic mode no server of a panicking group is disabled. Nothing is asserted
//! before the agent has learned the cluster's view.
//!
//! With `rweight = true`, each server's weight scaled by its free capacity (1 to 100) is
//! kept in its destination's `rweight` attribute, for `ds_select_dst(set, "8")` (relative
//! weight). The dispatcher has no RPC to change attributes, so a changed weight is written
//! with `dispatcher.remove` and `dispatcher.add` (its other attributes, priority and state
//! kept); this needs `modparam("dispatcher", "reload_delta", 0)`, or Kamailio refuses the
//! add for 5 s. A destination removed and not yet added again is added at the next attempt.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use super::cluster::Member;
use super::decision::ServerState;
use super::OutputStats;
use super::Snapshot;

/// `[kamailio]`: Kamailio's dispatcher, over JSON-RPC (xhttp + jsonrpcs).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KamailioConfig {
    /// `http://127.0.0.1:5071/RPC`.
    pub rpc_url: String,
    /// Dispatcher set id.
    #[serde(default = "default_set")]
    pub set: u32,
    /// How often the wanted states are compared with `dispatcher.list` and re-asserted.
    #[serde(default = "default_reassert", with = "crate::vocab::duration")]
    pub reassert_interval: Duration,
    /// Keep each server's capacity-scaled weight in its `rweight` attribute.
    #[serde(default)]
    pub rweight: bool,
}

impl KamailioConfig {
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.reassert_interval < Duration::from_millis(100) {
            return Err((
                "kamailio.reassert_interval".into(),
                "must be at least 100ms (each one asks Kamailio for its list)".into(),
            ));
        }
        Ok(())
    }
}

fn default_set() -> u32 {
    1
}
fn default_reassert() -> Duration {
    Duration::from_secs(2)
}

/// Calls one JSON-RPC method; returns its `result`.
pub async fn rpc(url: &str, method: &str, params: Value) -> Result<Value, String> {
    let body = json!({"jsonrpc": "2.0", "method": method, "params": params, "id": 1}).to_string();
    let headers = [("Content-Type".to_string(), "application/json".to_string())];
    let call = crate::http_client::request("POST", url, &headers, body.into_bytes(), 4 << 20);
    let resp = tokio::time::timeout(Duration::from_secs(3), call)
        .await
        .map_err(|_| format!("{url} did not answer {method} within 3s"))?
        .map_err(|e| e.to_string())?;
    let v: Value = serde_json::from_slice(&resp.body)
        .map_err(|e| format!("{method}: {url} sent no JSON ({e})"))?;
    if let Some(err) = v.get("error") {
        return Err(format!("{method}: {err}"));
    }
    Ok(v.get("result").cloned().unwrap_or(Value::Null))
}

/// One destination of a set, as `dispatcher.list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dest {
    /// State letter (`A`ctive, `I`nactive, `D`isabled, `T`rying) and `P`robing or `X`.
    pub flags: String,
    pub priority: i64,
    /// The attribute string (`duid=gw1;rweight=50`).
    pub attrs: String,
    pub rweight: Option<u8>,
}

impl Dest {
    /// The list file's flags number for this destination in `state` (`a` or `d`):
    /// disabled is 4, probing 8.
    fn file_flags(&self, state: &str) -> u32 {
        let probing = if self.flags.get(1..2) == Some("P") {
            8
        } else {
            0
        };
        probing | if state == "d" { 4 } else { 0 }
    }

    /// Its attributes with `rweight` set to `w`, the others kept in order.
    fn attrs_with_rweight(&self, w: u8) -> String {
        let mut parts: Vec<String> = self
            .attrs
            .split(';')
            .filter(|p| !p.is_empty() && !p.trim_start().starts_with("rweight="))
            .map(str::to_string)
            .collect();
        parts.push(format!("rweight={w}"));
        parts.join(";")
    }
}

/// The destinations of one set by URI, from a `dispatcher.list` result.
pub fn dests(list: &Value, set: u32) -> BTreeMap<String, Dest> {
    let mut out = BTreeMap::new();
    for record in list["RECORDS"].as_array().into_iter().flatten() {
        let s = &record["SET"];
        if s["ID"].as_u64() != Some(u64::from(set)) {
            continue;
        }
        for t in s["TARGETS"].as_array().into_iter().flatten() {
            let d = &t["DEST"];
            if let (Some(uri), Some(f)) = (d["URI"].as_str(), d["FLAGS"].as_str()) {
                let attrs = &d["ATTRS"];
                out.insert(
                    uri.to_string(),
                    Dest {
                        flags: f.to_string(),
                        priority: d["PRIORITY"].as_i64().unwrap_or(0),
                        attrs: attrs["BODY"].as_str().unwrap_or("").to_string(),
                        rweight: attrs["RWEIGHT"]
                            .as_u64()
                            .filter(|w| (1..=100).contains(w))
                            .map(|w| w as u8),
                    },
                );
            }
        }
    }
    out
}

/// Destination URI -> FLAGS of one set, from a `dispatcher.list` result.
pub fn flags(list: &Value, set: u32) -> BTreeMap<String, String> {
    dests(list, set)
        .into_iter()
        .map(|(uri, d)| (uri, d.flags))
        .collect()
}

/// What the Kamailio output reads of the config: its section and the members' SIP URIs.
#[derive(Debug, Clone, PartialEq)]
pub struct Section {
    pub kamailio: Option<KamailioConfig>,
    pub members: Vec<Member>,
}

/// What Kamailio is told: the state of each server this agent speaks for, panic, and
/// its capacity.
fn decision(snap: &Snapshot) -> Vec<(String, ServerState, bool, Option<u8>)> {
    snap.servers
        .iter()
        .filter(|v| v.speaker)
        .map(|v| (v.name.clone(), v.state, snap.in_panic(&v.name), v.capacity))
        .collect()
}

/// Destinations removed to change their weight and not yet added again, and whether
/// Kamailio refused an add (`reload_delta` not 0): weights are then left as they are.
#[derive(Default)]
struct Removed {
    dests: BTreeMap<String, Dest>,
    refused: bool,
}

/// Tells Kamailio when the decision changes, and checks it every `reassert_interval`
/// (a restarted Kamailio, or drift): a snapshot that changed only in what it does not
/// decide (last-active times) costs no RPC.
pub async fn run(
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    config: watch::Receiver<Section>,
    stats: Arc<OutputStats>,
    cancel: CancellationToken,
) {
    let mut told = None;
    let mut removed = Removed::default();
    let mut warned = std::collections::BTreeSet::new();
    let mut next = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = snapshots.changed() => if r.is_err() { return },
            _ = tokio::time::sleep_until(next) => {}
        }
        let snap = snapshots.borrow_and_update().clone();
        let c = config.borrow().clone();
        let interval = c
            .kamailio
            .as_ref()
            .map_or(Duration::from_secs(2), |k| k.reassert_interval);
        let now = tokio::time::Instant::now();
        let Some(k) = &c.kamailio else {
            next = now + interval;
            continue;
        };
        let want = decision(&snap);
        // Asserted at once when the decision changes; else (and after a failure) every
        // reassert_interval, never at each evaluation.
        let changed = told.as_ref().is_some_and(|t| *t != want);
        if !snap.learned || (now < next && !changed) {
            if now >= next {
                next = now + interval;
            }
            continue;
        }
        next = now + interval;
        match assert_states(&snap, &c, k, &stats, &mut removed, &mut warned).await {
            Ok(()) => told = Some(want),
            Err(e) => {
                told = None;
                stats.failed();
                error!(error = %e, retry_in = ?interval, "Cannot bring Kamailio's dispatcher in line; retrying at the next reassert_interval.");
            }
        }
    }
}

async fn assert_states(
    snap: &Snapshot,
    c: &Section,
    k: &KamailioConfig,
    stats: &OutputStats,
    removed: &mut Removed,
    warned: &mut std::collections::BTreeSet<String>,
) -> Result<(), String> {
    let list = match rpc(&k.rpc_url, "dispatcher.list", json!([])).await {
        Ok(l) => l,
        // Kamailio's answer for an empty list (every destination removed).
        Err(e) if e.contains("No Destination Sets") => Value::Null,
        Err(e) => return Err(e),
    };
    let mut current = dests(&list, k.set);
    // A destination we removed that is back (our add went through after all, or another
    // hand added it) is no longer ours to add.
    removed.dests.retain(|uri, _| !current.contains_key(uri));
    for v in snap.servers.iter().filter(|v| v.speaker) {
        let Some(member) = c.members.iter().find(|m| m.name == v.name) else {
            continue;
        };
        let Some(uri) = member.sip.clone() else {
            continue;
        };
        let panic = snap.in_panic(&v.name);
        let want = match v.state {
            ServerState::Unknown => continue,
            ServerState::Up => "a",
            ServerState::Drain | ServerState::Down if panic => "a",
            ServerState::Drain | ServerState::Down => "d",
        };
        if let (false, Some(gone)) = (current.contains_key(&uri), removed.dests.get(&uri)) {
            // Removed for a new weight, and the add failed: the weight is re-applied below.
            let mut back = gone.clone();
            let probing = gone.flags.get(1..2).unwrap_or("X");
            back.flags = format!("{}{probing}", if want == "d" { 'D' } else { 'A' });
            current.insert(uri.clone(), back);
        }
        let Some(dest) = current.get(&uri) else {
            if warned.insert(uri.clone()) {
                tracing::warn!(server = %v.name, uri = %uri, set = k.set, "This server's sip URI is not in Kamailio's dispatcher set: Kamailio never routes to it; add it to the dispatcher list, or fix [[member]] sip.");
            }
            continue;
        };
        let gone = removed.dests.contains_key(&uri);
        let rweight = (k.rweight && v.capacity.is_some() && (!removed.refused || gone))
            .then(|| super::decision::scaled(member.weight, v.capacity).clamp(1, 100));
        if let Some(w) = rweight.filter(|w| dest.rweight != Some(*w) || gone) {
            let attrs = dest.attrs_with_rweight(w);
            let flags = dest.file_flags(want);
            if !gone {
                // Remembered only once it is gone, so that a refused remove never leads to
                // a second copy.
                rpc(&k.rpc_url, "dispatcher.remove", json!([k.set, uri])).await?;
                removed.dests.insert(uri.clone(), dest.clone());
            }
            let added = rpc(
                &k.rpc_url,
                "dispatcher.add",
                json!([k.set, uri, flags, dest.priority, attrs]),
            )
            .await;
            if let Err(e) = added {
                if e.contains("Ongoing reload") && !removed.refused {
                    removed.refused = true;
                    error!(uri = %uri, "Kamailio refuses a second reload within its reload_delta: set modparam(\"dispatcher\", \"reload_delta\", 0). Weights are no longer changed; the destination is added again at the next attempt.");
                }
                return Err(e);
            }
            removed.dests.remove(&uri);
            stats.changed();
            info!(server = %v.name, uri = %uri, rweight = w, was = ?dest.rweight, state = want, "Kamailio dispatcher weight set.");
            continue;
        }
        let now = &dest.flags;
        let disabled = now.starts_with('D');
        if disabled == (want == "d") {
            continue;
        }
        rpc(
            &k.rpc_url,
            "dispatcher.set_state",
            json!([want, k.set, uri]),
        )
        .await?;
        stats.changed();
        info!(server = %v.name, uri = %uri, state = want, was = %now, "Kamailio dispatcher set.");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_dispatcher_list() {
        // As Kamailio 5.6 answers dispatcher.list.
        let v: Value = serde_json::from_str(r#"{"NRSETS":1,"RECORDS":[{"SET":{"ID":1,"TARGETS":[
            {"DEST":{"URI":"sip:127.0.0.1:25060","FLAGS":"AP","PRIORITY":0,"ATTRS":{"BODY":"duid=gw1"}}},
            {"DEST":{"URI":"sip:127.0.0.1:25061","FLAGS":"DX","PRIORITY":0}}]}}]}"#).unwrap();
        let f = flags(&v, 1);
        assert_eq!(f["sip:127.0.0.1:25060"], "AP");
        assert_eq!(f["sip:127.0.0.1:25061"], "DX");
        assert!(flags(&v, 2).is_empty());
        assert!(flags(&Value::Null, 1).is_empty());
        let d = &dests(&v, 1)["sip:127.0.0.1:25060"];
        assert_eq!(d.attrs_with_rweight(20), "duid=gw1;rweight=20");
        assert_eq!(d.file_flags("d"), 12, "disabled, still probed");
        assert_eq!(dests(&v, 1)["sip:127.0.0.1:25061"].file_flags("a"), 0);
        let weighted = Dest {
            attrs: "duid=a;rweight=50;maxload=9".into(),
            ..d.clone()
        };
        assert_eq!(
            weighted.attrs_with_rweight(7),
            "duid=a;maxload=9;rweight=7",
            "the old rweight replaced, the others kept"
        );
    }
}
