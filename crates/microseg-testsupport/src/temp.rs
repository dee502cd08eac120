//! Temp dirs and loopback ports.

use std::path::{Path, PathBuf};

use crate::command::unique_name;

/// A fresh directory, removed on drop.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Under the system's temp dir, named after `what`.
    pub fn new(what: &str) -> TempDir {
        TempDir::new_in(&std::env::temp_dir(), what)
    }

    /// Under `base` (a server run as another user needs a dir it can reach: /tmp).
    pub fn new_in(base: &Path, what: &str) -> TempDir {
        let p = base.join(unique_name(&format!("microseg-{what}-")));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("create {}: {e}", p.display()));
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a loopback port")
        .port()
}
