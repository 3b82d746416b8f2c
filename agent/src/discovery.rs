//! Passive discovery: what this host runs, found without writing a byte to any device, and
//! monitored with no config file (`[discovery] enabled = true`, as in the embedded
//! default).
//!
//! - **HylaFAX**: the spool (`$TELAGENT_HYLAFAX_SPOOL`, else `SPOOL` from
//!   `/etc/hylafax/setup.cache`, else `/var/spool/hylafax`). Each modem it knows
//!   (`etc/config.<id>`, `status/<id>`) becomes a *passive* `modem` check: the port is never
//!   opened, the line is judged by HylaFAX's `status/<id>` file and the UUCP lock says who
//!   holds it. `sendq/` becomes a `queue` check, `log/xferfaxlog` a traffic source.
//! - **SIP**: a UDP or TCP socket bound on this host to a SIP port (`$TELAGENT_SIP_PORTS`,
//!   default 5060), read from `/proc/net/{udp,udp6,tcp,tcp6}`, becomes a `sip` OPTIONS
//!   check to it.
//! - **AgentX**: the local snmpd's master socket (`$TELAGENT_AGENTX_SOCKET`, default
//!   `/var/agentx/master`) serves TELAGENT-MIB.
//!
//! Discovery runs at start, at every SIGHUP and every `interval` (a changed interval
//! takes effect at the next restart). What it finds is
//! rendered as TOML ([`Found::to_toml`], printed by `telagent discover`) and parsed by the
//! ordinary config parser ([`crate::config::Config::with_discovered`]), so the checks it
//! adds are exactly what the printed config says.
//! A configured check of the same name wins. An item that disappears is removed at the
//! next pass. Traffic sources and the AgentX socket are taken at start only (as from a
//! config file, they take effect at the next restart).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::serial::lock;

/// `[discovery]`: find what the host runs and monitor it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryConfig {
    /// Look for HylaFAX, local SIP listeners and snmpd's AgentX socket (default: off in a
    /// config file, on in the embedded default).
    #[serde(default)]
    pub enabled: bool,
    /// How often the host is looked at again.
    #[serde(default = "default_interval", with = "crate::vocab::duration")]
    pub interval: Duration,
}

fn default_interval() -> Duration {
    Duration::from_secs(300)
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        DiscoveryConfig {
            enabled: false,
            interval: default_interval(),
        }
    }
}

impl DiscoveryConfig {
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.interval < Duration::from_secs(1) {
            return Err(("discovery.interval".into(), "must be at least 1s".into()));
        }
        Ok(())
    }
}

/// Where discovery looks.
#[derive(Debug, Clone)]
pub struct Places {
    /// Candidate HylaFAX spools, the first that exists wins.
    pub hylafax_spools: Vec<PathBuf>,
    /// Ports a local SIP listener is looked for on.
    pub sip_ports: Vec<u16>,
    /// snmpd's AgentX master socket.
    pub agentx_socket: PathBuf,
    /// `/proc/net`.
    pub proc_net: PathBuf,
    /// Default directory of UUCP lock files (`[ports] lock_dir`).
    pub lock_dir: PathBuf,
}

impl Places {
    /// The host's usual places; `TELAGENT_HYLAFAX_SPOOL`, `TELAGENT_SIP_PORTS` (comma
    /// separated) and `TELAGENT_AGENTX_SOCKET` override them.
    pub fn of_host(lock_dir: &Path) -> Places {
        let hylafax_spools = match std::env::var_os("TELAGENT_HYLAFAX_SPOOL") {
            Some(s) => vec![PathBuf::from(s)],
            None => {
                let mut v: Vec<PathBuf> =
                    crate::files::read_text(Path::new("/etc/hylafax/setup.cache"), 64 * 1024)
                        .ok()
                        .and_then(|t| setup_cache_spool(&t))
                        .into_iter()
                        .collect();
                v.push(PathBuf::from("/var/spool/hylafax"));
                v
            }
        };
        let sip_ports = std::env::var("TELAGENT_SIP_PORTS")
            .ok()
            .map(|s| s.split(',').filter_map(|p| p.trim().parse().ok()).collect())
            .unwrap_or_else(|| vec![5060]);
        let agentx_socket = std::env::var_os("TELAGENT_AGENTX_SOCKET")
            .map_or_else(|| PathBuf::from("/var/agentx/master"), PathBuf::from);
        Places {
            hylafax_spools,
            sip_ports,
            agentx_socket,
            proc_net: PathBuf::from("/proc/net"),
            lock_dir: lock_dir.to_path_buf(),
        }
    }
}

