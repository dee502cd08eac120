//! `microseg-compare`: microseg against no filter, iptables (nft back end) and nftables, side
//! by side in one run, on a topology of network namespaces this command creates and removes.
//!
//! Topology (all names carry the process id, everything is removed on exit, also on failure
//! and on SIGINT/SIGTERM/SIGHUP):
//!
//! ```text
//!  CLI netns            NODE netns (a router: ip_forward=1 in this namespace only)     SRV netns
//!  eth0 10.91.1.2 ──veth── veth-cli 10.91.1.1      veth-srv 10.91.2.1 ──veth── eth0 10.91.2.2
//! ```
//!
//! Every filter lives in NODE: microseg's classifiers on the host ends of the veths (the
//! agent runs there via `nsenter --net`), iptables/nftables in NODE's FORWARD hook. Nothing
//! is touched outside these namespaces except a bpffs directory of our own.
//!
//! Rule sets of size N: N-1 rules that match no test traffic (rule i allows TCP from
//! 172.16.0.0+i+1/32 to the server, port 1024+(i mod 60000)), then the rule that allows the
//! real client→server flows (TCP 7001 iperf3, 7002 connections, 7003 request/response,
//! UDP 7004). N = 0 means just that allowing rule.
//!
//! Rule changes: "one rule change" is one rule for every contender (microseg: a separate
//! one-rule deny file at priority 10 next to the big policy, removed again to undo;
//! iptables: `-D`/`-A` of one rule; nftables: delete/add of one map element), repeated
//! `--changes` times per turn; "rule set replaced" rewrites the whole set without that rule.
//! Every write waits a random 0-100 ms first, so it lands at a random phase of the agent's
//! 100 ms policy poll.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const CLI_IP: &str = "10.91.1.2";
const SRV_IP: &str = "10.91.2.2";
const P_IPERF: u16 = 7001;
const P_CPS: u16 = 7002;
const P_RR: u16 = 7003;
const P_UDP: u16 = 7004;
/// No server thread, child or loop outlives this, whatever happens.
const RUN_LIMIT: Duration = Duration::from_secs(45 * 60);

// ---------------------------------------------------------------------------------------
// Cleanup: everything created is registered first, removed on every exit path.

#[derive(Clone)]
enum Undo {
    Netns(String),
    Kill(u32),
    Dir(PathBuf),
    Cmd(Vec<String>),
}

static UNDO: Mutex<Vec<Undo>> = Mutex::new(Vec::new());
static STOP: AtomicBool = AtomicBool::new(false);

fn register(u: Undo) {
    UNDO.lock().unwrap_or_else(|p| p.into_inner()).push(u);
}

fn unregister_kill(pid: u32) {
    UNDO.lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|u| !matches!(u, Undo::Kill(p) if *p == pid));
}

