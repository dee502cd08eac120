//! The one owner of the data plane's writable state: a thread of its own that takes
//! commands in order (enforce a policy, remove sessions, catch the standby slot up) and
//! publishes what readers need after each ([`View`]). A compile runs here, so it never
//! holds up the async runtime; readers never wait for it: they read the last view and
//! the kernel's counters through handles of their own ([`crate::handle`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use microseg_dataplane::common::{config_flags, SessionKey};
use microseg_policy::compile::RuleInfo;
use microseg_policy::ResourceSet;
use tokio::sync::{mpsc, oneshot, watch};

use crate::error::EnforceError;
use crate::reconcile::{Enforced, Enforcer};

/// What the readers see of the agent's state, as of the last change. Replaced whole, so a
/// reader holds one consistent copy for as long as it needs.
#[derive(Clone, Debug, Default)]
pub struct View {
    /// The revision in force: raised on every successful apply.
    pub revision: u64,
    /// Managed mode: the controller revision enforced.
    pub controller_revision: u64,
    /// ifindex → workload name (shared by the flows that name it).
    pub endpoints: BTreeMap<u32, Arc<str>>,
    /// Rule id → rule, for the revision in force.
    pub rules: Arc<BTreeMap<u32, RuleInfo>>,
    /// The last reload's errors, while the previous policy stays in force.
    pub errors: Vec<String>,
    /// The policy map keys the last apply wrote and removed: what an update cost.
    pub keys_written: usize,
    pub keys_removed: usize,
    /// The standby slot still lacks the last update's changes (caught up shortly after).
    pub standby_behind: bool,
    /// How long the last successful update took to compile and to apply.
    pub compile_time: std::time::Duration,
    pub apply_time: std::time::Duration,
    /// Updates refused since the agent started (the previous policy stayed in force).
    pub failed_updates: u64,
}

/// Which policy to enforce.
#[derive(Debug)]
pub enum Policy {
    /// A new set of resources.
    New(ResourceSet),
    /// The last one applied again, for interfaces that came or went; nothing when none was.
    Last,
}

/// One request to enforce a policy.
#[derive(Debug)]
pub struct EnforceRequest {
    pub policy: Policy,
    /// Files mode: why the files could not be read (shown by `status`); cleared by a
    /// request without.
    pub load_errors: Vec<String>,
    /// Managed mode: the controller revision this policy is, noted when it is applied.
    pub controller_revision: Option<u64>,
}

/// `None` when `Policy::Last` found nothing applied yet.
pub type EnforceResult = Result<Option<Enforced>, EnforceError>;

pub(crate) enum Command {
    Enforce {
        request: EnforceRequest,
        reply: oneshot::Sender<EnforceResult>,
    },
    RemoveSessions {
        keys: Vec<SessionKey>,
        reply: oneshot::Sender<microseg_dataplane::Result<usize>>,
    },
    CatchUpStandby,
    /// Turns the kernel's reports of allowed connections at their start on or off.
    SetReportStart(bool),
}

/// Starts the owner thread; it ends when every sender of its commands is gone.
pub(crate) fn spawn(
    enforcer: Enforcer,
    view: watch::Sender<Arc<View>>,
    pending: Arc<AtomicUsize>,
) -> std::io::Result<mpsc::UnboundedSender<Command>> {
    let (tx, rx) = mpsc::unbounded_channel();
    let owner = Owner {
        enforcer,
        view,
        pending,
        rules_shared: false,
    };
    std::thread::Builder::new()
        .name("microseg-dataplane".into())
        .spawn(move || owner.run(rx))?;
    Ok(tx)
}

struct Owner {
    enforcer: Enforcer,
    view: watch::Sender<Arc<View>>,
    /// Enforce requests sent and not answered yet (`status` shows them as `updating`).
    pending: Arc<AtomicUsize>,
    /// Whether the view's rules are the compiler's own copy.
    rules_shared: bool,
}

impl Owner {
    fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        while let Some(command) = commands.blocking_recv() {
            match command {
                Command::Enforce { request, reply } => {
                    let result = self.enforce(request);
                    self.pending.fetch_sub(1, Ordering::SeqCst);
                    let _ = reply.send(result);
                    self.unshare_rules();
                }
                Command::RemoveSessions { keys, reply } => {
                    let _ = reply.send(self.enforcer.dp.remove_sessions(&keys));
                }
                Command::CatchUpStandby => self.catch_up_standby(),
                Command::SetReportStart(on) => self.set_report_start(on),
            }
        }
    }

    /// Enforces the request's policy and publishes the view it leads to.
    fn enforce(&mut self, request: EnforceRequest) -> EnforceResult {
        let set = match request.policy {
            Policy::New(set) => Some(set),
            Policy::Last => self.enforcer.resources().cloned(),
        };
        let result = set.map(|set| self.enforcer.enforce(set)).transpose();
        let mut view = View::clone(&self.view.borrow());
        view.errors = request.load_errors;
        if let Ok(Some(enforced)) = &result {
            view.revision = enforced.summary.revision;
            view.endpoints = enforced.endpoints.clone();
            view.rules = enforced.rules.clone();
            view.keys_written = enforced.summary.written;
            view.keys_removed = enforced.summary.removed;
            view.compile_time = enforced.summary.compile_time;
            view.apply_time = enforced.summary.apply_time;
            self.rules_shared = true;
            // Acknowledged only when complete: attaching is part of enforcing.
            if let (Some(rev), true) = (request.controller_revision, enforced.is_complete()) {
                view.controller_revision = rev;
            }
        }
        if result.is_err() {
            view.failed_updates += 1;
        }
        view.standby_behind = self.enforcer.dp.standby_behind();
        self.view.send_replace(Arc::new(view));
        result
    }

    /// The compiler renumbers its rules in place only while it holds them alone (a copy
    /// of 100,000 costs about 5 ms): the readers get a copy of their own, made after the
    /// reply so that it does not delay enforcement.
    fn unshare_rules(&mut self) {
        if !std::mem::take(&mut self.rules_shared) {
            return;
        }
        let mut view = View::clone(&self.view.borrow());
        view.rules = Arc::new(BTreeMap::clone(&view.rules));
        self.view.send_replace(Arc::new(view));
    }

    fn set_report_start(&mut self, on: bool) {
        let dp = &mut self.enforcer.dp;
        let set = dp.config().and_then(|c| {
            let flags = if on {
                c.flags | config_flags::REPORT_START
            } else {
                c.flags & !config_flags::REPORT_START
            };
            dp.set_flags(flags)
        });
        if let Err(e) = set {
            tracing::warn!(error = %e, on, "switching start reports failed");
        }
    }

    /// After an update the standby slot lacks that update's changes (all of the state,
    /// after the first one): written now, while nothing waits, the next change writes only
    /// what it changes.
    fn catch_up_standby(&mut self) {
        let dp = &mut self.enforcer.dp;
        if dp.standby_behind() {
            match dp.catch_up_standby() {
                Ok(keys) => tracing::debug!(keys, "standby slot caught up"),
                Err(e) => tracing::warn!(error = %e, "bringing the standby slot up to date failed"),
            }
            let behind = dp.standby_behind();
            self.view
                .send_modify(|view| Arc::make_mut(view).standby_behind = behind);
        }
    }
}