/// `SPOOL='/var/spool/hylafax'` from HylaFAX's setup.cache.
pub(crate) fn setup_cache_spool(text: &str) -> Option<PathBuf> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("SPOOL="))
        .map(|v| v.trim().trim_matches(|c| c == '\'' || c == '"'))
        .find(|v| v.starts_with('/'))
        .map(PathBuf::from)
}

/// A modem HylaFAX knows.
#[derive(Debug, Clone, PartialEq)]
pub struct HylafaxModem {
    /// The modem id: `ttyS0`, or `_dev_x_ttyA` for a device outside /dev.
    pub id: String,
    /// The name of its check: `modem-<id>`, unique among the modems of the spool.
    pub name: String,
    /// The device path the id stands for.
    pub port: PathBuf,
    /// Where its UUCP lock lives when HylaFAX's config says (`UUCPLockDir`); else the
    /// host's, `[ports] lock_dir`.
    pub lock_dir: Option<PathBuf>,
    /// The program holding its lock, if a live one does.
    pub held_by: Option<String>,
    /// HylaFAX's status line, if readable.
    pub status: Option<String>,
}

/// A HylaFAX spool and what is in it.
///
/// Files are read bounded and only when regular (see [`crate::files`]): a FIFO, a device
/// or a huge file in the spool never blocks or floods discovery.
#[derive(Debug, Clone, PartialEq)]
pub struct Hylafax {
    pub spool: PathBuf,
    pub modems: Vec<HylafaxModem>,
    /// `sendq/` exists.
    pub sendq: bool,
    /// `log/xferfaxlog`, when the log directory exists.
    pub xferfaxlog: Option<PathBuf>,
}

/// A socket bound on this host to a SIP port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SipListener {
    pub transport: &'static str,
    /// Where to send OPTIONS: the bound address, loopback for a wildcard bind.
    pub target: SocketAddr,
}

/// Everything found on one pass.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Found {
    pub hylafax: Option<Hylafax>,
    pub sip: Vec<SipListener>,
    pub agentx: Option<PathBuf>,
}

/// Looks at the host. Reads files only.
pub fn discover(p: &Places) -> Found {
    Found {
        hylafax: p
            .hylafax_spools
            .iter()
            .find(|s| s.join("sendq").is_dir() || s.join("etc").is_dir())
            .map(|s| hylafax(s, &p.lock_dir)),
        sip: sip_listeners(&p.proc_net, &p.sip_ports),
        agentx: is_socket(&p.agentx_socket).then(|| p.agentx_socket.clone()),
    }
}

fn is_socket(p: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(p).is_ok_and(|m| m.file_type().is_socket())
}

fn hylafax(spool: &Path, default_lock_dir: &Path) -> Hylafax {
    // HylaFAX knows a modem by its config file; a status file alone is a leftover.
    let ids: BTreeSet<String> = file_names(&spool.join("etc"))
        .into_iter()
        .filter_map(|name| name.strip_prefix("config.").map(str::to_string))
        .collect();
    let modems = ids
        .into_iter()
        .filter(|id| is_modem_id(id))
        .map(|id| {
            let port = port_of(&id);
            let config = spool.join("etc").join(format!("config.{id}"));
            let lock_dir = crate::files::read_text(&config, 256 * 1024)
                .ok()
                .and_then(|t| config_value(&t, "UUCPLockDir"))
                .map(PathBuf::from);
            let held_by = lock::read(
                lock_dir.as_deref().unwrap_or(default_lock_dir),
                &device_of(&port),
            )
            .filter(|l| !l.stale)
            .map(|l| {
                format!(
                    "{} (pid {})",
                    l.program.as_deref().unwrap_or("a program"),
                    l.pid.unwrap_or(0)
                )
            });
            let status = crate::serial::hylafax::read_status(spool, &id)
                .ok()
                .map(|(l, _)| l);
            HylafaxModem {
                name: check_name("modem-", &id),
                id,
                port,
                lock_dir,
                held_by,
                status,
            }
        })
        .collect();
    let log = spool.join("log");
    let modems = unique_names(modems);
    Hylafax {
        spool: spool.to_path_buf(),
        modems,
        sendq: spool.join("sendq").is_dir(),
        xferfaxlog: log.is_dir().then(|| log.join("xferfaxlog")),
    }
}