fn cleanup_all() {
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
            Undo::Cmd(c) => {
                let _ = Command::new(&c[0])
                    .args(&c[1..])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
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
fn install_signal_thread() {
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

// ---------------------------------------------------------------------------------------
// Small helpers

fn sh(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args[0]))?;
    if !out.status.success() {
        return Err(format!(
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        enter(&path);
        pin(0);
        f()
    })
    .join()
    .expect("netns thread")
}

fn enter(path: &str) {
    let fd = File::open(path).expect("open netns");
    // SAFETY: setns on the calling thread only.
    let rc = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {path}");
}

/// Pins the calling thread to `cpu` (client side 0, server side 1) when the machine has it:
/// with 2 CPUs, unpinned client and server threads land on one CPU or on two at random and
/// every figure becomes bimodal.
fn pin(cpu: usize) {
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

fn median(v: &[f64]) -> f64 {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn meminfo_kb(keys: &[&str]) -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    text.lines()
        .filter(|l| keys.iter().any(|k| l.starts_with(&format!("{k}:"))))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

/// Kernel memory that rule sets live in: slab (iptables/nftables objects) and vmalloc
/// (BPF maps, big nftables sets). Machine-wide, so other activity shows up as noise.
fn kernel_kb() -> u64 {
    meminfo_kb(&["Slab", "VmallocUsed"])
}

// ---------------------------------------------------------------------------------------
// Topology

struct Topo {
    node: String,
    cli: String,
    srv: String,
    dir: PathBuf,
    bpffs: PathBuf,
}

impl Topo {
    fn new() -> Result<Topo, String> {
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
        sh(&[
            "ip",
            "netns",
            "exec",
            n,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ])?;
        sh(&[
            "ip",
            "netns",
            "exec",
            &t.cli,
            "sysctl",
            "-qw",
            "net.ipv4.ip_local_port_range=1024 65000",
        ])?;
        sh(&[
            "ip",
            "netns",
            "exec",
            &t.cli,
            "sysctl",
            "-qw",
            "net.ipv4.tcp_tw_reuse=1",
        ])?;
        Ok(t)
    }
}

// ---------------------------------------------------------------------------------------
// Servers in SRV, bounded by STOP and RUN_LIMIT.

static UDP_RX: AtomicU64 = AtomicU64::new(0);

fn set_rcvtimeo(fd: i32, ms: i64) {
    let tv = libc::timeval {
        tv_sec: ms / 1000,
        tv_usec: (ms % 1000) * 1000,
    };
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as u32,
        );
    }
}

fn start_servers(t: &Topo) -> Result<(), String> {
    let started = Instant::now();
    let path = format!("/run/netns/{}", t.srv);
    let (tx, rx) = std::sync::mpsc::channel::<Result<(), String>>();
    // Connections: accept and close at once (the server closes first).
    {
        let (path, tx) = (path.clone(), tx.clone());
        std::thread::spawn(move || {
            enter(&path);
            pin(1);
            let l = match TcpListener::bind(("0.0.0.0", P_CPS)) {
                Ok(l) => l,
                Err(e) => return tx.send(Err(e.to_string())).unwrap(),
            };
            set_rcvtimeo(l.as_raw_fd(), 200);
            tx.send(Ok(())).unwrap();
            while !STOP.load(Ordering::Relaxed) && started.elapsed() < RUN_LIMIT {
                if let Ok((s, _)) = l.accept() {
                    drop(s);
                }
            }
        });
    }
    // Request/response: echo on each connection.
    {
        let (path, tx) = (path.clone(), tx.clone());
        std::thread::spawn(move || {
            enter(&path);
            pin(1);
            let l = match TcpListener::bind(("0.0.0.0", P_RR)) {
                Ok(l) => l,
                Err(e) => return tx.send(Err(e.to_string())).unwrap(),
            };
            set_rcvtimeo(l.as_raw_fd(), 200);
            tx.send(Ok(())).unwrap();
            while !STOP.load(Ordering::Relaxed) && started.elapsed() < RUN_LIMIT {
                if let Ok((mut s, _)) = l.accept() {
                    std::thread::spawn(move || {
                        pin(1);
                        s.set_nodelay(true).ok();
                        s.set_read_timeout(Some(Duration::from_secs(5))).ok();
                        let mut buf = [0u8; 256];
                        while let Ok(n) = s.read(&mut buf) {
                            if n == 0 || s.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    });
                }
            }
        });
    }
    // UDP sink: counts datagrams; answers those starting with 'H' (the handshake, so that
    // conntrack sees both directions and the flow is ESTABLISHED, as it is for microseg).
    {
        let (path, tx) = (path.clone(), tx.clone());
        std::thread::spawn(move || {
            enter(&path);
            pin(1);
            let s = match UdpSocket::bind(("0.0.0.0", P_UDP)) {
                Ok(s) => s,
                Err(e) => return tx.send(Err(e.to_string())).unwrap(),
            };
            let big: libc::c_int = 8 << 20;
            unsafe {
                libc::setsockopt(
                    s.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVBUFFORCE,
                    &big as *const _ as *const libc::c_void,
                    4,
                );
            }
            s.set_read_timeout(Some(Duration::from_millis(200))).ok();
            tx.send(Ok(())).unwrap();
            let mut buf = [0u8; 2048];
            while !STOP.load(Ordering::Relaxed) && started.elapsed() < RUN_LIMIT {
                if let Ok((n, from)) = s.recv_from(&mut buf) {
                    if n > 0 && buf[0] == b'H' {
                        let _ = s.send_to(&buf[..n], from);
                    } else {
                        UDP_RX.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
    }
    for _ in 0..3 {
        rx.recv_timeout(Duration::from_secs(5))
            .map_err(|e| e.to_string())??;
    }
    // iperf3 server.
    let child = Command::new("ip")
        .args([
            "netns",
            "exec",
            &t.srv,
            "iperf3",
            "-s",
            "-p",
            &P_IPERF.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("iperf3: {e}"))?;
    register(Undo::Kill(child.id()));
    std::mem::forget(child);
    std::thread::sleep(Duration::from_millis(300));
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Measurements (each bounded in count and time)

fn srv(port: u16) -> SocketAddr {
    format!("{SRV_IP}:{port}").parse().unwrap()
}

/// iperf3 throughput in Gbit/s (receiver side), or NaN on failure.
fn iperf(t: &Topo, streams: u32, secs: u32) -> f64 {
    let out = Command::new("timeout")
        .args([
            &(secs + 15).to_string(),
            "ip",
            "netns",
            "exec",
            &t.cli,
            "iperf3",
            "-c",
            SRV_IP,
            "-p",
            &P_IPERF.to_string(),
            "-t",
            &secs.to_string(),
            "-P",
            &streams.to_string(),
            "--connect-timeout",
            "3000",
            "-A",
            "0,1",
            "-J",
        ])
        .output();
    let Ok(out) = out else { return f64::NAN };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
        return f64::NAN;
    };
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|b| b / 1e9)
        .unwrap_or(f64::NAN)
}

/// New TCP connections per second: connect, wait for the server's close, close. One thread.
fn cps(t: &Topo, secs: f64, max: u64) -> (f64, u64) {
    in_netns(&t.cli, move || {
        let start = Instant::now();
        let limit = Duration::from_secs_f64(secs);
        let (mut ok, mut failed) = (0u64, 0u64);
        let mut buf = [0u8; 16];
        while ok + failed < max && start.elapsed() < limit {
            match TcpStream::connect_timeout(&srv(P_CPS), Duration::from_millis(500)) {
                Ok(mut s) => {
                    s.set_read_timeout(Some(Duration::from_millis(500))).ok();
                    let _ = s.read(&mut buf);
                    ok += 1;
                }
                Err(_) => failed += 1,
            }
        }
        (ok as f64 / start.elapsed().as_secs_f64(), failed)
    })
}

/// UDP datagrams (64-byte payload) per second received by the server. One sender thread.
fn udp_pps(t: &Topo, secs: f64, max: u64) -> f64 {
    in_netns(&t.cli, move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.connect(srv(P_UDP)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300))).ok();
        let mut b = [0u8; 64];
        let mut shook = false;
        for _ in 0..5 {
            b[0] = b'H';
            let _ = s.send(&b);
            if s.recv(&mut [0u8; 128]).is_ok() {
                shook = true;
                break;
            }
        }
        if !shook {
            return f64::NAN;
        }
        b[0] = b'x';
        let before = UDP_RX.load(Ordering::SeqCst);
        let start = Instant::now();
        let limit = Duration::from_secs_f64(secs);
        let mut sent = 0u64;
        while sent < max {
            for _ in 0..256 {
                let _ = s.send(&b);
            }
            sent += 256;
            if start.elapsed() >= limit {
                break;
            }
        }
        let el = start.elapsed().as_secs_f64();
        std::thread::sleep(Duration::from_millis(100));
        (UDP_RX.load(Ordering::SeqCst) - before) as f64 / el
    })
}

/// Round trips of 32 bytes on one connection: (p50, p99) in microseconds.
fn rr(t: &Topo, secs: f64, max: usize) -> (f64, f64) {
    in_netns(&t.cli, move || {
        let Ok(mut s) = TcpStream::connect_timeout(&srv(P_RR), Duration::from_secs(2)) else {
            return (f64::NAN, f64::NAN);
        };
        s.set_nodelay(true).ok();
        s.set_read_timeout(Some(Duration::from_secs(1))).ok();
        let msg = [7u8; 32];
        let mut back = [0u8; 32];
        let mut lat = Vec::with_capacity(max);
        let start = Instant::now();
        let limit = Duration::from_secs_f64(secs);
        while lat.len() < max && start.elapsed() < limit {
            let t0 = Instant::now();
            if s.write_all(&msg).is_err() || s.read_exact(&mut back).is_err() {
                break;
            }
            lat.push(t0.elapsed().as_nanos() as f64 / 1000.0);
        }
        if lat.is_empty() {
            return (f64::NAN, f64::NAN);
        }
        lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let pick = |q: f64| lat[((lat.len() as f64 - 1.0) * q).round() as usize];
        (pick(0.50), pick(0.99))
    })
}

/// Probes new TCP connections to the server, one started every millisecond, from the
/// moment `t0` arrives. `want_ok`: returns when a connection succeeded (time of its
/// completion after t0). Otherwise: returns the start time (after t0) of the first probe
/// that got no answer within 200 ms. Bounded by `limit`.
fn spawn_probe(
    t: &Topo,
    want_ok: bool,
    limit: Duration,
) -> (
    std::sync::mpsc::Sender<Instant>,
    std::thread::JoinHandle<Option<f64>>,
) {
    let (tx, rx) = std::sync::mpsc::channel::<Instant>();
    let path = format!("/run/netns/{}", t.cli);
    let h = std::thread::spawn(move || {
        enter(&path);
        let t0 = rx.recv().ok()?;
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: P_CPS.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes([10, 91, 2, 2]),
            },
            sin_zero: [0; 8],
        };
        let mut pending: Vec<(i32, Instant)> = Vec::new();
        let mut last_start = t0 - Duration::from_millis(5);
        let mut result = None;
        let answer = Duration::from_millis(200);
        while t0.elapsed() < limit && result.is_none() && !STOP.load(Ordering::Relaxed) {
            if last_start.elapsed() >= Duration::from_millis(1) {
                unsafe {
                    let fd = libc::socket(
                        libc::AF_INET,
                        libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                        0,
                    );
                    if fd >= 0 {
                        libc::connect(
                            fd,
                            &addr as *const _ as *const libc::sockaddr,
                            std::mem::size_of::<libc::sockaddr_in>() as u32,
                        );
                        last_start = Instant::now();
                        pending.push((fd, last_start));
                    }
                }
            }
            let mut pfds: Vec<libc::pollfd> = pending
                .iter()
                .map(|(fd, _)| libc::pollfd {
                    fd: *fd,
                    events: libc::POLLOUT,
                    revents: 0,
                })
                .collect();
            unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as u64, 0) };
            let now = Instant::now();
            let mut keep = Vec::with_capacity(pending.len());
            for (i, (fd, st)) in pending.iter().enumerate() {
                let done = pfds[i].revents != 0;
                let mut err: libc::c_int = 0;
                if done {
                    let mut len = 4u32;
                    unsafe {
                        libc::getsockopt(
                            *fd,
                            libc::SOL_SOCKET,
                            libc::SO_ERROR,
                            &mut err as *mut _ as *mut libc::c_void,
                            &mut len,
                        )
                    };
                }
                let connected = done && err == 0 && now.duration_since(*st) < answer;
                if want_ok && connected && result.is_none() {
                    result = Some(now.duration_since(t0).as_secs_f64() * 1e3);
                }
                if !want_ok && !done && now.duration_since(*st) >= answer && result.is_none() {
                    result = Some(st.duration_since(t0).as_secs_f64() * 1e3);
                }
                if done || now.duration_since(*st) >= answer {
                    unsafe { libc::close(*fd) };
                } else {
                    keep.push((*fd, *st));
                }
            }
            pending = keep;
            std::thread::sleep(Duration::from_micros(200));
        }
        for (fd, _) in pending {
            unsafe { libc::close(fd) };
        }
        result
    });
    (tx, h)
}

// ---------------------------------------------------------------------------------------
// Rule sets

fn dummy(i: usize) -> (String, u16) {
    let a = 0xAC10_0000u32 + i as u32 + 1; // 172.16.0.0 + i + 1
    let ip = format!(
        "{}.{}.{}.{}",
        a >> 24,
        (a >> 16) & 255,
        (a >> 8) & 255,
        a & 255
    );
    (ip, 1024 + (i % 60000) as u16)
}

fn microseg_workloads() -> String {
    format!(
        "apiVersion: microseg.io/v1\nkind: Workload\nmetadata: {{name: client, labels: {{app: client}}}}\nspec: {{interface: veth-cli, ips: [{CLI_IP}]}}\n---\n\
         apiVersion: microseg.io/v1\nkind: Workload\nmetadata: {{name: server, labels: {{app: server}}}}\nspec: {{interface: veth-srv, ips: [{SRV_IP}]}}\n"
    )
}

/// `n` rules (n-1 non-matching, then the allowing one); `with_cps=false` leaves the
/// connection port out of the allowing rule (the "rule set replaced" measurement, the same
/// change iptables and nftables get); `n=None`: a policy with an empty ingress section
/// (default deny).
fn microseg_policy(n: Option<usize>, with_cps: bool) -> String {
    let mut s = String::from(
        "apiVersion: microseg.io/v1\nkind: Policy\nmetadata: {name: bench}\nspec:\n  selector: {matchLabels: {app: server}}\n",
    );
    let Some(n) = n else {
        s.push_str("  ingress: []\n");
        return s;
    };
    let dummies = n.max(1) - 1;
    s.push_str("  ingress:\n");
    for i in 0..dummies {
        let (ip, port) = dummy(i);
        s.push_str(&format!(
            "    - action: allow\n      from: [{{cidr: {ip}/32}}]\n      ports: [{{protocol: TCP, port: {port}}}]\n"
        ));
    }
    let cps = if with_cps {
        format!(", {{protocol: TCP, port: {P_CPS}}}")
    } else {
        String::new()
    };
    s.push_str(&format!(
        "    - action: allow\n      from: [{{cidr: {CLI_IP}/32}}]\n      ports: [{{protocol: TCP, port: {P_IPERF}}}, {{protocol: TCP, port: {P_RR}}}, {{protocol: UDP, port: {P_UDP}}}{cps}]\n"
    ));
    s
}

/// The one-rule change for microseg: a small file of its own next to the big policy, holding
/// one deny rule for the client's connection flow at priority 10 (the big policy has the
/// default 1000, and lower numbers win). Writing it is the change; removing it undoes it.
/// Like `iptables -D` of one rule or `nft delete element` of one element, nothing else in
/// the policy directory is touched.
fn microseg_deny_one() -> String {
    format!(
        "apiVersion: microseg.io/v1\nkind: Policy\nmetadata: {{name: deny-one}}\nspec:\n  selector: {{matchLabels: {{app: server}}}}\n  priority: 10\n  ingress:\n    - action: deny\n      from: [{{cidr: {CLI_IP}/32}}]\n      ports: [{{protocol: TCP, port: {P_CPS}}}]\n"
    )
}

const ALLOW_IPT: [(&str, u16); 4] = [
    ("udp", P_UDP),
    ("tcp", P_IPERF),
    ("tcp", P_RR),
    ("tcp", P_CPS),
];

/// `with_cps = false` leaves out the rule for the connection port (the "rule set replaced"
/// measurement: the whole set again, without that one rule).
fn iptables_rules(n: Option<usize>, with_cps: bool) -> String {
    let mut s = String::from(
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n",
    );
    if let Some(n) = n {
        for i in 0..n.max(1) - 1 {
            let (ip, port) = dummy(i);
            s.push_str(&format!(
                "-A FORWARD -s {ip}/32 -d {SRV_IP}/32 -p tcp -m tcp --dport {port} -j ACCEPT\n"
            ));
        }
        // The allowing rule: one per protocol/port (iptables has no tcp+udp in one rule).
        for (proto, port) in ALLOW_IPT.iter().filter(|(_, p)| with_cps || *p != P_CPS) {
            s.push_str(&format!(
                "-A FORWARD -s {CLI_IP}/32 -d {SRV_IP}/32 -p {proto} -m {proto} --dport {port} -j ACCEPT\n"
            ));
        }
    }
    s.push_str("COMMIT\n");
    s
}

fn nft_rules(n: Option<usize>, with_cps: bool) -> String {
    let mut s = String::from("table inet mcmp\ndelete table inet mcmp\ntable inet mcmp {\n  map allow {\n    type ipv4_addr . ipv4_addr . inet_proto . inet_service : verdict\n");
    if let Some(n) = n {
        s.push_str("    elements = {\n");
        for i in 0..n.max(1) - 1 {
            let (ip, port) = dummy(i);
            s.push_str(&format!("      {ip} . {SRV_IP} . tcp . {port} : accept,\n"));
        }
        let allow: Vec<String> = ALLOW_IPT
            .iter()
            .filter(|(_, p)| with_cps || *p != P_CPS)
            .map(|(p, port)| format!("      {CLI_IP} . {SRV_IP} . {p} . {port} : accept"))
            .collect();
        s.push_str(&allow.join(",\n"));
        s.push_str("\n    }\n");
    }
    s.push_str("  }\n  chain bench_forward {\n    type filter hook forward priority filter; policy drop;\n    ct state established,related accept\n    ip saddr . ip daddr . meta l4proto . th dport vmap @allow\n  }\n}\n");
    s
}

// ---------------------------------------------------------------------------------------
// Contenders

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Who {
    None,
    Microseg,
    Iptables,
    Nft,
}

impl Who {
    fn name(self) -> &'static str {
        match self {
            Who::None => "no filter",
            Who::Microseg => "microseg",
            Who::Iptables => "iptables-nft",
            Who::Nft => "nftables",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Change {
    /// The one-rule change: microseg writes a one-rule deny file (priority 10) next to the
    /// big policy; iptables deletes one rule; nftables deletes one map element.
    One,
    /// Undoes `One`: removes the file, appends the rule, adds the element back.
    Undo,
    /// The whole rule set replaced by the same set without the connection-port rule
    /// (microseg: the 10 MB policy file rewritten; iptables-nft-restore; nft -f).
    Replace,
}

/// The agent's default poll interval for policy files (`reload_interval`).
const AGENT_POLL: Duration = Duration::from_millis(100);
const DENY_ONE_FILE: &str = "deny-one.yaml";

static RNG: AtomicU64 = AtomicU64::new(0);

/// A uniformly random duration in [0, max), from a xorshift64* seeded by the clock and pid.
fn jitter(max: Duration) -> Duration {
    let mut x = RNG.load(Ordering::Relaxed);
    if x == 0 {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        x = t ^ ((std::process::id() as u64) << 32) | 1;
    }
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    RNG.store(x, Ordering::Relaxed);
    let r = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
    Duration::from_nanos(((r >> 11) as f64 / (1u64 << 53) as f64 * max.as_nanos() as f64) as u64)
}

#[derive(Default, Clone)]
struct Sample {
    cps: f64,
    cps_failed: u64,
    tput1: f64,
    tput4: f64,
    udp: f64,
    p50: f64,
    p99: f64,
    apply_cmd_ms: f64,
    apply_traffic_ms: f64,
    /// One rule change, every sample of this turn: ms until new connections fail.
    change_ms: Vec<f64>,
    /// The same, until the command returned (microseg: until the agent logged the revision).
    change_cmd_ms: Vec<f64>,
    /// Undoing it: ms until new connections pass again.
    undo_ms: Vec<f64>,
    /// The whole rule set replaced by one without the connection-port rule: ms until new
    /// connections fail, and until the command returned (microseg: the agent's log line).
    replace_ms: f64,
    replace_cmd_ms: f64,
    mem_kernel_kb: f64,
    mem_memlock_kb: f64,
    agent_rss_kb: f64,
    /// microseg: the agent's CPU time during the connection loop, in % of one CPU.
    agent_cpu_pct: f64,
}

struct Ctx {
    bin: PathBuf,
    t: Topo,
    secs: f64,
    iperf_secs: u32,
    files: BTreeMap<usize, RuleFiles>,
    agent: Option<Child>,
    /// One-rule changes (each followed by its undo) per turn.
    changes: usize,
    revision_seen: u64,
}

struct RuleFiles {
    mseg_full: PathBuf,
    mseg_revoked: PathBuf,
    ipt: PathBuf,
    nft: PathBuf,
    ipt_revoked: PathBuf,
    nft_revoked: PathBuf,
}

impl Ctx {
    fn agent_log(&self) -> PathBuf {
        self.t.dir.join("agent.log")
    }
    fn socket(&self) -> PathBuf {
        self.t.dir.join("agent.sock")
    }
    fn nsenter(&self) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.t.node));
        c
    }
    fn agent_cleanup_cmd(&self) -> Vec<String> {
        vec![
            "nsenter".into(),
            format!("--net=/run/netns/{}", self.t.node),
            self.bin.display().to_string(),
            "agent".into(),
            "--cleanup".into(),
            "--bpffs".into(),
            self.t.bpffs.display().to_string(),
            "--socket".into(),
            self.socket().display().to_string(),
            "--state-dir".into(),
            self.t.dir.display().to_string(),
        ]
    }
    fn node_exec(&self, args: &[&str]) -> Result<String, String> {
        let mut v = vec!["ip", "netns", "exec", self.t.node.as_str()];
        v.extend_from_slice(args);
        sh(&v)
    }

    fn write_policy(&self, src: Option<&Path>, text: Option<&str>) {
        let tmp = self.t.dir.join(".bench.yaml.tmp");
        match (src, text) {
            (Some(p), _) => {
                std::fs::copy(p, &tmp).unwrap();
            }
            (_, Some(s)) => std::fs::write(&tmp, s).unwrap(),
            _ => unreachable!(),
        }
        std::fs::rename(&tmp, self.t.dir.join("policy").join("bench.yaml")).unwrap();
    }

    /// Waits until the agent log reports `revision N:`; ms since `t0`, or NaN.
    fn wait_revision(&mut self, t0: Instant, limit: Duration) -> f64 {
        let want = self.revision_seen + 1;
        let needle = format!("revision {want}:");
        while t0.elapsed() < limit {
            let log = std::fs::read_to_string(self.agent_log()).unwrap_or_default();
            if log.contains(&needle) {
                self.revision_seen = want;
                return t0.elapsed().as_secs_f64() * 1e3;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        f64::NAN
    }

    /// Installs the contender's base state: default deny for the server (microseg: agent
    /// up with an empty ingress section; iptables/nftables: FORWARD policy drop).
    fn install_base(&mut self, who: Who) -> Result<(), String> {
        match who {
            Who::None => Ok(()),
            Who::Microseg => {
                std::fs::write(
                    self.t.dir.join("policy").join("workloads.yaml"),
                    microseg_workloads(),
                )
                .unwrap();
                self.write_policy(None, Some(&microseg_policy(None, true)));
                let log = File::create(self.agent_log()).unwrap();
                let mut c = self.nsenter();
                c.arg(&self.bin)
                    .arg("agent")
                    .arg("--policy")
                    .arg(self.t.dir.join("policy"))
                    .arg("--bpffs")
                    .arg(&self.t.bpffs)
                    .arg("--socket")
                    .arg(self.socket())
                    .arg("--state-dir")
                    .arg(&self.t.dir)
                    .arg("--node")
                    .arg("compare")
                    .stdout(Stdio::null())
                    .stderr(log);
                let child = c.spawn().map_err(|e| format!("agent: {e}"))?;
                register(Undo::Kill(child.id()));
                self.agent = Some(child);
                self.revision_seen = 0;
                let t0 = Instant::now();
                if self.wait_revision(t0, Duration::from_secs(60)).is_nan() {
                    return Err(format!(
                        "agent did not enforce: {}",
                        std::fs::read_to_string(self.agent_log()).unwrap_or_default()
                    ));
                }
                Ok(())
            }
            Who::Iptables => {
                let f = self.t.dir.join("ipt-base.rules");
                std::fs::write(&f, iptables_rules(None, true)).unwrap();
                self.node_exec(&["iptables-nft-restore", f.to_str().unwrap()])
                    .map(|_| ())
            }
            Who::Nft => {
                let f = self.t.dir.join("nft-base.nft");
                std::fs::write(&f, nft_rules(None, true)).unwrap();
                self.node_exec(&["nft", "-f", f.to_str().unwrap()])
                    .map(|_| ())
            }
        }
    }

    fn memlock_kb(&self) -> f64 {
        let dir = self.t.bpffs.join("maps");
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return f64::NAN;
        };
        let mut total = 0u64;
        for e in rd.flatten() {
            if let Ok(out) = sh(&[
                "bpftool",
                "map",
                "show",
                "pinned",
                e.path().to_str().unwrap(),
                "-j",
            ]) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&out) {
                    total += v["bytes_memlock"].as_u64().unwrap_or(0);
                }
            }
        }
        total as f64 / 1024.0
    }

    fn sessions_map_memlock(&self) -> Option<(u64, u64)> {
        let p = self.t.bpffs.join("maps").join("MSEG_SESSIONS");
        let out = sh(&["bpftool", "map", "show", "pinned", p.to_str()?, "-j"]).ok()?;
        let v: serde_json::Value = serde_json::from_str(&out).ok()?;
        Some((v["bytes_memlock"].as_u64()?, v["max_entries"].as_u64()?))
    }

    /// Applies the rule set of size `n`: (command ms, traffic ms).
    fn apply(&mut self, who: Who, n: usize) -> (f64, f64) {
        std::thread::sleep(jitter(AGENT_POLL));
        let (tx, probe) = spawn_probe(&self.t, true, Duration::from_secs(90));
        let files = &self.files[&n];
        let (mseg, ipt, nft) = (
            files.mseg_full.clone(),
            files.ipt.clone(),
            files.nft.clone(),
        );
        let t0 = Instant::now();
        tx.send(t0).ok();
        let cmd_ms = match who {
            Who::Microseg => {
                self.write_policy(Some(&mseg), None);
                self.wait_revision(t0, Duration::from_secs(90))
            }
            Who::Iptables => match self.node_exec(&["iptables-nft-restore", ipt.to_str().unwrap()])
            {
                Ok(_) => t0.elapsed().as_secs_f64() * 1e3,
                Err(e) => {
                    eprintln!("  {e}");
                    f64::NAN
                }
            },
            Who::Nft => match self.node_exec(&["nft", "-f", nft.to_str().unwrap()]) {
                Ok(_) => t0.elapsed().as_secs_f64() * 1e3,
                Err(e) => {
                    eprintln!("  {e}");
                    f64::NAN
                }
            },
            Who::None => f64::NAN,
        };
        let traffic = probe.join().ok().flatten().unwrap_or(f64::NAN);
        (cmd_ms, traffic)
    }

    /// Writes `text` to `name` in the policy directory, atomically (write, then rename).
    fn write_policy_file(&self, name: &str, text: &str) {
        let tmp = self.t.dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.t.dir.join("policy").join(name)).unwrap();
    }

    /// One change of the rules (see `Change`): (command ms, traffic ms). Traffic: for
    /// `One`/`Replace` the start time of the first probe that got no answer within 200 ms
    /// (new connections fail); for `Undo` the time the first probe connected.
    /// Every change waits a random 0..AGENT_POLL first, so the write lands at a random phase
    /// of the agent's poll tick (the same wait for every contender; it is not counted).
    fn change(&mut self, who: Who, n: usize, kind: Change) -> (f64, f64) {
        std::thread::sleep(jitter(AGENT_POLL));
        let (tx, probe) = spawn_probe(&self.t, kind == Change::Undo, Duration::from_secs(60));
        let files = &self.files[&n];
        let (mseg_rev, ipt_rev, nft_rev) = (
            files.mseg_revoked.clone(),
            files.ipt_revoked.clone(),
            files.nft_revoked.clone(),
        );
        let cps_rule =
            format!("-s {CLI_IP}/32 -d {SRV_IP}/32 -p tcp -m tcp --dport {P_CPS} -j ACCEPT");
        let el = format!("{{ {CLI_IP} . {SRV_IP} . tcp . {P_CPS} : accept }}");
        let el_key = format!("{{ {CLI_IP} . {SRV_IP} . tcp . {P_CPS} }}");
        let t0 = Instant::now();
        tx.send(t0).ok();
        let done = |r: Result<String, String>| match r {
            Ok(_) => t0.elapsed().as_secs_f64() * 1e3,
            Err(e) => {
                eprintln!("  {e}");
                f64::NAN
            }
        };
        let cmd_ms = match (who, kind) {
            (Who::None, _) => f64::NAN,
            (Who::Microseg, k) => {
                match k {
                    Change::One => self.write_policy_file(DENY_ONE_FILE, &microseg_deny_one()),
                    Change::Undo => {
                        std::fs::remove_file(self.t.dir.join("policy").join(DENY_ONE_FILE)).unwrap()
                    }
                    Change::Replace => self.write_policy(Some(&mseg_rev), None),
                }
                self.wait_revision(t0, Duration::from_secs(60))
            }
            (Who::Iptables, Change::One) | (Who::Iptables, Change::Undo) => {
                let op = if kind == Change::One { "-D" } else { "-A" };
                let mut args = vec!["iptables-nft", op, "FORWARD"];
                args.extend(cps_rule.split(' '));
                done(self.node_exec(&args))
            }
            (Who::Iptables, Change::Replace) => {
                done(self.node_exec(&["iptables-nft-restore", ipt_rev.to_str().unwrap()]))
            }
            (Who::Nft, Change::One) => done(
                self.node_exec(&["nft", "delete", "element", "inet", "mcmp", "allow", &el_key]),
            ),
            (Who::Nft, Change::Undo) => {
                done(self.node_exec(&["nft", "add", "element", "inet", "mcmp", "allow", &el]))
            }
            (Who::Nft, Change::Replace) => {
                done(self.node_exec(&["nft", "-f", nft_rev.to_str().unwrap()]))
            }
        };
        let traffic = probe.join().ok().flatten().unwrap_or(f64::NAN);
        (cmd_ms, traffic)
    }

    fn teardown(&mut self, who: Who) {
        match who {
            Who::None => {}
            Who::Microseg => {
                if let Some(mut a) = self.agent.take() {
                    unsafe { libc::kill(a.id() as i32, libc::SIGTERM) };
                    let deadline = Instant::now() + Duration::from_secs(10);
                    while Instant::now() < deadline {
                        if let Ok(Some(_)) = a.try_wait() {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    let _ = a.kill();
                    let _ = a.wait();
                    unregister_kill(a.id());
                }
                let c = self.agent_cleanup_cmd();
                let _ = Command::new(&c[0])
                    .args(&c[1..])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
                let _ = std::fs::remove_dir_all(&self.t.bpffs);
                let _ = std::fs::remove_file(self.t.dir.join("policy").join("bench.yaml"));
                let _ = std::fs::remove_file(self.t.dir.join("policy").join(DENY_ONE_FILE));
            }
            Who::Iptables | Who::Nft => {
                let _ = self.node_exec(&["nft", "flush", "ruleset"]);
            }
        }
    }

    fn agent_cpu_ticks(&self) -> Option<f64> {
        let a = self.agent.as_ref()?;
        let st = std::fs::read_to_string(format!("/proc/{}/stat", a.id())).ok()?;
        let rest = &st[st.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        // fields 14 and 15 of stat (utime, stime) are 11 and 12 after the comm.
        Some(f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?)
    }

    fn battery(&self, s: &mut Sample) {
        let c0 = self.agent_cpu_ticks();
        let w0 = Instant::now();
        let (c, f) = cps(&self.t, self.secs, 2_000_000);
        if let (Some(a), Some(b)) = (c0, self.agent_cpu_ticks()) {
            let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
            s.agent_cpu_pct = (b - a) / hz / w0.elapsed().as_secs_f64() * 100.0;
        }
        s.cps = c;
        s.cps_failed = f;
        s.tput1 = iperf(&self.t, 1, self.iperf_secs);
        s.tput4 = iperf(&self.t, 4, self.iperf_secs);
        s.udp = udp_pps(&self.t, self.secs, 200_000_000);
        let (p50, p99) = rr(&self.t, self.secs, 200_000);
        s.p50 = p50;
        s.p99 = p99;
    }

    /// One turn: install, apply `n` rules, measure, change one rule, remove.
    fn turn(&mut self, who: Who, n: usize) -> Result<Sample, String> {
        let mut s = Sample::default();
        self.install_base(who)?;
        std::thread::sleep(Duration::from_millis(200));
        let k0 = kernel_kb();
        let m0 = if who == Who::Microseg {
            self.memlock_kb()
        } else {
            0.0
        };
        if who != Who::None {
            let (cmd, traffic) = self.apply(who, n);
            s.apply_cmd_ms = cmd;
            s.apply_traffic_ms = traffic;
            if traffic.is_nan() {
                return Err(format!(
                    "{}: traffic never passed after applying {n} rules",
                    who.name()
                ));
            }
        }
        std::thread::sleep(Duration::from_millis(300));
        s.mem_kernel_kb = kernel_kb() as f64 - k0 as f64;
        if who == Who::Microseg {
            s.mem_memlock_kb = self.memlock_kb() - m0;
            if let Some(a) = &self.agent {
                let st =
                    std::fs::read_to_string(format!("/proc/{}/status", a.id())).unwrap_or_default();
                s.agent_rss_kb = st
                    .lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
                    .unwrap_or(f64::NAN);
            }
        }
        self.battery(&mut s);
        if who != Who::None {
            // The one-rule change, `changes` times (change, then undo), then the whole rule
            // set replaced by one without that rule.
            for _ in 0..self.changes {
                let (cmd, traffic) = self.change(who, n, Change::One);
                s.change_cmd_ms.push(cmd);
                s.change_ms.push(traffic);
                let (_, back) = self.change(who, n, Change::Undo);
                s.undo_ms.push(back);
                if back.is_nan() {
                    eprintln!(
                        "  {}: traffic did not pass again after the undo",
                        who.name()
                    );
                    break;
                }
            }
            let (cmd, traffic) = self.change(who, n, Change::Replace);
            s.replace_cmd_ms = cmd;
            s.replace_ms = traffic;
        }
        Ok(s)
    }
}

// ---------------------------------------------------------------------------------------
// Report

fn fmt(x: f64, dec: usize) -> String {
    if x.is_finite() {
        format!("{x:.dec$}")
    } else {
        "-".into()
    }
}

fn fmt_rules(n: usize) -> String {
    match n {
        0 => "0".into(),
        n if n % 1000 == 0 => format!("{},000", n / 1000),
        n => n.to_string(),
    }
}

fn svg(
    path: &Path,
    rules: &[usize],
    cps: &BTreeMap<(usize, Who), f64>,
    title: &str,
) -> std::io::Result<()> {
    let (w, h, l, r, top, bot) = (760.0, 440.0, 80.0, 180.0, 50.0, 60.0);
    let pw = w - l - r;
    let ph = h - top - bot;
    let ymax = cps
        .values()
        .copied()
        .filter(|x| x.is_finite())
        .fold(0.0f64, f64::max)
        * 1.1;
    let ymax = if ymax > 0.0 { ymax } else { 1.0 };
    let x = |i: usize| {
        l + if rules.len() > 1 {
            pw * i as f64 / (rules.len() - 1) as f64
        } else {
            pw / 2.0
        }
    };
    let y = |v: f64| top + ph - ph * v / ymax;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{}\" y=\"25\" text-anchor=\"middle\" font-size=\"15\">{title}</text>\n",
        l + pw / 2.0
    );
    for k in 0..=5 {
        let v = ymax * k as f64 / 5.0;
        s += &format!(
            "<line x1=\"{l}\" x2=\"{}\" y1=\"{y0:.1}\" y2=\"{y0:.1}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{:.0}</text>\n",
            l + pw,
            l - 6.0,
            y(v) + 4.0,
            v,
            y0 = y(v)
        );
    }
    for (i, n) in rules.iter().enumerate() {
        s += &format!(
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
            x(i),
            top + ph + 20.0,
            fmt_rules(*n)
        );
    }
    s += &format!(
        "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">rules (the allowed flow matches the last)</text>\n<text transform=\"translate(18 {:.1}) rotate(-90)\" text-anchor=\"middle\">new TCP connections per second (median)</text>\n",
        l + pw / 2.0,
        h - 15.0,
        top + ph / 2.0
    );
    s += &format!("<rect x=\"{l}\" y=\"{top}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"#444\"/>\n");
    let colors = [
        (Who::None, "#555555", "4 3"),
        (Who::Microseg, "#d62728", ""),
        (Who::Iptables, "#1f77b4", ""),
        (Who::Nft, "#2ca02c", ""),
    ];
    for (k, (who, col, dash)) in colors.iter().enumerate() {
        let pts: Vec<(f64, f64)> = rules
            .iter()
            .enumerate()
            .filter_map(|(i, n)| {
                cps.get(&(*n, *who))
                    .filter(|v| v.is_finite())
                    .map(|v| (x(i), y(*v)))
            })
            .collect();
        let poly: Vec<String> = pts.iter().map(|(a, b)| format!("{a:.1},{b:.1}")).collect();
        s += &format!(
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{col}\" stroke-width=\"2\" stroke-dasharray=\"{dash}\"/>\n",
            poly.join(" ")
        );
        for (a, b) in &pts {
            s += &format!("<circle cx=\"{a:.1}\" cy=\"{b:.1}\" r=\"3.5\" fill=\"{col}\"/>\n");
        }
        let ly = top + 20.0 + 22.0 * k as f64;
        s += &format!(
            "<line x1=\"{}\" x2=\"{}\" y1=\"{ly}\" y2=\"{ly}\" stroke=\"{col}\" stroke-width=\"2\" stroke-dasharray=\"{dash}\"/><text x=\"{}\" y=\"{}\">{}</text>\n",
            l + pw + 15.0,
            l + pw + 45.0,
            l + pw + 52.0,
            ly + 4.0,
            who.name()
        );
    }
    s += "</svg>\n";
    std::fs::write(path, s)
}

// ---------------------------------------------------------------------------------------

struct Args {
    quick: bool,
    rules: Vec<usize>,
    reps: usize,
    svg: Option<PathBuf>,
    diagnose: bool,
    changes: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        quick: false,
        rules: vec![0, 1000, 10000, 100000],
        reps: 0,
        svg: None,
        diagnose: false,
        changes: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(s) = it.next() {
        match s.as_str() {
            "--quick" => a.quick = true,
            "--rules" => {
                a.rules = it
                    .next()
                    .ok_or("--rules needs a list")?
                    .split(',')
                    .map(|x| {
                        x.trim()
                            .replace('_', "")
                            .parse::<usize>()
                            .map_err(|e| format!("--rules: {e}"))
                    })
                    .collect::<Result<_, _>>()?;
                if a.rules.iter().any(|&n| n > 1_000_000) {
                    return Err(
                        "--rules: at most 1,000,000 (the dummy addresses are 172.16.0.0/12)".into(),
                    );
                }
            }
            "--reps" => {
                a.reps = it
                    .next()
                    .ok_or("--reps needs N")?
                    .parse()
                    .map_err(|e| format!("--reps: {e}"))?
            }
            "--diagnose" => a.diagnose = true,
            "--changes" => {
                a.changes = it
                    .next()
                    .ok_or("--changes needs N")?
                    .parse()
                    .map_err(|e| format!("--changes: {e}"))?
            }
            "--svg" => a.svg = Some(PathBuf::from(it.next().ok_or("--svg needs a path")?)),
            "-h" | "--help" => {
                println!("usage: microseg-compare [--quick] [--rules 0,1000,10000,100000] [--reps N] [--changes N] [--svg FILE] [--diagnose]");
                std::process::exit(0);
            }
            x => return Err(format!("unknown argument {x}")),
        }
    }
    if a.reps == 0 {
        a.reps = if a.quick { 2 } else { 4 };
    }
    if a.changes == 0 {
        a.changes = if a.quick { 2 } else { 3 };
    }
    Ok(a)
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("microseg-compare: {e}");
            std::process::exit(2);
        }
    };
    install_signal_thread();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&args)));
    cleanup_all();
    match r {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            eprintln!("microseg-compare: {e}");
            std::process::exit(1);
        }
        Err(_) => std::process::exit(101),
    }
}

