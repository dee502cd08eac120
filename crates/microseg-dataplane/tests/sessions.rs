//! How a verdict is reached (docs/POLICY.md, "Connections are stateful"), through the
//! kernel: sessions. A policy change re-judges the flows it concerns (and an unchanged
//! policy keeps its generation); replies and ICMP errors pass with their session; TCP and
//! UDP sessions walk their states and report their end; a SYN on a closed session is judged
//! again; deny events of a session are rate limited.

mod common;

use common::*;
use microseg_dataplane::{common::*, packet::*, Hook};
use microseg_policy::Direction::Ingress;

/// `f`, an answer to a SYN with sequence number 0 (as the frames' default is): it
/// acknowledges the SYN, as the receive-window check wants (docs/SECURITY.md, "TCP").
fn syn_ack(f: Frame) -> Frame {
    f.with_seq(0, 1)
}

/// The session of the TCP connection web:40000 → db:5432, which must exist.
fn web_db_session(env: &Env) -> Session {
    env.dp
        .session_for(6, web4(), 40000, db4(), 5432)
        .expect("session")
        .1
}

#[test]
fn revoking_an_allow_cuts_an_established_connection() {
    let mut env = Env::new(&with(DB_ALLOWS_WEB), "db");
    assert!(into_db(&env, &web_to_db(TCP_SYN)));
    assert!(from_db(&env, &syn_ack(db_to_web(TCP_SYN | TCP_ACK))));
    assert!(into_db(&env, &web_to_db(TCP_ACK).with_seq(1, 1)));
    let s = web_db_session(&env);
    assert_eq!(s.state, session_state::ESTABLISHED);
    env.dp.drain_events();
    assert_eq!(env.dp.stats().unwrap().rejudged, 0);

    env.reapply(&with(DB_DENIES_ALL));
    assert!(
        !into_db(&env, &web_to_db(TCP_ACK)),
        "revoked connection still passes"
    );
    assert_eq!(env.dp.stats().unwrap().rejudged, 1);
    assert_eq!(verdict_of(&mut env), (verdict::DENY, RULE_DEFAULT_DENY));
    // Both directions are cut, and the session stays judged: no second re-judgement.
    assert!(!from_db(&env, &db_to_web(TCP_ACK)));
    assert_eq!(env.dp.stats().unwrap().rejudged, 1);
    let s = web_db_session(&env);
    assert_eq!(s.legs[direction::INGRESS as usize].verdict, verdict::DENY);
}

#[test]
fn granting_an_allow_lets_a_denied_flow_through() {
    let mut env = Env::reporting(&with(DB_DENIES_ALL), "db");
    let syn = web_to_db(TCP_SYN);
    assert!(!into_db(&env, &syn));
    assert!(!into_db(&env, &syn), "retransmission of a denied SYN");
    env.reapply(&with(DB_ALLOWS_WEB));
    assert!(
        into_db(&env, &syn),
        "denied flow still dropped after the allow"
    );
    assert_eq!(env.dp.stats().unwrap().rejudged, 1);
    let ev = env.new_events();
    let last = ev.last().expect("event on re-judgement");
    assert_eq!(
        (last.verdict, last.rule_id),
        (verdict::ALLOW, env.rule_id("db-ingress", Ingress, 0))
    );
    // Re-applying an unchanged policy keeps the generation: nothing is judged again.
    let same = with(DB_ALLOWS_WEB);
    let generation = env.dp.config().unwrap().generation;
    env.reapply(&same);
    assert_eq!(env.dp.config().unwrap().generation, generation);
    assert!(from_db(&env, &db_to_web(TCP_SYN | TCP_ACK)));
    assert_eq!(env.dp.stats().unwrap().rejudged, 1);
}

