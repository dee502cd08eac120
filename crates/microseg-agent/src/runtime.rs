//! The agent's main loop: load, enforce, watch, serve; leave enforcement in place on exit.

use std::sync::{Arc, Mutex};

use microseg_common::{config_flags, names};
use microseg_dataplane::{
    sessions::{idle, monotonic_ns, Timeouts},
    Dataplane, LoadOptions,
};
use microseg_policy::compile::Compiler;
use tokio::net::UnixListener;
use tokio::signal::unix::{signal, SignalKind};

use crate::flows::{Clock, FlowLog, Names};
use crate::managed::ControllerLink;
use crate::reconcile::{enforce, fingerprint, load, read_sessions, Fingerprint, State};
use crate::AgentOptions;

/// Why the agent stopped with an error: bad input (exit 2) or a runtime failure (exit 1).
#[derive(Debug)]
pub enum AgentError {
    BadInput(Vec<String>),
    Runtime(String),
}

fn runtime(e: impl std::fmt::Display) -> AgentError {
    AgentError::Runtime(e.to_string())
}

/// Where the agent takes its policy from.
#[derive(Clone, Debug)]
pub enum Source {
    /// `--policy PATH...`: files and directories, reloaded on change.
    Files,
    /// `--controller URL`: the controller's desired state.
    Controller(ControllerLink),
}

