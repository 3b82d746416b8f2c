//! The systemd notify protocol, with the test as the service manager: a datagram socket
//! in NOTIFY_SOCKET receives READY=1 at start, RELOADING=1 then READY=1 around a SIGHUP,
//! WATCHDOG=1 at half of WATCHDOG_USEC, and STOPPING=1 at SIGTERM.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use telagent_tests::agent::Agent;

/// Messages received until `want` is among them, or panics after 20 s.
fn until(sock: &UnixDatagram, seen: &mut Vec<String>, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 4096];
    while !seen.iter().any(|m| m.lines().any(|l| l == want)) {
        assert!(Instant::now() < deadline, "no {want} in {seen:?}");
        if let Ok(n) = sock.recv(&mut buf) {
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ready_reloading_watchdog_and_stopping_are_sent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let env = vec![
        ("NOTIFY_SOCKET".to_string(), path.display().to_string()),
        ("WATCHDOG_USEC".to_string(), "400000".to_string()),
    ];
    let port = telagent_tests::free_port();
    let mut agent = Agent::start_with_env("test", port, "", env)
        .await
        .expect("agent starts");
    let mut seen = Vec::new();
    until(&sock, &mut seen, "READY=1");
    seen.clear();
    until(&sock, &mut seen, "WATCHDOG=1");
    let mut pings = 0;
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(1) {
        seen.clear();
        until(&sock, &mut seen, "WATCHDOG=1");
        pings += 1;
    }
    assert!(pings >= 3, "a ping every 200 ms, got {pings} in 1 s");
    agent.hup();
    seen.clear();
    until(&sock, &mut seen, "RELOADING=1");
    let reloading = seen
        .iter()
        .find(|m| m.contains("RELOADING=1"))
        .unwrap()
        .clone();
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    seen.clear();
    until(&sock, &mut seen, "READY=1");
    assert!(agent.stop());
    seen.clear();
    until(&sock, &mut seen, "STOPPING=1");
}
