//! Bringing the data plane in line with the resources and the node's interfaces: compile,
//! apply, attach, one step each. Only the state owner ([`crate::owner`]) runs these.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use microseg_dataplane::Dataplane;
use microseg_policy::compile::{local_endpoints, Compiled, Compiler, LocalEndpoint, RuleInfo};
use microseg_policy::{Diagnostic, Loader, ResourceSet};

use crate::error::EnforceError;
use crate::{interfaces, AgentOptions};

/// What enforcing a policy needs and keeps: the data plane, the compiler (which numbers
/// rules across compiles), and the last policy applied.
pub struct Enforcer {
    pub dp: Dataplane,
    compiler: Compiler,
    /// Whether the data plane holds the compiler's last output, so the next compile's
    /// changes can be applied as they are.
    in_sync: bool,
    /// The last policy applied, enforced again when only the interfaces changed.
    resources: Option<ResourceSet>,
    /// Raised on every successful apply.
    revision: u64,
    node: String,
    links: PathBuf,
    /// Told after every apply: the standby slot then lacks that apply's changes.
    standby_behind: Arc<tokio::sync::Notify>,
}

/// A policy in force, with what it holds and how long each step took.
#[derive(Clone, Debug)]
pub struct Summary {
    pub revision: u64,
    pub local_workloads: usize,
    pub rules: usize,
    pub identities: usize,
    pub sizes: microseg_common::tables::TableSizes,
    /// The data plane's generation after the apply, and the keys written and removed.
    pub generation: u32,
    pub written: usize,
    pub removed: usize,
    pub incremental: bool,
    pub compile_time: Duration,
    pub apply_time: Duration,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "revision {}: {} local workload(s), {} rule(s), {} identities, {} policy entries, {} port-range tables, {} prefixes (generation {}, {} written, {} removed; compiled{} in {:.1} ms, applied in {:.1} ms)",
            self.revision,
            self.local_workloads,
            self.rules,
            self.identities,
            self.sizes.policy,
            self.sizes.port_ranges,
            self.sizes.identities,
            self.generation,
            self.written,
            self.removed,
            if self.incremental { " incrementally" } else { "" },
            self.compile_time.as_secs_f64() * 1e3,
            self.apply_time.as_secs_f64() * 1e3,
        )
    }
}

/// A policy applied to the data plane. Its tables are in force even when attaching to an
/// interface failed: `attach_errors` says where enforcement is missing.
#[derive(Debug)]
pub struct Enforced {
    pub summary: Summary,
    pub attach_errors: Vec<microseg_dataplane::Error>,
    /// ifindex → workload name, for naming flows and sessions.
    pub endpoints: BTreeMap<u32, Arc<str>>,
    /// Rule id → rule, for naming flows and counting rule hits.
    pub rules: Arc<BTreeMap<u32, RuleInfo>>,
}

impl Enforced {
    /// Whether every local workload's interface got its classifiers.
    pub fn is_complete(&self) -> bool {
        self.attach_errors.is_empty()
    }
}

impl std::fmt::Display for Enforced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.summary)?;
        for e in &self.attach_errors {
            write!(f, "; {e}")?;
        }
        Ok(())
    }
}

/// A compile that can be applied, with how long it took.
struct Ready {
    compiled: Compiled,
    local: Vec<LocalEndpoint>,
    ifaces: HashMap<String, u32>,
    compile_time: Duration,
}

impl Enforcer {
    pub fn new(
        dp: Dataplane,
        opts: &AgentOptions,
        standby_behind: Arc<tokio::sync::Notify>,
    ) -> Self {
        Enforcer {
            dp,
            compiler: Compiler::new(),
            in_sync: false,
            resources: None,
            revision: 0,
            node: opts.node.clone(),
            links: opts.links_dir(),
            standby_behind,
        }
    }

    /// The last policy applied, if any.
    pub fn resources(&self) -> Option<&ResourceSet> {
        self.resources.as_ref()
    }

    /// Compiles `set` and enforces it: tables swapped in atomically, then classifiers
    /// attached to the interfaces of local workloads and taken off those no longer local.
    pub fn enforce(&mut self, set: ResourceSet) -> Result<Enforced, EnforceError> {
        let started = Instant::now();
        let mut ready = self.compile(&set)?;
        let compiled_at = Instant::now();
        let written = self.apply(&mut ready.compiled)?;
        let apply_time = compiled_at.elapsed();
        let applied_at = Instant::now();
        let mut attach_errors = self.attach(&ready.local, &ready.ifaces);
        attach_errors.extend(self.detach_gone(&set, &ready.ifaces));
        self.resources = Some(set);
        self.revision += 1;
        // Each step's share of an update (docs/PERFORMANCE.md section 12).
        tracing::debug!(
            interfaces_ms = ms(compiled_at - started - ready.compile_time),
            compile_ms = ms(ready.compile_time),
            apply_ms = ms(apply_time),
            attach_ms = ms(applied_at.elapsed()),
            "enforce steps"
        );
        Ok(self.enforced(ready, written, apply_time, attach_errors))
    }

    /// Compiles `set` for the workloads whose interfaces are on this node.
    fn compile(&mut self, set: &ResourceSet) -> Result<Ready, EnforceError> {
        let ifaces = interfaces::list();
        let local = local_workloads(set, &ifaces, &self.node);
        let started = Instant::now();
        let compiled = self.compiler.compile(set, &local);
        let compile_time = started.elapsed();
        if !compiled.problems.is_empty() {
            self.in_sync = false;
            return Err(EnforceError::Uncompilable {
                in_force: self.revision,
                problems: compiled.problems,
            });
        }
        Ok(Ready {
            compiled,
            local,
            ifaces,
            compile_time,
        })
    }

