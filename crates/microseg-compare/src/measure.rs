//! Measurements from CLI against the servers in SRV, each bounded in count and time:
//! throughput (iperf3), new connections per second, UDP packets per second, round trips.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::servers::UDP_RX;
use crate::topology::{in_netns, Topo, P_CPS, P_IPERF, P_RR, P_UDP, SRV_IP};

fn srv(port: u16) -> SocketAddr {
    format!("{SRV_IP}:{port}").parse().unwrap()
}

/// iperf3 throughput in Gbit/s (receiver side), or NaN on failure.
pub(crate) fn iperf(t: &Topo, streams: u32, secs: u32) -> f64 {
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
pub(crate) fn cps(t: &Topo, secs: f64, max: u64) -> (f64, u64) {
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
pub(crate) fn udp_pps(t: &Topo, secs: f64, max: u64) -> f64 {
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
pub(crate) fn rr(t: &Topo, secs: f64, max: usize) -> (f64, f64) {
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
