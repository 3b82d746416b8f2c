//! The agent under test, run as a real process from the built binary.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

/// A running `telagent run` with its own temp dir (config, state, audit log, log output).
pub struct Agent {
    pub dir: TempDir,
    pub port: u16,
    pub config: PathBuf,
    child: Child,
    env: Vec<(String, String)>,
    /// The arguments after `telagent -v`.
    args: Vec<std::ffi::OsString>,
}

impl Agent {
    /// Writes a config made of an `[agent]` section for this test and `body` (checks,
    /// defaults), starts the agent and waits until it answers /healthz.
    pub async fn start(body: &str) -> Agent {
        let mut logs = String::new();
        // A port picked free can be taken by another test before the agent binds it.
        for _ in 0..3 {
            match Agent::start_as("test", crate::free_port(), body).await {
                Ok(a) => return a,
                Err(log) => logs.push_str(&log),
            }
        }
        panic!("the agent did not start:\n{logs}");
    }

    /// Starts an agent for server `name` on `port` (members of a cluster must know each
    /// other's ports beforehand); Err(log) if it exited before answering.
    pub async fn start_as(name: &str, port: u16, body: &str) -> Result<Agent, String> {
        Agent::start_with_env(name, port, body, Vec::new()).await
    }

    /// [`Agent::start_as`] with extra environment variables (kept for restarts).
    pub async fn start_with_env(
        name: &str,
        port: u16,
        body: &str,
        env: Vec<(String, String)>,
    ) -> Result<Agent, String> {
        {
            let dir = tempfile::Builder::new()
                .prefix("telagent-e2e-")
                .tempdir()
                .expect("tempdir");
            let config = dir.path().join("telagent.toml");
            std::fs::write(
                &config,
                config_text(dir.path(), port, body)
                    .replace("server = \"test\"", &format!("server = \"{name}\"")),
            )
            .expect("config");
            let args = vec!["run".into(), "--config".into(), config.clone().into()];
            Agent::launch(dir, port, config, env, args).await
        }
    }

    /// Starts `telagent run` on its embedded default (discovery on, no config file), on a
    /// free port with its own state directory, and waits until it answers /healthz.
    pub async fn start_default(env: Vec<(String, String)>) -> Agent {
        let mut logs = String::new();
        for _ in 0..3 {
            let dir = tempfile::Builder::new()
                .prefix("telagent-e2e-")
                .tempdir()
                .expect("tempdir");
            let port = crate::free_port();
            let args = vec![
                "run".into(),
                "--default-config".into(),
                "--listen".into(),
                format!("127.0.0.1:{port}").into(),
                "--state-dir".into(),
                dir.path().join("state").into(),
            ];
            let config = dir.path().join("no-config-file");
            match Agent::launch(dir, port, config, env.clone(), args).await {
                Ok(a) => return a,
                Err(log) => logs.push_str(&log),
            }
        }
        panic!("the agent did not start:\n{logs}");
    }

    async fn launch(
        dir: TempDir,
        port: u16,
        config: PathBuf,
        env: Vec<(String, String)>,
        args: Vec<std::ffi::OsString>,
    ) -> Result<Agent, String> {
        let child = spawn(&args, &dir.path().join("agent.log"), &env);
        let mut agent = Agent {
            dir,
            port,
            config,
            child,
            env,
            args,
        };
        if agent.wait_ready().await {
            return Ok(agent);
        }
        Err(agent.log())
    }

    /// Starts the agent again on the same config and state (after [`Agent::kill`] or
    /// [`Agent::stop`]) and waits until it answers.
    pub async fn restart(&mut self) {
        self.child = spawn(&self.args, &self.log_path(), &self.env);
        assert!(
            self.wait_ready().await,
            "the agent did not restart:\n{}",
            self.log()
        );
    }

