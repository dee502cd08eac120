//! What the kernel exports of a connection (docs/FLOWS.md): an allowed connection once,
//! when it ends, with both local legs in one END event; a deny, log or audit verdict at
//! once; start events of allowed connections only under `REPORT_START`, which keeps a
//! flow the LRU evicts before its end from going unreported.

mod common;

use common::{db4, resources, web4};
use microseg_dataplane::{common::*, packet::*, sessions::end_event, Dataplane, Hook, LoadOptions};
use microseg_policy::{compile::*, Direction};
use microseg_testsupport::{ifindex, on_own_netns};

const WORKLOADS: &str = r#"
apiVersion: microseg.io/v1
kind: Workload
metadata: {name: db, labels: {app: db}}
spec: {interface: db0, ips: [10.1.0.3]}
---
apiVersion: microseg.io/v1
kind: Workload
metadata: {name: web, labels: {app: web}}
spec: {interface: web0, ips: [10.1.0.2]}
---
apiVersion: microseg.io/v1
kind: Policy
metadata: {name: web-egress}
spec:
  selector: {matchLabels: {app: web}}
  egress: [{action: allow, to: [{selector: {matchLabels: {app: db}}}], ports: [{protocol: TCP, port: 5432}, {protocol: UDP, port: 53}]}]
"#;

/// db accepts web on TCP 5432 and UDP 53.
const DB_ALLOWS_WEB: &str = r#"
apiVersion: microseg.io/v1
kind: Policy
metadata: {name: db-ingress}
spec:
  selector: {matchLabels: {app: db}}
  ingress: [{action: allow, from: [{selector: {matchLabels: {app: web}}}], ports: [{protocol: TCP, port: 5432}, {protocol: UDP, port: 53}]}]
"#;

/// db accepts nothing.
const DB_DENIES_ALL: &str = r#"
apiVersion: microseg.io/v1
kind: Policy
metadata: {name: db-ingress}
spec:
  selector: {matchLabels: {app: db}}
  ingress: []
"#;

/// web and db on interfaces of their own (a veth pair in the test's own namespace).
struct Node {
    dp: Dataplane,
    compiled: Compiled,
    web0: u32,
    db0: u32,
    /// Bytes of every frame sent so far, each counted once.
    bytes: u64,
}

impl Node {
    fn new(workloads: &str, db_policy: &str) -> Node {
        let (web0, db0) = (ifindex("web0"), ifindex("db0"));
        let locals = [("web", web0), ("db", db0)].map(|(w, ifindex)| LocalEndpoint {
            workload: w.into(),
            ifindex,
        });
        let yaml = format!("{workloads}---\n{db_policy}");
        let compiled = Compiler::new().compile(&resources(&yaml), &locals);
        let mut dp = common::load();
        dp.apply(&compiled.tables).expect("apply");
        Node {
            dp,
            compiled,
            web0,
            db0,
            bytes: 0,
        }
    }

    fn rule_id(&self, policy: &str, direction: Direction) -> u32 {
        *self
            .compiled
            .rules
            .iter()
            .find(|(_, r)| &*r.policy == policy && r.direction == direction && r.index == 0)
            .expect("rule")
            .0
    }

    fn run(&mut self, hook: Hook, ifindex: u32, f: &Frame) -> bool {
        self.dp
            .test_run(hook, &f.bytes(), ifindex, 1)
            .expect("test run")
            .passed()
    }

    /// Out of `from`'s interface, then (if it passed) into `to`'s. True when delivered.
    fn send(&mut self, from: u32, to: u32, f: Frame) -> bool {
        self.bytes += f.bytes().len() as u64;
        self.run(Hook::FromWorkload, from, &f) && self.run(Hook::ToWorkload, to, &f)
    }

    fn web_to_db(&mut self, f: Frame) -> bool {
        let (web0, db0) = (self.web0, self.db0);
        self.send(web0, db0, f)
    }

    fn db_to_web(&mut self, f: Frame) -> bool {
        let (web0, db0) = (self.web0, self.db0);
        self.send(db0, web0, f)
    }

