//! The fragment and layer-2 cases on a real veth, where the workload's own IP stack
//! reassembles and delivers: crafted frames are sent with a packet socket on the node's
//! end (they cross the data plane's hook as any frame the node forwards would), and UDP
//! sockets in the workload's namespace show what was delivered. BPF_PROG_TEST_RUN shows
//! the verdicts; this shows that no datagram reaches a denied port through them, and that
//! what the policy allows still arrives.

use std::net::{Ipv4Addr, UdpSocket};
use std::path::Path;
use std::time::Duration;

use microseg_dataplane::{packet::Frame, Dataplane};
use microseg_policy::compile::{Compiler, LocalEndpoint};
use microseg_testsupport::{ifindex, ip, on_own_netns, PrivateNetns, TempDir};

use crate::common::resources;

/// The workload `w` (behind `vb0`) accepts UDP 53 from anyone, and nothing else.
const POLICY: &str = r#"
apiVersion: microseg.io/v1
kind: Workload
metadata: {name: w, labels: {app: w}}
spec: {interface: vb0, ips: [10.89.0.2]}
---
apiVersion: microseg.io/v1
kind: Policy
metadata: {name: w-ingress}
spec:
  selector: {matchLabels: {app: w}}
  ingress: [{action: allow, ports: [{protocol: UDP, port: 53}]}]
"#;

const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 89, 0, 1);
const W_IP: Ipv4Addr = Ipv4Addr::new(10, 89, 0, 2);
const W_MAC: [u8; 6] = [2, 0, 0, 0, 0x89, 2];
const ALLOWED: u16 = 53;
const DENIED: u16 = 54;
/// How long to wait for a datagram that should (or must not) arrive.
const WAIT: Duration = Duration::from_millis(300);

struct Link {
    dp: Dataplane,
    workload: PrivateNetns,
    sockets: [UdpSocket; 2],
    packet_socket: i32,
    _links: TempDir,
}

impl Link {
    fn new(test: &str) -> Link {
        let links = TempDir::new_in(Path::new("/sys/fs/bpf"), &format!("bypass-{test}"));
        let workload = PrivateNetns::new();
        let mac = "02:00:00:00:89:02";
        ip(&[
            "link", "add", "vb0", "type", "veth", "peer", "name", "vw0", "address", mac,
        ]);
        ip(&["link", "set", "vw0", "netns", &workload.tid.to_string()]);
        ip(&["link", "set", "vb0", "up"]);
        ip(&["addr", "add", "10.89.0.1/24", "dev", "vb0"]);
        let sockets = workload.run(|| {
            ip(&["link", "set", "vw0", "up"]);
            ip(&["addr", "add", "10.89.0.2/24", "dev", "vw0"]);
            [ALLOWED, DENIED].map(|port| {
                let s = UdpSocket::bind((W_IP, port)).expect("bind in the workload");
                s.set_read_timeout(Some(WAIT)).unwrap();
                s
            })
        });
        let mut dp = crate::common::load();
        let vb0 = ifindex("vb0");
        let compiled = Compiler::new().compile(
            &resources(POLICY),
            &[LocalEndpoint {
                workload: "w".into(),
                ifindex: vb0,
            }],
        );
        dp.apply(&compiled.tables).expect("apply");
        dp.attach("vb0", &links.0).expect("attach to vb0");
        // SAFETY: a plain socket call; the descriptor is closed in Drop.
        let packet_socket = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        assert!(
            packet_socket >= 0,
            "packet socket: {}",
            std::io::Error::last_os_error()
        );
        Link {
            dp,
            workload,
            sockets,
            packet_socket,
            _links: links,
        }
    }

