//! A fax modem fake on a real pty pair made by socat, for the cases no real peer covers.
//! It behaves like a Hayes-compatible fax modem, quirks included: echo on until `ATE0`,
//! verbose `\r\n...\r\n` framing or numeric result codes after `ATV0`, `ERROR` to unknown
//! commands, `ATZ` resetting echo and verbosity. Faults are switched on per test: silence
//! from some command on, noise bytes, a flood without line ends, no dial tone, a port that
//! vanishes mid-probe. Every byte it receives is recorded.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tempfile::TempDir;

/// Faults and answers of a fake modem.
#[derive(Debug, Clone)]
pub struct Quirks {
    /// Echo at power-on (real modems: on).
    pub echo: bool,
    /// Verbose result codes at power-on (false: as if `ATV0` was stored).
    pub verbose: bool,
    /// Stop answering from this command on (0-based count of commands received).
    pub mute_from: Option<usize>,
    /// Answer every command with noise bytes.
    pub noise: bool,
    /// Answer `AT` with this many bytes and no line end.
    pub flood: Option<usize>,
    /// Result of a dial command (`ATD...`): "OK" with a dial tone, else "NO DIALTONE".
    pub dial_result: &'static str,
    /// Answer to `AT-TRV`.
    pub volts: &'static str,
    /// The pty vanishes (socat killed) when this command arrives.
    pub vanish_at: Option<usize>,
    pub manufacturer: &'static str,
    pub model: &'static str,
    pub revision: &'static str,
    pub classes: &'static str,
}

impl Default for Quirks {
    fn default() -> Self {
        Quirks {
            echo: true,
            verbose: true,
            mute_from: None,
            noise: false,
            flood: None,
            dial_result: "OK",
            volts: "48.2",
            vanish_at: None,
            manufacturer: "LabCorp",
            model: "LabModem",
            revision: "1.0",
            classes: "0,1,1.0",
        }
    }
}

pub struct FakeModem {
    /// The end the agent opens (a symlink to the pty).
    pub port: PathBuf,
    pub dir: TempDir,
    received: Arc<Mutex<Vec<u8>>>,
    /// Switched on and off while running: the modem stops answering.
    pub mute: Arc<Mutex<bool>>,
    quirks: Quirks,
    socat: Arc<Mutex<Option<Child>>>,
}

impl FakeModem {
    pub fn start(quirks: Quirks) -> FakeModem {
        let dir = tempfile::Builder::new()
            .prefix("telagent-modem-")
            .tempdir()
            .expect("tempdir");
        let modem = FakeModem {
            port: dir.path().join("ttyA"),
            dir,
            quirks,
            received: Arc::default(),
            mute: Arc::default(),
            socat: Arc::new(Mutex::new(None)),
        };
        modem.plug();
        modem
    }

    /// Plugs the device in: makes the pty pair (the agent's end at `port`) and answers on
    /// the other end, freshly powered on.
    pub fn plug(&self) {
        let fake_end = self.dir.path().join("ttyB");
        let _ = std::fs::remove_file(&self.port);
        let _ = std::fs::remove_file(&fake_end);
        let socat = Command::new("socat")
            .arg("-d")
            .arg(format!("pty,raw,echo=0,link={}", self.port.display()))
            .arg(format!("pty,raw,echo=0,link={}", fake_end.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start socat (apt-get install socat)");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !(self.port.exists() && fake_end.exists()) {
            assert!(std::time::Instant::now() < deadline, "socat made no ptys");
            std::thread::sleep(Duration::from_millis(10));
        }
        let dev = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&fake_end)
            .expect("open the fake's end of the pty");
        *self.socat.lock().unwrap() = Some(socat);
        let (quirks, received, mute, socat) = (
            self.quirks.clone(),
            self.received.clone(),
            self.mute.clone(),
            self.socat.clone(),
        );
        std::thread::spawn(move || serve(dev, quirks, received, mute, socat));
    }

    /// Unplugs the device: the pty vanishes, as a USB modem's does.
    pub fn unplug(&self) {
        if let Some(mut s) = self.socat.lock().unwrap().take() {
            crate::stop(&mut s, Duration::from_secs(2));
        }
    }

