//! The recent flows agents upload, and the filters of `GET /v1/flows`.

use crate::core::now;
use crate::error::Error;
use microseg_policy::{check_name, parse_protocol};
use serde_json::Value;
use std::collections::VecDeque;

/// Recent flows uploaded by agents, oldest first, bounded.
pub struct Flows {
    buf: VecDeque<(f64, Value)>,
    cap: usize,
}

/// Which flows `GET /v1/flows` returns, as the query string gives it: every value is
/// checked by [`Flows::query`], and an unknown parameter is refused when parsed.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowQuery {
    pub verdict: Option<String>,
    pub direction: Option<String>,
    /// A name (TCP, UDP, SCTP, ICMP, ICMPv6) or a number.
    pub protocol: Option<String>,
    pub workload: Option<String>,
    pub node: Option<String>,
    /// Received within this many seconds (or a duration like 30s, 5m, 2h).
    pub since: Option<String>,
    /// At most this many, the newest.
    pub limit: Option<String>,
}

pub const VERDICTS: [&str; 4] = ["allow", "deny", "log", "audit"];
pub const DIRECTIONS: [&str; 2] = ["ingress", "egress"];

/// A [`FlowQuery`] whose values were checked.
struct Filter<'q> {
    verdict: Option<&'static str>,
    direction: Option<&'static str>,
    protocol: Option<u8>,
    workload: Option<&'q str>,
    node: Option<&'q str>,
    cutoff: Option<f64>,
    limit: Option<usize>,
}

fn one_of(param: &str, given: &str, allowed: &[&'static str]) -> Result<&'static str, Error> {
    allowed
        .iter()
        .find(|a| a.eq_ignore_ascii_case(given))
        .copied()
        .ok_or_else(|| {
            Error::bad(format!(
                "invalid {param} {given:?}: one of {}",
                allowed.join(", ")
            ))
        })
}

impl FlowQuery {
    fn filter(&self) -> Result<Filter<'_>, Error> {
        let verdict = self
            .verdict
            .as_deref()
            .map(|v| one_of("verdict", v, &VERDICTS));
        let direction = self
            .direction
            .as_deref()
            .map(|d| one_of("direction", d, &DIRECTIONS));
        let protocol = self.protocol.as_deref().map(|p| {
            parse_protocol(p).ok_or_else(|| {
                Error::bad(format!(
                    "invalid protocol {p:?}: TCP, UDP, SCTP, ICMP, ICMPv6 or a number from 0 to 255"
                ))
            })
        });
        let since = self.since.as_deref().map(|s| {
            microseg_common::time::parse_duration(s)
                .map(|d| d.as_secs_f64())
                .map_err(|e| Error::bad(format!("since: {e}")))
        });
        let limit = self.limit.as_deref().map(|l| {
            l.parse::<usize>()
                .map_err(|_| Error::bad(format!("invalid limit {l:?}: a whole number, 0 or more")))
        });
        // Names that no workload or node can have would match nothing: a typo, said so.
        for (param, value) in [("workload", &self.workload), ("node", &self.node)] {
            if let Some(e) = value.as_deref().and_then(check_name) {
                return Err(Error::bad(format!("invalid {param}: {e}")));
            }
        }
        Ok(Filter {
            verdict: verdict.transpose()?,
            direction: direction.transpose()?,
            protocol: protocol.transpose()?,
            workload: self.workload.as_deref(),
            node: self.node.as_deref(),
            cutoff: since.transpose()?.map(|s| now() - s),
            limit: limit.transpose()?,
        })
    }
}

impl Filter<'_> {
    fn matches(&self, at: f64, v: &Value) -> bool {
        let field = |k: &str| v.get(k).and_then(Value::as_str);
        let protocol = || match v.get("protocol") {
            Some(Value::String(s)) => parse_protocol(s),
            Some(n) => n.as_u64().and_then(|n| u8::try_from(n).ok()),
            None => None,
        };
        self.cutoff.is_none_or(|c| at >= c)
            && self
                .verdict
                .is_none_or(|want| field("verdict").is_some_and(|x| x.eq_ignore_ascii_case(want)))
            && self
                .direction
                .is_none_or(|want| field("direction").is_some_and(|x| x.eq_ignore_ascii_case(want)))
            && self.protocol.is_none_or(|want| protocol() == Some(want))
            && self.workload.is_none_or(|w| field("workload") == Some(w))
            && self.node.is_none_or(|n| field("node") == Some(n))
    }
}

impl Flows {
    pub fn new(cap: usize) -> Flows {
        Flows {
            buf: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    pub fn push(&mut self, at: f64, v: Value) {
        if self.buf.len() == self.cap {
            self.buf.pop_front();
        }
        self.buf.push_back((at, v));
    }

    /// The flows `q` asks for, oldest first; 400 naming the parameter if one is invalid.
    pub fn query(&self, q: &FlowQuery) -> Result<Vec<Value>, Error> {
        let f = q.filter()?;
        let mut out: Vec<Value> = self
            .buf
            .iter()
            .filter(|(at, v)| f.matches(*at, v))
            .map(|(_, v)| v.clone())
            .collect();
        if let Some(l) = f.limit {
            let skip = out.len().saturating_sub(l);
            out.drain(..skip);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn q(pairs: &[(&str, &str)]) -> FlowQuery {
        let text: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        serde_json::from_value(json!(pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<std::collections::BTreeMap<_, _>>()))
        .unwrap_or_else(|e| panic!("{}: {e}", text.join("&")))
    }

    #[test]
    fn flow_buffer_is_bounded_and_filters() {
        let mut f = Flows::new(2);
        for (i, v) in ["allow", "deny", "deny"].iter().enumerate() {
            f.push(
                now(),
                json!({"verdict": v, "workload": format!("w{i}"), "direction": "egress", "protocol": "TCP"}),
            );
        }
        assert_eq!(f.query(&FlowQuery::default()).unwrap().len(), 2);
        let one = q(&[("workload", "w2"), ("verdict", "DENY"), ("since", "1m")]);
        assert_eq!(f.query(&one).unwrap().len(), 1);
        let tcp = q(&[("protocol", "6"), ("direction", "Egress"), ("limit", "1")]);
        assert_eq!(f.query(&tcp).unwrap().len(), 1);
        assert!(f.query(&q(&[("protocol", "udp")])).unwrap().is_empty());
    }

    #[test]
    fn every_filter_value_is_checked_and_the_error_names_the_parameter() {
        let f = Flows::new(2);
        for (param, value, allowed) in [
            ("verdict", "bogus", "allow, deny, log, audit"),
            ("direction", "up", "ingress, egress"),
            ("protocol", "tcpp", "ICMPv6"),
            ("protocol", "256", "255"),
            ("since", "x", "1h30m"),
            ("since", "-5", "1h30m"),
            ("since", "inf", "1h30m"),
            ("since", "90", "has no unit"),
            ("limit", "-1", "0 or more"),
            ("limit", "ten", "0 or more"),
            ("workload", "Web 1", "lowercase letters"),
            ("node", "", "lowercase letters"),
        ] {
            let e = f.query(&q(&[(param, value)])).unwrap_err().to_string();
            assert!(
                e.contains(param) && e.contains(value) && e.contains(allowed),
                "{param}={value}: {e}"
            );
        }
    }
}
