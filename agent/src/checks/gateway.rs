//! `gateway`: the E1/T1/ISDN channels of a gateway, polled over SNMP (v2c, or v3 authPriv
//! with SHA or SHA-256 and AES), optionally combined with a SIP OPTIONS ping of the same
//! gateway into one state.
//!
//! Profiles:
//! - `isdn`: ISDN-MIB `isdnBearerOperStatus` (1.3.6.1.2.1.10.20.1.2.1.1.2; idle(1) is idle,
//!   connecting(2) / connected(3) / active(4) are busy) per B-channel (the bearer rows and
//!   the ds0(81) interfaces), out of service when IF-MIB `ifOperStatus`
//!   (1.3.6.1.2.1.2.2.1.8) is not in `if_in_service` (up(1), dormant(5)).
//! - `cisco-ds0`: CISCO-POP-MGMT-MIB cpmDS0OperStatus / cpmDS0CallType per DS0, the
//!   D-channel left out by cpmDS0ConfigFunction; trunks slot.port.
//! - `audiocodes`: AC-PSTN-MIB acTrunkStatusChannels (a nibble per timeslot) and
//!   acTrunkStatusAlarm per trunk.
//! - `custom`: one column of a vendor MIB (`state_oid`), one row per channel keyed by its
//!   whole index (`index` names the arcs: trunk and channel), and the values that mean
//!   idle, busy and out of service (anything else, or a row of `rows_oid` without a state,
//!   counts as out of service).
//!
//! DS1-MIB `dsx1LineStatus` (1.3.6.1.2.1.10.18.6.1.10) per trunk, in alarm when it is not
//! noAlarm(1). Table walks use GETBULK with bounded repetitions and always end; a table
//! that does not end is an error (see `snmp::client`).
//!
//! - **ok**: enough usable channels (`min_usable`, default 1; usable = idle + busy), enough
//!   idle ones (`min_idle`, default 0), no trunk in alarm, and the OPTIONS ping (if any) ok.
//! - **degraded**: usable channels below `min_usable` but not zero (`few_channels`), idle
//!   below `min_idle` (`channels_exhausted`), a trunk in alarm (`trunk_alarm`), or a
//!   degraded OPTIONS answer.
//! - **fail**: no usable channel (`no_usable_channel`), no channel listed (`no_channels`),
//!   the agent is silent (`no_response`), ICMP port unreachable (`connect_refused`), an
//!   unresolvable name (`dns`), rejects our credentials (`auth_error`), a broken table or
//!   a profile that does not fit (`bad_response`), `io_error`, or the OPTIONS ping failed.
//!
//! Metrics: `telagent_gateway_channels{check,state}` (state idle / busy / out_of_service),
//! `telagent_gateway_trunk_channels{check,trunk,state}` (at most `max_trunks` trunks),
//! `telagent_gateway_trunk_alarm{check,trunk}` (1 in alarm), and
//! `telagent_gateway_dsx1_line_status{check,trunk}` (the raw DS1-MIB bitmap).

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use super::sip::{SipCheck, SipConfig, SipTransport};
use super::{Check, Observation};
use crate::snmp::client::{parse_oid, Client, Credentials, Row};
use crate::vocab::check_config;

const BEARER_OPER_STATUS: &[u64] = &[1, 3, 6, 1, 2, 1, 10, 20, 1, 2, 1, 1, 2];
const IF_OPER_STATUS: &[u64] = &[1, 3, 6, 1, 2, 1, 2, 2, 1, 8];
const IF_TYPE: &[u64] = &[1, 3, 6, 1, 2, 1, 2, 2, 1, 3];
const IF_DESCR: &[u64] = &[1, 3, 6, 1, 2, 1, 2, 2, 1, 2];
/// IANAifType ds0(81): a B-channel (RFC 2127: "The B channels have an ifType value of ds0(81)").
const IF_TYPE_DS0: i64 = 81;
const DSX1_LINE_STATUS: &[u64] = &[1, 3, 6, 1, 2, 1, 10, 18, 6, 1, 10];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SnmpVersion {
    #[serde(rename = "2c")]
    V2c,
    #[serde(rename = "3")]
    V3,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    Isdn,
    Custom,
    /// CISCO-POP-MGMT-MIB cpmDS0StatusTable / cpmDS0UsageTable (AS5x00 and IOS voice
    /// gateways): one row per DS0, indexed slot.port.timeslot.
    CiscoDs0,
    /// AudioCodes AC-PSTN-MIB acTrunkStatusTable (Mediant): a nibble per timeslot in
    /// acTrunkStatusChannels, and acTrunkStatusAlarm per trunk.
    Audiocodes,
}

// CISCO-POP-MGMT-MIB (ciscoPopMgmtMIB 1.3.6.1.4.1.9.10.19).
const CPM_DS0_OPER_STATUS: &[u64] = &[1, 3, 6, 1, 4, 1, 9, 10, 19, 1, 5, 2, 1, 1];
const CPM_DS0_CALL_TYPE: &[u64] = &[1, 3, 6, 1, 4, 1, 9, 10, 19, 1, 1, 1, 1, 5];
const CPM_DS0_CONFIG_FUNCTION: &[u64] = &[1, 3, 6, 1, 4, 1, 9, 10, 19, 1, 5, 2, 1, 7];
// AC-PSTN-MIB (acPSTN 1.3.6.1.4.1.5003.9.10.9).
const AC_TRUNK_STATUS_CHANNELS: &[u64] = &[1, 3, 6, 1, 4, 1, 5003, 9, 10, 9, 2, 1, 1, 1, 3];
const AC_TRUNK_STATUS_ALARM: &[u64] = &[1, 3, 6, 1, 4, 1, 5003, 9, 10, 9, 2, 1, 1, 1, 7];

