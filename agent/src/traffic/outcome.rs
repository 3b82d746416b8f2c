//! What became of a fax attempt: its failure class, signalling rate and ECM use.
//!
//! Failure classes are a fixed set, mapped from HylaFAX's reason texts (the `reason`
//! field of xferfaxlog, written by faxsend and faxgetty), from T.32 / Class 2 hangup codes
//! (`+FHS:NN`, `+FHNG:NN`, decimal) and from a class name given as it is. The mapping
//! table is in the README ("Failure classes"). Only the first part of a combined reason
//! counts (`Busy signal detected; too many attempts to dial` is `busy`).
//!
//! Judgement calls, beyond the class definitions:
//! - "No response to PPS/MPS/EOP/EOM/PPM/EOR/CTC/RR/RNR": these are post-page commands;
//!   unanswered, the page was never confirmed: `transfer_failed`, not `timeout`.
//! - "No carrier detected" with nothing on the line (conntime 0:00:00) is `no_answer`: a
//!   fax modem reports a call nobody answered as NO CARRIER once its wait ends (V.250
//!   S7); with time on the line the far end answered without fax tones: `no_carrier`.

use serde::{Deserialize, Serialize};

/// Why an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    Busy,
    NoAnswer,
    NoCarrier,
    NoDialtone,
    TrainingFailed,
    TransferFailed,
    RemoteHangup,
    Timeout,
    Other,
}

/// Every class, in the order of the README's table.
pub const CLASSES: [Class; 9] = [
    Class::Busy,
    Class::NoAnswer,
    Class::NoCarrier,
    Class::NoDialtone,
    Class::TrainingFailed,
    Class::TransferFailed,
    Class::RemoteHangup,
    Class::Timeout,
    Class::Other,
];

impl Class {
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Busy => "busy",
            Class::NoAnswer => "no_answer",
            Class::NoCarrier => "no_carrier",
            Class::NoDialtone => "no_dialtone",
            Class::TrainingFailed => "training_failed",
            Class::TransferFailed => "transfer_failed",
            Class::RemoteHangup => "remote_hangup",
            Class::Timeout => "timeout",
            Class::Other => "other",
        }
    }

    /// A failure before any fax signalling: the call never reached training, so it has no
    /// negotiated rate.
    pub fn before_training(self) -> bool {
        matches!(
            self,
            Class::Busy | Class::NoAnswer | Class::NoCarrier | Class::NoDialtone
        )
    }

    pub fn parse(s: &str) -> Option<Class> {
        CLASSES.iter().copied().find(|c| c.as_str() == s)
    }
}

/// Text rules, tried in order on the lowercased first part of a reason: the first rule
/// with a matching fragment decides.
const RULES: &[(&[&str], Class)] = &[
    (&["busy"], Class::Busy),
    (
        &["dialtone", "dial tone", "loop current"],
        Class::NoDialtone,
    ),
    (&["unable to transmit page"], Class::TransferFailed),
    // Local faults: the modem, the document or the operator, not the call.
    (
        &[
            "modem command failed",
            "modem protocol",
            "modem does not support document",
            "but modem does not support",
            "on hook",
            "operator intervention",
            "aborted",
            "can not open",
            "can not lock",
            "can not set",
            "cannot open",
            "unable to open",
            "unable to configure",
            "unable to set session",
            "unable to setup",
            "unable to send password",
            "unable to request polling",
            "problem reading",
            "not in a group 3",
            "batching protocol",
            "permission denied",
            "procedure interrupt",
            "page count exceeded",
            "no document to poll",
            "call rejected",
            "glare",
            "blacklisted",
            "invalid dialing",
            "silence",
            "v.21 transmission carrier",
            "xon",
            "unknown problem",
            "unknown hangup",
        ],
        Class::Other,
    ),
    (
        &[
            "no response to pps",
            "no response to mps",
            "no response to eop",
            "no response to eom",
            "no response to ppm",
            "no response to eor",
            "no response to ctc",
            "no response to rr",
            "no response to rnr",
        ],
        Class::TransferFailed,
    ),
    (&["ringback detected, no answer (timeout)"], Class::NoAnswer),
    (&["ringback"], Class::NoCarrier),
    // "Unspecified ... Phase X error, including ... timeout": the phase decides.
    (&["phase c error", "phase d error"], Class::TransferFailed),
    (&["phase b error"], Class::TrainingFailed),
    (&["timeout", "timer", "time out"], Class::Timeout),
    (&["no answer"], Class::NoAnswer),
    (
        &[
            "no carrier",
            "ringback",
            "ring detect",
            "phase a",
            "wanted fax",
        ],
        Class::NoCarrier,
    ),
    (
        &[
            "disconnected prematurely",
            "dcn",
            "got eot",
            "premature v.34 termination",
            "normal and proper end",
            "hung up",
        ],
        Class::RemoteHangup,
    ),
    // What the remote cannot take is a failed negotiation, whatever it is about.
    (
        &[
            "not supported by client",
            "client does not support",
            "expecting dis",
        ],
        Class::TrainingFailed,
    ),
    (
        &[
            "rtn",
            "page",
            "phase c",
            "phase d",
            "phase b/c",
            "ecm",
            "ppr",
            "image",
            "eol",
            "crc",
            "data carrier",
            "message carrier",
            "v.34",
            "underflow",
            "overflow",
            "protocol error",
            "comrec invalid response",
            "comrec invalid partial",
            "invalid response to",
            "pin or pip",
            "transparent data",
            "ctc",
            "after dis/dtc",
        ],
        Class::TransferFailed,
    ),
    (
        &[
            "train",
            "dcs",
            "dis/dtc",
            "dis or dtc",
            "phase b",
            "t.4 receiver",
            "cannot be polled",
            "cannot receive",
            "cannot send",
            "does not support",
            "rsprec invalid",
            "comrec error",
        ],
        Class::TrainingFailed,
    ),
];

