//! Typed configuration: what the agent checks.
//!
//! The file is TOML: `[agent]`, `[defaults]`, `[ports]`, `[discovery]`, one array of
//! tables per check kind (`[[tcp]]`, `[[http]]`, `[[command]]`, `[[modem]]`, `[[sip]]`,
//! `[[gateway]]`, `[[queue]]`), the cluster (`[cluster]`, `[[member]]`, `[[group]]`,
//! `[server]`), the routing outputs (`[haproxy]`, `[kamailio]`, `[hook]`), `[access]`,
//! `[traffic]`, `[notify]` and `[snmp]`. Each section's type is beside the code that
//! reads it; the keys every check shares are in [`crate::vocab`]. Every struct rejects
//! unknown keys. Every error names the file, the line and the key path
//! (`tcp[1].timeout`) and says what is expected; `telagent check-config` prints exactly
//! these messages.
//!
//! CLI flags say how to run (`--listen` overrides `agent.listen`); the file says what to check.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::access::AccessConfig;
use crate::routing::cluster::{ClusterConfig, Group, Member, ServerRules};
use crate::routing::{haproxy::HaproxyConfig, hook::HookConfig, kamailio::KamailioConfig};

use crate::checks::{
    canary::CanaryConfig, command::CommandConfig, gateway::GatewayConfig, http::HttpConfig,
    line_quality::LineQualityConfig, modem::ModemConfig, queue::QueueConfig, sip::SipConfig,
    tcp::TcpConfig, CheckSpec,
};
use crate::vocab::name_rule;
pub use crate::vocab::{valid_name, Common, Defaults, FlapRule, Schedule};

/// The configuration used when no `--config` is given and the system file does not exist.
pub const EMBEDDED_DEFAULT: &str = include_str!("default.toml");

/// Where `telagent run` looks for its configuration when none is given.
pub const SYSTEM_PATH: &str = "/etc/telagent/telagent.toml";

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This agent: server name, listen address, state and audit paths.
    #[serde(default)]
    pub agent: AgentConfig,
    /// Schedule and hysteresis applied to every check that does not set its own.
    #[serde(default)]
    pub defaults: Defaults,
    /// The serial-port inventory (passive: nothing is ever written to a port).
    #[serde(default)]
    pub ports: PortsConfig,
    /// TCP connect checks.
    #[serde(default)]
    pub tcp: Vec<TcpConfig>,
    /// HTTP checks.
    #[serde(default)]
    pub http: Vec<HttpConfig>,
    /// Command checks (exit status, Nagios plugin convention).
    #[serde(default)]
    pub command: Vec<CommandConfig>,
    /// Fax modems on serial ports.
    #[serde(default)]
    pub modem: Vec<ModemConfig>,
    /// SIP OPTIONS pings.
    #[serde(default)]
    pub sip: Vec<SipConfig>,
    /// Gateway channels over SNMP.
    #[serde(default)]
    pub gateway: Vec<GatewayConfig>,
    /// Outbound queues: depth and oldest item.
    #[serde(default)]
    pub queue: Vec<QueueConfig>,
    /// Success of fax lines, from their attempts.
    #[serde(default)]
    pub line_quality: Vec<LineQualityConfig>,
    /// Test faxes, end to end.
    #[serde(default)]
    pub canary: Vec<CanaryConfig>,
    /// Cluster timing: peer polling, inactivity, damping, panic threshold.
    #[serde(default)]
    pub cluster: ClusterConfig,
    /// Every server of the cluster, this one included, in precedence order.
    #[serde(default)]
    pub member: Vec<Member>,
    /// Routing groups.
    #[serde(default)]
    pub group: Vec<Group>,
    /// How this server's state follows its checks.
    #[serde(default)]
    pub server: ServerRules,
    /// HAProxy agent-check responder.
    #[serde(default)]
    pub haproxy: Option<HaproxyConfig>,
    /// Kamailio dispatcher over JSON-RPC.
    #[serde(default)]
    pub kamailio: Option<KamailioConfig>,
    /// Program run on routing changes.
    #[serde(default)]
    pub hook: Option<HookConfig>,
    /// Bearer token and allowlist.
    #[serde(default)]
    pub access: AccessConfig,
    /// Limits of the HTTP API: connections, timeouts.
    #[serde(default)]
    pub api: crate::http_server::ApiConfig,
    /// Traffic store and its sources.
    #[serde(default)]
    pub traffic: crate::traffic::TrafficConfig,
    /// SNMP notifications.
    #[serde(default)]
    pub notify: crate::notify::NotifyConfig,
    /// TELAGENT-MIB through an AgentX master.
    #[serde(default)]
    pub snmp: crate::snmp::SnmpConfig,
    /// Passive discovery of what this host runs (on in the embedded default).
    #[serde(default)]
    pub discovery: crate::discovery::DiscoveryConfig,
    /// Names of the checks that discovery added (not read from the file).
    #[serde(skip)]
    pub discovered: BTreeSet<String>,
}