pub async fn run(opts: AgentOptions, source: Source) -> Result<(), AgentError> {
    let mut loader = microseg_policy::Loader::default();
    let set = match source {
        Source::Files => Some(
            load(&mut loader, &opts)
                .map_err(|d| AgentError::BadInput(d.iter().map(|d| d.to_string()).collect()))?,
        ),
        Source::Controller(_) => None,
    };
    ensure_bpffs(&opts.bpffs).map_err(runtime)?;
    let pinned_before = opts.maps_dir().join(names::CONFIG).exists();
    let mut dp = Dataplane::load(&LoadOptions {
        pin_dir: Some(opts.maps_dir()),
        sessions: opts.session_capacity,
        ..Default::default()
    })
    .map_err(runtime)?;
    dp.set_flags(if opts.drop_non_ip {
        config_flags::DROP_NON_IP
    } else {
        0
    })
    .map_err(runtime)?;
    let events = dp.take_events();
    let sessions = dp.session_reader().map_err(runtime)?;
    if pinned_before {
        log_adoption(&dp, sessions.sessions().len(), &opts, &source);
    }
    let state = Arc::new(Mutex::new(State {
        dp,
        sessions,
        compiler: Compiler::new(),
        in_sync: false,
        endpoints: Default::default(),
        flows: FlowLog::new(opts.flow_buffer, &opts.node),
        resources: None,
        revision: 0,
        last_errors: Vec::new(),
        controller_revision: 0,
        loader,
        standby_behind: Default::default(),
    }));
    let mut seen = fingerprint(&opts);
    if let Some(set) = set {
        let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
        match enforce(&mut st, set, &opts) {
            Ok(summary) => log::info!("enforcing {summary}"),
            Err(e) => log::error!("{e}"),
        }
    }

    if let Some(parent) = opts.socket.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| runtime(format!("{}: {e}", parent.display())))?;
    }
    let _ = std::fs::remove_file(&opts.socket);
    // Created owner-only (0600): a chmod after bind would leave a moment in which anyone
    // could connect. The umask is the process's, so it is put back at once.
    // SAFETY: umask cannot fail; only this startup code creates files now.
    let umask = unsafe { libc::umask(0o177) };
    let bound = UnixListener::bind(&opts.socket);
    unsafe { libc::umask(umask) };
    let listener = bound.map_err(|e| runtime(format!("{}: {e}", opts.socket.display())))?;
    log::info!(
        "serving stats, flows and sessions on {}",
        opts.socket.display()
    );
    tokio::spawn(crate::api::serve(listener, state.clone()));
    if let Some(rb) = events {
        tokio::spawn(read_events(rb, state.clone()));
    }

    let files = match source {
        Source::Files => true,
        Source::Controller(link) => {
            tokio::spawn(crate::managed::run(link, opts.clone(), state.clone()));
            false
        }
    };
    let mut term = signal(SignalKind::terminate()).map_err(runtime)?;
    let mut int = signal(SignalKind::interrupt()).map_err(runtime)?;
    let mut gc = tokio::time::interval(opts.gc_interval);
    // The standby slot is caught up once, a moment after an apply, instead of polled: a
    // timer that wakes the agent costs a TCP stream here even when it finds nothing to do.
    let standby_behind = state
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .standby_behind
        .clone();
    let mut catch_up_at: Option<tokio::time::Instant> = None;
    let mut watcher = match files {
        true => crate::watch::Watcher::new(&opts.policy_paths)
            .map_err(|e| log::warn!("no inotify ({e}); changes are seen at the next poll"))
            .ok(),
        false => None,
    };
    let mut links = match files {
        true => crate::watch::LinkWatcher::new()
            .map_err(|e| log::warn!("no link notifications ({e}); interfaces are polled"))
            .ok(),
        false => None,
    };
    // With both watchers the poll is only a safety net: a wake-up every 100 ms, each
    // listing the interfaces, cost one TCP stream several percent on a 2-CPU VM.
    let poll = match (&watcher, &links) {
        (Some(_), Some(_)) => opts.reload_interval.max(SAFETY_POLL),
        _ => opts.reload_interval,
    };
    let mut reload = tokio::time::interval(poll);
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = async { watcher.as_mut().expect("guarded").changed().await }, if watcher.is_some() => {
                reload_if_changed(&mut seen, &state, &opts);
                // New subdirectories get watches too.
                if let Some(w) = &watcher {
                    for p in &opts.policy_paths {
                        w.add(p);
                    }
                }
            }
            _ = async { links.as_mut().expect("guarded").changed().await }, if links.is_some() => {
                reload_if_changed(&mut seen, &state, &opts);
            }
            _ = reload.tick(), if files => {
                reload_if_changed(&mut seen, &state, &opts);
            }
            _ = gc.tick() => expire(&state),
            _ = standby_behind.notified() => {
                // Kept if already set, so that a stream of updates still catches up.
                catch_up_at.get_or_insert_with(|| tokio::time::Instant::now() + STANDBY_DELAY);
            }
            _ = tokio::time::sleep_until(catch_up_at.unwrap_or_else(tokio::time::Instant::now)),
                if catch_up_at.is_some() => {
                catch_up_at = None;
                catch_up_standby(&state);
            }
        }
    }
    let _ = std::fs::remove_file(&opts.socket);
    log::info!(
        "stopping; enforcement stays in place (pinned under {})",
        opts.bpffs.display()
    );
    Ok(())
}

/// Says what a previous agent left in the pins: its policy (the controller revision a
/// managed agent noted, else the data plane's generation) and the sessions kept.
fn log_adoption(dp: &Dataplane, sessions: usize, opts: &AgentOptions, source: &Source) {
    let generation = match dp.config() {
        Ok(c) => c.generation,
        Err(e) => return log::warn!("reading the adopted configuration: {e}"),
    };
    if generation == 0 && sessions == 0 {
        return; // pinned, but nothing was ever applied or judged
    }
    let noted = match source {
        Source::Controller(_) => crate::managed::noted_revision(opts),
        Source::Files => None,
    };
    match noted {
        Some(rev) => log::info!(
            "adopted revision {rev} from a previous agent (data plane generation {generation}), {sessions} sessions kept"
        ),
        None => log::info!(
            "adopted policy generation {generation} from a previous agent, {sessions} sessions kept"
        ),
    }
}

/// The reload poll when inotify and link notifications both work.
const SAFETY_POLL: std::time::Duration = std::time::Duration::from_secs(2);

