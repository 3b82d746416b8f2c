//! Which serial ports this host has, and who holds each, read from sysfs and the UUCP lock
//! directory. Passive: no port is opened (opening a tty raises DTR, which can reset a
//! modem or disturb a fax in progress). Besides what sysfs lists, the ports that a modem
//! check names (a pty, iaxmodem's `ttyIAX0`) and that a lock file names are listed too.

use std::path::Path;

use std::sync::RwLock;

use serde::{Deserialize, Serialize};

use super::lock::{self, LockInfo};

/// The ports found by the last scan, for /metrics and /v1/status.
#[derive(Debug, Default)]
pub struct Inventory(RwLock<Vec<PortInfo>>);

impl Inventory {
    pub fn set(&self, ports: Vec<PortInfo>) {
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = ports;
    }

    pub fn ports(&self) -> Vec<PortInfo> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// A serial port present on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortInfo {
    /// Device name (`ttyS0`, `ttyUSB0`): the `port` label.
    pub name: String,
    /// Device node (`/dev/ttyS0`).
    pub path: String,
    /// Kernel driver (`serial8250`, `ftdi_sio`, `cdc_acm`, ...).
    pub driver: String,
    /// The UUCP lock, if any program holds (or held) one.
    pub lock: Option<LockInfo>,
}

/// A port that sysfs may not list, named by a modem check: its lock name, device path
/// and lock directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    pub name: String,
    pub path: std::path::PathBuf,
    pub lock_dir: std::path::PathBuf,
}

/// Lists the serial ports under `sys_class_tty` (normally /sys/class/tty): entries backed
/// by a device, minus the 8250 placeholders with no UART behind them (`type` 0); then the
/// `named` ports and the devices of `lock_dir`'s lock files that sysfs did not list.
pub fn scan(sys_class_tty: &Path, dev: &Path, lock_dir: &Path, named: &[Named]) -> Vec<PortInfo> {
    let mut ports = from_sysfs(sys_class_tty, dev, lock_dir);
    let locked = std::fs::read_dir(lock_dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| {
                    e.file_name()
                        .to_str()?
                        .strip_prefix("LCK..")
                        .map(str::to_string)
                })
                .filter(|n| !n.is_empty() && !n.contains('/'))
                .map(|name| Named {
                    path: dev.join(&name),
                    name,
                    lock_dir: lock_dir.to_path_buf(),
                })
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    for n in named.iter().chain(&locked) {
        let path = n.path.display().to_string();
        if ports.iter().any(|p| p.path == path) {
            continue;
        }
        let real = std::fs::canonicalize(&n.path).ok();
        let driver = match &real {
            Some(r) if r.starts_with("/dev/pts") => "pty",
            Some(_) => "unknown",
            None => "missing",
        };
        ports.push(PortInfo {
            name: n.name.clone(),
            path,
            driver: driver.into(),
            lock: lock::read(&n.lock_dir, &n.name),
        });
    }
    ports.sort_by(|a, b| a.name.cmp(&b.name));
    ports
}

fn from_sysfs(sys_class_tty: &Path, dev: &Path, lock_dir: &Path) -> Vec<PortInfo> {
    let Ok(entries) = std::fs::read_dir(sys_class_tty) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let base = e.path();
            let driver = std::fs::read_link(base.join("device/driver")).ok()?;
            let driver = driver.file_name()?.to_str()?.to_string();
            let uart_type = std::fs::read_to_string(base.join("type")).ok();
            if uart_type.is_some_and(|t| t.trim() == "0") {
                return None;
            }
            Some(PortInfo {
                path: dev.join(&name).display().to_string(),
                lock: lock::read(lock_dir, &name),
                name,
                driver,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn lists_real_ports_and_their_locks() {
        let root = std::env::temp_dir().join(format!("telagent-inv-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let tty = root.join("class/tty");
        let drivers = root.join("drivers");
        let locks = root.join("lock");
        for d in [
            &tty,
            &drivers.join("serial8250"),
            &drivers.join("ftdi_sio"),
            &locks,
        ] {
            std::fs::create_dir_all(d).unwrap();
        }
        let add = |name: &str, driver: Option<&str>, uart_type: Option<&str>| {
            let dir = tty.join(name);
            std::fs::create_dir_all(dir.join("device")).unwrap();
            if let Some(d) = driver {
                symlink(drivers.join(d), dir.join("device/driver")).unwrap();
            }
            if let Some(t) = uart_type {
                std::fs::write(dir.join("type"), t).unwrap();
            }
        };
        add("ttyS0", Some("serial8250"), Some("4\n"));
        add("ttyS1", Some("serial8250"), Some("0\n")); // placeholder, no UART
        add("ttyUSB0", Some("ftdi_sio"), None);
        add("tty1", None, None); // virtual console: no driver link
        std::fs::write(
            locks.join("LCK..ttyUSB0"),
            format!("{:>10}\n", std::process::id()),
        )
        .unwrap();

        // A soft modem's pty, named by a modem check, and a lock naming a device that is gone.
        let pty = root.join("ttyIAX0");
        symlink("/dev/ptmx", &pty).unwrap();
        std::fs::write(locks.join("LCK..ttyGONE"), format!("{:>10}\n", 999_999_999)).unwrap();
        let named = [Named {
            name: "ttyIAX0".into(),
            path: pty.clone(),
            lock_dir: locks.clone(),
        }];
        let ports = scan(&tty, Path::new("/dev"), &locks, &named);
        let names: Vec<_> = ports.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["ttyGONE", "ttyIAX0", "ttyS0", "ttyUSB0"]);
        assert_eq!(ports[0].driver, "missing");
        assert!(ports[0].lock.as_ref().unwrap().stale);
        assert_eq!(ports[1].path, pty.display().to_string());
        let ports = &ports[2..];
        assert_eq!(ports[0].driver, "serial8250");
        assert_eq!(ports[0].path, "/dev/ttyS0");
        assert_eq!(ports[0].lock, None);
        let lock = ports[1].lock.as_ref().unwrap();
        assert_eq!(
            (lock.pid, lock.stale),
            (Some(std::process::id() as i32), false)
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}