/// `[agent]`: this agent and its server.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Name of the server this agent speaks for (label `server`); default: the host name.
    #[serde(default = "default_server_name")]
    pub server: String,
    /// Address of the HTTP endpoint (/metrics, /v1/status).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Directory for the agent's persistent state.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// JSON-lines file receiving every state transition; default `<state_dir>/audit.jsonl`.
    #[serde(default)]
    pub audit_log: Option<PathBuf>,
    /// Most probes running at the same time, over all checks.
    #[serde(default = "default_max_concurrent_probes")]
    pub max_concurrent_probes: usize,
}

/// The default Prometheus port of telagent.
pub const DEFAULT_PORT: u16 = 9847;

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT))
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/telagent")
}

fn default_max_concurrent_probes() -> usize {
    256
}

fn default_server_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            server: default_server_name(),
            listen: default_listen(),
            state_dir: default_state_dir(),
            audit_log: None,
            max_concurrent_probes: default_max_concurrent_probes(),
        }
    }
}

impl AgentConfig {
    /// The audit log path, defaulted into the state directory.
    pub fn audit_log_path(&self) -> PathBuf {
        self.audit_log
            .clone()
            .unwrap_or_else(|| self.state_dir.join("audit.jsonl"))
    }
}

/// `[ports]`: the passive serial-port inventory.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortsConfig {
    /// List the serial ports present and their UUCP lock holders.
    #[serde(default = "default_true")]
    pub scan: bool,
    /// How often the inventory is refreshed.
    #[serde(default = "default_ports_interval", with = "crate::vocab::duration")]
    pub interval: Duration,
    /// Directory of UUCP lock files (`LCK..ttyS0`).
    #[serde(default = "default_lock_dir")]
    pub lock_dir: PathBuf,
    /// Shortest interval allowed for a check that talks to a serial line (`modem`).
    #[serde(
        default = "default_min_probe_interval",
        with = "crate::vocab::duration"
    )]
    pub min_probe_interval: Duration,
}

fn default_true() -> bool {
    true
}
fn default_ports_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_lock_dir() -> PathBuf {
    PathBuf::from("/var/lock")
}
fn default_min_probe_interval() -> Duration {
    Duration::from_secs(60)
}

impl Default for PortsConfig {
    fn default() -> Self {
        PortsConfig {
            scan: true,
            interval: default_ports_interval(),
            lock_dir: default_lock_dir(),
            min_probe_interval: default_min_probe_interval(),
        }
    }
}