fn file_names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// A modem id, not an editor's or package manager's leftover (`config.ttyS0.sav`).
fn is_modem_id(id: &str) -> bool {
    !id.is_empty()
        && !id.ends_with('~')
        && ![
            ".info",
            ".sav",
            ".bak",
            ".old",
            ".orig",
            ".dpkg-old",
            ".dpkg-dist",
            ".dpkg-new",
        ]
        .iter()
        .any(|s| id.ends_with(s))
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// The device a HylaFAX modem id names: faxgetty strips `/dev/` and writes `/` as `_`,
/// so an `_` may stand for either. The first path that exists wins, each `_` read as `/`
/// first; a directory that does not exist ends that branch. Without one, every `_` is a
/// `/`.
fn port_of(id: &str) -> PathBuf {
    let (root, rest) = match id.strip_prefix('_') {
        Some(rest) => (PathBuf::from("/"), rest),
        None => (PathBuf::from("/dev"), id),
    };
    let parts: Vec<&str> = rest.split('_').collect();
    let mut budget = 256;
    find_path(&root, "", &parts, &mut budget).unwrap_or_else(|| root.join(rest.replace('_', "/")))
}

/// Depth-first: `dir/<name so far>` followed by `parts`, each `_` a `/` or itself.
fn find_path(dir: &Path, name: &str, parts: &[&str], budget: &mut u32) -> Option<PathBuf> {
    let Some((first, rest)) = parts.split_first() else {
        let p = dir.join(name);
        return p.exists().then_some(p);
    };
    if *budget == 0 {
        return None;
    }
    *budget -= 1;
    if name.is_empty() {
        return find_path(dir, first, rest, budget);
    }
    let sub = dir.join(name);
    if sub.is_dir() {
        if let Some(p) = find_path(&sub, first, rest, budget) {
            return Some(p);
        }
    }
    find_path(dir, &format!("{name}_{first}"), rest, budget)
}

/// The lock name of a port: its file name (`ttyS0`, `ttyIAX0`).
fn device_of(port: &Path) -> String {
    port.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `Key: value` of a HylaFAX config file (comments start with `#`).
pub(crate) fn config_value(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let l = l.split('#').next().unwrap_or("");
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(key)
            .then(|| v.trim().trim_matches('"').to_string())
            .filter(|v| !v.is_empty())
    })
}

/// Sockets bound to one of `ports`, from the kernel's socket tables: TCP in LISTEN, UDP
/// in any state. One listener per port and transport, loopback or wildcard binds first.
fn sip_listeners(proc_net: &Path, ports: &[u16]) -> Vec<SipListener> {
    let mut found = BTreeSet::new();
    for (file, transport) in [
        ("udp", "udp"),
        ("udp6", "udp"),
        ("tcp", "tcp"),
        ("tcp6", "tcp"),
    ] {
        let Ok(text) = crate::files::read_text(&proc_net.join(file), 16 << 20) else {
            continue;
        };
        for (addr, state) in parse_proc_net(&text) {
            if ports.contains(&addr.port()) && (transport == "udp" || state == 0x0A) {
                found.insert((transport, addr));
            }
        }
    }
    let mut out: Vec<SipListener> = Vec::new();
    for (transport, addr) in found {
        let ip = match addr.ip() {
            IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            ip => ip,
        };
        let l = SipListener {
            transport,
            target: SocketAddr::new(ip, addr.port()),
        };
        match out
            .iter_mut()
            .find(|o| o.transport == transport && o.target.port() == addr.port())
        {
            Some(o) if !o.target.ip().is_loopback() && ip.is_loopback() => *o = l,
            Some(_) => {}
            None => out.push(l),
        }
    }
    out
}

