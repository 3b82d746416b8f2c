//! The `sip` check against SIPp (200 and 503, UDP and TCP), Kamailio, with sipsak as an
//! independent client of the same targets; and against peers that misbehave: nothing
//! listening (ICMP refusal), a black hole, a wrong Call-ID, malformed and oversized replies.

use std::net::UdpSocket;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use telagent_tests::agent_bin;
use telagent_tests::sip::{free_udp_port, sipsak_options, Dnsmasq, Kamailio, Sipp};

struct Run {
    code: Option<i32>,
    out: String,
}

fn check(uri: &str, transport: &str, extra: &str) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("t.toml");
    std::fs::write(
        &cfg,
        format!("[[sip]]\nname = \"gw\"\nuri = \"{uri}\"\ntransport = \"{transport}\"\ntimeout = \"2s\"\n{extra}"),
    )
    .unwrap();
    let out = Command::new(agent_bin())
        .args(["check", "gw", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    Run {
        code: out.status.code(),
        out: String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr),
    }
}

#[test]
fn sipp_200_over_udp_and_tcp_and_sipsak_agrees() {
    let udp = Sipp::start("u1", "200 OK");
    let r = check(&format!("sip:127.0.0.1:{}", udp.port), "udp", "");
    assert_eq!(r.code, Some(0), "{}", r.out);
    assert!(
        r.out.contains("telagent_sip_status_code{check=\"gw\"} 200"),
        "{}",
        r.out
    );
    assert!(
        r.out.contains("telagent_sip_rtt_seconds{check=\"gw\"} "),
        "{}",
        r.out
    );
    assert!(
        sipsak_options(udp.port),
        "sipsak gets a 200 from the same target"
    );

    let tcp = Sipp::start("t1", "200 OK");
    let r = check(&format!("sip:127.0.0.1:{}", tcp.port), "tcp", "");
    assert_eq!(r.code, Some(0), "{}", r.out);
}

#[test]
fn sipp_503_is_degraded() {
    let gw = Sipp::start("u1", "503 Service Unavailable");
    let r = check(&format!("sip:127.0.0.1:{}", gw.port), "udp", "");
    assert_eq!(r.code, Some(1), "{}", r.out);
    assert!(
        r.out.contains("status    degraded") && r.out.contains("error     no_capacity"),
        "{}",
        r.out
    );
    // The operator may call another final code alive.
    let gw404 = Sipp::start("u1", "404 Not Found");
    let r = check(&format!("sip:127.0.0.1:{}", gw404.port), "udp", "");
    assert!(r.out.contains("error     unexpected_status"), "{}", r.out);
    let r = check(
        &format!("sip:127.0.0.1:{}", gw404.port),
        "udp",
        "alive_codes = [404]\n",
    );
    assert_eq!(r.code, Some(0), "{}", r.out);
}

#[test]
fn kamailio_answers_over_udp_and_tcp() {
    let k = Kamailio::start();
    for (port, t) in [(k.udp_port, "udp"), (k.tcp_port, "tcp")] {
        let r = check(&format!("sip:127.0.0.1:{port}"), t, "");
        assert_eq!(r.code, Some(0), "{t}: {}", r.out);
        assert!(r.out.contains("answered 200"), "{}", r.out);
    }
    assert!(sipsak_options(k.udp_port));
}

#[test]
fn nothing_listening_is_an_icmp_refusal() {
    let port = free_udp_port();
    let r = check(&format!("sip:127.0.0.1:{port}"), "udp", "");
    assert_eq!(r.code, Some(1), "{}", r.out);
    assert!(r.out.contains("error     connect_refused"), "{}", r.out);
}

/// A UDP peer that records what it receives and answers with `answer(request)`.
fn peer(
    answer: impl Fn(&str) -> Option<Vec<u8>> + Send + 'static,
) -> (u16, Arc<Mutex<Vec<String>>>) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sock.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 65535];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let req = String::from_utf8_lossy(&buf[..n]).into_owned();
            log.lock().unwrap().push(req.clone());
            if let Some(reply) = answer(&req) {
                let _ = sock.send_to(&reply, from);
            }
        }
    });
    (port, seen)
}

fn header<'a>(req: &'a str, name: &str) -> &'a str {
    req.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
        .unwrap_or("")
        .trim()
}