    /// A short TCP connection web:40000 → db:5432, every packet delivered: handshake, a
    /// segment of data, FIN from each side and the last ACK. Returns the bytes sent until
    /// it closed (the second FIN): what its END counts, in 6 packets; the last ACK comes
    /// after the end.
    fn short_connection(&mut self) -> u64 {
        let start = self.bytes;
        // ISNs 0 both ways; the data takes web's 1..=100, its FIN 101, db's FIN 1.
        let c2s =
            |flags, seq, ack| Frame::tcp(web4(), db4(), 40000, 5432, flags).with_seq(seq, ack);
        let s2c =
            |flags, seq, ack| Frame::tcp(db4(), web4(), 5432, 40000, flags).with_seq(seq, ack);
        assert!(self.web_to_db(c2s(TCP_SYN, 0, 0)), "SYN");
        assert!(self.db_to_web(s2c(TCP_SYN | TCP_ACK, 0, 1)), "SYN-ACK");
        assert!(self.web_to_db(c2s(TCP_ACK, 1, 1)), "ACK");
        let data = tcp_data(web4(), db4(), 40000, 5432).with_seq(1, 1);
        assert!(self.web_to_db(data), "data");
        assert!(self.web_to_db(c2s(TCP_FIN | TCP_ACK, 101, 1)), "FIN");
        assert!(self.db_to_web(s2c(TCP_FIN | TCP_ACK, 1, 102)), "FIN back");
        let closed = self.bytes - start;
        assert!(self.web_to_db(c2s(TCP_ACK, 102, 2)), "last ACK");
        closed
    }
}

/// A TCP segment with 100 bytes of data.
fn tcp_data(src: std::net::IpAddr, dst: std::net::IpAddr, sport: u16, dport: u16) -> Frame {
    let mut l4 = vec![0u8; 20 + 100];
    l4[0..2].copy_from_slice(&sport.to_be_bytes());
    l4[2..4].copy_from_slice(&dport.to_be_bytes());
    l4[12] = 5 << 4;
    l4[13] = TCP_ACK | 0x08;
    l4[14..16].copy_from_slice(&64240u16.to_be_bytes());
    Frame::new(src, dst, proto::TCP, l4)
}

/// Runs `test` in a network namespace of its own holding `web0` and `db0`; both go away
/// with the test's thread, whatever the test does.
fn on_two_interfaces(test: impl FnOnce() + Send + 'static) {
    on_own_netns(|| {
        microseg_testsupport::ip(&["link", "add", "web0", "type", "veth", "peer", "name", "db0"]);
        test();
    });
}

fn kinds(events: &[FlowEvent]) -> Vec<(u8, u32, u8)> {
    events
        .iter()
        .map(|e| (e.kind, e.ifindex, e.direction))
        .collect()
}

fn leg(ifindex: u32, verdict: u8, rule_id: u32, peer_identity: u32) -> EventLeg {
    EventLeg {
        ifindex,
        rule_id,
        audit_rule_id: RULE_NONE,
        peer_identity,
        verdict,
        audit_verdict: verdict::NONE,
        _pad: [0; 2],
    }
}

#[test]
fn a_short_allowed_connection_between_local_workloads_is_one_end_event_with_both_legs() {
    on_two_interfaces(|| {
        let mut node = Node::new(WORKLOADS, DB_ALLOWS_WEB);
        let (web_rule, db_rule) = (
            node.rule_id("web-egress", Direction::Egress),
            node.rule_id("db-ingress", Direction::Ingress),
        );
        let bytes = node.short_connection();
        assert_eq!(node.dp.session_count(), 0, "closed and removed");

        let ev = node.dp.drain_events();
        assert_eq!(
            kinds(&ev),
            [(event_kind::END, node.web0, direction::EGRESS)],
            "one END, no NEW: {ev:?}"
        );
        let e = ev[0];
        assert!(0 < e.start_ns && e.start_ns <= e.time_ns, "{e:?}");
        assert_eq!((e.packets, e.bytes), (6, bytes), "the whole connection");
        assert_eq!(
            (e.src_port, e.dst_port, e.protocol),
            (40000, 5432, proto::TCP)
        );
        assert_eq!(
            (
                tables::words_addr(e.src_addr),
                tables::words_addr(e.dst_addr)
            ),
            (web4(), db4())
        );
        // Each leg with its own judgement; web judges db and db judges web.
        let identities = (e.peer_identity, e.other.peer_identity);
        assert_eq!(
            (e.verdict, e.rule_id, e.audit_rule_id, e.audit_verdict),
            (verdict::ALLOW, web_rule, RULE_NONE, verdict::NONE)
        );
        assert_eq!(
            e.other,
            leg(node.db0, verdict::ALLOW, db_rule, identities.1)
        );
        assert_ne!(identities.0, identities.1);
    });
}

