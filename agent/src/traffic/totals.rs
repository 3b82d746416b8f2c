//! Traffic totals: the query (`GET /v1/totals`), its rows, and the report `telagent totals`
//! prints as a table, JSON or CSV.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::Direction;

/// How rows are split beside the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Line,
    Hour,
}

/// A totals request: `[since, until)` in seconds since the Unix epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Query {
    pub since: i64,
    pub until: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<Split>,
}

/// Traffic of one server (and line or hour) over the window.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    pub server: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<String>,
    /// Start of the hour, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hour: Option<i64>,
    /// Messages delivered.
    pub sent: u64,
    /// Send attempts that failed.
    pub failed: u64,
    /// Messages received.
    pub received: u64,
    /// Receptions that failed.
    pub receive_failed: u64,
    pub pages_sent: u64,
    pub pages_received: u64,
}

impl Row {
    pub fn add(&mut self, direction: Direction, ok: bool, messages: u64, pages: u64) {
        match (direction, ok) {
            (Direction::Sent, true) => self.sent += messages,
            (Direction::Sent, false) => self.failed += messages,
            (Direction::Received, true) => self.received += messages,
            (Direction::Received, false) => self.receive_failed += messages,
        }
        match direction {
            Direction::Sent => self.pages_sent += pages,
            Direction::Received => self.pages_received += pages,
        }
    }

    pub fn merge(&mut self, o: &Row) {
        self.sent += o.sent;
        self.failed += o.failed;
        self.received += o.received;
        self.receive_failed += o.receive_failed;
        self.pages_sent += o.pages_sent;
        self.pages_received += o.pages_received;
    }

    /// Every message handled, whatever its direction and result.
    pub fn messages(&self) -> u64 {
        self.sent + self.failed + self.received + self.receive_failed
    }

    pub fn pages(&self) -> u64 {
        self.pages_sent + self.pages_received
    }
}

/// The answer of one source (an agent, or a server as Prometheus sees it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceStatus {
    pub server: String,
    /// Where it was asked.
    pub from: String,
    /// Why it is missing from the sum; `None` when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What `telagent totals` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub since: i64,
    pub until: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<Split>,
    pub sources: Vec<SourceStatus>,
    pub rows: Vec<Row>,
    pub total: Row,
    /// False when a source did not answer: the total lacks its traffic.
    pub complete: bool,
    /// True when the figures are Prometheus' estimates (increase() extrapolates to the
    /// window's edges), not counts.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub estimate: bool,
}

impl Report {
    /// Builds the report from the rows of every source that answered.
    /// Rows with the same server (and line or hour) from several sources are summed: each
    /// agent counts the events posted to it, whichever server they name.
    pub fn new(q: &Query, sources: Vec<SourceStatus>, rows: Vec<Row>) -> Report {
        let mut merged: std::collections::BTreeMap<(String, Option<String>, Option<i64>), Row> =
            Default::default();
        for r in rows {
            merged
                .entry((r.server.clone(), r.line.clone(), r.hour))
                .and_modify(|m| m.merge(&r))
                .or_insert(r);
        }
        let rows: Vec<Row> = merged.into_values().collect();
        let mut total = Row {
            server: "total".into(),
            ..Row::default()
        };
        for r in &rows {
            total.merge(r);
        }
        Report {
            since: q.since,
            until: q.until,
            by: q.by,
            complete: sources.iter().all(|s| s.error.is_none()),
            sources,
            rows,
            total,
            estimate: false,
        }
    }

    /// Servers shown: those with rows and those whose source did not answer.
    fn servers(&self) -> usize {
        let mut names: std::collections::BTreeSet<&str> =
            self.rows.iter().map(|r| r.server.as_str()).collect();
        names.extend(
            self.sources
                .iter()
                .filter(|s| s.error.is_some())
                .map(|s| s.server.as_str()),
        );
        names.len()
    }

    fn share(&self, r: &Row) -> String {
        match self.total.messages() {
            0 => "-".into(),
            t => format!("{:.1}%", r.messages() as f64 * 100.0 / t as f64),
        }
    }

