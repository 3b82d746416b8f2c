//! TELAGENT-MIB: valid SMIv2 for libsmi's smilint, loadable by net-snmp, and defining every
//! OID the agent sends or serves with the syntax the agent uses.

use std::process::Command;

use telagent::snmp::mib::{defs, Syntax};
use telagent_tests::snmptrapd::{ietf_mibs, mib_dirs, repo_mibs};

#[test]
fn smilint_level_6_reports_nothing() {
    let out = Command::new("smilint")
        .env("SMIPATH", ietf_mibs())
        .args(["-l", "6", "-s"])
        .arg(repo_mibs().join("TELAGENT-MIB.txt"))
        .output()
        .expect("smilint (apt-get install smitools)");
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && said.trim().is_empty(),
        "smilint: {said}"
    );
}

/// The line of `snmptranslate -Td` output that names the syntax, per the code's syntax.
fn expected(s: Syntax) -> &'static str {
    match s {
        Syntax::DisplayString => "-- TEXTUAL CONVENTION DisplayString",
        Syntax::State => "-- TEXTUAL CONVENTION TelagentState",
        Syntax::Severity => "-- TEXTUAL CONVENTION TelagentSeverity",
        Syntax::TruthValue => "-- TEXTUAL CONVENTION TruthValue",
        Syntax::Integer32 => "SYNTAX\tInteger32",
        Syntax::DateAndTime => "-- TEXTUAL CONVENTION DateAndTime",
        Syntax::Unsigned32 => "SYNTAX\tUnsigned32",
        Syntax::Gauge32 => "SYNTAX\tGauge32",
        Syntax::Counter64 => "SYNTAX\tCounter64",
        Syntax::Notification => "NOTIFICATION-TYPE",
    }
}

#[test]
fn every_oid_of_the_code_is_in_the_mib_with_the_same_name_and_syntax() {
    let all = defs();
    assert!(all.len() > 50, "{} definitions", all.len());
    for d in all {
        let oid: String = d.oid.iter().map(|a| format!(".{a}")).collect();
        let out = Command::new("snmptranslate")
            .args(["-M", &mib_dirs(), "-m", "TELAGENT-MIB", "-Td", &oid])
            .output()
            .expect("snmptranslate (apt-get install snmp)");
        let text = String::from_utf8_lossy(&out.stdout);
        let first = text.lines().next().unwrap_or("");
        assert_eq!(first, format!("TELAGENT-MIB::{}", d.name), "{oid}: {text}");
        assert!(
            text.lines()
                .any(|l| l.trim_start().starts_with(expected(d.syntax))
                    || l.contains(expected(d.syntax))),
            "{} ({oid}) is not {:?} in the MIB:\n{text}",
            d.name,
            d.syntax
        );
    }
}