fn ensure_tools() -> Result<(), String> {
    let need = [
        ("iperf3", "iperf3"),
        ("iptables-nft-restore", "iptables"),
        ("nft", "nftables"),
        ("bpftool", "bpftool"),
    ];
    let missing: Vec<&str> = need
        .iter()
        .filter(|(b, _)| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {b}")])
                .stdout(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        })
        .map(|(_, p)| *p)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("installing {missing:?}");
    let _ = Command::new("apt-get")
        .arg("update")
        .stdout(Stdio::null())
        .status();
    let mut c = Command::new("apt-get");
    c.args(["install", "-y"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(Stdio::null());
    if !c.status().map(|s| s.success()).unwrap_or(false) {
        return Err(format!("apt-get install {missing:?} failed"));
    }
    Ok(())
}

fn run(a: &Args) -> Result<(), String> {
    if unsafe { libc::geteuid() } != 0 {
        return Err("needs root (network namespaces, BPF, netfilter)".into());
    }
    let started = Instant::now();
    ensure_tools()?;
    // The workspace root: this crate's manifest dir is crates/microseg-compare.
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .map_err(|e| e.to_string())?;
    eprintln!("building the release microseg binary ...");
    let st = Command::new("cargo")
        .args(["build", "--release", "-p", "microseg"])
        .current_dir(&root)
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("cargo: {e}"))?;
    let bin = root.join("target/release/microseg");
    if !st.success() {
        if !bin.exists() {
            return Err("cargo build --release -p microseg failed".into());
        }
        eprintln!(
            "warning: cargo build --release -p microseg failed (the tree is being edited?); using the existing {}",
            bin.display()
        );
    }

    let t = Topo::new()?;
    start_servers(&t)?;
    let mut files = BTreeMap::new();
    for &n in &a.rules {
        let d = &t.dir;
        let rf = RuleFiles {
            mseg_full: d.join(format!("mseg-{n}.yaml")),
            mseg_revoked: d.join(format!("mseg-{n}-revoked.yaml")),
            ipt: d.join(format!("ipt-{n}.rules")),
            nft: d.join(format!("nft-{n}.nft")),
            ipt_revoked: d.join(format!("ipt-{n}-revoked.rules")),
            nft_revoked: d.join(format!("nft-{n}-revoked.nft")),
        };
        std::fs::write(&rf.mseg_full, microseg_policy(Some(n), true)).unwrap();
        std::fs::write(&rf.mseg_revoked, microseg_policy(Some(n), false)).unwrap();
        std::fs::write(&rf.ipt, iptables_rules(Some(n), true)).unwrap();
        std::fs::write(&rf.nft, nft_rules(Some(n), true)).unwrap();
        std::fs::write(&rf.ipt_revoked, iptables_rules(Some(n), false)).unwrap();
        std::fs::write(&rf.nft_revoked, nft_rules(Some(n), false)).unwrap();
        files.insert(n, rf);
    }
    let mut ctx = Ctx {
        bin,
        secs: if a.quick { 1.0 } else { 1.5 },
        iperf_secs: if a.quick { 1 } else { 2 },
        t,
        files,
        agent: None,
        changes: a.changes,
        revision_seen: 0,
    };
    register(Undo::Cmd(ctx.agent_cleanup_cmd()));
    register(Undo::Dir(ctx.t.bpffs.clone()));

    if a.diagnose {
        return diagnose(&mut ctx, &a.rules, a.reps);
    }
    let whos = [Who::None, Who::Microseg, Who::Iptables, Who::Nft];
    let mut samples: BTreeMap<(usize, Who), Vec<Sample>> = BTreeMap::new();
    let mut ratios: BTreeMap<(usize, Who), Vec<Sample>> = BTreeMap::new();
    for &n in &a.rules {
        for rep in 0..a.reps {
            let mut got: BTreeMap<Who, Sample> = BTreeMap::new();
            for k in 0..whos.len() {
                // Rotate the order every repetition so drift falls on every contender.
                let who = whos[(k + rep) % whos.len()];
                if STOP.load(Ordering::SeqCst) {
                    return Err("stopped".into());
                }
                let t0 = Instant::now();
                let res = ctx.turn(who, n);
                ctx.teardown(who);
                match res {
                    Ok(s) => {
                        eprintln!(
                            "rules {n:>6} rep {rep} {:<13} cps {:>7.0} (failed {}) tcp1 {:>6.2} tcp4 {:>6.2} Gbit/s udp {:>8.0} pps rr p50 {:>6.1} p99 {:>7.1} us apply {:>8} ms (traffic {:>8} ms) one change {:?} ms undo {:?} ms replaced {} ms agent cpu {}% [{:.1}s]",
                            who.name(), s.cps, s.cps_failed, s.tput1, s.tput4, s.udp, s.p50, s.p99,
                            fmt(s.apply_cmd_ms, 1), fmt(s.apply_traffic_ms, 1),
                            s.change_ms.iter().map(|x| fmt(*x, 1)).collect::<Vec<_>>(),
                            s.undo_ms.iter().map(|x| fmt(*x, 1)).collect::<Vec<_>>(),
                            fmt(s.replace_ms, 1), fmt(s.agent_cpu_pct, 0), t0.elapsed().as_secs_f64()
                        );
                        got.insert(who, s);
                    }
                    Err(e) => eprintln!("rules {n:>6} rep {rep} {:<13} FAILED: {e}", who.name()),
                }
            }
            if let Some(base) = got.get(&Who::None).cloned() {
                for (who, s) in &got {
                    ratios.entry((n, *who)).or_default().push(Sample {
                        cps: s.cps / base.cps,
                        tput1: s.tput1 / base.tput1,
                        tput4: s.tput4 / base.tput4,
                        udp: s.udp / base.udp,
                        p50: s.p50 / base.p50,
                        p99: s.p99 / base.p99,
                        ..Default::default()
                    });
                }
            }
            for (who, s) in got {
                samples.entry((n, who)).or_default().push(s);
            }
        }
    }

    // Sessions: microseg's session map as loaded (memlock / capacity); conntrack estimated.
    let mut sess_line = String::new();
    if ctx.install_base(Who::Microseg).is_ok() {
        if let Some((bytes, cap)) = ctx.sessions_map_memlock() {
            sess_line += &format!(
                "microseg: MSEG_SESSIONS bytes_memlock {} B for max_entries {} (LRU hash, preallocated) -> {:.1} MiB per 1,000,000 sessions ({:.0} B/session), whether used or not\n",
                bytes, cap, bytes as f64 * 1e6 / cap as f64 / 1048576.0, bytes as f64 / cap as f64
            );
        }
    }
    ctx.teardown(Who::Microseg);
    let slab = std::fs::read_to_string("/proc/slabinfo").unwrap_or_default();
    if let Some(l) = slab.lines().find(|l| l.starts_with("nf_conntrack ")) {
        let f: Vec<&str> = l.split_whitespace().collect();
        let objsize: f64 = f.get(3).and_then(|x| x.parse().ok()).unwrap_or(f64::NAN);
        let per_slab: f64 = f.get(4).and_then(|x| x.parse().ok()).unwrap_or(f64::NAN);
        let pages: f64 = f.get(5).and_then(|x| x.parse().ok()).unwrap_or(f64::NAN);
        let per_obj = pages * 4096.0 / per_slab;
        let max =
            std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_max").unwrap_or_default();
        let buckets = std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_buckets")
            .unwrap_or_default();
        sess_line += &format!(
            "conntrack (iptables and nftables): slab nf_conntrack objsize {objsize} B, {per_obj:.0} B/entry with slab packing -> {:.1} MiB per 1,000,000 entries + hash buckets 8 B each ({:.1} MiB for 1,000,000 buckets); estimate, allocated per entry; nf_conntrack_max here is {} (buckets {})\n",
            per_obj * 1e6 / 1048576.0, 8e6 / 1048576.0, max.trim(), buckets.trim()
        );
    } else {
        sess_line += "conntrack: no nf_conntrack line in /proc/slabinfo (merged slab?)\n";
    }

    // ---- report
    let mut out = String::new();
    let uname = sh(&["uname", "-r"]).unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        .unwrap_or_default();
    let date = sh(&["date", "-u", "+%Y-%m-%dT%H:%M:%SZ"]).unwrap_or_default();
    let nproc = sh(&["nproc"]).unwrap_or_default();
    out += &format!(
        "\nmicroseg-compare {}\nmachine: nproc {}, {}, kernel {}, date {}\nreps {} per (rules, contender), order rotated every rep; loop {} s; iperf3 -t {}; ratio = contender / no filter of the same rep; medians\n\n",
        std::env::args().skip(1).collect::<Vec<_>>().join(" "),
        nproc.trim(), cpu, uname.trim(), date.trim(), a.reps, ctx.secs, ctx.iperf_secs
    );
    out += "| rules | contender | conn/s | x | TCP 1 stream Gbit/s | x | TCP 4 streams Gbit/s | x | UDP 64 B kpps | x | RR p50 us | x | RR p99 us | x | apply ms (cmd / traffic) | one rule change ms (traffic) | rule set replaced ms (traffic) | rule memory KiB |\n";
    out += "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|\n";
    let mut cps_med: BTreeMap<(usize, Who), f64> = BTreeMap::new();
    let mut cps_ratio: BTreeMap<(usize, Who), f64> = BTreeMap::new();
    let mut tput_ratio: BTreeMap<(usize, Who), (f64, f64)> = BTreeMap::new();
    let mut change: BTreeMap<(usize, Who), f64> = BTreeMap::new();
    let mut apply: BTreeMap<(usize, Who), f64> = BTreeMap::new();
    let mut replace: BTreeMap<(usize, Who), f64> = BTreeMap::new();
    let mut change_lines = String::new();
    for &n in &a.rules {
        for who in whos {
            let Some(v) = samples.get(&(n, who)) else {
                continue;
            };
            let m = |f: fn(&Sample) -> f64| median(&v.iter().map(f).collect::<Vec<_>>());
            let rt = ratios.get(&(n, who)).cloned().unwrap_or_default();
            let r = |f: fn(&Sample) -> f64| median(&rt.iter().map(f).collect::<Vec<_>>());
            cps_med.insert((n, who), m(|s| s.cps));
            cps_ratio.insert((n, who), r(|s| s.cps));
            tput_ratio.insert((n, who), (r(|s| s.tput1), r(|s| s.tput4)));
            // Every one-rule-change sample of every rep, pooled.
            let all = |f: fn(&Sample) -> &Vec<f64>| -> Vec<f64> {
                v.iter().flat_map(|s| f(s).iter().copied()).collect()
            };
            let ch_all = all(|s| &s.change_ms);
            change.insert((n, who), median(&ch_all));
            if who != Who::None {
                let span = |x: &[f64]| {
                    let x: Vec<f64> = x.iter().copied().filter(|x| x.is_finite()).collect();
                    format!(
                        "median {} (min..max {}..{}, n={})",
                        fmt(median(&x), 1),
                        fmt(x.iter().copied().fold(f64::INFINITY, f64::min), 1),
                        fmt(x.iter().copied().fold(f64::NEG_INFINITY, f64::max), 1),
                        x.len()
                    )
                };
                change_lines += &format!(
                    "  {:>7} {:<13} change: traffic {}; cmd {}\n  {:>7} {:<13} undo:   traffic {}\n  {:>7} {:<13} rule set replaced: traffic {}; cmd {}\n",
                    fmt_rules(n), who.name(), span(&ch_all), span(&all(|s| &s.change_cmd_ms)),
                    "", "", span(&all(|s| &s.undo_ms)),
                    "", "", span(&v.iter().map(|s| s.replace_ms).collect::<Vec<_>>()),
                    span(&v.iter().map(|s| s.replace_cmd_ms).collect::<Vec<_>>())
                );
            }
            replace.insert((n, who), m(|s| s.replace_ms));
            apply.insert((n, who), m(|s| s.apply_traffic_ms));
            let mem = match who {
                Who::None => "-".to_string(),
                Who::Microseg => format!(
                    "memlock +{} / kernel {:+.0} / agent RSS {} (agent CPU {}% during conn/s)",
                    fmt(m(|s| s.mem_memlock_kb), 0),
                    m(|s| s.mem_kernel_kb),
                    fmt(m(|s| s.agent_rss_kb), 0),
                    fmt(m(|s| s.agent_cpu_pct), 0)
                ),
                _ => format!("kernel {:+.0}", m(|s| s.mem_kernel_kb)),
            };
            out += &format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                fmt_rules(n), who.name(),
                fmt(m(|s| s.cps), 0), fmt(r(|s| s.cps), 2),
                fmt(m(|s| s.tput1), 2), fmt(r(|s| s.tput1), 2),
                fmt(m(|s| s.tput4), 2), fmt(r(|s| s.tput4), 2),
                fmt(m(|s| s.udp) / 1e3, 0), fmt(r(|s| s.udp), 2),
                fmt(m(|s| s.p50), 1), fmt(r(|s| s.p50), 2),
                fmt(m(|s| s.p99), 1), fmt(r(|s| s.p99), 2),
                if who == Who::None { "-".into() } else { format!("{} / {}", fmt(m(|s| s.apply_cmd_ms), 1), fmt(m(|s| s.apply_traffic_ms), 1)) },
                if who == Who::None { "-".into() } else { fmt(change[&(n, who)], 1) },
                if who == Who::None { "-".into() } else { fmt(m(|s| s.replace_ms), 1) },
                mem
            );
        }
    }
    out += "\nspread of the ratio to no filter over the reps (min..max):\n";
    for &n in &a.rules {
        for who in [Who::Microseg, Who::Iptables, Who::Nft] {
            let Some(rt) = ratios.get(&(n, who)) else {
                continue;
            };
            let span = |f: fn(&Sample) -> f64| {
                let v: Vec<f64> = rt.iter().map(f).filter(|x| x.is_finite()).collect();
                let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                format!("{}..{}", fmt(lo, 2), fmt(hi, 2))
            };
            out += &format!(
                "  {:>7} {:<13} conn/s {}  tcp1 {}  tcp4 {}  udp {}  (n={})\n",
                fmt_rules(n),
                who.name(),
                span(|s| s.cps),
                span(|s| s.tput1),
                span(|s| s.tput4),
                span(|s| s.udp),
                rt.len()
            );
        }
    }
    out += &format!(
        "\none rule change (ms; every change and undo after a random 0-{} ms wait, all samples of all reps pooled):\n{change_lines}",
        AGENT_POLL.as_millis()
    );
    out += &format!("\nsessions:\n{sess_line}");

    // ---- targets (issue 5)
    out += "\ntargets for microseg (issue 5):\n";
    let verdict = |ok: bool| if ok { "PASS" } else { "MISS" };
    let fin = |x: f64| x.is_finite();
    for &n in &a.rules {
        let r = cps_ratio
            .get(&(n, Who::Microseg))
            .copied()
            .unwrap_or(f64::NAN);
        out += &format!(
            "  {} conn/s >= 0.9x no filter at {} rules: {}x\n",
            verdict(fin(r) && r >= 0.9),
            fmt_rules(n),
            fmt(r, 2)
        );
    }
    if let Some(&top) = a.rules.iter().max() {
        let m = cps_ratio
            .get(&(top, Who::Microseg))
            .copied()
            .unwrap_or(f64::NAN);
        let nf = cps_ratio.get(&(top, Who::Nft)).copied().unwrap_or(f64::NAN);
        let ip = cps_ratio
            .get(&(top, Who::Iptables))
            .copied()
            .unwrap_or(f64::NAN);
        out += &format!(
            "  {} conn/s at {} rules at least nftables: microseg {}x vs nftables {}x\n",
            verdict(fin(m) && fin(nf) && m >= nf),
            fmt_rules(top),
            fmt(m, 2),
            fmt(nf, 2)
        );
        out += &format!(
            "  {} conn/s at {} rules > 15x iptables: microseg/iptables = {}\n",
            verdict(fin(m) && fin(ip) && m > 15.0 * ip),
            fmt_rules(top),
            fmt(m / ip, 1)
        );
        let ch = change
            .get(&(top, Who::Microseg))
            .copied()
            .unwrap_or(f64::NAN);
        out += &format!("  {} one rule change enforced on traffic < 10 ms with {} rules: {} ms (nftables {} ms, iptables {} ms)\n", verdict(fin(ch) && ch < 10.0), fmt_rules(top), fmt(ch, 1), fmt(change.get(&(top, Who::Nft)).copied().unwrap_or(f64::NAN), 1), fmt(change.get(&(top, Who::Iptables)).copied().unwrap_or(f64::NAN), 1));
        let rp = |w: Who| replace.get(&(top, w)).copied().unwrap_or(f64::NAN);
        out += &format!(
            "  info: rule set replaced (whole set rewritten without that rule) with {} rules: {} ms (nftables {} ms, iptables {} ms)\n",
            fmt_rules(top),
            fmt(rp(Who::Microseg), 1),
            fmt(rp(Who::Nft), 1),
            fmt(rp(Who::Iptables), 1)
        );
        let ap = apply
            .get(&(top, Who::Microseg))
            .copied()
            .unwrap_or(f64::NAN);
        out += &format!(
            "  {} {} rules applied (traffic passes) < 1 s: {} ms\n",
            verdict(fin(ap) && ap < 1000.0),
            fmt_rules(top),
            fmt(ap, 1)
        );
    }
    for &n in &a.rules {
        let (t1, t4) = tput_ratio
            .get(&(n, Who::Microseg))
            .copied()
            .unwrap_or((f64::NAN, f64::NAN));
        out += &format!(
            "  {} TCP throughput >= 0.95x at {} rules: 1 stream {}x, 4 streams {}x\n",
            verdict(fin(t1) && fin(t4) && t1 >= 0.95 && t4 >= 0.95),
            fmt_rules(n),
            fmt(t1, 2),
            fmt(t4, 2)
        );
    }
    out += &format!("\ntotal time {:.0} s\n", started.elapsed().as_secs_f64());
    println!("{out}");
    if let Some(p) = &a.svg {
        svg(
            p,
            &a.rules,
            &cps_med,
            "New TCP connections per second vs. rule count",
        )
        .map_err(|e| format!("{}: {e}", p.display()))?;
        println!("plot written to {}", p.display());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// --diagnose: where microseg's time per new connection goes.

/// (run_cnt, run_time_ns) of every BPF program that uses one of our pinned maps.
fn prog_stats(ctx: &Ctx) -> BTreeMap<(u64, String), (u64, u64)> {
    let mut ours = std::collections::HashSet::new();
    if let Ok(rd) = std::fs::read_dir(ctx.t.bpffs.join("maps")) {
        for e in rd.flatten() {
            if let Ok(out) = sh(&[
                "bpftool",
                "map",
                "show",
                "pinned",
                e.path().to_str().unwrap(),
                "-j",
            ]) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&out) {
                    if let Some(id) = v["id"].as_u64() {
                        ours.insert(id);
                    }
                }
            }
        }
    }
    let mut res = BTreeMap::new();
    let Ok(out) = sh(&["bpftool", "prog", "show", "-j"]) else {
        return res;
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&out) else {
        return res;
    };
    for p in v.as_array().into_iter().flatten() {
        let uses = p["map_ids"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|m| m.as_u64().is_some_and(|m| ours.contains(&m)));
        if uses {
            res.insert(
                (
                    p["id"].as_u64().unwrap_or(0),
                    p["name"].as_str().unwrap_or("?").to_string(),
                ),
                (
                    p["run_cnt"].as_u64().unwrap_or(0),
                    p["run_time_ns"].as_u64().unwrap_or(0),
                ),
            );
        }
    }
    res
}

