//! The fault lab: a network namespace of the test's own, with nftables rules cutting links
//! and dropping packets in the kernel (see ../shared/PEERS.md, "Fault lab"). Every process
//! of the test runs inside it; each agent as its own uid, since outgoing loopback sockets
//! all leave from 127.0.0.1 and only the uid tells agents apart. Deleted on drop, after
//! its processes are stopped by PID.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Lab {
    pub name: String,
    children: Vec<Child>,
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .expect("ip/nft (apt-get install iproute2 nftables)");
    assert!(out.status.success(), "{cmd:?}: {out:?}");
}

impl Default for Lab {
    fn default() -> Self {
        Lab::new()
    }
}

impl Lab {
    /// A new namespace with `lo` up and an empty `inet lab` table hooked on output.
    pub fn new() -> Lab {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let name = format!(
            "tlab{}x{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        run(Command::new("ip").args(["netns", "add", &name]));
        let lab = Lab {
            name,
            children: Vec::new(),
        };
        run(Command::new("ip").args(["-n", &lab.name, "link", "set", "lo", "up"]));
        lab.nft(&["add", "table", "inet", "lab"]);
        lab.nft(&[
            "add",
            "chain",
            "inet",
            "lab",
            "out",
            "{ type filter hook output priority 0; }",
        ]);
        lab
    }

    /// A command run inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    pub fn nft(&self, args: &[&str]) {
        run(self.command("nft").args(args));
    }

    /// Drops every packet that processes of `uid` send to `addr`.
    pub fn cut(&self, uid: u32, addr: &str) {
        self.nft(&[
            "add",
            "rule",
            "inet",
            "lab",
            "out",
            "meta",
            "skuid",
            &uid.to_string(),
            "ip",
            "daddr",
            addr,
            "drop",
        ]);
    }

    /// Removes every rule: all links work again.
    pub fn heal(&self) {
        self.nft(&["flush", "chain", "inet", "lab", "out"]);
    }

    /// Starts `cmd` (made by [`Lab::command`]) and keeps it, to stop it on drop.
    pub fn spawn(&mut self, mut cmd: Command, log: &Path) -> u32 {
        let log = std::fs::File::create(log).expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .expect("spawn in the lab");
        let pid = child.id();
        self.children.push(child);
        pid
    }

    /// A TCP service on `addr:port` that accepts every connection (socat).
    pub fn service(&mut self, addr: &str, port: u16, dir: &Path) {
        let mut c = self.command("socat");
        c.arg(format!("TCP-LISTEN:{port},bind={addr},fork,reuseaddr"))
            .arg("SYSTEM:true");
        self.spawn(c, &dir.join(format!("service-{addr}.log")));
    }

    /// GETs `url` from inside the namespace (curl), None if it does not answer in 2 s.
    pub fn get(&self, url: &str) -> Option<String> {
        let out = self
            .command("curl")
            .args(["-sf", "--max-time", "2", url])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A directory that uid `uid` owns (a state dir of an agent run as that uid).
    pub fn owned_dir(parent: &Path, name: &str, uid: u32) -> PathBuf {
        let d = parent.join(name);
        std::fs::create_dir_all(&d).expect("mkdir");
        std::os::unix::fs::chown(&d, Some(uid), Some(uid)).expect("chown");
        d
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            crate::stop(c, Duration::from_secs(3));
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}
