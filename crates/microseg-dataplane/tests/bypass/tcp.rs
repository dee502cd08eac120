//! TCP without a SYN to a denied port, and RST and FIN forged for existing connections.
//! (The state machine itself, and a dropped RST that closes nothing, are in
//! tests/sessions.rs and tests/two_local_workloads.rs.)
//!
//! Expected (docs/POLICY.md, "Connections are stateful"): a packet with no session is
//! judged as though it opens a connection in its own direction, whatever its flags, so a
//! mid-stream packet to a denied port is denied and leaves a denied session behind;
//! nothing it carries opens the way for a later packet.
//!
//! RST and FIN forged for an existing connection: a denied connection stays denied whatever
//! they do, a SYN after a RST is judged afresh, and a RST outside the window changes
//! nothing. The receive-window check itself (RST, FIN and the last ACK, wrap-around,
//! mid-stream pickup) is in tcp_window.rs.

use microseg_common::session_state as st;
use microseg_dataplane::packet::*;

use crate::bypass_helpers::*;
use crate::common::*;

const PSH: u8 = 0x08;
const URG: u8 = 0x20;

/// Every flag combination an attacker might open with instead of a plain SYN.
const OPENERS: [u8; 10] = [
    0,
    TCP_ACK,
    TCP_ACK | PSH,
    TCP_FIN,
    TCP_FIN | PSH | URG, // Xmas
    TCP_RST,
    TCP_RST | TCP_ACK,
    TCP_SYN | TCP_ACK,
    TCP_SYN | TCP_FIN,
    0xff,
];

#[test]
fn tcp_without_a_syn_to_a_denied_port_is_denied_and_opens_nothing() {
    let env = env();
    for (src, dst) in [(web4(), db4()), (web6(), db6())] {
        for (i, flags) in OPENERS.into_iter().enumerate() {
            let sport = 41000 + i as u16;
            let f = Frame::tcp(src, dst, sport, DENIED_TCP, flags);
            assert_eq!(inn(&env, &f), Outcome::Denied, "flags {flags:#04x}");
            // The connection stays denied: its SYN, and its packets after, too.
            let syn = Frame::tcp(src, dst, sport, DENIED_TCP, TCP_SYN);
            assert_eq!(inn(&env, &syn), Outcome::Denied, "SYN after {flags:#04x}");
            let ack = Frame::tcp(src, dst, sport, DENIED_TCP, TCP_ACK);
            assert_eq!(inn(&env, &ack), Outcome::Denied, "ACK after {flags:#04x}");
        }
        // A packet dressed as db's reply (from web's port 5432 to a port db never opened)
        // is a connection to that port: denied.
        let fake_reply = Frame::tcp(src, dst, ALLOWED_TCP, 40000, TCP_SYN | TCP_ACK);
        assert_eq!(inn(&env, &fake_reply), Outcome::Denied);
        // From a peer that is not web, even to the allowed port.
        let stranger = if src.is_ipv4() {
            ip("10.1.0.50")
        } else {
            ip("fd00::50")
        };
        let f = Frame::tcp(stranger, dst, 40000, ALLOWED_TCP, TCP_ACK);
        assert_eq!(inn(&env, &f), Outcome::Denied, "mid-stream from a stranger");
    }
    // Mid-stream to the allowed port from web is picked up as established (an agent
    // restart loses only the table), and its replies pass.
    assert_eq!(inn(&env, &web_to_db(TCP_ACK)), Outcome::Passed);
    assert_eq!(out(&env, &db_to_web(TCP_ACK)), Outcome::Passed);
}

fn state(env: &Env, sport: u16, dport: u16) -> u8 {
    env.dp
        .session_for(6, web4(), sport, db4(), dport)
        .expect("session")
        .1
        .state
}