/// How soon after an update the standby slot is brought up to date.
const STANDBY_DELAY: std::time::Duration = std::time::Duration::from_millis(200);

/// After an update the standby slot lacks that update's changes (all of the state, after
/// the first one): write them now, while nothing waits, so that the next change writes
/// only what it changes.
fn catch_up_standby(state: &Arc<Mutex<State>>) {
    let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
    if st.dp.standby_behind() {
        match st.dp.catch_up_standby() {
            Ok(n) => log::debug!("standby slot caught up ({n} keys)"),
            Err(e) => log::warn!("bringing the standby slot up to date: {e}"),
        }
    }
}

/// Reloads when the files or interfaces look different from `seen`.
fn reload_if_changed(seen: &mut Fingerprint, state: &Arc<Mutex<State>>, opts: &AgentOptions) {
    let now = fingerprint(opts);
    if now != *seen {
        *seen = now;
        reload_now(state, opts);
    }
}

/// Files or interfaces changed: enforce the new policy, or keep the last good one.
fn reload_now(state: &Arc<Mutex<State>>, opts: &AgentOptions) {
    let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
    let started = std::time::Instant::now();
    let loaded = load(&mut st.loader, opts);
    let load_time = started.elapsed();
    match loaded {
        Ok(set) => {
            st.last_errors.clear();
            match enforce(&mut st, set, opts) {
                Ok(summary) => log::info!(
                    "reloaded: enforcing {summary}; files read in {:.1} ms, {:.1} ms in all",
                    load_time.as_secs_f64() * 1e3,
                    started.elapsed().as_secs_f64() * 1e3
                ),
                Err(e) => log::error!("reload: {e}"),
            }
        }
        Err(diags) => {
            st.last_errors = diags.iter().map(|d| d.to_string()).collect();
            for d in &diags {
                log::error!("{d}");
            }
            log::error!(
                "policy not reloaded ({} error(s)); revision {} stays in force",
                diags.len(),
                st.revision
            );
            // Interfaces may still have come or gone: re-enforce the last good policy.
            if let Some(set) = st.resources.clone() {
                if let Err(e) = enforce(&mut st, set, opts) {
                    log::error!("{e}");
                }
            }
        }
    }
}

/// How often the event ring is drained. The kernel submits events without waking us
/// (a wake-up per event costs the sender an interrupt), so the agent polls instead.
const EVENT_POLL: std::time::Duration = std::time::Duration::from_millis(20);
/// An empty ring doubles the wait up to this, so an idle agent wakes a few times a second;
/// the first event brings the wait back to [`EVENT_POLL`].
const EVENT_POLL_IDLE: std::time::Duration = std::time::Duration::from_millis(320);

async fn read_events(mut rb: aya::maps::RingBuf<aya::maps::MapData>, state: Arc<Mutex<State>>) {
    let mut wait = EVENT_POLL;
    let mut batch = Vec::new();
    loop {
        tokio::time::sleep(wait).await;
        while let Some(item) = rb.next() {
            if item.len() >= std::mem::size_of::<microseg_common::FlowEvent>() {
                // SAFETY: the kernel wrote a FlowEvent; read_unaligned copes with any alignment.
                batch.push(unsafe {
                    std::ptr::read_unaligned(item.as_ptr() as *const microseg_common::FlowEvent)
                });
            }
        }
        if batch.is_empty() {
            wait = (wait * 2).min(EVENT_POLL_IDLE);
            continue;
        }
        wait = EVENT_POLL;
        let clock = Clock::now();
        let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
        let st = &mut *st;
        let names = Names {
            endpoints: &st.endpoints,
            rules: st.compiler.rules(),
        };
        for e in batch.drain(..) {
            st.flows.push(names.flow(&e, &clock));
        }
    }
}

