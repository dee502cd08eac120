//! The workloads an agent reports: checked one by one (an invalid one is skipped with a
//! warning), then matched against the stored workloads under the store's lock, which
//! gives each its stored name and replaces what the node reported before.

use super::health::{Reason, Skipped};
use super::resources::effective_labels;
use super::Core;
use crate::error::{printable, Error};
use crate::resources::{self, WORKLOAD};
use crate::store::{Reported, Row, Snapshot, Write};
use microseg_policy::{
    check_interface, check_label_key, check_label_value, check_name, Mode, Workload,
};
use microseg_proto::v1::DiscoveredWorkload;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// `--max-workloads-per-node`'s default: Kubernetes runs at most 110 pods on a node by
/// default and large nodes a few hundred; this leaves room for hosts of many containers
/// (docs/CONTROLLER.md "Bad nodes").
pub const DEFAULT_MAX_WORKLOADS_PER_NODE: usize = 2_000;

/// Most addresses one reported workload may have.
pub const MAX_WORKLOAD_ADDRESSES: usize = 64;

/// A reported workload that passed the checks, its addresses parsed and without repeats.
pub(super) struct Checked {
    reported: DiscoveredWorkload,
    ips: Vec<IpAddr>,
}

/// What is wrong with one reported workload, or its addresses.
fn check_one(w: &DiscoveredWorkload) -> Result<Vec<IpAddr>, Vec<String>> {
    let mut errs: Vec<String> = Vec::new();
    errs.extend(check_name(&w.name));
    if !w.interface.is_empty() {
        errs.extend(check_interface(&w.interface));
    }
    if w.ips.len() > MAX_WORKLOAD_ADDRESSES {
        errs.push(format!(
            "{} addresses, at most {MAX_WORKLOAD_ADDRESSES}",
            w.ips.len()
        ));
    }
    let mut ips = Vec::new();
    let mut seen = HashSet::new();
    for ip in w.ips.iter().take(MAX_WORKLOAD_ADDRESSES + 1) {
        match ip.parse::<IpAddr>() {
            Ok(a) if seen.insert(a) => ips.push(a),
            Ok(_) => {}
            Err(_) => errs.push(format!("invalid address {ip:?}")),
        }
    }
    for (k, v) in &w.labels {
        errs.extend(check_label_key(k));
        errs.extend(check_label_value(v));
    }
    if errs.is_empty() {
        Ok(ips)
    } else {
        Err(errs)
    }
}

/// Longest part of a reported value a warning quotes: a node may send megabytes of it.
const QUOTED_CHARS: usize = 120;

/// The valid workloads of a report; the others are skipped (and counted in `skipped`)
/// with one warning per report, which counts them and quotes the first, cut short: a
/// node sending garbage in a loop must not flood the log.
fn check_all(node: &str, report: Vec<DiscoveredWorkload>, skipped: &mut Skipped) -> Vec<Checked> {
    let mut ok = Vec::new();
    let mut first = None;
    for w in report {
        match check_one(&w) {
            Ok(ips) => ok.push(Checked { reported: w, ips }),
            Err(errs) => {
                let (workload, error) =
                    first.get_or_insert_with(|| (quoted(&w.name), quoted(&errs.join("; "))));
                skipped.add(Reason::Invalid, || format!("\"{workload}\": {error}"));
            }
        }
    }
    if let Some((workload, error)) = first {
        tracing::warn!(
            node,
            skipped = skipped.invalid,
            workload = %workload,
            error = %error,
            "skipping reported workloads that are invalid (the first is quoted)"
        );
    }
    ok
}

/// `s` made printable, cut to [`QUOTED_CHARS`] characters (saying how long it was).
fn quoted(s: &str) -> String {
    if s.chars().count() <= QUOTED_CHARS {
        return printable(s).into_owned();
    }
    let head: String = s.chars().take(QUOTED_CHARS).collect();
    format!("{}... ({} bytes in all)", printable(&head), s.len())
}

/// The stored workloads a report is matched against, from the indexes of the live state:
/// a report costs its own size, not the fleet's.
struct Stored<'s> {
    node: &'s str,
    snap: &'s Snapshot,
    /// This node's workloads.
    mine: Vec<&'s Row>,
    /// The same, by the name the node reported (a stored name may carry `.<node>`); the
    /// first row wins, should two carry one reported name.
    mine_by_reported: HashMap<&'s str, &'s Row>,
}

