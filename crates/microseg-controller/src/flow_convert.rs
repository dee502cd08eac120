//! Uploaded flows as stored records: the agent's `Flow` (or an older agent's JSON), the
//! node it came from, and the names and labels of both ends looked up by address among
//! the controller's workloads (docs/CONTROLLER.md, "Flows").

use crate::resources::WORKLOAD;
use crate::store::Row;
use microseg_flowstore::{Direction, FlowRecord, Labels, Protocol, Timestamp, Verdict};
use microseg_proto::v1::Flow;
use std::collections::HashMap;
use std::net::IpAddr;

/// Largest legacy JSON record taken, in bytes: one holds about 400.
pub const MAX_FLOW_JSON_BYTES: usize = 4096;

/// The workloads by address: name and effective labels.
#[derive(Debug, Default)]
pub struct AddrIndex {
    by_ip: HashMap<IpAddr, (String, Labels)>,
}

impl AddrIndex {
    /// From the stored rows (other kinds are skipped; an address two workloads claim
    /// names the first in name order).
    pub fn build(rows: &[Row]) -> AddrIndex {
        let mut by_ip = HashMap::new();
        for r in rows.iter().filter(|r| r.kind == WORKLOAD && !r.deleted) {
            let Ok(w) = r.workload() else { continue };
            for ip in &w.ips {
                by_ip
                    .entry(*ip)
                    .or_insert_with(|| (w.name.clone(), w.labels.clone()));
            }
        }
        AddrIndex { by_ip }
    }

    fn lookup(&self, ip: &str) -> (Option<String>, Labels) {
        match ip.parse::<IpAddr>().ok().and_then(|a| self.by_ip.get(&a)) {
            Some((name, labels)) => (Some(name.clone()), labels.clone()),
            None => (None, Labels::new()),
        }
    }

    /// Fills in both ends of `r`.
    pub fn decorate(&self, r: &mut FlowRecord) {
        (r.src_workload, r.src_labels) = self.lookup(&r.src_ip);
        (r.dst_workload, r.dst_labels) = self.lookup(&r.dst_ip);
    }
}

/// Why an uploaded flow is not stored.
#[derive(Debug, PartialEq, Eq)]
pub struct Rejected(pub String);

fn direction(s: &str) -> Result<Direction, Rejected> {
    Direction::parse(s).ok_or_else(|| Rejected(format!("direction {s:?}")))
}

fn verdict(s: &str) -> Result<Verdict, Rejected> {
    Verdict::parse(s).ok_or_else(|| Rejected(format!("verdict {s:?}")))
}

fn port(field: &str, p: u32) -> Result<u16, Rejected> {
    u16::try_from(p).map_err(|_| Rejected(format!("{field} {p}")))
}

fn ip(field: &str, s: &str) -> Result<String, Rejected> {
    match s.parse::<IpAddr>() {
        Ok(a) => Ok(a.to_string()),
        Err(_) => Err(Rejected(format!("{field} {s:?}"))),
    }
}

/// A `Flow` of the agent link, as reported by `node` (names and labels not yet filled).
pub fn from_proto(node: &str, f: Flow) -> Result<FlowRecord, Rejected> {
    if f.workload.is_empty() {
        return Err(Rejected("no workload".into()));
    }
    Ok(FlowRecord {
        time: Timestamp(f.time_us),
        node: node.to_string(),
        direction: direction(&f.direction)?,
        src_ip: ip("src_ip", &f.src_ip)?,
        dst_ip: ip("dst_ip", &f.dst_ip)?,
        src_port: port("src_port", f.src_port)?,
        dst_port: port("dst_port", f.dst_port)?,
        protocol: Protocol(
            u8::try_from(f.protocol).map_err(|_| Rejected(format!("protocol {}", f.protocol)))?,
        ),
        verdict: verdict(&f.verdict)?,
        workload: f.workload,
        policy: f.policy,
        rule: f.rule,
        audit_verdict: f.audit_verdict,
        audit_policy: f.audit_policy,
        packets: f.packets,
        bytes: f.bytes,
        src_workload: None,
        dst_workload: None,
        src_labels: Labels::new(),
        dst_labels: Labels::new(),
        start: Timestamp(f.start_us),
        end: f.end_us.map(Timestamp),
    })
}

