//! What the controller does, independent of how it is asked: label resources, take the
//! workloads agents report, and keep the recent flows (apply and delete: `apply.rs`).

use crate::error::Error;
pub use crate::flows::{parse_duration, FlowQuery, Flows};
use crate::resources::{self, WORKLOAD};
use crate::store::{publish, Reported, Row, Snapshot, Store, Write};
use microseg_policy::{
    check_interface, check_label_key, check_label_value, check_name, Mode, Workload,
};
use microseg_proto::v1::DiscoveredWorkload;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// RFC 3339 UTC with milliseconds.
pub fn rfc3339(unix: f64) -> String {
    let ms = (unix * 1000.0).round() as i64;
    let (secs, milli) = (ms.div_euclid(1000), ms.rem_euclid(1000));
    let (days, sod) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{milli:03}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    )
}

/// Largest flow a node may upload, in bytes of JSON: a flow holds about 400.
pub const MAX_FLOW_BYTES: usize = 4096;

/// Most workloads one node may report (a Kubernetes node runs at most a few hundred pods).
pub const MAX_REPORTED_WORKLOADS: usize = 10_000;

/// Most addresses one reported workload may have.
pub const MAX_WORKLOAD_ADDRESSES: usize = 64;

pub struct Core {
    pub store: Arc<dyn Store>,
    /// The newest revision known (local writes and, via the store, other controllers').
    pub rev: Arc<watch::Sender<u64>>,
    pub flows: Mutex<Flows>,
    /// Nodes with an open Sync stream to this controller, and how many.
    pub streams: Mutex<BTreeMap<String, usize>>,
    pub shutdown: watch::Receiver<bool>,
}

const NODE_ANNOTATION: &str = "microseg.io/node";
const REVISION_ANNOTATION: &str = "microseg.io/revision";

/// A stored row as the API shows it: the document plus annotations for the revision
/// that last changed it and, for a discovered workload, its node.
pub fn decorate(r: &Row) -> Result<Value, Error> {
    let mut doc = resources::to_json(r.resource()?);
    if let Some(meta) = doc.get_mut("metadata").and_then(Value::as_object_mut) {
        let mut ann = serde_json::Map::new();
        ann.insert(REVISION_ANNOTATION.into(), json!(r.revision.to_string()));
        if !r.node.is_empty() {
            ann.insert(NODE_ANNOTATION.into(), json!(r.node));
        }
        meta.insert("annotations".into(), Value::Object(ann));
    }
    Ok(doc)
}

/// The document as node `node` receives it: the workloads discovered on other nodes lose
/// their interface (it names a link on that other node), so they are peers only.
pub fn for_node(r: &Row, node: &str) -> Result<String, Error> {
    if r.node.is_empty() || r.node == node {
        return Ok(r.json.clone());
    }
    let mut w = r.workload()?.clone();
    w.interface = None;
    Ok(resources::workload_json(&w).to_string())
}

fn effective_labels(
    reported: &BTreeMap<String, String>,
    overlay: Option<&BTreeMap<String, Option<String>>>,
) -> BTreeMap<String, String> {
    let mut l = reported.clone();
    for (k, v) in overlay.into_iter().flatten() {
        match v {
            Some(v) => l.insert(k.clone(), v.clone()),
            None => l.remove(k),
        };
    }
    l
}

impl Core {
    pub fn new(
        store: Arc<dyn Store>,
        rev: Arc<watch::Sender<u64>>,
        flow_buffer: usize,
        shutdown: watch::Receiver<bool>,
    ) -> Core {
        Core {
            store,
            rev,
            flows: Mutex::new(Flows::new(flow_buffer)),
            streams: Mutex::new(BTreeMap::new()),
            shutdown,
        }
    }

    pub(crate) fn published(&self, rev: u64) -> u64 {
        publish(&self.rev, rev);
        rev
    }