#[test]
fn report_start_adds_a_new_event_per_leg() {
    on_two_interfaces(|| {
        let mut node = Node::new(WORKLOADS, DB_ALLOWS_WEB);
        node.dp.set_report_start(true).unwrap();
        let bytes = node.short_connection();
        let ev = node.dp.drain_events();
        assert_eq!(
            kinds(&ev),
            [
                (event_kind::NEW, node.web0, direction::EGRESS),
                (event_kind::NEW, node.db0, direction::INGRESS),
                (event_kind::END, node.web0, direction::EGRESS),
            ],
            "{ev:?}"
        );
        let (first, second, end) = (ev[0], ev[1], ev[2]);
        assert_eq!(first.other.ifindex, 0, "db's leg is not there yet");
        assert_eq!(second.other.ifindex, node.web0);
        assert_eq!(first.packets, 1);
        // One connection: the same start in all three.
        assert!([first.start_ns, second.start_ns]
            .iter()
            .all(|t| *t == end.start_ns));
        assert_eq!((end.packets, end.bytes), (6, bytes));

        // Off again: the next connection reports its end alone.
        node.dp.set_report_start(false).unwrap();
        node.short_connection();
        assert_eq!(
            kinds(&node.dp.drain_events()),
            [(event_kind::END, node.web0, direction::EGRESS)]
        );
    });
}

#[test]
fn a_denied_connection_is_reported_at_once() {
    on_two_interfaces(|| {
        let mut node = Node::new(WORKLOADS, DB_DENIES_ALL);
        let syn = Frame::tcp(web4(), db4(), 40000, 5432, TCP_SYN);
        assert!(!node.web_to_db(syn), "db's ingress denies it");
        let ev = node.dp.drain_events();
        // web's leg allows it: only db's leg reports, before anything closes.
        assert_eq!(
            kinds(&ev),
            [(event_kind::NEW, node.db0, direction::INGRESS)],
            "{ev:?}"
        );
        assert_eq!(
            (ev[0].verdict, ev[0].rule_id),
            (verdict::DENY, RULE_DEFAULT_DENY)
        );
        assert_eq!(ev[0].other.ifindex, node.web0);
        assert_eq!(ev[0].other.verdict, verdict::ALLOW);
    });
}

#[test]
fn an_audit_mode_leg_is_reported_at_once() {
    on_two_interfaces(|| {
        let workloads = WORKLOADS.replace(
            "spec: {interface: db0, ips: [10.1.0.3]}",
            "spec: {interface: db0, ips: [10.1.0.3], mode: audit}",
        );
        let mut node = Node::new(&workloads, DB_DENIES_ALL);
        let syn = Frame::tcp(web4(), db4(), 40000, 5432, TCP_SYN);
        assert!(node.web_to_db(syn), "audit mode never drops");
        let ev = node.dp.drain_events();
        assert_eq!(
            kinds(&ev),
            [(event_kind::NEW, node.db0, direction::INGRESS)],
            "{ev:?}"
        );
        assert_eq!(
            (ev[0].verdict, ev[0].rule_id),
            (verdict::AUDIT, RULE_DEFAULT_DENY)
        );
    });
}

#[test]
fn a_connection_with_a_remote_peer_ends_with_one_leg() {
    let mut env = common::Env::new(&common::with(common::DB_ALLOWS_WEB), "db");
    // ISNs 0 both ways, no data: the FINs at 1, the last ACK at 2 acknowledging 2.
    let c2s = |flags, seq, ack| Frame::tcp(web4(), db4(), 40000, 5432, flags).with_seq(seq, ack);
    let s2c = |flags, seq, ack| Frame::tcp(db4(), web4(), 5432, 40000, flags).with_seq(seq, ack);
    assert!(common::into_db(&env, &c2s(TCP_SYN, 0, 0)));
    assert!(common::from_db(&env, &s2c(TCP_SYN | TCP_ACK, 0, 1)));
    assert!(common::into_db(&env, &c2s(TCP_ACK, 1, 1)));
    assert!(common::into_db(&env, &c2s(TCP_FIN | TCP_ACK, 1, 1)));
    assert!(common::from_db(&env, &s2c(TCP_FIN | TCP_ACK, 1, 2)));
    assert!(common::into_db(&env, &c2s(TCP_ACK, 2, 2)));
    let ev = env.dp.drain_events();
    assert_eq!(
        kinds(&ev),
        [(event_kind::END, common::LO, direction::INGRESS)],
        "{ev:?}"
    );
    // Up to the FIN that closed it: the last ACK comes after the end.
    assert_eq!((ev[0].packets, ev[0].other.ifindex), (5, 0));
    assert_eq!(ev[0].other, EventLeg::default());
    assert_eq!(
        (ev[0].verdict, ev[0].rule_id),
        (
            verdict::ALLOW,
            env.rule_id("db-ingress", Direction::Ingress, 0)
        )
    );
}

