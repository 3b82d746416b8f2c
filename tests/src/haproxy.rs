//! HAProxy (Debian package) in front of test backends, as the README configures it: a TCP
//! health check of each server's service and agent-check pointed at its telagent agent;
//! its admin socket to read server states.

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

/// One backend server: its service address (health-checked) and its agent-check port.
pub struct Backend {
    pub name: String,
    pub addr: std::net::SocketAddr,
    pub agent_check: u16,
}

pub struct Haproxy {
    pub frontend: u16,
    dir: TempDir,
    child: Child,
}

impl Haproxy {
    /// The README's backend: health check and agent-check every 300 ms.
    pub fn start(backends: &[Backend]) -> Haproxy {
        Haproxy::start_with(
            backends,
            "check inter 300ms fall 1 rise 1 agent-check agent-port {agent} agent-inter 300ms weight 100",
        )
    }

    /// Each server line ends with `options`, `{agent}` replaced by its agent-check port.
    pub fn start_with(backends: &[Backend], options: &str) -> Haproxy {
        let dir = tempfile::Builder::new()
            .prefix("telagent-haproxy-")
            .tempdir()
            .unwrap();
        let frontend = crate::free_port();
        let mut cfg = format!(
            "global\n    stats socket {}/admin.sock mode 600 level admin\n    stats timeout 5s\n\
             defaults\n    mode http\n    timeout connect 1s\n    timeout client 5s\n    timeout server 5s\n    timeout check 500ms\n\
             frontend fe\n    bind 127.0.0.1:{frontend}\n    default_backend be\n\
             backend be\n    balance roundrobin\n",
            dir.path().display()
        );
        for b in backends {
            cfg.push_str(&format!(
                "    server {} {} {}\n",
                b.name,
                b.addr,
                options.replace("{agent}", &b.agent_check.to_string())
            ));
        }
        std::fs::write(dir.path().join("haproxy.cfg"), cfg).unwrap();
        let log = std::fs::File::create(dir.path().join("haproxy.log")).unwrap();
        let mut child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(dir.path().join("haproxy.cfg"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("cannot start haproxy (apt-get install haproxy)");
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", frontend)).is_err()
            || !dir.path().join("admin.sock").exists()
        {
            if let Ok(Some(s)) = child.try_wait() {
                panic!(
                    "haproxy exited ({s}): {}",
                    std::fs::read_to_string(dir.path().join("haproxy.log")).unwrap_or_default()
                );
            }
            assert!(std::time::Instant::now() < deadline, "haproxy not ready");
            std::thread::sleep(Duration::from_millis(20));
        }
        Haproxy {
            frontend,
            dir,
            child,
        }
    }

    /// The runtime API's Unix socket (`level admin`).
    pub fn socket(&self) -> std::path::PathBuf {
        self.dir.path().join("admin.sock")
    }

    /// A command on the admin socket.
    pub fn admin(&self, command: &str) -> String {
        let mut s = std::os::unix::net::UnixStream::connect(self.socket()).expect("admin socket");
        s.write_all(format!("{command}\n").as_bytes()).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    /// (status, weight) of a server of backend `be`, from `show stat`.
    pub fn server(&self, name: &str) -> Option<(String, String)> {
        let stat = self.admin("show stat");
        let mut lines = stat.lines();
        let header: Vec<&str> = lines.next()?.trim_start_matches("# ").split(',').collect();
        let col = |n: &str| header.iter().position(|h| *h == n);
        let (status, weight) = (col("status")?, col("weight")?);
        lines
            .map(|l| l.split(',').collect::<Vec<_>>())
            .find(|f| f.first() == Some(&"be") && f.get(1) == Some(&name))
            .map(|f| (f[status].to_string(), f[weight].to_string()))
    }

    /// GET / through the frontend: the body.
    pub fn get(&self) -> String {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.frontend)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET / HTTP/1.0\r\nHost: test\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out.split("\r\n\r\n").nth(1).unwrap_or("").to_string()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        crate::stop(&mut self.child, Duration::from_secs(3));
    }
}
