//! A real soft fax modem: iaxmodem (Debian package) on a pty, under fakeroot. It answers
//! AT commands without any IAX peer.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

pub struct IaxModem {
    /// The pty link iaxmodem creates (`<dir>/ttyIAX0`).
    pub port: PathBuf,
    pub dir: TempDir,
    child: Child,
}

impl IaxModem {
    pub fn start() -> IaxModem {
        let dir = tempfile::Builder::new()
            .prefix("telagent-iax-")
            .tempdir()
            .expect("tempdir");
        let port = dir.path().join("ttyIAX0");
        // iaxmodem's UDP port for IAX: unused here, but it must be free.
        let udp = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .expect("udp port")
            .port();
        let cfg = dir.path().join("ttyIAX0.cfg");
        std::fs::write(
            &cfg,
            format!(
                "device {}\nowner nobody:nogroup\nmode 660\nport {udp}\nrefresh 0\nserver 127.0.0.1\npeername iaxmodem\nsecret password\ncidname Lab Fax\ncidnumber 5551212\ncodec slinear\n",
                port.display()
            ),
        )
        .expect("write iaxmodem config");
        // iaxmodem takes its config name relative to /etc/iaxmodem.
        let child = Command::new("fakeroot")
            .arg("iaxmodem")
            .arg(format!("../..{}", cfg.display()))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start iaxmodem (apt-get install iaxmodem fakeroot)");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !port.exists() {
            assert!(std::time::Instant::now() < deadline, "iaxmodem made no pty");
            std::thread::sleep(Duration::from_millis(10));
        }
        IaxModem { port, dir, child }
    }
}

impl Drop for IaxModem {
    fn drop(&mut self) {
        // fakeroot's child is iaxmodem; SIGTERM to fakeroot's whole group ends both.
        crate::signal(self.child.id(), libc::SIGTERM);
        for pid in crate::processes_with(&format!("{}", self.dir.path().display())) {
            crate::signal(pid, libc::SIGTERM);
        }
        crate::stop(&mut self.child, Duration::from_secs(3));
    }
}
