//! net-snmp's snmpd (Debian's package) as the AgentX master, on loopback: SNMP on a free UDP
//! port (community `public`, v3 user `snmpuser` authPriv SHA/AES) and AgentX on a free TCP
//! port and on a unix socket in its temp dir. Walks go through the real `snmpwalk`.

use std::process::Command;

use tempfile::TempDir;

pub struct Snmpd {
    pub port: u16,
    pub agentx_port: u16,
    daemon: crate::daemon::Daemon,
    pub dir: TempDir,
}

impl Snmpd {
    pub fn start() -> Snmpd {
        let dir = tempfile::Builder::new()
            .prefix("telagent-snmpd-")
            .tempdir()
            .expect("tempdir");
        let mut s = Snmpd {
            port: crate::sip::free_udp_port(),
            agentx_port: crate::free_port(),
            daemon: crate::daemon::Daemon::new("snmpd", dir.path().join("snmpd.log")),
            dir,
        };
        s.restart();
        s
    }

    /// `tcp:127.0.0.1:PORT`, for the agent's `[snmp] agentx`.
    pub fn agentx(&self) -> String {
        format!("tcp:127.0.0.1:{}", self.agentx_port)
    }

    /// The AgentX unix socket, as `/var/agentx/master` is on a host.
    pub fn agentx_socket(&self) -> std::path::PathBuf {
        self.dir.path().join("agentx.sock")
    }

    /// Starts (again) on the same ports.
    pub fn restart(&mut self) {
        let d = self.dir.path();
        std::fs::write(
            d.join("snmpd.conf"),
            format!(
                "agentAddress udp:127.0.0.1:{}\nmaster agentx\nagentXSocket tcp:127.0.0.1:{},unix:{}\n\
                 agentXTimeout 5\nagentXRetries 1\nrocommunity public 127.0.0.1\n\
                 createUser snmpuser SHA authpass123 AES privpass123\nrouser snmpuser priv\n\
                 authtrapenable 2\n",
                self.port,
                self.agentx_port,
                self.agentx_socket().display()
            ),
        )
        .expect("conf");
        let mut cmd = Command::new("snmpd");
        cmd.env("SNMP_PERSISTENT_DIR", d.join("persist"))
            .args(["-f", "-C", "-c"])
            .arg(d.join("snmpd.conf"))
            .args(["-m", "", "-I", "-smux", "-Lf"])
            .arg(d.join("snmpd.log"));
        let (port, agentx, socket) = (self.port, self.agentx_port, self.agentx_socket());
        self.daemon.run(&mut cmd, || {
            crate::sip::udp_listening(port)
                && std::net::TcpStream::connect(("127.0.0.1", agentx)).is_ok()
                && std::os::unix::net::UnixStream::connect(&socket).is_ok()
        });
    }

    pub fn stop(&mut self) {
        self.daemon.stop();
    }

    /// `snmpwalk` of `oid` with `auth` (`-v2c -c public` or v3 flags): one
    /// `name = TYPE: value` line per object (names from TELAGENT-MIB), or the error.
    pub fn walk(&self, auth: &[&str], oid: &str) -> Result<Vec<String>, String> {
        let out = Command::new("snmpwalk")
            .args(auth)
            .args([
                "-M",
                &crate::snmptrapd::mib_dirs(),
                "-m",
                "TELAGENT-MIB",
                "-t",
                "2",
                "-r",
                "1",
            ])
            .arg(format!("udp:127.0.0.1:{}", self.port))
            .arg(oid)
            .output()
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() || text.contains("No Such Object") {
            return Err(text + &String::from_utf8_lossy(&out.stderr));
        }
        Ok(text.lines().map(str::to_string).collect())
    }
}

/// snmpwalk flags for v2c.
pub const V2C: &[&str] = &["-v2c", "-c", "public"];
/// snmpwalk flags for v3 authPriv.
pub const V3: &[&str] = &[
    "-v3",
    "-l",
    "authPriv",
    "-u",
    "snmpuser",
    "-a",
    "SHA",
    "-A",
    "authpass123",
    "-x",
    "AES",
    "-X",
    "privpass123",
];
