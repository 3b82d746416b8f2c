//! TELAGENT-MIB (mibs/TELAGENT-MIB.txt) as the code uses it: the enterprise arc, every
//! object and notification with its OID and syntax. A test in tests/ checks each one
//! against the MIB file through net-snmp's snmptranslate.

/// Placeholder enterprise arc (enterprises.99847) until IANA assigns a Private Enterprise
/// Number; the MIB declares the same arc in its MODULE-IDENTITY.
pub const ENTERPRISE: [u32; 7] = [1, 3, 6, 1, 4, 1, 99847];

/// sysUpTime.0 and snmpTrapOID.0 (SNMPv2-MIB), the first two varbinds of a notification.
pub const SYS_UP_TIME: [u32; 9] = [1, 3, 6, 1, 2, 1, 1, 3, 0];
pub const SNMP_TRAP_OID: [u32; 11] = [1, 3, 6, 1, 6, 3, 1, 1, 4, 1, 0];

/// The syntax of an object, as the MIB declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    DisplayString,
    /// TelagentState: unknown(1), up(2), degraded(3), down(4).
    State,
    /// TelagentSeverity: cleared(1), info(2), warning(3), critical(4).
    Severity,
    /// DateAndTime (SNMPv2-TC).
    DateAndTime,
    Integer32,
    Unsigned32,
    Gauge32,
    Counter64,
    TruthValue,
    Notification,
}

/// One object or notification of the MIB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Def {
    pub name: &'static str,
    pub oid: Vec<u32>,
    pub syntax: Syntax,
}

fn under(arcs: &[u32]) -> Vec<u32> {
    let mut o = ENTERPRISE.to_vec();
    o.extend_from_slice(arcs);
    o
}

/// A table: its entry OID and its columns (number, name, syntax); column 1 is the index.
pub struct Table {
    pub entry: Vec<u32>,
    pub columns: &'static [(u32, &'static str, Syntax)],
}

use Syntax::*;

pub fn server_table() -> Table {
    Table {
        entry: under(&[1, 2, 1]),
        columns: &[
            (2, "telagentServerName", DisplayString),
            (3, "telagentServerState", State),
            (4, "telagentServerReason", DisplayString),
            (5, "telagentServerLastActive", Unsigned32),
            (6, "telagentServerCapacity", Integer32),
        ],
    }
}

pub fn check_table() -> Table {
    Table {
        entry: under(&[1, 3, 1]),
        columns: &[
            (2, "telagentCheckName", DisplayString),
            (3, "telagentCheckKind", DisplayString),
            (4, "telagentCheckState", State),
            (5, "telagentCheckDetail", DisplayString),
            (6, "telagentCheckLastProbe", Unsigned32),
        ],
    }
}

pub fn line_table() -> Table {
    Table {
        entry: under(&[1, 4, 1]),
        columns: &[
            (2, "telagentLineName", DisplayString),
            (3, "telagentLineState", State),
            (4, "telagentLineManufacturer", DisplayString),
            (5, "telagentLineModel", DisplayString),
            (6, "telagentLineLastProbe", Unsigned32),
        ],
    }
}

pub fn gateway_table() -> Table {
    Table {
        entry: under(&[1, 5, 1]),
        columns: &[
            (2, "telagentGatewayName", DisplayString),
            (3, "telagentGatewayState", State),
            (4, "telagentGatewayChannels", Gauge32),
            (5, "telagentGatewayIdle", Gauge32),
            (6, "telagentGatewayBusy", Gauge32),
            (7, "telagentGatewayOutOfService", Gauge32),
            (8, "telagentGatewayTrunkAlarm", TruthValue),
        ],
    }
}

pub fn queue_table() -> Table {
    Table {
        entry: under(&[1, 6, 1]),
        columns: &[
            (2, "telagentQueueName", DisplayString),
            (3, "telagentQueueState", State),
            (4, "telagentQueueDepth", Gauge32),
            (5, "telagentQueueOldestAge", Gauge32),
        ],
    }
}

