//! Who may call the agent: a bearer token (from `access.token_file`) for state-changing
//! endpoints, and an allowlist of caller addresses (`access.allowlist_file`: one host name,
//! address or CIDR per line, `#` comments) for those and, with `protect_reads`, for the
//! read-only ones too. Files are read at start and at each reload; a malformed line is a
//! config error naming the file and the line. Rejections are logged with the caller.

use std::net::{IpAddr, ToSocketAddrs};
use std::path::Path;

/// `[access]`: who may call state-changing (and, optionally, read-only) endpoints.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessConfig {
    /// File holding the bearer token (one line).
    #[serde(default)]
    pub token_file: Option<std::path::PathBuf>,
    /// File of allowed callers: one host name, address or CIDR per line, `#` comments.
    #[serde(default)]
    pub allowlist_file: Option<std::path::PathBuf>,
    /// Apply the allowlist to read-only endpoints too.
    #[serde(default)]
    pub protect_reads: bool,
}

/// One allowlist entry: a network (an address is a /32 or /128).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Net {
    addr: IpAddr,
    prefix: u8,
}

impl Net {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V6(v6)) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            _ => ip,
        };
        match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(a) & mask == u32::from(b) & mask
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(a) & mask == u128::from(b) & mask
            }
            _ => false,
        }
    }
}

/// Parses one allowlist entry; host names are resolved (every address they have).
pub fn parse_entry(s: &str) -> Result<Vec<Net>, String> {
    if let Some(literal) = parse_literal(s) {
        return literal;
    }
    let valid = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if !valid {
        return Err(format!("`{s}` is not a host name, an address or a CIDR"));
    }
    let addrs = (s, 0)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve `{s}`: {e}"))?;
    Ok(addrs
        .map(|a| Net {
            addr: a.ip(),
            prefix: if a.is_ipv4() { 32 } else { 128 },
        })
        .collect())
}

/// An entry written as a CIDR or an address (no name resolution); None for anything else.
pub fn parse_literal(s: &str) -> Option<Result<Vec<Net>, String>> {
    if let Some((addr, prefix)) = s.split_once('/') {
        let Ok(addr) = addr.parse::<IpAddr>() else {
            return Some(Err(format!("`{s}` is not a CIDR such as 10.0.0.0/24")));
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        return Some(
            prefix
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .map(|prefix| vec![Net { addr, prefix }])
                .ok_or_else(|| format!("`{s}`: the prefix length must be 0 to {max}")),
        );
    }
    s.parse::<IpAddr>().ok().map(|addr| {
        Ok(vec![Net {
            addr,
            prefix: if addr.is_ipv4() { 32 } else { 128 },
        }])
    })
}

/// The access rules in force.
#[derive(Debug, Clone, Default)]
pub struct Access {
    pub token: Option<String>,
    pub allow: Option<Vec<Net>>,
    pub protect_reads: bool,
}

/// Why a call was refused, with the HTTP status to answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// 403: the caller's address is not in the allowlist.
    NotAllowed(String),
    /// 403: no token is configured, so nothing may change state.
    WritesDisabled(String),
    /// 401: missing or wrong bearer token.
    BadToken(String),
}

impl Refusal {
    /// The `reason` label of `telagent_api_refused_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::NotAllowed(_) => "not_allowed",
            Refusal::WritesDisabled(_) => "writes_disabled",
            Refusal::BadToken(_) => "bad_token",
        }
    }
}

impl Access {
    /// Reads the files named in the config.
    pub fn load(c: &AccessConfig) -> Result<Access, String> {
        let token = match &c.token_file {
            None => None,
            Some(p) => {
                let t = std::fs::read_to_string(p)
                    .map_err(|e| format!("cannot read token file {}: {e}", p.display()))?;
                if let Ok(m) = std::fs::metadata(p) {
                    use std::os::unix::fs::PermissionsExt;
                    if m.permissions().mode() & 0o004 != 0 {
                        tracing::warn!(file = %p.display(), "The token file is readable by every user of this host; anyone here can change the routing. Run: chmod o-rwx {}", p.display());
                    }
                }
                let t = t.trim().to_string();
                if t.len() < 16 {
                    return Err(format!(
                        "token file {}: the token must be at least 16 characters",
                        p.display()
                    ));
                }
                Some(t)
            }
        };
        let allow = c
            .allowlist_file
            .as_deref()
            .map(load_allowlist)
            .transpose()?;
        Ok(Access {
            token,
            allow,
            protect_reads: c.protect_reads,
        })
    }

    /// Whether `ip` is in the allowlist; None when there is none.
    pub fn in_allowlist(&self, ip: IpAddr) -> Option<bool> {
        self.allow
            .as_ref()
            .map(|nets| nets.iter().any(|n| n.contains(ip)))
    }