#[test]
fn replies_of_allowed_connections_pass_a_closed_direction() {
    let env = Env::new(
        &with(
            r#"apiVersion: microseg.io/v1
kind: Policy
metadata: {name: db}
spec:
  selector: {matchLabels: {app: db}}
  ingress: [{action: allow, ports: [{protocol: TCP, port: 5432}, {protocol: UDP, port: 53}, {protocol: ICMP}, {protocol: ICMPv6}]}]
  egress: []
"#,
        ),
        "db",
    );
    assert!(
        !from_db(&env, &db_to_web(TCP_SYN | TCP_ACK)),
        "egress is closed"
    );
    assert!(into_db(
        &env,
        &Frame::tcp(web4(), db4(), 40001, 5432, TCP_SYN)
    ));
    assert!(
        from_db(
            &env,
            &syn_ack(Frame::tcp(db4(), web4(), 5432, 40001, TCP_SYN | TCP_ACK))
        ),
        "TCP reply"
    );
    assert!(into_db(&env, &Frame::udp(web6(), db6(), 40002, 53)));
    assert!(
        from_db(&env, &Frame::udp(db6(), web6(), 53, 40002)),
        "UDP reply"
    );
    assert!(
        !from_db(&env, &Frame::udp(db6(), web6(), 53, 40003)),
        "not a reply: other port"
    );
    assert!(into_db(&env, &Frame::echo_request(web4(), db4(), 77)));
    assert!(
        from_db(&env, &Frame::echo_reply(db4(), web4(), 77)),
        "echo reply"
    );
    assert!(
        !from_db(&env, &Frame::echo_reply(db4(), web4(), 78)),
        "echo reply of another id"
    );
    assert!(into_db(&env, &Frame::echo_request(web6(), db6(), 5)));
    assert!(
        from_db(&env, &Frame::echo_reply(db6(), web6(), 5)),
        "ICMPv6 echo reply"
    );
}

/// db may call out on TCP 443 and UDP 53 and accepts nothing.
fn db_calling_out() -> Env {
    Env::new(
        &with(
            r#"apiVersion: microseg.io/v1
kind: Policy
metadata: {name: db}
spec:
  selector: {matchLabels: {app: db}}
  ingress: []
  egress: [{action: allow, ports: [{protocol: TCP, port: 443}, {protocol: UDP, port: 53}]}]
"#,
        ),
        "db",
    )
}

#[test]
fn icmp_errors_about_an_allowed_session_pass() {
    let env = db_calling_out();
    let router4 = ip("10.1.0.1");
    let router6 = ip("fd00::1");
    let out4 = Frame::tcp(db4(), ip("192.0.2.10"), 40000, 443, TCP_SYN);
    let out6 = Frame::udp(db6(), ip("2001:db8::10"), 40000, 53);
    assert!(from_db(&env, &out4));
    assert!(from_db(&env, &out6));
    // Errors about them come in from someone else (a router): they pass with the session.
    assert!(
        into_db(&env, &Frame::icmp_unreachable(router4, db4(), &out4)),
        "ICMP unreachable"
    );
    assert!(
        into_db(&env, &Frame::icmp_unreachable(router6, db6(), &out6)),
        "ICMPv6 unreachable"
    );
    // Packet too big and time exceeded too.
    let mut ptb = Frame::icmp_unreachable(router6, db6(), &out6);
    ptb.l4[0] = 2;
    assert!(into_db(&env, &ptb), "ICMPv6 packet too big");
    let mut te = Frame::icmp_unreachable(router4, db4(), &out4);
    te.l4[0] = 11;
    assert!(into_db(&env, &te), "ICMP time exceeded");
    assert_eq!(env.dp.stats().unwrap().icmp_related, 4);
    // The same errors about connections that do not exist are judged by policy: ingress denies.
    let other4 = Frame::tcp(db4(), ip("192.0.2.10"), 40001, 443, TCP_SYN);
    let other6 = Frame::udp(db6(), ip("2001:db8::10"), 40001, 53);
    assert!(!into_db(
        &env,
        &Frame::icmp_unreachable(router4, db4(), &other4)
    ));
    assert!(!into_db(
        &env,
        &Frame::icmp_unreachable(router6, db6(), &other6)
    ));
    // And about a denied connection.
    let denied = Frame::tcp(db4(), ip("192.0.2.10"), 40002, 80, TCP_SYN);
    assert!(!from_db(&env, &denied));
    assert!(!into_db(
        &env,
        &Frame::icmp_unreachable(router4, db4(), &denied)
    ));
    assert_eq!(env.dp.stats().unwrap().icmp_related, 4);
}

