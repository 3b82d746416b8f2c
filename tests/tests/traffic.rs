//! Traffic accounting end to end: the xferfaxlog tail (rotation, truncation, malformed
//! lines), posted events, kill -9 in the middle of both, `telagent totals` over three agents,
//! and totals computed by a real Prometheus.

use std::io::Write;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use telagent_tests::agent::{metric, token_access, Agent, TOKEN};
use telagent_tests::poll;

const LIMIT: Duration = Duration::from_secs(60);

/// A SEND record as HylaFAX 6 writes it; `reason` empty is a success.
fn send(modem: &str, pages: u32, reason: &str) -> String {
    format!("11/23/26 08:33\tSEND\t000000001\t{modem}\t3\t\"\"\troot@vm\t\"5550003\"\t\"\"\t2220056\t{pages}\t0:00:40\t0:00:31\t\"{reason}\"\t\"\"\t\"\"\t\"\"\t\"root\"\t\"00 00 00\"\n")
}

/// A RECV record with a tab inside a quoted field and empty values.
fn recv(modem: &str, pages: u32) -> String {
    format!("11/23/26 08:40\tRECV\t000000002\t{modem}\tfax00002.tif\t\"\"\tfax\t\"5550100\"\t\"ACME\tSales\"\t2220056\t{pages}\t0:01:10\t0:01:02\t\"\"\t\"\"\t\"\"\t\"\"\t\"\"\t\"\"\n")
}