    fn allowed(&self, ip: IpAddr) -> bool {
        self.allow
            .as_ref()
            .is_none_or(|nets| nets.iter().any(|n| n.contains(ip)))
    }

    /// May `ip` read?
    pub fn check_read(&self, ip: IpAddr) -> Result<(), Refusal> {
        if self.protect_reads && !self.allowed(ip) {
            return Err(Refusal::NotAllowed(format!("{ip} is not in the allowlist")));
        }
        Ok(())
    }

    /// May `ip`, presenting `authorization`, change state?
    pub fn check_write(&self, ip: IpAddr, authorization: Option<&str>) -> Result<(), Refusal> {
        let Some(token) = &self.token else {
            return Err(Refusal::WritesDisabled(
                "state changes are disabled: set access.token_file".into(),
            ));
        };
        if !self.allowed(ip) {
            return Err(Refusal::NotAllowed(format!("{ip} is not in the allowlist")));
        }
        // The scheme name is case-insensitive (RFC 9110 11.1).
        let given = authorization
            .and_then(|a| a.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map_or("", |(_, t)| t.trim_start());
        // Compare without an early exit on the first differing byte.
        let same = given.len() == token.len()
            && given
                .bytes()
                .zip(token.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if !same {
            return Err(Refusal::BadToken(format!(
                "{ip} sent a missing or wrong bearer token"
            )));
        }
        Ok(())
    }
}

/// Reads an allowlist file; errors name the file and the line.
pub fn load_allowlist(path: &Path) -> Result<Vec<Net>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read allowlist {}: {e}", path.display()))?;
    let mut nets = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let entry = line.split('#').next().unwrap_or("").trim();
        if entry.is_empty() {
            continue;
        }
        let parsed = parse_entry(entry)
            .map_err(|e| format!("allowlist {}, line {}: {e}", path.display(), i + 1))?;
        nets.extend(parsed);
    }
    Ok(nets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_and_matching() {
        let net = &parse_entry("10.1.0.0/16").unwrap()[0];
        assert!(net.contains("10.1.200.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(
            net.contains("::ffff:10.1.0.9".parse().unwrap()),
            "v4-mapped v6 callers"
        );
        let one = &parse_entry("127.0.0.1").unwrap()[0];
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        assert!(parse_entry("::1").unwrap()[0].contains("::1".parse().unwrap()));
        assert!(parse_entry("localhost")
            .unwrap()
            .iter()
            .any(|n| n.contains("127.0.0.1".parse().unwrap())));
        assert!(parse_entry("10.0.0.0/33").unwrap_err().contains("0 to 32"));
        assert!(parse_entry("not a host!")
            .unwrap_err()
            .contains("not a host name"));
        assert!(parse_entry("0.0.0.0/0").unwrap()[0].contains("192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn write_needs_token_and_address() {
        let a = Access {
            token: Some("0123456789abcdef".into()),
            allow: Some(parse_entry("127.0.0.1").unwrap()),
            protect_reads: false,
        };
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        assert_eq!(a.check_write(lo, Some("Bearer 0123456789abcdef")), Ok(()));
        assert_eq!(a.check_write(lo, Some("bearer 0123456789abcdef")), Ok(()));
        assert_eq!(a.check_write(lo, Some("BEARER 0123456789abcdef")), Ok(()));
        assert!(matches!(
            a.check_write(lo, Some("Basic 0123456789abcdef")),
            Err(Refusal::BadToken(_))
        ));
        assert!(matches!(
            a.check_write(lo, Some("Bearer wrong")),
            Err(Refusal::BadToken(_))
        ));
        assert!(matches!(a.check_write(lo, None), Err(Refusal::BadToken(_))));
        assert!(matches!(
            a.check_write(other, Some("Bearer 0123456789abcdef")),
            Err(Refusal::NotAllowed(_))
        ));
        assert_eq!(
            a.check_read(other),
            Ok(()),
            "reads are open unless protect_reads"
        );
        let none = Access::default();
        assert!(matches!(
            none.check_write(lo, Some("Bearer x")),
            Err(Refusal::WritesDisabled(_))
        ));
    }

    #[test]
    fn malformed_allowlist_line_is_named() {
        let p = std::env::temp_dir().join(format!("telagent-allow-{}", std::process::id()));
        std::fs::write(
            &p,
            "# callers\n127.0.0.1   # the local host\n10.0.0.0/8\n10.0.0.0/99\n",
        )
        .unwrap();
        let e = load_allowlist(&p).unwrap_err();
        assert_eq!(
            e,
            format!(
                "allowlist {}, line 4: `10.0.0.0/99`: the prefix length must be 0 to 32",
                p.display()
            )
        );
        std::fs::remove_file(&p).unwrap();
    }
}
