//! Servers in SRV, bounded by STOP and RUN_LIMIT: connections (accept and close), request/
//! response (echo), a UDP sink, and iperf3.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use crate::cleanup::{register, Undo, STOP};
use crate::topology::{enter, pin, Topo, P_CPS, P_IPERF, P_RR, P_UDP};

/// No server thread, child or loop outlives this, whatever happens.
const RUN_LIMIT: Duration = Duration::from_secs(45 * 60);

pub(crate) static UDP_RX: AtomicU64 = AtomicU64::new(0);

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

/// A TCP listener on `port` in the namespace at `path`, on a thread of its own pinned to the
/// server CPU: reports the bind on `tx`, then hands every accepted connection to `conn`.
fn spawn_tcp_server(
    path: String,
    tx: Sender<Result<(), String>>,
    port: u16,
    started: Instant,
    conn: impl Fn(TcpStream) + Send + 'static,
) {
    std::thread::spawn(move || {
        enter(&path);
        pin(1);
        let l = match TcpListener::bind(("0.0.0.0", port)) {
            Ok(l) => l,
            Err(e) => return tx.send(Err(e.to_string())).unwrap(),
        };
        set_rcvtimeo(l.as_raw_fd(), 200);
        tx.send(Ok(())).unwrap();
        while !STOP.load(Ordering::Relaxed) && started.elapsed() < RUN_LIMIT {
            if let Ok((s, _)) = l.accept() {
                conn(s);
            }
        }
    });
}

pub(crate) fn start_servers(t: &Topo) -> Result<(), String> {
    let started = Instant::now();
    let path = format!("/run/netns/{}", t.srv);
    let (tx, rx) = std::sync::mpsc::channel::<Result<(), String>>();
    // Connections: accept and close at once (the server closes first).
    spawn_tcp_server(path.clone(), tx.clone(), P_CPS, started, drop);
    // Request/response: echo on each connection.
    spawn_tcp_server(path.clone(), tx.clone(), P_RR, started, |mut s| {
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
    });
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
