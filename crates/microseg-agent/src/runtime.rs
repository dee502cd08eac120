//! The agent's start and end: load the data plane, enforce, serve, hand the state to its
//! owner and the tasks that use it; leave enforcement in place on exit.

use std::future::Future;

use microseg_common::{config_flags, names};
use microseg_dataplane::{Dataplane, LoadOptions};
use microseg_policy::ResourceSet;
use tokio::net::UnixListener;
use tokio::signal::unix::{signal, SignalKind};

use crate::error::AgentError;
use crate::files::Reloader;
use crate::flows::FlowLog;
use crate::handle::DataPlaneHandle;
use crate::managed::ControllerLink;
use crate::reconcile::Enforcer;
use crate::{background, AgentOptions};

/// Where the agent takes its policy from.
#[derive(Clone, Debug)]
pub enum Source {
    /// `--policy PATH...`: files and directories, reloaded on change.
    Files,
    /// `--controller URL`: the controller's desired state.
    Controller(ControllerLink),
}

/// Runs the agent until SIGTERM or SIGINT.
pub async fn run(opts: AgentOptions, source: Source) -> Result<(), AgentError> {
    no_huge_pages();
    let mut term = signal(SignalKind::terminate()).map_err(AgentError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(AgentError::Signals)?;
    let stop = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    };
    run_until(opts, source, stop).await
}

/// Keeps the agent's heap in small pages. Most of it is short-lived (a parse, a compile's
/// scratch), and with transparent huge pages each first touch zeroed 2 MB: 35 % of the
/// CPU time of enforcing 100,000 rules (docs/PERFORMANCE.md section 12). Not fatal.
fn no_huge_pages() {
    // SAFETY: plain prctl with integer arguments; it changes only this process's flags.
    let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        tracing::debug!(error = %e, "transparent huge pages stay on");
    }
}

/// A [`Source`] once started: the files read, or the controller to link to.
enum Mode {
    Files(Reloader),
    Controller(ControllerLink),
}

/// Runs the agent until `stop` completes.
pub async fn run_until(
    opts: AgentOptions,
    source: Source,
    stop: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    let (mode, first) = match source {
        Source::Files => {
            let (reloader, set) = Reloader::start(&opts).map_err(|diags| {
                AgentError::BadInput(diags.iter().map(|d| d.to_string()).collect())
            })?;
            (Mode::Files(reloader), Some(set))
        }
        Source::Controller(link) => (Mode::Controller(link), None),
    };
    let (state, events) = start_dataplane(&opts, &mode)?;
    if let Some(set) = first {
        enforce_first(&state, set).await;
    }
    let listener = bind_socket(&opts)?;
    if let Some(addr) = opts.metrics {
        crate::metrics::start(addr, state.clone(), opts.maps_dir()).await;
    }
    tokio::spawn(crate::api::serve(listener, state.clone()));
    if let Some(rb) = events {
        tokio::spawn(background::read_events(rb, state.clone()));
    }
    tokio::spawn(crate::export::Exporter::new(opts.export()).run(state.clone()));
    tokio::spawn(background::catch_up_standby(state.clone()));
    match mode {
        Mode::Files(reloader) => reloader.watch(&opts, state, stop).await,
        Mode::Controller(link) => {
            tokio::spawn(crate::managed::run(link, opts.clone(), state));
            stop.await
        }
    }
    let _ = std::fs::remove_file(&opts.socket);
    tracing::info!(
        path = %opts.bpffs.display(),
        "stopping; enforcement stays in place (pinned)"
    );
    Ok(())
}

/// Loads the programs (adopting what a previous agent pinned) and hands the data plane to
/// its owner; the event ring, when there is one, goes to its reader.
fn start_dataplane(
    opts: &AgentOptions,
    mode: &Mode,
) -> Result<
    (
        DataPlaneHandle,
        Option<aya::maps::RingBuf<aya::maps::MapData>>,
    ),
    AgentError,