#[test]
fn an_allowed_udp_flow_sends_nothing_and_its_expiry_gives_one_event_with_both_legs() {
    on_two_interfaces(|| {
        let mut node = Node::new(WORKLOADS, DB_ALLOWS_WEB);
        for _ in 0..3 {
            assert!(node.web_to_db(Frame::udp(web4(), db4(), 40000, 53)));
            assert!(node.db_to_web(Frame::udp(db4(), web4(), 53, 40000)));
        }
        let ev = node.dp.drain_events();
        assert!(ev.is_empty(), "left to the agent's walk: {ev:?}");

        let (key, s) = node
            .dp
            .session_for(proto::UDP, web4(), 40000, db4(), 53)
            .expect("session");
        let e = end_event(&key, &s).expect("an END for an idle session");
        assert_eq!(
            (e.kind, e.ifindex, e.direction, e.other.ifindex),
            (event_kind::END, node.web0, direction::EGRESS, node.db0)
        );
        assert_eq!((e.packets, e.bytes), (6, node.bytes));
        assert_eq!((e.start_ns, e.time_ns), (s.created_ns, s.last_seen_ns));
        assert_eq!((e.src_port, e.dst_port), (40000, 53));
        assert_eq!(
            (e.verdict, e.other.verdict),
            (verdict::ALLOW, verdict::ALLOW)
        );

        // A session whose end the kernel already sent gives none.
        let mut ended = s;
        ended
            .legs
            .iter_mut()
            .for_each(|l| l.flags |= leg_flags::ENDED);
        assert_eq!(end_event(&key, &ended), None);
    });
}

#[test]
fn with_report_start_a_session_the_lru_evicts_was_reported() {
    const SESSIONS: u32 = 64;
    let flood = |env: &common::Env| {
        for port in 0..(SESSIONS as u16 * 16) {
            let syn = Frame::tcp(web4(), db4(), 41000 + port, 5432, TCP_SYN);
            assert!(common::into_db(env, &syn));
        }
    };
    let first = |env: &common::Env| {
        assert!(common::into_db(
            env,
            &Frame::tcp(web4(), db4(), 40000, 5432, TCP_SYN)
        ));
    };
    let gone = |env: &common::Env| {
        env.dp
            .session_for(proto::TCP, web4(), 40000, db4(), 5432)
            .is_none()
    };
    let reported = |ev: &[FlowEvent]| {
        ev.iter()
            .any(|e| e.kind == event_kind::NEW && e.src_port == 40000)
    };
    let yaml = common::with(common::DB_ALLOWS_WEB);

    // Without it, an allowed session evicted before its end leaves no trace.
    let mut env = common::Env::with_sessions(&yaml, "db", SESSIONS);
    first(&env);
    flood(&env);
    assert!(gone(&env), "evicted by the flood");
    let ev = env.dp.drain_events();
    assert!(ev.is_empty(), "{} events", ev.len());

    let mut env = common::Env::with_sessions(&yaml, "db", SESSIONS);
    env.dp.set_report_start(true).unwrap();
    first(&env);
    flood(&env);
    assert!(gone(&env), "evicted by the flood");
    let ev = env.dp.drain_events();
    assert!(reported(&ev), "its start was reported");
    assert_eq!(
        ev.len(),
        1 + SESSIONS as usize * 16,
        "a NEW for every session"
    );
    assert_eq!(env.dp.stats().unwrap().events_lost, 0);
}

#[test]
fn set_report_start_leaves_the_other_flags() {
    let mut dp = common::load();
    dp.set_flags(config_flags::DROP_NON_IP).unwrap();
    let before = dp.config().unwrap();
    dp.set_report_start(true).unwrap();
    let on = dp.config().unwrap();
    assert_eq!(
        on.flags,
        config_flags::DROP_NON_IP | config_flags::REPORT_START
    );
    assert_eq!(
        (on.active_slot, on.generation),
        (before.active_slot, before.generation)
    );
    dp.set_report_start(false).unwrap();
    assert_eq!(dp.config().unwrap().flags, config_flags::DROP_NON_IP);
}

#[test]
fn set_report_start_works_on_an_adopted_pinned_data_plane() {
    /// Removed with everything in it however the test ends.
    struct PinDir(std::path::PathBuf);
    impl Drop for PinDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let dir = PinDir(format!("/sys/fs/bpf/mseg-test-export-{}", std::process::id()).into());
    let load = || {
        Dataplane::load(&LoadOptions {
            pin_dir: Some(dir.0.clone()),
            sessions: 4096,
            ..Default::default()
        })
        .expect("load with pins")
    };
    let first = load();
    let mut adopted = load();
    adopted.set_report_start(true).unwrap();
    assert_ne!(
        first.config().unwrap().flags & config_flags::REPORT_START,
        0
    );
    adopted.set_report_start(false).unwrap();
    assert_eq!(
        first.config().unwrap().flags & config_flags::REPORT_START,
        0
    );
}