    /// Every byte received so far.
    pub fn received(&self) -> Vec<u8> {
        self.received.lock().unwrap().clone()
    }

    pub fn set_mute(&self, on: bool) {
        *self.mute.lock().unwrap() = on;
    }
}

impl Drop for FakeModem {
    fn drop(&mut self) {
        self.unplug();
    }
}

fn serve(
    mut dev: std::fs::File,
    q: Quirks,
    received: Arc<Mutex<Vec<u8>>>,
    mute: Arc<Mutex<bool>>,
    socat: Arc<Mutex<Option<Child>>>,
) {
    let (mut echo, mut verbose) = (q.echo, q.verbose);
    let mut line = Vec::new();
    let mut count = 0usize;
    let mut buf = [0u8; 256];
    loop {
        let n = match dev.read(&mut buf) {
            Ok(0) | Err(_) => return, // socat gone
            Ok(n) => n,
        };
        received.lock().unwrap().extend_from_slice(&buf[..n]);
        for &b in &buf[..n] {
            let muted = *mute.lock().unwrap() || q.mute_from.is_some_and(|m| count >= m);
            if echo && !muted {
                let _ = dev.write_all(&[b]);
            }
            if b != b'\r' {
                line.push(b);
                continue;
            }
            let cmd = String::from_utf8_lossy(&line).trim().to_ascii_uppercase();
            line.clear();
            if cmd.is_empty() {
                continue;
            }
            let this = count;
            count += 1;
            if q.vanish_at == Some(this) {
                if let Some(s) = socat.lock().unwrap().as_mut() {
                    let _ = s.kill();
                }
                return;
            }
            if muted {
                continue;
            }
            if q.noise {
                let _ = dev.write_all(b"\x00\x1b\xfe\x13\x80\x07garble\r\n");
                continue;
            }
            if cmd == "AT" {
                if let Some(len) = q.flood {
                    let _ = dev.write_all(&vec![b'~'; len]);
                    continue;
                }
            }
            let (info, result): (Option<String>, &str) = match cmd.as_str() {
                "AT" | "ATH0" | "ATH" => (None, "OK"),
                "ATZ" => {
                    (echo, verbose) = (true, true);
                    (None, "OK")
                }
                "ATE0" => {
                    echo = false;
                    (None, "OK")
                }
                // Two commands on one line (V.250 5.2.1).
                "ATE0V1" => {
                    (echo, verbose) = (false, true);
                    (None, "OK")
                }
                "ATE1" => {
                    echo = true;
                    (None, "OK")
                }
                "ATV0" => {
                    verbose = false;
                    (None, "OK")
                }
                "ATV1" => {
                    verbose = true;
                    (None, "OK")
                }
                "ATI" | "ATI3" => (Some(format!("{} {}", q.manufacturer, q.model)), "OK"),
                "AT+FCLASS=?" => (Some(q.classes.into()), "OK"),
                "AT+FMI?" => (Some(q.manufacturer.into()), "OK"),
                "AT+FMM?" => (Some(q.model.into()), "OK"),
                "AT+FMR?" => (Some(q.revision.into()), "OK"),
                "AT-TRV" => (Some(q.volts.into()), "OK"),
                c if c.starts_with("ATX") || c.starts_with("ATD") => (None, q.dial_result),
                _ => (None, "ERROR"),
            };
            let mut out = String::new();
            if verbose {
                if let Some(i) = info {
                    out.push_str(&format!("\r\n{i}\r\n"));
                }
                out.push_str(&format!("\r\n{result}\r\n"));
            } else {
                if let Some(i) = info {
                    out.push_str(&format!("{i}\r\n"));
                }
                let code = match result {
                    "OK" => "0",
                    "NO DIALTONE" => "6",
                    "NO CARRIER" => "3",
                    "BUSY" => "7",
                    _ => "4",
                };
                out.push_str(&format!("{code}\r"));
            }
            let _ = dev.write_all(out.as_bytes());
        }
    }
}
