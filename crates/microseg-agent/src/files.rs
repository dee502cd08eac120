//! Standalone mode: the policy files and the node's interfaces, watched; a change is read
//! and enforced, or the last good policy stays in force.

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use microseg_policy::{Diagnostic, Loader, ResourceSet};

use crate::handle::{blocking, DataPlaneHandle};
use crate::reconcile::{fingerprint, load, ms, Fingerprint};
use crate::watch::{LinkWatcher, Watcher};
use crate::AgentOptions;

/// The reload poll when inotify and link notifications both work.
const SAFETY_POLL: Duration = Duration::from_secs(2);

/// Reads the policy files, keeping what it parsed so that a reload parses only what
/// changed.
pub struct Reloader {
    /// Out while a load runs on a blocking thread.
    loader: Option<Loader>,
    paths: Vec<PathBuf>,
    /// What the files and interfaces looked like at the last load.
    seen: Fingerprint,
}

impl Reloader {
    /// Reads the files the first time (the agent refuses to start on errors).
    pub fn start(opts: &AgentOptions) -> Result<(Reloader, ResourceSet), Vec<Diagnostic>> {
        let mut loader = Loader::default();
        let seen = fingerprint(&opts.policy_paths);
        let set = load(&mut loader, &opts.policy_paths)?;
        let reloader = Reloader {
            loader: Some(loader),
            paths: opts.policy_paths.clone(),
            seen,
        };
        Ok((reloader, set))
    }

    /// Watches the files and interfaces until `stop`, reloading on every change.
    pub async fn watch(
        mut self,
        opts: &AgentOptions,
        state: DataPlaneHandle,
        stop: impl Future<Output = ()>,
    ) {
        let mut files = Watcher::new(&opts.policy_paths)
            .map_err(
                |e| tracing::warn!(error = %e, "no inotify; changes are seen at the next poll"),
            )
            .ok();
        let mut links = LinkWatcher::new()
            .map_err(|e| tracing::warn!(error = %e, "no link notifications; interfaces are polled"))
            .ok();
        // With both watchers the poll is only a safety net: a wake-up every 100 ms, each
        // listing the interfaces, cost one TCP stream several percent on a 2-CPU VM.
        let poll = match (&files, &links) {
            (Some(_), Some(_)) => opts.reload_interval.max(SAFETY_POLL),
            _ => opts.reload_interval,
        };
        let mut reload = tokio::time::interval(poll);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = async { files.as_mut().expect("guarded").changed().await }, if files.is_some() => {
                    self.reload_if_changed(&state).await;
                    // New subdirectories get watches too.
                    if let Some(w) = &files {
                        for p in &opts.policy_paths {
                            w.add(p);
                        }
                    }
                }
                _ = async { links.as_mut().expect("guarded").changed().await }, if links.is_some() => {
                    self.reload_if_changed(&state).await;
                }
                _ = reload.tick() => self.reload_if_changed(&state).await,
            }
        }
    }

    /// Reloads when the files or interfaces look different from the last time.
    async fn reload_if_changed(&mut self, state: &DataPlaneHandle) {
        let paths = self.paths.clone();
        let started = Instant::now();
        let now = blocking(move || fingerprint(&paths)).await;
        tracing::debug!(fingerprint_ms = ms(started.elapsed()), "files looked at");
        if now != self.seen {
            self.seen = now;
            self.reload(state).await;
        }
    }

    /// Files or interfaces changed: enforce the new policy, or keep the last good one.
    async fn reload(&mut self, state: &DataPlaneHandle) {
        let started = Instant::now();
        let loaded = self.load().await;
        let load_time = started.elapsed();
        match loaded {
            Ok(set) => match state.enforce(set, None).await {
                Ok(enforced) if enforced.is_complete() => tracing::info!(
                    read_ms = ms(load_time),
                    total_ms = ms(started.elapsed()),
                    "reloaded: enforcing {enforced}"
                ),
                Ok(incomplete) => tracing::error!("reload: {incomplete}"),
                Err(e) => tracing::error!("reload: {e}"),
            },
            Err(diags) => {
                for d in &diags {
                    tracing::error!("{d}");
                }
                tracing::error!(
                    errors = diags.len(),
                    revision = state.view().revision,
                    "policy not reloaded; the revision in force stays"
                );
                // Interfaces may still have come or gone: re-enforce the last good policy.
                let errors = diags.iter().map(|d| d.to_string()).collect();
                match state.enforce_last(errors).await {
                    Ok(Some(incomplete)) if !incomplete.is_complete() => {
                        tracing::error!("{incomplete}")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::error!("{e}"),
                }
            }
        }
    }

    /// Reads the files on a blocking thread (thousands of files, or one of 100,000 rules).
    async fn load(&mut self) -> Result<ResourceSet, Vec<Diagnostic>> {
        let mut loader = self.loader.take().unwrap_or_default();
        let paths = self.paths.clone();
        let (loader, loaded) = blocking(move || {
            let loaded = load(&mut loader, &paths);
            (loader, loaded)
        })
        .await;
        self.loader = Some(loader);
        loaded
    }
}