    /// Writes the compile into the data plane: usually only what changed; after a refused
    /// or failed update the whole state, compared with what the data plane holds.
    /// Returns the generation and the keys written and removed.
    fn apply(&mut self, compiled: &mut Compiled) -> Result<(u32, usize, usize), EnforceError> {
        let failed = |source| EnforceError::Apply {
            in_force: self.revision,
            source,
        };
        let started = Instant::now();
        self.dp
            .zero_rule_counters(&compiled.new_rule_ids)
            .map_err(failed)?;
        let counters_time = started.elapsed();
        // The changes are handed over: the data plane keeps them for the standby slot.
        let applied = match (compiled.changes.take(), self.in_sync) {
            (Some(changes), true) => self.dp.apply_owned_changes(changes),
            _ => self.dp.apply(&compiled.tables),
        };
        tracing::debug!(
            rule_ids = compiled.new_rule_ids.len(),
            counters_ms = ms(counters_time),
            maps_ms = ms(started.elapsed() - counters_time),
            "apply steps"
        );
        self.in_sync = applied.is_ok();
        let report = applied.map_err(failed)?;
        self.standby_behind.notify_one();
        Ok((report.generation, report.written, report.removed))
    }

    /// Attaches the classifiers to each local workload's interface.
    fn attach(
        &mut self,
        local: &[LocalEndpoint],
        ifaces: &HashMap<String, u32>,
    ) -> Vec<microseg_dataplane::Error> {
        let mut errors = Vec::new();
        for ep in local {
            let iface = ifaces
                .iter()
                .find(|(_, i)| **i == ep.ifindex)
                .map(|(n, _)| n.clone())
                .unwrap_or_default();
            if let Err(e) = self.dp.attach(&iface, &self.links) {
                errors.push(e);
            }
        }
        errors
    }

    /// Takes the classifiers off interfaces that are gone or no longer a local workload's.
    fn detach_gone(
        &mut self,
        set: &ResourceSet,
        ifaces: &HashMap<String, u32>,
    ) -> Vec<microseg_dataplane::Error> {
        let wanted: Vec<&String> = set
            .workloads
            .iter()
            .filter(|w| !elsewhere(set, &w.name, &self.node))
            .filter_map(|w| w.interface.as_ref())
            .collect();
        let mut errors = Vec::new();
        for iface in Dataplane::attached_interfaces(&self.links) {
            if !wanted.contains(&&iface) || !ifaces.contains_key(&iface) {
                if let Err(e) = self.dp.detach_interface(&iface, &self.links) {
                    errors.push(e);
                }
            }
        }
        errors
    }

    /// What was enforced, for the log and the readers.
    fn enforced(
        &self,
        ready: Ready,
        (generation, written, removed): (u32, usize, usize),
        apply_time: Duration,
        attach_errors: Vec<microseg_dataplane::Error>,
    ) -> Enforced {
        let Ready {
            compiled,
            local,
            compile_time,
            ..
        } = ready;
        let summary = Summary {
            revision: self.revision,
            local_workloads: local.len(),
            rules: compiled.rules.len(),
            identities: compiled.identities,
            sizes: compiled.tables.sizes(),
            generation,
            written,
            removed,
            incremental: compiled.incremental,
            compile_time,
            apply_time,
        };
        // The compiler's shared copies go before the next compile, which then updates in
        // place (the owner gives the readers a copy of the rules of their own).
        drop(compiled.tables);
        Enforced {
            summary,
            attach_errors,
            endpoints: compiled
                .endpoints
                .iter()
                .map(|(i, n)| (*i, Arc::from(n.as_str())))
                .collect(),
            rules: compiled.rules,
        }
    }
}

/// The workloads with an interface on this node. A workload labelled with another node's
/// name is a peer here, even if an interface of the same name exists on this node.
fn local_workloads(
    set: &ResourceSet,
    ifaces: &HashMap<String, u32>,
    node: &str,
) -> Vec<LocalEndpoint> {
    local_endpoints(set, ifaces)
        .into_iter()
        .filter(|ep| !elsewhere(set, &ep.workload, node))
        .collect()
}

/// Whether workload `name` is labelled with a node other than `node`.
fn elsewhere(set: &ResourceSet, name: &str, node: &str) -> bool {
    set.workloads
        .iter()
        .find(|w| w.name == name)
        .and_then(|w| w.labels.get("node"))
        .is_some_and(|n| n != node)
}

/// Milliseconds to a hundredth, for the step timings in the debug log.
pub(crate) fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 100.0
}

/// What the watched files and interfaces look like; a change means reload.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Fingerprint {
    files: Vec<(PathBuf, Option<SystemTime>, u64)>,
    interfaces: Vec<(String, u32)>,
}

pub fn fingerprint(policy_paths: &[PathBuf]) -> Fingerprint {
    let (paths, _) = microseg_policy::policy_files(policy_paths);
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
/// (What the data plane cannot hold is found when compiling, in [`Enforcer::enforce`].)
pub fn load(loader: &mut Loader, policy_paths: &[PathBuf]) -> Result<ResourceSet, Vec<Diagnostic>> {
    loader.load(policy_paths)
}
