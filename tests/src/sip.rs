//! Real SIP peers: SIPp as a UAS answering OPTIONS (200, or another code from an edited
//! copy of the scenario), Kamailio answering OPTIONS to itself, and sipsak as an
//! independent client. Plus readiness helpers for UDP ports.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

/// True when a process listens on UDP `port` on 127.0.0.1 (from /proc/net/udp).
pub fn udp_listening(port: u16) -> bool {
    let want = format!("0100007F:{port:04X}");
    std::fs::read_to_string("/proc/net/udp")
        .map(|t| {
            t.lines()
                .any(|l| l.split_whitespace().nth(1) == Some(want.as_str()))
        })
        .unwrap_or(false)
}

/// A port on 127.0.0.1 free for both UDP and TCP (a DNS server takes both).
pub fn free_udp_and_tcp_port() -> u16 {
    loop {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp bind");
        let port = udp.local_addr().expect("udp address").port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A free UDP port on 127.0.0.1.
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("udp bind")
        .port()
}

fn wait_for(what: &str, child: &mut Child, ready: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !ready() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited before it was ready: {status}");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what} not ready within 15s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIPp answering every OPTIONS with `code`.
pub struct Sipp {
    pub port: u16,
    _dir: TempDir,
    child: Child,
}

impl Sipp {
    /// `transport`: "u1" (UDP) or "t1" (TCP). SIPp ends by itself after 10 minutes.
    pub fn start(transport: &str, code: &str) -> Sipp {
        Sipp::start_for(transport, code, Duration::from_secs(600))
    }

    /// [`Sipp::start`], ending by itself after `life`.
    pub fn start_for(transport: &str, code: &str, life: Duration) -> Sipp {
        let dir = tempfile::Builder::new()
            .prefix("telagent-sipp-")
            .tempdir()
            .unwrap();
        let scenario = dir.path().join("uas.xml");
        std::fs::write(&scenario, scenario_text(code)).unwrap();
        let port = if transport == "u1" {
            free_udp_port()
        } else {
            crate::free_port()
        };
        let mut child = Command::new("sipp")
            .arg("-sf")
            .arg(&scenario)
            .args(["-i", "127.0.0.1", "-p", &port.to_string(), "-t", transport])
            .args([
                "-nostdin",
                "-timeout",
                &life.as_secs().to_string(),
                "-trace_err",
            ])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start sipp (apt-get install sip-tester)");
        if transport == "u1" {
            wait_for("sipp", &mut child, || udp_listening(port));
        } else {
            wait_for("sipp", &mut child, || {
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            });
        }
        Sipp {
            port,
            _dir: dir,
            child,
        }
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        crate::stop(&mut self.child, Duration::from_secs(3));
    }
}

fn scenario_text(code: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="options-uas">
  <recv request="OPTIONS" crlf="true"/>
  <send>
    <![CDATA[

      SIP/2.0 {code}
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Server: sipp-fake-gw
      Content-Length: 0

    ]]>
  </send>
</scenario>
"#
    )
}

/// Kamailio answering OPTIONS addressed to itself, on UDP and TCP; with
/// [`Kamailio::start_dispatcher`], a proxy dispatching to a set of destinations, managed
/// over JSON-RPC on its TCP port (`/RPC`).
pub struct Kamailio {
    pub udp_port: u16,
    pub tcp_port: u16,
    pub dir: TempDir,
    child: Child,
}

impl Kamailio {
    /// Kamailio as a dispatcher proxy for `destinations` (set 1, round robin, OPTIONS
    /// probing every second), its RPC at `http://127.0.0.1:<tcp_port>/RPC`.
    pub fn start_dispatcher(destinations: &[String]) -> Kamailio {
        let dir = tempfile::Builder::new()
            .prefix("telagent-kam-")
            .tempdir()
            .unwrap();
        Self::start_dispatcher_in(dir, free_udp_port(), crate::free_port(), destinations)
    }

    /// Starts it again with the same ports and files (as after a crash).
    pub fn restart(mut self) -> Kamailio {
        crate::stop(&mut self.child, Duration::from_secs(5));
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        let (udp_port, tcp_port) = (self.udp_port, self.tcp_port);
        drop(self);
        let list = std::fs::read_to_string(dir.path().join("dispatcher.list")).unwrap();
        let destinations: Vec<String> = list
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
            .collect();
        Self::start_dispatcher_in(dir, udp_port, tcp_port, &destinations)
    }

    fn start_dispatcher_in(
        dir: TempDir,
        udp_port: u16,
        tcp_port: u16,
        destinations: &[String],
    ) -> Kamailio {
        let list: String = destinations
            .iter()
            .map(|d| format!("1 {d} 0 0\n"))
            .collect();
        std::fs::write(dir.path().join("dispatcher.list"), list).unwrap();
        let cfg = dir.path().join("kamailio.cfg");
        std::fs::write(
            &cfg,
            format!(
                r#"#!KAMAILIO
debug=2
log_stderror=yes
children=2
tcp_children=1
auto_aliases=no
enable_sctp=no
dns=no
rev_dns=no
use_dns_cache=off
listen=udp:127.0.0.1:{udp_port}
listen=tcp:127.0.0.1:{tcp_port}
tcp_accept_no_cl=yes
mpath="{mpath}/"
loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "xlog.so"
loadmodule "siputils.so"
loadmodule "textops.so"
loadmodule "maxfwd.so"
loadmodule "xhttp.so"
loadmodule "jsonrpcs.so"
loadmodule "dispatcher.so"
modparam("jsonrpcs", "transport", 1)
modparam("dispatcher", "list_file", "{dir}/dispatcher.list")
modparam("dispatcher", "flags", 2)
modparam("dispatcher", "reload_delta", 0)
modparam("dispatcher", "ds_ping_method", "OPTIONS")
modparam("dispatcher", "ds_ping_from", "sip:dispatcher@127.0.0.1:{udp_port}")
modparam("dispatcher", "ds_ping_interval", 1)
modparam("dispatcher", "ds_probing_mode", 1)
modparam("dispatcher", "ds_probing_threshold", 1)
modparam("dispatcher", "ds_inactive_threshold", 1)
modparam("tm", "fr_timer", 1000)
request_route {{
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
    if (is_method("OPTIONS") && uri==myself && $rU==$null) {{ sl_send_reply("200", "Keepalive"); exit; }}
    if (!ds_select_dst("1", "4")) {{ sl_send_reply("503", "No destination available"); exit; }}
    xlog("L_NOTICE", "DSROUTE $rm $ci -> $du
");
    if (!t_relay()) {{ sl_reply_error(); }}
    exit;
}}
event_route[xhttp:request] {{
    if ($hu =~ "^/RPC") {{ jsonrpc_dispatch(); exit; }}
    xhttp_reply("404", "Not Found", "text/plain", "not found
");
}}
"#,
                mpath = modules_dir().display(),
                dir = dir.path().display(),
            ),
        )
        .unwrap();
        Self::spawn(dir, udp_port, tcp_port)
    }

    /// Runs `<dir>/kamailio.cfg`, appending to `<dir>/kamailio.log`, until both ports answer.
    fn spawn(dir: TempDir, udp_port: u16, tcp_port: u16) -> Kamailio {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path().join("kamailio.log"))
            .unwrap();
        let mut child = Command::new("kamailio")
            .arg("-f")
            .arg(dir.path().join("kamailio.cfg"))
            .args(["-DD", "-E", "-Y"])
            .arg(dir.path())
            .arg("-P")
            .arg(dir.path().join("k.pid"))
            .arg("-w")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("cannot start kamailio (apt-get install kamailio)");
        wait_for("kamailio", &mut child, || {
            udp_listening(udp_port) && std::net::TcpStream::connect(("127.0.0.1", tcp_port)).is_ok()
        });
        Kamailio {
            udp_port,
            tcp_port,
            dir,
            child,
        }
    }

    pub fn rpc_url(&self) -> String {
        format!("http://127.0.0.1:{}/RPC", self.tcp_port)
    }

    /// Kamailio's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("kamailio.log")).unwrap_or_default()
    }

    pub fn start() -> Kamailio {
        let dir = tempfile::Builder::new()
            .prefix("telagent-kam-")
            .tempdir()
            .unwrap();
        let (udp_port, tcp_port) = (free_udp_port(), crate::free_port());
        let mpath = modules_dir();
        let cfg = dir.path().join("kamailio.cfg");
        std::fs::write(
            &cfg,
            format!(
                "#!KAMAILIO\ndebug=2\nlog_stderror=yes\nchildren=1\ntcp_children=1\nauto_aliases=no\nenable_sctp=no\ndns=no\nrev_dns=no\nuse_dns_cache=off\n\
                 listen=udp:127.0.0.1:{udp_port}\nlisten=tcp:127.0.0.1:{tcp_port}\nmpath=\"{}/\"\n\
                 loadmodule \"sl.so\"\nloadmodule \"textops.so\"\nloadmodule \"pv.so\"\nloadmodule \"maxfwd.so\"\n\
                 request_route {{\n  if (!mf_process_maxfwd_header(\"10\")) {{ sl_send_reply(\"483\", \"Too Many Hops\"); exit; }}\n  if (is_method(\"OPTIONS\") && uri==myself && $rU==$null) {{ sl_send_reply(\"200\", \"Keepalive\"); exit; }}\n  sl_send_reply(\"404\", \"Not here\");\n}}\n",
                mpath.display()
            ),
        )
        .unwrap();
        Self::spawn(dir, udp_port, tcp_port)
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        crate::stop(&mut self.child, Duration::from_secs(5));
    }
}

/// Kamailio's module directory (multiarch path).
fn modules_dir() -> PathBuf {
    std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path().join("kamailio/modules"))
        .find(|p| p.join("sl.so").exists())
        .unwrap_or_else(|| PathBuf::from("/usr/lib/x86_64-linux-gnu/kamailio/modules"))
}

