//! The status page at `/` in a real browser (Debian's headless Chromium): with a failing
//! check and a healthy one, the rendered DOM names the failing check and why under "Down",
//! the page refreshes itself from the agent, and a screenshot is kept under
//! target/test-artifacts/ for people to look at.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use telagent_tests::agent::Agent;
use telagent_tests::service::{Behaviour, Service};

const LIMIT: Duration = Duration::from_secs(60);

/// Headless Chromium with the flags this machine needs (root, no GPU, no network), its
/// own profile directory, and `extra` arguments; returns stdout.
fn chromium(profile: &std::path::Path, extra: &[&str], url: &str) -> String {
    let out = Command::new("chromium")
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .output()
        .expect("cannot run chromium (apt-get install chromium)");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_shows_a_failing_check_under_down_in_a_real_browser() {
    let svc = Service::start(Behaviour::Accept).await;
    let agent = Agent::start(&format!(
        "[[tcp]]\nname = \"smtp-relay\"\naddress = \"{}\"\ninterval = \"1s\"\ntimeout = \"500ms\"\nrise = 1\n\n\
         [[tcp]]\nname = \"fax-gateway-api\"\naddress = \"127.0.0.1:1\"\ninterval = \"1s\"\ntimeout = \"500ms\"\nfall = 1\n\n\
         [[queue]]\nname = \"outbound\"\nsource = \"command\"\ncommand = [\"echo\", \"7\"]\ninterval = \"1s\"\ntimeout = \"500ms\"\nrise = 1\n",
        svc.addr
    ))
    .await;
    agent.decided(LIMIT).await;

    let profile = tempfile::tempdir().unwrap();
    // Longer than the page's 5 s refresh, so the script's refresh has run when the DOM is
    // dumped.
    let dom = chromium(
        profile.path(),
        &["--virtual-time-budget=8000", "--dump-dom"],
        &agent.url("/"),
    );
    let down = dom
        .find("<section id=\"down\">")
        .unwrap_or_else(|| panic!("no Down section in the rendered page:\n{dom}"));
    let end = down + dom[down..].find("</section>").unwrap();
    let section = &dom[down..end];
    assert!(section.contains(">Down<"), "{section}");
    assert!(section.contains("fax-gateway-api"), "{section}");
    assert!(section.contains("connect_refused"), "{section}");
    assert!(
        !section.contains("smtp-relay"),
        "a healthy check is not down: {section}"
    );
    let services = dom.find(">Services<").expect("a Services group");
    assert!(dom[services..].contains("smtp-relay"));
    let queues = dom.find(">Queues<").expect("a Queues group");
    assert!(dom[queues..].contains("<b>7</b> waiting"), "{dom}");
    assert!(
        dom.contains("<main data-source=\"refresh\">"),
        "the page's script did not refresh <main> from the agent:\n{dom}"
    );
    assert!(dom.contains("<h1>test: down</h1>"), "{dom}");

    let artifacts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    chromium(
        profile.path(),
        &[
            "--hide-scrollbars",
            "--window-size=420,900",
            &format!("--screenshot={}", shot.display()),
        ],
        &agent.url("/"),
    );
    let png = std::fs::read(&shot).expect("chromium wrote no screenshot");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 1000,
        "{} bytes",
        png.len()
    );
}
