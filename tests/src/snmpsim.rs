//! snmpsim (PyPI, in the venv tests/run makes) serving a recording of an E1 ISDN PRI
//! gateway: ifTable, DS1-MIB dsx1LineStatus and ISDN-MIB isdnBearerTable for 30
//! B-channels. The test rewrites the recording in place to change the gateway's state.
//! snmpsim refuses to run as root: it runs as `nobody`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

/// Where tests/run installs snmpsim (override with TELAGENT_SNMPSIM_VENV).
pub fn venv() -> PathBuf {
    std::env::var_os("TELAGENT_SNMPSIM_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/telagent-tests/snmpsim-venv"))
}

pub const V3_USER: &str = "telagent";
pub const V3_AUTH: &str = "authpass123";
pub const V3_PRIV: &str = "privpass123";

pub struct SnmpSim {
    pub port: u16,
    dir: TempDir,
    child: Child,
}

impl SnmpSim {
    /// Serves a gateway with `active` busy B-channels and this dsx1LineStatus (1: no alarm).
    pub fn start(active: u32, line_status: i64) -> SnmpSim {
        Self::serve_with(&[], |sim| sim.set(active, line_status))
    }

    /// Serves recordings as they are: (community, .snmprec text).
    pub fn serve(recordings: &[(&str, String)]) -> SnmpSim {
        Self::serve_with(recordings, |_| {})
    }

    fn serve_with(recordings: &[(&str, String)], setup: impl FnOnce(&SnmpSim)) -> SnmpSim {
        let dir = tempfile::Builder::new()
            .prefix("telagent-snmpsim-")
            .tempdir()
            .unwrap();
        let chmod = |p: &std::path::Path, mode: u32| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        chmod(dir.path(), 0o755);
        for (sub, mode) in [("data", 0o755), ("cache", 0o777)] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
            chmod(&dir.path().join(sub), mode);
        }
        let port = crate::sip::free_udp_port();
        let mut sim = SnmpSim {
            port,
            dir,
            child: Command::new("true").spawn().unwrap(),
        };
        for (community, text) in recordings {
            let f = sim
                .dir
                .path()
                .join("data")
                .join(format!("{community}.snmprec"));
            std::fs::write(&f, text).unwrap();
            chmod(&f, 0o644);
        }
        setup(&sim);
        let _ = sim.child.wait();
        let log = std::fs::File::create(sim.dir.path().join("snmpsim.log")).unwrap();
        sim.child = Command::new("setpriv")
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
            .arg(venv().join("bin/snmpsim-command-responder"))
            .arg(format!(
                "--data-dir={}",
                sim.dir.path().join("data").display()
            ))
            .arg(format!(
                "--cache-dir={}",
                sim.dir.path().join("cache").display()
            ))
            .arg(format!("--agent-udpv4-endpoint=127.0.0.1:{port}"))
            .args([
                &format!("--v3-user={V3_USER}"),
                &format!("--v3-auth-key={V3_AUTH}"),
                "--v3-auth-proto=SHA",
                &format!("--v3-priv-key={V3_PRIV}"),
                "--v3-priv-proto=AES",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("cannot start snmpsim (tests/run installs it)");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !crate::sip::udp_listening(port) {
            if let Ok(Some(s)) = sim.child.try_wait() {
                panic!("snmpsim exited ({s}): {}", sim.log());
            }
            assert!(
                std::time::Instant::now() < deadline,
                "snmpsim not ready: {}",
                sim.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        sim
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("snmpsim.log")).unwrap_or_default()
    }

    /// Rewrites the recording in place. snmpsim re-indexes a recording when its mtime
    /// changes, at one-second resolution: each rewrite gets a later mtime than the last.
    pub fn set(&self, active: u32, line_status: i64) {
        let data = self.dir.path().join("data");
        let tmp = data.join("public.snmprec.tmp");
        std::fs::write(&tmp, isdn_gateway(active, line_status)).unwrap();
        let previous = std::fs::metadata(data.join("public.snmprec"))
            .and_then(|m| m.modified())
            .unwrap_or(std::time::UNIX_EPOCH);
        let mtime = std::time::SystemTime::now().max(previous + Duration::from_secs(2));
        std::fs::File::options()
            .write(true)
            .open(&tmp)
            .and_then(|f| f.set_modified(mtime))
            .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::rename(&tmp, data.join("public.snmprec")).unwrap();
    }

    /// Stops answering (the process is stopped, not killed: the port stays bound).
    pub fn freeze(&self) {
        crate::signal(self.child.id(), libc::SIGSTOP);
    }
}

impl Drop for SnmpSim {
    fn drop(&mut self) {
        crate::signal(self.child.id(), libc::SIGCONT);
        crate::stop(&mut self.child, Duration::from_secs(5));
    }
}

/// An .snmprec of an E1 gateway: ifIndex 1 the E1, 2 its D-channel, 101..130 the
/// B-channels; `active` B-channels active(4), the rest idle(1); all interfaces down when
/// the line is in alarm.
pub fn isdn_gateway(active: u32, line_status: i64) -> String {
    let mut recs: Vec<(Vec<u64>, &str, String)> = Vec::new();
    let mut add = |oid: &str, tag: &'static str, val: String| {
        recs.push((
            oid.split('.').map(|p| p.parse().unwrap()).collect(),
            tag,
            val,
        ));
    };
    add(
        "1.3.6.1.2.1.1.1.0",
        "4",
        "Lab ISDN PRI gateway (simulated)".into(),
    );
    add("1.3.6.1.2.1.1.5.0", "4", "isdngw1".into());
    let mut ifs = vec![(1u64, 18), (2, 77)];
    ifs.extend((101..=130).map(|i| (i, 81)));
    let oper = if line_status == 1 { "1" } else { "2" };
    for (idx, typ) in &ifs {
        add(&format!("1.3.6.1.2.1.2.2.1.1.{idx}"), "2", idx.to_string());
        add(&format!("1.3.6.1.2.1.2.2.1.3.{idx}"), "2", typ.to_string());
        add(&format!("1.3.6.1.2.1.2.2.1.7.{idx}"), "2", "1".into());
        add(&format!("1.3.6.1.2.1.2.2.1.8.{idx}"), "2", oper.into());
    }
    add("1.3.6.1.2.1.10.18.6.1.1.1", "2", "1".into());
    add("1.3.6.1.2.1.10.18.6.1.2.1", "2", "1".into());
    add("1.3.6.1.2.1.10.18.6.1.5.1", "2", "5".into());
    add("1.3.6.1.2.1.10.18.6.1.10.1", "2", line_status.to_string());
    for ch in 1..=30u64 {
        let idx = 100 + ch;
        add(
            &format!("1.3.6.1.2.1.10.20.1.2.1.1.1.{idx}"),
            "2",
            "1".into(),
        );
        let st = if ch <= u64::from(active) { "4" } else { "1" };
        add(
            &format!("1.3.6.1.2.1.10.20.1.2.1.1.2.{idx}"),
            "2",
            st.into(),
        );
        add(
            &format!("1.3.6.1.2.1.10.20.1.2.1.1.3.{idx}"),
            "2",
            (if ch < 16 { ch } else { ch + 1 }).to_string(),
        );
    }
    recs.sort_by(|a, b| a.0.cmp(&b.0));
    recs.iter()
        .map(|(o, t, v)| {
            let oid: Vec<String> = o.iter().map(u64::to_string).collect();
            format!("{}|{t}|{v}\n", oid.join("."))
        })
        .collect()
}