/// sipsak's OPTIONS to `port`: true when it got a 200.
pub fn sipsak_options(port: u16) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let msg = dir.path().join("options.sip");
    std::fs::write(
        &msg,
        format!(
            "OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\nFrom: <sip:sipsak@127.0.0.1>;tag=lab1\r\nTo: <sip:127.0.0.1:{port}>\r\nCall-ID: lab-options-{}@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            std::process::id()
        ),
    )
    .unwrap();
    Command::new("sipsak")
        .arg("-f")
        .arg(&msg)
        .arg("-s")
        .arg(format!("sip:127.0.0.1:{port}"))
        .args(["-H", "127.0.0.1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// dnsmasq (Debian dnsmasq-base) serving SRV records on a loopback port, nothing else.
pub struct Dnsmasq {
    pub port: u16,
    child: Child,
}

impl Dnsmasq {
    /// `records`: (service name such as `_sip._udp.gw.test`, target, port).
    pub fn start(records: &[(&str, &str, u16)]) -> Dnsmasq {
        let all: Vec<_> = records
            .iter()
            .map(|(n, t, p)| (*n, t.to_string(), *p, 0, 0))
            .collect();
        Dnsmasq::start_weighted(&all)
    }

    /// `records`: (service name, target, port, priority, weight). dnsmasq answers over UDP
    /// and TCP on the same port, and sets TC when an answer does not fit in 512 bytes.
    pub fn start_weighted(records: &[(&str, String, u16, u16, u16)]) -> Dnsmasq {
        let port = free_udp_and_tcp_port();
        let mut cmd = Command::new("dnsmasq");
        cmd.args([
            "-k",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
        ])
        .args([
            "--listen-address=127.0.0.1",
            "--pid-file=",
            "--log-facility=-",
        ])
        .arg(format!("--port={port}"));
        for (name, target, p, priority, weight) in records {
            cmd.arg(format!(
                "--srv-host={name},{target},{p},{priority},{weight}"
            ));
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start dnsmasq (apt-get install dnsmasq-base)");
        wait_for("dnsmasq", &mut child, || udp_listening(port));
        Dnsmasq { port, child }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        crate::stop(&mut self.child, Duration::from_secs(3));
    }
}