/// Counts Cisco DS0s: cpmDS0OperStatus idle(3) is idle, setup(4) and connected(5) busy,
/// down(2), test(6) and unknown(1) out of service; a row without it falls back to
/// cpmDS0CallType (idle(1) idle, a call type busy), and a row with neither (listed by
/// cpmDS0ConfigFunction only) is out of service; rows whose cpmDS0ConfigFunction is
/// t1CcsSignallingChan(2) or e1CcsSignallingChan(4) (the PRI D-channel: T1 channel 24, E1
/// timeslot 16) are not channels. Trunks are slot.port; the channels of a trunk in
/// `alarmed` are out of service whatever their rows say (a trunk in LOS keeps idle rows).
#[allow(clippy::type_complexity)]
pub fn cisco_ds0_channels(
    oper: &BTreeMap<Vec<u64>, Option<i64>>,
    call_type: &BTreeMap<Vec<u64>, Option<i64>>,
    function: &BTreeMap<Vec<u64>, Option<i64>>,
    alarmed: &std::collections::BTreeSet<Vec<u64>>,
) -> (Channels, BTreeMap<Vec<u64>, Channels>) {
    let mut all = Channels::default();
    let mut trunks: BTreeMap<Vec<u64>, Channels> = BTreeMap::new();
    let rows: std::collections::BTreeSet<&Vec<u64>> = oper
        .keys()
        .chain(call_type.keys())
        .chain(function.keys())
        .collect();
    for index in rows {
        if matches!(function.get(index), Some(Some(2 | 4))) {
            continue;
        }
        let trunk_key: Vec<u64> = index.iter().take(2).copied().collect();
        let class = match (
            oper.get(index).copied().flatten(),
            call_type.get(index).copied().flatten(),
        ) {
            _ if alarmed.contains(&trunk_key) => 2,
            (Some(3), _) => 0,
            (Some(4 | 5), _) => 1,
            (Some(_), _) => 2,
            (None, Some(1)) => 0,
            (None, Some(2..=7)) => 1,
            (None, _) => 2,
        };
        let trunk = trunks.entry(trunk_key).or_default();
        for c in [&mut all, trunk] {
            match class {
                0 => c.idle += 1,
                1 => c.busy += 1,
                _ => c.out_of_service += 1,
            }
        }
    }
    (all, trunks)
}

/// The trunk an interface name stands for on a Cisco box: `E1 1/3` or `T1 0/0/1` is
/// slot/port (the last two numbers), as cpmDS0UsageTable indexes its DS0s.
fn cisco_trunk_of(if_descr: &str) -> Option<Vec<u64>> {
    let rest = if_descr
        .strip_prefix("E1 ")
        .or_else(|| if_descr.strip_prefix("T1 "))?;
    let arcs: Vec<u64> = rest
        .split('/')
        .map(|p| p.trim().parse().ok())
        .collect::<Option<_>>()?;
    (arcs.len() >= 2).then(|| arcs[arcs.len() - 2..].to_vec())
}

/// Counts AudioCodes channels from acTrunkStatusChannels (a nibble per timeslot, high
/// nibble first): 1 is not a bearer channel (E1 timeslots 0 and 16), 2 "None" idle, 3
/// "Open" and 4 "Media" busy, anything else out of service (9 "Out Of Service", 10
/// "Maintenance", and values the MIB does not list). A trunk whose acTrunkStatusAlarm is
/// not greenActive(1) has every channel out of service, whatever its nibbles say (the
/// firmware keeps "None" on a dead trunk). Returns the counts and the trunks in alarm.
#[allow(clippy::type_complexity)]
pub fn audiocodes_channels(
    channels: &BTreeMap<u64, Vec<u8>>,
    alarm: &BTreeMap<u64, i64>,
) -> (
    Channels,
    BTreeMap<Vec<u64>, Channels>,
    BTreeMap<u64, String>,
) {
    const ALARMS: [&str; 8] = [
        "disabled (grey)",
        "ok",
        "LOS/LOF (red)",
        "AIS (blue)",
        "RAI (yellow)",
        "D-channel (orange)",
        "lower layer down (purple)",
        "NFAS alarm (dark orange)",
    ];
    let mut all = Channels::default();
    let mut trunks: BTreeMap<Vec<u64>, Channels> = BTreeMap::new();
    let mut alarms = BTreeMap::new();
    for (trunk, packed) in channels {
        let a = alarm.get(trunk).copied();
        let dead = a != Some(1);
        if dead {
            let name = a
                .and_then(|v| usize::try_from(v).ok())
                .and_then(|v| ALARMS.get(v).copied())
                .map_or_else(|| format!("acTrunkStatusAlarm {a:?}"), str::to_string);
            alarms.insert(*trunk, name);
        }
        let c = trunks.entry(vec![*trunk]).or_default();
        for nibble in packed.iter().flat_map(|b| [b >> 4, b & 0x0f]) {
            let slot = match nibble {
                1 => continue,
                _ if dead => &mut c.out_of_service,
                2 => &mut c.idle,
                3 | 4 => &mut c.busy,
                _ => &mut c.out_of_service,
            };
            *slot += 1;
        }
        all.idle += c.idle;
        all.busy += c.busy;
        all.out_of_service += c.out_of_service;
    }
    (all, trunks, alarms)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthProtocol {
    Sha,
    Sha256,
}

/// `custom = { ... }`: a vendor column of channel states.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomProfile {
    /// The column holding one state per channel (dotted OID).
    pub state_oid: String,
    /// A column every channel row has (a description, say): rows it lists that lack a
    /// state count as out of service, not as missing channels. Optional.
    #[serde(default)]
    pub rows_oid: Option<String>,
    /// What the index arcs after the column are, in order (`["trunk", "channel"]`,
    /// `["slot", "port", "channel"]`): the arcs named `channel` tell channels of one trunk
    /// apart, the others name the trunk (`1.2`). Empty: every row is a channel, no trunks.
    #[serde(default)]
    pub index: Vec<String>,
    /// Values meaning idle.
    pub idle: Vec<i64>,
    /// Values meaning busy (in a call).
    pub busy: Vec<i64>,
    /// Values meaning out of service (other values count as out of service too).
    #[serde(default)]
    pub out_of_service: Vec<i64>,
}

