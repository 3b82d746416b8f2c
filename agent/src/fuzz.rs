//! One entry point per parser of outside input, for the fuzz targets in `fuzz/` and for
//! the replay of their corpora in `tests/run`. Each takes arbitrary bytes and must return
//! without panicking, whatever they are.

use crate::snmp::ber;

/// A parser's entry point.
pub type Target = fn(&[u8]);

/// The targets, by the name of their corpus directory.
pub const TARGETS: &[(&str, Target)] = &[
    ("at_responses", at_responses),
    ("sip_response", sip_response),
    ("snmp_pdu", snmp_pdu),
    ("agentx_pdu", agentx_pdu),
    ("notify_ack", notify_ack),
    ("xferfaxlog", xferfaxlog),
    ("hylafax_files", hylafax_files),
    ("config", config),
    ("events", events),
    ("allowlist", allowlist),
    ("proc_net", proc_net),
    ("dns_answer", dns_answer),
    ("sip_grammar", sip_grammar),
];

/// A modem's output, split into lines and result codes (verbose and numeric).
pub fn at_responses(data: &[u8]) {
    let mut lines = crate::serial::at::Lines::default();
    let mut out = Vec::new();
    for chunk in data.chunks(7) {
        lines.feed(chunk, &mut out);
    }
    for e in &out {
        if let crate::serial::at::Event::Line(l) = e {
            let _ = crate::serial::at::Final::parse(l);
            let _ = crate::serial::at::Final::parse_in(l, true);
        }
    }
}

/// A SIP response matched against a transaction, and TCP framing.
pub fn sip_response(data: &[u8]) {
    let t = crate::checks::sip::Transaction {
        branch: "z9hG4bKfuzz".into(),
        call_id: "fuzz@telagent".into(),
        cseq: 1,
    };
    let _ = crate::checks::sip::classify(data, &t);
    let _ = crate::checks::sip_message::frame(data);
}

