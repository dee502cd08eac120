//! Edges on ClickHouse. Aggregating the label and name strings of every record made a
//! 24-hour edges query over 10 million records take 17 s, so the flows table carries a
//! number per edge, and a small side table (`edge_ends`) holds each edge's ends and
//! labels, written when an edge is first seen by this process, on each new day and when
//! its labels change. The edges query then groups numbers only, and the names come from
//! the side table.

use super::rows::{some, ChRow};
use super::ClickHouseStore;
use crate::edge::{finish, EdgeRow};
use crate::record::Fnv;
use crate::sql::{Dialect, Where};
use crate::{Edge, EdgeWindow, Error, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Mutex;

pub(super) const EDGE_ENDS_TABLE: &str = "CREATE TABLE IF NOT EXISTS edge_ends (
    day Date, time Int64, edge Int64, s String, sw UInt8, d String, dw UInt8,
    protocol Int32, dst_port Int32, verdict String, policy String, sl String, dl String
) ENGINE = MergeTree PARTITION BY day ORDER BY (edge, time)";

/// Past this many edges the cache starts again (every edge is then written once more).
const CACHE_LIMIT: usize = 200_000;

/// What this process has written to `edge_ends`: per edge, its labels' hash and day.
#[derive(Default)]
pub(super) struct EdgeCache(Mutex<HashMap<i64, (u64, i64)>>);

#[derive(Serialize, Deserialize, Clone)]
pub(super) struct EdgeEnd {
    #[serde(skip_deserializing)]
    day: String,
    #[serde(alias = "latest")]
    time: i64,
    edge: i64,
    s: String,
    sw: u8,
    d: String,
    dw: u8,
    protocol: i64,
    dst_port: i64,
    verdict: String,
    policy: String,
    sl: String,
    dl: String,
}

fn labels_hash(r: &ChRow) -> u64 {
    Fnv::new()
        .eat(r.src_labels.as_bytes())
        .eat(r.dst_labels.as_bytes())
        .0
}

fn end_of(r: &ChRow) -> EdgeEnd {
    let (s, sw) = if r.src_workload.is_empty() {
        (r.src_ip.clone(), 0)
    } else {
        (r.src_workload.clone(), 1)
    };
    let (d, dw) = if r.dst_workload.is_empty() {
        (r.dst_ip.clone(), 0)
    } else {
        (r.dst_workload.clone(), 1)
    };
    EdgeEnd {
        day: r.day.clone(),
        time: r.time,
        edge: r.edge,
        s,
        sw,
        d,
        dw,
        protocol: r.protocol,
        dst_port: r.dst_port,
        verdict: r.verdict.clone(),
        policy: r.policy.clone(),
        sl: r.src_labels.clone(),
        dl: r.dst_labels.clone(),
    }
}

impl EdgeCache {
    /// The rows `edge_ends` lacks for this batch: the latest record of each edge whose
    /// labels or day differ from what was written.
    pub(super) fn missing(&self, rows: &[ChRow]) -> Vec<EdgeEnd> {
        let mut latest: HashMap<i64, &ChRow> = HashMap::new();
        for r in rows {
            let e = latest.entry(r.edge).or_insert(r);
            if r.time > e.time {
                *e = r;
            }
        }
        let cache = self.0.lock().unwrap_or_else(|p| p.into_inner());
        latest
            .into_values()
            .filter(|r| {
                let day = r.time.div_euclid(86_400_000_000);
                cache.get(&r.edge) != Some(&(labels_hash(r), day))
            })
            .map(end_of)
            .collect()
    }

    /// Remembers rows once they are stored.
    pub(super) fn written(&self, ends: &[EdgeEnd], rows: &[ChRow]) {
        let mut cache = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() > CACHE_LIMIT {
            cache.clear();
        }
        let wanted: HashMap<i64, i64> = ends.iter().map(|e| (e.edge, e.time)).collect();
        for r in rows {
            if wanted.get(&r.edge) == Some(&r.time) {
                cache.insert(r.edge, (labels_hash(r), r.time.div_euclid(86_400_000_000)));
            }
        }
    }

    pub(super) fn clear(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

#[derive(Deserialize)]
struct Counts {
    edge: i64,
    connections: i64,
    packets: i64,
    bytes: i64,
    first_seen: i64,
    last_seen: i64,
}

impl ClickHouseStore {
    pub(super) async fn edges_in(&self, window: &EdgeWindow) -> Result<Vec<Edge>, Error> {
        let until = window.until.unwrap_or(Timestamp(i64::MAX / 2));
        let mut w = Where::new(Dialect::ClickHouse);
        w.push(format!(
            "time >= {} AND time <= {}",
            window.since.0, until.0
        ));
        w.push(format!("day >= toDate('{}')", window.since.date()));
        if window.until.is_some() {
            w.push(format!("day <= toDate('{}')", until.date()));
        }
        // Per connection leg (its latest counters), then per edge.
        let counts: Vec<Counts> = self
            .select(
                "edges",
                &format!(
                    "SELECT edge, toInt64(count()) AS connections, sum(p) AS packets,
                            sum(b) AS bytes, min(f) AS first_seen, max(l) AS last_seen
                     FROM (SELECT any(edge) AS edge, max(packets) AS p, max(bytes) AS b,
                                  min(time) AS f, max(time) AS l
                           FROM flows {} GROUP BY leg)
                     GROUP BY edge",
                    w.clause()
                ),
            )
            .await?;
        if counts.is_empty() {
            return Ok(Vec::new());
        }
        // The ends as of the window's end: a row after it only if there is none before.
        let rank = format!("if(time <= {0}, time, -time)", until.0);
        let ends: Vec<EdgeEnd> = self
            .select(
                "edges",
                &format!(
                    "SELECT edge, max(time) AS latest, argMax(s, {rank}) AS s,
                            argMax(sw, {rank}) AS sw, argMax(d, {rank}) AS d,
                            argMax(dw, {rank}) AS dw, any(protocol) AS protocol,
                            any(dst_port) AS dst_port, any(verdict) AS verdict,
                            any(policy) AS policy, argMax(sl, {rank}) AS sl,
                            argMax(dl, {rank}) AS dl
                     FROM edge_ends GROUP BY edge"
                ),
            )
            .await?;
        let ends: HashMap<i64, EdgeEnd> = ends.into_iter().map(|e| (e.edge, e)).collect();
        let mut rows = Vec::with_capacity(counts.len());
        for c in counts {
            let e = ends.get(&c.edge).ok_or_else(|| Error::Corrupt {
                backend: super::BACKEND,
                what: format!("edge {} has no row in edge_ends", c.edge),
            })?;
            rows.push(EdgeRow {
                src: e.s.clone(),
                src_is_workload: e.sw != 0,
                src_labels: e.sl.clone(),
                dst: e.d.clone(),
                dst_is_workload: e.dw != 0,
                dst_labels: e.dl.clone(),
                protocol: e.protocol,
                dst_port: e.dst_port,
                verdict: e.verdict.clone(),
                policy: some(e.policy.clone()),
                connections: c.connections,
                packets: c.packets,
                bytes: c.bytes,
                first_seen: c.first_seen,
                last_seen: c.last_seen,
            });
        }
        finish(rows, super::BACKEND)
    }
}