/// `sip = { ... }`: an OPTIONS ping combined into the gateway's state.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySip {
    pub uri: String,
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default = "default_sip_transport")]
    pub transport: SipTransport,
    /// Final codes besides 2xx that mean alive and well (as a `[[sip]]` check's).
    #[serde(default)]
    pub alive_codes: Vec<u16>,
    /// Final codes that mean alive without capacity (default 503, 486, 480).
    #[serde(default = "default_sip_degraded_codes")]
    pub degraded_codes: Vec<u16>,
}

fn default_sip_degraded_codes() -> Vec<u16> {
    vec![503, 486, 480]
}

fn default_sip_transport() -> SipTransport {
    SipTransport::Udp
}

check_config! {
    /// `[[gateway]]`: a gateway's channels over SNMP.
    GatewayConfig {
        /// The SNMP agent, `host:port` (port 161 if left out).
        address: String,
        /// `2c` or `3`.
        #[serde(default = "default_version")]
        version: SnmpVersion,
        /// v2c community.
        #[serde(default = "default_community")]
        community: String,
        /// v3 user (authPriv).
        #[serde(default)]
        user: Option<String>,
        /// v3 authentication: `sha` or `sha256`.
        #[serde(default = "default_auth_protocol")]
        auth_protocol: AuthProtocol,
        /// v3 authentication pass phrase.
        #[serde(default)]
        auth_password: Option<String>,
        /// v3 privacy (AES-128) pass phrase.
        #[serde(default)]
        priv_password: Option<String>,
        /// v3 context name.
        #[serde(default)]
        context: String,
        /// `isdn` or `custom`.
        #[serde(default = "default_profile")]
        profile: Profile,
        /// The mapping of the `custom` profile.
        #[serde(default)]
        custom: Option<CustomProfile>,
        /// Fewer usable (idle + busy) channels than this is degraded; none is down.
        #[serde(default = "default_min_usable")]
        min_usable: u32,
        /// Fewer idle channels than this is degraded (channels exhausted).
        #[serde(default)]
        min_idle: u32,
        /// Longest wait for one SNMP answer.
        #[serde(default = "default_request_timeout", with = "crate::vocab::duration")]
        request_timeout: Duration,
        /// Retries of an unanswered request.
        #[serde(default = "default_retries")]
        retries: u32,
        /// GETBULK max-repetitions.
        #[serde(default = "default_max_repetitions")]
        max_repetitions: u32,
        /// Most trunks with their own series (the rest are counted, not exported).
        #[serde(default = "default_max_trunks")]
        max_trunks: usize,
        /// IF-MIB ifOperStatus values of a B-channel's interface that are in service:
        /// up(1) and dormant(5) (RFC 2863: waiting for a call) by default.
        #[serde(default = "default_if_in_service")]
        if_in_service: Vec<i64>,
        /// SIP OPTIONS ping of the same gateway, combined into its state.
        #[serde(default)]
        sip: Option<GatewaySip>,
    }
}

fn default_version() -> SnmpVersion {
    SnmpVersion::V2c
}
fn default_community() -> String {
    "public".into()
}
fn default_auth_protocol() -> AuthProtocol {
    AuthProtocol::Sha
}
fn default_profile() -> Profile {
    Profile::Isdn
}
fn default_min_usable() -> u32 {
    1
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(1)
}
fn default_retries() -> u32 {
    1
}
fn default_max_repetitions() -> u32 {
    25
}
fn default_max_trunks() -> usize {
    64
}
fn default_if_in_service() -> Vec<i64> {
    vec![1, 5]
}