/// A legal 200 to our OPTIONS, written from the grammar of RFC 3261 §7 and §25 with the
/// choices the grammar leaves open taken from `seed`: long or compact header names (§7.3.3)
/// in any case, white space before the colon (HCOLON), folded lines (LWS), white space
/// around `;` and `=` (SEMI, EQUAL), parameters in any order and case, several Via values
/// in one header or in several, headers in any order, quoted strings holding commas and
/// semicolons, CRLFs before the status line (§7.5), a body with its Content-Length.
/// Returns the message and the transaction it answers.
pub fn legal_ok(seed: u64) -> (Vec<u8>, crate::checks::sip::Transaction) {
    let mut state = seed;
    let mut pick = |n: u64| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) % n
    };
    let t = crate::checks::sip::Transaction {
        branch: format!("z9hG4bK{:x}", pick(u64::MAX >> 34)),
        call_id: format!("{:x}@host-{}", pick(1 << 30), pick(100)),
        cseq: pick(1 << 31) as u32 + 1,
    };
    let case = |s: &str, p: &mut dyn FnMut(u64) -> u64| -> String {
        match p(3) {
            0 => s.to_string(),
            1 => s.to_ascii_uppercase(),
            _ => s
                .chars()
                .map(|c| {
                    if p(2) == 0 {
                        c.to_ascii_uppercase()
                    } else {
                        c.to_ascii_lowercase()
                    }
                })
                .collect(),
        }
    };
    // SWS and LWS: nothing, blanks, or a fold (CRLF then blanks).
    let lws = |p: &mut dyn FnMut(u64) -> u64, required: bool| -> String {
        match p(4) {
            0 if !required => String::new(),
            1 => "\r\n ".into(),
            2 => "\t".into(),
            _ => " ".repeat(1 + p(2) as usize),
        }
    };
    let name = |long: &str, short: Option<&str>, p: &mut dyn FnMut(u64) -> u64| -> String {
        let n = match short {
            Some(s) if p(2) == 0 => s.to_string(),
            _ => long.to_string(),
        };
        let n = match p(3) {
            0 => n,
            1 => n.to_ascii_uppercase(),
            _ => n.to_ascii_lowercase(),
        };
        // HCOLON = *( SP / HTAB ) ":" SWS
        let before = [" ", "\t", "", ""][p(4) as usize];
        format!("{n}{before}:")
    };
    let mut headers: Vec<String> = Vec::new();
    let semi = |p: &mut dyn FnMut(u64) -> u64| format!("{};{}", lws(p, false), lws(p, false));
    let equal = |p: &mut dyn FnMut(u64) -> u64| format!("{}={}", lws(p, false), lws(p, false));
    // The top Via: ours, its parameters in any order.
    let mut params = vec![
        format!(
            "{}{}{}",
            case("branch", &mut pick),
            equal(&mut pick),
            t.branch
        ),
        case("rport", &mut pick) + &equal(&mut pick) + "5999",
        case("received", &mut pick) + &equal(&mut pick) + "192.0.2.7",
    ];
    if pick(2) == 0 {
        params.swap(0, 2);
    }
    let mut via = format!("SIP/2.0/UDP{}127.0.0.1:5999", lws(&mut pick, true));
    for p in &params {
        via.push_str(&semi(&mut pick));
        via.push_str(p);
    }
    let other_via = format!(
        "SIP/2.0/TCP{}proxy.example.org;branch=z9hG4bKproxy1",
        lws(&mut pick, true)
    );
    let vias = if pick(2) == 0 {
        headers.push(format!(
            "{}{}{via}{},{}{other_via}",
            name("Via", Some("v"), &mut pick),
            lws(&mut pick, false),
            lws(&mut pick, false),
            lws(&mut pick, false)
        ));
        1
    } else {
        headers.push(format!(
            "{}{}{via}",
            name("Via", Some("v"), &mut pick),
            lws(&mut pick, false)
        ));
        headers.push(format!(
            "{}{}{other_via}",
            name("Via", Some("v"), &mut pick),
            lws(&mut pick, false)
        ));
        2
    };
    let rest = [
        format!(
            "{} \"Tel, Agent; a\\\"b\" <sip:telagent@127.0.0.1>;tag=a1",
            name("From", Some("f"), &mut pick)
        ),
        format!(
            "{} <sip:gw@example.org>{}{}{}tag=b2",
            name("To", Some("t"), &mut pick),
            lws(&mut pick, false),
            ";",
            lws(&mut pick, false)
        ),
        format!(
            "{}{}{}",
            name("Call-ID", Some("i"), &mut pick),
            lws(&mut pick, false),
            t.call_id
        ),
        format!(
            "{}{}{}{}OPTIONS",
            name("CSeq", None, &mut pick),
            lws(&mut pick, false),
            t.cseq,
            lws(&mut pick, true)
        ),
        format!(
            "{} INVITE, ACK,{}OPTIONS ,BYE",
            name("Allow", None, &mut pick),
            lws(&mut pick, false)
        ),
        format!(
            "{} replaces, timer",
            name("Supported", Some("k"), &mut pick)
        ),
        format!(
            "{} Example-GW/1.0 (build \"7\", rev 3)",
            name("Server", None, &mut pick)
        ),
    ];
    headers.extend(rest);
    // Headers in any order, the Via headers keeping theirs (ours on top).
    let in_order: Vec<String> = headers[..vias].to_vec();
    for i in (1..headers.len()).rev() {
        let j = pick(i as u64 + 1) as usize;
        headers.swap(i, j);
    }
    let mut next_via = in_order.clone().into_iter();
    for h in headers.iter_mut() {
        if in_order.contains(h) {
            if let Some(v) = next_via.next() {
                *h = v;
            }
        }
    }
    let body = if pick(2) == 0 {
        ""
    } else {
        "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\n"
    };
    if !body.is_empty() {
        headers.push(format!(
            "{} application/sdp",
            name("Content-Type", Some("c"), &mut pick)
        ));
    }
    headers.push(format!(
        "{}{}{}",
        name("Content-Length", Some("l"), &mut pick),
        lws(&mut pick, false),
        body.len()
    ));
    let lead = "\r\n".repeat(pick(3) as usize);
    let status = format!(
        "{} 200 {}",
        case("SIP/2.0", &mut pick),
        ["OK", "Ok", "Options accepted, thanks"][pick(3) as usize]
    );
    let text = format!("{lead}{status}\r\n{}\r\n\r\n{body}", headers.join("\r\n"));
    (text.into_bytes(), t)
}

/// Every legal 200 the grammar generates from these bytes is accepted and matched to its
/// transaction, as a datagram and cut from a TCP stream behind a keep-alive.
pub fn sip_grammar(data: &[u8]) {
    let mut seed = [0u8; 8];
    for (i, b) in data.iter().take(8).enumerate() {
        seed[i] = *b;
    }
    let (msg, t) = legal_ok(u64::from_le_bytes(seed));
    let text = String::from_utf8_lossy(&msg);
    assert_eq!(
        crate::checks::sip::classify(&msg, &t),
        crate::checks::sip::Match::Final(200, None),
        "a legal 200 refused or not matched:\n{text}"
    );
    let mut stream = b"\r\n\r\n".to_vec();
    stream.extend_from_slice(&msg);
    let (skip, len) = crate::checks::sip_message::frame(&stream)
        .unwrap_or_else(|e| panic!("{e}:\n{text}"))
        .unwrap_or_else(|| panic!("not framed:\n{text}"));
    assert_eq!(skip + len, stream.len(), "framed wrong:\n{text}");
}

