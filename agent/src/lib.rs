//! telagent: the monitoring agent of fax and messaging servers.
//!
//! The layout of the code (which module does what, and in which direction data flows) and
//! how to add a check kind or an output are in README.md, section "Development".

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
pub mod faults;
pub mod faxstate;
pub mod files;
pub mod fuzz;
pub mod http_client;
pub mod http_server;
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
pub mod tls;
pub mod traffic;
pub mod vocab;
