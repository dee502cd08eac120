//! A test topology: a "node" network namespace holding a bridge and the host ends of the
//! workloads' veths, one namespace per workload, and the agent running in the node
//! namespace. Every name carries the test's own prefix, and everything is removed on drop,
//! also when the test fails.
#![allow(dead_code)]

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

// Each test binary takes what it needs.
#[allow(unused_imports)]
pub use microseg_testsupport::{
    eventually, in_netns, ns_command, sh, succeeded, unique_name, NetNs,
};

pub const BIN: &str = env!("CARGO_BIN_EXE_microseg");

pub struct Workload {
    pub name: String,
    pub ns: String,
    pub v4: String,
    pub v6: String,
    netns: NetNs,
}

pub struct Topology {
    pub prefix: String,
    pub node: String,
    pub dir: PathBuf,
    pub bpffs: PathBuf,
    pub socket: PathBuf,
    agent: Option<Child>,
    servers: Vec<Server>,
    // Dropped after `Drop::drop` stopped the agent and cleaned up in the node.
    pub workloads: Vec<Workload>,
    node_ns: NetNs,
}

impl Topology {
    /// Workloads `names[i]` get 10.77.0.(10+i) and fd77::(10+i), interface `veth-<name>`.
    pub fn new(test: &str, names: &[&str]) -> Topology {
        let prefix = unique_name("mse2e");
        let dir = std::env::temp_dir().join(format!("{prefix}-{test}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("policy")).unwrap();
        let node_ns = NetNs::named(&format!("{prefix}-node"));
        let mut t = Topology {
            bpffs: PathBuf::from(format!("/sys/fs/bpf/{prefix}")),
            socket: dir.join("agent.sock"),
            prefix: prefix.clone(),
            node: node_ns.name().to_string(),
            workloads: Vec::new(),
            node_ns,
            dir,
            agent: None,
            servers: Vec::new(),
        };
        t.node_ns.ip(&["link", "add", "br0", "type", "bridge"]);
        t.node_ns.ip(&["link", "set", "br0", "up"]);
        for (i, name) in names.iter().enumerate() {
            let netns = NetNs::named(&format!("{prefix}-{name}"));
            let w = Workload {
                name: name.to_string(),
                ns: netns.name().to_string(),
                v4: format!("10.77.0.{}", 10 + i),
                v6: format!("fd77::{}", 10 + i),
                netns,
            };
            // Owned before it is linked, so a failure half way still cleans up.
            t.workloads.push(w);
            t.link_workload(name);
        }
        t
    }

    /// Deletes workload `name`'s veth pair and makes it again, as a restarted pod gets a
    /// new interface of the same name (and a new ifindex).
    pub fn recreate_interface(&self, name: &str) {
        self.node_ns.ip(&["link", "del", &format!("veth-{name}")]);
        self.link_workload(name);
    }

    /// A veth pair from the node's bridge (`veth-<name>`) into workload `name`'s namespace
    /// (`eth0`), addressed and up.
    fn link_workload(&self, name: &str) {
        let w = self.w(name);
        let host_end = format!("veth-{name}");
        self.node_ns.veth_to(&host_end, &w.netns, "eth0");
        self.node_ns
            .ip(&["link", "set", &host_end, "master", "br0", "up"]);
        w.netns
            .ip(&["addr", "add", &format!("{}/24", w.v4), "dev", "eth0"]);
        let v6 = format!("{}/64", w.v6);
        w.netns
            .ip(&["-6", "addr", "add", &v6, "dev", "eth0", "nodad"]);
        w.netns.ip(&["link", "set", "eth0", "up"]);
    }

    pub fn w(&self, name: &str) -> &Workload {
        self.workloads
            .iter()
            .find(|w| w.name == name)
            .expect("workload")
    }

    /// Workload resources for every workload, labelled `app: <name>`.
    pub fn workloads_yaml(&self) -> String {
        self.workloads
            .iter()
            .map(|w| {
                format!(
                    "apiVersion: microseg.io/v1\nkind: Workload\nmetadata: {{name: {n}, labels: {{app: {n}}}}}\nspec: {{interface: veth-{n}, ips: [{v4}, \"{v6}\"]}}\n---\n",
                    n = w.name,
                    v4 = w.v4,
                    v6 = w.v6
                )
            })
            .collect()
    }

    pub fn write_policy(&self, file: &str, text: &str) {
        // Write then rename: the agent never reads half a file.
        let tmp = self.dir.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.dir.join("policy").join(file)).unwrap();
    }

    pub fn agent_cmd(&self, args: &[&str]) -> Command {
        let mut c = self.node_ns.command(BIN);
        c.arg("agent");
        c.arg("--bpffs")
            .arg(&self.bpffs)
            .arg("--socket")
            .arg(&self.socket);
        c.arg("--state-dir").arg(&self.dir).args(args);
        c
    }

    /// Starts the agent on the policy directory and waits until it answers.
    pub fn start_agent(&mut self) {
        self.start_agent_with_env(&[]);
    }

    pub fn start_agent_with_env(&mut self, env: &[(&str, &str)]) {
        let log = File::create(self.dir.join("agent.log")).unwrap();
        let child = self
            .agent_cmd(&[
                "--policy",
                self.dir.join("policy").to_str().unwrap(),
                "--node",
                "test-node",
            ])
            .envs(env.iter().copied())
            .stderr(log)
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn agent");
        self.agent = Some(child);
        if let Err(e) = eventually(Duration::from_secs(20), || succeeded(self.cli(&["stats"]))) {
            panic!("agent did not come up: {e}\n{}", self.agent_log());
        }
    }

    pub fn agent_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    /// Waits up to 5 s for the agent to log `needle`; fails the test with the log if not.
    pub fn await_log(&self, needle: &str) {
        if let Err(e) = eventually(Duration::from_secs(5), || self.agent_log().contains(needle)) {
            panic!(
                "no {needle:?} in the agent's log ({e}): {}",
                self.agent_log()
            );
        }
    }

    /// Stops the agent with `signal` and waits for it.
    pub fn stop_agent(&mut self, signal: libc::c_int) -> std::process::ExitStatus {
        let mut child = self.agent.take().expect("agent running");
        // nsenter execs the agent, so the pid is the agent's.
        unsafe { libc::kill(child.id() as i32, signal) };
        child.wait().unwrap()
    }

    /// Runs a `microseg` client command against this topology's agent.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .arg("--socket")
            .arg(&self.socket)
            .output()
            .unwrap()
    }

