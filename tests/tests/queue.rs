//! The `queue` check against a real HylaFAX spool and a real PostgreSQL server.

use std::time::Duration;

use telagent_tests::agent::{metric, Agent};
use telagent_tests::hylafax::Hylafax;
use telagent_tests::poll;
use telagent_tests::postgres::Postgres;

const LIMIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread")]
async fn hylafax_queue_counts_three_sendfax_jobs_and_their_age_grows() {
    let hf = Hylafax::start();
    for n in ["5550001", "5550002", "5550003"] {
        hf.sendfax(n);
    }
    let agent = Agent::start(&format!(
        "[[queue]]\nname = \"fax-out\"\nsource = \"hylafax\"\nspool = \"{}\"\ninterval = \"300ms\"\ntimeout = \"200ms\"\nhigh_water = 2\n",
        hf.spool().display()
    ))
    .await;
    let depth = "telagent_queue_depth{check=\"fax-out\"}";
    let age = "telagent_queue_oldest_age_seconds{check=\"fax-out\"}";
    let first_age = poll(LIMIT, "queue depth 3", || async {
        let m = agent.metrics().await;
        (metric(&m, depth) == Some(3.0))
            .then(|| metric(&m, age))
            .flatten()
    })
    .await;
    poll(LIMIT, "the oldest age to grow", || async {
        metric(&agent.metrics().await, age).filter(|a| *a > first_age + 0.5)
    })
    .await;
    let m = agent.metrics().await;
    let states: f64 = [
        "suspended",
        "pending",
        "sleeping",
        "blocked",
        "ready",
        "active",
    ]
    .iter()
    .filter_map(|s| {
        metric(
            &m,
            &format!("telagent_queue_jobs{{check=\"fax-out\",state=\"{s}\"}}"),
        )
    })
    .sum();
    assert_eq!(states, 3.0, "the waiting states add up to the depth:\n{m}");
    let t = poll(LIMIT, "degraded over high water", || async {
        agent
            .target("fax-out")
            .await
            .filter(|t| t["state"] == "degraded")
    })
    .await;
    assert_eq!(t["last"]["error_type"], "high_water", "{t}");
    assert!(
        t["last"]["detail"]
            .as_str()
            .unwrap()
            .starts_with("3 waiting, oldest"),
        "{t}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_queue_reads_rows_by_state_and_fails_clearly_when_the_server_stops() {
    let mut pg = Postgres::start().await;
    pg.psql(
        "CREATE TABLE outq (id serial, state text, created timestamptz DEFAULT now() - interval '90 seconds');
         INSERT INTO outq (state) VALUES ('new'), ('new'), ('new'), ('retry'), ('retry');",
    )
    .expect("create the queue table");
    let agent = Agent::start(&format!(
        "[[queue]]\nname = \"sms-out\"\nsource = \"sql\"\nurl = \"{}\"\nquery = \"SELECT state, count(*) FROM outq GROUP BY state ORDER BY state\"\nage_query = \"SELECT EXTRACT(EPOCH FROM now() - min(created))::bigint FROM outq\"\ninterval = \"300ms\"\ntimeout = \"250ms\"\nfall = 2\n",
        pg.url()
    ))
    .await;
    let m = poll(LIMIT, "depth 5 from PostgreSQL", || async {
        let m = agent.metrics().await;
        (metric(&m, "telagent_queue_depth{check=\"sms-out\"}") == Some(5.0)).then_some(m)
    })
    .await;
    assert_eq!(
        metric(&m, "telagent_queue_jobs{check=\"sms-out\",state=\"new\"}"),
        Some(3.0)
    );
    assert_eq!(
        metric(&m, "telagent_queue_jobs{check=\"sms-out\",state=\"retry\"}"),
        Some(2.0)
    );
    let age = metric(&m, "telagent_queue_oldest_age_seconds{check=\"sms-out\"}").unwrap();
    assert!((89.0..200.0).contains(&age), "age {age}");

    pg.stop();
    let t = poll(LIMIT, "down after PostgreSQL stopped", || async {
        agent
            .target("sms-out")
            .await
            .filter(|t| t["state"] == "down")
    })
    .await;
    let detail = t["last"]["detail"].as_str().unwrap();
    assert_eq!(t["last"]["error_type"], "connect_error", "{t}");
    assert!(
        detail.contains(&format!(
            "PostgreSQL at postgresql://postgres@127.0.0.1:{}",
            pg.port
        )),
        "{detail}"
    );
    assert!(
        matches!(agent.get("/healthz").await, Some((200, _))),
        "the agent lives on"
    );
}
