//! A real Prometheus (Debian package) scraping the agent, and promtool.

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

pub struct Prometheus {
    pub port: u16,
    dir: TempDir,
    child: Child,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (`host:port`) every second as job `job`.
    pub async fn start(job: &str, targets: &[String]) -> Prometheus {
        Prometheus::start_with(job, targets, "").await
    }

    /// As [`Prometheus::start`], with `job_keys` (YAML lines indented by four spaces,
    /// such as `scheme: https` and a `tls_config`) added to the scrape job.
    pub async fn start_with(job: &str, targets: &[String], job_keys: &str) -> Prometheus {
        let mut dir = tempfile::Builder::new()
            .prefix("telagent-prom-")
            .tempdir()
            .expect("tempdir");
        let cfg = dir.path().join("prometheus.yml");
        let list: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        std::fs::write(
            &cfg,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: {job}\n{job_keys}    static_configs:\n      - targets: [{}]\n",
                list.join(", ")
            ),
        )
        .expect("write prometheus.yml");
        for _ in 0..3 {
            let port = crate::free_port();
            let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log");
            let child = Command::new("prometheus")
                .arg(format!("--config.file={}", cfg.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("dup"))
                .stderr(log)
                .spawn()
                .expect("cannot start prometheus (apt-get install prometheus)");
            let mut p = Prometheus { port, dir, child };
            if p.wait_ready().await {
                return p;
            }
            dir = std::mem::replace(&mut p.dir, tempfile::tempdir().expect("tempdir"));
        }
        panic!("prometheus did not start");
    }

    async fn wait_ready(&mut self) -> bool {
        let url = format!("{}/-/ready", self.url());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while tokio::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if let Ok(r) = telagent::http_client::get(&url, 1 << 20).await {
                if r.status == 200 {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("prometheus was not ready within 30s: {}", self.log());
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// `promtool query instant`: each result line as (series, value).
    pub fn query(&self, expr: &str) -> Vec<(String, f64)> {
        let out = Command::new("promtool")
            .args(["query", "instant", &self.url(), expr])
            .output()
            .expect("cannot run promtool");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let (series, rest) = l.split_once(" => ")?;
                let value = rest.split_whitespace().next()?.parse().ok()?;
                Some((series.to_string(), value))
            })
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        crate::stop(&mut self.child, Duration::from_secs(5));
        if std::thread::panicking() {
            eprintln!("--- prometheus log ---\n{}", self.log());
        }
    }
}

/// `promtool check metrics` on exposition text: Ok(()) or Err(what promtool said).
pub fn check_metrics(text: &str) -> Result<(), String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool output");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && said.trim().is_empty() {
        Ok(())
    } else {
        Err(said)
    }
}