    /// Sends one Ethernet frame out of vb0 towards the workload; false when the data
    /// plane dropped it (the send then fails with ENOBUFS).
    fn send(&self, frame: &[u8]) -> bool {
        // SAFETY: sockaddr_ll is plain data; zeroed is a valid value.
        let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        to.sll_family = libc::AF_PACKET as u16;
        to.sll_ifindex = ifindex("vb0") as i32;
        to.sll_halen = 6;
        to.sll_addr[..6].copy_from_slice(&W_MAC);
        // SAFETY: `frame` and `to` outlive the call; the lengths are theirs.
        let n = unsafe {
            libc::sendto(
                self.packet_socket,
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&to as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if n == frame.len() as isize {
            return true;
        }
        let err = std::io::Error::last_os_error();
        assert_eq!(err.raw_os_error(), Some(libc::ENOBUFS), "send: {err}");
        false
    }

    /// The payload of the next datagram the workload received on `port`, if one came.
    fn received(&self, port: u16) -> Option<Vec<u8>> {
        let s = &self.sockets[usize::from(port == DENIED)];
        let mut buf = [0u8; 2048];
        s.recv(&mut buf).ok().map(|n| buf[..n].to_vec())
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        // SAFETY: our own descriptor, closed once.
        unsafe { libc::close(self.packet_socket) };
        let _ = &self.workload;
    }
}

/// An IPv4 frame to the workload with a valid header checksum (the stack checks it).
fn frame(f: Frame) -> Vec<u8> {
    let mut b = f.bytes();
    b[..6].copy_from_slice(&W_MAC);
    let l3 = if f.vlan.is_some() { 18 } else { 14 };
    let ihl = usize::from(b[l3] & 0x0f) * 4;
    let sum = b[l3..l3 + ihl]
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum::<u32>();
    let sum = (sum & 0xffff) + (sum >> 16);
    let sum = !((sum & 0xffff) + (sum >> 16)) as u16;
    b[l3 + 10..l3 + 12].copy_from_slice(&sum.to_be_bytes());
    b
}

/// Datagram `id` to `dport` cut in two: the UDP header and 16 bytes, then 16 more bytes
/// at offset 24 (3 units). UDP's checksum is 0: none.
fn halves(dport: u16, id: u32) -> (Vec<u8>, Vec<u8>) {
    let mut udp = Frame::udp(NODE_IP.into(), W_IP.into(), 40000, dport).l4;
    udp[8..].copy_from_slice(&[0xab; 32]);
    let part = |bytes: &[u8], off, more| {
        frame(Frame::new(NODE_IP.into(), W_IP.into(), 17, bytes.to_vec()).fragment(off, more, id))
    };
    (part(&udp[..24], 0, true), part(&udp[24..], 3, false))
}

#[test]
fn fragments_on_a_real_link_reach_no_denied_port() {
    on_own_netns(|| {
        let link = Link::new("fragments");
        // In order, allowed: reassembled and delivered (what the test can see arrive).
        let (first, last) = halves(ALLOWED, 1);
        assert!(link.send(&first) && link.send(&last));
        assert_eq!(
            link.received(ALLOWED),
            Some(vec![0xab; 32]),
            "allowed, in order"
        );
        // In order, denied.
        let (first, last) = halves(DENIED, 2);
        assert!(!link.send(&first) && !link.send(&last));
        assert_eq!(link.received(DENIED), None, "denied, in order");
        // Out of order: the early last fragment is dropped; sent again after its first,
        // it completes the allowed datagram.
        let (first, last) = halves(ALLOWED, 3);
        assert!(!link.send(&last), "last fragment before its first");
        assert!(link.send(&first));
        assert_eq!(link.received(ALLOWED), None, "incomplete");
        assert!(link.send(&last), "last fragment after its first");
        assert_eq!(link.received(ALLOWED), Some(vec![0xab; 32]), "completed");
        // Overlap: an allowed first fragment, then a first fragment of the same id to the
        // denied port, then the rest: nothing reaches either port.
        let (ok_first, _) = halves(ALLOWED, 4);
        let (bad_first, bad_last) = halves(DENIED, 4);
        assert!(link.send(&ok_first));
        assert!(!link.send(&bad_first), "overlapping first fragment");
        assert!(
            !link.send(&bad_last),
            "follows the overlapping first fragment"
        );
        assert_eq!(link.received(DENIED), None, "overlap, denied port");
        assert_eq!(link.received(ALLOWED), None, "overlap, allowed port");
        // A tiny first fragment: the UDP header alone (8 bytes, the least a fragment that
        // is not the last can carry) holds the ports, so it is judged on them.
        let mut udp = Frame::udp(NODE_IP.into(), W_IP.into(), 40000, ALLOWED).l4;
        udp[8..].copy_from_slice(&[0xcd; 32]);
        let tiny = Frame::new(NODE_IP.into(), W_IP.into(), 17, udp[..8].to_vec());
        let rest = Frame::new(NODE_IP.into(), W_IP.into(), 17, udp[8..].to_vec());
        assert!(link.send(&frame(tiny.fragment(0, true, 5))));
        assert!(link.send(&frame(rest.fragment(1, false, 5))));
        assert_eq!(
            link.received(ALLOWED),
            Some(vec![0xcd; 32]),
            "8-byte first fragment"
        );
        let s = link.dp.stats().unwrap();
        assert_eq!(s.fragments_dropped, 1, "{s:?}");
    });
}

#[test]
fn wrapped_frames_on_a_real_link_reach_no_denied_port() {
    on_own_netns(|| {
        let link = Link::new("wrapped");
        let udp = |dport| Frame::udp(NODE_IP.into(), W_IP.into(), 40000, dport);
        assert!(link.send(&frame(udp(ALLOWED))));
        assert!(link.received(ALLOWED).is_some(), "plain, allowed");
        // Under the pre-standard QinQ TPID or an MPLS label the data plane passes the frame
        // as non-IP, and the workload's stack does not take it for IP either.
        for ethertype in [0x9100u16, 0x8847] {
            let mut f = frame(udp(DENIED));
            f[12..14].copy_from_slice(&ethertype.to_be_bytes());
            assert!(link.send(&f), "{ethertype:#06x} passes as non-IP");
            assert_eq!(link.received(DENIED), None, "under {ethertype:#06x}");
        }
        // Two 802.1Q tags: malformed, even to the allowed port.
        let mut f = frame(udp(ALLOWED).with_vlan(0));
        f.splice(12..12, [0x81, 0x00, 0, 0]);
        assert!(!link.send(&f), "QinQ");
        assert_eq!(link.received(ALLOWED), None, "QinQ");
        let s = link.dp.stats().unwrap();
        assert_eq!((s.non_ip, s.parse_errors), (2, 1), "{s:?}");
    });
}
