//! Real TCP connections through an enforced veth: the kernel's own stacks on both ends,
//! window scaling, delayed ACKs, segments of any size. Every connection opens, moves data
//! both ways, and its session ends with its close (FIN both ways, or a RST from either
//! side) instead of lingering until its idle limit: the receive-window check
//! (docs/SECURITY.md, "TCP: the receive window") takes every segment the stacks send.

#[path = "common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use common::resources;
use microseg_common::{proto, session_state as st};
use microseg_dataplane::Dataplane;
use microseg_policy::compile::{Compiler, LocalEndpoint};
use microseg_testsupport::{ifindex, ip, on_own_netns, PrivateNetns, TempDir};

/// The workload `w` (behind `th0`) accepts TCP 8080 from anyone, and nothing else.
const POLICY: &str = r#"
apiVersion: microseg.io/v1
kind: Workload
metadata: {name: w, labels: {app: w}}
spec: {interface: th0, ips: [10.89.0.2]}
---
apiVersion: microseg.io/v1
kind: Policy
metadata: {name: w-ingress}
spec:
  selector: {matchLabels: {app: w}}
  ingress: [{action: allow, ports: [{protocol: TCP, port: 8080}]}]
"#;

const NODE: (&str, &str) = ("10.89.0.1", "02:00:00:00:89:01");
const WORKLOAD: (&str, &str) = ("10.89.0.2", "02:00:00:00:89:02");
const TIMEOUT: Duration = Duration::from_secs(5);

fn configure(dev: &str, addr: &str, peer: (&str, &str)) {
    ip(&["link", "set", dev, "up"]);
    ip(&["addr", "add", &format!("{addr}/24"), "dev", dev]);
    ip(&[
        "neigh",
        "replace",
        peer.0,
        "lladdr",
        peer.1,
        "dev",
        dev,
        "nud",
        "permanent",
    ]);
}

/// The node's side (the calling thread's namespace) holds `th0` with the data plane on
/// it; its peer `tw0` is in the workload's namespace, where the listener is.
struct Link {
    dp: Dataplane,
    _workload: PrivateNetns,
    listener: TcpListener,
    _links: TempDir,
}

impl Link {
    fn new(test: &str) -> Link {
        let links = TempDir::new_in(Path::new("/sys/fs/bpf"), &format!("tcpveth-{test}"));
        let workload = PrivateNetns::new();
        ip(&[
            "link", "add", "th0", "address", NODE.1, "type", "veth", "peer", "name", "tw0",
            "address", WORKLOAD.1,
        ]);
        ip(&["link", "set", "tw0", "netns", &workload.tid.to_string()]);
        configure("th0", NODE.0, WORKLOAD);
        let listener = workload.run(|| {
            configure("tw0", WORKLOAD.0, NODE);
            TcpListener::bind((WORKLOAD.0, 8080)).expect("bind in the workload's namespace")
        });
        let mut dp = common::load();
        let compiled = Compiler::new().compile(
            &resources(POLICY),
            &[LocalEndpoint {
                workload: "w".into(),
                ifindex: ifindex("th0"),
            }],
        );
        dp.apply(&compiled.tables).expect("apply");
        dp.attach("th0", &links.0).expect("attach to th0");
        Link {
            dp,
            _workload: workload,
            listener,
            _links: links,
        }
    }

    /// A connection from the node to the workload, and the workload's end of it.
    fn connect(&self) -> (TcpStream, TcpStream) {
        let to = format!("{}:8080", WORKLOAD.0).parse().unwrap();
        let client = TcpStream::connect_timeout(&to, TIMEOUT).expect("connect");
        let (server, _) = self.listener.accept().expect("accept");
        for s in [&client, &server] {
            s.set_read_timeout(Some(TIMEOUT)).unwrap();
            s.set_write_timeout(Some(TIMEOUT)).unwrap();
        }
        (client, server)
    }

    /// The state of the session of the connection from `client` (the node's end).
    fn session_state(&self, client: SocketAddr) -> Option<u8> {
        let local = client;
        self.dp
            .session_for(
                proto::TCP,
                local.ip(),
                local.port(),
                WORKLOAD.0.parse().unwrap(),
                8080,
            )
            .map(|(_, s)| s.state)
    }

    /// Waits (bounded) until the connection's session is gone; its last state if not.
    fn ended(&self, client: &TcpStream) -> Result<(), Option<u8>> {
        let client = client.local_addr().unwrap();
        let deadline = Instant::now() + TIMEOUT;
        loop {
            match self.session_state(client) {
                None => return Ok(()),
                Some(s) if Instant::now() > deadline => return Err(Some(s)),
                Some(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

/// `bytes` from `from` to `to` and back, in 64 KiB writes, read on another thread.
fn exchange(a: &TcpStream, b: &TcpStream, bytes: usize) {
    for (mut from, to) in [(a, b), (b, a)] {
        let mut reader = to.try_clone().unwrap();
        let got = std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            let mut total = 0;
            while total < bytes {
                match reader.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => total += n,
                }
            }
            total
        });
        let chunk = vec![0x5au8; 1 << 16];
        let mut sent = 0;
        while sent < bytes {
            let n = chunk.len().min(bytes - sent);
            from.write_all(&chunk[..n]).expect("write");
            sent += n;
        }
        assert_eq!(got.join().unwrap(), bytes, "all bytes arrived");
    }
}

/// Closes with a RST (SO_LINGER 0), as an aborting application does.
fn abort(s: TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a linger struct of the size passed.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "SO_LINGER");
    drop(s);
}

/// Reads until the peer's FIN.
fn read_to_end(s: &mut TcpStream) {
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).expect("read to the peer's FIN");
}

#[test]
fn real_connections_open_move_data_and_end_with_their_close() {
    on_own_netns(|| {
        let link = Link::new("close");
        let misses = || link.dp.stats().expect("stats").session_misses;

        // The node's side closes first; 8 MiB each way first, so the windows scale up.
        let (mut client, mut server) = link.connect();
        assert_eq!(
            link.session_state(client.local_addr().unwrap()),
            Some(st::ESTABLISHED)
        );
        let opened = misses();
        exchange(&client, &server, 8 << 20);
        assert_eq!(misses(), opened, "no packet judged as new mid-connection");
        client.shutdown(Shutdown::Write).unwrap();
        read_to_end(&mut server);
        drop(server);
        read_to_end(&mut client);
        assert_eq!(
            link.ended(&client),
            Ok(()),
            "FIN from the node's side first"
        );
        drop(client);

        // The workload closes first.
        let (mut client, mut server) = link.connect();
        exchange(&client, &server, 1 << 20);
        server.shutdown(Shutdown::Write).unwrap();
        read_to_end(&mut client);
        client.shutdown(Shutdown::Write).unwrap();
        read_to_end(&mut server);
        assert_eq!(link.ended(&client), Ok(()), "FIN from the workload first");
        drop((client, server));

        // The workload aborts: its RST ends the session.
        let (client, server) = link.connect();
        exchange(&client, &server, 1 << 20);
        abort(server);
        assert_eq!(link.ended(&client), Ok(()), "RST from the workload");
        drop(client);

        // The node's side aborts: its RST closes the session, kept until its idle limit
        // (a RST from outside may be forged by someone who guessed the window).
        let (client, server) = link.connect();
        exchange(&client, &server, 1 << 20);
        let probe = client.local_addr().unwrap();
        abort(client);
        let deadline = Instant::now() + TIMEOUT;
        while link.session_state(probe) != Some(st::CLOSED) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            link.session_state(probe),
            Some(st::CLOSED),
            "RST from the node"
        );
        drop(server);
    });
}
