//! Hostile callers against a real agent under a kernel file-descriptor limit (`prlimit`):
//! connection floods from addresses outside the allowlist, an agent out of descriptors,
//! large unauthenticated bodies, slow and idle connections, and token guessing.
//! Attackers connect from other loopback addresses (127.0.0.0/8 is all local), so the
//! allowlist tells them apart from the test's own calls from 127.0.0.1.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use telagent_tests::agent::{metric, Agent, TOKEN};
use telagent_tests::poll;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

const LIMIT: Duration = Duration::from_secs(20);

/// `[access]` with the test token and an allowlist of `allow`.
fn access(agent_dir: &std::path::Path, allow: &str) -> String {
    let token = agent_dir.join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let list = agent_dir.join("allowlist");
    std::fs::write(&list, format!("{allow}\n")).unwrap();
    format!(
        "[access]\ntoken_file = \"{}\"\nallowlist_file = \"{}\"\n",
        token.display(),
        list.display()
    )
}

/// An agent with a healthy tcp check on a listener of the test's, and `extra` config.
async fn agent_with_check(
    extra: impl Fn(&std::path::Path) -> String,
) -> (Agent, TcpListener, tempfile::TempDir) {
    let service = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = service.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let body = format!(
        "[defaults]\ninterval = \"1s\"\ntimeout = \"500ms\"\nfailing_interval = \"1s\"\nrise = 1\nfall = 1\n\n[[tcp]]\nname = \"smtp\"\naddress = \"{addr}\"\n\n{}",
        extra(dir.path())
    );
    let agent = Agent::start(&body).await;
    // The access files in `dir` are read again at reloads: the caller keeps it.
    (agent, service, dir)
}

/// Accepts and keeps every connection to the service, so that the check stays healthy.
fn serve_forever(service: TcpListener) {
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = service.accept().await {
            held.push(s);
            if held.len() > 64 {
                held.remove(0);
            }
        }
    });
}

/// Sets the agent's descriptor limit with the kernel's prlimit(2).
fn limit_fds(pid: u32, n: u32) {
    let out = std::process::Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--nofile={n}:{n}"))
        .output()
        .expect("prlimit (util-linux)");
    assert!(out.status.success(), "{out:?}");
}

