//! VLAN tags over a real veth between two network namespaces. A VLAN device on a veth
//! hands its tag to the veth in the skb's metadata, not in the frame (VLAN acceleration),
//! and the data plane sees it there, which BPF_PROG_TEST_RUN never shows: one tag is
//! judged by policy and counted as `vlan`; a second one in the frame is malformed.
//!
//! The tags are pushed the way a VLAN device pushes them, by `bpf_skb_vlan_push` (see
//! `tag_pusher.rs`), so the test runs on kernels without 802.1Q devices too. They carry
//! VLAN id 0 (priority tags), which the receiving stack accepts with no VLAN device.

#[path = "../common/mod.rs"]
mod common;
mod tag_pusher;

use std::net::{TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::Duration;

use common::resources;
use microseg_dataplane::{common::Stats, Dataplane};
use microseg_policy::compile::{Compiler, LocalEndpoint};
use microseg_testsupport::{ifindex, ip, on_own_netns, PrivateNetns, TempDir};
use tag_pusher::{push_tags, DOT1AD, DOT1Q};

/// The workload `w` (behind `vh0`) accepts TCP 8080 from anyone, and nothing else.
const POLICY: &str = r#"
apiVersion: microseg.io/v1
kind: Workload
metadata: {name: w, labels: {app: w}}
spec: {interface: vh0, ips: [10.88.0.2]}
---
apiVersion: microseg.io/v1
kind: Policy
metadata: {name: w-ingress}
spec:
  selector: {matchLabels: {app: w}}
  ingress: [{action: allow, ports: [{protocol: TCP, port: 8080}]}]
"#;

const NODE: (&str, &str) = ("10.88.0.1", "02:00:00:00:88:01");
const WORKLOAD: (&str, &str) = ("10.88.0.2", "02:00:00:00:88:02");
/// How long a connection attempt may take: a dropped SYN fails it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Gives the calling thread's `dev` `addr`/24 and a permanent neighbour entry for the
/// other end, so no ARP crosses the link: what the test sees is its own traffic.
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

/// The node's side (the calling thread's namespace) holds `vh0`, with the data plane on
/// it and `w`'s policy applied; its peer `vw0` is in `workload`. Each end tags what it
/// sends with `tags`.
struct Veth {
    dp: Dataplane,
    _pushers: [OwnedFd; 2],
    workload: PrivateNetns,
    /// This test's link pins, removed however the test ends.
    _links: TempDir,
}

impl Veth {
    fn new(test: &str, tags: &'static [(u16, u16)]) -> Veth {
        let links = TempDir::new_in(Path::new("/sys/fs/bpf"), &format!("vlan-{test}"));
        let workload = PrivateNetns::new();
        ip(&[
            "link", "add", "vh0", "address", NODE.1, "type", "veth", "peer", "name", "vw0",
            "address", WORKLOAD.1,
        ]);
        ip(&["link", "set", "vw0", "netns", &workload.tid.to_string()]);
        configure("vh0", NODE.0, WORKLOAD);
        let workload_pusher = workload.run(move || {
            configure("vw0", WORKLOAD.0, NODE);
            push_tags(ifindex("vw0"), tags)
        });
        let node_pusher = push_tags(ifindex("vh0"), tags);

        let mut dp = common::load();
        let compiled = Compiler::new().compile(
            &resources(POLICY),
            &[LocalEndpoint {
                workload: "w".into(),
                ifindex: ifindex("vh0"),
            }],
        );
        dp.apply(&compiled.tables).expect("apply");
        dp.attach("vh0", &links.0).expect("attach to vh0");
        Veth {
            dp,
            _pushers: [node_pusher, workload_pusher],
            workload,
            _links: links,
        }
    }

    /// A listener in the workload's namespace on `port`, open for as long as it is held.
    fn listen(&self, port: u16) -> TcpListener {
        self.workload.run(move || {
            TcpListener::bind((WORKLOAD.0, port)).expect("bind in the workload's namespace")
        })
    }

    fn stats(&self) -> Stats {
        self.dp.stats().expect("stats")
    }
}

/// Whether a TCP connection from the node to the workload's `port` opens.
fn connects(port: u16) -> bool {
    let to = format!("{}:{port}", WORKLOAD.0).parse().unwrap();
    TcpStream::connect_timeout(&to, CONNECT_TIMEOUT).is_ok()
}

#[test]
fn a_tag_in_the_skbs_metadata_is_judged_by_policy_and_counted() {
    on_own_netns(|| {
        let veth = Veth::new("vlan-one", &[(DOT1Q, 0)]);
        let (_open, _closed) = (veth.listen(8080), veth.listen(9090));
        let before = veth.stats();

        assert!(connects(8080), "the allowed port, tagged");
        let allowed = veth.stats();
        // At least the SYN (into the workload) and the SYN-ACK (out of it).
        assert!(
            allowed.vlan >= before.vlan + 2,
            "tagged packets counted: {allowed:?}"
        );
        assert!(allowed.allowed() > before.allowed(), "{allowed:?}");

        assert!(!connects(9090), "another port is denied, tagged too");
        let denied = veth.stats();
        assert!(denied.denied() > allowed.denied(), "{denied:?}");
        assert!(denied.vlan > allowed.vlan, "{denied:?}");
        assert_eq!(denied.parse_errors, 0, "{denied:?}");
    });
}

#[test]
fn a_second_tag_in_the_frame_behind_one_in_the_skb_is_malformed() {
    on_own_netns(|| {
        // 802.1Q pushed first, then 802.1ad: the 802.1Q tag moves into the frame and the
        // 802.1ad tag stays in the skb, as a QinQ device stack on a veth leaves them.
        let veth = Veth::new("vlan-qinq", &[(DOT1Q, 0), (DOT1AD, 0)]);
        let _open = veth.listen(8080);
        let before = veth.stats();

        assert!(!connects(8080), "double-tagged, even to the allowed port");
        let after = veth.stats();
        assert!(after.parse_errors > before.parse_errors, "{after:?}");
        assert!(after.vlan > before.vlan, "seen tagged: {after:?}");
        assert_eq!(after.allowed(), before.allowed(), "{after:?}");
    });
}
