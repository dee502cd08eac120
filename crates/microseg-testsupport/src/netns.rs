//! Named network namespaces (`ip netns`), deleted on drop.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;

use crate::command::{sh, unique_name};

/// A network namespace under /run/netns with its loopback up; deleted on drop, with
/// every link in it, however the test ends.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// A namespace named [`unique_name`]`(prefix)`.
    pub fn new(prefix: &str) -> NetNs {
        NetNs::named(&unique_name(prefix))
    }

    /// A namespace of exactly this name, which the caller made unique.
    pub fn named(name: &str) -> NetNs {
        sh(&["ip", "netns", "add", name]);
        // Owned from here: a failure below still deletes it.
        let ns = NetNs {
            name: name.to_string(),
        };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NAME ARGS`; it must succeed.
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["ip", "-n", &self.name];
        all.extend_from_slice(args);
        sh(&all);
    }

    /// A veth pair: `here` in this namespace, `there` in `peer`'s. Deleting either end,
    /// or either namespace, deletes both.
    pub fn veth_to(&self, here: &str, peer: &NetNs, there: &str) {
        self.ip(&[
            "link", "add", here, "type", "veth", "peer", "name", there, "netns", &peer.name,
        ]);
    }

    /// `program` to be run inside this namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        ns_command(&self.name, program)
    }

    /// Runs `f` on a thread inside this namespace and returns what it returns.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        in_netns(&self.name, f)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A veth pair made in the calling thread's namespace; deleted on drop (deleting one
/// end deletes its peer).
#[derive(Debug)]
pub struct Veth {
    name: String,
}

impl Veth {
    pub fn new(name: &str, peer: &str) -> Veth {
        sh(&[
            "ip", "link", "add", name, "type", "veth", "peer", "name", peer,
        ]);
        Veth {
            name: name.to_string(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.name])
            .output();
    }
}

/// `program` to be run inside the named namespace `ns` (nsenter execs it, so the child's
/// pid is the program's).
pub fn ns_command(ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/run/netns/{ns}")).arg(program);
    c
}

/// Runs `f` on a thread inside the named namespace `ns`; a panic in `f` is the caller's.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    let outcome = std::thread::spawn(move || {
        let fd = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        // SAFETY: changes this new thread's namespace only; the fd is valid for the call.
        let rc = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
    .join();
    outcome.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exists(name: &str) -> bool {
        std::path::Path::new("/run/netns").join(name).exists()
    }

    #[test]
    fn a_namespace_is_deleted_when_the_test_that_made_it_panics() {
        let (tx, rx) = std::sync::mpsc::channel();
        let outcome = std::thread::spawn(move || {
            let ns = NetNs::new("mstsp");
            tx.send(ns.name().to_string()).unwrap();
            assert!(exists(ns.name()));
            panic!("the test fails");
        })
        .join();
        assert!(outcome.is_err());
        let name = rx.recv().unwrap();
        assert!(!exists(&name), "{name} left behind");
    }

    #[test]
    fn a_closure_runs_inside_the_namespace_and_a_veth_joins_two() {
        let (a, b) = (NetNs::new("mstsa"), NetNs::new("mstsb"));
        a.veth_to("va", &b, "vb");
        let links = |ns: &NetNs| {
            let out = ns.command("ip").args(["-o", "link"]).output().unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        assert!(links(&a).contains("va@"), "{}", links(&a));
        assert!(links(&b).contains("vb@"), "{}", links(&b));
        assert!(a.run(|| crate::ifindex("va")) > 0);
    }
}
