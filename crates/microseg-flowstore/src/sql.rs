//! What the back ends share: the stored row, the filter as SQL, and the sequence that
//! orders records for `after`.

use crate::error::{labels, narrow, RowError};
use crate::filter::FlowFilter;
use crate::record::{Direction, FlowRecord, Protocol, Verdict};
use crate::selector::Selector;
use crate::time::Timestamp;
use std::sync::atomic::{AtomicI64, Ordering};

/// Column order of every select and insert.
pub(crate) const COLUMNS: &str = "seq, time, node, workload, direction, src_ip, dst_ip, \
    src_port, dst_port, protocol, verdict, policy, rule, audit_verdict, audit_policy, \
    packets, bytes, src_workload, dst_workload, src_labels, dst_labels, started, ended, conn";

/// A record as the tables hold it.
#[derive(Debug, Clone)]
pub(crate) struct StoredRow {
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
    pub policy: Option<String>,
    pub rule: Option<i64>,
    pub audit_verdict: Option<String>,
    pub audit_policy: Option<String>,
    pub packets: i64,
    pub bytes: i64,
    pub src_workload: Option<String>,
    pub dst_workload: Option<String>,
    pub src_labels: String,
    pub dst_labels: String,
    pub started: i64,
    pub ended: Option<i64>,
    pub conn: i64,
}

impl StoredRow {
    pub(crate) fn from_record(r: &FlowRecord, seq: i64) -> StoredRow {
        StoredRow {
            seq,
            time: r.time.0,
            node: r.node.clone(),
            workload: r.workload.clone(),
            direction: r.direction.as_str().to_string(),
            src_ip: r.src_ip.clone(),
            dst_ip: r.dst_ip.clone(),
            src_port: r.src_port.into(),
            dst_port: r.dst_port.into(),
            protocol: r.protocol.0.into(),
            verdict: r.verdict.as_str().to_string(),
            policy: r.policy.clone(),
            rule: r.rule.map(i64::from),
            audit_verdict: r.audit_verdict.clone(),
            audit_policy: r.audit_policy.clone(),
            packets: r.packets as i64,
            bytes: r.bytes as i64,
            src_workload: r.src_workload.clone(),
            dst_workload: r.dst_workload.clone(),
            // A BTreeMap of strings: compact JSON with sorted keys, what selectors search.
            src_labels: serde_json::to_string(&r.src_labels).unwrap_or_default(),
            dst_labels: serde_json::to_string(&r.dst_labels).unwrap_or_default(),
            started: r.start.0,
            ended: r.end.map(|t| t.0),
            conn: r.connection_id(),
        }
    }

