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

    let fine = Sipp::start("u1", "200 OK");
    let (code, out) = check(&format!(
        "[[gateway]]\nname = \"gw\"\naddress = \"127.0.0.1:{}\"\nsip = {{ uri = \"sip:127.0.0.1:{}\" }}\n",
        sim.port, fine.port
    ));
    assert_eq!(code, Some(0), "{out}");
}
