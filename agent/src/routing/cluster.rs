//! Cluster configuration: the members (every agent of a cluster has the same list, in the
//! same precedence order), routing groups and how this server's own state follows its
//! checks. Each routing output's section is beside its code.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[cluster]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// How often each peer agent's /v1/server is polled.
    #[serde(default = "default_poll_interval", with = "crate::vocab::duration")]
    pub poll_interval: Duration,
    /// Longest wait for a peer's answer (and for the direct probe of its service).
    #[serde(default = "default_poll_timeout", with = "crate::vocab::duration")]
    pub poll_timeout: Duration,
    /// A peer whose agent has not answered for this long is inactive; if its service does
    /// not answer either, it is down.
    #[serde(default = "default_inactive_after", with = "crate::vocab::duration")]
    pub inactive_after: Duration,
    /// How often this server's own state is evaluated from its checks.
    #[serde(default = "default_evaluate_interval", with = "crate::vocab::duration")]
    pub evaluate_interval: Duration,
    /// Consecutive evaluations before a server is routed again / taken out.
    #[serde(default = "default_rise")]
    pub rise: u32,
    #[serde(default = "default_fall")]
    pub fall: u32,
    /// Shortest time after a change before a server is routed again (flap damping);
    /// taking a server out is never delayed.
    #[serde(default = "default_hold", with = "crate::vocab::duration")]
    pub hold: Duration,
    /// Panic mode: below this percentage of routable servers in a group, stop taking
    /// servers out of it (0: off).
    #[serde(default)]
    pub panic_threshold: u8,
}

fn default_poll_interval() -> Duration {
    Duration::from_millis(500)
}
fn default_poll_timeout() -> Duration {
    Duration::from_millis(400)
}
fn default_inactive_after() -> Duration {
    Duration::from_secs(5)
}
fn default_evaluate_interval() -> Duration {
    Duration::from_millis(100)
}
fn default_rise() -> u32 {
    2
}
fn default_fall() -> u32 {
    1
}
fn default_hold() -> Duration {
    Duration::from_secs(5)
}

/// `[[member]]`: one server of the cluster, this one included, in precedence order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// Server name (`agent.server` of its agent).
    pub name: String,
    /// Base URL of its agent (`http://10.0.0.2:9847`).
    pub agent: String,
    /// Its messaging service (`host:port`), probed directly when its agent is unreachable.
    #[serde(default)]
    pub service: Option<String>,
    /// The host name clients use (`telagent route`); default: the name.
    #[serde(default)]
    pub host: Option<String>,
    /// Its SIP URI in Kamailio's dispatcher set (`sip:10.0.0.2:5060`).
    #[serde(default)]
    pub sip: Option<String>,
    /// Relative weight in percent (HAProxy agent-check, routes).
    #[serde(default = "default_weight")]
    pub weight: u8,
}

fn default_weight() -> u8 {
    100
}

/// `[[group]]`: a routing group: servers in precedence order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    pub name: String,
    pub order: Vec<String>,
    /// Per-server weights in this group (default: the member's weight).
    #[serde(default)]
    pub weights: BTreeMap<String, u8>,
}

/// `[server]`: how this server's state follows its checks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerRules {
    /// Checks of the messaging service: any of them down and the server is down.
    #[serde(default)]
    pub critical: Vec<String>,
    /// Checks that drain the server when degraded or down (queue over high water, ...).
    #[serde(default)]
    pub drain: Vec<String>,
    /// Line and gateway checks: none up is down, fewer than `min_lines` up is drain.
    #[serde(default)]
    pub lines: Vec<String>,
    #[serde(default = "default_min_lines")]
    pub min_lines: u32,
}

fn default_min_lines() -> u32 {
    1
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            poll_interval: default_poll_interval(),
            poll_timeout: default_poll_timeout(),
            inactive_after: default_inactive_after(),
            evaluate_interval: default_evaluate_interval(),
            rise: default_rise(),
            fall: default_fall(),
            hold: default_hold(),
            panic_threshold: 0,
        }
    }
}