fn append(path: &std::path::Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

async fn counter(agent: &Agent, name: &str, line: &str) -> Option<f64> {
    metric(
        &agent.metrics().await,
        &format!("{name}{{server=\"test\",line=\"{line}\"}}"),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn xferfaxlog_is_tailed_across_rotation_and_truncation_skipping_malformed_lines() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("xferfaxlog");
    append(
        &log,
        &format!(
            "{}{}garbage line without fields\n{}",
            send("ttyS0", 2, ""),
            recv("ttyS0", 3),
            send("ttyS0", 0, "No carrier detected")
        ),
    );
    let agent = Agent::start(&format!(
        "[[traffic.xferfaxlog]]\npath = \"{}\"\ninterval = \"100ms\"\n",
        log.display()
    ))
    .await;
    let source = format!("{{source=\"xferfaxlog:{}\"}}", log.display());
    async fn records(agent: &Agent, source: &str) -> Option<f64> {
        metric(
            &agent.metrics().await,
            &format!("telagent_traffic_source_records_total{source}"),
        )
    }
    poll(LIMIT, "3 records", || async {
        (records(&agent, &source).await == Some(3.0)).then_some(())
    })
    .await;
    let m = agent.metrics().await;
    assert_eq!(
        metric(
            &m,
            &format!("telagent_traffic_source_malformed_lines_total{source}")
        ),
        Some(1.0)
    );
    assert!(
        agent.log().contains("line=3")
            && agent.log().contains("Skipped a malformed xferfaxlog line"),
        "the malformed line is logged with its number:\n{}",
        agent.log()
    );
    assert_eq!(
        counter(&agent, "telagent_messages_sent_total", "ttyS0").await,
        Some(1.0)
    );
    assert_eq!(
        counter(&agent, "telagent_messages_failed_total", "ttyS0").await,
        Some(1.0)
    );
    assert_eq!(
        counter(&agent, "telagent_messages_received_total", "ttyS0").await,
        Some(1.0)
    );
    assert_eq!(
        counter(&agent, "telagent_pages_received_total", "ttyS0").await,
        Some(3.0)
    );

    // Rotation: two more records reach the old file just before it is renamed, then the
    // new file gets one. All three are counted, none twice.
    append(
        &log,
        &format!("{}{}", send("ttyS1", 1, ""), send("ttyS1", 1, "")),
    );
    std::fs::rename(&log, dir.path().join("xferfaxlog.0")).unwrap();
    append(&log, &send("ttyS1", 1, ""));
    poll(LIMIT, "6 records after rotation", || async {
        (records(&agent, &source).await == Some(6.0)).then_some(())
    })
    .await;
    assert_eq!(
        counter(&agent, "telagent_messages_sent_total", "ttyS1").await,
        Some(3.0)
    );

    // Truncation (copytruncate): the file starts over with one record.
    std::fs::write(&log, "").unwrap();
    append(&log, &recv("ttyS2", 1));
    poll(LIMIT, "7 records after truncation", || async {
        (records(&agent, &source).await == Some(7.0)).then_some(())
    })
    .await;
    assert_eq!(
        counter(&agent, "telagent_messages_received_total", "ttyS2").await,
        Some(1.0)
    );
    assert!(agent.log().contains("truncated"), "{}", agent.log());

    // Counters are kept across a restart.
    let mut agent = agent;
    assert!(agent.stop());
    agent.restart().await;
    assert_eq!(
        counter(&agent, "telagent_messages_sent_total", "ttyS1").await,
        Some(3.0)
    );
    assert_eq!(
        records(&agent, &source).await,
        Some(7.0),
        "the tail resumes; nothing is read twice"
    );
}

/// Sends `batches` batches of `per` sent events, each retried until acknowledged.
fn sender(
    port: u16,
    batches: usize,
    per: usize,
    acked: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let url = format!("http://127.0.0.1:{port}/v1/events");
        let headers = vec![("Authorization".to_string(), format!("Bearer {TOKEN}"))];
        for b in 0..batches {
            let events: Vec<Value> = (0..per)
                .map(|i| serde_json::json!({"direction": "sent", "result": "ok", "pages": 1, "line": format!("ch{}", i % 4)}))
                .collect();
            let body =
                serde_json::json!({"batch": format!("burst-{b}"), "events": events}).to_string();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            loop {
                let r = tokio::time::timeout(
                    Duration::from_secs(5),
                    telagent::http_client::request(
                        "POST",
                        &url,
                        &headers,
                        body.clone().into_bytes(),
                        1 << 16,
                    ),
                )
                .await;
                if matches!(r, Ok(Ok(ref resp)) if resp.status == 200) {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "batch {b} never acknowledged"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            acked.fetch_add(1, Ordering::SeqCst);
        }
    })
}

async fn sent_total(agent: &Agent) -> f64 {
    let m = agent.metrics().await;
    (0..4)
        .filter_map(|i| {
            metric(
                &m,
                &format!("telagent_messages_sent_total{{server=\"test\",line=\"ch{i}\"}}"),
            )
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_during_a_burst_of_10000_events_loses_and_repeats_nothing() {
    let tokens = tempfile::tempdir().unwrap();
    let mut agent = Agent::start(&token_access(tokens.path())).await;
    let acked = Arc::new(AtomicUsize::new(0));
    let task = sender(agent.port, 200, 50, acked.clone());
    poll(LIMIT, "30 batches acknowledged", || async {
        (acked.load(Ordering::SeqCst) >= 30).then_some(())
    })
    .await;
    agent.kill();
    let at_kill = acked.load(Ordering::SeqCst);
    assert!(at_kill < 200, "the kill came in the middle of the burst");
    agent.restart().await;
    task.await.unwrap();
    assert_eq!(sent_total(&agent).await, 10_000.0, "log:\n{}", agent.log());

    // Every batch posted again is a duplicate: still 10,000.
    let again = sender(agent.port, 200, 50, Arc::new(AtomicUsize::new(0)));
    again.await.unwrap();
    assert_eq!(sent_total(&agent).await, 10_000.0);
    let (code, body) = agent.get("/v1/totals?since=0").await.unwrap();
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["rows"][0]["sent"], 10_000, "{v}");
    assert_eq!(v["rows"][0]["pages_sent"], 10_000, "{v}");
    let m = agent.metrics().await;
    assert!(metric(&m, "telagent_event_batches_total{result=\"duplicate\"}").unwrap() >= 200.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_while_tailing_10000_records_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("xferfaxlog");
    std::fs::write(&log, "").unwrap();
    let mut agent = Agent::start(&format!(
        "[[traffic.xferfaxlog]]\npath = \"{}\"\ninterval = \"100ms\"\n",
        log.display()
    ))
    .await;
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (log, done) = (log.clone(), done.clone());
        std::thread::spawn(move || {
            let chunk: String = (0..25).map(|_| send("ttyS0", 1, "")).collect();
            for _ in 0..400 {
                append(&log, &chunk);
                std::thread::sleep(Duration::from_millis(10));
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    poll(LIMIT, "the tail under way", || async {
        counter(&agent, "telagent_messages_sent_total", "ttyS0")
            .await
            .filter(|n| *n >= 500.0)
    })
    .await;
    agent.kill();
    assert!(
        !done.load(Ordering::SeqCst),
        "the kill came while records were still written"
    );
    agent.restart().await;
    writer.join().unwrap();
    poll(LIMIT, "10,000 records counted", || async {
        counter(&agent, "telagent_messages_sent_total", "ttyS0")
            .await
            .filter(|n| *n >= 10_000.0)
    })
    .await;
    // A few more reads find nothing new: exactly 10,000.
    let offset = format!(
        "telagent_traffic_source_offset_bytes{{source=\"xferfaxlog:{}\"}}",
        log.display()
    );
    let size = std::fs::metadata(&log).unwrap().len() as f64;
    poll(LIMIT, "the whole file read", || async {
        (metric(&agent.metrics().await, &offset) == Some(size)).then_some(())
    })
    .await;
    assert_eq!(
        counter(&agent, "telagent_messages_sent_total", "ttyS0").await,
        Some(10_000.0)
    );
}

/// Runs `telagent totals ARGS`; (exit code, stdout).
fn totals(args: &[&str]) -> (i32, String) {
    let out = Command::new(telagent_tests::agent_bin())
        .arg("totals")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_totals_sum_three_agents_and_name_the_missing_one() {
    let tokens = tempfile::tempdir().unwrap();
    let access = token_access(tokens.path());
    let ports: Vec<u16> = (0..3).map(|_| telagent_tests::free_port()).collect();
    let members: String = ports
        .iter()
        .enumerate()
        .map(|(i, p)| {
            format!(
                "[[member]]\nname = \"fax{}\"\nagent = \"http://127.0.0.1:{p}\"\n\n",
                i + 1
            )
        })
        .collect();
    let mut agents = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let a = Agent::start_as(
            &format!("fax{}", i + 1),
            *p,
            &format!("{access}\n{members}"),
        )
        .await
        .expect("agent starts");
        agents.push(a);
    }
    // fax1: 3 sent, fax2: 5 sent + 1 failed, fax3: 2 received with 4 pages.
    let posts = [
        r#"[{"direction":"sent","result":"ok","pages":1},{"direction":"sent","result":"ok","pages":1},{"direction":"sent","result":"ok","pages":1}]"#,
        r#"[{"direction":"sent","result":"ok"},{"direction":"sent","result":"ok"},{"direction":"sent","result":"ok"},{"direction":"sent","result":"ok"},{"direction":"sent","result":"ok"},{"direction":"sent","result":"failed"}]"#,
        r#"[{"direction":"received","result":"ok","pages":2},{"direction":"received","result":"ok","pages":2}]"#,
    ];
    for (a, events) in agents.iter().zip(posts) {
        let (code, body) = a
            .post("/v1/events", &format!("{{\"events\": {events}}}"), TOKEN)
            .await
            .unwrap();
        assert_eq!(code, 200, "{body}");
    }
    let config = agents[0].config.to_str().unwrap().to_string();
    let (code, out) = totals(&["--cluster", "--config", &config, "--since", "1h", "--json"]);
    assert_eq!(code, 0, "{out}");
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["complete"], true);
    assert_eq!(
        (
            &r["total"]["sent"],
            &r["total"]["failed"],
            &r["total"]["received"],
            &r["total"]["pages_received"]
        ),
        (
            &Value::from(8),
            &Value::from(1),
            &Value::from(2),
            &Value::from(4)
        ),
        "{r}"
    );
    let servers: Vec<&str> = r["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["server"].as_str().unwrap())
        .collect();
    assert_eq!(servers, ["fax1", "fax2", "fax3"]);

    let (code, table) = totals(&["--cluster", "--config", &config, "--since", "1h"]);
    assert_eq!(code, 0, "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["TOTAL", "8", "1", "2", "0", "7", "100.0%"]),
        "{table}"
    );

    // Events posted to fax1 for another server (a messaging host without an agent) are in
    // the cluster's totals too, under their own server.
    let (code, body) = agents[0]
        .post(
            "/v1/events",
            r#"{"events": [{"server":"mx1","direction":"sent","result":"ok"},{"server":"mx1","direction":"received","result":"failed"}]}"#,
            TOKEN,
        )
        .await
        .unwrap();
    assert_eq!(code, 200, "{body}");
    let (code, table) = totals(&["--cluster", "--config", &config, "--since", "1h"]);
    assert_eq!(code, 0, "{table}");
    assert!(table.contains(", 4 servers"), "{table}");
    let cells = |name: &str| -> Vec<String> {
        table
            .lines()
            .find(|l| l.starts_with(name))
            .map(|l| l.split_whitespace().map(String::from).collect())
            .unwrap_or_default()
    };
    assert_eq!(cells("mx1")[1..5], ["1", "0", "0", "1"], "{table}");
    // SHARE counts receive failures, and so does the table now.
    assert_eq!(cells("TOTAL")[1..5], ["9", "1", "2", "1"], "{table}");
    let (code, out) = totals(&[
        "--cluster",
        "--config",
        &config,
        "--server",
        "mx1",
        "--json",
    ]);
    assert_eq!(code, 0, "{out}");
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["total"]["sent"], 1, "{r}");
    let (code, out) = totals(&["--cluster", "--config", &config, "--server", "nosuch"]);
    assert_eq!(code, 2, "an unknown server is an error, not zeros: {out}");
    assert!(out.contains("nosuch") && out.contains("mx1"), "{out}");

    assert!(agents[2].stop());
    let (code, out) = totals(&["--cluster", "--config", &config, "--since", "1h", "--json"]);
    assert_eq!(code, 1, "a missing member is an incomplete answer: {out}");
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["complete"], false);
    assert_eq!(r["total"]["sent"], 9, "the others still add up");
    let missing: Vec<&Value> = r["sources"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s.get("error").is_some())
        .collect();
    assert_eq!(missing.len(), 1, "{r}");
    assert_eq!(missing[0]["server"], "fax3");
    let (_, table) = totals(&["--cluster", "--config", &config, "--since", "1h"]);
    assert!(table.contains("INCOMPLETE: fax3"), "{table}");
    let (_, csv) = totals(&["--cluster", "--config", &config, "--since", "1h", "--csv"]);
    assert!(
        csv.lines()
            .any(|l| l.starts_with("fax3,") && l.contains("unreachable")),
        "{csv}"
    );
    assert!(
        csv.lines().last().unwrap().ends_with(",incomplete"),
        "{csv}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn totals_of_one_agent_by_config_by_state_dir_and_by_api() {
    let tokens = tempfile::tempdir().unwrap();
    let mut agent = Agent::start(&token_access(tokens.path())).await;
    let (code, _) = agent
        .post(
            "/v1/events",
            r#"{"events": [{"direction":"sent","result":"ok","pages":3},{"direction":"received","result":"failed"}]}"#,
            TOKEN,
        )
        .await
        .unwrap();
    assert_eq!(code, 200);
    // --config without --cluster: the agent at the config's agent.listen.
    let config = agent.config.to_str().unwrap().to_string();
    let (code, out) = totals(&["--config", &config, "--json"]);
    assert_eq!(code, 0, "{out}");
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (&r["total"]["sent"], &r["total"]["receive_failed"]),
        (&Value::from(1), &Value::from(1)),
        "{r}"
    );
    // A window in RFC 3339 with an offset.
    let (code, out) = totals(&[
        "--config",
        &config,
        "--since",
        "2020-01-01T02:00:00+02:00",
        "--json",
    ]);
    assert_eq!(code, 0, "{out}");
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["since"], 1_577_836_800, "{r}");
    // Windows that are not: errors (exit 2), never an unanswered source (exit 1).
    for since in [["--since", "100y"], ["--until", "2200-01-01"]] {
        let (code, out) = totals(&["--config", &config, since[0], since[1]]);
        assert_eq!(code, 2, "{since:?}: {out}");
    }
    let (code, out) = totals(&["--config", &config, "--since", "2026-11-30T08:00:00+25:00"]);
    assert_eq!(code, 2, "{out}");
    // The API refuses windows that are not.
    for q in ["since=200&until=100", "since=-5", "since=99999999999"] {
        let (code, text) = agent.get(&format!("/v1/totals?{q}")).await.unwrap();
        assert_eq!(code, 400, "{q}: {text}");
    }
    let (code, text) = agent.get("/v1/totals?since=0&server=nosuch").await.unwrap();
    assert_eq!(code, 404, "{text}");
    assert!(text.contains("test"), "names the servers known: {text}");
    // The agent stopped: its store, read directly.
    assert!(agent.stop());
    let state = agent.dir.path().join("state");
    let (code, out) = totals(&["--url", &agent.url(""), "--json"]);
    assert_eq!(code, 1, "an agent that does not answer: {out}");
    let (code, out) = totals(&["--state-dir", state.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{out}");
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["total"]["pages_sent"], 3, "{r}");
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_totals_follow_the_counters() {
    let tokens = tempfile::tempdir().unwrap();
    let agent = Agent::start(&token_access(tokens.path())).await;
    let batch = |n: usize| {
        let e: Vec<&str> =
            vec![r#"{"direction":"sent","result":"ok","pages":2,"line":"ttyS0"}"#; n];
        format!("{{\"events\": [{}]}}", e.join(","))
    };
    assert_eq!(
        agent.post("/v1/events", &batch(10), TOKEN).await.unwrap().0,
        200
    );
    let prom = telagent_tests::prometheus::Prometheus::start(
        "telagent",
        &[format!("127.0.0.1:{}", agent.port)],
    )
    .await;
    let series = "telagent_messages_sent_total{server=\"test\",line=\"ttyS0\"}";
    poll(LIMIT, "Prometheus has scraped 10 three times", || async {
        let expr = format!("count_over_time({series}[1m])");
        prom.query(&expr)
            .iter()
            .any(|(_, v)| *v >= 3.0)
            .then_some(())
    })
    .await;
    assert_eq!(
        agent.post("/v1/events", &batch(20), TOKEN).await.unwrap().0,
        200
    );
    poll(LIMIT, "Prometheus has 30", || async {
        prom.query(series)
            .iter()
            .any(|(_, v)| *v == 30.0)
            .then_some(())
    })
    .await;
    let (code, out) = totals(&["--prometheus", &prom.url(), "--since", "10m", "--json"]);
    assert_eq!(code, 0, "{out}");
    let r: Value = serde_json::from_str(&out).unwrap();
    let sent = r["total"]["sent"].as_u64().unwrap();
    // increase() sees the 20 added while it scraped, extrapolated to the window's edges.
    assert!((20..=26).contains(&sent), "sent {sent}: {r}");
    let pages = r["total"]["pages_sent"].as_u64().unwrap();
    assert!((40..=52).contains(&pages), "pages {pages}: {r}");
    assert_eq!(r["rows"][0]["server"], "test");
    assert_eq!(r["estimate"], true, "never shown as exact counts: {r}");
    let (_, table) = totals(&["--prometheus", &prom.url(), "--since", "10m"]);
    assert!(table.contains("Estimates from Prometheus"), "{table}");
}

#[tokio::test(flavor = "multi_thread")]
async fn totals_split_by_hour_and_by_line() {
    let tokens = tempfile::tempdir().unwrap();
    let agent = Agent::start(&token_access(tokens.path())).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let this_hour = now / 3600 * 3600;
    let earlier = this_hour - 3600 + 60;
    let body = format!(
        r#"{{"events": [
        {{"time": {earlier}, "direction": "sent", "result": "ok", "pages": 1, "line": "ttyS0"}},
        {{"time": {earlier}, "direction": "sent", "result": "ok", "pages": 1, "line": "ttyS1"}},
        {{"time": {now}, "direction": "received", "result": "ok", "pages": 5, "line": "ttyS1"}}]}}"#
    );
    assert_eq!(agent.post("/v1/events", &body, TOKEN).await.unwrap().0, 200);
    let url = agent.url("");
    let (code, out) = totals(&["--url", &url, "--since", "3h", "--by", "hour", "--json"]);
    assert_eq!(code, 0, "{out}");
    let r: Value = serde_json::from_str(&out).unwrap();
    let rows: Vec<(i64, u64, u64)> = r["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["hour"].as_i64().unwrap(),
                x["sent"].as_u64().unwrap(),
                x["received"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(rows, [(this_hour - 3600, 2, 0), (this_hour, 0, 1)], "{r}");
    let (code, out) = totals(&["--url", &url, "--since", "3h", "--by", "line", "--csv"]);
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "server,line,sent,failed,received,receive_failed,pages_sent,pages_received,share,status"
    );
    assert!(lines.contains(&"test,ttyS0,1,0,0,0,1,0,33.3,ok"), "{out}");
    assert!(lines.contains(&"test,ttyS1,1,0,1,0,1,5,66.7,ok"), "{out}");
}

async fn sent_on(agent: &Agent, line: &str) -> Option<f64> {
    counter(agent, "telagent_messages_sent_total", line).await
}

#[tokio::test(flavor = "multi_thread")]
async fn two_rotations_during_a_kill_9_outage_lose_no_record() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("xferfaxlog");
    for _ in 0..10 {
        append(&log, &send("ttyA", 1, ""));
    }
    let mut agent = Agent::start(&format!(
        "[[traffic.xferfaxlog]]\npath = \"{}\"\ninterval = \"100ms\"\n",
        log.display()
    ))
    .await;
    poll(LIMIT, "10 records", || async {
        (sent_on(&agent, "ttyA").await == Some(10.0)).then_some(())
    })
    .await;
    agent.kill();
    // While the agent is away: 10 more in the file it read, rotated; 10 in the next
    // generation, rotated again; 10 in the current file.
    for _ in 0..10 {
        append(&log, &send("ttyA", 1, ""));
    }
    std::fs::rename(&log, dir.path().join("xferfaxlog.1")).unwrap();
    for _ in 0..10 {
        append(&log, &send("ttyA", 1, ""));
    }
    std::fs::rename(
        dir.path().join("xferfaxlog.1"),
        dir.path().join("xferfaxlog.2"),
    )
    .unwrap();
    std::fs::rename(&log, dir.path().join("xferfaxlog.1")).unwrap();
    for _ in 0..10 {
        append(&log, &send("ttyA", 1, ""));
    }
    agent.restart().await;
    poll(LIMIT, "40 records", || async {
        (sent_on(&agent, "ttyA").await == Some(40.0)).then_some(())
    })
    .await;
    // And not one more: nothing is read twice.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sent_on(&agent, "ttyA").await, Some(40.0));
    assert!(
        agent.log().contains("Reading the next rotated xferfaxlog"),
        "{}",
        agent.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_copytruncate_rotation_counts_the_copys_unread_records() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("xferfaxlog");
    for _ in 0..5 {
        append(&log, &send("ttyB", 1, ""));
    }
    let mut agent = Agent::start(&format!(
        "[[traffic.xferfaxlog]]\npath = \"{}\"\ninterval = \"100ms\"\n",
        log.display()
    ))
    .await;
    poll(LIMIT, "5 records", || async {
        let n = counter(&agent, "telagent_messages_sent_total", "ttyB").await;
        (n == Some(5.0)).then_some(())
    })
    .await;
    agent.kill();
    // logrotate copytruncate while the agent is away: 7 unread records reach the file,
    // it is copied, truncated, and the new file gets 2.
    for _ in 0..7 {
        append(&log, &send("ttyB", 1, ""));
    }
    std::fs::copy(&log, dir.path().join("xferfaxlog.1")).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    for _ in 0..2 {
        append(&log, &recv("ttyB", 1));
    }
    agent.restart().await;
    poll(LIMIT, "the copy's 7 and the new file's 2", || async {
        let sent = counter(&agent, "telagent_messages_sent_total", "ttyB").await;
        let recv = counter(&agent, "telagent_messages_received_total", "ttyB").await;
        (sent == Some(12.0) && recv == Some(2.0)).then_some(())
    })
    .await;
    assert!(agent.log().contains("copytruncate"), "{}", agent.log());
}