impl Config {
    /// This config with what discovery found added: checks whose names are free, marked discovered;
    /// the xferfaxlog if not already tailed; the AgentX socket if none is set. Each item is
    /// parsed on its own: one that the config parser refuses is logged and left out, and the
    /// others are monitored.
    pub fn with_discovered(&self, found: &crate::discovery::Found) -> Config {
        let mut c = self.clone();
        let mut taken: BTreeSet<String> = self
            .checks()
            .iter()
            .map(|(_, s)| s.name().to_string())
            .collect();
        for section in found.sections() {
            let d = match parse(&section, "<discovered>") {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(error = %e, item = %crate::discovery::printable(&section), "A discovered item is not a valid configuration; it is left out.");
                    continue;
                }
            };
            for (_, spec) in d.checks() {
                if !taken.insert(spec.name().to_string()) {
                    continue;
                }
                c.discovered.insert(spec.name().to_string());
                match spec {
                    CheckSpec::Modem(m) => c.modem.push(m),
                    CheckSpec::Queue(q) => c.queue.push(q),
                    CheckSpec::Sip(s) => c.sip.push(s),
                    // Discovery finds no other kind.
                    _ => {}
                }
            }
            for x in d.traffic.xferfaxlog {
                if !c.traffic.xferfaxlog.iter().any(|o| o.path == x.path) {
                    c.traffic.xferfaxlog.push(x);
                }
            }
            if c.snmp.agentx.is_none() {
                c.snmp.agentx = d.snmp.agentx;
            }
        }
        c
    }
}

impl Config {
    /// Every configured check with the path of its table (`tcp[0]`); a modem without its
    /// own `lock_dir` gets the host's, `[ports] lock_dir`.
    pub fn checks(&self) -> Vec<(String, CheckSpec)> {
        let mut out = Vec::new();
        for (i, c) in self.tcp.iter().enumerate() {
            out.push((format!("tcp[{i}]"), CheckSpec::Tcp(c.clone())));
        }
        for (i, c) in self.http.iter().enumerate() {
            out.push((format!("http[{i}]"), CheckSpec::Http(c.clone())));
        }
        for (i, c) in self.command.iter().enumerate() {
            out.push((format!("command[{i}]"), CheckSpec::Command(c.clone())));
        }
        for (i, c) in self.modem.iter().enumerate() {
            let mut c = c.clone();
            c.lock_dir
                .get_or_insert_with(|| self.ports.lock_dir.clone());
            out.push((format!("modem[{i}]"), CheckSpec::Modem(c)));
        }
        for (i, c) in self.sip.iter().enumerate() {
            out.push((format!("sip[{i}]"), CheckSpec::Sip(c.clone())));
        }
        for (i, c) in self.gateway.iter().enumerate() {
            out.push((format!("gateway[{i}]"), CheckSpec::Gateway(c.clone())));
        }
        for (i, c) in self.queue.iter().enumerate() {
            out.push((format!("queue[{i}]"), CheckSpec::Queue(c.clone())));
        }
        for (i, c) in self.line_quality.iter().enumerate() {
            out.push((
                format!("line_quality[{i}]"),
                CheckSpec::LineQuality(c.clone()),
            ));
        }
        for (i, c) in self.canary.iter().enumerate() {
            out.push((format!("canary[{i}]"), CheckSpec::Canary(c.clone())));
        }
        out
    }

    /// The lines line_quality checks judge.
    pub fn watched_lines(&self) -> std::collections::BTreeSet<String> {
        self.line_quality.iter().map(|q| q.line.clone()).collect()
    }

    /// Finds a check by name.
    pub fn check(&self, name: &str) -> Option<CheckSpec> {
        self.checks()
            .into_iter()
            .map(|(_, c)| c)
            .find(|c| c.name() == name)
    }
}

/// A rejected configuration: where, which key, and what is expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {file}: {reason}")]
    Read { file: String, reason: String },
    #[error("config error in {file}, line {line}, key `{key}`: {message}")]
    Invalid {
        file: String,
        line: usize,
        key: String,
        message: String,
    },
    #[error("config error in {file}, line {line}: {message}")]
    Syntax {
        file: String,
        line: usize,
        message: String,
    },
}

/// Where a configuration comes from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    Embedded,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::File(p) => write!(f, "{}", p.display()),
            Source::Embedded => write!(f, "<embedded default config>"),
        }
    }
}