/// An SNMP PDU decoded, and its varbinds taken as one step of a table walk.
pub fn snmp_pdu(data: &[u8]) {
    use crate::snmp::client::{walk_step, Value};
    let Ok(p) = ber::decode_pdu(data) else { return };
    let vbs = p
        .varbinds
        .into_iter()
        .map(|(oid, v)| {
            let oid: Vec<u64> = oid.into_iter().map(u64::from).collect();
            let v = match v {
                ber::Val::Int(i) => Some(Value::Int(i)),
                ber::Val::Str(s) => Some(Value::Bytes(s)),
                ber::Val::Counter64(n) => Some(Value::Unsigned(n)),
                ber::Val::Gauge32(n) | ber::Val::Counter32(n) | ber::Val::TimeTicks(n) => {
                    Some(Value::Unsigned(n.into()))
                }
                ber::Val::Oid(o) => Some(Value::Oid(o.into_iter().map(u64::from).collect())),
                ber::Val::EndOfMibView | ber::Val::NoSuchObject | ber::Val::NoSuchInstance => None,
                _ => Some(Value::Other),
            };
            (oid, v)
        })
        .collect();
    let mut rows = Vec::new();
    let _ = walk_step(&[1, 3, 6, 1], &[1, 3, 6, 1], vbs, &mut rows);
}

/// A request of the AgentX master, answered from a small view.
pub fn agentx_pdu(data: &[u8]) {
    let Some((&ty, rest)) = data.split_first() else {
        return;
    };
    let Some((&flags, payload)) = rest.split_first() else {
        return;
    };
    let h = crate::snmp::agentx::Header {
        ty: 5 + ty % 3,
        flags,
        session: 1,
        transaction: 1,
        packet: 1,
    };
    let mut view = crate::snmp::view::View::new();
    view.insert(
        crate::snmp::mib::agent_server(),
        ber::Val::Str(b"fuzz".to_vec()),
    );
    let _ = crate::snmp::agentx::answer(&h, payload, &view);
}

/// An answer to a notification: v2c or v3, authenticated and decrypted with fixed keys.
pub fn notify_ack(data: &[u8]) {
    use crate::notify::traps::{open_v3, parse_v3};
    let _ = ber::decode_pdu(data);
    if let Ok(inc) = parse_v3(data) {
        let keys = fuzz_keys();
        let _ = open_v3(data, &inc, Some(keys));
        let _ = open_v3(data, &inc, None);
    }
}

fn fuzz_keys() -> &'static crate::snmp::usm::Keys {
    static KEYS: std::sync::OnceLock<crate::snmp::usm::Keys> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        crate::snmp::usm::Keys::new(
            crate::snmp::usm::Auth::Sha,
            "authpass123",
            "privpass123",
            b"fuzz-engine",
        )
    })
}

/// HylaFAX transfer log lines.
pub fn xferfaxlog(data: &[u8]) {
    let _ = crate::traffic::xferfaxlog::parse_lines(data, 1, "fuzz");
}

/// A HylaFAX job file (`key:value` lines) and a modem status line.
pub fn hylafax_files(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = crate::checks::queue::job_fields(&text);
    let _ = crate::discovery::config_value(&text, "UUCPLockDir");
    let _ = crate::discovery::setup_cache_spool(&text);
    for line in text.lines() {
        let _ = crate::serial::hylafax::judge(line);
    }
}

/// The configuration file.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::config::parse(text, "fuzz.toml");
    }
}

/// A batch posted to /v1/events.
pub fn events(data: &[u8]) {
    let _ = crate::traffic::events::decode(data, "fuzz", 1_795_431_600);
}

/// The allowlist file, without name resolution.
pub fn allowlist(data: &[u8]) {
    for line in String::from_utf8_lossy(data).lines() {
        let entry = line.split('#').next().unwrap_or("").trim();
        let _ = crate::access::parse_literal(entry);
    }
}

/// The kernel's socket tables (`/proc/net/udp`, `tcp6`, ...), read by discovery.
pub fn proc_net(data: &[u8]) {
    let _ = crate::discovery::parse_proc_net(&String::from_utf8_lossy(data));
}

/// A DNS answer to an SRV query, then RFC 2782's order of what it holds.
pub fn dns_answer(data: &[u8]) {
    // The id the answer carries, so that the rest of it is read.
    let id = match data {
        [a, b, ..] => u16::from_be_bytes([*a, *b]),
        _ => 0,
    };
    if let Ok(Ok(records)) = crate::dns::parse(data, id, "_sip._udp.gw.test") {
        let mut n = 0u32;
        let _ = crate::dns::order(records, || {
            n = n.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            n
        });
    }
}