pub fn traffic_table() -> Table {
    Table {
        entry: under(&[1, 7, 1]),
        columns: &[
            (2, "telagentTrafficServer", DisplayString),
            (3, "telagentTrafficSent", Counter64),
            (4, "telagentTrafficFailed", Counter64),
            (5, "telagentTrafficReceived", Counter64),
            (6, "telagentTrafficReceiveFailed", Counter64),
            (7, "telagentTrafficPagesSent", Counter64),
            (8, "telagentTrafficPagesReceived", Counter64),
        ],
    }
}

pub fn tables() -> Vec<Table> {
    vec![
        server_table(),
        check_table(),
        line_table(),
        gateway_table(),
        queue_table(),
        traffic_table(),
    ]
}

/// Scalars of the agent: version and server (`.0` instances).
pub fn agent_version() -> Vec<u32> {
    under(&[1, 1, 1])
}
pub fn agent_server() -> Vec<u32> {
    under(&[1, 1, 2])
}

/// The objects of notifications: the first five in every one, then the suppressed count
/// of a storm summary, the event's time, sequence number and kind (in every one), and the
/// count of a dropped-notifications report.
pub const NOTIFY_OBJECTS: [(u32, &str, Syntax); 10] = [
    (1, "telagentNotifyTarget", DisplayString),
    (2, "telagentNotifyState", State),
    (3, "telagentNotifyReason", DisplayString),
    (4, "telagentNotifySeverity", Severity),
    (5, "telagentNotifyServer", DisplayString),
    (6, "telagentNotifySuppressed", Unsigned32),
    (7, "telagentNotifyTime", DateAndTime),
    (8, "telagentNotifySequence", Counter64),
    (9, "telagentNotifyKind", DisplayString),
    (10, "telagentNotifyDropped", Unsigned32),
];

/// The instance OID (`.0`) of a notification object.
pub fn notify_object(n: u32) -> Vec<u32> {
    under(&[1, 8, n, 0])
}

/// Notification types: (number under telagentNotifications, MIB name).
pub const NOTIFICATIONS: [(u32, &str); 20] = [
    (1, "telagentServerDown"),
    (2, "telagentServerUp"),
    (3, "telagentServerDrain"),
    (4, "telagentServerInactive"),
    (5, "telagentLineDown"),
    (6, "telagentLineUp"),
    (7, "telagentGatewayChannelsExhausted"),
    (8, "telagentGatewayChannelsRestored"),
    (9, "telagentTrunkAlarm"),
    (10, "telagentTrunkClear"),
    (11, "telagentQueueHigh"),
    (12, "telagentQueueNormal"),
    (13, "telagentAgentStart"),
    (14, "telagentAgentStop"),
    (15, "telagentCheckDown"),
    (16, "telagentCheckUp"),
    (17, "telagentNotificationsSuppressed"),
    (18, "telagentNotificationsDropped"),
    (19, "telagentLineQualityLow"),
    (20, "telagentLineQualityOk"),
];

pub fn notification_oid(n: u32) -> Vec<u32> {
    under(&[0, n])
}

/// Every object and notification the code sends or serves.
pub fn defs() -> Vec<Def> {
    let mut out = vec![
        Def {
            name: "telagentAgentVersion",
            oid: agent_version(),
            syntax: DisplayString,
        },
        Def {
            name: "telagentAgentServer",
            oid: agent_server(),
            syntax: DisplayString,
        },
    ];
    for t in tables() {
        for (col, name, syntax) in t.columns {
            let mut oid = t.entry.clone();
            oid.push(*col);
            out.push(Def {
                name,
                oid,
                syntax: *syntax,
            });
        }
    }
    for (n, name, syntax) in NOTIFY_OBJECTS {
        out.push(Def {
            name,
            oid: under(&[1, 8, n]),
            syntax,
        });
    }
    for (n, name) in NOTIFICATIONS {
        out.push(Def {
            name,
            oid: notification_oid(n),
            syntax: Notification,
        });
    }
    out
}
