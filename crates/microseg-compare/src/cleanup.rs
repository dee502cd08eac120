//! Cleanup: everything created is registered first, removed on every exit path (normal end,
//! error, panic, SIGINT/SIGTERM/SIGHUP).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

#[derive(Clone)]
pub(crate) enum Undo {
    Netns(String),
    Kill(u32),
    Dir(PathBuf),
    Cmd(Vec<String>),
}

static UNDO: Mutex<Vec<Undo>> = Mutex::new(Vec::new());
pub(crate) static STOP: AtomicBool = AtomicBool::new(false);

pub(crate) fn register(u: Undo) {
    UNDO.lock().unwrap_or_else(|p| p.into_inner()).push(u);
}

pub(crate) fn unregister_kill(pid: u32) {
    UNDO.lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|u| !matches!(u, Undo::Kill(p) if *p == pid));
}

/// Runs a command to its end, output discarded, result ignored.
pub(crate) fn run_quiet(c: &[String]) {
    let _ = Command::new(&c[0])
        .args(&c[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

pub(crate) fn cleanup_all() {
    STOP.store(true, Ordering::SeqCst);
    let items: Vec<Undo> = std::mem::take(&mut *UNDO.lock().unwrap_or_else(|p| p.into_inner()));
    // Reverse order: processes first, then commands (agent --cleanup), then namespaces.
    for u in items.iter().rev() {
        if let Undo::Kill(pid) = u {
            unsafe { libc::kill(*pid as i32, libc::SIGTERM) };
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    for u in items.iter().rev() {
        match u {
            Undo::Kill(pid) => unsafe {
                libc::kill(*pid as i32, libc::SIGKILL);
            },
            Undo::Cmd(c) => run_quiet(c),
            _ => {}
        }
    }
    for u in items.iter().rev() {
        match u {
            Undo::Netns(n) => {
                let _ = Command::new("ip").args(["netns", "del", n]).status();
            }
            Undo::Dir(d) => {
                let _ = std::fs::remove_dir_all(d);
            }
            _ => {}
        }
    }
}

/// Blocks the termination signals in every thread and handles them on one of its own.
pub(crate) fn install_signal_thread() {
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        let set_copy = set;
        std::thread::spawn(move || {
            let mut sig: libc::c_int = 0;
            libc::sigwait(&set_copy, &mut sig);
            eprintln!("\nmicroseg-compare: signal {sig}: removing namespaces and filters");
            cleanup_all();
            std::process::exit(130);
        });
    }
}
