//! A real HylaFAX (Debian's hylafax-server) in a private spool: faxq under fakeroot, hfaxd
//! under fakechroot on a free loopback port (tests/peers/hylafax-sandbox.sh). Jobs are
//! submitted with the real `sendfax`; with no modem configured they wait in `sendq`.

use std::path::PathBuf;
use std::process::Command;

use tempfile::TempDir;

pub struct Hylafax {
    pub dir: TempDir,
    pub port: u16,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("peers/hylafax-sandbox.sh")
}

impl Hylafax {
    pub fn start() -> Hylafax {
        let dir = tempfile::Builder::new()
            .prefix("telagent-hylafax-")
            .tempdir()
            .expect("tempdir");
        let port = crate::free_port();
        let hf = Hylafax { dir, port };
        let out = Command::new("bash")
            .arg(script())
            .arg("start")
            .arg(hf.spool())
            .arg(port.to_string())
            .output()
            .expect("hylafax-sandbox.sh");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("Running"),
            "HylaFAX did not start: {text}{}\nfaxq: {}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(hf.dir.path().join("spool.faxq.log")).unwrap_or_default()
        );
        hf
    }

    pub fn spool(&self) -> PathBuf {
        self.dir.path().join("spool")
    }

    /// Submits a one-page fax to `number` with the real sendfax; returns its job id.
    pub fn sendfax(&self, number: &str) -> String {
        let doc = self.dir.path().join("doc.txt");
        std::fs::write(&doc, "telagent test page\n").expect("doc");
        let out = Command::new("sendfax")
            .args([
                "-h",
                &format!("127.0.0.1:{}", self.port),
                "-n",
                "-d",
                number,
            ])
            .arg(&doc)
            .output()
            .expect("sendfax");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("request id is"),
            "sendfax failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text.split_whitespace()
            .nth(3)
            .unwrap_or_default()
            .to_string()
    }
}

impl Drop for Hylafax {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(self.spool())
            .output();
    }
}