impl GatewayConfig {
    pub(crate) fn validate(&self) -> Result<(), (&'static str, String)> {
        if !crate::net::is_host_port(&self.agent_address()) {
            return Err((
                "address",
                format!("`{}` is not host or host:port", self.address),
            ));
        }
        if self.version == SnmpVersion::V3 {
            for (key, v) in [
                ("user", &self.user),
                ("auth_password", &self.auth_password),
                ("priv_password", &self.priv_password),
            ] {
                if v.as_deref().unwrap_or("").is_empty() {
                    return Err((
                        key,
                        "SNMPv3 (authPriv) needs user, auth_password and priv_password".into(),
                    ));
                }
            }
            for (key, v) in [
                ("auth_password", &self.auth_password),
                ("priv_password", &self.priv_password),
            ] {
                if v.as_deref().is_some_and(|p| p.len() < 8) {
                    return Err((
                        key,
                        "an SNMPv3 pass phrase has at least 8 characters".into(),
                    ));
                }
            }
        }
        match (&self.profile, &self.custom) {
            (Profile::Custom, None) => {
                return Err(("custom", "profile \"custom\" needs custom = { state_oid = \"...\", idle = [..], busy = [..] }".into()))
            }
            (Profile::Custom, Some(c)) if parse_oid(&c.state_oid).is_none() => {
                return Err(("custom", format!("state_oid `{}` is not a dotted OID such as \"1.3.6.1.4.1.9.9\"", c.state_oid)))
            }
            (Profile::Custom, Some(c)) if c.rows_oid.as_deref().is_some_and(|r| parse_oid(r).is_none()) => {
                return Err(("custom", "rows_oid is not a dotted OID".into()))
            }
            (p, Some(_)) if *p != Profile::Custom => return Err(("custom", "only used with profile = \"custom\"".into())),
            _ => {}
        }
        if self.request_timeout.is_zero() {
            return Err(("request_timeout", "must be longer than 0s".into()));
        }
        if self.max_repetitions == 0 || self.max_repetitions > 100 {
            return Err(("max_repetitions", "must be between 1 and 100".into()));
        }
        if self.max_trunks == 0 || self.max_trunks > 1024 {
            return Err(("max_trunks", "must be between 1 and 1024".into()));
        }
        if let Some(c) = &self.custom {
            if !c.index.is_empty() && c.index.iter().filter(|n| *n == "channel").count() != 1 {
                return Err((
                    "custom",
                    "index names the arcs after the column and needs exactly one named \"channel\", such as [\"trunk\", \"channel\"]".into(),
                ));
            }
            let lists = [
                ("idle", &c.idle),
                ("busy", &c.busy),
                ("out_of_service", &c.out_of_service),
            ];
            for (i, (a, x)) in lists.iter().enumerate() {
                for (b, y) in &lists[i + 1..] {
                    if let Some(v) = x.iter().find(|v| y.contains(v)) {
                        return Err((
                            "custom",
                            format!(
                                "the value {v} is in both {a} and {b}: a state means one thing"
                            ),
                        ));
                    }
                }
            }
        }
        if let Some(sip) = &self.sip {
            self.sip_config(sip)
                .validate()
                .map_err(|(_, m)| ("sip", m))?;
        }
        Ok(())
    }

    /// `host:port` of the SNMP agent.
    pub fn agent_address(&self) -> String {
        if crate::net::is_host_port(&self.address) {
            self.address.clone()
        } else {
            format!("{}:161", self.address)
        }
    }

    fn credentials(&self) -> Credentials {
        match self.version {
            SnmpVersion::V2c => Credentials::V2c {
                community: self.community.clone(),
            },
            SnmpVersion::V3 => Credentials::V3 {
                user: self.user.clone().unwrap_or_default(),
                auth_protocol: match self.auth_protocol {
                    AuthProtocol::Sha => snmp2::v3::AuthProtocol::Sha1,
                    AuthProtocol::Sha256 => snmp2::v3::AuthProtocol::Sha256,
                },
                auth_password: self.auth_password.clone().unwrap_or_default(),
                priv_password: self.priv_password.clone().unwrap_or_default(),
                context: self.context.clone(),
            },
        }
    }

    fn sip_config(&self, sip: &GatewaySip) -> SipConfig {
        SipConfig {
            name: self.name.clone(),
            interval: None,
            timeout: None,
            failing_interval: None,
            confirm_interval: None,
            rise: None,
            fall: None,
            hold: None,
            flap_window: None,
            flap_transitions: None,
            flap_ratio: None,
            uri: sip.uri.clone(),
            target: sip.target.clone(),
            transport: sip.transport,
            alive_codes: sip.alive_codes.clone(),
            degraded_codes: sip.degraded_codes.clone(),
            from_user: "telagent".into(),
            srv: false,
            dns_server: None,
        }
    }
}

/// Channel counts of one poll.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Channels {
    pub idle: u32,
    pub busy: u32,
    pub out_of_service: u32,
}

impl Channels {
    pub fn total(&self) -> u32 {
        self.idle + self.busy + self.out_of_service
    }
    pub fn usable(&self) -> u32 {
        self.idle + self.busy
    }

