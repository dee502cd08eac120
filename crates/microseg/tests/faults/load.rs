//! A bounded load between two workload namespaces with exact accounting at both ends:
//! short TCP connections (one numbered message each), long-lived TCP connections
//! exchanging numbered messages, numbered UDP datagrams to an allowed, a denied and
//! optionally a flipping port, and TCP connects to a denied port. The servers count what
//! arrived; the clients count what they sent and what came back.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use microseg_testsupport::in_netns;

/// No load runs longer than this, whatever the test does.
const HARD_LIMIT: Duration = Duration::from_secs(120);
/// A long-lived connection whose echo takes longer has stalled.
const STALL: Duration = Duration::from_secs(2);

pub struct Plan {
    pub client_ns: String,
    pub server_ns: String,
    pub server_ip: IpAddr,
    /// Allowed: the short and the long-lived connections.
    pub tcp_port: u16,
    pub tcp_denied: u16,
    pub udp_allowed: u16,
    pub udp_denied: u16,
    /// Allowed by one of two alternating policies only.
    pub udp_flipping: Option<u16>,
    pub short_threads: usize,
    /// Short connections per second, per thread.
    pub short_rate: u32,
    pub long_conns: usize,
    /// Datagrams per second to each UDP port.
    pub udp_rate: u32,
}

#[derive(Default)]
struct Counts {
    short_attempts: AtomicU64,
    short_ok: AtomicU64,
    short_server_seen: AtomicU64,
    long_sent: AtomicU64,
    long_echoed: AtomicU64,
    long_server_seen: AtomicU64,
    long_max_rtt_us: AtomicU64,
    udp_allowed_sent: AtomicU64,
    udp_allowed_got: AtomicU64,
    udp_denied_sent: AtomicU64,
    udp_denied_got: AtomicU64,
    udp_flip_sent: AtomicU64,
    udp_flip_got: AtomicU64,
    tcp_denied_attempts: AtomicU64,
    tcp_denied_connected: AtomicU64,
    tcp_denied_accepted: AtomicU64,
}

/// What was sent and what arrived.
#[derive(Debug)]
pub struct Report {
    pub short_attempts: u64,
    pub short_ok: u64,
    pub short_server_seen: u64,
    pub long_sent: u64,
    pub long_echoed: u64,
    pub long_server_seen: u64,
    pub long_max_rtt: Duration,
    pub udp_allowed_sent: u64,
    pub udp_allowed_got: u64,
    pub udp_denied_sent: u64,
    pub udp_denied_got: u64,
    pub udp_flip_sent: u64,
    pub udp_flip_got: u64,
    pub tcp_denied_attempts: u64,
    pub tcp_denied_connected: u64,
    pub tcp_denied_accepted: u64,
    /// Runs of consecutive numbers among the flipping port's arrivals: each is a time
    /// that port was allowed.
    pub udp_flip_runs: u64,
    /// TCP segments sent again during the load in the client's and the server's
    /// namespaces (/proc/net/snmp): a TCP packet dropped on the way shows here.
    pub retransmits: u64,
    pub errors: Vec<String>,
}

impl Report {
    /// Every allowed message and datagram arrived, every allowed connect succeeded, and
    /// nothing sent to a denied port arrived.
    pub fn assert_exact(&self) {
        let ok = self.errors.is_empty()
            && self.short_attempts > 0
            && self.short_ok == self.short_attempts
            && self.short_server_seen == self.short_attempts
            && self.long_sent > 0
            && self.long_echoed == self.long_sent
            && self.long_server_seen == self.long_sent
            && self.udp_allowed_sent > 0
            && self.udp_allowed_got == self.udp_allowed_sent
            && self.udp_denied_sent > 0
            && self.udp_denied_got == 0
            && self.tcp_denied_attempts > 0
            && self.tcp_denied_connected == 0
            && self.tcp_denied_accepted == 0
            && self.retransmits == 0;
        assert!(
            ok,
            "allowed traffic lost or denied traffic passed: {self:#?}"
        );
    }
}

pub struct Load {
    stop: Arc<AtomicBool>,
    counts: Arc<Counts>,
    errors: Arc<Mutex<Vec<String>>>,
    clients: Vec<JoinHandle<()>>,
    servers: Vec<JoinHandle<()>>,
    server_stop: Arc<AtomicBool>,
    namespaces: [String; 2],
    retransmits_before: u64,
    flip_seen: Arc<Mutex<Vec<u64>>>,
}