fn answer_with(req: &str, call_id: &str) -> Vec<u8> {
    format!(
        "SIP/2.0 200 OK\r\nVia: {}\r\nFrom: {}\r\nTo: {};tag=x\r\nCall-ID: {call_id}\r\nCSeq: {}\r\nContent-Length: 0\r\n\r\n",
        header(req, "Via"),
        header(req, "From"),
        header(req, "To"),
        header(req, "CSeq")
    )
    .into_bytes()
}

#[test]
fn a_black_hole_times_out_after_timer_e_retransmissions() {
    let (port, seen) = peer(|_| None);
    let r = check(&format!("sip:127.0.0.1:{port}"), "udp", "");
    assert_eq!(r.code, Some(1), "{}", r.out);
    assert!(r.out.contains("error     timeout"), "{}", r.out);
    let seen = seen.lock().unwrap().clone();
    // Sent at 0, 0.5 s and 1.5 s within the 1.8 s wait: the same transaction each time.
    assert!(seen.len() >= 3, "{} transmissions", seen.len());
    assert!(seen
        .iter()
        .all(|s| header(s, "Via") == header(&seen[0], "Via")));
    assert!(
        r.out.contains(&format!("({} transmissions", seen.len())),
        "{}",
        r.out
    );
}

#[test]
fn a_wrong_call_id_is_ignored_and_counted() {
    let (port, _seen) = peer(|req| Some(answer_with(req, "not-yours@elsewhere")));
    let r = check(&format!("sip:127.0.0.1:{port}"), "udp", "");
    assert_eq!(r.code, Some(1), "{}", r.out);
    assert!(r.out.contains("error     timeout"), "{}", r.out);
    let strays: f64 = r
        .out
        .lines()
        .find_map(|l| l.strip_prefix("telagent_sip_stray_responses_total{check=\"gw\"} "))
        .and_then(|v| v.parse().ok())
        .expect("stray counter exported");
    assert!(strays >= 3.0, "{}", r.out);

    // The same peer with the right Call-ID is fine: the matching works both ways.
    let (port, _seen) = peer(|req| Some(answer_with(req, header(req, "Call-ID"))));
    let r = check(&format!("sip:127.0.0.1:{port}"), "udp", "");
    assert_eq!(r.code, Some(0), "{}", r.out);
}

#[test]
fn malformed_and_oversized_replies_are_clear_errors() {
    let (port, _seen) = peer(|_| Some(b"SIP/2.0 2OO NOT A CODE\r\n\x00\x01garbage".to_vec()));
    let r = check(&format!("sip:127.0.0.1:{port}"), "udp", "");
    assert_eq!(r.code, Some(1), "{}", r.out);
    assert!(r.out.contains("error     bad_response"), "{}", r.out);
    assert!(r.out.contains("only malformed answers"), "{}", r.out);

    // Over TCP: a header that never ends.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            use std::io::Write;
            let _ = s.write_all(b"SIP/2.0 200 OK\r\nX-Pad: ");
            let _ = s.write_all(&vec![b'a'; 70 * 1024]);
            std::thread::sleep(Duration::from_secs(3));
        }
    });
    let r = check(&format!("sip:127.0.0.1:{port}"), "tcp", "");
    assert_eq!(r.code, Some(1), "{}", r.out);
    assert!(r.out.contains("error     bad_response"), "{}", r.out);
    assert!(
        r.out.contains("without the end of a SIP header"),
        "{}",
        r.out
    );
    assert!(!r.out.contains("panicked"));
}

#[test]
fn srv_lookup_finds_the_gateway() {
    let gw = Sipp::start("u1", "200 OK");
    let dns = Dnsmasq::start(&[("_sip._udp.gw.test", "127.0.0.1", gw.port)]);
    let server = format!("dns_server = \"127.0.0.1:{}\"\nsrv = true\n", dns.port);
    let r = check("sip:gw.test", "udp", &server);
    assert_eq!(r.code, Some(0), "{}", r.out);
    assert!(r.out.contains("answered 200"), "{}", r.out);

    let r = check("sip:other.test", "udp", &server);
    assert_eq!(r.code, Some(1), "{}", r.out);
    assert!(r.out.contains("error     dns"), "{}", r.out);
    assert!(
        r.out.contains("_sip._udp.other.test: DNS says"),
        "{}",
        r.out
    );
}

