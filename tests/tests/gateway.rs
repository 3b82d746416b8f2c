//! The `gateway` check against snmpsim serving an E1/ISDN gateway: the state follows live
//! edits of the recording (channels busy, line in LOS), v3 authPriv with right and wrong
//! keys, a gateway that stops answering, and the OPTIONS ping combined into its state.

use std::process::Command;
use std::time::Duration;

use telagent_tests::agent::{metric, Agent};
use telagent_tests::sip::Sipp;
use telagent_tests::snmpsim::{SnmpSim, V3_AUTH, V3_PRIV, V3_USER};
use telagent_tests::{agent_bin, poll};

fn check(body: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("t.toml");
    std::fs::write(&cfg, body).unwrap();
    let out = Command::new(agent_bin())
        .args(["check", "gw", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_state_follows_the_gateway_live() {
    let sim = SnmpSim::start(5, 1);
    let agent = Agent::start(&format!(
        "[[gateway]]\nname = \"gw\"\naddress = \"127.0.0.1:{}\"\nmin_idle = 1\ninterval = \"500ms\"\ntimeout = \"450ms\"\nrequest_timeout = \"200ms\"\nretries = 0\nrise = 1\nfall = 1\n",
        sim.port
    ))
    .await;
    let state = |want: &'static str| {
        let agent = &agent;
        async move {
            let t = agent.target("gw").await?;
            (t["state"] == want).then_some(t)
        }
    };
    poll(Duration::from_secs(30), "gateway up", || state("up")).await;
    let m = agent.metrics().await;
    assert_eq!(
        metric(&m, "telagent_gateway_channels{check=\"gw\",state=\"idle\"}"),
        Some(25.0)
    );
    assert_eq!(
        metric(&m, "telagent_gateway_channels{check=\"gw\",state=\"busy\"}"),
        Some(5.0)
    );

    sim.set(30, 1);
    let t = poll(Duration::from_secs(30), "channels exhausted", || {
        state("degraded")
    })
    .await;
    assert_eq!(t["last"]["error_type"], "channels_exhausted");

    sim.set(0, 64);
    let t = poll(Duration::from_secs(30), "line in LOS: down", || {
        state("down")
    })
    .await;
    assert_eq!(t["last"]["error_type"], "no_usable_channel");
    assert!(
        t["last"]["detail"]
            .as_str()
            .unwrap()
            .contains("trunk 1: LOS"),
        "{t}"
    );
    let m = agent.metrics().await;
    assert_eq!(
        metric(&m, "telagent_gateway_trunk_alarm{check=\"gw\",trunk=\"1\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &m,
            "telagent_gateway_dsx1_line_status{check=\"gw\",trunk=\"1\"}"
        ),
        Some(64.0)
    );
    assert_eq!(
        metric(
            &m,
            "telagent_gateway_channels{check=\"gw\",state=\"out_of_service\"}"
        ),
        Some(30.0)
    );

    sim.set(5, 1);
    poll(Duration::from_secs(30), "gateway up again", || state("up")).await;

    // The gateway stops answering: down, within the check's timeout.
    sim.freeze();
    let t = poll(Duration::from_secs(30), "no response: down", || {
        state("down")
    })
    .await;
    assert_eq!(t["last"]["error_type"], "no_response");
}

#[test]
fn v3_auth_priv_with_right_and_wrong_keys() {
    let sim = SnmpSim::start(5, 1);
    let cfg = |auth: &str, privacy: &str| {
        format!(
            "[[gateway]]\nname = \"gw\"\naddress = \"127.0.0.1:{}\"\nversion = \"3\"\nuser = \"{V3_USER}\"\nauth_protocol = \"sha\"\nauth_password = \"{auth}\"\npriv_password = \"{privacy}\"\ncontext = \"public\"\n",
            sim.port
        )
    };
    let (code, out) = check(&cfg(V3_AUTH, V3_PRIV));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("30 channels: 25 idle, 5 busy"), "{out}");
    for (auth, privacy) in [("wrong-auth-key", V3_PRIV), (V3_AUTH, "wrong-priv-key")] {
        let (code, out) = check(&cfg(auth, privacy));
        assert_eq!(code, Some(1), "{out}");
        assert!(out.contains("error     auth_error"), "{out}");
        assert!(out.contains("rejected our credentials"), "{out}");
    }
    // v2c with a wrong community is not answered at all.
    let (code, out) = check(&format!(
        "[[gateway]]\nname = \"gw\"\naddress = \"127.0.0.1:{}\"\ncommunity = \"wrong\"\nrequest_timeout = \"300ms\"\n",
        sim.port
    ));
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("error     no_response") && out.contains("community"),
        "{out}"
    );
}

