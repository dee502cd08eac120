//! Rows as JSONEachRow carries them: absent values as '' and -1.

use crate::record::Fnv;
use crate::sql::StoredRow;
use crate::Timestamp;
use serde::{Deserialize, Serialize};

/// A row as JSONEachRow carries it.
#[derive(Serialize, Deserialize)]
pub(super) struct ChRow {
    #[serde(skip_deserializing)]
    pub day: String,
    /// The edge's number (written, not read back).
    #[serde(skip_deserializing)]
    pub edge: i64,
    /// The connection leg and edge as one number: grouping by one Int64 is about twice
    /// as fast as by the pair.
    #[serde(skip_deserializing)]
    pub leg: i64,
    pub seq: i64,
    pub time: i64,
    pub node: String,
    pub workload: String,
    pub direction: String,
    pub src_ip: String,
    pub dst_ip: String,
    pub src_port: i64,
    pub dst_port: i64,
    pub protocol: i64,
    pub verdict: String,
    pub policy: String,
    pub rule: i64,
    pub audit_verdict: String,
    pub audit_policy: String,
    pub packets: i64,
    pub bytes: i64,
    pub src_workload: String,
    pub dst_workload: String,
    pub src_labels: String,
    pub dst_labels: String,
    pub started: i64,
    pub ended: i64,
    pub conn: i64,
}

pub(super) fn text(v: Option<String>) -> String {
    v.unwrap_or_default()
}

pub(super) fn some(v: String) -> Option<String> {
    (!v.is_empty()).then_some(v)
}

impl ChRow {
    pub(super) fn from_stored(r: StoredRow, edge: i64) -> ChRow {
        ChRow {
            day: Timestamp(r.time).date(),
            edge,
            leg: Fnv::new()
                .eat(&r.conn.to_be_bytes())
                .eat(&edge.to_be_bytes())
                .0 as i64,
            seq: r.seq,
            time: r.time,
            node: r.node,
            workload: r.workload,
            direction: r.direction,
            src_ip: r.src_ip,
            dst_ip: r.dst_ip,
            src_port: r.src_port,
            dst_port: r.dst_port,
            protocol: r.protocol,
            verdict: r.verdict,
            policy: text(r.policy),
            rule: r.rule.unwrap_or(-1),
            audit_verdict: text(r.audit_verdict),
            audit_policy: text(r.audit_policy),
            packets: r.packets,
            bytes: r.bytes,
            src_workload: text(r.src_workload),
            dst_workload: text(r.dst_workload),
            src_labels: r.src_labels,
            dst_labels: r.dst_labels,
            started: r.started,
            ended: r.ended.unwrap_or(-1),
            conn: r.conn,
        }
    }

    pub(super) fn into_stored(self) -> StoredRow {
        StoredRow {
            seq: self.seq,
            time: self.time,
            node: self.node,
            workload: self.workload,
            direction: self.direction,
            src_ip: self.src_ip,
            dst_ip: self.dst_ip,
            src_port: self.src_port,
            dst_port: self.dst_port,
            protocol: self.protocol,
            verdict: self.verdict,
            policy: some(self.policy),
            rule: (self.rule >= 0).then_some(self.rule),
            audit_verdict: some(self.audit_verdict),
            audit_policy: some(self.audit_policy),
            packets: self.packets,
            bytes: self.bytes,
            src_workload: some(self.src_workload),
            dst_workload: some(self.dst_workload),
            src_labels: self.src_labels,
            dst_labels: self.dst_labels,
            started: self.started,
            ended: (self.ended >= 0).then_some(self.ended),
            conn: self.conn,
        }
    }
}