    /// The counts as one series per state (of one trunk, when given).
    fn values(
        &self,
        name: &'static str,
        help: &'static str,
        trunk: Option<String>,
    ) -> Vec<super::Value> {
        [
            ("idle", self.idle),
            ("busy", self.busy),
            ("out_of_service", self.out_of_service),
        ]
        .into_iter()
        .map(|(state, n)| {
            let mut labels: Vec<(&'static str, String)> =
                trunk.iter().map(|t| ("trunk", t.clone())).collect();
            labels.push(("state", state.to_string()));
            super::Value {
                name,
                help,
                labels,
                value: n.into(),
            }
        })
        .collect()
    }
}

/// Rows keyed by their whole index (every arc after the column): a multi-part index
/// (`trunk.channel`) keeps every row. A value that is not an integer is None.
fn by_index(rows: &[Row], root: &[u64]) -> BTreeMap<Vec<u64>, Option<i64>> {
    rows.iter()
        .filter_map(|(oid, v)| Some((oid.get(root.len()..)?.to_vec(), v.as_i64())))
        .collect()
}

/// The first index arc of each row (tables indexed by ifIndex or trunk number).
fn by_first_arc(rows: &[Row], root: &[u64]) -> BTreeMap<u64, i64> {
    rows.iter()
        .filter_map(|(oid, v)| Some((*oid.get(root.len())?, v.as_i64()?)))
        .collect()
}

/// Counts ISDN bearer channels. The channels are the isdnBearerTable rows and the ds0(81)
/// interfaces (`ds0`: a B-channel whose bearer row lacks its state still exists). A
/// channel is in service while its interface's ifOperStatus is one of `in_service`
/// (or unknown); then the bearer state says idle(1) or busy (connecting, connected,
/// active), and without one ifOperStatus does: dormant(5) idle, up(1) busy.
pub fn isdn_channels(
    bearer: &BTreeMap<Vec<u64>, Option<i64>>,
    if_oper: &BTreeMap<u64, i64>,
    ds0: &[u64],
    in_service: &[i64],
) -> Channels {
    let mut c = Channels::default();
    let mut rows: std::collections::BTreeSet<u64> =
        bearer.keys().filter_map(|k| k.first().copied()).collect();
    rows.extend(ds0);
    for if_index in rows {
        let oper = if_oper.get(&if_index).copied();
        let up = oper.is_none_or(|s| in_service.contains(&s));
        match (up, bearer.get(&vec![if_index]).copied().flatten(), oper) {
            (false, ..) => c.out_of_service += 1,
            (true, Some(1), _) => c.idle += 1,
            (true, Some(2..=4), _) => c.busy += 1,
            (true, None, Some(5)) => c.idle += 1,
            (true, None, Some(1)) => c.busy += 1,
            _ => c.out_of_service += 1,
        }
    }
    c
}

/// Counts channels of a custom column, in all and per trunk (the index arcs not named
/// `channel`). A row whose index has another number of arcs than the profile names is an
/// error: the profile does not fit the table.
#[allow(clippy::type_complexity)]
pub fn custom_channels(
    states: &BTreeMap<Vec<u64>, Option<i64>>,
    map: &CustomProfile,
) -> Result<(Channels, BTreeMap<Vec<u64>, Channels>), String> {
    let mut all = Channels::default();
    let mut trunks: BTreeMap<Vec<u64>, Channels> = BTreeMap::new();
    for (index, v) in states {
        if !map.index.is_empty() && index.len() != map.index.len() {
            return Err(format!(
                "row {} has {} index arcs; the profile names {} ({})",
                index
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join("."),
                index.len(),
                map.index.len(),
                map.index.join(".")
            ));
        }
        let trunk: Vec<u64> = index
            .iter()
            .zip(&map.index)
            .filter(|(_, name)| *name != "channel")
            .map(|(arc, _)| *arc)
            .collect();
        let c = if map.index.is_empty() {
            None
        } else {
            Some(trunks.entry(trunk).or_default())
        };
        let slot = |ch: &mut Channels| match v {
            Some(v) if map.idle.contains(v) => ch.idle += 1,
            Some(v) if map.busy.contains(v) => ch.busy += 1,
            _ => ch.out_of_service += 1,
        };
        slot(&mut all);
        if let Some(c) = c {
            slot(c);
        }
    }
    Ok((all, trunks))
}

/// The alarms named by a DS1-MIB dsx1LineStatus bitmap (empty: noAlarm).
pub fn dsx1_alarms(status: i64) -> Vec<&'static str> {
    const BITS: [(i64, &str); 13] = [
        (2, "RAI (far-end LOF, yellow)"),
        (4, "sending far-end LOF"),
        (8, "AIS"),
        (16, "sending AIS"),
        (32, "LOF (red)"),
        (64, "LOS"),
        (128, "loopback"),
        (256, "TS16 AIS"),
        (512, "far-end TS16 LOMF"),
        (1024, "TS16 LOMF"),
        (2048, "sending TS16 LOMF"),
        (4096, "far-end LOMF"),
        (8192, "LOMF"),
    ];
    if status == 1 {
        return Vec::new();
    }
    let named: Vec<&str> = BITS
        .iter()
        .filter(|(b, _)| status & b != 0)
        .map(|(_, n)| *n)
        .collect();
    if named.is_empty() {
        vec!["unknown alarm"]
    } else {
        named
    }
}

pub struct GatewayCheck {
    config: GatewayConfig,
    client: tokio::sync::Mutex<Client>,
    sip: Option<SipCheck>,
}

impl GatewayCheck {
    pub fn new(config: GatewayConfig, timeout: Duration) -> Self {
        let client = Client::new(
            &config.agent_address(),
            config.credentials(),
            config.request_timeout,
            config.retries,
            config.max_repetitions,
        );
        let sip = config
            .sip
            .as_ref()
            .map(|s| SipCheck::new(config.sip_config(s), timeout));
        GatewayCheck {
            config,
            client: tokio::sync::Mutex::new(client),
            sip,
        }
    }