#[test]
fn options_and_channels_combine_into_one_state() {
    let sim = SnmpSim::start(5, 1);
    let busy = Sipp::start("u1", "503 Service Unavailable");
    let (code, out) = check(&format!(
        "[[gateway]]\nname = \"gw\"\naddress = \"127.0.0.1:{}\"\nsip = {{ uri = \"sip:127.0.0.1:{}\" }}\n",
        sim.port, busy.port
    ));
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("status    degraded") && out.contains("error     no_capacity"),
        "{out}"
    );
    assert!(
        out.contains("25 idle, 5 busy") && out.contains("OPTIONS: sip:127.0.0.1"),
        "{out}"
    );
    assert!(
        out.contains("telagent_gateway_sip_status_code{check=\"gw\"} 503"),
        "{out}"
    );

    // The gateway's own list of codes: a 503 that this gateway sends when all is well.
    let (code, out) = check(&format!(
        "[[gateway]]\nname = \"gw\"\naddress = \"127.0.0.1:{}\"\nsip = {{ uri = \"sip:127.0.0.1:{}\", alive_codes = [503], degraded_codes = [] }}\n",
        sim.port, busy.port
    ));
    assert_eq!(code, Some(0), "{out}");

    let fine = Sipp::start("u1", "200 OK");
    let (code, out) = check(&format!(
        "[[gateway]]\nname = \"gw\"\naddress = \"127.0.0.1:{}\"\nsip = {{ uri = \"sip:127.0.0.1:{}\" }}\n",
        sim.port, fine.port
    ));
    assert_eq!(code, Some(0), "{out}");
}

/// `telagent check gw` of a v2c gateway at `address` with `extra` keys.
fn check_at(address: &str, extra: &str) -> (Option<i32>, String) {
    check(&format!(
        "[[gateway]]\nname = \"gw\"\naddress = \"{address}\"\nrequest_timeout = \"300ms\"\nretries = 0\n{extra}"
    ))
}

#[test]
fn each_error_type_is_named_for_what_happened() {
    // Nothing listens on the port: the host answers ICMP port unreachable.
    let closed = telagent_tests::sip::free_udp_port();
    let (code, out) = check_at(&format!("127.0.0.1:{closed}"), "");
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("error     connect_refused"), "{out}");
    assert!(out.contains("port unreachable"), "{out}");
    // A name that does not resolve.
    let (code, out) = check_at("no-such-gateway.invalid:161", "");
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("error     dns"), "{out}");
    // The host itself refuses to send: a broadcast address.
    let (code, out) = check_at("255.255.255.255:161", "");
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("error     io_error"), "{out}");
    // Silence.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let (_, out) = check_at(&silent.local_addr().unwrap().to_string(), "");
    assert!(out.contains("error     no_response"), "{out}");
    // A profile that matches nothing on the agent: no channels.
    let sim = SnmpSim::start(5, 1);
    let (_, out) = check_at(
        &format!("127.0.0.1:{}", sim.port),
        "profile = \"custom\"\ncustom = { state_oid = \"1.3.6.1.4.1.99999.7.7\", idle = [1], busy = [2] }\n",
    );
    assert!(out.contains("error     no_channels"), "{out}");
}

/// A recording of `rows` channels in one vendor column (1.3.6.1.4.1.99999.9.1.1.2.<n>),
/// all idle.
fn endless_column(rows: u64) -> String {
    let mut oids: Vec<Vec<u64>> = (1..=rows)
        .map(|n| vec![1, 3, 6, 1, 4, 1, 99999, 9, 1, 1, 2, n])
        .collect();
    oids.sort();
    oids.iter()
        .map(|o| {
            let d: Vec<String> = o.iter().map(u64::to_string).collect();
            format!("{}|2|1\n", d.join("."))
        })
        .collect()
}

