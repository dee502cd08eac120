//! [`DataPlaneHandle`]: how the agent's tasks (the local API, the controller link, the
//! reload loop, event reading, session expiry) reach its state. Changes go to the owner
//! thread ([`crate::owner`]) in order; reads never wait for it: the last [`View`], the
//! kernel's counters and the session table are read through handles of their own, off the
//! async workers.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use aya::maps::{Map, MapData, PerCpuArray};
use microseg_common::{names, RuleCounter, Session, SessionKey, Stats};
use microseg_dataplane::sessions::SessionReader;
use tokio::sync::{mpsc, oneshot, watch, Notify};

use crate::error::{AgentError, EnforceError};
use crate::flows::FlowLog;
use crate::owner::{self, Command, EnforceRequest, EnforceResult, Policy, View};
use crate::reconcile::{Enforced, Enforcer};
use microseg_policy::ResourceSet;

/// A cheap, cloneable handle on the agent's state.
#[derive(Clone)]
pub struct DataPlaneHandle {
    commands: mpsc::UnboundedSender<Command>,
    view: watch::Receiver<Arc<View>>,
    counters: Arc<Counters>,
    flows: Arc<Mutex<FlowLog>>,
    pending: Arc<AtomicUsize>,
    standby_behind: Arc<Notify>,
}

/// The kernel's counters and session table, through handles of their own on the pinned
/// maps, so that reading them never waits for the owner.
struct Counters {
    stats: PerCpuArray<MapData, Stats>,
    rules: PerCpuArray<MapData, RuleCounter>,
    sessions: SessionReader,
}

/// The counters `stats` answers with, as of one moment.
pub struct StatsReading {
    pub stats: Stats,
    /// Session legs: a connection between two local workloads counts once per interface.
    pub session_legs: usize,
    /// Packets and bytes of each rule of the revision in `view`.
    pub rule_hits: Vec<(u32, RuleCounter)>,
    pub view: Arc<View>,
}

impl DataPlaneHandle {
    /// Starts the owner of `enforcer`'s data plane, whose maps are pinned in `maps_dir`.
    pub(crate) fn start(
        enforcer: Enforcer,
        maps_dir: &Path,
        flows: FlowLog,
        standby_behind: Arc<Notify>,
    ) -> Result<DataPlaneHandle, AgentError> {
        let counters = Counters::open(maps_dir, enforcer.dp.session_reader()?)?;
        let (view_tx, view) = watch::channel(Arc::new(View::default()));
        let pending = Arc::new(AtomicUsize::new(0));
        let commands =
            owner::spawn(enforcer, view_tx, pending.clone()).map_err(AgentError::Owner)?;
        Ok(DataPlaneHandle {
            commands,
            view,
            counters: Arc::new(counters),
            flows: Arc::new(Mutex::new(flows)),
            pending,
            standby_behind,
        })
    }

    /// Enforces `set`, after the requests sent before it. `controller_revision`: the
    /// controller revision it is, noted when it is wholly enforced.
    pub async fn enforce(
        &self,
        set: ResourceSet,
        controller_revision: Option<u64>,
    ) -> Result<Enforced, EnforceError> {
        let request = EnforceRequest {
            policy: Policy::New(set),
            load_errors: Vec::new(),
            controller_revision,
        };
        // The owner answers a new policy with what it enforced or why not.
        self.send(request).await?.ok_or(EnforceError::OwnerGone)
    }

    /// Enforces the last policy again (interfaces may have come or gone) while the files
    /// could not be read: `load_errors` says why (`status` shows them). Nothing when no
    /// policy was applied yet.
    pub async fn enforce_last(
        &self,
        load_errors: Vec<String>,
    ) -> Result<Option<Enforced>, EnforceError> {
        let request = EnforceRequest {
            policy: Policy::Last,
            load_errors,
            controller_revision: None,
        };
        self.send(request).await
    }

    async fn send(&self, request: EnforceRequest) -> EnforceResult {
        let (reply, answer) = oneshot::channel();
        self.pending.fetch_add(1, Ordering::SeqCst);
        if self
            .commands
            .send(Command::Enforce { request, reply })
            .is_err()
        {
            self.pending.fetch_sub(1, Ordering::SeqCst);
            return Err(EnforceError::OwnerGone);
        }
        answer.await.map_err(|_| EnforceError::OwnerGone)?
    }