/// The test itself holds over a thousand sockets: its soft limit goes up to the hard one.
fn raise_own_fd_limit() {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 {
            l.rlim_cur = l.rlim_max.min(65536);
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A connection to the agent from the loopback address `from`.
async fn connect_from(from: &str, port: u16) -> Option<TcpStream> {
    let s = TcpSocket::new_v4().ok()?;
    s.bind(SocketAddr::new(from.parse::<IpAddr>().ok()?, 0))
        .ok()?;
    tokio::time::timeout(
        Duration::from_secs(2),
        s.connect(SocketAddr::from(([127, 0, 0, 1], port))),
    )
    .await
    .ok()?
    .ok()
}

/// A raw HTTP/1.1 exchange: sends `head` (and `body`), returns the status code.
async fn raw(s: &mut TcpStream, head: &str) -> Option<u16> {
    s.write_all(head.as_bytes()).await.ok()?;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf[..n]);
    text.split_whitespace().nth(1)?.parse().ok()
}

async fn state_of(agent: &Agent, check: &str) -> String {
    agent
        .target(check)
        .await
        .and_then(|t| t["state"].as_str().map(str::to_string))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_from_strangers_cannot_exhaust_the_agent() {
    let (agent, service, _dir) = agent_with_check(|d| access(d, "127.0.0.1")).await;
    serve_forever(service);
    poll(LIMIT, "the check up", || async {
        (state_of(&agent, "smtp").await == "up").then_some(())
    })
    .await;
    limit_fds(agent.pid(), 1024);
    raise_own_fd_limit();
    // 1,100 bare connections from 20 addresses outside the allowlist, all held open.
    let mut held = Vec::new();
    for i in 0..1100u32 {
        let from = format!("127.0.0.{}", 20 + i % 20);
        if let Some(s) = connect_from(&from, agent.port).await {
            held.push(s);
        }
    }
    assert!(
        held.len() > 1000,
        "the kernel accepted {} connections",
        held.len()
    );
    // The agent closed what it did not admit: its descriptors stay far from the limit.
    let fds = open_fds(agent.pid());
    assert!(
        fds < 400,
        "{fds} descriptors open with 1,100 hostile connections"
    );
    // The allowlisted caller still gets /metrics, and the check stayed up.
    let m = agent.metrics().await;
    assert!(
        metric(
            &m,
            "telagent_api_refused_total{reason=\"too_many_connections\"}"
        )
        .unwrap()
            > 800.0,
        "{m}"
    );
    assert!(metric(&m, "telagent_api_connections").unwrap() <= 193.0);
    for _ in 0..3 {
        assert_eq!(state_of(&agent, "smtp").await, "up");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        agent.audit().iter().all(|t| t["to"] != "down"),
        "no transition to down: {:?}",
        agent.audit()
    );
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_out_of_descriptors_blames_no_target() {
    let (agent, service, _dir) = agent_with_check(|d| access(d, "127.0.0.0/8")).await;
    serve_forever(service);
    poll(LIMIT, "the check up", || async {
        (state_of(&agent, "smtp").await == "up").then_some(())
    })
    .await;
    let before = open_fds(agent.pid()) as u32;
    limit_fds(agent.pid(), before + 24);
    // Allowlisted callers from 4 addresses, 32 each: more than the agent has descriptors.
    let mut held = Vec::new();
    for i in 0..128u32 {
        if let Some(s) = connect_from(&format!("127.0.0.{}", 100 + i % 4), agent.port).await {
            held.push(s);
        }
    }
    // Three probe intervals while it cannot open a socket.
    let pid = agent.pid();
    poll(LIMIT, "the agent at its descriptor limit", || async {
        (open_fds(pid) as u32 >= before + 24).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    drop(held);
    let m = poll(LIMIT, "the agent answering again", || async {
        let m = agent.metrics().await;
        (!m.is_empty()).then_some(m)
    })
    .await;
    assert!(
        metric(&m, "telagent_agent_errors_total{kind=\"fd_exhausted\"}").unwrap() >= 1.0,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "telagent_check_state{check=\"smtp\",kind=\"tcp\",state=\"up\"}"
        ),
        Some(1.0),
        "{m}"
    );
    assert!(
        agent.audit().iter().all(|t| t["to"] != "down"),
        "the target was never blamed: {:?}",
        agent.audit()
    );
    assert!(
        agent.log().contains("out of file descriptors"),
        "{}",
        agent.log()
    );
}

fn vm_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_are_refused_before_they_are_read() {
    let (agent, _service, _dir) = agent_with_check(|d| access(d, "127.0.0.1")).await;
    let port = agent.port;
    // 16 callers outside the allowlist announce 31 MB each and send the first 64 KiB.
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..16u32 {
        calls.spawn(async move {
            let mut s = connect_from(&format!("127.0.0.{}", 50 + i), port).await?;
            let head = format!(
                "POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                31 << 20
            );
            s.write_all(head.as_bytes()).await.ok()?;
            let _ = s.write_all(&vec![b' '; 64 << 10]).await;
            let mut buf = vec![0u8; 1024];
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
                .await
                .ok()?
                .ok()?;
            String::from_utf8_lossy(&buf[..n])
                .split_whitespace()
                .nth(1)?
                .parse::<u16>()
                .ok()
        });
    }
    while let Some(r) = calls.join_next().await {
        assert_eq!(r.unwrap(), Some(403), "refused from the headers");
    }
    let rss = vm_rss_kib(agent.pid());
    assert!(
        rss < 50 * 1024,
        "RSS {rss} KiB after 16 refused 31 MB bodies"
    );

    // An authorized caller: a maintenance body over 4 KiB is refused too.
    let big = format!("{{\"drain\": true, \"reason\": \"{}\"}}", "x".repeat(8000));
    let (code, _) = agent
        .post("/v1/server/maintenance", &big, TOKEN)
        .await
        .unwrap();
    assert_eq!(code, 413);
    let m = agent.metrics().await;
    assert_eq!(
        metric(&m, "telagent_api_refused_total{reason=\"not_allowed\"}"),
        Some(16.0)
    );
    assert_eq!(
        metric(&m, "telagent_api_refused_total{reason=\"body_too_large\"}"),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_connections_are_closed() {
    let (agent, _service, _dir) =
        agent_with_check(|d| access(d, "127.0.0.1") + "\n[api]\nrequest_timeout = \"1s\"\n").await;
    let closed = |mut s: TcpStream| async move {
        let mut buf = [0u8; 4096];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
        loop {
            match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => {}
            }
        }
    };
    // Headers that never end.
    let mut s = connect_from("127.0.0.1", agent.port).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHo").await.unwrap();
    assert!(closed(s).await, "a slow header is cut off");
    // A keep-alive connection left idle after its request.
    let mut s = connect_from("127.0.0.1", agent.port).await.unwrap();
    assert_eq!(
        raw(&mut s, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await,
        Some(200)
    );
    assert!(closed(s).await, "an idle connection is closed");
    // Two Authorization headers: refused, not picked from.
    let mut s = connect_from("127.0.0.1", agent.port).await.unwrap();
    let code = raw(
        &mut s,
        &format!("POST /v1/server/maintenance HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nAuthorization: Bearer wrong-token-0123456789\r\nContent-Length: 2\r\n\r\n{{}}"),
    )
    .await;
    assert_eq!(code, Some(401));
    // A body that stops coming.
    let mut s = connect_from("127.0.0.1", agent.port).await.unwrap();
    let code = raw(
        &mut s,
        &format!("POST /v1/server/maintenance HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 100\r\n\r\n{{\"drain\""),
    )
    .await;
    assert_eq!(code, Some(408));
    let m = agent.metrics().await;
    assert_eq!(
        metric(&m, "telagent_api_refused_total{reason=\"body_timeout\"}"),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_guessing_is_counted_throttled_and_summed_up() {
    let (agent, _service, _dir) = agent_with_check(|d| {
        let a = access(d, "127.0.0.0/24");
        // Readable by every user: warned about at start.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d.join("token"), std::fs::Permissions::from_mode(0o644)).unwrap();
        a
    })
    .await;
    assert!(
        agent.log().contains("readable by every user"),
        "{}",
        agent.log()
    );
    let mut codes = Vec::new();
    for _ in 0..50 {
        let (code, _) = agent
            .post(
                "/v1/server/maintenance",
                "{\"drain\": false}",
                "wrong-token-0123456789",
            )
            .await
            .unwrap();
        codes.push(code);
    }
    assert!(codes[..10].iter().all(|c| *c == 401), "{codes:?}");
    assert!(codes[10..].iter().all(|c| *c == 429), "{codes:?}");
    // The right token from the throttled address waits too; another address is fine,
    // with the scheme in lower case (RFC 9110 11.1).
    let mut s = connect_from("127.0.0.1", agent.port).await.unwrap();
    let body = "{\"drain\": false}";
    let head = |scheme: &str| {
        format!(
            "POST /v1/server/maintenance HTTP/1.1\r\nHost: x\r\nAuthorization: {scheme} {TOKEN}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    assert_eq!(raw(&mut s, &head("Bearer")).await, Some(429));
    let mut s = connect_from("127.0.0.2", agent.port).await.unwrap();
    assert_eq!(raw(&mut s, &head("bearer")).await, Some(200));
    let m = agent.metrics().await;
    assert_eq!(
        metric(&m, "telagent_api_refused_total{reason=\"bad_token\"}"),
        Some(10.0)
    );
    assert_eq!(
        metric(&m, "telagent_api_refused_total{reason=\"throttled\"}"),
        Some(41.0)
    );
    let lines = agent
        .log()
        .lines()
        .filter(|l| l.contains("API call refused"))
        .count();
    assert_eq!(
        lines,
        2,
        "one line per reason, not one per call:\n{}",
        agent.log()
    );
}
