//! The .deb and .rpm: built with cargo-deb and cargo-generate-rpm (packaging/build), the
//! .deb installed with dpkg -i (as root, as in CI), its unit accepted by systemd-analyze
//! verify, its binary validating its own default config, then purged without a trace; the
//! .rpm holds the same files.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn package(ext: &str) -> String {
    let dir = root().join("target/packages");
    let found = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().and_then(|x| x.to_str()) == Some(ext))
        .unwrap_or_else(|| panic!("no .{ext} in {}", dir.display()));
    found.display().to_string()
}

/// Regular files of a package listing (paths from `dpkg -c` or `rpm -qlp`).
fn files(listing: &str, deb: bool) -> Vec<String> {
    let mut out: Vec<String> = listing
        .lines()
        .filter(|l| !deb || l.starts_with('-'))
        .filter_map(|l| l.split_whitespace().last())
        .map(|p| p.trim_start_matches('.').to_string())
        .filter(|p| p != "/usr/share/doc/telagent/copyright")
        .collect();
    out.sort();
    out
}

#[test]
fn deb_installs_verifies_runs_and_purges_and_rpm_has_the_same_files() {
    // SAFETY: geteuid has no arguments and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("not root: dpkg -i is tested in CI, which runs as root");
        return;
    }
    let (ok, said) = run("packaging/build", &["all"]);
    assert!(ok, "packaging/build: {said}");
    let deb = package("deb");
    let rpm = package("rpm");

    let (ok, said) = run("dpkg", &["-i", &deb]);
    assert!(ok, "dpkg -i: {said}");
    let result = std::panic::catch_unwind(|| {
        let (ok, said) = run(
            "systemd-analyze",
            &["verify", "/usr/lib/systemd/system/telagent.service"],
        );
        assert!(ok, "systemd-analyze verify: {said}");
        let (ok, said) = run(
            "/usr/bin/telagent",
            &["check-config", "/etc/telagent/telagent.toml"],
        );
        assert!(ok && said.contains(": ok"), "{said}");
        let (_, groups) = run("id", &["-nG", "telagent"]);
        assert!(
            groups.split_whitespace().any(|g| g == "dialout"),
            "groups: {groups}"
        );
        let (_, mode) = run("stat", &["-c", "%a %U %G", "/etc/telagent/telagent.toml"]);
        assert_eq!(
            mode.trim(),
            "640 root telagent",
            "the config is readable only by the service"
        );
        let (_, state) = run("stat", &["-c", "%U %a", "/var/lib/telagent"]);
        assert_eq!(state.trim(), "telagent 750");
        let (_, conffiles) = run("dpkg-query", &["--control-show", "telagent", "conffiles"]);
        assert!(
            conffiles.contains("/etc/telagent/telagent.toml"),
            "{conffiles}"
        );
    });
    let (ok, said) = run("dpkg", &["-P", "telagent"]);
    assert!(ok, "dpkg -P: {said}");
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
    for gone in [
        "/usr/bin/telagent",
        "/etc/telagent",
        "/usr/lib/systemd/system/telagent.service",
        "/var/lib/telagent",
    ] {
        assert!(!Path::new(gone).exists(), "{gone} is left after purge");
    }
    let (_, passwd) = run("getent", &["passwd", "telagent"]);
    assert!(passwd.trim().is_empty(), "the user is removed: {passwd}");

    let (ok, deb_list) = run("dpkg", &["-c", &deb]);
    assert!(ok, "{deb_list}");
    let (ok, rpm_list) = run("rpm", &["-qlp", &rpm]);
    assert!(ok, "{rpm_list}");
    assert_eq!(
        files(&rpm_list, false),
        files(&deb_list, true),
        "the .rpm and the .deb hold the same files"
    );
}