    /// Removes sessions from the table; returns how many were still there.
    pub async fn remove_sessions(
        &self,
        keys: Vec<SessionKey>,
    ) -> Option<microseg_dataplane::Result<usize>> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::RemoveSessions { keys, reply })
            .ok()?;
        answer.await.ok()
    }

    /// Asks the owner to bring the standby slot up to date when it is behind.
    pub fn catch_up_standby(&self) {
        let _ = self.commands.send(Command::CatchUpStandby);
    }

    /// Turns the kernel's start reports of allowed connections on or off, in order with
    /// the owner's other changes to the configuration.
    pub fn set_report_start(&self, on: bool) {
        let _ = self.commands.send(Command::SetReportStart(on));
    }

    /// The kernel's counters alone (no walk of the session table).
    pub async fn kernel_stats(&self) -> microseg_dataplane::Result<Stats> {
        let counters = self.counters.clone();
        blocking(move || counters.kernel_stats()).await
    }

    /// Told after every apply (the standby slot then lacks its changes).
    pub fn standby_behind(&self) -> &Notify {
        &self.standby_behind
    }

    /// The state as of the last change.
    pub fn view(&self) -> Arc<View> {
        self.view.borrow().clone()
    }

    /// Whether a policy is being compiled and applied, or waits to be.
    pub fn updating(&self) -> bool {
        self.pending.load(Ordering::SeqCst) > 0
    }

    /// The kernel's counters, the session legs and the rule hits, read off the async
    /// workers (the session table may hold a million entries).
    pub async fn stats(&self) -> microseg_dataplane::Result<StatsReading> {
        let counters = self.counters.clone();
        let view = self.view();
        blocking(move || counters.read(view)).await
    }

    /// Every session, read off the async workers.
    pub async fn sessions(&self) -> Vec<(SessionKey, Session)> {
        let reader = self.counters.sessions.clone();
        blocking(move || reader.sessions()).await
    }

    /// Runs `f` with the session table on a blocking thread, for a walk that reads it a
    /// batch at a time ([`SessionReader::for_each`]) instead of copying it.
    pub async fn scan_sessions<T: Send + 'static>(
        &self,
        f: impl FnOnce(&SessionReader) -> T + Send + 'static,
    ) -> T {
        let reader = self.counters.sessions.clone();
        blocking(move || f(&reader)).await
    }

    /// The recent flows and their feed. Held only for in-memory work, never across a
    /// compile or a map walk.
    pub fn flows(&self) -> MutexGuard<'_, FlowLog> {
        self.flows
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Runs `f` on tokio's blocking threads. A panic there is the agent's bug: passed on.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

impl Counters {
    fn open(maps_dir: &Path, sessions: SessionReader) -> Result<Counters, AgentError> {
        Ok(Counters {
            stats: open_pinned(maps_dir, names::STATS)?,
            rules: open_pinned(maps_dir, names::RULE_COUNTERS)?,
            sessions,
        })
    }

    fn kernel_stats(&self) -> microseg_dataplane::Result<Stats> {
        let per_cpu =
            self.stats
                .get(&0, 0)
                .map_err(|source| microseg_dataplane::Error::MapRead {
                    name: names::STATS,
                    source,
                })?;
        let mut stats = Stats::default();
        for s in per_cpu.iter() {
            stats.add(s);
        }
        Ok(stats)
    }

    fn read(&self, view: Arc<View>) -> microseg_dataplane::Result<StatsReading> {
        let stats = self.kernel_stats()?;
        let mut session_legs = 0;
        self.sessions
            .for_each(|_, s| session_legs += s.present_legs().count());
        let rule_hits = view
            .rules
            .keys()
            .filter_map(|id| Some((*id, self.rule_counter(*id)?)))
            .collect();
        Ok(StatsReading {
            stats,
            session_legs,
            rule_hits,
            view,
        })
    }

    /// Packets and bytes of one rule, summed over CPUs.
    fn rule_counter(&self, rule_id: u32) -> Option<RuleCounter> {
        let per_cpu = self.rules.get(&rule_id, 0).ok()?;
        Some(
            per_cpu
                .iter()
                .fold(RuleCounter::default(), |a, c| RuleCounter {
                    packets: a.packets + c.packets,
                    bytes: a.bytes + c.bytes,
                }),
        )
    }
}

/// A handle of its own on the per-CPU array pinned as `name` in `maps_dir`.
fn open_pinned<V: aya::Pod>(
    maps_dir: &Path,
    name: &'static str,
) -> Result<PerCpuArray<MapData, V>, AgentError> {
    let opened = MapData::from_pin(maps_dir.join(name))
        .and_then(Map::from_map_data)
        .and_then(PerCpuArray::try_from);
    opened.map_err(|source| microseg_dataplane::Error::MapOpen { name, source }.into())
}
