//! How each node's reports went and since when revisions wait for it, kept in memory
//! (docs/CONTROLLER.md "Bad nodes"): shown per node in `GET /v1/nodes` and
//! `microseg status`, counted fleet-wide in `/metrics` (docs/METRICS.md).

use super::{now, rfc3339};
use crate::api_types::{NodeReports, Refusal};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Why a report was refused, whole or in part: the `reason` label's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// More workloads than `--max-workloads-per-node`: refused whole.
    OverLimit,
    /// Invalid workloads (name, interface, address, label): those skipped.
    Invalid,
    /// Workloads whose address or name another workload holds: those skipped.
    Conflict,
}

impl Reason {
    pub const ALL: [Reason; 3] = [Reason::OverLimit, Reason::Invalid, Reason::Conflict];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::OverLimit => "over_limit",
            Reason::Invalid => "invalid",
            Reason::Conflict => "conflict",
        }
    }
}

/// What was skipped of one report, by reason, with the first problem's words.
#[derive(Debug, Default)]
pub struct Skipped {
    pub invalid: usize,
    pub conflict: usize,
    pub first: Option<(Reason, String)>,
}

impl Skipped {
    pub fn add(&mut self, reason: Reason, message: impl FnOnce() -> String) {
        match reason {
            Reason::Conflict => self.conflict += 1,
            _ => self.invalid += 1,
        }
        if self.first.is_none() {
            self.first = Some((reason, message()));
        }
    }
}

#[derive(Default)]
struct Counts {
    per_node: HashMap<String, NodeReports>,
    /// Reports refused (whole or in part) by reason, since the start.
    refused: [u64; 3],
    /// Workloads skipped, [invalid, conflict].
    skipped: [u64; 2],
}

/// The fleet-wide counts `/metrics` shows.
pub struct Totals {
    pub reports_refused: [(Reason, u64); 3],
    pub workloads_invalid: u64,
    pub workloads_conflict: u64,
    /// Nodes whose latest report was refused, whole or in part.
    pub nodes_refused: u64,
}

/// Per node reports, and when each revision was first seen (one entry a second at most).
#[derive(Default)]
pub struct Health {
    counts: Mutex<Counts>,
    /// (newest revision of the second, when its first revision was seen), oldest first.
    revisions: Mutex<VecDeque<(u64, f64)>>,
}

/// How many seconds of revision times are kept: a node behind for longer shows the
/// oldest kept (a day of one revision every second).
const REVISION_SECONDS: usize = 86_400;

fn index(r: Reason) -> usize {
    r as usize
}

impl Health {
    /// A report taken: whole (`skipped` empty), or in part.
    pub fn reported(&self, node: &str, skipped: Skipped) {
        let at = rfc3339(now());
        let Ok(mut c) = self.counts.lock() else {
            return;
        };
        let reason = skipped.first.as_ref().map(|(r, _)| *r);
        if let Some(r) = reason {
            c.refused[index(r)] += 1;
        }
        c.skipped[0] += skipped.invalid as u64;
        c.skipped[1] += skipped.conflict as u64;
        let n = c.per_node.entry(node.to_string()).or_default();
        n.received += 1;
        n.workloads_skipped += (skipped.invalid + skipped.conflict) as u64;
        n.last_refused = reason.is_some();
        if let Some((reason, first)) = skipped.first {
            n.refused += 1;
            let total = skipped.invalid + skipped.conflict;
            n.last_refusal = Some(Refusal {
                at,
                message: format!("{total} workload(s) skipped; the first: {first}"),
                reason: reason.as_str().into(),
            });
        }
    }

    /// A report refused whole.
    pub fn refused(&self, node: &str, reason: Reason, message: &str) {
        let at = rfc3339(now());
        let Ok(mut c) = self.counts.lock() else {
            return;
        };
        c.refused[index(reason)] += 1;
        let n = c.per_node.entry(node.to_string()).or_default();
        n.received += 1;
        n.refused += 1;
        n.last_refused = true;
        n.last_refusal = Some(Refusal {
            at,
            message: message.to_string(),
            reason: reason.as_str().into(),
        });
    }

    pub fn of(&self, node: &str) -> Option<NodeReports> {
        self.counts.lock().ok()?.per_node.get(node).cloned()
    }

    pub fn totals(&self) -> Totals {
        let c = self.counts.lock().map(|c| {
            let nodes = c.per_node.values().filter(|n| n.last_refused).count();
            (c.refused, c.skipped, nodes as u64)
        });
        let (refused, skipped, nodes) = c.unwrap_or_default();
        Totals {
            reports_refused: Reason::ALL.map(|r| (r, refused[index(r)])),
            workloads_invalid: skipped[0],
            workloads_conflict: skipped[1],
            nodes_refused: nodes,
        }
    }

    /// `revision` is the newest now.
    pub fn revision_seen(&self, revision: u64, at: f64) {
        let Ok(mut r) = self.revisions.lock() else {
            return;
        };
        match r.back_mut() {
            Some((rev, _)) if *rev >= revision => {}
            Some((rev, t)) if at - *t < 1.0 => *rev = revision,
            _ => {
                if r.len() >= REVISION_SECONDS {
                    r.pop_front();
                }
                r.push_back((revision, at));
            }
        }
    }

    /// When the first revision after `acked` was seen (the oldest time kept when it is
    /// older); None when there is none.
    pub fn behind_since(&self, acked: u64) -> Option<f64> {
        let r = self.revisions.lock().ok()?;
        let i = r.partition_point(|(rev, _)| *rev <= acked);
        r.get(i).map(|(_, t)| *t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behind_since_is_when_the_first_missing_revision_was_seen() {
        let h = Health::default();
        h.revision_seen(3, 100.0);
        h.revision_seen(4, 100.5); // the same second: merged into the entry of 100.0
        h.revision_seen(7, 105.0);
        h.revision_seen(9, 110.0);
        assert_eq!(h.behind_since(2), Some(100.0));
        assert_eq!(h.behind_since(4), Some(105.0));
        assert_eq!(h.behind_since(6), Some(105.0));
        assert_eq!(h.behind_since(8), Some(110.0));
        assert_eq!(h.behind_since(9), None);
    }

    #[test]
    fn a_clean_report_clears_the_refused_mark_not_the_counts() {
        let h = Health::default();
        h.refused("a", Reason::OverLimit, "too many");
        let mut s = Skipped::default();
        s.add(Reason::Invalid, || "bad name".into());
        s.add(Reason::Conflict, || "address taken".into());
        h.reported("a", s);
        let n = h.of("a").unwrap();
        assert_eq!((n.received, n.refused, n.workloads_skipped), (2, 2, 2));
        assert!(n.last_refused);
        assert_eq!(n.last_refusal.as_ref().unwrap().reason, "invalid");
        assert_eq!(h.totals().nodes_refused, 1);
        h.reported("a", Skipped::default());
        let n = h.of("a").unwrap();
        assert!(!n.last_refused && n.last_refusal.is_some());
        let t = h.totals();
        assert_eq!(t.nodes_refused, 0);
        assert_eq!(t.reports_refused[0], (Reason::OverLimit, 1));
        assert_eq!(t.reports_refused[1], (Reason::Invalid, 1));
        assert_eq!((t.workloads_invalid, t.workloads_conflict), (1, 1));
    }
}