    /// Merges labels into a workload: `Some(v)` sets, `None` removes. On a discovered
    /// workload the change is kept apart from what the agent reports and wins over it.
    pub async fn label(
        &self,
        name: &str,
        changes: BTreeMap<String, Option<String>>,
    ) -> Result<(u64, BTreeMap<String, String>), Error> {
        let mut problems = Vec::new();
        for (k, v) in &changes {
            problems.extend(check_label_key(k));
            if let Some(v) = v {
                problems.extend(check_label_value(v));
            }
        }
        if !problems.is_empty() {
            return Err(Error::invalid(problems));
        }
        if changes.is_empty() {
            return Err(Error::bad("no labels given"));
        }
        let mut result = BTreeMap::new();
        let out = &mut result;
        let rev = self
            .store
            .transact(Box::new(move |snap: &Snapshot| {
                let row = snap
                    .get(WORKLOAD, name)
                    .ok_or_else(|| Error::NotFound(format!("Workload \"{name}\" not found")))?;
                let mut workload = row.workload()?.clone();
                let mut writes = Vec::new();
                let labels = if row.node.is_empty() {
                    let mut l = workload.labels.clone();
                    for (k, v) in &changes {
                        match v {
                            Some(v) => l.insert(k.clone(), v.clone()),
                            None => l.remove(k),
                        };
                    }
                    l
                } else {
                    let mut overlay = snap.overlays.get(name).cloned().unwrap_or_default();
                    overlay.extend(changes.clone());
                    let reported = row.reported.clone().unwrap_or_default();
                    let l = effective_labels(&reported.labels, Some(&overlay));
                    writes.push(Write::Overlay {
                        name: name.to_string(),
                        labels: overlay,
                    });
                    l
                };
                workload.labels = labels.clone();
                let json = resources::workload_json(&workload).to_string();
                if json != row.json {
                    writes.push(Write::Put {
                        kind: WORKLOAD.into(),
                        name: name.to_string(),
                        json,
                        node: row.node.clone(),
                        reported: row.reported.clone(),
                    });
                }
                *out = labels;
                Ok(writes)
            }))
            .await?;
        Ok((self.published(rev), result))
    }

    /// Replaces the workloads discovered on `node` with `report`. Entries that are not
    /// valid (name, interface, address, label) are skipped with a warning.
    pub async fn report(&self, node: &str, report: Vec<DiscoveredWorkload>) -> Result<u64, Error> {
        if let Some(e) = check_name(node) {
            return Err(Error::bad(format!("node: {e}")));
        }
        // The report is processed under the store's lock: its size is bounded.
        if report.len() > MAX_REPORTED_WORKLOADS {
            return Err(Error::bad(format!(
                "node {node}: {} workloads reported, at most {MAX_REPORTED_WORKLOADS} per node",
                report.len()
            )));
        }
        let mut ok = Vec::new();
        for w in report {
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
                match ip.parse::<std::net::IpAddr>() {
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
                ok.push((w, ips));
            } else {
                log::warn!(
                    "node {node}: skipping reported workload {:?}: {}",
                    w.name,
                    errs.join("; ")
                );
            }
        }
        let rev = self
            .store
            .transact(Box::new(move |snap: &Snapshot| {
                let mine: Vec<&Row> = snap
                    .rows
                    .iter()
                    .filter(|r| r.kind == WORKLOAD && r.node == node)
                    .collect();
                // By the name the node reported (a stored name may carry `.<node>`).
                // The first row wins, should two carry one reported name.
                let mut mine_by_reported: HashMap<String, &Row> = HashMap::new();
                for r in &mine {
                    let reported = r
                        .reported
                        .as_ref()
                        .map_or_else(|| r.name.clone(), |x| x.name.clone());
                    mine_by_reported.entry(reported).or_insert(r);
                }
                let workload_names: HashSet<&str> = snap
                    .rows
                    .iter()
                    .filter(|r| r.kind == WORKLOAD)
                    .map(|r| r.name.as_str())
                    .collect();
                // Addresses of every other workload: a report must not make the set
                // invalid for the agents (an address belongs to one workload).
                let mut used: HashMap<IpAddr, &str> = HashMap::new();
                for r in snap.rows.iter().filter(|r| r.kind == WORKLOAD && r.node != node) {
                    for ip in &r.workload()?.ips {
                        used.insert(*ip, &r.name);
                    }
                }
                let mut writes = Vec::new();
                let mut kept: HashSet<String> = HashSet::new();
                for (w, ips) in &ok {
                    if let Some((ip, other)) = ips.iter().find_map(|ip| used.get_key_value(ip)) {
                        log::warn!(
                            "node {node}: skipping reported workload {:?}: address {ip} belongs to workload {other:?}",
                            w.name
                        );
                        continue;
                    }
                    let existing = mine_by_reported.get(&w.name).copied();
                    let name = match existing {
                        Some(r) => r.name.clone(),
                        None => {
                            let taken = |n: &str| {
                                workload_names.contains(n) || kept.contains(n)
                            };
                            if !taken(&w.name) {
                                w.name.clone()
                            } else {
                                let alt = format!("{}.{node}", w.name);
                                if taken(&alt) || check_name(&alt).is_some() {
                                    log::warn!(
                                        "node {node}: workload name {:?} is taken; skipped",
                                        w.name
                                    );
                                    continue;
                                }
                                alt
                            }
                        }
                    };
                    let labels: BTreeMap<String, String> = w
                        .labels
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    let eff = effective_labels(&labels, snap.overlays.get(&name));
                    let workload = Workload {
                        name: name.clone(),
                        labels: eff,
                        interface: (!w.interface.is_empty()).then(|| w.interface.clone()),
                        ips: ips.clone(),
                        mode: Mode::Enforce,
                        origin: Default::default(),
                    };
                    let json = resources::workload_json(&workload).to_string();
                    let reported = Reported {
                        name: w.name.clone(),
                        labels,
                    };
                    let same = existing.is_some_and(|r| {
                        r.json == json && r.reported.as_ref() == Some(&reported)
                    });
                    if !same {
                        writes.push(Write::Put {
                            kind: WORKLOAD.into(),
                            name: name.clone(),
                            json,
                            node: node.to_string(),
                            reported: Some(reported),
                        });
                    }
                    kept.insert(name);
                }
                for r in &mine {
                    if !kept.contains(&r.name) {
                        writes.push(Write::Delete {
                            kind: WORKLOAD.into(),
                            name: r.name.clone(),
                        });
                    }
                }
                Ok(writes)
            }))
            .await?;
        Ok(self.published(rev))
    }

