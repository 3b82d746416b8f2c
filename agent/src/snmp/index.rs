//! Stable table indexes: every row name (a check, a server) gets a number the first time
//! it is served, kept in `<state_dir>/snmp-indexes.json` and never given to another name,
//! so a reload that adds or removes a check never renumbers the rows an NMS knows.
//! Numbers are per namespace (`check`, `server`, `traffic`), from 1.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct Indexes {
    path: Option<PathBuf>,
    /// namespace -> name -> number.
    map: Mutex<BTreeMap<String, BTreeMap<String, u32>>>,
}

impl Indexes {
    /// Loads the numbers kept in `state_dir`. A damaged file is moved aside (logged) and
    /// numbering starts again: wrong numbers are worse than new ones.
    pub fn open(state_dir: &Path) -> Indexes {
        let path = state_dir.join("snmp-indexes.json");
        let map = match crate::files::read_text(&path, 16 << 20) {
            Ok(t) => serde_json::from_str(&t).unwrap_or_else(|e| {
                let aside = path.with_extension("json.damaged");
                let _ = std::fs::rename(&path, &aside);
                tracing::warn!(file = %path.display(), moved_to = %aside.display(), error = %e, "The SNMP index file is damaged; it was moved aside and rows are numbered again.");
                BTreeMap::new()
            }),
            Err(_) => BTreeMap::new(),
        };
        Indexes {
            path: Some(path),
            map: Mutex::new(map),
        }
    }

    /// The number of each of `names` in `namespace`, giving new names the next free
    /// numbers (in the order given) and keeping them on disk.
    pub fn of<'a>(
        &self,
        namespace: &str,
        names: impl IntoIterator<Item = &'a str>,
    ) -> BTreeMap<String, u32> {
        let mut all = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let space = all.entry(namespace.to_string()).or_default();
        let mut added = false;
        let mut out = BTreeMap::new();
        for name in names {
            let next = space.values().max().copied().unwrap_or(0) + 1;
            let n = *space.entry(name.to_string()).or_insert_with(|| {
                added = true;
                next
            });
            out.insert(name.to_string(), n);
        }
        if added {
            if let Some(path) = &self.path {
                if let Err(e) = save(path, &all) {
                    tracing::warn!(file = %path.display(), error = %e, "Cannot keep the SNMP row numbers; they hold until the agent restarts.");
                }
            }
        }
        out
    }
}

fn save(path: &Path, map: &BTreeMap<String, BTreeMap<String, u32>>) -> std::io::Result<()> {
    crate::files::write_durably(
        path,
        serde_json::to_string(map).unwrap_or_default().as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_kept_never_reused_and_survive_a_restart() {
        let dir = std::env::temp_dir().join(format!("telagent-index-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let i = Indexes::open(&dir);
        let first = i.of("check", ["smtp", "line1", "queue"]);
        assert_eq!(first["smtp"], 1);
        assert_eq!(first["queue"], 3);
        // A reload adds a check named before the others and removes one.
        let again = i.of("check", ["a-new-one", "smtp", "queue"]);
        assert_eq!(
            (again["smtp"], again["queue"], again["a-new-one"]),
            (1, 3, 4)
        );
        drop(i);
        let i = Indexes::open(&dir);
        assert_eq!(
            i.of("check", ["line1"])["line1"],
            2,
            "kept across a restart"
        );
        assert_eq!(i.of("server", ["fax1"])["fax1"], 1, "namespaces are apart");
        std::fs::write(dir.join("snmp-indexes.json"), "{not json").unwrap();
        let i = Indexes::open(&dir);
        assert_eq!(i.of("check", ["queue"])["queue"], 1);
        assert!(dir.join("snmp-indexes.json.damaged").exists());
        let _ = std::fs::remove_dir_all(dir);
    }
}
