//! What a query asks for, checked before any back end sees it.

use crate::record::{Direction, Protocol, Verdict};
use crate::selector::Selector;
use crate::time::{parse_duration, Timestamp};
use std::fmt;
use std::time::Duration;

pub const DEFAULT_LIMIT: usize = 1000;
pub const MAX_LIMIT: usize = 100_000;
/// How far back `edges` looks when no `since` is given.
pub const DEFAULT_EDGE_WINDOW: Duration = Duration::from_secs(3600);

/// A rejected filter value: the field, and what it accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FilterError {
    pub field: String,
    pub message: String,
}

impl FilterError {
    fn new(field: &str, message: impl Into<String>) -> FilterError {
        FilterError {
            field: field.to_string(),
            message: message.into(),
        }
    }
}

/// Records match when every given field does. `workload` matches the reporting workload
/// or the workload at either end.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowFilter {
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    pub verdict: Option<Verdict>,
    pub direction: Option<Direction>,
    pub workload: Option<String>,
    /// Matched against `src_labels`.
    pub from: Selector,
    /// Matched against `dst_labels`.
    pub to: Selector,
    /// The destination port.
    pub port: Option<u16>,
    pub protocol: Option<Protocol>,
    pub policy: Option<String>,
    pub node: Option<String>,
    /// The newest this many, returned oldest first.
    pub limit: usize,
}

impl Default for FlowFilter {
    fn default() -> Self {
        FlowFilter {
            since: None,
            until: None,
            verdict: None,
            direction: None,
            workload: None,
            from: Selector::default(),
            to: Selector::default(),
            port: None,
            protocol: None,
            policy: None,
            node: None,
            limit: DEFAULT_LIMIT,
        }
    }
}

impl FlowFilter {
    /// From query parameters (`GET /v1/flows?verdict=deny&from=app=web&since=1h`); `now`
    /// anchors relative times (`since=5m` is five minutes before it).
    pub fn from_params<'a>(
        params: impl IntoIterator<Item = (&'a str, &'a str)>,
        now: Timestamp,
    ) -> Result<FlowFilter, FilterError> {
        let mut f = FlowFilter::default();
        for (k, v) in params {
            match k {
                "since" => f.since = Some(instant("since", v, now)?),
                "until" => f.until = Some(instant("until", v, now)?),
                "verdict" => {
                    f.verdict = Some(Verdict::parse(v).ok_or_else(|| {
                        FilterError::new(
                            "verdict",
                            format!("{v:?}: one of allow, deny, log, audit"),
                        )
                    })?)
                }
                "direction" => {
                    f.direction = Some(Direction::parse(v).ok_or_else(|| {
                        FilterError::new("direction", format!("{v:?}: ingress or egress"))
                    })?)
                }
                "workload" => f.workload = Some(name("workload", v)?),
                "from" => f.from = selector("from", v)?,
                "to" => f.to = selector("to", v)?,
                "port" => f.port = Some(port(v)?),
                "protocol" => {
                    f.protocol = Some(Protocol::parse(v).ok_or_else(|| {
                        FilterError::new(
                            "protocol",
                            format!("{v:?}: TCP, UDP, ICMP, ICMPv6 or a number 0-255"),
                        )
                    })?)
                }
                "policy" => f.policy = Some(name("policy", v)?),
                "node" => f.node = Some(name("node", v)?),
                "limit" => f.limit = limit(v)?,
                other => {
                    return Err(FilterError::new(
                        other,
                        "unknown filter (since, until, verdict, direction, workload, from, to, \
                         port, protocol, policy, node, limit)",
                    ))
                }
            }
        }
        f.validate()?;
        Ok(f)
    }

    /// Checks a filter built in code as `from_params` checks one from text.
    pub fn validate(&self) -> Result<(), FilterError> {
        if let (Some(s), Some(u)) = (self.since, self.until) {
            if s > u {
                return Err(FilterError::new(
                    "until",
                    format!("{u} is before since ({s})"),
                ));
            }
        }
        if self.limit == 0 || self.limit > MAX_LIMIT {
            return Err(FilterError::new(
                "limit",
                format!("{}: a number from 1 to {MAX_LIMIT}", self.limit),
            ));
        }
        for (field, v) in [
            ("workload", &self.workload),
            ("policy", &self.policy),
            ("node", &self.node),
        ] {
            if let Some(v) = v {
                name(field, v)?;
            }
        }
        Ok(())
    }
}

