//! Who talked to whom over a window: one edge per source, destination, protocol,
//! destination port, verdict and policy.

use crate::error::{labels, narrow, RowError};
use crate::record::{Labels, Protocol, Verdict};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Edge {
    pub src: Endpoint,
    pub dst: Endpoint,
    pub protocol: Protocol,
    pub dst_port: u16,
    pub verdict: Verdict,
    pub policy: Option<String>,
    /// Distinct connection legs (a connection re-reported every active timeout counts once).
    pub connections: u64,
    /// Summed over the connections, each at its latest report in the window.
    pub packets: u64,
    pub bytes: u64,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
}

/// A workload (with its labels at the edge's latest report), or an address that is none.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Endpoint {
    Workload { workload: String, labels: Labels },
    Address { ip: String },
}

impl Edge {
    pub(crate) fn sort_key(&self) -> impl Ord + '_ {
        (
            &self.src,
            &self.dst,
            self.protocol,
            self.dst_port,
            self.verdict,
            &self.policy,
        )
    }
}

/// One row of a back end's edge query, before it becomes an [`Edge`].
pub(crate) struct EdgeRow {
    pub src: String,
    pub src_is_workload: bool,
    pub src_labels: String,
    pub dst: String,
    pub dst_is_workload: bool,
    pub dst_labels: String,
    pub protocol: i64,
    pub dst_port: i64,
    pub verdict: String,
    pub policy: Option<String>,
    pub connections: i64,
    pub packets: i64,
    pub bytes: i64,
    pub first_seen: i64,
    pub last_seen: i64,
}

impl EdgeRow {
    pub(crate) fn into_edge(self) -> Result<Edge, RowError> {
        let end = |name: String, is_workload: bool, field, text| -> Result<Endpoint, RowError> {
            Ok(if is_workload {
                Endpoint::Workload {
                    workload: name,
                    labels: labels(field, text)?,
                }
            } else {
                Endpoint::Address { ip: name }
            })
        };
        Ok(Edge {
            src: end(
                self.src,
                self.src_is_workload,
                "src_labels",
                self.src_labels,
            )?,
            dst: end(
                self.dst,
                self.dst_is_workload,
                "dst_labels",
                self.dst_labels,
            )?,
            protocol: Protocol(narrow("protocol", self.protocol)?),
            dst_port: narrow("dst_port", self.dst_port)?,
            verdict: Verdict::parse(&self.verdict).ok_or(RowError::Unknown {
                field: "verdict",
                value: self.verdict,
            })?,
            policy: self.policy.filter(|p| !p.is_empty()),
            connections: self.connections as u64,
            packets: self.packets as u64,
            bytes: self.bytes as u64,
            first_seen: Timestamp(self.first_seen),
            last_seen: Timestamp(self.last_seen),
        })
    }
}

/// Sorted the same way whatever the back end.
pub(crate) fn finish(rows: Vec<EdgeRow>, backend: &'static str) -> Result<Vec<Edge>, crate::Error> {
    let mut edges = rows
        .into_iter()
        .map(EdgeRow::into_edge)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| crate::Error::BadRow { backend, source })?;
    edges.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    Ok(edges)
}
