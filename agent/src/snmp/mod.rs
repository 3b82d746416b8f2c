//! SNMP: the polling client used by the `gateway` check.

pub mod client;
