//! The operators' kit: example configs are valid, alerting rules pass promtool's checks and
//! unit tests.

use std::path::PathBuf;
use std::process::Command;

fn packaging() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../packaging")
}

#[test]
fn every_example_config_passes_check_config() {
    let mut seen = 0;
    for e in std::fs::read_dir(packaging().join("examples")).unwrap() {
        let path = e.unwrap().path();
        if path.extension().and_then(|x| x.to_str()) != Some("toml") {
            continue;
        }
        let out = Command::new(telagent_tests::agent_bin())
            .arg("check-config")
            .arg(&path)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && said.contains(": ok"),
            "{}: {said}",
            path.display()
        );
        seen += 1;
    }
    assert!(seen >= 4, "{seen} examples");
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(packaging().join("prometheus"))
        .output()
        .expect("promtool (apt-get install prometheus)");
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "promtool {args:?}: {said}");
    said
}

#[test]
fn alerting_rules_are_valid_and_their_unit_tests_pass() {
    assert!(promtool(&["check", "rules", "telagent.rules.yml"]).contains("SUCCESS"));
    assert!(promtool(&["test", "rules", "telagent.rules.test.yml"]).contains("SUCCESS"));
    // Every alert of the rules file has a unit test.
    let rules = std::fs::read_to_string(packaging().join("prometheus/telagent.rules.yml")).unwrap();
    let tests =
        std::fs::read_to_string(packaging().join("prometheus/telagent.rules.test.yml")).unwrap();
    for line in rules.lines() {
        if let Some(name) = line.trim().strip_prefix("- alert: ") {
            assert!(
                tests.contains(&format!("alertname: {name}")),
                "{name} has no unit test"
            );
        }
    }
}
