//! Tuples every local leg denies live apart from the sessions, in an LRU of their own
//! (`MSEG_DENIED`, docs/SECURITY.md "Floods of new tuples"): they keep what their entry is
//! for (deny events at most once a second, its counters) and cannot evict an allowed
//! session; after a policy change its next packet is judged again, and one that is now
//! allowed becomes a session.

mod common;

use common::*;
use microseg_dataplane::{common::*, packet::*};

const SECOND_AND_A_BIT: std::time::Duration = std::time::Duration::from_millis(1_150);

/// db accepts nobody, under another rule than [`DB_DENIES_ALL`]'s default deny.
const DB_DENIES_WEB: &str = r#"apiVersion: microseg.io/v1
kind: Policy
metadata: {name: db-ingress}
spec:
  selector: {matchLabels: {app: db}}
  ingress: [{action: deny, from: [{selector: {matchLabels: {app: web}}}]}]
"#;

fn kinds(ev: &[FlowEvent]) -> Vec<(u8, u8)> {
    ev.iter().map(|e| (e.kind, e.verdict)).collect()
}

#[test]
fn a_denied_tuple_is_kept_apart_and_its_deny_events_stay_one_a_second() {
    let mut env = Env::new(&with(DB_DENIES_ALL), "db");
    let syn = web_to_db(TCP_SYN);
    for _ in 0..5 {
        assert!(!into_db(&env, &syn));
    }
    assert_eq!(
        kinds(&env.dp.drain_events()),
        [(event_kind::NEW, verdict::DENY)]
    );
    assert!(
        env.dp.sessions().is_empty(),
        "no session for a denied tuple"
    );
    let (_, entry) = env
        .dp
        .denied_for(proto::TCP, web4(), 40000, db4(), 5432)
        .expect("the denied tuple's entry");
    assert_eq!(entry.packets, [5, 0]);
    let st = env.dp.stats().unwrap();
    assert_eq!(
        (st.session_misses, st.session_hits, st.sessions_created),
        (1, 4, 0),
        "the repeats found its entry"
    );

    // Judged again under a policy that denies it by another rule: one NEW event at once,
    // as a session's leg sends, then again at most one a second. Its entry keeps counting.
    env.reapply(&with(DB_DENIES_WEB));
    let rule = env.rule_id("db-ingress", microseg_policy::Direction::Ingress, 0);
    assert!(!into_db(&env, &syn));
    assert!(!into_db(&env, &syn));
    let ev = env.dp.drain_events();
    assert_eq!(kinds(&ev), [(event_kind::NEW, verdict::DENY)]);
    assert_eq!(ev[0].rule_id, rule);
    std::thread::sleep(SECOND_AND_A_BIT);
    assert!(!into_db(&env, &syn));
    assert!(!into_db(&env, &syn));
    let ev = env.dp.drain_events();
    assert_eq!(kinds(&ev), [(event_kind::DENY, verdict::DENY)]);
    assert_eq!(ev[0].rule_id, rule);
    assert!(env.dp.sessions().is_empty());
    let (_, entry) = env
        .dp
        .denied_for(proto::TCP, web4(), 40000, db4(), 5432)
        .expect("the denied tuple's entry");
    assert_eq!(entry.packets, [9, 0]);
}

#[test]
fn a_policy_change_that_allows_a_denied_tuple_lets_its_next_packet_through() {
    let mut env = Env::new(&with(DB_DENIES_ALL), "db");
    assert!(!into_db(&env, &web_to_db(TCP_SYN)));
    assert_eq!(env.dp.denied_sessions().len(), 1);

    env.reapply(&with(DB_ALLOWS_WEB));
    assert!(into_db(&env, &web_to_db(TCP_SYN)), "judged again: allowed");
    assert!(from_db(&env, &db_to_web(TCP_SYN | TCP_ACK).with_seq(0, 1)));
    assert!(into_db(&env, &web_to_db(TCP_ACK).with_seq(1, 1)));
    let (_, s) = env
        .dp
        .session_for(proto::TCP, web4(), 40000, db4(), 5432)
        .expect("an allowed session");
    assert_eq!(s.state, session_state::ESTABLISHED);
    assert_eq!(s.legs[direction::INGRESS as usize].verdict, verdict::ALLOW);
    assert!(env.dp.denied_sessions().is_empty(), "the denied entry went");

    // And back: denied again, the session judges it (it has a leg that allowed).
    env.reapply(&with(DB_DENIES_ALL));
    assert!(!into_db(&env, &web_to_db(TCP_ACK).with_seq(1, 1)));
    assert!(env.dp.denied_sessions().is_empty());
}

#[test]
fn the_denied_table_is_bounded_by_its_own_capacity() {
    const DENIED: u32 = 256;
    let env = Env::with_tables(&with(DB_DENIES_ALL), "db", 64, DENIED);
    for sport in 0..4 * DENIED as u16 {
        let syn = Frame::tcp(web4(), db4(), 20000 + sport, 5432, TCP_SYN);
        assert!(!into_db(&env, &syn));
    }
    let held = env.dp.denied_sessions().len();
    assert!(0 < held && held <= DENIED as usize, "{held} entries");
    assert!(env.dp.sessions().is_empty());
}