    pub async fn list(&self, kind: &str) -> Result<(u64, Vec<Value>), Error> {
        let rev = self.store.revision().await?;
        let rows = self.store.list(Some(kind)).await?;
        Ok((rev, rows.iter().map(decorate).collect::<Result<_, _>>()?))
    }

    pub async fn get(&self, kind: &str, name: &str) -> Result<Value, Error> {
        let rows = self.store.list(Some(kind)).await?;
        rows.iter()
            .find(|r| r.name == name)
            .map(decorate)
            .ok_or_else(|| Error::NotFound(format!("{kind} \"{name}\" not found")))?
    }

    pub async fn nodes(&self) -> Result<(u64, Vec<Value>), Error> {
        let rev = self.store.revision().await?;
        let streams = self.streams.lock().map(|s| s.clone()).unwrap_or_default();
        let nodes = self.store.nodes().await?;
        let items = nodes
            .iter()
            .map(|n| {
                json!({
                    "name": n.name,
                    "revision": n.revision,
                    "controllerRevision": rev,
                    "lag": rev.saturating_sub(n.revision),
                    "inSync": n.revision >= rev && n.error.is_empty(),
                    "connected": streams.get(&n.name).copied().unwrap_or(0) > 0,
                    "lastSeen": rfc3339(n.last_seen),
                    "lastAck": n.last_ack.map(rfc3339),
                    "error": (!n.error.is_empty()).then_some(&n.error),
                })
            })
            .collect();
        Ok((rev, items))
    }

    /// Keeps the flows `node` uploaded; returns how many were kept. A flow is always
    /// `node`'s, whatever it says: a node speaks only for itself. One larger than
    /// [`MAX_FLOW_BYTES`] is dropped, so the bounded buffer is bounded in bytes too.
    pub fn add_flows(&self, node: &str, flows: &[String]) -> u64 {
        let at = now();
        let mut accepted = 0;
        if let Ok(mut f) = self.flows.lock() {
            for text in flows {
                if text.len() > MAX_FLOW_BYTES {
                    continue;
                }
                let Ok(mut v) = serde_json::from_str::<Value>(text) else {
                    continue;
                };
                let Some(obj) = v.as_object_mut() else {
                    continue;
                };
                obj.insert("node".into(), json!(node));
                f.push(at, v);
                accepted += 1;
            }
        }
        accepted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_uploaded_flow_is_its_uploaders_and_bounded_in_size() {
        let store = crate::store::sqlite::Sqlite::open(std::path::Path::new(":memory:")).unwrap();
        let (rev, _) = watch::channel(0);
        let (_stop, shutdown) = watch::channel(false);
        let core = Core::new(Arc::new(store), Arc::new(rev), 100, shutdown);
        let flow = |node: &str, pad: usize| {
            json!({"node": node, "workload": "db-1", "verdict": "deny", "pad": "x".repeat(pad)})
                .to_string()
        };
        let kept = core.add_flows("a", &[flow("b", 0), flow("", 0), flow("a", MAX_FLOW_BYTES)]);
        assert_eq!(kept, 2, "the oversized flow is dropped");
        let flows = core
            .flows
            .lock()
            .unwrap()
            .query(&FlowQuery::default())
            .unwrap();
        let nodes: Vec<_> = flows.iter().map(|f| f["node"].as_str().unwrap()).collect();
        assert_eq!(nodes, ["a", "a"], "a node cannot speak for another");
    }

    #[test]
    fn times_format_as_rfc3339() {
        assert_eq!(rfc3339(0.0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_000_000.5), "2026-11-18T11:06:40.500Z");
        assert_eq!(rfc3339(951_782_400.0), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn overlays_win_over_reported_labels() {
        let rep: BTreeMap<String, String> =
            [("a".into(), "1".into()), ("b".into(), "2".into())].into();
        let ov: BTreeMap<String, Option<String>> =
            [("a".into(), Some("9".into())), ("b".into(), None)].into();
        let l = effective_labels(&rep, Some(&ov));
        assert_eq!(l, [("a".to_string(), "9".to_string())].into());
    }
}