#[test]
fn a_table_that_does_not_end_is_a_bad_response_not_ten_thousand_channels() {
    let sim = SnmpSim::serve(&[("endless", endless_column(10_050))]);
    let (code, out) = check_at(
        &format!("127.0.0.1:{}", sim.port),
        "community = \"endless\"\nprofile = \"custom\"\ncustom = { state_oid = \"1.3.6.1.4.1.99999.9.1.1.2\", idle = [1], busy = [2] }\n",
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("error     bad_response"), "{out}");
    assert!(out.contains("past 10000 rows"), "{out}");
    assert!(!out.contains("status    ok"), "{out}");
}

/// An SNMP v2c agent that answers every GETBULK with a table that starts again: row 1,
/// row 2, then row 1 (RFC 3416 requires each next OID to be greater).
fn wrapping_agent() -> (std::net::SocketAddr, std::thread::JoinHandle<()>) {
    use telagent::snmp::ber::{self, Val};
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let addr = sock.local_addr().unwrap();
    let h = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let mut r = ber::Reader::new(&buf[..n]);
            let Ok(mut msg) = r.seq() else { continue };
            let (Ok(_), Ok(community)) = (msg.int(), msg.octets()) else {
                continue;
            };
            let community = community.to_vec();
            let Ok((tag, content, _)) = msg.next_tlv() else {
                continue;
            };
            let Ok(pdu) = ber::decode_pdu(&ber::tlv(tag, content)) else {
                continue;
            };
            let col = [1u32, 3, 6, 1, 4, 1, 99999, 9, 1, 1, 2];
            let row = |n: u32| {
                let mut o = col.to_vec();
                o.push(n);
                (o, Val::Int(1))
            };
            let reply = telagent::notify::traps::v2c(
                std::str::from_utf8(&community).unwrap_or("public"),
                ber::RESPONSE,
                pdu.request_id,
                &[row(1), row(2), row(1)],
            );
            let _ = sock.send_to(&reply, from);
        }
    });
    (addr, h)
}

#[test]
fn a_table_that_starts_again_is_a_bad_response() {
    let (addr, _agent) = wrapping_agent();
    let (code, out) = check_at(
        &addr.to_string(),
        "profile = \"custom\"\ncustom = { state_oid = \"1.3.6.1.4.1.99999.9.1.1.2\", idle = [1], busy = [2] }\n",
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("error     bad_response"), "{out}");
    assert!(out.contains("came after"), "{out}");
}