/// The class of a failed attempt's reason; `None` when the reason says success (empty,
/// `+FHS:00`). `connected`: whether the call had time on the line, when known.
pub fn classify(reason: &str, connected: Option<bool>) -> Option<Class> {
    let first = reason.split("; ").next().unwrap_or("").trim();
    if first.is_empty() {
        return None;
    }
    if let Some(c) = Class::parse(first) {
        return Some(c);
    }
    if let Some(code) = hangup_code(first) {
        return hangup_class(code);
    }
    let l = first.to_ascii_lowercase();
    let class = RULES
        .iter()
        .find(|(frags, _)| frags.iter().any(|f| l.contains(f)))
        .map_or(Class::Other, |(_, c)| *c);
    Some(match (class, connected) {
        (Class::NoCarrier, Some(false)) if l.starts_with("no carrier") => Class::NoAnswer,
        _ => class,
    })
}

/// `+FHS:NN`, `+FHNG:NN` (or without the `+`): the decimal hangup code.
fn hangup_code(s: &str) -> Option<u32> {
    let s = s.strip_prefix('+').unwrap_or(s);
    let upper = s.to_ascii_uppercase();
    let digits = upper
        .strip_prefix("FHS:")
        .or_else(|| upper.strip_prefix("FHNG:"))?;
    let digits = digits.trim();
    if digits.is_empty() || digits.len() > 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// T.32 (Class 2.0) / EIA-592 (Class 2) hangup codes by their meaning: call placement
/// (0-9), transmit phases A-D (10-69), receive phases B-D (70-119), the DTE/DCE
/// interface (120-...).
fn hangup_class(code: u32) -> Option<Class> {
    Some(match code {
        0 => return None,
        1 | 5 | 10 => Class::NoCarrier,
        2 => Class::Other,
        3 => Class::NoDialtone,
        4 => Class::NoAnswer,
        11 => Class::Timeout,
        20..=39 | 70..=72 => Class::TrainingFailed,
        52 | 54 | 56 | 73 | 74 => Class::Timeout,
        40..=69 | 90..=119 => Class::TransferFailed,
        _ => Class::Other,
    })
}

/// Signalling rates by HylaFAX's rate index (BR_2400 ... BR_33600).
const RATES: [u32; 14] = [
    2400, 4800, 7200, 9600, 12000, 14400, 16800, 19200, 21600, 24000, 26400, 28800, 31200, 33600,
];

/// The signalling rate (bit/s, `None` for an undefined index) and ECM use packed in
/// xferfaxlog's `params`: with bit 21 set (HylaFAX 4.2 on), the rate index is bits 3-6
/// and ECM bit 16; before, the rate index is bits 1-3 and ECM bit 11.
pub fn decode_params(v: u32) -> (Option<u32>, bool) {
    let (index, ecm) = if v >> 21 == 1 {
        ((v >> 3) & 15, (v >> 16) & 1 == 1)
    } else {
        ((v >> 1) & 7, (v >> 11) & 1 == 1)
    };
    (RATES.get(index as usize).copied(), ecm)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(name: &str) -> Vec<Vec<String>> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/peers/fax-reasons")
            .join(name);
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .lines()
            .skip(1)
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.split('\t').map(str::to_string).collect())
            .collect()
    }

    /// Rows of the independent data set (tests/peers/fax-reasons, written from HylaFAX's
    /// sources and T.32 without this code) where telagent decides otherwise on purpose:
    /// see adjudicated.tsv for why.
    fn adjudicated() -> Vec<(String, String)> {
        data("adjudicated.tsv")
            .into_iter()
            .map(|r| (r[0].clone(), r[1].clone()))
            .collect()
    }

    #[test]
    fn every_reason_of_the_data_set_gets_its_class() {
        let overrides = adjudicated();
        let mut wrong = Vec::new();
        let rows = data("reasons.tsv");
        assert!(rows.len() > 200, "{} rows", rows.len());
        for r in &rows {
            let (reason, mut want) = (r[0].as_str(), r[1].as_str());
            if let Some((_, c)) = overrides
                .iter()
                .find(|(p, _)| reason.starts_with(p.as_str()))
            {
                want = c;
            }
            let got = classify(reason, None).map_or("ok", Class::as_str);
            if got != want {
                wrong.push(format!("{reason:?}: {got}, data set says {want}"));
            }
        }
        assert!(
            wrong.is_empty(),
            "{} of {}:\n{}",
            wrong.len(),
            rows.len(),
            wrong.join("\n")
        );
        // Every adjudication is used: none hides a row that now agrees.
        for (p, _) in &overrides {
            assert!(rows.iter().any(|r| r[0].starts_with(p.as_str())), "{p}");
        }
    }

    #[test]
    fn params_decode_as_the_data_set_says() {
        let rows = data("params.tsv");
        assert!(rows.len() >= 30);
        for r in rows {
            let v: u32 = r[0].parse().unwrap();
            let want_rate = (r[1] != "-").then(|| r[1].parse::<u32>().unwrap());
            let want_ecm = r[2] == "true";
            let (rate, ecm) = decode_params(v);
            assert_eq!(rate, want_rate, "{v}: {}", r[3]);
            if want_rate.is_some() {
                assert_eq!(ecm, want_ecm, "{v}: {}", r[3]);
            }
        }
        // What the lab's HylaFAX 6.0.7 wrote for a V.17 ECM MMR page.
        assert_eq!(decode_params(2_220_072), (Some(14400), true));
    }

    #[test]
    fn a_call_nobody_answered_is_no_answer() {
        let r = "No carrier detected; too many attempts to dial";
        assert_eq!(classify(r, Some(false)), Some(Class::NoAnswer));
        assert_eq!(classify(r, Some(true)), Some(Class::NoCarrier));
        assert_eq!(classify(r, None), Some(Class::NoCarrier));
        assert_eq!(classify("", Some(false)), None);
        assert_eq!(classify("+FHS:00", None), None);
        assert_eq!(classify("busy", None), Some(Class::Busy));
        assert_eq!(classify("fhng:4", None), Some(Class::NoAnswer));
    }

    /// Seeded: any text (legal reasons cut, joined and mangled, and garbage) gets exactly
    /// one class or success, success only for an empty first part or hangup code 0.
    #[test]
    fn any_text_gets_one_answer() {
        let rows = data("reasons.tsv");
        let mut rng = crate::testing::Lcg(22);
        for _ in 0..5000 {
            let base = &rows[rng.below(rows.len())][0];
            let text: String = match rng.below(4) {
                0 => base.clone(),
                1 => base.chars().take(rng.below(base.len() + 1)).collect(),
                2 => format!("; {base}"),
                _ => (0..rng.below(40))
                    .map(|_| rng.below(256) as u8 as char)
                    .collect(),
            };
            let got = classify(&text, Some(rng.below(2) == 0));
            let first = text.split("; ").next().unwrap_or("").trim();
            if got.is_none() {
                assert!(
                    first.is_empty() || hangup_code(first) == Some(0),
                    "{text:?} taken as success"
                );
            }
        }
    }
}
