//! `telagent check-config [FILE]`

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::config;

pub fn run(file: Option<PathBuf>) -> ExitCode {
    let source = config::resolve_source(file.as_deref());
    let loaded = config::load(&source)
        .map_err(|e| e.to_string())
        .and_then(|c| {
            crate::access::Access::load(&c.access).map_err(|e| format!("{source}: {e}"))?;
            Ok(c)
        });
    match loaded {
        Ok(c) => {
            let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
            for (_, spec) in c.checks() {
                *kinds.entry(spec.kind()).or_default() += 1;
            }
            let summary: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
            println!(
                "{source}: ok, server {}, {} checks{}",
                c.agent.server,
                c.checks().len(),
                if summary.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", summary.join(", "))
                }
            );
            // Which lock directory protects each line: a wrong one lets a probe take a
            // modem from the fax server.
            for (_, spec) in c.checks() {
                if let crate::checks::CheckSpec::Modem(m) = spec {
                    println!(
                        "  modem {}: {}, UUCP locks in {}{}",
                        m.name,
                        m.port,
                        m.lock_dir.unwrap_or_default().display(),
                        if m.passive {
                            " (passive: never opened)"
                        } else {
                            ""
                        }
                    );
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