/// The JSON of `microseg flows -o json`, as agents before the structured `Flow` send it.
#[derive(serde::Deserialize)]
struct Legacy {
    time: String,
    workload: String,
    direction: String,
    src_ip: String,
    dst_ip: String,
    src_port: u16,
    dst_port: u16,
    protocol: Protocol,
    verdict: String,
    policy: Option<String>,
    rule: Option<u32>,
    audit_verdict: Option<String>,
    audit_policy: Option<String>,
    #[serde(default)]
    packets: u64,
    #[serde(default)]
    bytes: u64,
    /// `end` when the connection ended.
    #[serde(default)]
    event: String,
}

/// A legacy JSON record, always `node`'s whatever it says (a node speaks only for
/// itself). It has no start: its time stands for it.
pub fn from_json(node: &str, text: &str) -> Result<FlowRecord, Rejected> {
    if text.len() > MAX_FLOW_JSON_BYTES {
        return Err(Rejected(format!("{} bytes of JSON", text.len())));
    }
    let l: Legacy = serde_json::from_str(text).map_err(|e| Rejected(e.to_string()))?;
    let time = Timestamp::parse(&l.time).ok_or_else(|| Rejected(format!("time {:?}", l.time)))?;
    from_proto(
        node,
        Flow {
            time_us: time.0,
            start_us: time.0,
            end_us: (l.event == "end").then_some(time.0),
            workload: l.workload,
            direction: l.direction,
            src_ip: l.src_ip,
            dst_ip: l.dst_ip,
            src_port: l.src_port.into(),
            dst_port: l.dst_port.into(),
            protocol: l.protocol.0.into(),
            verdict: l.verdict,
            policy: l.policy,
            rule: l.rule,
            audit_verdict: l.audit_verdict,
            audit_policy: l.audit_policy,
            packets: l.packets,
            bytes: l.bytes,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_legacy_record_is_its_uploaders_and_checked() {
        let text = r#"{"time":"2026-12-07T10:00:00.000000Z","node":"other","workload":"web",
            "direction":"egress","src_ip":"10.0.0.1","dst_ip":"10.0.0.2","src_port":40000,
            "dst_port":5432,"protocol":"TCP","verdict":"deny","policy":"db","rule":0,
            "audit_verdict":null,"audit_policy":null,"packets":3,"bytes":180,"event":"end"}"#;
        let r = from_json("node-a", text).unwrap();
        assert_eq!(r.node, "node-a");
        assert_eq!((r.protocol, r.verdict), (Protocol::TCP, Verdict::Deny));
        assert_eq!((r.start, r.end), (r.time, Some(r.time)));
        let bad = text.replace("\"deny\"", "\"maybe\"");
        assert_eq!(
            from_json("node-a", &bad).unwrap_err(),
            Rejected("verdict \"maybe\"".into())
        );
        let big = format!("{text:<width$}", width = MAX_FLOW_JSON_BYTES + 1);
        assert!(from_json("node-a", &big).is_err());
        assert!(from_json("node-a", "not json").is_err());
    }

    #[test]
    fn out_of_range_numbers_are_rejected() {
        let f = Flow {
            workload: "web".into(),
            direction: "ingress".into(),
            src_ip: "10.0.0.1".into(),
            dst_ip: "fd00::1".into(),
            verdict: "allow".into(),
            protocol: 6,
            ..Flow::default()
        };
        assert!(from_proto("n", f.clone()).is_ok());
        for bad in [
            Flow {
                dst_port: 65_536,
                ..f.clone()
            },
            Flow {
                protocol: 256,
                ..f.clone()
            },
            Flow {
                src_ip: "10.0.0".into(),
                ..f.clone()
            },
        ] {
            assert!(from_proto("n", bad).is_err());
        }
    }
}