/// Picks the configuration to use: the given file, else the system file if it exists,
/// else the embedded default.
pub fn resolve_source(given: Option<&Path>) -> Source {
    match given {
        Some(p) => Source::File(p.to_path_buf()),
        None if Path::new(SYSTEM_PATH).exists() => Source::File(PathBuf::from(SYSTEM_PATH)),
        None => Source::Embedded,
    }
}

/// Reads, parses and validates a configuration.
pub fn load(source: &Source) -> Result<Config, ConfigError> {
    match source {
        Source::Embedded => parse(EMBEDDED_DEFAULT, "<embedded default config>"),
        Source::File(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
                file: path.display().to_string(),
                reason: e.to_string(),
            })?;
            parse(&text, &path.display().to_string())
        }
    }
}

/// Parses and validates configuration text; `file` names it in errors.
pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
    let doc = toml::de::DeTable::parse(text).map_err(|e| ConfigError::Syntax {
        file: file.to_string(),
        line: e.span().map_or(1, |s| line_of(text, s.start)),
        message: format!("TOML syntax: {}", e.message().trim()),
    })?;
    let invalid = |key: String, message: String| ConfigError::Invalid {
        file: file.to_string(),
        line: locate(text, doc.get_ref(), &key),
        key,
        message,
    };
    let de = toml::Deserializer::from(doc.clone());
    let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
        let message = e.inner().message().trim();
        invalid(e.path().to_string(), with_example(message))
    })?;
    config
        .validate()
        .map_err(|(key, message)| invalid(key, message))?;
    Ok(config)
}

/// Adds an example of the expected form to serde's messages about values.
fn with_example(message: &str) -> String {
    if message.ends_with("expected a duration") {
        format!("{message} such as \"5s\", \"250ms\" or \"2m\"")
    } else if message == "invalid socket address syntax" {
        format!("{message}; expected an IP address and port such as \"0.0.0.0:{DEFAULT_PORT}\" or \"[::1]:{DEFAULT_PORT}\"")
    } else {
        message.to_string()
    }
}

impl Config {
    /// Rules that span several keys. `Err((key path, message))`.
    fn validate(&self) -> Result<(), (String, String)> {
        let a = &self.agent;
        if !valid_name(&a.server) {
            return Err(("agent.server".into(), name_rule("server name")));
        }
        if a.max_concurrent_probes == 0 {
            return Err((
                "agent.max_concurrent_probes".into(),
                "must be at least 1".into(),
            ));
        }
        let d = &self.defaults;
        check_schedule("defaults", d.interval, d.timeout, d.rise, d.fall)?;
        check_confirm("defaults", d.confirm_interval)?;
        check_flap(
            "defaults",
            &FlapRule {
                window: d.flap_window,
                transitions: d.flap_transitions,
                ratio: d.flap_ratio,
            },
        )?;
        if self.ports.interval < Duration::from_secs(1) {
            return Err((
                "ports.interval".into(),
                "must be at least 1s (the inventory reads sysfs and lock files)".into(),
            ));
        }
        self.api.validate()?;
        self.traffic.validate()?;
        self.notify.validate()?;
        self.snmp.validate()?;
        self.discovery.validate()?;
        for (i, x) in self.traffic.xferfaxlog.iter().enumerate() {
            if x.server.as_deref().is_some_and(|s| !valid_name(s)) {
                return Err((
                    format!("traffic.xferfaxlog[{i}].server"),
                    name_rule("server name"),
                ));
            }
        }
        let mut names = BTreeSet::new();
        let check_names: Vec<String> = self
            .checks()
            .iter()
            .map(|(_, s)| s.name().to_string())
            .collect();
        validate_routing(self, &check_names)?;
        for (path, spec) in self.checks() {
            let c = spec.common();
            if !valid_name(c.name) {
                return Err((format!("{path}.name"), name_rule("check name")));
            }
            if !names.insert(c.name.to_string()) {
                return Err((
                    format!("{path}.name"),
                    format!(
                        "duplicate check name `{}`: every check needs a unique name",
                        c.name
                    ),
                ));
            }
            let s = spec.schedule(d);
            if let CheckSpec::Canary(k) = &spec {
                if s.interval < crate::checks::canary::MIN_INTERVAL {
                    return Err((
                        format!("{path}.interval"),
                        "must be at least 5m: every canary is a real call".into(),
                    ));
                }
                k.check_timeouts(s.interval)
                    .map_err(|(key, m)| (format!("{path}.{key}"), m))?;
            }
            check_schedule(&path, s.interval, s.timeout, s.rise, s.fall)?;
            check_confirm(&path, s.confirm_interval)?;
            check_flap(&path, &s.flap)?;
            let talks_to_a_line = matches!(&spec, CheckSpec::Modem(m) if !m.passive);
            if talks_to_a_line && s.interval < self.ports.min_probe_interval {
                return Err((
                    format!("{path}.interval"),
                    format!(
                        "a serial line is probed at most every {} ([ports] min_probe_interval); {} would keep the modem from the fax server",
                        humantime::format_duration(self.ports.min_probe_interval),
                        humantime::format_duration(s.interval)
                    ),
                ));
            }
            if let CheckSpec::Modem(m) = &spec {
                if m.budget() > s.timeout {
                    return Err((
                        format!("{path}.timeout"),
                        format!(
                            "the script and line tests can take {} (each command waits up to command_timeout, the dial-tone test its own timeout); raise timeout to at least that, or shorten command_timeout",
                            humantime::format_duration(m.budget())
                        ),
                    ));
                }
            }
            spec.validate()
                .map_err(|(key, message)| (format!("{path}.{key}"), message))?;
        }
        Ok(())
    }
}