/// An SRV answer too big for 512 bytes of UDP: dnsmasq sets TC, and the agent asks again
/// over TCP and finds the best target (priority 0) among 21.
#[test]
fn srv_answers_too_big_for_udp_are_asked_again_over_tcp() {
    let gw = Sipp::start("u1", "200 OK");
    let mut records = vec![(
        "_sip._udp.big.test",
        "127.0.0.1".to_string(),
        gw.port,
        0,
        10,
    )];
    for i in 0..20 {
        records.push((
            "_sip._udp.big.test",
            format!("backup{i:02}-{}.big.test", "x".repeat(50)),
            5060,
            10,
            10,
        ));
    }
    let dns = Dnsmasq::start_weighted(&records);
    let r = check(
        "sip:big.test",
        "udp",
        &format!("dns_server = \"127.0.0.1:{}\"\nsrv = true\n", dns.port),
    );
    assert_eq!(r.code, Some(0), "{}", r.out);
    assert!(r.out.contains("answered 200"), "{}", r.out);
}

/// A TCP peer that answers the first request with `answer(request)`, as one write.
fn tcp_peer(answer: impl Fn(&str) -> Vec<u8> + Send + 'static) -> u16 {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        while let Ok((mut s, _)) = l.accept() {
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let _ = s.write_all(&answer(&String::from_utf8_lossy(&req)));
            let _ = s.read(&mut buf); // held open until the agent closes
        }
    });
    port
}

/// An answer written from the request's Via, From, Call-ID and CSeq.
type Framing = fn(&str, &str, &str, &str) -> String;

#[test]
fn legal_tcp_framings_of_rfc_3261_and_5626_are_accepted() {
    // Each from the standard, not from a stack: CRLFs before the status line (RFC 3261
    // §7.5), a CRLFCRLF keep-alive first (RFC 5626 §4.4.1), upper-case compact headers
    // (§7.3.3), LWS around `=` in the Via branch (§25.1 EQUAL), a folded CSeq (§7.3.1).
    let framings: [Framing; 4] = [
        |via, from, call_id, cseq| {
            format!("\r\nSIP/2.0 200 OK\r\nVia: {via}\r\nFrom: {from}\r\nTo: <sip:gw>;tag=x\r\nCall-ID: {call_id}\r\nCSeq: {cseq}\r\nContent-Length: 0\r\n\r\n")
        },
        |via, from, call_id, cseq| {
            format!("\r\n\r\nSIP/2.0 200 OK\r\nVia: {via}\r\nFrom: {from}\r\nTo: <sip:gw>;tag=x\r\nCall-ID: {call_id}\r\nCSeq: {cseq}\r\nL: 0\r\n\r\n")
        },
        |via, from, call_id, cseq| {
            format!("SIP/2.0 200 OK\r\nV: {via}\r\nF: {from}\r\nT: <sip:gw>;tag=x\r\nI: {call_id}\r\nCSeq: {cseq}\r\nL: 0\r\n\r\n")
        },
        |via, from, call_id, cseq| {
            let spaced = via.replace(";branch=", " ; branch = ");
            let (n, m) = cseq.split_once(' ').unwrap();
            format!("SIP/2.0 200 OK\r\nvia: {spaced}\r\nfrom: {from}\r\nto: <sip:gw>;tag=x\r\ncall-id: {call_id}\r\ncseq: {n}\r\n\t{m}\r\ncontent-length: 0\r\n\r\n")
        },
    ];
    for (i, f) in framings.into_iter().enumerate() {
        let port = tcp_peer(move |req| {
            f(
                header(req, "Via"),
                header(req, "From"),
                header(req, "Call-ID"),
                header(req, "CSeq"),
            )
            .into_bytes()
        });
        let r = check(&format!("sip:127.0.0.1:{port}"), "tcp", "");
        assert_eq!(r.code, Some(0), "framing {i}: {}", r.out);
        assert!(r.out.contains("answered 200"), "framing {i}: {}", r.out);
    }
}

#[test]
fn retry_after_of_a_503_is_exported() {
    let (port, _) = peer(|req| {
        let ok = String::from_utf8(answer_with(req, header(req, "Call-ID"))).unwrap();
        Some(
            ok.replace("200 OK", "503 Service Unavailable")
                .replace(
                    "Content-Length",
                    "Retry-After: 120 (maintenance)\r\nContent-Length",
                )
                .into_bytes(),
        )
    });
    let r = check(&format!("sip:127.0.0.1:{port}"), "udp", "");
    assert!(r.out.contains("error     no_capacity"), "{}", r.out);
    assert!(r.out.contains("Retry-After 120 s"), "{}", r.out);
    assert!(
        r.out
            .contains("telagent_sip_retry_after_seconds{check=\"gw\"} 120"),
        "{}",
        r.out
    );
}
