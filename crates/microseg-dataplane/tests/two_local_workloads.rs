//! Two workloads of one node talking to each other: their connection is one session with a
//! leg on each interface. Each leg is judged by its own workload's policy and enforces it
//! in both directions, each packet is counted once, and the connection ends with one END
//! event that carries both legs' judgements.

mod common;

use common::{db4, resources, web4, DB_ALLOWS_WEB, DB_DENIES_ALL};
use microseg_dataplane::{common::*, packet::*, Dataplane, Hook};
use microseg_policy::{compile::*, Direction};
use microseg_testsupport::{ifindex, ip, on_own_netns};

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
  egress: [{action: allow, to: [{selector: {matchLabels: {app: db}}}], ports: [{protocol: TCP, port: 5432}]}]
"#;

/// web and db on interfaces of their own, with their policies applied.
struct Node {
    dp: Dataplane,
    compiler: Compiler,
    compiled: Option<Compiled>,
    web0: u32,
    db0: u32,
}

impl Node {
    fn new(db_policy: &str) -> Node {
        let (web0, db0) = (ifindex("web0"), ifindex("db0"));
        let mut node = Node {
            dp: common::load(),
            compiler: Compiler::new(),
            compiled: None,
            web0,
            db0,
        };
        node.apply(db_policy);
        node
    }

    fn apply(&mut self, db_policy: &str) {
        let locals = [
            LocalEndpoint {
                workload: "web".into(),
                ifindex: self.web0,
            },
            LocalEndpoint {
                workload: "db".into(),
                ifindex: self.db0,
            },
        ];
        let yaml = format!("{WORKLOADS}---\n{db_policy}");
        let compiled = self.compiler.compile(&resources(&yaml), &locals);
        self.dp.apply(&compiled.tables).expect("apply");
        self.compiled = Some(compiled);
    }

    fn rule_id(&self, policy: &str, direction: Direction) -> u32 {
        *self
            .compiled
            .as_ref()
            .expect("applied")
            .rules
            .iter()
            .find(|(_, r)| &*r.policy == policy && r.direction == direction && r.index == 0)
            .expect("rule")
            .0
    }

    fn run(&self, hook: Hook, ifindex: u32, f: &Frame) -> bool {
        self.dp
            .test_run(hook, &f.bytes(), ifindex, 1)
            .expect("test run")
            .passed()
    }

    /// web → db: out of web's interface, then (if it passed) into db's. True when delivered.
    fn web_to_db(&self, flags: u8) -> bool {
        let f = Frame::tcp(web4(), db4(), 40000, 5432, flags).with_seq(0, ack(flags));
        self.run(Hook::FromWorkload, self.web0, &f) && self.run(Hook::ToWorkload, self.db0, &f)
    }

    /// web connects to db: SYN, SYN-ACK, ACK, each delivered.
    fn handshake(&self) {
        assert!(self.web_to_db(TCP_SYN), "SYN");
        assert!(self.db_to_web(TCP_SYN | TCP_ACK), "SYN-ACK");
        assert!(self.web_to_db(TCP_ACK), "ACK");
    }

    /// db → web, the reply direction.
    fn db_to_web(&self, flags: u8) -> bool {
        let f = Frame::tcp(db4(), web4(), 5432, 40000, flags).with_seq(0, ack(flags));
        self.run(Hook::FromWorkload, self.db0, &f) && self.run(Hook::ToWorkload, self.web0, &f)
    }

    fn session(&self) -> Session {
        self.dp
            .session_for(proto::TCP, web4(), 40000, db4(), 5432)
            .expect("session")
            .1
    }

    /// Events of `kind` waiting, as (ifindex, direction, verdict, rule id), in order.
    fn events(&mut self, kind: u8) -> Vec<(u32, u8, u8, u32)> {
        self.dp
            .drain_events()
            .iter()
            .filter(|e| e.kind == kind)
            .map(|e| (e.ifindex, e.direction, e.verdict, e.rule_id))
            .collect()
    }
}

