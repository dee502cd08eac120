//! Bringing the data plane in line with the resources and the node's interfaces.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use microseg_dataplane::{sessions::SessionReader, Dataplane};
use microseg_policy::compile::{local_endpoints, Compiler};
use microseg_policy::{Diagnostic, Loader, ResourceSet};

use crate::flows::FlowLog;
use crate::{interfaces, AgentOptions};

/// Everything the agent holds, behind one lock.
pub struct State {
    pub dp: Dataplane,
    /// The session table, readable without this lock (see `read_sessions`).
    pub sessions: SessionReader,
    /// Also the owner of the rule table (`compiler.rules()`).
    pub compiler: Compiler,
    /// Whether the data plane holds the compiler's last output, so the next compile's
    /// changes can be applied as they are.
    pub in_sync: bool,
    /// ifindex → workload name (shared by the flows that name it).
    pub endpoints: BTreeMap<u32, Arc<str>>,
    pub flows: FlowLog,
    pub resources: Option<ResourceSet>,
    /// Raised on every successful apply.
    pub revision: u64,
    /// The last reload's errors, while the previous policy stays in force.
    pub last_errors: Vec<String>,
    /// Managed mode: the controller revision enforced.
    pub controller_revision: u64,
    /// Files mode: parsed files, so a reload parses only what changed.
    pub loader: Loader,
    /// Told after every apply: the standby slot then lacks that apply's changes.
    pub standby_behind: Arc<tokio::sync::Notify>,
}

/// Reads the whole session table with `state` unlocked (a million sessions take a good
/// part of a second; events and the API wait meanwhile otherwise).
pub fn read_sessions(
    state: &std::sync::Mutex<State>,
) -> Vec<(
    microseg_dataplane::common::SessionKey,
    microseg_dataplane::common::Session,
)> {
    let reader = state
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .sessions
        .clone();
    reader.sessions()
}

/// What the watched files and interfaces look like; a change means reload.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Fingerprint {
    files: Vec<(PathBuf, Option<SystemTime>, u64)>,
    interfaces: Vec<(String, u32)>,
}

pub fn fingerprint(opts: &AgentOptions) -> Fingerprint {
    let (paths, _) = microseg_policy::policy_files(&opts.policy_paths);
    let files = paths
        .into_iter()
        .map(|p| {
            let meta = std::fs::metadata(&p).ok();
            let (mtime, len) = (
                meta.as_ref().and_then(|m| m.modified().ok()),
                meta.map_or(0, |m| m.len()),
            );
            (p, mtime, len)
        })
        .collect();
    let mut interfaces: Vec<_> = interfaces::list().into_iter().collect();
    interfaces.sort();
    Fingerprint { files, interfaces }
}

/// Reads the policy files; every problem as `FILE:LINE:COL: message`.
/// (What the data plane cannot hold is found when compiling, in [`enforce`].)
pub fn load(loader: &mut Loader, opts: &AgentOptions) -> Result<ResourceSet, Vec<Diagnostic>> {
    loader.load(&opts.policy_paths)
}

/// Compiles `set` and enforces it: tables swapped in atomically, then classifiers attached
/// to the interfaces of local workloads and taken off those no longer local.
pub fn enforce(state: &mut State, set: ResourceSet, opts: &AgentOptions) -> Result<String, String> {
    let ifaces: HashMap<String, u32> = interfaces::list();
    // A workload labelled with another node's name is a peer here, even if an interface
    // of the same name exists on this node.
    let elsewhere = |name: &str| {
        set.workloads
            .iter()
            .find(|w| w.name == name)
            .and_then(|w| w.labels.get("node"))
            .is_some_and(|n| n != &opts.node)
    };
    let local: Vec<_> = local_endpoints(&set, &ifaces)
        .into_iter()
        .filter(|ep| !elsewhere(&ep.workload))
        .collect();
    let started = std::time::Instant::now();
    let compiled = state.compiler.compile(&set, &local);
    let compile_time = started.elapsed();
    if !compiled.problems.is_empty() {
        state.in_sync = false;
        let problems: Vec<String> = compiled.problems.iter().map(ToString::to_string).collect();
        return Err(format!(
            "policy not applied, revision {} stays in force: {}",
            state.revision,
            problems.join("; ")
        ));
    }
    state
        .dp
        .reset_rule_counters(compiled.new_rule_ids.iter().copied())
        .map_err(|e| e.to_string())?;
    // Usually only what changed is written; after a refused or failed update the whole
    // state is compared with what the data plane holds.
    let applied = match (&compiled.changes, state.in_sync) {
        (Some(changes), true) => state.dp.apply_changes(changes),
        _ => state.dp.apply(&compiled.tables),
    };
    state.in_sync = applied.is_ok();
    let report = applied.map_err(|e| e.to_string())?;
    state.standby_behind.notify_one();
    let apply_time = started.elapsed() - compile_time;
    let links = opts.links_dir();
    let mut problems = Vec::new();
    for ep in &local {
        let iface = ifaces
            .iter()
            .find(|(_, i)| **i == ep.ifindex)
            .map(|(n, _)| n.clone())
            .unwrap_or_default();
        if let Err(e) = state.dp.attach(&iface, &links) {
            problems.push(e.to_string());
        }
    }
    let wanted: Vec<String> = set
        .workloads
        .iter()
        .filter(|w| !elsewhere(&w.name))
        .filter_map(|w| w.interface.clone())
        .collect();
    for iface in Dataplane::attached_interfaces(&links) {
        if !wanted.contains(&iface) || !ifaces.contains_key(&iface) {
            if let Err(e) = state.dp.detach_interface(&iface, &links) {
                problems.push(e.to_string());
            }
        }
    }
    let sizes = compiled.tables.sizes();
    let rules = compiled.rules.len();
    // The compiler's shared copies go before the next compile, which then updates in place.
    drop(compiled.tables);
    drop(compiled.rules);
    state.endpoints = compiled
        .endpoints
        .iter()
        .map(|(i, n)| (*i, Arc::from(n.as_str())))
        .collect();
    state.resources = Some(set);
    state.revision += 1;
    let summary = format!(
        "revision {}: {} local workload(s), {} rule(s), {} identities, {} policy entries, {} port-range tables, {} prefixes (generation {}, {} written, {} removed; compiled{} in {:.1} ms, applied in {:.1} ms)",
        state.revision,
        local.len(),
        rules,
        compiled.identities,
        sizes.policy,
        sizes.port_ranges,
        sizes.identities,
        report.generation,
        report.written,
        report.removed,
        if compiled.incremental { " incrementally" } else { "" },
        compile_time.as_secs_f64() * 1e3,
        apply_time.as_secs_f64() * 1e3,
    );
    if problems.is_empty() {
        Ok(summary)
    } else {
        Err(format!("{summary}; {}", problems.join("; ")))
    }
}
