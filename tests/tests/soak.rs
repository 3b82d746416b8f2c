//! The soak driver of `tests/bench/run soak`, run briefly: every check kind and output at
//! once, snmptrapd restarted after the first notifications (seed 177 restarts it after
//! 24 s; the first flap is at 15 s), and nothing lost.

use serde_json::Value;

#[test]
fn a_short_soak_loses_nothing() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_soak"))
        .args(["--seconds", "45", "--seed", "177"])
        .env("TELAGENT_BIN", telagent_tests::agent_bin())
        .output()
        .expect("run the soak driver");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let results: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON result per line"))
        .collect();
    let get = |name: &str| {
        results
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {results:?}"))
    };
    for r in &results {
        for field in ["parameters", "median", "p99", "min", "max", "unit", "cores"] {
            assert!(!r[field].is_null(), "{field} missing in {r}");
        }
    }
    let rss = get("soak-rss");
    assert!(rss["samples"].as_u64() >= Some(4), "{rss}");
    assert!(rss["min"].as_f64() > Some(1.0), "{rss}");
    let params = &rss["parameters"];
    let flaps = params["flaps"].as_u64().unwrap_or(0);
    assert!(flaps >= 1, "{params}");
    assert_eq!(
        params["restarts"],
        serde_json::json!({"snmptrapd": 1}),
        "{params}"
    );
    for name in [
        "soak-notifications-lost-v2c-inform",
        "soak-notifications-lost-v3-inform",
    ] {
        let r = get(name);
        assert_eq!(r["max"], 0.0, "{r}\n{stderr}");
        assert_eq!(r["expected"].as_u64(), Some(2 * flaps), "{r}");
    }
    for name in ["soak-counts-lost", "soak-counts-doubled", "soak-panics"] {
        let r = get(name);
        assert_eq!(r["max"], 0.0, "{r}\n{stderr}");
    }
    let fed = &get("soak-counts-lost")["by_field"]["sent"]["fed"];
    assert!(fed.as_u64() > Some(0), "nothing was fed: {fed}");
}