impl<'s> Stored<'s> {
    fn of(snap: &'s Snapshot, node: &'s str) -> Stored<'s> {
        let mine: Vec<&Row> = snap.rows.of_node(node).collect();
        let mut mine_by_reported = HashMap::new();
        for r in &mine {
            let reported = r.reported.as_ref().map_or(r.name.as_str(), |x| &x.name);
            mine_by_reported.entry(reported).or_insert(*r);
        }
        Stored {
            node,
            snap,
            mine,
            mine_by_reported,
        }
    }

    /// Another node's (or the API's) workload that has `ip`: a report must not make the
    /// set invalid for the agents (an address belongs to one workload).
    fn owner(&self, ip: &IpAddr) -> Option<&'s str> {
        self.snap
            .rows
            .with_address(ip)
            .find(|r| r.node != self.node)
            .map(|r| r.name.as_str())
    }

    /// The name a reported workload is stored under: the one it has, else the reported
    /// name, else `<name>.<node>`; None when all are taken (`kept`: names this report
    /// already gave).
    fn stored_name(&self, reported: &str, kept: &HashSet<String>) -> Option<String> {
        if let Some(r) = self.mine_by_reported.get(reported) {
            return Some(r.name.clone());
        }
        let taken = |n: &str| self.snap.get(WORKLOAD, n).is_some() || kept.contains(n);
        if !taken(reported) {
            return Some(reported.to_string());
        }
        let alt = format!("{reported}.{}", self.node);
        (!taken(&alt) && check_name(&alt).is_none()).then_some(alt)
    }

    /// The write that stores `c` as `name`, unless it is stored so already.
    fn put(&self, c: &Checked, name: &str, snap: &Snapshot) -> Option<Write> {
        let labels: BTreeMap<String, String> = c.reported.labels.clone().into_iter().collect();
        let workload = Workload {
            name: name.to_string(),
            labels: effective_labels(&labels, snap.overlays.get(name)),
            interface: (!c.reported.interface.is_empty()).then(|| c.reported.interface.clone()),
            ips: c.ips.clone(),
            mode: Mode::Enforce,
            origin: Default::default(),
        };
        let json = resources::workload_json(&workload).to_string();
        let reported = Reported {
            name: c.reported.name.clone(),
            labels,
        };
        let existing = self.mine_by_reported.get(c.reported.name.as_str());
        if existing.is_some_and(|r| r.json == json && r.reported.as_ref() == Some(&reported)) {
            return None;
        }
        Some(Write::Put {
            kind: WORKLOAD.into(),
            name: name.to_string(),
            json,
            node: self.node.to_string(),
            reported: Some(reported),
        })
    }
}

/// The writes that make the node's stored workloads what it reported; the workloads
/// skipped for an address or name another holds are counted in `skipped`.
pub(super) fn replace(
    node: &str,
    report: &[Checked],
    snap: &Snapshot,
    skipped: &Mutex<Skipped>,
) -> Result<Vec<Write>, Error> {
    let mut conflicts = Skipped::default();
    let stored = Stored::of(snap, node);
    let mut writes = Vec::new();
    let mut kept: HashSet<String> = HashSet::new();
    for c in report {
        let name = &c.reported.name;
        if let Some((ip, other)) = c
            .ips
            .iter()
            .find_map(|ip| stored.owner(ip).map(|o| (ip, o)))
        {
            tracing::warn!(
                node,
                workload = %printable(name),
                address = %ip,
                owner = %printable(other),
                "skipping a reported workload: its address belongs to another workload"
            );
            conflicts.add(Reason::Conflict, || {
                format!(
                    "\"{}\": address {ip} belongs to workload \"{}\"",
                    quoted(name),
                    quoted(other)
                )
            });
            continue;
        }
        let Some(stored_name) = stored.stored_name(name, &kept) else {
            tracing::warn!(
                node,
                workload = %printable(name),
                "skipping a reported workload: its name is taken"
            );
            conflicts.add(Reason::Conflict, || {
                format!("\"{}\": the name is taken", quoted(name))
            });
            continue;
        };
        writes.extend(stored.put(c, &stored_name, snap));
        kept.insert(stored_name);
    }
    for r in &stored.mine {
        if !kept.contains(&r.name) {
            writes.push(Write::Delete {
                kind: WORKLOAD.into(),
                name: r.name.clone(),
            });
        }
    }
    // A transaction may run this again: the last run's count stands.
    if let Ok(mut s) = skipped.lock() {
        *s = conflicts;
    }
    Ok(writes)
}