/// Cross-key rules of the routing sections. `Err((key path, message))`.
fn validate_routing(c: &Config, check_names: &[String]) -> Result<(), (String, String)> {
    let names: Vec<&str> = c.member.iter().map(|m| m.name.as_str()).collect();
    for (i, m) in c.member.iter().enumerate() {
        if names.iter().filter(|n| **n == m.name).count() > 1 {
            return Err((
                format!("member[{i}].name"),
                format!("duplicate member `{}`", m.name),
            ));
        }
        if let Err(reason) =
            crate::http_client::split_url(&format!("{}/v1/server", m.agent.trim_end_matches('/')))
        {
            return Err((
                format!("member[{i}].agent"),
                format!("`{}` is not usable: {reason}", m.agent),
            ));
        }
        if let Some(s) = m
            .service
            .as_deref()
            .filter(|s| !crate::net::is_host_port(s))
        {
            return Err((
                format!("member[{i}].service"),
                format!("`{s}` is not host:port"),
            ));
        }
        if m.weight == 0 || m.weight > 100 {
            return Err((
                format!("member[{i}].weight"),
                "must be 1 to 100 (percent)".into(),
            ));
        }
    }
    if !c.member.is_empty() && !names.contains(&c.agent.server.as_str()) {
        return Err((
            "member".into(),
            format!("this server `{}` (agent.server) is not a member; list every server of the cluster, this one included", c.agent.server),
        ));
    }
    for (i, g) in c.group.iter().enumerate() {
        if let Some(n) = g
            .order
            .iter()
            .chain(g.weights.keys())
            .find(|n| !names.contains(&n.as_str()))
        {
            return Err((
                format!("group[{i}].order"),
                format!("`{n}` is not a [[member]]"),
            ));
        }
        if g.order.is_empty() {
            return Err((
                format!("group[{i}].order"),
                "must list at least one member".into(),
            ));
        }
    }
    let rules = &c.server;
    for (key, list) in [
        ("critical", &rules.critical),
        ("drain", &rules.drain),
        ("lines", &rules.lines),
    ] {
        if let Some(n) = list.iter().find(|n| !check_names.contains(n)) {
            return Err((
                format!("server.{key}"),
                format!("`{n}` is not a configured check"),
            ));
        }
    }
    let cl = &c.cluster;
    if cl.poll_timeout >= cl.poll_interval {
        return Err((
            "cluster.poll_timeout".into(),
            "must be shorter than poll_interval".into(),
        ));
    }
    if cl.inactive_after < cl.poll_interval {
        return Err((
            "cluster.inactive_after".into(),
            "must be at least poll_interval".into(),
        ));
    }
    if cl.panic_threshold > 100 {
        return Err((
            "cluster.panic_threshold".into(),
            "is a percentage, 0 to 100".into(),
        ));
    }
    if cl.rise == 0 || cl.fall == 0 {
        return Err((
            "cluster.rise".into(),
            "rise and fall must be at least 1".into(),
        ));
    }
    if let Some(h) = &c.haproxy {
        h.validate()?;
    }
    if let Some(k) = &c.kamailio {
        k.validate()?;
        crate::http_client::split_url(&k.rpc_url).map_err(|r| {
            (
                "kamailio.rpc_url".to_string(),
                format!("`{}` is not usable: {r}", k.rpc_url),
            )
        })?;
        if let Some((i, _)) = c.member.iter().enumerate().find(|(_, m)| m.sip.is_none()) {
            return Err((
                format!("member[{i}].sip"),
                "every member needs its dispatcher URI when [kamailio] is set".into(),
            ));
        }
    }
    if c.hook
        .as_ref()
        .is_some_and(|h| h.command.first().is_none_or(String::is_empty))
    {
        return Err(("hook.command".into(), "must name a program".into()));
    }
    Ok(())
}

