//! Loading the programs and owning their maps.

use std::path::{Path, PathBuf};

use aya::{
    maps::{Array, HashMap, LpmTrie, MapData, MapInfo, PerCpuArray, ProgramArray, RingBuf},
    programs::SchedClassifier,
    Ebpf, EbpfLoader,
};
use microseg_common::{
    names,
    tables::{TableChanges, Tables},
    *,
};

use crate::{Error, Result};

/// Program names in the object, by hook.
pub(crate) const PROG_FROM_WORKLOAD: &str = "microseg_from_workload";
pub(crate) const PROG_TO_WORKLOAD: &str = "microseg_to_workload";
pub(crate) const PROG_PASS: &str = "microseg_pass";
pub(crate) const PROG_LRU_REFERENCE: &str = "microseg_lru_reference";
/// The bench-only map of [`PROG_LRU_REFERENCE`]; never pinned.
pub(crate) const MAP_LRU_REFERENCE: &str = "MSEG_LRU_REFERENCE";
pub(crate) const PROG_SLOW_PATH: &str = "microseg_slow_path";

/// Capacities and where to pin. `Default` gives the defaults of
/// [`microseg_common::capacity`], unpinned.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Pin every map here (and adopt maps already pinned there). None: private maps.
    pub pin_dir: Option<PathBuf>,
    pub sessions: u32,
    /// Entries of the table of tuples every local leg denies (`MSEG_DENIED`), apart from
    /// the sessions so that a flood of them cannot evict allowed ones (docs/SECURITY.md).
    pub denied: u32,
    pub rules: u32,
    pub policy_entries: u32,
    pub identities: u32,
    pub events_bytes: u32,
    /// Entries of the bench's LRU reference map (`Hook::LruReference`). 1 by default: the
    /// map is preallocated, and only the bench, which sets the session table's capacity,
    /// has a use for it; its program is loaded only when this is over 1.
    pub lru_reference: u32,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            pin_dir: None,
            sessions: capacity::SESSIONS,
            denied: capacity::DENIED,
            rules: capacity::RULES,
            policy_entries: capacity::POLICY,
            identities: capacity::IDENTITIES,
            events_bytes: capacity::EVENTS_BYTES,
            lru_reference: 1,
        }
    }
}

/// The loaded programs and their maps.
pub struct Dataplane {
    pub(crate) ebpf: Ebpf,
    /// Holds the slow path for the fast path's tail call.
    #[allow(dead_code)]
    pub(crate) jump: ProgramArray<MapData>,
    pub(crate) config: Array<MapData, Config>,
    pub(crate) sessions: HashMap<MapData, SessionKey, Session>,
    pub(crate) denied: HashMap<MapData, SessionKey, Session>,
    pub(crate) fragments: HashMap<MapData, FragmentKey, FragmentEntry>,
    pub(crate) endpoints: HashMap<MapData, EndpointKey, EndpointInfo>,
    pub(crate) endpoint_addrs: HashMap<MapData, EndpointAddrKey, u32>,
    pub(crate) identities: LpmTrie<MapData, IpKey, IdentityEntry>,
    pub(crate) host_identities: HashMap<MapData, IpKey, IdentityEntry>,
    pub(crate) policy: HashMap<MapData, PolicyKey, PolicyEntry>,
    pub(crate) port_ranges: HashMap<MapData, PolicyKey, PortRangeTable>,
    pub(crate) source_ports: HashMap<MapData, PolicyKey, SourcePortTable>,
    pub(crate) stats: PerCpuArray<MapData, Stats>,
    pub(crate) rule_counters: PerCpuArray<MapData, RuleCounter>,
    pub(crate) events: Option<RingBuf<MapData>>,
    /// What the active slot holds; None until this process applied something.
    pub(crate) current: Option<Tables>,
    /// What the standby slot lacks to hold `current`; None when its content is unknown.
    pub(crate) behind: Option<TableChanges>,
    pub(crate) pin_dir: Option<PathBuf>,
    /// Interfaces this process attached to, with their ifindex then.
    pub(crate) attached: std::collections::HashMap<String, u32>,
}