/// Spawns `f` on a thread inside namespace `ns` (sockets it makes belong there).
fn spawn_in(ns: &str, f: impl FnOnce() + Send + 'static) -> JoinHandle<()> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let fd = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        // SAFETY: changes this new thread's namespace only; the fd is valid for the call.
        let rc = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
}

fn note(errors: &Mutex<Vec<String>>, e: String) {
    let mut all = errors.lock().unwrap();
    if all.len() < 20 {
        all.push(e);
    }
}

/// Per-namespace: many short connections from one client use many ports quickly.
pub fn widen_ports(ns: &str) {
    let out = microseg_testsupport::ns_command(ns, "sysctl")
        .args([
            "-w",
            "net.ipv4.ip_local_port_range=1024 65000",
            "net.ipv4.tcp_tw_reuse=1",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

fn retransmits(ns: &str) -> u64 {
    let out = microseg_testsupport::ns_command(ns, "cat")
        .arg("/proc/net/snmp")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut tcp = text.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (tcp.next().unwrap_or(""), tcp.next().unwrap_or(""));
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "RetransSegs")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// A UDP socket made in `ns` with a large receive buffer, so a busy machine's late reader
/// loses nothing to the socket's queue.
fn udp_in(ns: &str, bind: SocketAddr) -> UdpSocket {
    in_netns(ns, move || {
        let s = UdpSocket::bind(bind).expect("bind udp");
        let size: libc::c_int = 8 << 20;
        // SAFETY: a valid socket and an int option.
        unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as u32,
            )
        };
        s
    })
}

impl Load {
    pub fn start(plan: &Plan) -> Load {
        let mut load = Load {
            stop: Arc::new(AtomicBool::new(false)),
            counts: Arc::new(Counts::default()),
            errors: Arc::new(Mutex::new(Vec::new())),
            clients: Vec::new(),
            servers: Vec::new(),
            server_stop: Arc::new(AtomicBool::new(false)),
            namespaces: [plan.client_ns.clone(), plan.server_ns.clone()],
            retransmits_before: retransmits(&plan.client_ns) + retransmits(&plan.server_ns),
            flip_seen: Arc::new(Mutex::new(Vec::new())),
        };
        load.start_servers(plan);
        load.start_clients(plan);
        load
    }

    fn start_servers(&mut self, plan: &Plan) {
        let any: IpAddr = "0.0.0.0".parse().unwrap();
        let listener = |port| {
            in_netns(&plan.server_ns, move || {
                let l = TcpListener::bind((any, port)).expect("bind tcp");
                l.set_nonblocking(true).unwrap();
                l
            })
        };
        let (echo, denied) = (listener(plan.tcp_port), listener(plan.tcp_denied));
        let (stop, counts, errors) = (
            self.server_stop.clone(),
            self.counts.clone(),
            self.errors.clone(),
        );
        self.servers.push(std::thread::spawn(move || {
            let deadline = Instant::now() + HARD_LIMIT;
            let mut conns = Vec::new();
            while !stop.load(SeqCst) && Instant::now() < deadline {
                if denied.accept().is_ok() {
                    counts.tcp_denied_accepted.fetch_add(1, SeqCst);
                }
                match echo.accept() {
                    Ok((s, _)) => {
                        // Dropping a finished handle lets its thread go.
                        conns.retain(|c: &JoinHandle<()>| !c.is_finished());
                        let (counts, errors) = (counts.clone(), errors.clone());
                        conns.push(std::thread::spawn(move || serve(s, &counts, &errors)));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
            for c in conns {
                let _ = c.join();
            }
        }));
        let udp = [
            (Some(plan.udp_allowed), 0),
            (Some(plan.udp_denied), 1),
            (plan.udp_flipping, 2),
        ];
        for (port, which) in udp {
            let Some(port) = port else { continue };
            let s = udp_in(&plan.server_ns, SocketAddr::new(any, port));
            s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            let (stop, counts) = (self.server_stop.clone(), self.counts.clone());
            let flip_seen = self.flip_seen.clone();
            self.servers.push(std::thread::spawn(move || {
                let deadline = Instant::now() + HARD_LIMIT;
                let mut buf = [0u8; 64];
                while !stop.load(SeqCst) && Instant::now() < deadline {
                    if let Ok(8) = s.recv(&mut buf) {
                        if which == 2 {
                            let seq = u64::from_be_bytes(buf[..8].try_into().unwrap());
                            flip_seen.lock().unwrap().push(seq);
                        }
                        let got = [
                            &counts.udp_allowed_got,
                            &counts.udp_denied_got,
                            &counts.udp_flip_got,
                        ][which];
                        got.fetch_add(1, SeqCst);
                    }
                }
            }));
        }
    }

    fn start_clients(&mut self, plan: &Plan) {
        let to = |port| SocketAddr::new(plan.server_ip, port);
        for _ in 0..plan.short_threads {
            let (stop, counts, errors) =
                (self.stop.clone(), self.counts.clone(), self.errors.clone());
            let (target, every) = (to(plan.tcp_port), Duration::from_secs(1) / plan.short_rate);
            self.clients.push(spawn_in(&plan.client_ns, move || {
                paced(&stop, every, |seq| {
                    counts.short_attempts.fetch_add(1, SeqCst);
                    match short_exchange(target, seq) {
                        Ok(()) => {
                            counts.short_ok.fetch_add(1, SeqCst);
                        }
                        Err(e) => note(&errors, format!("short connection {seq}: {e}")),
                    }
                })
            }));
        }
        for conn in 0..plan.long_conns {
            let (stop, counts, errors) =
                (self.stop.clone(), self.counts.clone(), self.errors.clone());
            let target = to(plan.tcp_port);
            self.clients.push(spawn_in(&plan.client_ns, move || {
                if let Err(e) = long_lived(target, &stop, &counts) {
                    note(&errors, format!("long-lived connection {conn}: {e}"));
                }
            }));
        }
        let mut udp = vec![(plan.udp_allowed, 0), (plan.udp_denied, 1)];
        if let Some(p) = plan.udp_flipping {
            udp.push((p, 2));
        }
        for (port, which) in udp {
            let s = udp_in(&plan.client_ns, "0.0.0.0:0".parse().unwrap());
            let (stop, counts, errors) =
                (self.stop.clone(), self.counts.clone(), self.errors.clone());
            let (target, every) = (to(port), Duration::from_secs(1) / plan.udp_rate);
            self.clients.push(std::thread::spawn(move || {
                paced(&stop, every, |seq| {
                    let sent = [
                        &counts.udp_allowed_sent,
                        &counts.udp_denied_sent,
                        &counts.udp_flip_sent,
                    ][which];
                    match s.send_to(&seq.to_be_bytes(), target) {
                        Ok(_) => {
                            sent.fetch_add(1, SeqCst);
                        }
                        Err(e) => note(&errors, format!("udp to {target}: {e}")),
                    }
                })
            }));
        }
        let (stop, counts) = (self.stop.clone(), self.counts.clone());
        let target = to(plan.tcp_denied);
        self.clients.push(spawn_in(&plan.client_ns, move || {
            paced(&stop, Duration::from_millis(50), |_| {
                counts.tcp_denied_attempts.fetch_add(1, SeqCst);
                if TcpStream::connect_timeout(&target, Duration::from_millis(200)).is_ok() {
                    counts.tcp_denied_connected.fetch_add(1, SeqCst);
                }
            })
        }));
    }

    /// Stops the clients, lets what is in flight arrive, stops the servers and counts.
    pub fn finish(mut self) -> Report {
        self.stop.store(true, SeqCst);
        for c in self.clients.drain(..) {
            let _ = c.join();
        }
        std::thread::sleep(Duration::from_millis(500));
        self.server_stop.store(true, SeqCst);
        for s in self.servers.drain(..) {
            let _ = s.join();
        }
        let seen = self.flip_seen.lock().unwrap().clone();
        let breaks = seen.windows(2).filter(|w| w[1] != w[0] + 1).count() as u64;
        let after: u64 = self.namespaces.iter().map(|ns| retransmits(ns)).sum();
        let c = &self.counts;
        let get = |a: &AtomicU64| a.load(SeqCst);
        Report {
            short_attempts: get(&c.short_attempts),
            short_ok: get(&c.short_ok),
            short_server_seen: get(&c.short_server_seen),
            long_sent: get(&c.long_sent),
            long_echoed: get(&c.long_echoed),
            long_server_seen: get(&c.long_server_seen),
            long_max_rtt: Duration::from_micros(get(&c.long_max_rtt_us)),
            udp_allowed_sent: get(&c.udp_allowed_sent),
            udp_allowed_got: get(&c.udp_allowed_got),
            udp_denied_sent: get(&c.udp_denied_sent),
            udp_denied_got: get(&c.udp_denied_got),
            udp_flip_sent: get(&c.udp_flip_sent),
            udp_flip_got: get(&c.udp_flip_got),
            tcp_denied_attempts: get(&c.tcp_denied_attempts),
            tcp_denied_connected: get(&c.tcp_denied_connected),
            tcp_denied_accepted: get(&c.tcp_denied_accepted),
            udp_flip_runs: if seen.is_empty() { 0 } else { breaks + 1 },
            retransmits: after - self.retransmits_before,
            errors: self.errors.lock().unwrap().clone(),
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
        self.server_stop.store(true, SeqCst);
    }
}

/// Calls `f(seq)` every `every` (catching up after a slow call) until `stop` or the hard
/// limit.
fn paced(stop: &AtomicBool, every: Duration, mut f: impl FnMut(u64)) {
    let started = Instant::now();
    let mut seq = 0u64;
    while !stop.load(SeqCst) && started.elapsed() < HARD_LIMIT {
        f(seq);
        seq += 1;
        if let Some(wait) = (started + every * seq as u32).checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
}

/// The server's side of a connection: reads numbered messages, each the next number
/// (a short connection sends one), counts and echoes them.
fn serve(mut s: TcpStream, counts: &Counts, errors: &Mutex<Vec<String>>) {
    s.set_nonblocking(false).ok();
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut buf = [0u8; 9];
    let mut expected = None;
    while s.read_exact(&mut buf).is_ok() {
        let (long, seq) = (
            buf[0] == b'L',
            u64::from_be_bytes(buf[1..].try_into().unwrap()),
        );
        if long && expected.is_some_and(|e| e != seq) {
            note(
                errors,
                format!("server: message {seq}, expected {expected:?}"),
            );
        }
        expected = Some(seq + 1);
        let seen = if long {
            &counts.long_server_seen
        } else {
            &counts.short_server_seen
        };
        seen.fetch_add(1, SeqCst);
        if s.write_all(&buf).is_err() {
            break;
        }
    }
}

fn message(kind: u8, seq: u64) -> [u8; 9] {
    let mut m = [kind; 9];
    m[1..].copy_from_slice(&seq.to_be_bytes());
    m
}

fn short_exchange(to: SocketAddr, seq: u64) -> std::io::Result<()> {
    let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(3))?;
    s.set_read_timeout(Some(STALL))?;
    let m = message(b'S', seq);
    s.write_all(&m)?;
    let mut back = [0u8; 9];
    s.read_exact(&mut back)?;
    if back != m {
        return Err(std::io::Error::other(format!("echo {back:?} for {m:?}")));
    }
    Ok(())
}

/// One connection for the whole load: a numbered message every 5 ms, each echoed within
/// [`STALL`].
fn long_lived(to: SocketAddr, stop: &AtomicBool, counts: &Counts) -> std::io::Result<()> {
    let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(3))?;
    s.set_read_timeout(Some(STALL))?;
    s.set_nodelay(true)?;
    let mut result = Ok(());
    paced(stop, Duration::from_millis(5), |seq| {
        if result.is_err() {
            return;
        }
        let m = message(b'L', seq);
        let sent_at = Instant::now();
        let mut back = [0u8; 9];
        result = s.write_all(&m).and_then(|()| {
            counts.long_sent.fetch_add(1, SeqCst);
            s.read_exact(&mut back)
        });
        if result.is_ok() && back != m {
            result = Err(std::io::Error::other(format!("echo {back:?} for {m:?}")));
        }
        if result.is_ok() {
            counts.long_echoed.fetch_add(1, SeqCst);
            let rtt = sent_at.elapsed().as_micros() as u64;
            counts.long_max_rtt_us.fetch_max(rtt, SeqCst);
        }
    });
    result
}