fn check_schedule(
    path: &str,
    interval: Duration,
    timeout: Duration,
    rise: u32,
    fall: u32,
) -> Result<(), (String, String)> {
    if interval < Duration::from_millis(100) {
        return Err((format!("{path}.interval"), "must be at least 100ms".into()));
    }
    if timeout.is_zero() {
        return Err((format!("{path}.timeout"), "must be longer than 0s".into()));
    }
    if timeout >= interval {
        return Err((
            format!("{path}.timeout"),
            format!(
                "timeout ({}) must be shorter than interval ({})",
                humantime::format_duration(timeout),
                humantime::format_duration(interval)
            ),
        ));
    }
    for (key, v) in [("rise", rise), ("fall", fall)] {
        if v == 0 || v > 100 {
            return Err((format!("{path}.{key}"), "must be between 1 and 100".into()));
        }
    }
    Ok(())
}

/// A confirmation probe is a real probe: no faster than every 10 ms (0s: off).
fn check_confirm(path: &str, confirm: Duration) -> Result<(), (String, String)> {
    if !confirm.is_zero() && confirm < Duration::from_millis(10) {
        return Err((
            format!("{path}.confirm_interval"),
            "must be 0s (off) or at least 10ms: each confirmation is a real probe".into(),
        ));
    }
    Ok(())
}