/// Runs `test` in a network namespace of its own holding two links, `web0` and `db0`
/// (BPF_PROG_TEST_RUN needs real interfaces to name; a veth pair is two). The namespace
/// and its links go away with the test's thread, whatever the test does.
fn on_two_interfaces(test: impl FnOnce() + Send + 'static) {
    on_own_netns(|| {
        ip(&["link", "add", "web0", "type", "veth", "peer", "name", "db0"]);
        test();
    });
}

const EGRESS: usize = direction::EGRESS as usize;
const INGRESS: usize = direction::INGRESS as usize;

#[test]
fn a_connection_between_two_local_workloads_is_one_session_with_a_leg_on_each_interface() {
    on_two_interfaces(|| {
        let mut node = Node::new(DB_ALLOWS_WEB);
        let (web_rule, db_rule) = (
            node.rule_id("web-egress", Direction::Egress),
            node.rule_id("db-ingress", Direction::Ingress),
        );
        node.handshake();

        let stats = node.dp.stats().unwrap();
        assert_eq!(
            stats.sessions_created, 1,
            "one session, not one per interface"
        );
        assert_eq!(node.dp.session_count(), 1);
        let s = node.session();
        assert_eq!(s.state, session_state::ESTABLISHED);
        assert_eq!(
            s.packets,
            [2, 1],
            "each packet counted once, not at both interfaces"
        );
        let (out, into) = (s.legs[EGRESS], s.legs[INGRESS]);
        assert_eq!((out.ifindex, out.rule_id), (node.web0, web_rule));
        assert_eq!((into.ifindex, into.rule_id), (node.db0, db_rule));
        let ev = node.dp.drain_events();
        assert!(ev.is_empty(), "allowed: reported at its end: {ev:?}");
        // Both rules counted every packet they let through.
        for rule in [web_rule, db_rule] {
            assert_eq!(node.dp.rule_counter(rule).unwrap().packets, 3);
        }

        assert!(node.web_to_db(TCP_FIN | TCP_ACK));
        assert!(node.db_to_web(TCP_FIN | TCP_ACK));
        let s = node.session();
        assert_eq!((s.state, s.packets), (session_state::CLOSED, [3, 2]));
        // The last ACK passes both interfaces, and the second one removes the session:
        // removed at web's, db's program would have opened a new one.
        assert!(node.web_to_db(TCP_ACK));
        let stats = node.dp.stats().unwrap();
        assert_eq!((stats.sessions_created, stats.sessions_closed), (1, 1));
        assert_eq!(node.dp.session_count(), 0);
        let ev = node.dp.drain_events();
        assert_eq!(ev.len(), 1, "one END for the connection: {ev:?}");
        let end = ev[0];
        assert_eq!(
            (
                end.kind,
                end.ifindex,
                end.direction,
                end.verdict,
                end.rule_id
            ),
            (
                event_kind::END,
                node.web0,
                direction::EGRESS,
                verdict::ALLOW,
                web_rule
            ),
        );
        assert_eq!(
            (end.other.ifindex, end.other.verdict, end.other.rule_id),
            (node.db0, verdict::ALLOW, db_rule),
            "each side's own judgement"
        );
        assert_eq!(end.packets, 5, "up to the FIN that closed it");
    });
}

