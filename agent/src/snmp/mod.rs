//! SNMP: the polling client used by the `gateway` check, the BER codec of the messages
//! this agent sends, the User-based Security Model of its v3 notifications (`usm`),
//! TELAGENT-MIB as the code uses it, and the AgentX subagent serving it (`agentx`, with
//! the MIB's objects built by `view`).

pub mod agentx;
pub mod ber;
pub mod client;
pub mod index;
pub mod mib;
pub mod usm;
pub mod view;

/// `[snmp]`: TELAGENT-MIB served through an AgentX master (net-snmp's snmpd).
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnmpConfig {
    /// The master's AgentX socket: `tcp:127.0.0.1:705` or `/var/agentx/master`; unset, no
    /// subagent runs.
    #[serde(default)]
    pub agentx: Option<String>,
}

impl SnmpConfig {
    pub fn validate(&self) -> Result<(), (String, String)> {
        match &self.agentx {
            Some(a) => agentx::Address::parse(a)
                .map(|_| ())
                .map_err(|e| ("snmp.agentx".into(), e)),
            None => Ok(()),
        }
    }
}