/// `(local address, state)` of each row of `/proc/net/{tcp,udp}[6]`: addresses are hex in
/// the kernel's byte order (32-bit words, little-endian here), ports big-endian hex.
pub fn parse_proc_net(text: &str) -> Vec<(SocketAddr, u8)> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let local = f.nth(1)?;
            let state = u8::from_str_radix(f.nth(1)?, 16).ok()?;
            let (ip, port) = local.split_once(':')?;
            let port = u16::from_str_radix(port, 16).ok()?;
            let words = (0..ip.len() / 8)
                .map(|i| {
                    ip.get(i * 8..i * 8 + 8)
                        .and_then(|w| u32::from_str_radix(w, 16).ok())
                })
                .collect::<Option<Vec<u32>>>()?;
            let ip = match (ip.len(), words.as_slice()) {
                (8, [w]) => IpAddr::V4(Ipv4Addr::from(w.to_ne_bytes())),
                (32, [a, b, c, d]) => {
                    let mut bytes = [0u8; 16];
                    for (i, w) in [a, b, c, d].iter().enumerate() {
                        bytes[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
                    }
                    IpAddr::V6(Ipv6Addr::from(bytes))
                }
                _ => return None,
            };
            Some((SocketAddr::new(ip, port), state))
        })
        .collect()
}

/// A TOML basic string.
fn quote(s: &str) -> String {
    // JSON's string escapes are a subset of TOML's basic-string escapes.
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// Makes the names unique: a name taken by an earlier modem gets `-2`, `-3`, ... (ids
/// that differ only in a leading `_` or beyond the 64 characters of a name collide).
fn unique_names(mut modems: Vec<HylafaxModem>) -> Vec<HylafaxModem> {
    let mut taken = BTreeSet::new();
    for m in &mut modems {
        let mut n = 1;
        while !taken.insert(m.name.clone()) {
            n += 1;
            let suffix = format!("-{n}");
            let base = check_name("modem-", &m.id);
            let keep = base.len().min(64 - suffix.len());
            m.name = format!("{}{suffix}", &base[..keep]);
        }
    }
    modems
}

/// Text for a log line or a TOML comment: control characters (which TOML comments may not
/// hold) as `?`, at most 400 characters.
pub(crate) fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() && c != '\t' { '?' } else { c })
        .take(400)
        .collect()
}

/// A check name from an id: the allowed characters, at most 64 of them.
fn check_name(prefix: &str, id: &str) -> String {
    let id: String = id
        .trim_start_matches('_')
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let room = 64 - prefix.len();
    let tail = &id[id.len().saturating_sub(room)..];
    format!("{prefix}{tail}")
}

impl Found {
    /// One line per item: what was found and what is monitored.
    pub fn summary(&self) -> Vec<String> {
        let mut out = Vec::new();
        match &self.hylafax {
            Some(h) => {
                out.push(format!(
                    "HylaFAX spool {}: {} modem(s){}{}",
                    h.spool.display(),
                    h.modems.len(),
                    if h.sendq {
                        ", queue check on sendq"
                    } else {
                        ""
                    },
                    h.xferfaxlog
                        .as_ref()
                        .map(|x| format!(", traffic from {}", x.display()))
                        .unwrap_or_default()
                ));
                for m in &h.modems {
                    out.push(format!(
                        "HylaFAX modem {} on {}: passive modem check `{}` (HylaFAX status: {}; {}); the port is never opened",
                        m.id,
                        m.port.display(),
                        m.name,
                        m.status.as_deref().unwrap_or("none"),
                        m.held_by
                            .as_ref()
                            .map_or("no lock held".to_string(), |h| format!("held by {h}")),
                    ));
                }
            }
            None => out.push("No HylaFAX spool found.".into()),
        }
        for s in &self.sip {
            out.push(format!(
                "SIP listener on {} {}: sip check `{}` (OPTIONS)",
                s.transport,
                s.target,
                sip_name(s)
            ));
        }
        if self.sip.is_empty() {
            out.push("No local SIP listener found.".into());
        }
        match &self.agentx {
            Some(a) => out.push(format!(
                "snmpd AgentX socket {}: TELAGENT-MIB served through it",
                a.display()
            )),
            None => out.push("No snmpd AgentX socket found.".into()),
        }
        out.iter().map(|l| printable(l)).collect()
    }