#[test]
fn an_icmp_error_passes_only_back_to_the_sender_of_what_it_quotes() {
    let env = db_calling_out();
    let resolver = ip("192.0.2.53");
    assert!(from_db(&env, &Frame::udp(db4(), resolver, 40000, 53)));
    // What db received on that connection, as an error db sends would quote it.
    let answer = Frame::udp(resolver, db4(), 53, 40000);
    assert!(
        from_db(&env, &Frame::icmp_unreachable(db4(), resolver, &answer)),
        "an error back to the resolver"
    );
    // The same quote carried anywhere else is no error about that connection: egress
    // policy decides, and it allows no ICMP.
    assert!(!from_db(
        &env,
        &Frame::icmp_unreachable(db4(), ip("203.0.113.7"), &answer)
    ));
    // Nor may it leave with an address db does not own.
    assert!(!from_db(
        &env,
        &Frame::icmp_unreachable(ip("10.1.0.99"), resolver, &answer)
    ));
    // Coming in, an error must be addressed to the sender of what it quotes: db.
    assert!(!into_db(
        &env,
        &Frame::icmp_unreachable(ip("10.1.0.1"), db4(), &answer)
    ));
    let s = env.dp.stats().unwrap();
    assert_eq!((s.icmp_related, s.spoofed), (1, 1));
}

#[test]
fn an_unrelated_icmp_error_does_not_hide_the_related_ones_after_it() {
    let env = db_calling_out();
    for (router, peer) in [
        (ip("10.1.0.1"), ip("192.0.2.10")),
        (ip("fd00::1"), ip("2001:db8::10")),
    ] {
        let db = if router.is_ipv4() { db4() } else { db6() };
        let out = Frame::tcp(db, peer, 40000, 443, TCP_SYN);
        assert!(from_db(&env, &out));
        // An error about a connection db never made is judged by policy: denied...
        let other = Frame::tcp(db, peer, 40009, 443, TCP_SYN);
        assert!(!into_db(&env, &Frame::icmp_unreachable(router, db, &other)));
        // ...and leaves nothing behind that would drop the router's next, related error
        // (packet too big, for IPv6) before its relation is checked.
        let mut related = Frame::icmp_unreachable(router, db, &out);
        if !router.is_ipv4() {
            related.l4[0] = 2;
        }
        assert!(into_db(&env, &related), "related error from {router}");
        assert!(into_db(&env, &related), "and again");
    }
    assert_eq!(env.dp.stats().unwrap().icmp_related, 4);
}

#[test]
fn an_icmp_error_needs_its_connection_judged_under_the_current_policy() {
    let mut env = db_calling_out();
    let (router, peer) = (ip("10.1.0.1"), ip("192.0.2.10"));
    let out = Frame::tcp(db4(), peer, 40000, 443, TCP_SYN);
    assert!(from_db(&env, &out));
    let error = Frame::icmp_unreachable(router, db4(), &out);
    assert!(into_db(&env, &error));
    let egress = |ports: &str| {
        with(&format!(
            r#"apiVersion: microseg.io/v1
kind: Policy
metadata: {{name: db}}
spec:
  selector: {{matchLabels: {{app: db}}}}
  ingress: []
  egress: [{{action: allow, ports: [{ports}]}}]
"#
        ))
    };
    // Revoked: the connection's leg still holds its old allow until its next packet, and
    // errors about it no longer pass on that.
    env.reapply(&egress("{protocol: UDP, port: 53}"));
    assert!(!into_db(&env, &error), "error about a revoked connection");
    // Still allowed by a changed policy: errors are judged by policy (ingress denies)
    // until a packet of the connection judges it again, and then pass with it.
    env.reapply(&egress(
        "{protocol: TCP, port: 443}, {protocol: TCP, port: 8443}",
    ));
    assert!(!into_db(&env, &error));
    assert!(from_db(&env, &Frame::tcp(db4(), peer, 40000, 443, TCP_ACK)));
    assert!(into_db(&env, &error), "judged again, allowed");
    assert_eq!(env.dp.stats().unwrap().icmp_related, 2);
}

