//! net-snmp's snmptrapd (Debian's package) as a notification receiver on a loopback UDP
//! port, with TELAGENT-MIB loaded so varbinds are logged by name. Every notification is one
//! line of its log: `TRAP|<security>|<varbind>~<varbind>...`.

use std::path::PathBuf;
use std::process::Command;

use tempfile::TempDir;

/// Where tests/run puts the IETF base modules (SNMPv2-SMI, -TC, -CONF) that Debian's
/// packages leave out.
pub fn ietf_mibs() -> PathBuf {
    std::env::var_os("TELAGENT_IETF_MIBS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/telagent-tests/ietf-mibs"))
}

/// The repository's mibs/ directory.
pub fn repo_mibs() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../mibs")
}

/// `-M` for net-snmp tools: the IETF base modules and TELAGENT-MIB.
pub fn mib_dirs() -> String {
    format!("{}:{}", ietf_mibs().display(), repo_mibs().display())
}

pub struct Snmptrapd {
    pub port: u16,
    conf: String,
    daemon: crate::daemon::Daemon,
    pub dir: TempDir,
}

impl Snmptrapd {
    /// Starts with `conf` (authCommunity, createUser, authUser lines) on a free port.
    pub fn start(conf: &str) -> Snmptrapd {
        let dir = tempfile::Builder::new()
            .prefix("telagent-trapd-")
            .tempdir()
            .expect("tempdir");
        let mut t = Snmptrapd {
            port: crate::sip::free_udp_port(),
            conf: conf.to_string(),
            daemon: crate::daemon::Daemon::new("snmptrapd", dir.path().join("snmptrapd.log")),
            dir,
        };
        t.restart();
        t
    }

    /// Starts again on the same port and state (its engine id stays); its log is appended
    /// to (`-A`), so it keeps every notification received before.
    pub fn restart(&mut self) {
        let d = self.dir.path();
        std::fs::write(d.join("snmptrapd.conf"), &self.conf).expect("conf");
        let mut cmd = Command::new("snmptrapd");
        cmd.env("SNMP_PERSISTENT_DIR", d.join("persist"))
            .args(["-f", "-C", "-c"])
            .arg(d.join("snmptrapd.conf"))
            .args(["-M", &mib_dirs(), "-m", "TELAGENT-MIB", "-n", "-A", "-Lf"])
            .arg(d.join("snmptrapd.log"))
            .args([
                "-F",
                "TRAP|%P|%V~%v\n",
                &format!("udp:127.0.0.1:{}", self.port),
            ]);
        let port = self.port;
        self.daemon
            .run(&mut cmd, || crate::sip::udp_listening(port));
    }

    pub fn stop(&mut self) {
        self.daemon.stop();
    }

    pub fn log(&self) -> String {
        self.daemon.log()
    }

    /// The notifications received: (security info, varbinds as `name = value`).
    pub fn received(&self) -> Vec<(String, Vec<String>)> {
        self.log()
            .split("TRAP|")
            .skip(1)
            .filter_map(|rec| {
                let (security, vbs) = rec.split_once('|')?;
                Some((
                    security.trim().to_string(),
                    vbs.trim_end()
                        .split('~')
                        .map(|v| v.trim().to_string())
                        .collect(),
                ))
            })
            .collect()
    }
}
