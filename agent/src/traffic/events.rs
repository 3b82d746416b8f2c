//! `POST /v1/events`: a JSON batch of message events from any messaging server.
//!
//! ```json
//! {"batch": "mx1-000042",
//!  "events": [{"time": "2026-11-23T10:15:00Z", "direction": "sent", "result": "ok",
//!              "pages": 3, "line": "ttyS0", "duration": 41}]}
//! ```
//!
//! `time` is seconds since the Unix epoch or an RFC 3339 UTC time (default: now);
//! `direction` is `sent` or `received`; `result` is `ok` or `failed`; `line` (or
//! `channel`) names the fax line or channel; `server` defaults to this agent's server.
//! Optional, for the line statistics: `reason` (why it failed: a HylaFAX reason text, a
//! T.32 hangup code `+FHS:NN` or a failure class such as `busy`), `remote` (the number
//! dialled or the remote's CSI/TSI), `rate` (bit/s), `ecm` (true/false),
//! `pages_attempted`, and `kind` (`traffic`, or `canary` for a test fax that the totals
//! leave out). A
//! batch is counted whole or not at all, and only then acknowledged. With a `batch` id, a
//! batch posted again (after a lost answer) is acknowledged as a duplicate and not counted
//! twice: that makes delivery exactly once for a sender that retries until it gets a 200.

use serde::Deserialize;

use super::outcome::{self, Class};
use super::{quality, Detail, Direction, Event};