    async fn poll(&self) -> Observation {
        let c = &self.config;
        let mut client = self.client.lock().await;
        let fail =
            |e: crate::snmp::client::PollError| Observation::fail(e.error_type(), e.to_string());
        // DS1-MIB line status per trunk (every profile), read once.
        let trunks = match client.walk(DSX1_LINE_STATUS).await {
            Ok(r) => by_first_arc(&r, DSX1_LINE_STATUS),
            Err(e) => return fail(e),
        };
        let mut vendor_alarms: BTreeMap<u64, String> = BTreeMap::new();
        // Cisco: the slot/port of each DS1 ifIndex, and the trunks in alarm.
        let mut trunk_names: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        let mut alarmed = std::collections::BTreeSet::new();
        let (channels, per_trunk) = match &c.profile {
            Profile::Isdn => {
                let bearer = match client.walk(BEARER_OPER_STATUS).await {
                    Ok(r) => by_index(&r, BEARER_OPER_STATUS),
                    Err(e) => return fail(e),
                };
                let if_oper = match client.walk(IF_OPER_STATUS).await {
                    Ok(r) => by_first_arc(&r, IF_OPER_STATUS),
                    Err(e) => return fail(e),
                };
                let ds0: Vec<u64> = match client.walk(IF_TYPE).await {
                    Ok(r) => by_first_arc(&r, IF_TYPE)
                        .into_iter()
                        .filter(|(_, t)| *t == IF_TYPE_DS0)
                        .map(|(i, _)| i)
                        .collect(),
                    Err(e) => return fail(e),
                };
                (
                    isdn_channels(&bearer, &if_oper, &ds0, &c.if_in_service),
                    BTreeMap::new(),
                )
            }
            Profile::CiscoDs0 => {
                let mut cols = Vec::new();
                for col in [
                    CPM_DS0_OPER_STATUS,
                    CPM_DS0_CALL_TYPE,
                    CPM_DS0_CONFIG_FUNCTION,
                ] {
                    match client.walk(col).await {
                        Ok(r) => cols.push(by_index(&r, col)),
                        Err(e) => return fail(e),
                    }
                }
                // The DS1 alarms are by ifIndex; the interface's name says its slot/port.
                let names = match client.walk(IF_DESCR).await {
                    Ok(r) => r,
                    Err(e) => return fail(e),
                };
                for (oid, v) in names {
                    let (Some(if_index), crate::snmp::client::Value::Bytes(b)) =
                        (oid.get(IF_DESCR.len()), v)
                    else {
                        continue;
                    };
                    if let (Some(status), Some(t)) = (
                        trunks.get(if_index),
                        cisco_trunk_of(&String::from_utf8_lossy(&b)),
                    ) {
                        trunk_names.insert(*if_index, t.clone());
                        if *status != 1 {
                            alarmed.insert(t);
                        }
                    }
                }
                cisco_ds0_channels(&cols[0], &cols[1], &cols[2], &alarmed)
            }
            Profile::Audiocodes => {
                let packed: BTreeMap<u64, Vec<u8>> =
                    match client.walk(AC_TRUNK_STATUS_CHANNELS).await {
                        Ok(r) => r
                            .into_iter()
                            .filter_map(|(oid, v)| match v {
                                crate::snmp::client::Value::Bytes(b) => {
                                    Some((*oid.get(AC_TRUNK_STATUS_CHANNELS.len())?, b))
                                }
                                _ => None,
                            })
                            .collect(),
                        Err(e) => return fail(e),
                    };
                let alarm = match client.walk(AC_TRUNK_STATUS_ALARM).await {
                    Ok(r) => by_first_arc(&r, AC_TRUNK_STATUS_ALARM),
                    Err(e) => return fail(e),
                };
                let (all, per, alarms) = audiocodes_channels(&packed, &alarm);
                vendor_alarms = alarms;
                (all, per)
            }
            Profile::Custom => {
                let Some(map) = &c.custom else {
                    return Observation::fail("bad_response", "profile custom without a mapping");
                };
                let root = parse_oid(&map.state_oid).unwrap_or_default();
                let rows = match client.walk(&root).await {
                    Ok(r) => r,
                    Err(e) => return fail(e),
                };
                let mut states = by_index(&rows, &root);
                if let Some(every) = map.rows_oid.as_deref().and_then(parse_oid) {
                    match client.walk(&every).await {
                        // A row without its state: out of service, never left out.
                        Ok(r) => {
                            for index in by_index(&r, &every).into_keys() {
                                states.entry(index).or_insert(None);
                            }
                        }
                        Err(e) => return fail(e),
                    }
                }
                match custom_channels(&states, map) {
                    Ok(counts) => counts,
                    Err(e) => {
                        return Observation::fail(
                            "bad_response",
                            format!("{}: {e}; check the profile's index", c.address),
                        )
                    }
                }
            }
        };
        drop(client);
        // DS1 trunks named as the channel table names them, where the profile knows how.
        let named: Vec<(String, i64)> = trunks
            .iter()
            .map(|(i, status)| {
                let name = trunk_names.get(i).map_or(i.to_string(), |t| {
                    t.iter().map(u64::to_string).collect::<Vec<_>>().join(".")
                });
                (name, *status)
            })
            .collect();
        self.judge(channels, &per_trunk, &named, &vendor_alarms)
    }