    /// The checks, sources and outputs found, as a commented config that `check-config`
    /// accepts.
    pub fn to_toml(&self) -> String {
        let mut t = String::from(
            "# Found on this host by `telagent discover` (passive: nothing was written to any\n\
             # device). Save it as /etc/telagent/telagent.toml and edit; see README.md.\n",
        );
        for line in self.summary() {
            let _ = writeln!(t, "#   {}", printable(&line));
        }
        for section in self.sections() {
            t.push('\n');
            t.push_str(&section);
        }
        t
    }

    /// One TOML text per item found, each a valid config by itself.
    pub(crate) fn sections(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(h) = &self.hylafax {
            let spool = quote(&h.spool.display().to_string());
            for m in &h.modems {
                out.push(format!(
                    "# HylaFAX modem {id}: judged by {shown}/status/{id}; the port is never opened.\n\
                     # Remove `passive` to probe it with AT commands whenever no program holds its lock.\n\
                     [[modem]]\nname = {name}\nport = {port}\ndevice = {device}\nhylafax_device = {idq}\n\
                     hylafax_spool = {spool}\n{lock}passive = true\n",
                    id = m.id,
                    shown = printable(&h.spool.display().to_string()),
                    name = quote(&m.name),
                    port = quote(&m.port.display().to_string()),
                    device = quote(&device_of(&m.port)),
                    idq = quote(&m.id),
                    lock = m.lock_dir.as_ref().map_or_else(String::new, |d| {
                        format!("lock_dir = {}\n", quote(&d.display().to_string()))
                    }),
                ));
            }
            if h.sendq {
                out.push(format!(
                    "# HylaFAX's outbound queue. Set high_water and max_age to drain on a backlog.\n\
                     [[queue]]\nname = \"hylafax-sendq\"\nsource = \"hylafax\"\nspool = {spool}\n"
                ));
            }
            if let Some(x) = &h.xferfaxlog {
                out.push(format!(
                    "# Every SEND and RECV record, counted for `telagent totals`.\n\
                     [[traffic.xferfaxlog]]\npath = {}\n",
                    quote(&x.display().to_string())
                ));
            }
        }
        for s in &self.sip {
            out.push(format!(
                "# A SIP element listening on this host.\n\
                 [[sip]]\nname = {}\nuri = {}\ntransport = \"{}\"\n",
                quote(&sip_name(s)),
                quote(&format!("sip:{}", s.target)),
                s.transport
            ));
        }
        if let Some(a) = &self.agentx {
            out.push(format!(
                "# TELAGENT-MIB through the local snmpd.\n[snmp]\nagentx = {}\n",
                quote(&format!("unix:{}", a.display()))
            ));
        }
        out
    }
}