#[test]
fn idle_b_channels_reported_dormant_are_usable() {
    // RFC 2863 dormant(5): the interface waits for an external event (a call). Five
    // B-channels active, the 25 idle ones dormant.
    let text: String = telagent_tests::snmpsim::isdn_gateway(5, 1)
        .lines()
        .map(|l| {
            let dormant = (106..=130).any(|i| l == format!("1.3.6.1.2.1.2.2.1.8.{i}|2|1"));
            if dormant {
                format!("{}5\n", &l[..l.len() - 1])
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    let dormant = text
        .lines()
        .filter(|l| l.starts_with("1.3.6.1.2.1.2.2.1.8.") && l.ends_with("|2|5"))
        .count();
    assert_eq!(dormant, 25, "the recording has 25 dormant B-channels");
    let sim = SnmpSim::serve(&[("dormant", text)]);
    let (code, out) = check_at(
        &format!("127.0.0.1:{}", sim.port),
        "community = \"dormant\"\nmin_idle = 6\n",
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("30 channels: 25 idle, 5 busy, 0 out of service"),
        "{out}"
    );
}

/// A recording of tests/peers/snmpsim (written from the vendor MIBs, with its answer key
/// in ANSWERS.md there), served under its own name as community.
fn recording(name: &str) -> (String, String) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("peers/snmpsim")
        .join(format!("{name}.snmprec"));
    (
        name.to_string(),
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
}

/// `telagent check` of `name`'s recording with `profile_keys`, and the metrics it prints.
fn check_recording(sim: &SnmpSim, name: &str, profile_keys: &str) -> String {
    let (_, out) = check_at(
        &format!("127.0.0.1:{}", sim.port),
        &format!("community = \"{name}\"\n{profile_keys}"),
    );
    out
}

#[test]
fn vendor_tables_are_counted_as_their_mibs_define_them() {
    let names = [
        "cisco-ds0",
        "audiocodes-channels",
        "isdn-dormant",
        "custom-two-part",
    ];
    let recs: Vec<(String, String)> = names.iter().map(|n| recording(n)).collect();
    let served: Vec<(&str, String)> = recs.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
    let sim = SnmpSim::serve(&served);

    // CISCO-POP-MGMT-MIB: two E1s, slot 1 ports 0 and 3; TS16 (the D-channel) is not a
    // channel; port 3 in LOS. Answer key: 15 idle, 13 busy, 32 out of service.
    let out = check_recording(&sim, "cisco-ds0", "profile = \"cisco-ds0\"\n");
    assert!(
        out.contains("60 channels: 15 idle, 13 busy, 32 out of service"),
        "{out}"
    );
    assert!(
        out.contains("error     trunk_alarm") && out.contains("trunk 1.3:") && out.contains("LOS"),
        "{out}"
    );
    // The alarm is named as the channel table names the trunk (slot.port, from ifDescr).
    assert!(
        out.contains("telagent_gateway_trunk_alarm{check=\"gw\",trunk=\"1.3\"} 1"),
        "{out}"
    );
    assert!(
        out.contains("telagent_gateway_trunks_in_alarm{check=\"gw\"} 1"),
        "{out}"
    );
    assert!(
        out.contains(
            "telagent_gateway_trunk_channels{check=\"gw\",trunk=\"1.0\",state=\"idle\"} 15"
        ),
        "{out}"
    );
    assert!(
        out.contains("telagent_gateway_trunk_channels{check=\"gw\",trunk=\"1.3\",state=\"out_of_service\"} 30"),
        "{out}"
    );

    // AC-PSTN-MIB: a nibble per timeslot; trunk 1 in LOS/LOF with "None" nibbles. Key:
    // 12 idle, 14 busy, 33 out of service + 1 unknown (counted out of service).
    let out = check_recording(&sim, "audiocodes-channels", "profile = \"audiocodes\"\n");
    assert!(
        out.contains("60 channels: 12 idle, 14 busy, 34 out of service"),
        "{out}"
    );
    assert!(out.contains("trunk 1: LOS/LOF (red)"), "{out}");
    assert!(
        out.contains("telagent_gateway_trunk_alarm{check=\"gw\",trunk=\"1\"} 1"),
        "{out}"
    );
    assert!(
        out.contains("telagent_gateway_trunk_alarm{check=\"gw\",trunk=\"0\"} 0"),
        "{out}"
    );

    // ISDN-MIB with dormant idle B-channels, two in call setup, B23 without its bearer
    // state, two administratively down. Key: 20 idle, 8 busy, 2 out of service.
    let out = check_recording(&sim, "isdn-dormant", "");
    assert!(
        out.contains("30 channels: 20 idle, 8 busy, 2 out of service"),
        "{out}"
    );
    assert!(out.contains("status    ok"), "{out}");

    // An invented trunk.channel table: trunks 2 and 10 (numeric order), row 10.7 without
    // its state, value 5 outside the enumeration. Key (unknown as out of service):
    // 32 idle, 16 busy, 12 out of service.
    let out = check_recording(
        &sim,
        "custom-two-part",
        "profile = \"custom\"\ncustom = { state_oid = \"1.3.6.1.4.1.99999.2.1.1.2\", rows_oid = \"1.3.6.1.4.1.99999.2.1.1.1\", index = [\"trunk\", \"channel\"], idle = [1], busy = [2, 3], out_of_service = [4] }\n",
    );
    assert!(
        out.contains("60 channels: 32 idle, 16 busy, 12 out of service"),
        "{out}"
    );
    assert!(
        out.contains(
            "telagent_gateway_trunk_channels{check=\"gw\",trunk=\"10\",state=\"out_of_service\"} 8"
        ),
        "{out}"
    );
    assert!(
        out.contains("telagent_gateway_trunk_channels{check=\"gw\",trunk=\"2\",state=\"busy\"} 12"),
        "{out}"
    );
}