> {
    ensure_bpffs(&opts.bpffs)?;
    let pinned_before = opts.maps_dir().join(names::CONFIG).exists();
    let mut dp = Dataplane::load(&LoadOptions {
        pin_dir: Some(opts.maps_dir()),
        sessions: opts.session_capacity,
        denied: opts.denied_capacity,
        ..Default::default()
    })?;
    dp.set_flags(if opts.drop_non_ip {
        config_flags::DROP_NON_IP
    } else {
        0
    })?;
    let events = dp.take_events();
    if pinned_before {
        log_adoption(&dp, opts, mode);
    }
    let standby_behind = Default::default();
    let enforcer = Enforcer::new(dp, opts, std::sync::Arc::clone(&standby_behind));
    let flows = FlowLog::new(opts.flow_buffer, &opts.node);
    let state = DataPlaneHandle::start(enforcer, &opts.maps_dir(), flows, standby_behind)?;
    Ok((state, events))
}

/// The policy of the files at start-up.
async fn enforce_first(state: &DataPlaneHandle, set: ResourceSet) {
    match state.enforce(set, None).await {
        Ok(enforced) if enforced.is_complete() => tracing::info!("enforcing {enforced}"),
        Ok(incomplete) => tracing::error!("{incomplete}"),
        Err(e) => tracing::error!("{e}"),
    }
}

/// The local API's socket, created owner-only (0600): a chmod after bind would leave a
/// moment in which anyone could connect.
fn bind_socket(opts: &AgentOptions) -> Result<UnixListener, AgentError> {
    if let Some(parent) = opts.socket.parent() {
        std::fs::create_dir_all(parent).map_err(AgentError::io(parent))?;
    }
    let _ = std::fs::remove_file(&opts.socket);
    // The umask is the process's, so it is put back at once.
    // SAFETY: umask cannot fail; only this startup code creates files now.
    let umask = unsafe { libc::umask(0o177) };
    let bound = UnixListener::bind(&opts.socket);
    // SAFETY: as above.
    unsafe { libc::umask(umask) };
    let listener = bound.map_err(AgentError::io(&opts.socket))?;
    tracing::info!(
        path = %opts.socket.display(),
        "serving stats, flows and sessions"
    );
    Ok(listener)
}

/// Says what a previous agent left in the pins: its policy (the controller revision a
/// managed agent noted, else the data plane's generation) and the sessions kept.
fn log_adoption(dp: &Dataplane, opts: &AgentOptions, mode: &Mode) {
    let generation = match dp.config() {
        Ok(c) => c.generation,
        Err(e) => return tracing::warn!(error = %e, "reading the adopted configuration failed"),
    };
    let sessions = dp.session_count();
    if generation == 0 && sessions == 0 {
        return; // pinned, but nothing was ever applied or judged
    }
    let noted = match mode {
        Mode::Controller(_) => crate::managed::noted_revision(opts),
        Mode::Files(_) => None,
    };
    match noted {
        Some(revision) => tracing::info!(
            revision,
            generation,
            sessions,
            "adopted a previous agent's policy and sessions"
        ),
        None => tracing::info!(
            generation,
            sessions,
            "adopted a previous agent's policy and sessions"
        ),
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
fn ensure_bpffs(dir: &std::path::Path) -> Result<(), AgentError> {
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
            tracing::info!(path = "/sys/fs/bpf", "mounted a BPF filesystem");
            if private_mount_namespace() {
                // `ip netns exec` makes such a namespace: the mount, the pins and the TCX
                // links on them end with this process, taking enforcement along.
                tracing::warn!(
                    "/sys/fs/bpf was mounted in what may be a mount namespace of this agent alone (ip netns exec makes one); if so, the pins end with the agent, and enforcement with them: mount bpffs where it outlives the agent, or start it with nsenter --net"
                );
            }
            return Ok(());
        }
    }
    Err(AgentError::NotOnBpffs(dir.to_path_buf()))
}

/// `microseg agent --cleanup`: takes the classifiers off every interface (classic filters
/// too when their record is gone) and removes all pinned state.
pub fn cleanup(opts: &AgentOptions) -> Result<(), AgentError> {
    let links = opts.links_dir();
    for iface in Dataplane::attached_interfaces(&links) {
        Dataplane::detach(&iface, &links)?;
    }
    Dataplane::detach_netlink_filters(crate::interfaces::list().keys().map(String::as_str));
    if opts.bpffs.exists() {
        std::fs::remove_dir_all(&opts.bpffs).map_err(AgentError::io(&opts.bpffs))?;
    }
    let _ = std::fs::remove_file(&opts.socket);
    let _ = std::fs::remove_file(crate::managed::revision_file(opts));
    Ok(())
}