#[test]
fn a_forged_rst_or_fin_on_a_denied_connection_lets_nothing_through() {
    let env = env();
    for (i, forged) in [TCP_RST, TCP_FIN, TCP_RST | TCP_ACK]
        .into_iter()
        .enumerate()
    {
        let sport = 43000 + i as u16;
        let web = |flags| Frame::tcp(web4(), db4(), sport, DENIED_TCP, flags);
        assert_eq!(inn(&env, &web(TCP_SYN)), Outcome::Denied);
        assert_eq!(
            inn(&env, &web(forged)),
            Outcome::Denied,
            "forged {forged:#04x}"
        );
        // Whatever state that left, the next SYN and the packets after it are denied.
        assert_eq!(
            inn(&env, &web(TCP_SYN)),
            Outcome::Denied,
            "SYN after {forged:#04x}"
        );
        assert_eq!(inn(&env, &web(TCP_ACK)), Outcome::Denied);
        // And db's answer in that connection's name is judged by db's egress policy
        // (TCP 443 only), not let out as a reply.
        let answer = Frame::tcp(db4(), web4(), DENIED_TCP, sport, TCP_SYN | TCP_ACK);
        assert_eq!(out(&env, &answer), Outcome::Denied);
    }
}

/// After a forged RST closed an allowed connection, a new SYN on its ports is judged
/// afresh: still allowed from web, and a policy that now denies it is obeyed.
#[test]
fn a_syn_after_a_forged_rst_is_judged_by_the_current_policy() {
    let mut env = env();
    assert_eq!(inn(&env, &web_to_db(TCP_SYN)), Outcome::Passed);
    assert_eq!(inn(&env, &web_to_db(TCP_RST)), Outcome::Passed);
    assert_eq!(inn(&env, &web_to_db(TCP_SYN)), Outcome::Passed);
    assert_eq!(inn(&env, &web_to_db(TCP_RST)), Outcome::Passed);
    env.reapply(&with(DB_DENIES_ALL));
    assert_eq!(inn(&env, &web_to_db(TCP_SYN)), Outcome::Denied);
    assert_eq!(inn(&env, &web_to_db(TCP_ACK)), Outcome::Denied);
}

/// `f` with sequence number `seq` and acknowledgement `ack`.
fn tcp_seq(f: Frame, seq: u32, ack: u32) -> Frame {
    let mut f = f;
    f.l4[4..8].copy_from_slice(&seq.to_be_bytes());
    f.l4[8..12].copy_from_slice(&ack.to_be_bytes());
    f
}

/// A RST far outside the window, forged in web's name, changes nothing, and the
/// connection goes on both ways. Without the window check it closed the session; db's ACK
/// then ended it, and db's next packet was judged as a connection db opens to web, which
/// db's egress policy denies, and that denied session then dropped web's packets too.
#[test]
fn a_forged_rst_out_of_the_window_changes_nothing() {
    let env = env();
    let web = |flags, seq, ack| tcp_seq(web_to_db(flags), seq, ack);
    let db = |flags, seq, ack| tcp_seq(db_to_web(flags), seq, ack);
    assert_eq!(inn(&env, &web(TCP_SYN, 1000, 0)), Outcome::Passed);
    assert_eq!(
        out(&env, &db(TCP_SYN | TCP_ACK, 5000, 1001)),
        Outcome::Passed
    );
    assert_eq!(inn(&env, &web(TCP_ACK, 1001, 5001)), Outcome::Passed);
    assert_eq!(inn(&env, &web(TCP_RST, 0x8000_0000, 0)), Outcome::Passed);
    assert_eq!(
        state(&env, 40000, ALLOWED_TCP),
        st::ESTABLISHED,
        "forged RST"
    );
    for i in 0..3 {
        assert_eq!(
            out(&env, &db(TCP_ACK, 5001 + i, 1001)),
            Outcome::Passed,
            "db {i}"
        );
    }
    assert_eq!(inn(&env, &web(TCP_ACK, 1001, 5004)), Outcome::Passed, "web");
}