/// Removes idle sessions, reporting each as an ended flow.
fn expire(state: &Arc<Mutex<State>>) {
    // Read unlocked; the lock only for the removal and the report.
    let expired = idle(read_sessions(state), &Timeouts::default(), monotonic_ns());
    if expired.is_empty() {
        return;
    }
    let keys: Vec<_> = expired.iter().map(|(k, _)| *k).collect();
    let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
    if let Err(e) = st.dp.remove_sessions(&keys) {
        log::warn!("session expiry: {e}");
        return;
    }
    let clock = Clock::now();
    let st = &mut *st;
    let names = Names {
        endpoints: &st.endpoints,
        rules: st.compiler.rules(),
    };
    for (k, s) in expired {
        for e in microseg_dataplane::sessions::end_events(&k, &s) {
            st.flows.push(names.flow(&e, &clock));
        }
    }
}

/// False only when this process's mount namespace is known to be init's (reading init's
/// needs privileges a container may not grant: then it may be private).
fn private_mount_namespace() -> bool {
    match (
        std::fs::read_link("/proc/self/ns/mnt"),
        std::fs::read_link("/proc/1/ns/mnt"),
    ) {
        (Ok(mine), Ok(init)) => mine != init,
        _ => true,
    }
}

/// Pins only survive on a BPF filesystem: check that `dir` is on one, mounting the
/// usual /sys/fs/bpf when it is missing.
fn ensure_bpffs(dir: &std::path::Path) -> Result<(), String> {
    const BPF_FS_MAGIC: i64 = 0xcafe4a11;
    let on_bpffs = |p: &std::path::Path| -> bool {
        let Ok(c) = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()) else {
            return false;
        };
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: a valid path and a statfs we own.
        unsafe { libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC }
    };
    // The nearest existing ancestor decides (the directory itself may not exist yet).
    let existing = dir.ancestors().find(|a| a.exists()).unwrap_or(dir);
    if on_bpffs(existing) {
        return Ok(());
    }
    let root = std::path::Path::new("/sys/fs/bpf");
    if dir.starts_with(root) && root.exists() {
        let c = std::ffi::CString::new("/sys/fs/bpf").expect("no NUL");
        let fs = std::ffi::CString::new("bpf").expect("no NUL");
        // SAFETY: valid C strings; a bpffs mount has no data argument.
        if unsafe { libc::mount(fs.as_ptr(), c.as_ptr(), fs.as_ptr(), 0, std::ptr::null()) } == 0 {
            log::info!("mounted a BPF filesystem on /sys/fs/bpf");
            if private_mount_namespace() {
                // `ip netns exec` makes such a namespace: the mount, the pins and the TCX
                // links on them end with this process, taking enforcement along.
                log::warn!(
                    "/sys/fs/bpf was mounted in what may be a mount namespace of this agent alone (ip netns exec makes one); if so, the pins end with the agent, and enforcement with them: mount bpffs where it outlives the agent, or start it with nsenter --net"
                );
            }
            return Ok(());
        }
    }
    Err(format!(
        "{} is not on a BPF filesystem, so nothing could be pinned there (mount -t bpf bpf /sys/fs/bpf, or pass --bpffs DIR on one)",
        dir.display()
    ))
}

/// `microseg agent --cleanup`: takes the classifiers off every interface (classic filters
/// too when their record is gone) and removes all pinned state.
pub fn cleanup(opts: &AgentOptions) -> Result<(), String> {
    let links = opts.links_dir();
    for iface in Dataplane::attached_interfaces(&links) {
        Dataplane::detach(&iface, &links).map_err(|e| e.to_string())?;
    }
    Dataplane::detach_netlink_filters(crate::interfaces::list().keys().map(String::as_str));
    if opts.bpffs.exists() {
        std::fs::remove_dir_all(&opts.bpffs)
            .map_err(|e| format!("{}: {e}", opts.bpffs.display()))?;
    }
    let _ = std::fs::remove_file(&opts.socket);
    let _ = std::fs::remove_file(crate::managed::revision_file(opts));
    Ok(())
}