fn check_flap(path: &str, f: &FlapRule) -> Result<(), (String, String)> {
    if f.window > Duration::from_secs(86_400) {
        return Err((
            format!("{path}.flap_window"),
            "must be at most 24h (0s turns flap detection off)".into(),
        ));
    }
    if f.transitions < 2 {
        return Err((
            format!("{path}.flap_transitions"),
            "must be at least 2 (flapping is more state changes than this; an outage and its recovery are 2)".into(),
        ));
    }
    if !(f.ratio > 0.0 && f.ratio <= 1.0) {
        return Err((
            format!("{path}.flap_ratio"),
            "must be a share above 0 and at most 1 (0.3: 30 % transient failures)".into(),
        ));
    }
    Ok(())
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The line of the deepest part of `key` (`tcp[1].timeout`) present in the document: the
/// key itself, else the table holding it, else line 1.
fn locate(text: &str, root: &toml::de::DeTable<'_>, key: &str) -> usize {
    let mut best = 1;
    let mut table = root;
    for part in key.split('.') {
        let (name, index) = match part.split_once('[') {
            Some((n, rest)) => (n, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        let Some((k, mut value)) = table.iter().find(|(k, _)| k.get_ref() == name) else {
            return best;
        };
        best = line_of(text, k.span().start);
        if let Some(i) = index {
            let Some(item) = value.get_ref().as_array().and_then(|a| a.get(i)) else {
                return best;
            };
            best = line_of(text, item.span().start);
            value = item;
        }
        match value.get_ref().as_table() {
            Some(t) => table = t,
            None => return best,
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_parses() {
        let c = load(&Source::Embedded).expect("embedded default must be valid");
        assert!(c.ports.scan, "the embedded default lists serial ports");
        assert_eq!(c.agent.listen.port(), DEFAULT_PORT);
    }

    #[test]
    fn schedule_applies_defaults_and_caps_failing_interval() {
        let c = parse(
            "[defaults]\ninterval = \"10s\"\nfailing_interval = \"30s\"\n[[tcp]]\nname = \"a\"\naddress = \"127.0.0.1:25\"\ninterval = \"1s\"\ntimeout = \"500ms\"\n",
            "t.toml",
        )
        .unwrap();
        let s = c.checks()[0].1.common().schedule(&c.defaults, true);
        assert_eq!(s.interval, Duration::from_secs(1));
        assert_eq!(s.failing_interval, Duration::from_secs(1));
        assert_eq!(s.timeout, Duration::from_millis(500));
        assert_eq!((s.rise, s.fall), (2, 3));
        assert_eq!(s.confirm_interval, Duration::from_millis(100));
    }

    #[test]
    fn confirmation_is_on_for_network_checks_only() {
        let c = parse(
            "[[tcp]]
name = \"a\"\naddress = \"127.0.0.1:25\"\n\n\
             [[command]]\nname = \"b\"\ncommand = [\"true\"]\n\n\
             [[command]]\nname = \"c\"\ncommand = [\"true\"]\nconfirm_interval = \"250ms\"\n\n\
             [[tcp]]\nname = \"d\"\naddress = \"127.0.0.1:25\"\nfailing_interval = \"50ms\"\n\n\
             [[modem]]\nname = \"e\"\nport = \"/dev/ttyS0\"\n",
            "t.toml",
        )
        .unwrap();
        let confirm: std::collections::BTreeMap<String, u128> = c
            .checks()
            .iter()
            .map(|(_, s)| {
                let ms = s.schedule(&c.defaults).confirm_interval.as_millis();
                (s.name().to_string(), ms)
            })
            .collect();
        // tcp: the default; command: off unless set; capped at failing_interval; modem: never.
        let want = [("a", 100), ("b", 0), ("c", 250), ("d", 50), ("e", 0)];
        assert_eq!(
            confirm,
            want.iter().map(|(n, ms)| (n.to_string(), *ms)).collect()
        );
    }

    /// Every file in fixtures/config is a rejected config whose first line is
    /// `# expect: <the exact error message>`.
    #[test]
    fn every_rejection_fixture_gives_its_exact_message() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/config");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("toml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let expected = text
                .lines()
                .next()
                .and_then(|l| l.strip_prefix("# expect: "))
                .unwrap_or_else(|| panic!("{} lacks an `# expect: ` line", path.display()));
            let name = path.file_name().unwrap().to_str().unwrap();
            let err = parse(&text, name).expect_err(name);
            assert_eq!(err.to_string(), expected, "fixture {name}");
            seen += 1;
        }
        assert!(seen >= 10, "only {seen} rejection fixtures found");
    }

    #[test]
    fn missing_file_is_a_read_error_naming_the_file() {
        let err = load(&Source::File("/nonexistent/telagent.toml".into())).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot read config file /nonexistent/telagent.toml:"),
            "{err}"
        );
    }
}