    fn split_header(&self) -> Option<&'static str> {
        match self.by {
            Some(Split::Line) => Some("LINE"),
            Some(Split::Hour) => Some("HOUR"),
            None => None,
        }
    }

    fn split_value(r: &Row) -> String {
        match (&r.line, r.hour) {
            (Some(l), _) => l.clone(),
            (None, Some(h)) => minute_text(h),
            _ => String::new(),
        }
    }

    /// The aligned table for people.
    pub fn table(&self) -> String {
        let mut out = format!(
            "Traffic from {} to {} UTC ({}), {} server{}\n\n",
            minute_text(self.since),
            minute_text(self.until),
            humantime::format_duration(
                Duration::from_secs((self.until - self.since).max(0) as u64)
            ),
            self.servers(),
            if self.servers() == 1 { "" } else { "s" }
        );
        if self.estimate {
            out.insert_str(
                out.len() - 1,
                "Estimates from Prometheus: increase() extrapolates to the window's edges; rounded.\n",
            );
        }
        let mut header = vec!["SERVER"];
        header.extend(self.split_header());
        header.extend([
            "SENT",
            "SEND-FAILED",
            "RECEIVED",
            "RECV-FAILED",
            "PAGES",
            "SHARE",
        ]);
        let numbers = |r: &Row| {
            vec![
                r.sent.to_string(),
                r.failed.to_string(),
                r.received.to_string(),
                r.receive_failed.to_string(),
                r.pages().to_string(),
                self.share(r),
            ]
        };
        let mut lines: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
        for r in &self.rows {
            let mut l = vec![r.server.clone()];
            if self.by.is_some() {
                l.push(Self::split_value(r));
            }
            l.extend(numbers(r));
            lines.push(l);
        }
        for s in self.sources.iter().filter(|s| s.error.is_some()) {
            let mut l = vec![s.server.clone()];
            if self.by.is_some() {
                l.push(String::new());
            }
            l.extend(["-"; 6].map(String::from));
            lines.push(l);
        }
        let mut l = vec!["TOTAL".to_string()];
        if self.by.is_some() {
            l.push(String::new());
        }
        l.extend(numbers(&self.total));
        lines.push(l);
        let text_cols = if self.by.is_some() { 2 } else { 1 };
        let widths: Vec<usize> = (0..lines[0].len())
            .map(|c| {
                lines
                    .iter()
                    .map(|l| l[c].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for l in &lines {
            let cells: Vec<String> = l
                .iter()
                .enumerate()
                .map(|(c, v)| {
                    if c < text_cols {
                        format!("{v:<w$}", w = widths[c])
                    } else {
                        format!("{v:>w$}", w = widths[c])
                    }
                })
                .collect();
            out.push_str(cells.join("  ").trim_end());
            out.push('\n');
        }
        for s in &self.sources {
            if let Some(e) = &s.error {
                out.push_str(&format!(
                    "\nINCOMPLETE: {} ({}) did not answer: {e}. The total lacks its traffic.",
                    s.server, s.from
                ));
            }
        }
        if !self.complete {
            out.push('\n');
        }
        out
    }

    /// One header line and one line per row, the total last.
    pub fn csv(&self) -> String {
        let mut out = String::from("server,");
        if let Some(h) = self.split_header() {
            out.push_str(&h.to_lowercase());
            out.push(',');
        }
        out.push_str(
            "sent,failed,received,receive_failed,pages_sent,pages_received,share,status\n",
        );
        let line = |r: &Row, status: &str| {
            let mut l = csv_field(&r.server);
            if self.by.is_some() {
                l.push(',');
                l.push_str(&csv_field(&Self::split_value(r)));
            }
            let share = self.share(r);
            l.push_str(&format!(
                ",{},{},{},{},{},{},{},{}\n",
                r.sent,
                r.failed,
                r.received,
                r.receive_failed,
                r.pages_sent,
                r.pages_received,
                share.trim_end_matches('%'),
                csv_field(status)
            ));
            l
        };
        let row_status = if self.estimate { "estimate" } else { "ok" };
        for r in &self.rows {
            out.push_str(&line(r, row_status));
        }
        for s in &self.sources {
            if let Some(e) = &s.error {
                let mut l = csv_field(&s.server);
                if self.by.is_some() {
                    l.push(',');
                }
                l.push_str(&format!(
                    ",,,,,,,,{}\n",
                    csv_field(&format!("unreachable: {e}"))
                ));
                out.push_str(&l);
            }
        }
        let status = match (self.complete, self.estimate) {
            (false, _) => "incomplete",
            (true, true) => "estimate",
            (true, false) => "ok",
        };
        out.push_str(&line(&self.total, status));
        out
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// `2026-11-23 10:00` (UTC).
pub fn minute_text(t: i64) -> String {
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(t.max(0) as u64);
    let s = humantime::format_rfc3339_seconds(at).to_string();
    format!("{} {}", &s[..10], &s[11..16])
}

/// Reads `1h`, `7d` (that long before `now`), `2026-11-01`, `2026-11-01 08:00`,
/// `2026-11-01T08:00:00Z` (UTC) or RFC 3339 with an offset (`2026-11-01T09:00:00+01:00`)
/// into seconds since the Unix epoch.
pub fn parse_time(s: &str, now: i64) -> Result<i64, String> {
    let s = s.trim();
    if let Ok(d) = humantime::parse_duration(s) {
        return i64::try_from(d.as_secs())
            .ok()
            .and_then(|d| now.checked_sub(d))
            .ok_or_else(|| format!("`{s}` reaches back beyond any date"));
    }
    // RFC 3339 allows the separators in lower case.
    let given = s;
    let upper = s.to_ascii_uppercase();
    let s = upper.as_str();
    // A numeric offset: the local time it names, moved to UTC.
    if s.len() > 19 && s.is_char_boundary(s.len() - 6) {
        let (time, offset) = s.split_at(s.len() - 6);
        let b = offset.as_bytes();
        if (b[0] == b'+' || b[0] == b'-') && b[3] == b':' {
            let hm = |x: &str| x.parse::<i64>().ok();
            let valid = |h: i64, m: i64| (0..24).contains(&h) && (0..60).contains(&m);
            if let (Some(h), Some(m)) = (hm(&offset[1..3]), hm(&offset[4..6])) {
                if !valid(h, m) {
                    return Err(format!("`{given}`: the offset {offset} is not a time zone offset (-23:59 to +23:59)"));
                }
                let local = parse_time(&format!("{time}Z"), now)?;
                let sign = if b[0] == b'+' { 1 } else { -1 };
                return Ok(local - sign * (h * 3600 + m * 60));
            }
        }
    }
    let full = match s.len() {
        10 => format!("{s}T00:00:00Z"),
        16 => format!("{}:00Z", s.replacen(' ', "T", 1)),
        _ => s.replacen(' ', "T", 1),
    };
    humantime::parse_rfc3339_weak(full.trim_end_matches('Z'))
        .map(|t| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64)
        })
        .map_err(|_| {
            format!("`{given}` is neither a duration (1h, 7d) nor a UTC date (2026-11-01, \"2026-11-01 08:00\") on or after 1970-01-01")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(server: &str, sent: u64, failed: u64, received: u64, pages: u64) -> Row {
        Row {
            server: server.into(),
            sent,
            failed,
            received,
            pages_sent: pages,
            ..Row::default()
        }
    }

    fn source(server: &str, error: Option<&str>) -> SourceStatus {
        SourceStatus {
            server: server.into(),
            from: format!("http://{server}:9847"),
            error: error.map(String::from),
        }
    }

    /// 2026-11-22 11:00 UTC to 2026-11-23 11:00 UTC.
    fn query(by: Option<Split>) -> Query {
        Query {
            since: 1_795_345_200,
            until: 1_795_431_600,
            server: None,
            by,
        }
    }

    fn cluster_report() -> Report {
        Report::new(
            &query(None),
            vec![
                source("fax1", None),
                source("fax2", None),
                source("fax3", Some("connection refused")),
            ],
            vec![row("fax2", 100, 1, 30, 300), row("fax1", 120, 3, 40, 410)],
        )
    }

    fn golden(name: &str, got: &str) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/totals")
            .join(name);
        let want =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(got, want, "golden file {name}");
    }

    #[test]
    fn table_golden() {
        golden("cluster.txt", &cluster_report().table());
    }

    #[test]
    fn csv_golden() {
        golden("cluster.csv", &cluster_report().csv());
    }

    #[test]
    fn json_golden() {
        let text = serde_json::to_string_pretty(&cluster_report()).unwrap() + "\n";
        golden("cluster.json", &text);
        let back: Report = serde_json::from_str(&text).unwrap();
        assert_eq!(back, cluster_report());
    }

    #[test]
    fn by_line_table_golden() {
        let mut a = row("fax1", 5, 0, 2, 9);
        a.line = Some("ttyS0".into());
        let mut b = row("fax1", 7, 1, 0, 11);
        b.line = Some("ttyS1".into());
        let r = Report::new(
            &query(Some(Split::Line)),
            vec![source("fax1", None)],
            vec![b, a],
        );
        golden("by-line.txt", &r.table());
        golden("by-line.csv", &r.csv());
    }

    #[test]
    fn times_are_durations_or_utc_dates() {
        let now = 1_795_431_600;
        assert_eq!(parse_time("1h", now), Ok(now - 3600));
        assert_eq!(parse_time("7d", now), Ok(now - 7 * 86400));
        assert_eq!(parse_time("2026-11-23", now), Ok(1_795_392_000));
        assert_eq!(parse_time("2026-11-23 11:00", now), Ok(now));
        assert_eq!(parse_time("2026-11-23T11:00:00Z", now), Ok(now));
        assert_eq!(parse_time("2026-11-23T12:00:00+01:00", now), Ok(now));
        assert_eq!(parse_time("2026-11-23T06:30:00-04:30", now), Ok(now));
        assert_eq!(parse_time("2026-11-23t11:00:00z", now), Ok(now));
        assert!(parse_time("2026-11-23T11:00:00+25:00", now).is_err());
        assert!(parse_time("18446744073709551615s", now).is_err());
        assert!(parse_time("yesterday", now)
            .unwrap_err()
            .contains("yesterday"));
        assert_eq!(minute_text(now), "2026-11-23 11:00");
    }
}