#[test]
fn tcp_sessions_walk_the_state_machine_and_report_their_end() {
    let mut env = Env::new(&with(DB_ALLOWS_WEB), "db");
    let state = |env: &Env, sport| {
        env.dp
            .session_for(6, web4(), sport, db4(), 5432)
            .map(|(_, s)| s.state)
    };
    // ISNs 0 both ways: after the handshake each side is at 1, after its FIN at 2.
    let c2s = |sport, flags| Frame::tcp(web4(), db4(), sport, 5432, flags).with_seq(1, 1);
    let s2c = |sport, flags| Frame::tcp(db4(), web4(), 5432, sport, flags).with_seq(1, 1);
    let syn = |sport| Frame::tcp(web4(), db4(), sport, 5432, TCP_SYN);
    let mut bytes = 0u64;
    let mut send = |env: &Env, hook, f: Frame| {
        bytes += f.bytes().len() as u64;
        assert!(passes(env, hook, &f.bytes()));
    };
    send(&env, Hook::ToWorkload, syn(40000));
    assert_eq!(state(&env, 40000), Some(session_state::SYN_SENT));
    send(
        &env,
        Hook::FromWorkload,
        s2c(40000, TCP_SYN | TCP_ACK).with_seq(0, 1),
    );
    assert_eq!(state(&env, 40000), Some(session_state::SYN_RECV));
    send(&env, Hook::ToWorkload, c2s(40000, TCP_ACK));
    assert_eq!(state(&env, 40000), Some(session_state::ESTABLISHED));
    send(&env, Hook::FromWorkload, s2c(40000, TCP_ACK));
    send(&env, Hook::ToWorkload, c2s(40000, TCP_FIN | TCP_ACK));
    assert_eq!(state(&env, 40000), Some(session_state::CLOSING));
    let ev = env.dp.drain_events();
    assert!(
        ev.is_empty(),
        "an allowed connection is reported at its end: {ev:?}"
    );
    send(&env, Hook::FromWorkload, s2c(40000, TCP_FIN | TCP_ACK));
    assert_eq!(state(&env, 40000), Some(session_state::CLOSED));
    let ev = env.dp.drain_events();
    assert_eq!(ev.len(), 1, "{ev:?}");
    let end = ev[0];
    assert_eq!(end.kind, event_kind::END);
    assert_eq!((end.packets, end.bytes), (6, bytes));
    assert_eq!(
        (end.src_port, end.dst_port, end.direction, end.other.ifindex),
        (40000, 5432, direction::INGRESS, 0)
    );
    assert!(end.start_ns <= end.time_ns);
    assert_eq!(tables::words_addr(end.src_addr), web4());
    // A FIN sent again does not close it twice.
    assert!(from_db(&env, &s2c(40000, TCP_FIN | TCP_ACK)));
    assert!(env.dp.drain_events().is_empty());
    // The originator's ACK of the second FIN is the last packet: it passes, ends nothing
    // twice, and takes the session out of the table.
    assert!(into_db(&env, &c2s(40000, TCP_ACK).with_seq(2, 2)));
    assert!(env.dp.drain_events().is_empty());
    assert_eq!(state(&env, 40000), None, "removed by its last packet");
    assert_eq!(env.dp.stats().unwrap().sessions_closed, 1);

    // RST closes at once, and is the last packet.
    assert!(into_db(&env, &syn(40001)));
    assert!(from_db(&env, &s2c(40001, TCP_RST | TCP_ACK).with_seq(0, 1)));
    assert_eq!(state(&env, 40001), None);
    let ev = env.dp.drain_events();
    let ends: Vec<_> = ev.iter().filter(|e| e.kind == event_kind::END).collect();
    assert_eq!(ends.len(), 1, "{ev:?}");
    assert_eq!(ends[0].packets, 2);
    assert_eq!(env.dp.stats().unwrap().sessions_closed, 2);

    // A RST from outside closes the session but leaves it: it may be forged.
    assert!(into_db(&env, &syn(40002)));
    assert!(into_db(&env, &c2s(40002, TCP_RST)));
    assert_eq!(state(&env, 40002), Some(session_state::CLOSED));
    assert_eq!(env.dp.stats().unwrap().sessions_closed, 2);
}

#[test]
fn the_side_that_closes_first_sends_the_last_packet() {
    let env = Env::new(&with(DB_ALLOWS_WEB), "db");
    let alive = |sport| env.dp.session_for(6, web4(), sport, db4(), 5432).is_some();
    // ISNs 0 both ways: each FIN is at 1; the ACKs after both FINs are at 2 and ack 2.
    let c2s = |sport, flags| Frame::tcp(web4(), db4(), sport, 5432, flags).with_seq(1, 1);
    let s2c = |sport, flags| Frame::tcp(db4(), web4(), 5432, sport, flags).with_seq(1, 1);
    let after = |f: Frame| f.with_seq(2, 2);
    for (sport, db_closes_first) in [(40010, true), (40011, false)] {
        let syn = Frame::tcp(web4(), db4(), sport, 5432, TCP_SYN);
        assert!(into_db(&env, &syn));
        assert!(from_db(&env, &syn_ack(s2c(sport, TCP_SYN | TCP_ACK))));
        assert!(into_db(&env, &c2s(sport, TCP_ACK)));
        let (first, second) = if db_closes_first {
            (
                from_db(&env, &s2c(sport, TCP_FIN | TCP_ACK)),
                into_db(&env, &c2s(sport, TCP_FIN | TCP_ACK)),
            )
        } else {
            (
                into_db(&env, &c2s(sport, TCP_FIN | TCP_ACK)),
                from_db(&env, &s2c(sport, TCP_FIN | TCP_ACK)),
            )
        };
        assert!(first && second);
        // An ACK from the side that sent the second FIN is not the last packet.
        let not_last = if db_closes_first {
            into_db(&env, &after(c2s(sport, TCP_ACK)))
        } else {
            from_db(&env, &after(s2c(sport, TCP_ACK)))
        };
        assert!(
            not_last && alive(sport),
            "port {sport}: kept until the last ACK"
        );
        let last = if db_closes_first {
            from_db(&env, &after(s2c(sport, TCP_ACK)))
        } else {
            into_db(&env, &after(c2s(sport, TCP_ACK)))
        };
        assert!(
            last && !alive(sport),
            "port {sport}: removed by the last ACK"
        );
    }
    // A packet after the last is judged afresh, here by db's ingress: allowed.
    assert!(into_db(&env, &c2s(40011, TCP_ACK)));
}