    /// The agent's own status (revision, keys the last apply wrote, the standby slot).
    pub fn local_status(&self) -> serde_json::Value {
        local_api(&self.socket, r#"{"cmd":"status"}"#)
    }

    pub fn stats(&self) -> serde_json::Value {
        let out = self.cli(&["stats", "-o", "json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn flows(&self) -> Vec<serde_json::Value> {
        let out = self.cli(&["flows", "-o", "json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// A TCP server in workload `w` answering each connection with what it reads, echoed.
    pub fn tcp_echo(&mut self, w: &str, port: u16) {
        let server = tcp_echo_in(self.w(w).ns.clone(), port);
        self.servers.push(server);
    }

    /// A UDP server in workload `w` echoing datagrams.
    pub fn udp_echo(&mut self, w: &str, port: u16) {
        let server = udp_echo_in(self.w(w).ns.clone(), port);
        self.servers.push(server);
    }

    /// Connects from workload `from` and exchanges one message; true when it came back.
    pub fn tcp_ok(&self, from: &str, to: SocketAddr) -> bool {
        tcp_ok_from(&self.w(from).ns, to)
    }

    /// Sends `bytes` from workload `from` to the TCP echo server at `to` and reads them all
    /// back; false on any error or a 10 s stall.
    pub fn tcp_bulk_ok(&self, from: &str, to: SocketAddr, bytes: usize) -> bool {
        in_netns(&self.w(from).ns.clone(), move || {
            let Ok(mut s) = TcpStream::connect_timeout(&to, Duration::from_secs(2)) else {
                return false;
            };
            s.set_read_timeout(Some(Duration::from_secs(10))).ok();
            s.set_write_timeout(Some(Duration::from_secs(10))).ok();
            let mut w = s.try_clone().expect("clone");
            let writer = std::thread::spawn(move || w.write_all(&vec![0x5a; bytes]).is_ok());
            let (mut got, mut buf) = (0, vec![0u8; 65536]);
            while got < bytes {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got += n,
                }
            }
            writer.join().unwrap_or(false) && got == bytes
        })
    }

    /// Lets workload `w`'s stack build IPv4 GSO packets of up to `size` bytes (BIG TCP):
    /// over 64 KiB they carry an IPv4 total length of 0.
    pub fn big_tcp(&self, w: &str, size: u32) {
        set_gso_max_sizes(&self.w(w).ns, "eth0", size);
    }

    pub fn udp_ok(&self, from: &str, to: SocketAddr) -> bool {
        in_netns(&self.w(from).ns.clone(), move || {
            let bind: SocketAddr = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }
                .parse()
                .unwrap();
            let s = UdpSocket::bind(bind).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(700)))
                .unwrap();
            let mut buf = [0u8; 16];
            (0..2).any(|_| {
                s.send_to(b"ping", to).is_ok() && matches!(s.recv_from(&mut buf), Ok((4, _)))
            })
        })
    }

    pub fn ping_ok(&self, from: &str, to: &str) -> bool {
        self.w(from)
            .netns
            .command("ping")
            .args(["-c", "1", "-W", "1", to])
            .output()
            .is_ok_and(|o| o.status.success())
    }
}

/// Sets `IFLA_GSO_MAX_SIZE` and `IFLA_GSO_IPV4_MAX_SIZE` of `dev` in namespace `ns` over
/// rtnetlink: Debian 12's `ip` predates the IPv4 one.
fn set_gso_max_sizes(ns: &str, dev: &str, size: u32) {
    const IFLA_GSO_MAX_SIZE: u16 = 41;
    const IFLA_GSO_IPV4_MAX_SIZE: u16 = 63;
    let dev = std::ffi::CString::new(dev).unwrap();
    let err = in_netns(ns, move || {
        // SAFETY: plain socket calls on buffers that outlive them.
        unsafe {
            let ifindex = libc::if_nametoindex(dev.as_ptr());
            assert_ne!(ifindex, 0, "no such interface");
            let attrs = [(IFLA_GSO_MAX_SIZE, size), (IFLA_GSO_IPV4_MAX_SIZE, size)];
            let mut msg = Vec::new();
            // nlmsghdr: length, type, flags, sequence, port.
            msg.extend((32 + 8 * attrs.len() as u32).to_ne_bytes());
            msg.extend(libc::RTM_NEWLINK.to_ne_bytes());
            msg.extend(((libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16).to_ne_bytes());
            msg.extend([1u32, 0].iter().flat_map(|v| v.to_ne_bytes()));
            // ifinfomsg: family, padding, type, index, flags, change.
            msg.extend([0u8; 4]);
            msg.extend((ifindex as i32).to_ne_bytes());
            msg.extend([0u8; 8]);
            for (kind, value) in attrs {
                msg.extend(8u16.to_ne_bytes());
                msg.extend(kind.to_ne_bytes());
                msg.extend(value.to_ne_bytes());
            }
            let fd = libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            );
            assert!(fd >= 0, "netlink socket");
            let sent = libc::send(fd, msg.as_ptr().cast(), msg.len(), 0);
            let mut ack = [0u8; 1024];
            let got = libc::recv(fd, ack.as_mut_ptr().cast(), ack.len(), 0);
            libc::close(fd);
            assert!(sent == msg.len() as isize && got >= 20, "netlink exchange");
            // The acknowledgement: nlmsghdr, then the error code (0 for success).
            i32::from_ne_bytes(ack[16..20].try_into().unwrap())
        }
    });
    assert_eq!(err, 0, "{}", std::io::Error::from_raw_os_error(-err));
}

pub fn addr(ip: &str, port: u16) -> SocketAddr {
    if ip.contains(':') {
        format!("[{ip}]:{port}").parse().unwrap()
    } else {
        format!("{ip}:{port}").parse().unwrap()
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.servers.clear();
        if let Some(mut a) = self.agent.take() {
            let _ = a.kill();
            let _ = a.wait();
        }
        let _ = self.agent_cmd(&["--cleanup"]).output();
        let _ = std::fs::remove_dir_all(&self.bpffs);
        // The namespaces go with the fields.
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A server thread in a namespace; stopped and joined on drop.
pub struct Server {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Runs `serve(stop)` on a thread inside `ns` once `ready` says it listens.
fn server_in<F>(ns: String, serve: F) -> Server
where
    F: FnOnce(Arc<AtomicBool>, std::sync::mpsc::Sender<()>) + Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || in_netns(&ns, move || serve(flag, ready_tx)));
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("server ready");
    Server {
        stop,
        handle: Some(handle),
    }
}

/// A TCP echo server on `port` in namespace `ns`, bounded to two minutes.
pub fn tcp_echo_in(ns: String, port: u16) -> Server {
    server_in(ns, move |stop, ready| {
        let l = TcpListener::bind(("::", port)).expect("bind");
        l.set_nonblocking(true).unwrap();
        ready.send(()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
            match l.accept() {
                Ok((mut s, _)) => {
                    std::thread::spawn(move || {
                        s.set_nonblocking(false).ok();
                        s.set_read_timeout(Some(Duration::from_secs(30))).ok();
                        let mut buf = [0u8; 1024];
                        while let Ok(n) = s.read(&mut buf) {
                            if n == 0 || s.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    })
}

/// A UDP echo server on `port` in namespace `ns`, bounded to two minutes.
pub fn udp_echo_in(ns: String, port: u16) -> Server {
    server_in(ns, move |stop, ready| {
        let s = UdpSocket::bind(("::", port)).expect("bind");
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        ready.send(()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut buf = [0u8; 1500];
        while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
            if let Ok((n, from)) = s.recv_from(&mut buf) {
                let _ = s.send_to(&buf[..n], from);
            }
        }
    })
}

/// Connects from namespace `ns` and exchanges one message; true when it came back.
pub fn tcp_ok_from(ns: &str, to: SocketAddr) -> bool {
    in_netns(ns, move || {
        let Ok(mut s) = TcpStream::connect_timeout(&to, Duration::from_millis(1500)) else {
            return false;
        };
        s.set_read_timeout(Some(Duration::from_millis(1500))).ok();
        let mut buf = [0u8; 5];
        s.write_all(b"hello").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"hello"
    })
}

/// One request to an agent's local API and its one-line answer.
#[allow(dead_code)] // not every test binary asks the socket directly
pub fn local_api(socket: &std::path::Path, request: &str) -> serde_json::Value {
    use std::io::{BufRead, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(format!("{request}\n").as_bytes()).unwrap();
    let mut line = String::new();
    std::io::BufReader::new(s).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap_or_default()
}
