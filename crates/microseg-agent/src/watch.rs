//! Wakes the agent when a policy file changes (inotify) or an interface comes or goes
//! (netlink link notifications), so either is acted on within milliseconds, without
//! polling. A slow poll stays for anything they miss (a watch limit, a lost notification).

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use tokio::io::unix::AsyncFd;

/// Changes that can alter what the loader reads.
const MASK: u32 = libc::IN_CLOSE_WRITE
    | libc::IN_MOVED_TO
    | libc::IN_MOVED_FROM
    | libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF
    | libc::IN_ATTRIB;

pub struct Watcher {
    fd: AsyncFd<OwnedFd>,
}

impl Watcher {
    /// Watches `paths` and, for directories, every subdirectory.
    pub fn new(paths: &[PathBuf]) -> std::io::Result<Watcher> {
        // SAFETY: plain syscall; the result is checked before use.
        let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor we own from here on.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let fd = register(fd)?;
        let w = Watcher { fd };
        for p in paths {
            w.add(p);
        }
        Ok(w)
    }

    /// Adds `path` (and its subdirectories); watching what is already watched is harmless.
    pub fn add(&self, path: &Path) {
        if let Ok(c) = CString::new(path.as_os_str().as_encoded_bytes()) {
            // SAFETY: valid fd and NUL-terminated path; failure only means no wake-up.
            unsafe { libc::inotify_add_watch(self.fd.get_ref().as_raw_fd(), c.as_ptr(), MASK) };
        }
        if path.is_dir() {
            for e in std::fs::read_dir(path).into_iter().flatten().flatten() {
                let p = e.path();
                let hidden = p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'));
                if p.is_dir() && !hidden {
                    self.add(&p);
                }
            }
        }
    }

    /// Waits for the next batch of changes and drains it.
    pub async fn changed(&mut self) {
        wait_and_drain(&mut self.fd).await
    }
}

/// Link notifications (RTMGRP_LINK) of the agent's network namespace: an interface
/// created, renamed, moved or deleted.
pub struct LinkWatcher {
    fd: AsyncFd<OwnedFd>,
}

impl LinkWatcher {
    pub fn new() -> std::io::Result<LinkWatcher> {
        // SAFETY: plain syscall; the result is checked before use.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor we own from here on.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: a zeroed sockaddr_nl is valid; the groups are set below.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        addr.nl_groups = libc::RTMGRP_LINK as u32;
        // SAFETY: binding our socket to an address of the size given.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fd = register(fd)?;
        Ok(LinkWatcher { fd })
    }

    /// Waits for the next batch of link notifications and drains it. An overrun socket
    /// (ENOBUFS) counts as a change too: something happened that was not read.
    pub async fn changed(&mut self) {
        wait_and_drain(&mut self.fd).await
    }
}

/// Hands `fd` to tokio's reactor, waking readers when it is readable.
fn register(fd: OwnedFd) -> std::io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the AsyncFd owns the OwnedFd, which stays open and the same descriptor until
    // the AsyncFd drops it.
    unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(|e| std::io::Error::other(e.to_string()))
}

/// Waits until `fd` is readable and reads everything it holds; returns once something
/// was read or notifications were lost (ENOBUFS).
async fn wait_and_drain<T: AsRawFd>(fd: &mut AsyncFd<T>) {
    loop {
        let Ok(mut guard) = fd.readable_mut().await else {
            return std::future::pending().await;
        };
        let mut buf = [0u8; 4096];
        let mut any = false;
        loop {
            // SAFETY: reading into a buffer we own, of the length given.
            let n = unsafe {
                libc::read(
                    guard.get_inner().as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                )
            };
            if n > 0 {
                any = true;
                continue;
            }
            if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOBUFS) {
                any = true;
            }
            break;
        }
        guard.clear_ready();
        if any {
            return;
        }
    }
}
