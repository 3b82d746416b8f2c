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
    let _ = crate::checks::sip::frame(data);
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