    /// POSTs `body` with a bearer token; None if the agent does not answer within 5 s.
    pub async fn post(&self, path: &str, body: &str, token: &str) -> Option<(u16, String)> {
        let headers = vec![("Authorization".to_string(), format!("Bearer {token}"))];
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            telagent::http_client::request(
                "POST",
                &self.url(path),
                &headers,
                body.as_bytes().to_vec(),
                1 << 20,
            ),
        )
        .await
        .ok()?
        .ok()?;
        Some((r.status, String::from_utf8_lossy(&r.body).into_owned()))
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("agent.log")
    }

    /// What the agent logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Replaces the config file (the agent reads it on SIGHUP).
    pub fn write_config(&self, body: &str) {
        let old = std::fs::read_to_string(&self.config).unwrap_or_default();
        let name = old
            .lines()
            .find_map(|l| l.strip_prefix("server = \""))
            .map(|n| n.trim_end_matches('"').to_string())
            .unwrap_or_else(|| "test".into());
        let text = config_text(self.dir.path(), self.port, body)
            .replace("server = \"test\"", &format!("server = \"{name}\""));
        std::fs::write(&self.config, text).expect("write config");
    }

    /// Writes raw text as the config file.
    pub fn write_raw_config(&self, text: &str) {
        std::fs::write(&self.config, text).expect("write config");
    }

    pub fn hup(&self) {
        crate::signal(self.pid(), libc::SIGHUP);
    }

    async fn wait_ready(&mut self) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while tokio::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if matches!(self.get("/healthz").await, Some((200, _))) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "the agent did not answer /healthz within 30s:\n{}",
            self.log()
        );
    }

    /// /v1/status once the agent has targets and every one of them has left `unknown`;
    /// panics after `limit`.
    pub async fn decided(&self, limit: Duration) -> Value {
        crate::poll(limit, "every check decided", || async {
            let s = self.status().await;
            let targets = s["targets"].as_array()?;
            (!targets.is_empty() && targets.iter().all(|t| t["state"] != "unknown")).then_some(s)
        })
        .await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// GET a path; None if the agent does not answer within 5 s.
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            telagent::http_client::get(&self.url(path), 64 << 20),
        )
        .await
        .ok()?
        .ok()?;
        Some((r.status, String::from_utf8_lossy(&r.body).into_owned()))
    }

    /// /v1/status as JSON.
    pub async fn status(&self) -> Value {
        let (code, body) = self.get("/v1/status").await.expect("/v1/status answers");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).expect("/v1/status is JSON")
    }

    /// One target of /v1/status.
    pub async fn target(&self, name: &str) -> Option<Value> {
        self.status().await["targets"]
            .as_array()?
            .iter()
            .find(|t| t["name"] == name)
            .cloned()
    }

    /// /metrics text.
    pub async fn metrics(&self) -> String {
        let (code, body) = self.get("/metrics").await.expect("/metrics answers");
        assert_eq!(code, 200);
        body
    }

    /// The audit log, one JSON value per line.
    pub fn audit(&self) -> Vec<Value> {
        let path = self.dir.path().join("state/audit.jsonl");
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("audit line is JSON"))
            .collect()
    }

    /// SIGKILL: the process dies at once, as in a crash.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait; true if it exited by itself within 10 s.
    pub fn stop(&mut self) -> bool {
        crate::stop(&mut self.child, Duration::from_secs(10))
    }

    /// True while the process has not exited.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The exit status after [`Agent::stop`].
    pub fn exit_code(&mut self) -> Option<i32> {
        self.child.try_wait().ok().flatten().and_then(|s| s.code())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("--- agent log ---\n{}", self.log());
        }
    }
}

/// Starts `telagent -v ARGS`, appending its output to `log`.
fn spawn(args: &[std::ffi::OsString], log: &Path, env: &[(String, String)]) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    Command::new(crate::agent_bin())
        .arg("-v")
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("dup"))
        .stderr(log)
        .spawn()
        .expect("cannot start the agent")
}

/// The `[access]` section of a test agent that accepts posts with [`TOKEN`], with the
/// token file written into `dir`.
pub fn token_access(dir: &Path) -> String {
    let file = dir.join("token");
    std::fs::write(&file, format!("{TOKEN}\n")).expect("token file");
    format!("[access]\ntoken_file = \"{}\"\n", file.display())
}

/// The bearer token of [`token_access`].
pub const TOKEN: &str = "test-token-0123456789abcdef";

/// A config: an `[agent]` section for a test agent in `dir` on `port`, then `body`
/// (with `[ports] scan = false` unless `body` has its own `[ports]`).
pub fn config_text(dir: &Path, port: u16, body: &str) -> String {
    let ports = if body.contains("[ports]") {
        ""
    } else {
        "[ports]\nscan = false\n\n"
    };
    format!(
        "[agent]\nserver = \"test\"\nlisten = \"127.0.0.1:{port}\"\nstate_dir = \"{}\"\n\n{ports}{body}",
        dir.join("state").display()
    )
}

/// The value of the first sample of `/metrics` text whose line starts with `series`
/// (a name with its labels as the agent writes them).
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