/// The window `edges` aggregates over: `since` to `until` (or now), both included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgeWindow {
    pub since: Timestamp,
    pub until: Option<Timestamp>,
}

impl EdgeWindow {
    /// From `since` (default: an hour before `now`) and `until`.
    pub fn from_params<'a>(
        params: impl IntoIterator<Item = (&'a str, &'a str)>,
        now: Timestamp,
    ) -> Result<EdgeWindow, FilterError> {
        let mut w = EdgeWindow {
            since: now.minus(DEFAULT_EDGE_WINDOW),
            until: None,
        };
        for (k, v) in params {
            match k {
                "since" => w.since = instant("since", v, now)?,
                "until" => w.until = Some(instant("until", v, now)?),
                other => return Err(FilterError::new(other, "unknown parameter (since, until)")),
            }
        }
        if let Some(u) = w.until {
            if w.since > u {
                return Err(FilterError::new(
                    "until",
                    format!("{u} is before since ({})", w.since),
                ));
            }
        }
        Ok(w)
    }
}

/// Where `after` continues from: every record stored after the one it names. Opaque to
/// clients (a decimal number).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Cursor(pub i64);

impl Cursor {
    pub fn parse(s: &str) -> Result<Cursor, FilterError> {
        s.parse()
            .ok()
            .filter(|n: &i64| *n >= 0)
            .map(Cursor)
            .ok_or_else(|| FilterError::new("cursor", format!("{s:?}: a cursor a query returned")))
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

fn instant(field: &str, v: &str, now: Timestamp) -> Result<Timestamp, FilterError> {
    if let Some(t) = Timestamp::parse(v) {
        return Ok(t);
    }
    if let Ok(d) = parse_duration(v) {
        return Ok(now.minus(d));
    }
    Err(FilterError::new(
        field,
        format!("{v:?}: an RFC 3339 time (2026-12-07T10:00:00Z) or an age (30s, 5m, 1h30m, 7d)"),
    ))
}

fn name(field: &str, v: &str) -> Result<String, FilterError> {
    if v.is_empty() || v.len() > 253 || v.chars().any(char::is_control) {
        return Err(FilterError::new(
            field,
            format!("{v:?}: a name of 1 to 253 characters"),
        ));
    }
    Ok(v.to_string())
}

fn selector(field: &str, v: &str) -> Result<Selector, FilterError> {
    Selector::parse(v).map_err(|e| FilterError::new(field, e.to_string()))
}

fn port(v: &str) -> Result<u16, FilterError> {
    v.parse()
        .map_err(|_| FilterError::new("port", format!("{v:?}: a port number 0-65535")))
}

fn limit(v: &str) -> Result<usize, FilterError> {
    match v.parse::<usize>() {
        Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        _ => Err(FilterError::new(
            "limit",
            format!("{v:?}: a number from 1 to {MAX_LIMIT}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_and_absolute_times() {
        let now = Timestamp::parse("2026-12-07T12:00:00Z").unwrap();
        let f = FlowFilter::from_params([("since", "1h"), ("until", "2026-12-07T11:30:00Z")], now)
            .unwrap();
        assert_eq!(f.since.unwrap().to_string(), "2026-12-07T11:00:00.000000Z");
        assert_eq!(f.limit, DEFAULT_LIMIT);
        let w = EdgeWindow::from_params([("since", "1h30m")], now).unwrap();
        assert_eq!(w.since.to_string(), "2026-12-07T10:30:00.000000Z");
    }
}