/// Most events in one batch.
pub const MAX_EVENTS: usize = 100_000;
/// Longest accepted request body.
pub const MAX_BODY: usize = 32 << 20;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Batch {
    #[serde(default)]
    batch: Option<String>,
    events: Vec<EventIn>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum TimeIn {
    Seconds(i64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventIn {
    #[serde(default)]
    time: Option<TimeIn>,
    direction: String,
    result: String,
    #[serde(default)]
    pages: u32,
    #[serde(default, alias = "channel")]
    line: Option<String>,
    /// Seconds on the line.
    #[serde(default)]
    duration: Option<f64>,
    #[serde(default)]
    server: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    remote: Option<String>,
    #[serde(default)]
    rate: Option<u32>,
    #[serde(default)]
    ecm: Option<bool>,
    #[serde(default)]
    pages_attempted: Option<u32>,
    #[serde(default)]
    kind: Option<String>,
}

/// The line of an event that names none.
pub const NO_LINE: &str = "unknown";

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Reads a batch: its id and its events. The error says which event is wrong and why.
pub fn decode(
    body: &[u8],
    default_server: &str,
    now: i64,
) -> Result<(Option<String>, Vec<Event>), String> {
    let example = r#"expected {"batch": "id", "events": [{"time": 1795430000, "direction": "sent", "result": "ok", "pages": 2, "line": "ttyS0"}]}"#;
    let b: Batch = serde_json::from_slice(body).map_err(|e| format!("{e}; {example}"))?;
    if let Some(id) = &b.batch {
        if id.is_empty() || id.len() > 128 {
            return Err("`batch` must be 1 to 128 characters".into());
        }
    }
    if b.events.len() > MAX_EVENTS {
        return Err(format!(
            "{} events in one batch; send at most {MAX_EVENTS} per request",
            b.events.len()
        ));
    }
    let mut out = Vec::with_capacity(b.events.len());
    for (i, e) in b.events.into_iter().enumerate() {
        let bad = |what: String| format!("event {i}: {what}");
        let direction = Direction::parse(&e.direction).ok_or_else(|| {
            bad(format!(
                "direction `{}` is not sent or received",
                e.direction
            ))
        })?;
        let ok = match e.result.as_str() {
            "ok" => true,
            "failed" => false,
            other => return Err(bad(format!("result `{other}` is not ok or failed"))),
        };
        let time = match e.time {
            None => now,
            Some(TimeIn::Seconds(s)) => s,
            // RFC 3339 with `Z` or an offset; a duration ("1h") is not a time here.
            Some(TimeIn::Text(t)) if t.contains('T') || t.contains('t') => {
                super::totals::parse_time(&t, now).map_err(|_| {
                    bad(format!(
                        "time `{t}` is not RFC 3339 such as 2026-11-23T10:15:00Z or 2026-11-23T11:15:00+01:00"
                    ))
                })?
            }
            Some(TimeIn::Text(t)) => {
                return Err(bad(format!(
                    "time `{t}` is not RFC 3339 such as 2026-11-23T10:15:00Z or 2026-11-23T11:15:00+01:00"
                )))
            }
        };
        if time > now + 86400 || time < 0 {
            return Err(bad(format!(
                "time {time} is more than a day ahead of this agent's clock ({now}) or before 1970"
            )));
        }
        let server = e.server.unwrap_or_else(|| default_server.to_string());
        if !crate::vocab::valid_name(&server) {
            return Err(bad(format!(
                "server `{server}` is not 1 to 64 characters of A-Z, a-z, 0-9, '-', '_', '.', ':'"
            )));
        }
        let line = e.line.unwrap_or_else(|| NO_LINE.to_string());
        if line.is_empty() || line.len() > 64 || line.chars().any(char::is_control) {
            return Err(bad("line must be 1 to 64 printable characters".into()));
        }
        let seconds = e.duration.unwrap_or(0.0);
        if !(0.0..=86400.0 * 7.0).contains(&seconds) {
            return Err(bad(format!(
                "duration {seconds} is not 0 to 604800 seconds"
            )));
        }
        let reason = e.reason.unwrap_or_default();
        if reason.len() > 255 || reason.chars().any(char::is_control) {
            return Err(bad(
                "reason must be at most 255 bytes, without control characters".into(),
            ));
        }
        let remote = e.remote.unwrap_or_default();
        if remote.chars().count() > quality::MAX_REMOTE || remote.chars().any(char::is_control) {
            return Err(bad(format!(
                "remote must be at most {} characters, without control characters",
                quality::MAX_REMOTE
            )));
        }
        if let Some(r) = e.rate {
            if !(300..=100_000).contains(&r) {
                return Err(bad(format!("rate {r} is not 300 to 100000 bit/s")));
            }
        }
        if e.pages_attempted.is_some_and(|a| a < e.pages) {
            return Err(bad(format!(
                "pages_attempted {} is less than pages {}",
                e.pages_attempted.unwrap_or(0),
                e.pages
            )));
        }
        let canary = match e.kind.as_deref() {
            None | Some("traffic") => false,
            Some("canary") => true,
            Some(other) => return Err(bad(format!("kind `{other}` is not traffic or canary"))),
        };
        // The result decides success; the reason only says why a failure failed.
        let class = (!ok).then(|| outcome::classify(&reason, None).unwrap_or(Class::Other));
        out.push(Event {
            time,
            server,
            direction,
            ok,
            line,
            pages: e.pages,
            seconds: seconds.round() as u32,
            detail: Detail {
                class,
                remote: quality::clean_remote(&remote),
                rate: e.rate,
                ecm: e.ecm,
                pages_attempted: e.pages_attempted,
                canary,
            },
        });
    }
    Ok((b.batch, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_795_431_600;

    #[test]
    fn a_batch_with_both_time_forms() {
        let body = br#"{"batch": "b1", "events": [
            {"time": 1795431000, "direction": "sent", "result": "ok", "pages": 3, "line": "ttyS0", "duration": 41.4},
            {"time": "2026-11-23T10:15:00Z", "direction": "received", "result": "failed", "channel": "e1-3"},
            {"direction": "sent", "result": "failed", "server": "mx2"}]}"#;
        let (batch, ev) = decode(body, "mx1", NOW).unwrap();
        assert_eq!(batch.as_deref(), Some("b1"));
        let offset = br#"{"events": [{"time": "2026-11-23T11:15:00+01:00", "direction": "sent", "result": "ok"}]}"#;
        assert_eq!(decode(offset, "mx1", NOW).unwrap().1[0].time, 1_795_428_900);
        let e = decode(
            br#"{"events": [{"time": "1h", "direction": "sent", "result": "ok"}]}"#,
            "s",
            NOW,
        )
        .unwrap_err();
        assert!(e.contains("is not RFC 3339"), "{e}");
        assert_eq!((ev[0].pages, ev[0].seconds, ev[0].ok), (3, 41, true));
        assert_eq!((ev[1].time, ev[1].line.as_str()), (1_795_428_900, "e1-3"));
        assert_eq!(
            (ev[2].time, ev[2].server.as_str(), ev[2].line.as_str()),
            (NOW, "mx2", NO_LINE)
        );
    }

    #[test]
    fn line_fields_give_class_rate_and_kind() {
        let body = br#"{"events": [
            {"direction": "sent", "result": "failed", "reason": "Busy signal detected", "remote": "+1 555 0100"},
            {"direction": "sent", "result": "failed", "reason": "+FHS:25", "rate": 9600, "ecm": false, "pages": 1, "pages_attempted": 3},
            {"direction": "sent", "result": "failed"},
            {"direction": "received", "result": "ok", "reason": "busy", "kind": "canary"}]}"#;
        let (_, ev) = decode(body, "s", NOW).unwrap();
        let classes: Vec<_> = ev.iter().map(|e| e.detail.class).collect();
        assert_eq!(
            classes,
            [
                Some(Class::Busy),
                Some(Class::TrainingFailed),
                Some(Class::Other),
                None
            ]
        );
        assert_eq!(ev[0].detail.remote, "+1 555 0100");
        assert_eq!(
            (ev[1].detail.rate, ev[1].pages_attempted()),
            (Some(9600), 3)
        );
        assert!(ev[3].detail.canary && !ev[0].detail.canary);
        for (bad, want) in [
            (r#""rate": 5"#, "rate 5 is not"),
            (
                r#""pages": 2, "pages_attempted": 1"#,
                "pages_attempted 1 is less",
            ),
            (r#""kind": "test""#, "kind `test`"),
            (r#""remote": "a\u0007b""#, "remote must be"),
        ] {
            let body = format!(r#"{{"events": [{{"direction": "sent", "result": "ok", {bad}}}]}}"#);
            let e = decode(body.as_bytes(), "s", NOW).unwrap_err();
            assert!(e.starts_with("event 0: ") && e.contains(want), "{bad}: {e}");
        }
    }

    #[test]
    fn errors_name_the_event_and_the_field() {
        let e = decode(br#"{"events": [{"direction": "sent", "result": "ok"}, {"direction": "out", "result": "ok"}]}"#, "s", NOW).unwrap_err();
        assert_eq!(e, "event 1: direction `out` is not sent or received");
        let e = decode(
            br#"{"events": [{"direction": "sent", "result": "ok", "time": 99999999999}]}"#,
            "s",
            NOW,
        )
        .unwrap_err();
        assert!(
            e.starts_with("event 0: time 99999999999 is more than a day ahead"),
            "{e}"
        );
        let e = decode(
            br#"{"events": [{"direction": "sent", "result": "ok", "callid": "x"}]}"#,
            "s",
            NOW,
        )
        .unwrap_err();
        assert!(e.contains("unknown field `callid`"), "{e}");
        let e = decode(b"{\"events\": [", "s", NOW).unwrap_err();
        assert!(e.contains("expected {\"batch\""), "{e}");
    }
}
