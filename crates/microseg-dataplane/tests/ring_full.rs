//! A full event ring loses events, never verdicts (docs/SECURITY.md, "Threat model"): a
//! workload that floods new denied tuples faster than the agent reads can blind the flow
//! record for a moment, and every lost event is counted, but each packet is still judged.

mod common;

use common::*;
use microseg_dataplane::{packet::*, Dataplane, LoadOptions};
use microseg_policy::compile::{Compiler, LocalEndpoint};

/// The smallest ring the kernel takes: one page, room for about 30 events.
const RING_BYTES: u32 = 4096;
const FLOOD: u16 = 500;

fn env_with_a_small_ring() -> Env {
    let mut dp = Dataplane::load(&LoadOptions {
        sessions: 4096,
        events_bytes: RING_BYTES,
        ..Default::default()
    })
    .expect("load the data plane");
    let mut compiler = Compiler::new();
    let compiled = compiler.compile(
        &resources(&with(DB_ALLOWS_WEB)),
        &[LocalEndpoint {
            workload: "db".into(),
            ifindex: LO,
        }],
    );
    dp.apply(&compiled.tables).expect("apply");
    Env {
        dp,
        compiler,
        compiled,
        local: "db".into(),
    }
}

#[test]
fn a_full_event_ring_loses_events_but_every_packet_is_judged() {
    let mut env = env_with_a_small_ring();
    let lost_before = env.dp.stats().unwrap().events_lost;

    // Nobody reads the ring meanwhile: each denied SYN opens a session and sends its event.
    for sport in 0..FLOOD {
        let syn = Frame::tcp(web4(), db4(), 20000 + sport, 6000, TCP_SYN);
        assert!(
            !into_db(&env, &syn),
            "denied SYN from port {}",
            20000 + sport
        );
    }
    let lost = env.dp.stats().unwrap().events_lost - lost_before;
    let kept = env.new_events().len() as u64;
    assert!(kept > 0 && kept < FLOOD as u64, "kept {kept} of {FLOOD}");
    assert_eq!(
        kept + lost,
        FLOOD as u64,
        "every event is either kept or counted lost"
    );

    // The allowed connection still opens and its replies pass, with the ring full or not.
    let syn = Frame::tcp(web4(), db4(), 41000, 5432, TCP_SYN);
    assert!(into_db(&env, &syn));
    let synack = Frame::tcp(db4(), web4(), 5432, 41000, TCP_SYN | TCP_ACK).with_seq(0, 1);
    assert!(from_db(&env, &synack));
    let ack = Frame::tcp(web4(), db4(), 41000, 5432, TCP_ACK).with_seq(1, 1);
    assert!(into_db(&env, &ack));
    // And the flood's tuples stay denied once the ring has room again.
    let again = Frame::tcp(web4(), db4(), 20000, 6000, TCP_ACK);
    assert!(!into_db(&env, &again));
}