impl Core {
    /// Replaces the workloads discovered on `node` with `report`. Entries that are not
    /// valid (name, interface, address, label) are skipped with a warning; a report of
    /// more than `--max-workloads-per-node` is refused whole and changes nothing. Either
    /// is counted for the node (`health.rs`).
    pub async fn report(&self, node: &str, report: Vec<DiscoveredWorkload>) -> Result<u64, Error> {
        if let Some(e) = check_name(node) {
            return Err(Error::bad(format!("node: {e}")));
        }
        // The report is processed under the store's lock: its size is bounded.
        let max = self.max_workloads_per_node;
        if report.len() > max {
            let message = format!(
                "node {node} reported {} workloads, more than the {max} a node may report \
                 (the controller's --max-workloads-per-node): the report is refused whole \
                 and the node's previous workloads stay",
                report.len()
            );
            tracing::warn!(
                node,
                workloads = report.len(),
                max,
                "refusing a workload report"
            );
            self.health.refused(node, Reason::OverLimit, &message);
            return Err(Error::http(413, message));
        }
        let mut invalid = Skipped::default();
        let report = check_all(node, report, &mut invalid);
        let conflicts = Arc::new(Mutex::new(Skipped::default()));
        if let Some(rev) = self.unchanged(node, &report, &conflicts).await {
            self.health.reported(node, merged(invalid, &conflicts));
            return Ok(rev);
        }
        let (done, result) = tokio::sync::oneshot::channel();
        let pending = super::batch::Pending {
            node: node.to_string(),
            report,
            skipped: conflicts.clone(),
            done,
        };
        self.reports
            .send(&self.store, &self.rev, &self.sending, pending);
        let rev = result
            .await
            .map_err(|_| Error::http(503, "the controller is stopping"))??;
        self.health.reported(node, merged(invalid, &conflicts));
        Ok(self.published(rev))
    }

    /// The revision when the report changes nothing that the memory holds, answered
    /// without the store's write lock: a node that sends the same (or the same invalid)
    /// report in a loop must not hold up the writes and the streams of the others
    /// (docs/CONTROLLER.md "Bad nodes"). None when it changes something, or the memory
    /// is behind the newest revision known.
    async fn unchanged(
        &self,
        node: &str,
        report: &[Checked],
        skipped: &Mutex<Skipped>,
    ) -> Option<u64> {
        let published = *self.rev.borrow();
        let live = self.store.live();
        let (rev, writes) = live
            .read(|snap| (snap.revision, replace(node, report, snap, skipped)))
            .await?;
        (rev >= published && writes.ok()?.is_empty()).then_some(rev)
    }
}

/// The invalid workloads of a report and those skipped as conflicts, the first problem
/// first.
fn merged(mut invalid: Skipped, conflicts: &Mutex<Skipped>) -> Skipped {
    let conflicts = std::mem::take(&mut *conflicts.lock().unwrap_or_else(|e| e.into_inner()));
    if invalid.first.is_none() {
        invalid.first = conflicts.first;
    }
    invalid.conflict = conflicts.conflict;
    invalid
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reported(name: &str, ip: &str) -> DiscoveredWorkload {
        DiscoveredWorkload {
            name: name.into(),
            interface: "eth0".into(),
            ips: vec![ip.into()],
            labels: Default::default(),
        }
    }

    #[test]
    fn a_megabyte_value_is_quoted_cut_short() {
        let huge = "x".repeat(5 << 20);
        let q = quoted(&huge);
        assert!(q.len() < 200, "{} bytes", q.len());
        assert!(q.ends_with("(5242880 bytes in all)"), "{q}");
        assert_eq!(quoted("web-1"), "web-1");
    }

    #[test]
    fn invalid_workloads_are_skipped_and_the_valid_ones_kept() {
        let report = vec![
            reported("web-1", "10.0.0.1"),
            reported(&"n".repeat(100_000), "10.0.0.2"),
            reported("db-1", "999.1.2.3"),
            reported("db-2", "garbage"),
        ];
        let mut skipped = Skipped::default();
        let ok = check_all("node-a", report, &mut skipped);
        assert_eq!(skipped.invalid, 3);
        let names: Vec<&str> = ok.iter().map(|c| c.reported.name.as_str()).collect();
        assert_eq!(names, ["web-1"]);
    }
}