/// Removes pins whose key or value size differs from this build's map of the same name.
/// An older build leaves them (an upgrade that changed a layout); adopted, they would make
/// the kernel refuse the programs. Their state is lost; every other pin is adopted.
fn replace_incompatible_pins(pin_paths: &[(&'static str, PathBuf)]) -> Result<()> {
    if pin_paths.is_empty() {
        return Ok(());
    }
    let object = aya_obj::Object::parse(crate::PROGRAMS).map_err(aya::EbpfError::from)?;
    for (name, path) in pin_paths {
        let (Ok(pinned), Some(wanted)) = (MapInfo::from_pin(path), object.maps.get(*name)) else {
            continue;
        };
        let pinned_sizes = (pinned.key_size(), pinned.value_size());
        let wanted_sizes = (wanted.key_size(), wanted.value_size());
        if pinned_sizes != wanted_sizes {
            tracing::warn!(
                path = %path.display(),
                pinned = ?pinned_sizes,
                wanted = ?wanted_sizes,
                "map pinned by another build with other key/value sizes: replaced by a new \
                 map (its contents are lost)"
            );
            std::fs::remove_file(path).map_err(Error::io(path))?;
        }
    }
    Ok(())
}

fn take<T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>>(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<T> {
    let map = ebpf.take_map(name).ok_or(Error::MapMissing { name })?;
    T::try_from(map).map_err(Error::map_open(name))
}

impl Dataplane {
    pub fn load(opts: &LoadOptions) -> Result<Dataplane> {
        let mut loader = EbpfLoader::new();
        loader
            .map_max_entries(names::SESSIONS, opts.sessions)
            .map_max_entries(names::DENIED, opts.denied)
            .map_max_entries(names::RULE_COUNTERS, opts.rules)
            .map_max_entries(names::POLICY, opts.policy_entries)
            .map_max_entries(names::IDENTITIES, opts.identities)
            .map_max_entries(names::EVENTS, opts.events_bytes)
            .map_max_entries(MAP_LRU_REFERENCE, opts.lru_reference.max(1));
        let pin_paths: Vec<(&'static str, PathBuf)> = match &opts.pin_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
                ALL_MAPS.iter().map(|n| (*n, dir.join(n))).collect()
            }
            None => Vec::new(),
        };
        replace_incompatible_pins(&pin_paths)?;
        for (name, path) in &pin_paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(crate::PROGRAMS)?;
        // The LRU reference is the bench's alone: an agent need not verify it at each start.
        let lru_reference = (opts.lru_reference > 1).then_some(PROG_LRU_REFERENCE);
        let programs = [
            PROG_FROM_WORKLOAD,
            PROG_TO_WORKLOAD,
            PROG_PASS,
            PROG_SLOW_PATH,
        ];
        for name in programs.into_iter().chain(lru_reference) {
            classifier_mut(&mut ebpf, name)?
                .load()
                .map_err(Error::program(name))?;
        }
        let mut jump: ProgramArray<MapData> = take(&mut ebpf, names::JUMP)?;
        let fd = classifier(&ebpf, PROG_SLOW_PATH)?
            .fd()
            .map_err(Error::program(PROG_SLOW_PATH))?;
        jump.set(0, fd, 0).map_err(Error::map_write(names::JUMP))?;
        Ok(Dataplane {
            jump,
            config: take(&mut ebpf, names::CONFIG)?,
            sessions: take(&mut ebpf, names::SESSIONS)?,
            denied: take(&mut ebpf, names::DENIED)?,
            fragments: take(&mut ebpf, names::FRAGMENTS)?,
            endpoints: take(&mut ebpf, names::ENDPOINTS)?,
            endpoint_addrs: take(&mut ebpf, names::ENDPOINT_ADDRS)?,
            identities: take(&mut ebpf, names::IDENTITIES)?,
            host_identities: take(&mut ebpf, names::HOST_IDENTITIES)?,
            policy: take(&mut ebpf, names::POLICY)?,
            port_ranges: take(&mut ebpf, names::PORT_RANGES)?,
            source_ports: take(&mut ebpf, names::SOURCE_PORT_RULES)?,
            stats: take(&mut ebpf, names::STATS)?,
            rule_counters: take(&mut ebpf, names::RULE_COUNTERS)?,
            events: Some(take(&mut ebpf, names::EVENTS)?),
            ebpf,
            current: None,
            behind: None,
            pin_dir: opts.pin_dir.clone(),
            attached: Default::default(),
        })
    }

    pub fn pin_dir(&self) -> Option<&Path> {
        self.pin_dir.as_deref()
    }

    pub(crate) fn classifier(&self, name: &'static str) -> Result<&SchedClassifier> {
        classifier(&self.ebpf, name)
    }

    pub(crate) fn classifier_mut(&mut self, name: &'static str) -> Result<&mut SchedClassifier> {
        classifier_mut(&mut self.ebpf, name)
    }

    pub fn config(&self) -> Result<Config> {
        self.config
            .get(&0, 0)
            .map_err(Error::map_read(names::CONFIG))
    }

    /// Sets [`config_flags`] bits (global options); the slot and generation are kept.
    pub fn set_flags(&mut self, flags: u32) -> Result<()> {
        let mut cfg = self.config()?;
        cfg.flags = flags;
        self.config
            .set(0, cfg, 0)
            .map_err(Error::map_write(names::CONFIG))
    }

    /// Turns [`config_flags::REPORT_START`] on or off (NEW events for allowed connections
    /// too, see docs/FLOWS.md), leaving every other flag, the slot and the generation as
    /// they are. Works on an adopted pinned data plane: the config map is the pinned one.
    pub fn set_report_start(&mut self, on: bool) -> Result<()> {
        let flags = self.config()?.flags;
        self.set_flags(if on {
            flags | config_flags::REPORT_START
        } else {
            flags & !config_flags::REPORT_START
        })
    }

    /// The counters, summed over CPUs.
    pub fn stats(&self) -> Result<Stats> {
        let per_cpu = self
            .stats
            .get(&0, 0)
            .map_err(Error::map_read(names::STATS))?;
        let mut total = Stats::default();
        for s in per_cpu.iter() {
            total.add(s);
        }
        Ok(total)
    }

    /// Packets and bytes of one rule, summed over CPUs.
    pub fn rule_counter(&self, rule_id: u32) -> Result<RuleCounter> {
        let per_cpu = self
            .rule_counters
            .get(&rule_id, 0)
            .map_err(Error::map_read(names::RULE_COUNTERS))?;
        Ok(per_cpu
            .iter()
            .fold(RuleCounter::default(), |a, c| RuleCounter {
                packets: a.packets + c.packets,
                bytes: a.bytes + c.bytes,
            }))
    }

    /// Zeroes the counters of rule ids about to be given to new rules.
    pub fn reset_rule_counters(&mut self, rule_ids: impl IntoIterator<Item = u32>) -> Result<()> {
        let cpus = aya::util::nr_cpus()
            .map_err(|(_, e)| Error::io("/sys/devices/system/cpu/possible")(e))?;
        for id in rule_ids {
            let zeros = aya::maps::PerCpuValues::try_from(vec![RuleCounter::default(); cpus])
                .map_err(|e| Error::io("per-cpu values")(e))?;
            self.rule_counters
                .set(id, zeros, 0)
                .map_err(Error::map_write(names::RULE_COUNTERS))?;
        }
        Ok(())
    }

    /// The ring buffer of flow events; taken once, by the event reader.
    pub fn take_events(&mut self) -> Option<RingBuf<MapData>> {
        self.events.take()
    }

    /// Instructions the verifier walked for each program (its limit is 1,000,000 a
    /// program): how close a change brings the programs to being refused.
    pub fn verified_instructions(&self) -> Result<Vec<(&'static str, u32)>> {
        [PROG_FROM_WORKLOAD, PROG_TO_WORKLOAD, PROG_SLOW_PATH]
            .into_iter()
            .map(|name| {
                let info = self
                    .classifier(name)?
                    .info()
                    .map_err(Error::program(name))?;
                Ok((name, info.verified_instruction_count().unwrap_or(0)))
            })
            .collect()
    }

    /// Number of entries in the fragment table (for tests and stats).
    pub fn fragment_count(&self) -> usize {
        self.fragments.keys().filter(|k| k.is_ok()).count()
    }
}

fn classifier<'a>(ebpf: &'a Ebpf, name: &'static str) -> Result<&'a SchedClassifier> {
    ebpf.program(name)
        .ok_or(Error::ProgramMissing { name })?
        .try_into()
        .map_err(Error::program(name))
}

fn classifier_mut<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut SchedClassifier> {
    ebpf.program_mut(name)
        .ok_or(Error::ProgramMissing { name })?
        .try_into()
        .map_err(Error::program(name))
}

/// Every map the agent pins.
pub const ALL_MAPS: [&str; 16] = [
    names::SOURCE_PORT_RULES,
    names::HOST_IDENTITIES,
    names::JUMP,
    names::HANDOFF,
    names::CONFIG,
    names::SESSIONS,
    names::DENIED,
    names::FRAGMENTS,
    names::ENDPOINTS,
    names::ENDPOINT_ADDRS,
    names::IDENTITIES,
    names::POLICY,
    names::PORT_RANGES,
    names::STATS,
    names::RULE_COUNTERS,
    names::EVENTS,
];

impl Dataplane {
    /// Takes every event waiting in the ring buffer (when it was not handed to a reader).
    pub fn drain_events(&mut self) -> Vec<FlowEvent> {
        let Some(rb) = self.events.as_mut() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        while let Some(item) = rb.next() {
            if item.len() >= std::mem::size_of::<FlowEvent>() {
                // SAFETY: the kernel wrote a FlowEvent; read_unaligned copes with any alignment.
                out.push(unsafe { std::ptr::read_unaligned(item.as_ptr() as *const FlowEvent) });
            }
        }
        out
    }
}