fn sip_name(s: &SipListener) -> String {
    format!("sip-local-{}-{}", s.transport, s.target.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_kernel_socket_tables() {
        // /proc/net/udp and tcp6 rows as Linux writes them (little-endian host).
        let udp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
                   \x20 12: 0100007F:13C4 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0000000000000000 0\n\
                   \x20 13: 00000000:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0000000000000000 0\n";
        let rows = parse_proc_net(udp);
        assert_eq!(
            rows,
            [
                ("127.0.0.1:5060".parse().unwrap(), 7),
                ("0.0.0.0:53".parse().unwrap(), 7)
            ]
        );
        let tcp6 = "  sl  local_address                         remote_address                        st\n\
                    \x20  0: 00000000000000000000000001000000:13C4 00000000000000000000000000000000:0000 0A 0\n\
                    \x20  1: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 0\n";
        let rows = parse_proc_net(tcp6);
        assert_eq!(rows[0], ("[::1]:5060".parse().unwrap(), 0x0A));
        assert_eq!(rows[1], ("[::]:8080".parse().unwrap(), 0x0A));
        // Hostile rows are skipped, never a panic.
        assert!(
            parse_proc_net("h\n 0: zz:13C4 0 0A\n 1: 0100007F 0 0A\n 2: 0100007F:x 0 0A\n")
                .is_empty()
        );
    }

    /// A row as the kernel writes it: the address in 32-bit words of host byte order.
    fn kernel_row(i: usize, addr: SocketAddr, state: u8) -> String {
        let ip = match addr.ip() {
            IpAddr::V4(a) => format!("{:08X}", u32::from_ne_bytes(a.octets())),
            IpAddr::V6(a) => a
                .octets()
                .chunks(4)
                .map(|w| format!("{:08X}", u32::from_ne_bytes([w[0], w[1], w[2], w[3]])))
                .collect(),
        };
        format!("{i:>4}: {ip}:{:04X} 00000000:0000 {state:02X} 00000000:00000000 00:00000000 00000000     0        0 1 2 0000000000000000 0\n", addr.port())
    }

    #[test]
    fn socket_tables_round_trip_and_hostile_bytes_never_panic() {
        let mut rng = crate::testing::Lcg(0x5EED_D15C);
        for _ in 0..500 {
            let n = (rng.next_u64() % 8) as usize;
            let want: Vec<(SocketAddr, u8)> = (0..n)
                .map(|_| {
                    let r = rng.next_u64();
                    let ip = if r % 2 == 0 {
                        IpAddr::V4(Ipv4Addr::from((r >> 8) as u32))
                    } else {
                        IpAddr::V6(Ipv6Addr::from(
                            u128::from(r) << 64 | u128::from(rng.next_u64()),
                        ))
                    };
                    (SocketAddr::new(ip, (r >> 40) as u16), (r >> 32) as u8)
                })
                .collect();
            let text = std::iter::once("  sl  local_address rem_address   st\n".to_string())
                .chain(
                    want.iter()
                        .enumerate()
                        .map(|(i, (a, s))| kernel_row(i, *a, *s)),
                )
                .collect::<String>();
            assert_eq!(parse_proc_net(&text), want, "{text}");
            // Hostile: the same text with bytes overwritten, cut or garbage appended.
            let mut bytes = text.into_bytes();
            for _ in 0..(rng.next_u64() % 6) {
                let at = (rng.next_u64() as usize) % bytes.len().max(1);
                if let Some(b) = bytes.get_mut(at) {
                    *b = (rng.next_u64() >> 56) as u8;
                }
            }
            bytes.truncate((rng.next_u64() as usize) % (bytes.len() + 1));
            let tail = (rng.next_u64() % 40) as usize;
            bytes.extend(rng.bytes(tail));
            let rows = parse_proc_net(&String::from_utf8_lossy(&bytes));
            assert!(rows.len() <= n + 2);
        }
    }

    /// A spool as a hostile or broken host leaves it: FIFOs where files should be, a
    /// status file that is /dev/zero, control characters, ids whose names collide, a
    /// device in a directory with `_` in its name. Discovery returns, names every modem
    /// once, reads no device, and what it prints is a valid config; no modem with a
    /// broken status is up.
    #[test]
    fn a_hostile_spool_never_blocks_and_still_gives_a_valid_config() {
        let root = std::env::temp_dir().join(format!("telagent-hostile-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let spool = root.join("spool");
        for d in ["etc", "status", "sendq", "log"] {
            std::fs::create_dir_all(spool.join(d)).unwrap();
        }
        let lab = root.join("lab_u");
        std::fs::create_dir_all(&lab).unwrap();
        std::fs::write(lab.join("ttyA"), "").unwrap();
        let lab_id = format!("{}_ttyA", lab.display()).replace('/', "_");
        let long = |c: char| format!("x{c}{}", "c".repeat(100));
        for id in ["ttyS1", "_ttyS1", "fifo0", &lab_id, &long('1'), &long('2')] {
            std::fs::write(
                spool.join(format!("etc/config.{id}")),
                "ModemType: Class1\n",
            )
            .unwrap();
        }
        crate::testing::mkfifo(&spool.join("etc/config.fifo1"));
        crate::testing::mkfifo(&spool.join("status/fifo0"));
        std::os::unix::fs::symlink("/dev/zero", spool.join("status/ttyS1")).unwrap();
        std::fs::write(spool.join("status/_ttyS1"), "Running and idle\x1b[2J\n").unwrap();
        crate::testing::mkfifo(&spool.join("sendq/q1"));
        let places = Places {
            hylafax_spools: vec![spool.clone()],
            sip_ports: vec![5060],
            agentx_socket: root.join("none"),
            proc_net: root.join("none"),
            lock_dir: root.join("locks"),
        };
        let found = discover(&places);
        let h = found.hylafax.as_ref().unwrap();
        let names: BTreeSet<&str> = h.modems.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names.len(), 6, "{names:?}");
        assert!(h.modems.iter().all(|m| m.name.len() <= 64));
        assert!(
            !h.modems.iter().any(|m| m.id == "fifo1"),
            "a FIFO is not a modem config"
        );
        let lab_modem = h.modems.iter().find(|m| m.id == lab_id).unwrap();
        assert_eq!(lab_modem.port, lab.join("ttyA"));
        for m in &h.modems {
            if let Some(st) = &m.status {
                assert!(!st.chars().any(char::is_control), "{st:?}");
                assert_ne!(
                    crate::serial::hylafax::judge(st).0,
                    crate::checks::Status::Ok,
                    "{st:?}"
                );
            }
        }
        let text = found.to_toml();
        let parsed =
            crate::config::parse(&text, "discovered").unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(parsed.modem.len(), 6);
        let merged = crate::config::parse("", "empty")
            .unwrap()
            .with_discovered(&found);
        assert_eq!(merged.discovered.len(), 7, "six modems and the queue");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn hylafax_ids_name_their_devices() {
        assert_eq!(
            port_of("_nonexistent_lab_ttyA"),
            Path::new("/nonexistent/lab/ttyA")
        );
        assert_eq!(port_of("ttyS0"), Path::new("/dev/ttyS0"));
        for bad in [
            "any.info",
            "ttyS0.sav",
            "ttyS0~",
            "",
            "tty S0",
            "ttyS0.dpkg-old",
        ] {
            assert!(!is_modem_id(bad), "{bad:?}");
        }
        assert_eq!(
            config_value("# x\nUUCPLockDir:\t/srv/lock # here\n", "uucplockdir"),
            Some("/srv/lock".into())
        );
        assert_eq!(
            setup_cache_spool("FOO=1\nSPOOL='/srv/hylafax'\n"),
            Some(PathBuf::from("/srv/hylafax"))
        );
        let long = "_".to_string() + &"d".repeat(100);
        assert_eq!(check_name("modem-", &long).len(), 64);
    }

    #[test]
    fn what_is_found_is_a_valid_config_that_merges_without_clobbering() {
        let found = Found {
            hylafax: Some(Hylafax {
                spool: "/srv/hyla \"fax\"".into(),
                modems: vec![HylafaxModem {
                    id: "ttyS0".into(),
                    name: "modem-ttyS0".into(),
                    port: "/dev/ttyS0".into(),
                    lock_dir: Some("/srv/locks".into()),
                    held_by: Some("faxgetty (pid 12)".into()),
                    status: Some("Running and idle".into()),
                }],
                sendq: true,
                xferfaxlog: Some("/srv/hyla \"fax\"/log/xferfaxlog".into()),
            }),
            sip: vec![SipListener {
                transport: "udp",
                target: "127.0.0.1:5060".parse().unwrap(),
            }],
            agentx: Some("/var/agentx/master".into()),
        };
        let text = found.to_toml();
        let parsed = crate::config::parse(&text, "t").unwrap();
        assert_eq!(parsed.modem.len(), 1);
        assert!(parsed.modem[0].passive);
        assert_eq!(parsed.queue[0].name, "hylafax-sendq");
        assert_eq!(parsed.sip[0].uri, "sip:127.0.0.1:5060");
        assert_eq!(
            parsed.snmp.agentx.as_deref(),
            Some("unix:/var/agentx/master")
        );

        let mut base = crate::config::parse(
            "[[tcp]]\nname = \"hylafax-sendq\"\naddress = \"127.0.0.1:1\"\n",
            "b",
        )
        .unwrap();
        base.snmp.agentx = Some("tcp:127.0.0.1:705".into());
        let merged = base.with_discovered(&found);
        assert_eq!(merged.queue.len(), 0, "a configured name wins");
        assert_eq!(merged.tcp.len(), 1);
        assert_eq!(
            merged.discovered,
            ["modem-ttyS0", "sip-local-udp-5060"]
                .map(String::from)
                .into()
        );
        assert_eq!(merged.traffic.xferfaxlog.len(), 1);
        assert_eq!(merged.snmp.agentx.as_deref(), Some("tcp:127.0.0.1:705"));
        assert_eq!(
            merged.with_discovered(&found).modem.len(),
            1,
            "merging twice adds nothing"
        );
    }
}