fn diagnose(ctx: &mut Ctx, rules: &[usize], reps: usize) -> Result<(), String> {
    let stats_path = "/proc/sys/kernel/bpf_stats_enabled";
    let old = std::fs::read_to_string(stats_path).unwrap_or_else(|_| "0".into());
    register(Undo::Cmd(vec![
        "sh".into(),
        "-c".into(),
        format!("echo {} > {stats_path}", old.trim()),
    ]));
    let secs = ctx.secs;
    let mut out = String::from("\nmicroseg --diagnose: conn/s and TCP medians; BPF run time from kernel.bpf_stats_enabled (on only during the 'bpf stats' loops)\n");
    let isecs = ctx.iperf_secs;
    for &n in rules {
        let (mut base, mut base_tcp1) = (Vec::new(), Vec::new());
        for _ in 0..reps {
            base.push(cps(&ctx.t, secs, 2_000_000).0);
            base_tcp1.push(iperf(&ctx.t, 1, isecs));
        }
        ctx.install_base(Who::Microseg)?;
        let (_, tr) = ctx.apply(Who::Microseg, n);
        if tr.is_nan() {
            ctx.teardown(Who::Microseg);
            return Err("microseg: traffic never passed".into());
        }
        std::thread::sleep(Duration::from_millis(300));
        let (mut normal, mut stopped, mut with_stats) = (Vec::new(), Vec::new(), Vec::new());
        let mut per_conn: BTreeMap<String, (f64, f64)> = BTreeMap::new();
        let pid = ctx.agent.as_ref().map(|a| a.id() as i32).unwrap_or(0);
        for _ in 0..reps {
            normal.push(cps(&ctx.t, secs, 2_000_000).0);
            // Agent stopped: the kernel still enforces; no user-space event processing.
            unsafe { libc::kill(pid, libc::SIGSTOP) };
            stopped.push(cps(&ctx.t, secs, 2_000_000).0);
            unsafe { libc::kill(pid, libc::SIGCONT) };
            std::thread::sleep(Duration::from_millis(300));
            let _ = std::fs::write(stats_path, "1");
            let before = prog_stats(ctx);
            let w0 = Instant::now();
            let (c, _) = cps(&ctx.t, secs, 2_000_000);
            let conns = c * w0.elapsed().as_secs_f64();
            let after = prog_stats(ctx);
            let _ = std::fs::write(stats_path, old.trim());
            with_stats.push(c);
            for (k, (cnt1, ns1)) in &after {
                let (cnt0, ns0) = before.get(k).copied().unwrap_or((0, 0));
                let (dc, dn) = ((cnt1 - cnt0) as f64, (ns1 - ns0) as f64);
                if dc > 0.0 {
                    let e = per_conn.entry(k.1.clone()).or_insert((0.0, 0.0));
                    e.0 += dc / conns / reps as f64;
                    e.1 += dn / conns / reps as f64;
                }
            }
        }
        // One TCP stream: the programs' share of a CPU while it runs.
        let (mut tcp1, mut tcp1_stats) = (Vec::new(), Vec::new());
        let mut per_sec: BTreeMap<String, (f64, f64)> = BTreeMap::new();
        for _ in 0..reps {
            tcp1.push(iperf(&ctx.t, 1, isecs));
            let _ = std::fs::write(stats_path, "1");
            let before = prog_stats(ctx);
            let w0 = Instant::now();
            let g = iperf(&ctx.t, 1, isecs);
            let wall = w0.elapsed().as_secs_f64();
            let after = prog_stats(ctx);
            let _ = std::fs::write(stats_path, old.trim());
            tcp1_stats.push(g);
            for (k, (cnt1, ns1)) in &after {
                let (cnt0, ns0) = before.get(k).copied().unwrap_or((0, 0));
                let (dc, dn) = ((cnt1 - cnt0) as f64, (ns1 - ns0) as f64);
                if dc > 0.0 {
                    let e = per_sec.entry(k.1.clone()).or_insert((0.0, 0.0));
                    e.0 += dc / wall / reps as f64;
                    e.1 += dn / wall / reps as f64;
                }
            }
        }
        let mut ts = String::new();
        let mut busy = 0.0;
        for (name, (runs, ns)) in &per_sec {
            busy += ns;
            ts += &format!(
                "    {name:<24} {runs:>9.0} runs/s  {:>7.0} ns/run  {:>5.2}% of one CPU\n",
                ns / runs,
                ns / 1e7
            );
        }
        let mut ps = String::new();
        let mut total = 0.0;
        for (name, (runs, ns)) in &per_conn {
            total += ns;
            ps += &format!(
                "    {name:<24} {runs:>6.1} runs/conn  {:>7.0} ns/run  {ns:>7.0} ns/conn\n",
                ns / runs
            );
        }
        let m = median(&normal);
        out += &format!(
            "  {} rules: no filter {:.0} conn/s; microseg {:.0} conn/s ({:.2}x); agent SIGSTOPped {:.0} conn/s ({:.2}x); with bpf_stats {:.0}\n{ps}    all microseg programs: {total:.0} ns per connection = {:.1}% of one CPU at {m:.0} conn/s\n",
            fmt_rules(n), median(&base), m, m / median(&base), median(&stopped), median(&stopped) / median(&base), median(&with_stats), total * m / 1e9 * 100.0
        );
        let t1 = median(&tcp1);
        out += &format!(
            "  {} rules, TCP 1 stream: no filter {:.2} Gbit/s; microseg {t1:.2} Gbit/s ({:.2}x); with bpf_stats {:.2} (per second of the iperf3 run, setup included)\n{ts}    all microseg programs: {:.2}% of one CPU\n",
            fmt_rules(n), median(&base_tcp1), t1 / median(&base_tcp1), median(&tcp1_stats), busy / 1e7
        );
        ctx.teardown(Who::Microseg);
    }
    println!("{out}");
    Ok(())
}
