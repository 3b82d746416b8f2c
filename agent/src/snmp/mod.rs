//! SNMP: the polling client used by the `gateway` check, the BER codec of the messages
//! this agent sends, and TELAGENT-MIB as the code uses it.

pub mod ber;
pub mod client;
pub mod mib;
