//! Three agents in a fault lab (a network namespace; nftables cuts links in the kernel;
//! each agent its own uid and its own 127.0.0.x): a one-way partition between two agents
//! and a two-way partition of one agent. A server is judged by the majority's agreement:
//! no healthy server is ever declared down by a peer that merely cannot reach it, the
//! minority side writes nothing, and exactly one agent speaks for each server.

use std::time::{Duration, Instant};

use serde_json::Value;
use telagent_tests::lab::Lab;

const NAMES: [&str; 3] = ["fax1", "fax2", "fax3"];
const UID: u32 = 2101;

fn agent_addr(i: usize) -> String {
    format!("127.0.0.{}", 11 + i)
}

fn service_addr(i: usize) -> String {
    format!("127.0.0.{}", 21 + i)
}

struct Cluster {
    lab: Lab,
    dir: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Cluster {
        let mut lab = Lab::new();
        let dir = tempfile::Builder::new()
            .prefix("telagent-lab-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let mut members = String::new();
        for (i, n) in NAMES.iter().enumerate() {
            members.push_str(&format!(
                "[[member]]\nname = \"{n}\"\nagent = \"http://{}:9847\"\nservice = \"{}:8000\"\n\n",
                agent_addr(i),
                service_addr(i)
            ));
        }
        for (i, n) in NAMES.iter().enumerate() {
            lab.service(&service_addr(i), 8000, dir.path());
            let uid = UID + i as u32;
            let state = Lab::owned_dir(dir.path(), &format!("{n}-state"), uid);
            let cfg = dir.path().join(format!("{n}.toml"));
            std::fs::write(
                &cfg,
                format!(
                    "[agent]\nserver = \"{n}\"\nlisten = \"{}:9847\"\nstate_dir = \"{}\"\n\n[ports]\nscan = false\n\n\
                     [cluster]\npoll_interval = \"200ms\"\npoll_timeout = \"150ms\"\ninactive_after = \"1s\"\nevaluate_interval = \"50ms\"\nrise = 2\nfall = 1\nhold = \"0s\"\n\n\
                     {members}[[group]]\nname = \"fax\"\norder = [\"fax1\", \"fax2\", \"fax3\"]\n\n\
                     [server]\ncritical = [\"svc\"]\n\n[[tcp]]\nname = \"svc\"\naddress = \"{}:8000\"\ninterval = \"200ms\"\nfailing_interval = \"200ms\"\ntimeout = \"100ms\"\nrise = 1\nfall = 1\n",
                    agent_addr(i),
                    state.display(),
                    service_addr(i)
                ),
            )
            .unwrap();
            let mut c = lab.command("setpriv");
            c.arg(format!("--reuid={uid}"))
                .arg(format!("--regid={uid}"))
                .arg("--clear-groups")
                .arg(telagent_tests::agent_bin())
                .args(["-v", "run", "--config"])
                .arg(&cfg);
            lab.spawn(c, &dir.path().join(format!("{n}.log")));
        }
        Cluster { lab, dir }
    }

    fn status(&self, i: usize) -> Value {
        self.lab
            .get(&format!("http://{}:9847/v1/status", agent_addr(i)))
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null)
    }

    /// (state, speaker) of `server` as agent `i` sees it.
    fn view(&self, i: usize, server: &str) -> (String, bool) {
        let s = self.status(i);
        let v = s["cluster"]["servers"]
            .as_array()
            .and_then(|a| a.iter().find(|v| v["name"] == server).cloned())
            .unwrap_or(Value::Null);
        (
            v["state"].as_str().unwrap_or("").to_string(),
            v["speaker"].as_bool().unwrap_or(false),
        )
    }

    fn quorum(&self, i: usize) -> bool {
        self.status(i)["cluster"]["quorum"]
            .as_bool()
            .unwrap_or(false)
    }

