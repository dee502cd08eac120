//! The namespaces CLI, NODE and SRV with their veths (see the crate docs), and putting a
//! thread into one of them, pinned to a CPU.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use crate::cleanup::{register, Undo};
use crate::tools::sh;

pub(crate) const CLI_IP: &str = "10.91.1.2";
pub(crate) const SRV_IP: &str = "10.91.2.2";
pub(crate) const P_IPERF: u16 = 7001;
pub(crate) const P_CPS: u16 = 7002;
pub(crate) const P_RR: u16 = 7003;
pub(crate) const P_UDP: u16 = 7004;

pub(crate) struct Topo {
    pub(crate) node: String,
    pub(crate) cli: String,
    pub(crate) srv: String,
    pub(crate) dir: PathBuf,
    pub(crate) bpffs: PathBuf,
}

impl Topo {
    pub(crate) fn new() -> Result<Topo, String> {
        let prefix = format!("mcmp{}", std::process::id());
        let t = Topo {
            node: format!("{prefix}-node"),
            cli: format!("{prefix}-cli"),
            srv: format!("{prefix}-srv"),
            dir: std::env::temp_dir().join(&prefix),
            bpffs: PathBuf::from(format!("/sys/fs/bpf/{prefix}")),
        };
        register(Undo::Dir(t.dir.clone()));
        std::fs::create_dir_all(t.dir.join("policy")).map_err(|e| e.to_string())?;
        for ns in [&t.node, &t.cli, &t.srv] {
            register(Undo::Netns(ns.clone()));
            sh(&["ip", "netns", "add", ns])?;
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        }
        let n = t.node.as_str();
        for (w, ns, net) in [("cli", &t.cli, "10.91.1"), ("srv", &t.srv, "10.91.2")] {
            let host = format!("veth-{w}");
            sh(&[
                "ip", "-n", n, "link", "add", &host, "type", "veth", "peer", "name", "eth0",
                "netns", ns,
            ])?;
            sh(&[
                "ip",
                "-n",
                n,
                "addr",
                "add",
                &format!("{net}.1/24"),
                "dev",
                &host,
            ])?;
            sh(&["ip", "-n", n, "link", "set", &host, "up"])?;
            sh(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{net}.2/24"),
                "dev",
                "eth0",
            ])?;
            sh(&["ip", "-n", ns, "link", "set", "eth0", "up"])?;
            sh(&[
                "ip",
                "-n",
                ns,
                "route",
                "add",
                "default",
                "via",
                &format!("{net}.1"),
            ])?;
        }
        // Per-namespace sysctls only.
        for (ns, setting) in [
            (n, "net.ipv4.ip_forward=1"),
            (t.cli.as_str(), "net.ipv4.ip_local_port_range=1024 65000"),
            (t.cli.as_str(), "net.ipv4.tcp_tw_reuse=1"),
        ] {
            sh(&["ip", "netns", "exec", ns, "sysctl", "-qw", setting])?;
        }
        Ok(t)
    }
}

pub(crate) fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        enter(&path);
        pin(0);
        f()
    })
    .join()
    .expect("netns thread")
}

pub(crate) fn enter(path: &str) {
    let fd = File::open(path).expect("open netns");
    // SAFETY: setns on the calling thread only.
    let rc = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {path}");
}

/// Pins the calling thread to `cpu` (client side 0, server side 1) when the machine has it:
/// with 2 CPUs, unpinned client and server threads land on one CPU or on two at random and
/// every figure becomes bimodal.
pub(crate) fn pin(cpu: usize) {
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) } as usize;
    if n < 2 {
        return;
    }
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu % n, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}