    fn judge(
        &self,
        ch: Channels,
        per_trunk: &BTreeMap<Vec<u64>, Channels>,
        trunks: &[(String, i64)],
        vendor_alarms: &BTreeMap<u64, String>,
    ) -> Observation {
        let c = &self.config;
        let mut alarms: Vec<String> = vendor_alarms
            .iter()
            .map(|(t, a)| format!("trunk {t}: {a}"))
            .collect();
        for (trunk, status) in trunks {
            let a = dsx1_alarms(*status);
            if !a.is_empty() {
                alarms.push(format!("trunk {trunk}: {}", a.join(", ")));
            }
        }
        let summary = format!(
            "{}: {} channels: {} idle, {} busy, {} out of service{}",
            c.address,
            ch.total(),
            ch.idle,
            ch.busy,
            ch.out_of_service,
            if alarms.is_empty() {
                String::new()
            } else {
                format!("; {}", alarms.join("; "))
            }
        );
        let mut obs = if ch.total() == 0 {
            Observation::fail(
                "no_channels",
                format!("{summary}; the agent lists no channels (check the profile)"),
            )
        } else if ch.usable() == 0 {
            Observation::fail("no_usable_channel", summary)
        } else if ch.usable() < c.min_usable {
            Observation::degraded(
                "few_channels",
                format!("{summary}; fewer than {} usable", c.min_usable),
            )
        } else if ch.idle < c.min_idle {
            Observation::degraded(
                "channels_exhausted",
                format!("{summary}; fewer than {} idle", c.min_idle),
            )
        } else if !alarms.is_empty() {
            Observation::degraded("trunk_alarm", summary)
        } else {
            Observation::ok(summary)
        };
        obs.values
            .extend(ch.values("channels", "Channels by state at the last poll.", None));
        // One device never floods /metrics: at most `max_trunks` trunks get series.
        let dotted = |t: &[u64]| t.iter().map(u64::to_string).collect::<Vec<_>>().join(".");
        for (trunk, counts) in per_trunk.iter().take(c.max_trunks) {
            obs.values.extend(counts.values(
                "trunk_channels",
                "Channels of one trunk by state at the last poll (the trunk as the profile's index names it).",
                Some(dotted(trunk)),
            ));
        }
        let hidden = per_trunk.len().saturating_sub(c.max_trunks)
            + trunks.len().saturating_sub(c.max_trunks);
        if hidden > 0 {
            obs.detail.push_str(&format!(
                "; {hidden} trunk series over max_trunks ({}) not exported",
                c.max_trunks
            ));
        }
        if c.profile == Profile::Audiocodes {
            for trunk in per_trunk.keys().take(c.max_trunks) {
                let t = trunk.first().copied().unwrap_or_default();
                obs.values.push(super::Value {
                    name: "trunk_alarm",
                    help: "1 if the trunk is in alarm (DS1-MIB dsx1LineStatus, 1.3.6.1.2.1.10.18.6.1.10, not noAlarm; or the vendor profile's trunk alarm).",
                    labels: vec![("trunk", t.to_string())],
                    value: if vendor_alarms.contains_key(&t) { 1.0 } else { 0.0 },
                });
            }
        }
        // Trunks in alarm first: the cap never hides an alarm.
        let mut ordered: Vec<&(String, i64)> = trunks.iter().collect();
        ordered.sort_by_key(|(_, status)| *status == 1);
        let in_alarm = trunks.iter().filter(|(_, s)| *s != 1).count() + vendor_alarms.len();
        obs.values.push(super::Value {
            name: "trunks_in_alarm",
            help: "Trunks in alarm at the last poll (all of them, whatever max_trunks).",
            labels: vec![],
            value: in_alarm as f64,
        });
        for (trunk, status) in ordered.into_iter().take(c.max_trunks) {
            obs.values.push(super::Value {
                name: "trunk_alarm",
                help: "1 if the trunk is in alarm (DS1-MIB dsx1LineStatus, 1.3.6.1.2.1.10.18.6.1.10, not noAlarm; or the vendor profile's trunk alarm).",
                labels: vec![("trunk", trunk.to_string())],
                value: if *status == 1 { 0.0 } else { 1.0 },
            });
            obs.values.push(super::Value {
                name: "dsx1_line_status",
                help: "DS1-MIB dsx1LineStatus bitmap (1.3.6.1.2.1.10.18.6.1.10); 1 is noAlarm.",
                labels: vec![("trunk", trunk.to_string())],
                value: *status as f64,
            });
        }
        obs
    }
}

