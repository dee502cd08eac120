//! The enforcement probe: when a rule change shows on traffic, to the millisecond.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::cleanup::STOP;
use crate::topology::{enter, Topo, P_CPS, SRV_IP};

/// Probes new TCP connections to the server, one started every millisecond, from the
/// moment `t0` arrives. `want_ok`: returns when a connection succeeded (time of its
/// completion after t0). Otherwise: returns the start time (after t0) of the first probe
/// that got no answer within 200 ms. Bounded by `limit`.
pub(crate) fn spawn_probe(
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
                s_addr: u32::from_ne_bytes(
                    SRV_IP
                        .parse::<std::net::Ipv4Addr>()
                        .expect("SRV_IP is an IPv4 address")
                        .octets(),
                ),
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