    /// Server transitions of `server` out of `up` in agent `i`'s audit log.
    fn transitions(&self, i: usize, server: &str) -> Vec<String> {
        let file = self
            .dir
            .path()
            .join(format!("{}-state/audit.jsonl", NAMES[i]));
        std::fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["kind"] == "server" && v["target"] == server && v["to"] != "up")
            .map(|v| format!("{}->{}", v["from"], v["to"]))
            .collect()
    }

    fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{}.log", NAMES[i])))
            .unwrap_or_default()
    }

    /// Cuts every link from agent `from` (its uid) to agent and service `to`.
    fn cut(&self, from: usize, to: usize) {
        self.lab.cut(UID + from as u32, &agent_addr(to));
        self.lab.cut(UID + from as u32, &service_addr(to));
    }

    fn wait(&self, what: &str, limit: Duration, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + limit;
        while !cond() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}\nfax1: {}\nfax2: {}\nfax3: {}",
                self.status(0),
                self.status(1),
                self.status(2)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn all_up(&self) -> bool {
        (0..3).all(|i| NAMES.iter().all(|n| self.view(i, n).0 == "up") && self.quorum(i))
    }

    /// Watches for `span`: every agent's view of every server must satisfy `ok`.
    fn hold(&self, span: Duration, ok: impl Fn(usize, &str, &(String, bool)) -> bool) {
        let end = Instant::now() + span;
        while Instant::now() < end {
            for (i, me) in NAMES.iter().enumerate() {
                for n in NAMES {
                    let v = self.view(i, n);
                    assert!(ok(i, n, &v), "{me} sees {n} as {v:?}:\n{}", self.status(i));
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn writers(c: &Cluster, server: &str) -> Vec<&'static str> {
    (0..3)
        .filter(|i| c.view(*i, server).1)
        .map(|i| NAMES[i])
        .collect()
}

#[test]
fn partitions_never_take_a_healthy_server_out_and_one_agent_speaks_for_each() {
    let c = Cluster::start();
    c.wait(
        "three agents up, each with quorum",
        Duration::from_secs(30),
        || c.all_up(),
    );
    c.wait(
        "each agent writing its own server",
        Duration::from_secs(10),
        || NAMES.iter().all(|n| writers(&c, n) == [*n]),
    );

    for (x, me) in NAMES.iter().copied().enumerate() {
        let (next, other) = ((x + 1) % 3, (x + 2) % 3);
        // Transitions audited before this round: each round must add none but its own.
        let seen = |i: usize, n: &str| c.transitions(i, n).len();
        let before: Vec<Vec<usize>> = (0..3)
            .map(|i| NAMES.iter().map(|n| seen(i, n)).collect())
            .collect();
        let new_ones = |i: usize, n: usize| c.transitions(i, NAMES[n])[before[i][n]..].to_vec();
        // One way: x's agent can no longer reach the next server (agent and service);
        // the third can.
        c.cut(x, next);
        c.hold(Duration::from_secs(3), |_, _, (state, _)| state == "up");
        assert_eq!(
            writers(&c, NAMES[next]),
            [NAMES[next]],
            "{}'s own agent still speaks",
            NAMES[next]
        );
        assert!(
            new_ones(x, next).is_empty(),
            "{me}: {:?}",
            new_ones(x, next)
        );
        c.lab.heal();

        // Two ways: x cut off from both peers, and they from it.
        for peer in [next, other] {
            c.cut(x, peer);
            c.cut(peer, x);
        }
        c.wait(
            &format!("the majority takes {me} out"),
            Duration::from_secs(15),
            || c.view(next, me).0 == "down" && c.view(other, me).0 == "down",
        );
        c.wait(
            &format!("{me} without quorum"),
            Duration::from_secs(5),
            || !c.quorum(x),
        );
        // The majority never doubts itself; the minority writes nothing at all.
        c.hold(Duration::from_secs(3), |i, server, (state, speaker)| {
            if i == x {
                !speaker
            } else if server == me {
                state == "down"
            } else {
                state == "up"
            }
        });
        // The first survivor in member order speaks for the isolated server.
        let first = if x == 0 { NAMES[1] } else { NAMES[0] };
        assert_eq!(writers(&c, me), [first], "one survivor speaks for {me}");
        for n in NAMES.iter().filter(|n| **n != me) {
            assert_eq!(writers(&c, n), [*n]);
        }
        assert!(
            c.log(x).contains("only a minority of the cluster"),
            "{}",
            c.log(x)
        );
        for (n, name) in NAMES.iter().enumerate() {
            assert!(
                new_ones(x, n).is_empty(),
                "the minority {me} changed {name}: {:?}",
                new_ones(x, n)
            );
        }
        for i in [next, other] {
            for n in [next, other] {
                assert!(
                    new_ones(i, n).is_empty(),
                    "{}: {} {:?}",
                    NAMES[i],
                    NAMES[n],
                    new_ones(i, n)
                );
            }
        }

        c.lab.heal();
        c.wait("all back", Duration::from_secs(15), || c.all_up());
        // Once every agent has polled the healed peers again, each writes its own server.
        c.wait(
            "each agent writing its own server again",
            Duration::from_secs(10),
            || NAMES.iter().all(|n| writers(&c, n) == [*n]),
        );
    }
}

#[test]
fn a_lost_syn_does_not_fail_a_tcp_probe() {
    // The kernel drops every other SYN to the service: Linux would send it again only
    // after a second, longer than the probe's 600 ms timeout.
    let mut lab = Lab::new();
    let dir = tempfile::Builder::new()
        .prefix("telagent-lab-")
        .tempdir()
        .unwrap();
    lab.service(&service_addr(0), 8000, dir.path());
    lab.nft(&[
        "add",
        "rule",
        "inet",
        "lab",
        "out",
        "tcp",
        "dport",
        "8000",
        "tcp",
        "flags",
        "&",
        "(syn|ack)",
        "==",
        "syn",
        "numgen",
        "inc",
        "mod",
        "2",
        "==",
        "0",
        "drop",
    ]);
    let cfg = dir.path().join("t.toml");
    // One probe of a tcp check of `port`, from inside the lab: exit code and output.
    let probe = |port: u16| {
        std::fs::write(
            &cfg,
            format!(
                "[[tcp]]\nname = \"svc\"\naddress = \"{}:{port}\"\ninterval = \"2s\"\ntimeout = \"600ms\"\n",
                service_addr(0)
            ),
        )
        .unwrap();
        let out = lab
            .command(telagent_tests::agent_bin())
            .args(["check", "svc", "--config"])
            .arg(&cfg)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    for run in 0..6 {
        let (code, text) = probe(8000);
        assert_eq!(code, Some(0), "run {run}: {text}");
    }
    // And a dead service is still dead at once: a refusal is an answer.
    let (_, text) = probe(8001);
    assert!(text.contains("error     connect_refused"), "{text}");
}
