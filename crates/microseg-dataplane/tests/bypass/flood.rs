//! Session-table abuse (issue 22): a flood of new tuples, denied or from spoofed sources,
//! must not evict the sessions of established allowed connections. Measured on a 64-entry
//! table: 8 connections web → db established, then 10 times the table in new tuples to a
//! denied port from web and from addresses nobody owns, each SYN sent twice, all denied;
//! then each connection's packets must still pass both ways without being judged again.
//!
//! Today every judged tuple inserts a session, denied ones too, into the one LRU table, so
//! the flood evicts the established sessions; db's next packet is then judged as a
//! connection db opens, by db's egress policy (TCP 443 and UDP 53 only), and dropped
//! (docs/SECURITY.md, "What the data plane does not stop").

use microseg_dataplane::packet::*;

use crate::bypass_helpers::*;
use crate::common::*;

const TABLE: u32 = 64;
const CONNECTIONS: u16 = 8;

#[test]
fn a_flood_of_denied_tuples_does_not_evict_established_connections() {
    let env = Env::with_sessions(&with(POLICY), "db", TABLE);
    let web = |sport, flags, seq, ack| {
        Frame::tcp(web4(), db4(), sport, ALLOWED_TCP, flags).with_seq(seq, ack)
    };
    let db = |sport, flags, seq, ack| {
        Frame::tcp(db4(), web4(), ALLOWED_TCP, sport, flags).with_seq(seq, ack)
    };
    let ports = || (0..CONNECTIONS).map(|i| 45000 + i);
    for sport in ports() {
        assert_eq!(inn(&env, &web(sport, TCP_SYN, 0, 0)), Outcome::Passed);
        assert_eq!(
            out(&env, &db(sport, TCP_SYN | TCP_ACK, 0, 1)),
            Outcome::Passed
        );
        assert_eq!(inn(&env, &web(sport, TCP_ACK, 1, 1)), Outcome::Passed);
    }
    for i in 0..10 * TABLE {
        let (sport, hi, lo) = (1024 + i as u16, (i >> 8) as u8, i as u8);
        let from_web = Frame::tcp(web4(), db4(), sport, DENIED_TCP, TCP_SYN);
        let spoofed = Frame::tcp(ip(&format!("198.51.{hi}.{lo}")), db4(), sport, 80, TCP_SYN);
        // Each SYN sent again, as a client whose SYN got no answer does: the kernel's LRU
        // spares an entry looked up since it was inserted.
        for f in [&from_web, &from_web, &spoofed, &spoofed] {
            assert_eq!(inn(&env, f), Outcome::Denied);
        }
    }
    let misses = env.dp.stats().expect("stats").session_misses;
    for sport in ports() {
        assert_eq!(
            out(&env, &db(sport, TCP_ACK, 1, 1)),
            Outcome::Passed,
            "db {sport}"
        );
        assert_eq!(
            inn(&env, &web(sport, TCP_ACK, 1, 1)),
            Outcome::Passed,
            "web {sport}"
        );
    }
    assert_eq!(
        env.dp.stats().expect("stats").session_misses,
        misses,
        "judged again after the flood"
    );
}
