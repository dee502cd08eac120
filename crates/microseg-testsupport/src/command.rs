//! Running commands that must succeed, and names no other test uses.

use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// `prefix`, this process's id and a counter: unique among the tests running at once
/// (also across test binaries). Kept short: interface names take 15 bytes at most.
pub fn unique_name(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("{prefix}{}x{n}", std::process::id())
}

/// Runs `args[0]` with the rest as arguments; panics with its stderr unless it succeeds.
pub fn sh(args: &[&str]) -> Output {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", args[0]));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `ip ARGS` in the calling thread's network namespace; it must succeed.
pub fn ip(args: &[&str]) {
    let mut all = vec!["ip"];
    all.extend_from_slice(args);
    sh(&all);
}

/// A command's output when it succeeded; else its stderr, for a poll to say what it saw.
pub fn succeeded(out: Output) -> Result<Output, String> {
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        ))
    }
}