#[test]
fn each_leg_enforces_its_own_workloads_policy_in_both_directions() {
    on_two_interfaces(|| {
        let mut node = Node::new(DB_DENIES_ALL);
        // NEW events for allowed legs too: they show which leg was judged again.
        node.dp.set_report_start(true).unwrap();
        let syn = Frame::tcp(web4(), db4(), 40000, 5432, TCP_SYN);
        assert!(
            node.run(Hook::FromWorkload, node.web0, &syn),
            "web's egress allows it"
        );
        assert!(
            !node.run(Hook::ToWorkload, node.db0, &syn),
            "db's ingress denies it"
        );
        let s = node.session();
        assert_eq!(s.legs[EGRESS].verdict, verdict::ALLOW);
        assert_eq!(
            (s.legs[INGRESS].verdict, s.legs[INGRESS].rule_id),
            (verdict::DENY, RULE_DEFAULT_DENY)
        );
        // What db sends on that connection is judged by db's leg: denied, although web's
        // leg allows the connection.
        let reply = Frame::tcp(db4(), web4(), 5432, 40000, TCP_SYN | TCP_ACK);
        assert!(!node.run(Hook::FromWorkload, node.db0, &reply));
        assert!(!node.web_to_db(TCP_SYN), "retransmission");
        node.events(event_kind::NEW);

        // Allowing it on db's side re-judges db's leg; web's leg is judged again too, and
        // keeps its verdict without a second NEW event.
        node.apply(DB_ALLOWS_WEB);
        let rejudged = node.dp.stats().unwrap().rejudged;
        assert!(node.web_to_db(TCP_SYN));
        assert_eq!(node.dp.stats().unwrap().rejudged, rejudged + 2);
        let db_rule = node.rule_id("db-ingress", Direction::Ingress);
        assert_eq!(
            node.events(event_kind::NEW),
            [(node.db0, direction::INGRESS, verdict::ALLOW, db_rule)]
        );
        assert!(node.db_to_web(TCP_SYN | TCP_ACK));
    });
}

#[test]
fn a_leg_taken_over_by_a_new_interface_ends_the_sessions_flow_as_it_was() {
    on_two_interfaces(|| {
        let mut node = Node::new(DB_ALLOWS_WEB);
        // The new leg is allowed: its start is reported only under REPORT_START.
        node.dp.set_report_start(true).unwrap();
        assert!(node.web_to_db(TCP_SYN));
        assert!(node.db_to_web(TCP_SYN | TCP_ACK));
        node.dp.drain_events();

        // web's interface is made again, under a new ifindex.
        let old = node.web0;
        ip(&[
            "link", "add", "web1", "type", "veth", "peer", "name", "web1p",
        ]);
        node.web0 = ifindex("web1");
        node.apply(DB_ALLOWS_WEB);
        assert!(node.web_to_db(TCP_ACK));

        let ev = node.dp.drain_events();
        let events: Vec<_> = ev
            .iter()
            .map(|e| (e.kind, e.ifindex, e.direction, e.other.ifindex))
            .collect();
        assert_eq!(
            events,
            [
                (event_kind::END, old, direction::EGRESS, node.db0),
                (event_kind::NEW, node.web0, direction::EGRESS, node.db0),
            ],
            "the session as it was ends (one END, both legs), then the new leg's flow starts"
        );
        assert_eq!(node.session().legs[EGRESS].ifindex, node.web0);
    });
}

#[test]
fn a_leg_opened_by_a_reply_is_judged_in_its_own_direction() {
    on_two_interfaces(|| {
        let node = Node::new(DB_DENIES_ALL);
        // web's SYN leaves web's interface, but db's program never saw it (as when db's
        // interface is enforced mid-connection): db's first packet is its SYN-ACK.
        let syn = Frame::tcp(web4(), db4(), 40000, 5432, TCP_SYN);
        assert!(node.run(Hook::FromWorkload, node.web0, &syn));
        let reply = Frame::tcp(db4(), web4(), 5432, 40000, TCP_SYN | TCP_ACK);
        // db's egress is open, but this leg judges web → db:5432, which db's ingress denies.
        assert!(!node.run(Hook::FromWorkload, node.db0, &reply));
        let leg = node.session().legs[INGRESS];
        assert_eq!(
            (leg.ifindex, leg.verdict, leg.rule_id),
            (node.db0, verdict::DENY, RULE_DEFAULT_DENY)
        );
        assert!(!node.web_to_db(TCP_ACK), "and it holds for web's packets");
    });
}