    pub(crate) fn into_record(self) -> Result<FlowRecord, RowError> {
        Ok(FlowRecord {
            time: Timestamp(self.time),
            node: self.node,
            workload: self.workload,
            direction: Direction::parse(&self.direction).ok_or(RowError::Unknown {
                field: "direction",
                value: self.direction,
            })?,
            src_ip: self.src_ip,
            dst_ip: self.dst_ip,
            src_port: narrow("src_port", self.src_port)?,
            dst_port: narrow("dst_port", self.dst_port)?,
            protocol: Protocol(narrow("protocol", self.protocol)?),
            verdict: Verdict::parse(&self.verdict).ok_or(RowError::Unknown {
                field: "verdict",
                value: self.verdict,
            })?,
            policy: self.policy,
            rule: self.rule.map(|n| narrow("rule", n)).transpose()?,
            audit_verdict: self.audit_verdict,
            audit_policy: self.audit_policy,
            packets: self.packets as u64,
            bytes: self.bytes as u64,
            src_workload: self.src_workload,
            dst_workload: self.dst_workload,
            src_labels: labels("src_labels", self.src_labels)?,
            dst_labels: labels("dst_labels", self.dst_labels)?,
            start: Timestamp(self.started),
            end: self.ended.map(Timestamp),
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Int(i64),
    Text(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
    /// Values written into the text as literals (the HTTP interface takes one string).
    ClickHouse,
}

/// A WHERE clause and its parameters.
pub(crate) struct Where {
    dialect: Dialect,
    conds: Vec<String>,
    pub params: Vec<Value>,
}

impl Where {
    pub(crate) fn new(dialect: Dialect) -> Where {
        Where {
            dialect,
            conds: Vec::new(),
            params: Vec::new(),
        }
    }

    /// A placeholder for `v` (or, for ClickHouse, `v` as a literal).
    pub(crate) fn bind(&mut self, v: Value) -> String {
        match self.dialect {
            Dialect::ClickHouse => match v {
                Value::Int(n) => n.to_string(),
                Value::Text(s) => clickhouse_string(&s),
            },
            Dialect::Sqlite | Dialect::Postgres => {
                self.params.push(v);
                let n = self.params.len();
                match (self.dialect, &self.params[n - 1]) {
                    (Dialect::Sqlite, _) => format!("?{n}"),
                    // Typed, so that an INTEGER column compares with a bigint parameter.
                    (_, Value::Int(_)) => format!("${n}::bigint"),
                    (_, Value::Text(_)) => format!("${n}::text"),
                }
            }
        }
    }

    pub(crate) fn push(&mut self, cond: String) {
        self.conds.push(cond);
    }

    fn eq_text(&mut self, column: &str, v: &Option<String>) {
        if let Some(v) = v {
            let p = self.bind(Value::Text(v.clone()));
            self.push(format!("{column} = {p}"));
        }
    }

    pub(crate) fn filter(&mut self, f: &FlowFilter) {
        if let Some(t) = f.since {
            let p = self.bind(Value::Int(t.0));
            self.push(format!("time >= {p}"));
        }
        if let Some(t) = f.until {
            let p = self.bind(Value::Int(t.0));
            self.push(format!("time <= {p}"));
        }
        let verdict = f.verdict.map(|v| v.as_str().to_string());
        self.eq_text("verdict", &verdict);
        let direction = f.direction.map(|d| d.as_str().to_string());
        self.eq_text("direction", &direction);
        if let Some(w) = &f.workload {
            let p = self.bind(Value::Text(w.clone()));
            self.push(format!(
                "(workload = {p} OR src_workload = {p} OR dst_workload = {p})"
            ));
        }
        self.selector("src_labels", &f.from);
        self.selector("dst_labels", &f.to);
        if let Some(port) = f.port {
            let p = self.bind(Value::Int(port.into()));
            self.push(format!("dst_port = {p}"));
        }
        if let Some(proto) = f.protocol {
            let p = self.bind(Value::Int(proto.0.into()));
            self.push(format!("protocol = {p}"));
        }
        self.eq_text("policy", &f.policy);
        self.eq_text("node", &f.node);
    }

    fn selector(&mut self, column: &str, s: &Selector) {
        let find = match self.dialect {
            Dialect::Sqlite => "instr",
            Dialect::Postgres => "strpos",
            Dialect::ClickHouse => "position",
        };
        for req in &s.0 {
            let (needle, present) = req.needle();
            let first = self.bind(Value::Text(format!("{{{needle}")));
            let later = self.bind(Value::Text(format!(",{needle}")));
            let found = format!("({find}({column}, {first}) > 0 OR {find}({column}, {later}) > 0)");
            self.push(if present {
                found
            } else {
                format!("NOT {found}")
            });
        }
    }

    pub(crate) fn clause(&self) -> String {
        if self.conds.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", self.conds.join(" AND "))
        }
    }
}

/// A ClickHouse string literal.
pub(crate) fn clickhouse_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            _ => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// Hands out the numbers that order records for `after`: increasing within a process,
/// and near the wall clock in microseconds, so that stores written by several
/// controllers interleave roughly in time.
pub(crate) struct SeqClock(AtomicI64);

impl SeqClock {
    pub(crate) fn new(last_stored: i64) -> SeqClock {
        SeqClock(AtomicI64::new(last_stored))
    }

    /// The first of `n` consecutive numbers.
    pub(crate) fn take(&self, n: usize) -> i64 {
        let now_us = Timestamp::now().0;
        let mut prev = self.0.load(Ordering::Relaxed);
        loop {
            let first = (prev + 1).max(now_us);
            let last = first + n as i64 - 1;
            match self
                .0
                .compare_exchange(prev, last, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return first,
                Err(p) => prev = p,
            }
        }
    }
}
