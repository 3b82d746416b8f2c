//! A real PostgreSQL server (Debian's package) in a temp dir on a free loopback port.
//!
//! initdb and postgres refuse to run as root: as root, the data directory is given to the
//! `postgres` user and both run under `setpriv`. Trust authentication on 127.0.0.1 only.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

pub struct Postgres {
    pub dir: TempDir,
    pub port: u16,
    child: Option<Child>,
}

/// The directory of the server binaries (`/usr/lib/postgresql/15/bin`).
fn bin_dir() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed (apt-get install postgresql)")
        .filter_map(Result::ok)
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").is_file())
        .collect();
    found.sort();
    found
        .pop()
        .expect("no /usr/lib/postgresql/*/bin/initdb; apt-get install postgresql")
}

/// A command run as the `postgres` user when this process is root.
fn as_postgres(program: PathBuf) -> Command {
    // SAFETY: geteuid has no arguments and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--clear-groups",
            "--",
        ])
        .arg(program);
        c
    } else {
        Command::new(program)
    }
}

impl Postgres {
    /// initdb, start, and wait until it accepts connections.
    pub async fn start() -> Postgres {
        let dir = tempfile::Builder::new()
            .prefix("telagent-pg-")
            .tempdir()
            .expect("tempdir");
        // SAFETY: geteuid has no arguments and cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("chown")
                .success();
            assert!(ok, "cannot give {} to postgres", dir.path().display());
        }
        let data = dir.path().join("data");
        let out = as_postgres(bin_dir().join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&data)
            .output()
            .expect("initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = crate::free_port();
        let log = std::fs::File::create(dir.path().join("postgres.log")).expect("log");
        let child = as_postgres(bin_dir().join("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-k"])
            .arg(dir.path())
            .args(["-c", "fsync=off"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .expect("postgres");
        let pg = Postgres {
            dir,
            port,
            child: Some(child),
        };
        crate::poll(
            Duration::from_secs(30),
            "PostgreSQL accepting connections",
            || async { pg.psql("SELECT 1").ok() },
        )
        .await;
        pg
    }

    /// `postgresql://postgres@127.0.0.1:PORT/postgres`
    pub fn url(&self) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Runs SQL through psql; the output (unaligned, tuples only) or the error.
    pub fn psql(&self, sql: &str) -> Result<String, String> {
        let out = Command::new("psql")
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                &self.url(),
                "-c",
                sql,
            ])
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    /// Fast shutdown (SIGINT: clients are disconnected), waiting for the process to exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            crate::signal(c.id(), libc::SIGINT);
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}