#[test]
fn udp_sessions_are_established_by_a_reply() {
    let env = Env::new(WORKLOADS, "db");
    assert!(from_db(&env, &Frame::udp(db4(), web4(), 40000, 53)));
    let st = |env: &Env| {
        env.dp
            .session_for(17, db4(), 40000, web4(), 53)
            .expect("session")
            .1
    };
    assert_eq!(st(&env).state, session_state::NEW);
    assert!(from_db(&env, &Frame::udp(db4(), web4(), 40000, 53)));
    assert_eq!(
        st(&env).state,
        session_state::NEW,
        "more requests keep it new"
    );
    assert!(into_db(&env, &Frame::udp(web4(), db4(), 53, 40000)));
    let s = st(&env);
    assert_eq!(s.state, session_state::ESTABLISHED);
    assert_eq!(s.packets, [2, 1]);
}

#[test]
fn a_syn_on_a_closed_session_is_judged_again() {
    let mut env = Env::reporting(&with(DB_ALLOWS_WEB), "db");
    assert!(into_db(&env, &web_to_db(TCP_SYN)));
    assert!(from_db(&env, &syn_ack(db_to_web(TCP_RST | TCP_ACK))));
    env.dp.drain_events();
    let misses = env.dp.stats().unwrap().session_misses;
    assert!(into_db(&env, &web_to_db(TCP_SYN)));
    assert_eq!(
        env.dp.stats().unwrap().session_misses,
        misses + 1,
        "the SYN went to the policy"
    );
    assert_eq!(
        verdict_of(&mut env),
        (verdict::ALLOW, env.rule_id("db-ingress", Ingress, 0))
    );
    let s = web_db_session(&env);
    assert_eq!(
        (
            s.state,
            s.packets,
            s.legs[direction::INGRESS as usize].flags & leg_flags::ENDED
        ),
        (session_state::SYN_SENT, [1, 0], 0)
    );
    // A closed session's ports reused after a policy change are judged by the new policy.
    assert!(from_db(&env, &syn_ack(db_to_web(TCP_RST | TCP_ACK))));
    env.reapply(&with(DB_DENIES_ALL));
    assert!(!into_db(&env, &web_to_db(TCP_SYN)));
}

#[test]
fn deny_events_of_a_session_are_rate_limited() {
    let mut env = Env::new(&with(DB_DENIES_ALL), "db");
    let syn = web_to_db(TCP_SYN);
    for _ in 0..5 {
        assert!(!into_db(&env, &syn));
    }
    let ev = env.dp.drain_events();
    assert_eq!(ev.len(), 1, "one event per session per second: {ev:?}");
    assert_eq!(
        (ev[0].kind, ev[0].verdict),
        (event_kind::NEW, verdict::DENY)
    );
    assert_eq!(env.dp.stats().unwrap().denied(), 5);

    // A second on (the limit is 1.007-1.074 s, in ticks of 67 ms), the next packet reports.
    std::thread::sleep(std::time::Duration::from_millis(1_150));
    assert!(!into_db(&env, &syn));
    assert!(!into_db(&env, &syn));
    let ev = env.dp.drain_events();
    assert_eq!(
        ev.iter().map(|e| (e.kind, e.verdict)).collect::<Vec<_>>(),
        [(event_kind::DENY, verdict::DENY)],
        "one deny event a second later"
    );
}
