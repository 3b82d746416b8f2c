//! telagent: the monitoring agent of fax and messaging servers.
//!
//! # Layout
//!
//! - [`config`]: the typed TOML configuration, its defaults and its validation; every
//!   error names file, line and key.
//! - [`checks`]: one module per check kind (`tcp`, `http`, `command`, `modem`), each
//!   implementing [`checks::Check`]: one attempt, one [`checks::Observation`].
//! - [`engine`]: the scheduler (intervals, phase, timeouts, concurrency), the tracker
//!   (rise / fall / hold: the only place that decides state), the live model every output
//!   reads, and the bus of transition events.
//! - [`metrics`]: Prometheus exposition rendered from the model.
//! - [`api`]: the HTTP endpoints (`/`, `/metrics`, `/healthz`, `/v1/*`).
//! - [`page`]: the status page served at `/`.
//! - [`discovery`]: what the host runs (HylaFAX, SIP listeners, snmpd's AgentX socket),
//!   found passively and merged into the config as checks.
//! - [`audit`]: the JSON-lines audit trail of transitions.
//! - [`serial`]: the serial-port inventory, UUCP locks, the AT conversation, HylaFAX
//!   status files.
//! - [`routing`]: server states (own and peers), routes per group, and the outputs to the
//!   routing layer (HAProxy agent-check, Kamailio dispatcher, hook, HylaFAX `faxstate`).
//! - [`traffic`]: traffic accounting: the SQLite store, the xferfaxlog tail, posted
//!   events, totals.
//! - [`notify`]: SNMP notifications (v2c / v3 traps and informs) through a durable outbox.
//! - [`snmp`]: SNMP polling client, BER codec, TELAGENT-MIB's OIDs.
//! - [`access`]: bearer token and caller allowlist.
//! - [`systemd`]: READY, RELOADING, STOPPING and WATCHDOG for `Type=notify`.
//! - [`fuzz`]: one entry point per parser of outside input (fuzz targets, corpus replay).
//! - [`agent`]: the running agent: startup, signals, reload, shutdown.
//! - [`cli`]: one module per subcommand.
//! - [`net`], [`http_client`], [`dns`]: outbound connections with typed errors, SRV lookups.

pub mod access;
pub mod agent;
pub mod api;
pub mod audit;
pub mod checks;
pub mod cli;
pub mod config;
pub mod discovery;
pub mod dns;
pub mod engine;
pub mod faxstate;
pub mod files;
pub mod fuzz;
pub mod http_client;
pub mod metrics;
pub mod net;
pub mod notify;
pub mod page;
pub mod routing;
pub mod serial;
pub mod snmp;
pub mod systemd;
#[cfg(test)]
mod testing;
pub mod traffic;
pub mod vocab;