#[test]
fn a_leg_opened_by_a_reply_is_allowed_by_its_ingress_policy_not_denied_by_its_egress() {
    on_two_interfaces(|| {
        // db accepts web on 5432 and may open nothing itself.
        let node = Node::new(&format!("{DB_ALLOWS_WEB}  egress: []\n"));
        let syn = Frame::tcp(web4(), db4(), 40000, 5432, TCP_SYN);
        assert!(node.run(Hook::FromWorkload, node.web0, &syn));
        let reply = Frame::tcp(db4(), web4(), 5432, 40000, TCP_SYN | TCP_ACK);
        assert!(node.run(Hook::FromWorkload, node.db0, &reply));
        let leg = node.session().legs[INGRESS];
        assert_eq!(
            (leg.ifindex, leg.verdict, leg.rule_id),
            (
                node.db0,
                verdict::ALLOW,
                node.rule_id("db-ingress", Direction::Ingress)
            )
        );
    });
}

#[test]
fn a_packet_a_leg_drops_does_not_close_the_connection() {
    on_two_interfaces(|| {
        let mut node = Node::new(DB_ALLOWS_WEB);
        node.handshake();
        // Revoked: db's next packet is judged again and dropped.
        node.apply(DB_DENIES_ALL);
        assert!(!node.db_to_web(TCP_ACK));
        // web's RST passes web's leg but db's drops it: it must not close the session, or
        // db's next packet would open a new one, the other way, that db's egress allows.
        assert!(!node.web_to_db(TCP_RST));
        assert!(!node.web_to_db(TCP_FIN | TCP_ACK));
        let s = node.session();
        assert_eq!(s.state, session_state::ESTABLISHED);
        assert!(!node.db_to_web(TCP_ACK), "db's retransmission");
        let stats = node.dp.stats().unwrap();
        assert_eq!((stats.sessions_created, stats.sessions_closed), (1, 0));
        assert_eq!(node.dp.session_count(), 1);
    });
}

#[test]
fn a_rst_right_after_a_revocation_does_not_close_the_connection() {
    on_two_interfaces(|| {
        let mut node = Node::new(DB_ALLOWS_WEB);
        node.handshake();
        // Both legs still carry the old policy's verdict when web's RST arrives: web's leg
        // is judged again and passes it, db's is judged again and drops it.
        node.apply(DB_DENIES_ALL);
        assert!(!node.web_to_db(TCP_RST));
        assert_eq!(node.session().state, session_state::ESTABLISHED);
        assert!(!node.db_to_web(TCP_ACK), "db's next packet");
        assert_eq!(node.dp.session_count(), 1);
        assert_eq!(node.dp.stats().unwrap().sessions_created, 1);
    });
}

#[test]
fn a_packet_in_a_local_workloads_name_that_skipped_its_interface_moves_nothing() {
    on_two_interfaces(|| {
        let node = Node::new(DB_ALLOWS_WEB);
        node.handshake();
        // A RST and a FIN claiming to be web's, from outside the node: they reach db's
        // interface without passing web's. db's leg lets them in (its kernel checks
        // sequence numbers), but the session must not close or leave the table.
        for flags in [TCP_RST, TCP_FIN | TCP_ACK] {
            let forged = Frame::tcp(web4(), db4(), 40000, 5432, flags);
            node.run(Hook::ToWorkload, node.db0, &forged);
            assert_eq!(node.session().state, session_state::ESTABLISHED);
        }
        assert_eq!(node.dp.session_count(), 1);
        assert!(node.db_to_web(TCP_ACK));
        assert_eq!(node.dp.stats().unwrap().sessions_created, 1);
    });
}

/// The frames' acknowledgement number: both sides' SYNs are at 0, so an ACK acknowledges 1
/// (the SYN, or a FIN sent at 0); the receive-window check wants that of the SYN-ACK and
/// of the last ACK (docs/SECURITY.md, "TCP: the receive window").
fn ack(flags: u8) -> u32 {
    (flags & TCP_ACK != 0) as u32
}
