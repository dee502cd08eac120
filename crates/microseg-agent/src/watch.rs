//! Wakes the agent when a policy file changes (inotify), so an edit is enforced within
//! milliseconds instead of at the next poll. The poll stays: it also sees interfaces come
//! and go, and covers anything inotify misses (a watch limit, a new subdirectory).

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
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

struct Inotify(OwnedFd);

impl AsRawFd for Inotify {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

pub struct Watcher {
    fd: AsyncFd<Inotify>,
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
        let fd = Inotify(unsafe { OwnedFd::from_raw_fd(raw) });
        // SAFETY: the Inotify owns its descriptor for as long as the AsyncFd owns it.
        let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
            .map_err(|e| std::io::Error::other(e.to_string()))?;
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
        loop {
            let Ok(mut guard) = self.fd.readable_mut().await else {
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
                if n <= 0 {
                    break;
                }
                any = true;
            }
            guard.clear_ready();
            if any {
                return;
            }
        }
    }
}