#[async_trait]
impl Check for GatewayCheck {
    fn kind(&self) -> &'static str {
        "gateway"
    }

    fn error_types(&self) -> &'static [&'static str] {
        &[
            "no_response",
            "auth_error",
            "bad_response",
            "connect_refused",
            "io_error",
            "no_channels",
            "no_usable_channel",
            "few_channels",
            "channels_exhausted",
            "trunk_alarm",
            "no_capacity",
            "unexpected_status",
            "closed_early",
            "dns",
        ]
    }

    async fn probe(&self) -> Observation {
        let Some(sip) = &self.sip else {
            return self.poll().await;
        };
        let (channels, options) = tokio::join!(self.poll(), sip.probe());
        // One state: the worse of the two, with the values of both.
        let detail = format!("{}; OPTIONS: {}", channels.detail, options.detail);
        let options = Observation {
            values: options
                .values
                .into_iter()
                .filter(|v| v.name != "stray_responses_total")
                .map(|v| super::Value {
                    name: match v.name {
                        "rtt_seconds" => "sip_rtt_seconds",
                        "status_code" => "sip_status_code",
                        "retry_after_seconds" => "sip_retry_after_seconds",
                        other => other,
                    },
                    ..v
                })
                .collect(),
            ..options
        };
        Observation {
            detail,
            ..channels.worse(options)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_arc(m: impl IntoIterator<Item = (u64, i64)>) -> BTreeMap<Vec<u64>, Option<i64>> {
        m.into_iter().map(|(k, v)| (vec![k], Some(v))).collect()
    }

    #[test]
    fn isdn_counts_follow_bearer_and_interface_state() {
        let bearer = one_arc((101..=130).map(|i| (i, if i <= 105 { 4 } else { 1 })));
        let up: BTreeMap<u64, i64> = (101..=130).map(|i| (i, 1)).collect();
        assert_eq!(
            isdn_channels(&bearer, &up, &[], &[1, 5]),
            Channels {
                idle: 25,
                busy: 5,
                out_of_service: 0
            }
        );
        let down: BTreeMap<u64, i64> = (101..=130).map(|i| (i, 2)).collect();
        assert_eq!(
            isdn_channels(&bearer, &down, &[], &[1, 5]).out_of_service,
            30
        );
        // RFC 2863 dormant(5): an idle B-channel waiting for a call is usable.
        let dormant: BTreeMap<u64, i64> = (101..=130)
            .map(|i| (i, if i <= 105 { 1 } else { 5 }))
            .collect();
        assert_eq!(
            isdn_channels(&bearer, &dormant, &[], &[1, 5]),
            Channels {
                idle: 25,
                busy: 5,
                out_of_service: 0
            }
        );
        assert_eq!(
            isdn_channels(&bearer, &dormant, &[], &[1]).out_of_service,
            25,
            "the profile may say otherwise"
        );
    }

    #[test]
    fn a_two_part_index_keeps_every_channel_and_counts_per_trunk() {
        let map = CustomProfile {
            state_oid: "1.3.6.1.4.1.99999.2.1.5".into(),
            rows_oid: None,
            index: vec!["trunk".into(), "channel".into()],
            idle: vec![1],
            busy: vec![2, 3],
            out_of_service: vec![4],
        };
        let states: BTreeMap<Vec<u64>, Option<i64>> = (1..=2u64)
            .flat_map(|t| {
                (1..=30u64)
                    .map(move |ch| (vec![t, ch], Some(if t == 2 && ch <= 10 { 2 } else { 1 })))
            })
            .collect();
        let (all, per) = custom_channels(&states, &map).unwrap();
        assert_eq!((all.total(), all.idle, all.busy), (60, 50, 10));
        assert_eq!(per[&vec![1]].idle, 30);
        assert_eq!((per[&vec![2]].idle, per[&vec![2]].busy), (20, 10));
        // A row with a three-arc index does not fit the profile: an error, not a count.
        let mut odd = states.clone();
        odd.insert(vec![3, 1, 1], Some(1));
        assert!(custom_channels(&odd, &map)
            .unwrap_err()
            .contains("3 index arcs"));
    }

    #[test]
    fn cisco_ds0_rows_as_the_mib_defines_them() {
        let key = |p: u64, ch: u64| vec![0, p, ch];
        let mut oper = BTreeMap::new();
        let mut call = BTreeMap::new();
        let mut function = BTreeMap::new();
        // A T1: channel 24 is the D-channel (t1CcsSignallingChan(2)).
        for ch in 1..=24 {
            function.insert(key(0, ch), Some(if ch == 24 { 2 } else { 3 }));
            oper.insert(key(0, ch), Some(if ch <= 10 { 5 } else { 3 }));
        }
        // A row with neither state column, only its configuration: out of service.
        function.insert(key(1, 1), Some(3));
        // A row without cpmDS0OperStatus: read from cpmDS0CallType.
        call.insert(key(1, 2), Some(7));
        let none = std::collections::BTreeSet::new();
        let (all, per) = cisco_ds0_channels(&oper, &call, &function, &none);
        assert_eq!((all.idle, all.busy, all.out_of_service), (13, 11, 1));
        assert_eq!(
            per[&vec![0, 0]].total(),
            23,
            "the D-channel is not a channel"
        );
        // Port 0 in LOS: its idle rows are out of service.
        let alarmed = [vec![0, 0]].into_iter().collect();
        let (all, _) = cisco_ds0_channels(&oper, &call, &function, &alarmed);
        assert_eq!((all.idle, all.busy, all.out_of_service), (0, 1, 24));
        assert_eq!(cisco_trunk_of("E1 1/3"), Some(vec![1, 3]));
        assert_eq!(cisco_trunk_of("T1 0/0/1"), Some(vec![0, 1]));
        assert_eq!(cisco_trunk_of("Serial0/0:15"), None);
    }

    #[test]
    fn dsx1_bitmaps() {
        assert!(dsx1_alarms(1).is_empty());
        assert_eq!(dsx1_alarms(64), vec!["LOS"]);
        assert_eq!(
            dsx1_alarms(2 | 32),
            vec!["RAI (far-end LOF, yellow)", "LOF (red)"]
        );
        assert_eq!(dsx1_alarms(0), vec!["unknown alarm"]);
    }

    #[test]
    fn any_values_from_an_agent_map_without_panic() {
        let mut rng = crate::testing::Lcg(99);
        let mut next = || rng.next_u64() as i64;
        for _ in 0..500 {
            let bearer = one_arc((0..40).map(|i| (i, next() % 8)));
            let oper: BTreeMap<u64, i64> = (0..40).map(|i| (i, next() % 8)).collect();
            let c = isdn_channels(&bearer, &oper, &[], &[1, 5]);
            assert_eq!(c.total(), 40);
            let _ = dsx1_alarms(next());
        }
    }

    #[test]
    fn custom_mapping() {
        let map = CustomProfile {
            state_oid: "1.3.6.1.4.1.99999.2".into(),
            rows_oid: None,
            index: vec![],
            idle: vec![0],
            busy: vec![1, 2],
            out_of_service: vec![9],
        };
        let mut states = one_arc([(1, 0), (2, 1), (3, 2), (4, 9), (5, 77)]);
        states.insert(vec![6], None);
        let (all, per) = custom_channels(&states, &map).unwrap();
        assert_eq!(
            all,
            Channels {
                idle: 1,
                busy: 2,
                out_of_service: 3
            },
            "unknown values and non-integers are out of service"
        );
        assert!(per.is_empty());
    }
}
