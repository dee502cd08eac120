//! RST, FIN and the last ACK count only inside the receive window (docs/SECURITY.md, "TCP").
//!
//! Expected: a RST or FIN whose sequence number lies outside the window its receiver
//! advertised (in either direction of the end of what its sender sent, modulo 2^32), and an
//! ACK that does not acknowledge the second FIN, pass with the session's verdict (the
//! receiver's stack drops them) but change nothing: the session stays, and the connection's
//! packets keep passing both ways without being judged again. The same packets with the
//! right numbers close the session as before. Each side's position is learnt from its first
//! segment: the SYN, the SYN-ACK (only one that acknowledges the SYN) or, for a session
//! picked up mid-stream, whatever comes first.
//!
//! web (10.1.0.2, remote) opens to db (local) on TCP 5432; `inn` is web's packet reaching
//! db, `out` db's leaving it. Frames carry a 64240-byte raw window, unscaled unless both
//! SYNs carry the window scale option (RFC 7323).

use microseg_common::{session_state as st, Session};
use microseg_dataplane::packet::*;

use crate::bypass_helpers::*;
use crate::common::*;

const WEB_ISN: u32 = 1000;
const DB_ISN: u32 = 5000;
/// The window the frames advertise.
const WINDOW: u32 = 64240;

fn web(sport: u16, flags: u8, seq: u32, ack: u32) -> Frame {
    Frame::tcp(web4(), db4(), sport, ALLOWED_TCP, flags).with_seq(seq, ack)
}

fn db(sport: u16, flags: u8, seq: u32, ack: u32) -> Frame {
    Frame::tcp(db4(), web4(), ALLOWED_TCP, sport, flags).with_seq(seq, ack)
}

fn session(env: &Env, sport: u16) -> Option<Session> {
    env.dp
        .session_for(6, web4(), sport, db4(), ALLOWED_TCP)
        .map(|(_, s)| s)
}

fn state(env: &Env, sport: u16) -> u8 {
    session(env, sport).expect("session").state
}

/// SYN, SYN-ACK, ACK with the given initial sequence numbers; then web sends `data` bytes.
/// Returns (web's next sequence number, db's).
fn open(env: &Env, sport: u16, web_isn: u32, db_isn: u32, data: usize) -> (u32, u32) {
    let (w, d) = (web_isn.wrapping_add(1), db_isn.wrapping_add(1));
    assert_eq!(inn(env, &web(sport, TCP_SYN, web_isn, 0)), Outcome::Passed);
    assert_eq!(
        out(env, &db(sport, TCP_SYN | TCP_ACK, db_isn, w)),
        Outcome::Passed
    );
    assert_eq!(inn(env, &web(sport, TCP_ACK, w, d)), Outcome::Passed);
    assert_eq!(state(env, sport), st::ESTABLISHED);
    if data == 0 {
        return (w, d);
    }
    let push = web(sport, TCP_ACK, w, d).with_payload(data);
    assert_eq!(inn(env, &push), Outcome::Passed);
    let w = w.wrapping_add(data as u32);
    assert_eq!(out(env, &db(sport, TCP_ACK, d, w)), Outcome::Passed);
    (w, d)
}

/// The connection still works both ways, without a new judgement (the policy would deny
/// db's packet judged as a connection db opens).
fn still_open(env: &Env, sport: u16, w: u32, d: u32, what: &str) {
    let rejudged = env.dp.stats().expect("stats").session_misses;
    assert_eq!(
        out(env, &db(sport, TCP_ACK, d, w)),
        Outcome::Passed,
        "{what}"
    );
    assert_eq!(
        inn(env, &web(sport, TCP_ACK, w, d)),
        Outcome::Passed,
        "{what}"
    );
    assert_eq!(
        env.dp.stats().expect("stats").session_misses,
        rejudged,
        "{what}: judged as new"
    );
}

/// Sequence numbers a blind third party might try, none inside the window around `end`.
fn outside(end: u32) -> [u32; 5] {
    outside_of(end, WINDOW)
}

fn outside_of(end: u32, window: u32) -> [u32; 5] {
    [
        end.wrapping_add(window + 1),
        end.wrapping_sub(window + 1),
        end.wrapping_add(0x4000_0000),
        end.wrapping_add(0x8000_0000),
        end.wrapping_sub(0x1000_0000),
    ]
}

#[test]
fn a_forged_rst_or_fin_changes_the_session_only_inside_the_window() {
    let env = env();
    let forged = [TCP_RST, TCP_RST | TCP_ACK, TCP_FIN | TCP_ACK];
    for (i, flags) in forged.into_iter().enumerate() {
        // In web's name (reaching db), then in db's (leaving db's interface: db's own stack
        // could send it, but the check is the same).
        let sport = 44000 + i as u16;
        let (w, d) = open(&env, sport, WEB_ISN, DB_ISN, 100);
        for seq in outside(w) {
            let f = web(sport, flags, seq, d);
            assert_eq!(inn(&env, &f), Outcome::Passed, "{flags:#04x} at {seq}");
            assert_eq!(state(&env, sport), st::ESTABLISHED, "{flags:#04x} at {seq}");
            still_open(&env, sport, w, d, &format!("web {flags:#04x} at {seq}"));
        }
        for seq in outside(d) {
            let f = db(sport, flags, seq, w);
            assert_eq!(out(&env, &f), Outcome::Passed, "{flags:#04x} at {seq}");
            assert_eq!(state(&env, sport), st::ESTABLISHED, "{flags:#04x} at {seq}");
        }
        still_open(&env, sport, w, d, "after the forgeries");
        // The same flags at the end of what web sent: what web's stack sends.
        assert_eq!(inn(&env, &web(sport, flags, w, d)), Outcome::Passed);
        let want = if flags & TCP_RST != 0 {
            st::CLOSED
        } else {
            st::CLOSING
        };
        assert_eq!(state(&env, sport), want, "{flags:#04x} in the window");
    }
    // Inside the window but not at its end (a retransmission, a segment after one lost on
    // the way): taken, as conntrack takes it.
    let (w, d) = open(&env, 44010, WEB_ISN, DB_ISN, 0);
    let seq = w.wrapping_add(WINDOW - 1);
    assert_eq!(inn(&env, &web(44010, TCP_RST, seq, d)), Outcome::Passed);
    assert_eq!(state(&env, 44010), st::CLOSED);
}

#[test]
fn a_forged_last_ack_does_not_end_the_session_and_the_real_one_does() {
    let env = env();
    // Closed by db (the replier sends the second FIN): web's ACK of it is the last packet.
    let sport = 44100;
    let (w, d) = open(&env, sport, WEB_ISN, DB_ISN, 10);
    assert_eq!(
        inn(&env, &web(sport, TCP_FIN | TCP_ACK, w, d)),
        Outcome::Passed
    );
    let w = w + 1;
    assert_eq!(
        out(&env, &db(sport, TCP_FIN | TCP_ACK, d, w)),
        Outcome::Passed
    );
    let d = d + 1;
    assert_eq!(state(&env, sport), st::CLOSED);
    for ack in [d - 1, d + 1, d.wrapping_add(0x8000_0000), 0] {
        assert_eq!(inn(&env, &web(sport, TCP_ACK, w, ack)), Outcome::Passed);
        assert!(session(&env, sport).is_some(), "forged last ACK {ack}");
    }
    // db's retransmitted FIN, after a forged last ACK, still rides the session.
    let misses = env.dp.stats().expect("stats").session_misses;
    assert_eq!(
        out(&env, &db(sport, TCP_FIN | TCP_ACK, d - 1, w)),
        Outcome::Passed
    );
    assert_eq!(env.dp.stats().expect("stats").session_misses, misses);
    assert_eq!(inn(&env, &web(sport, TCP_ACK, w, d)), Outcome::Passed);
    assert!(session(&env, sport).is_none(), "the real last ACK ends it");

    // Closed by web: db's ACK of web's FIN is the last packet.
    let sport = 44101;
    let (w, d) = open(&env, sport, WEB_ISN, DB_ISN, 0);
    assert_eq!(
        out(&env, &db(sport, TCP_FIN | TCP_ACK, d, w)),
        Outcome::Passed
    );
    let d = d + 1;
    assert_eq!(
        inn(&env, &web(sport, TCP_FIN | TCP_ACK, w, d)),
        Outcome::Passed
    );
    let w = w + 1;
    assert_eq!(state(&env, sport), st::CLOSED);
    assert_eq!(out(&env, &db(sport, TCP_ACK, d, w - 1)), Outcome::Passed);
    assert!(session(&env, sport).is_some(), "forged last ACK");
    assert_eq!(out(&env, &db(sport, TCP_ACK, d, w)), Outcome::Passed);
    assert!(session(&env, sport).is_none(), "the real last ACK ends it");
}

#[test]
fn a_rst_with_the_right_sequence_number_ends_the_connection_from_either_side() {
    let env = env();
    // From db, the local workload: the RST is the connection's last packet.
    let (w, d) = open(&env, 44200, WEB_ISN, DB_ISN, 50);
    assert_eq!(
        out(&env, &db(44200, TCP_RST | TCP_ACK, d, w)),
        Outcome::Passed
    );
    assert!(session(&env, 44200).is_none(), "db's RST ends it");
    // From web: closed, kept (it may be forged by someone who guessed the window) until
    // its 10 s idle limit or a SYN on its ports.
    let (w, d) = open(&env, 44201, WEB_ISN, DB_ISN, 50);
    assert_eq!(inn(&env, &web(44201, TCP_RST, w, 0)), Outcome::Passed);
    assert_eq!(state(&env, 44201), st::CLOSED);
    let _ = d;
    assert_eq!(
        inn(&env, &web(44201, TCP_SYN, 77_000, 0)),
        Outcome::Passed,
        "a new connection on the ports"
    );
    assert_eq!(state(&env, 44201), st::SYN_SENT);
}

#[test]
fn before_the_syn_ack_only_a_rst_that_acknowledges_the_syn_counts() {
    let env = env();
    let sport = 44300;
    assert_eq!(inn(&env, &web(sport, TCP_SYN, WEB_ISN, 0)), Outcome::Passed);
    // Without ACK (web's stack drops it in SYN-SENT) or acknowledging something else.
    for (flags, ack) in [
        (TCP_RST, 0),
        (TCP_RST, WEB_ISN + 1),
        (TCP_RST | TCP_ACK, WEB_ISN),
        (TCP_RST | TCP_ACK, WEB_ISN + 2),
        (TCP_SYN | TCP_ACK, WEB_ISN + 7),
    ] {
        assert_eq!(out(&env, &db(sport, flags, 9, ack)), Outcome::Passed);
        assert_eq!(state(&env, sport), st::SYN_SENT, "{flags:#04x} ack {ack}");
    }
    // db refuses the connection: its RST acknowledges the SYN.
    let refuse = db(sport, TCP_RST | TCP_ACK, 0, WEB_ISN + 1);
    assert_eq!(out(&env, &refuse), Outcome::Passed);
    assert!(session(&env, sport).is_none(), "refused: ended");
}

#[test]
fn a_session_picked_up_mid_stream_learns_each_side_from_its_first_segment() {
    let env = env();
    let sport = 44400;
    let (w, d) = (3_000_000, 7_000_000);
    assert_eq!(inn(&env, &web(sport, TCP_ACK, w, d)), Outcome::Passed);
    assert_eq!(state(&env, sport), st::ESTABLISHED);
    assert_eq!(out(&env, &db(sport, TCP_ACK, d, w)), Outcome::Passed);
    // Neither side's window scale is known: Linux's usual 7 is assumed.
    let window = WINDOW << 7;
    for (db_seq, web_seq) in outside_of(d, window).into_iter().zip(outside_of(w, window)) {
        assert_eq!(out(&env, &db(sport, TCP_RST, db_seq, 0)), Outcome::Passed);
        assert_eq!(inn(&env, &web(sport, TCP_RST, web_seq, 0)), Outcome::Passed);
        assert_eq!(
            state(&env, sport),
            st::ESTABLISHED,
            "RST at {db_seq}, {web_seq}"
        );
    }
    still_open(&env, sport, w, d, "picked up");
    assert_eq!(inn(&env, &web(sport, TCP_RST, w, 0)), Outcome::Passed);
    assert_eq!(state(&env, sport), st::CLOSED);
}

#[test]
fn sequence_numbers_wrap_around_2_to_the_32() {
    let env = env();
    let sport = 44500;
    // web's data crosses 2^32; db's SYN-ACK sits just below it.
    let (w, d) = open(&env, sport, u32::MAX - 20, u32::MAX, 100);
    assert_eq!((w, d), (80, 0));
    // Around the wrapped end: outside changes nothing, inside counts.
    for seq in outside(w) {
        assert_eq!(inn(&env, &web(sport, TCP_RST, seq, d)), Outcome::Passed);
        assert_eq!(state(&env, sport), st::ESTABLISHED, "RST at {seq}");
    }
    // A FIN just before 2^32 (a retransmission from before the wrap) is in the window.
    assert_eq!(
        inn(&env, &web(sport, TCP_FIN | TCP_ACK, u32::MAX - 5, d)),
        Outcome::Passed
    );
    assert_eq!(state(&env, sport), st::CLOSING);
    // db closes too; web's last ACK acknowledges db's FIN at 0 (its end is 1).
    assert_eq!(
        out(&env, &db(sport, TCP_FIN | TCP_ACK, d, w + 1)),
        Outcome::Passed
    );
    assert_eq!(state(&env, sport), st::CLOSED);
    assert_eq!(inn(&env, &web(sport, TCP_ACK, w + 1, 0)), Outcome::Passed);
    assert!(session(&env, sport).is_some(), "ACK of 0 is not of the FIN");
    assert_eq!(inn(&env, &web(sport, TCP_ACK, w + 1, 1)), Outcome::Passed);
    assert!(session(&env, sport).is_none(), "the last ACK");
}

#[test]
fn a_receiver_with_a_small_window_narrows_what_counts() {
    let env = env();
    let sport = 44600;
    // db advertises 2,048 bytes.
    assert_eq!(inn(&env, &web(sport, TCP_SYN, WEB_ISN, 0)), Outcome::Passed);
    let syn_ack = db(sport, TCP_SYN | TCP_ACK, DB_ISN, WEB_ISN + 1).with_window(2048);
    assert_eq!(out(&env, &syn_ack), Outcome::Passed);
    let (w, d) = (WEB_ISN + 1, DB_ISN + 1);
    let ack = web(sport, TCP_ACK, w, d);
    assert_eq!(inn(&env, &ack), Outcome::Passed);
    for seq in [w + 4096, w.wrapping_sub(4096), w + 2049] {
        assert_eq!(inn(&env, &web(sport, TCP_RST, seq, 0)), Outcome::Passed);
        assert_eq!(state(&env, sport), st::ESTABLISHED, "RST at {seq}");
    }
    assert_eq!(
        inn(&env, &web(sport, TCP_RST, w + 1024, 0)),
        Outcome::Passed
    );
    assert_eq!(state(&env, sport), st::CLOSED);
}

/// A SYN's options as Linux sends them: MSS, SACK permitted, timestamps, NOP, window scale.
fn linux_syn_options(shift: u8) -> Vec<u8> {
    let mut o = vec![2, 4, 0x05, 0xb4, 4, 2, 8, 10];
    o.extend_from_slice(&[0, 0, 0x12, 0x34, 0, 0, 0, 0]);
    o.extend_from_slice(&[1, 3, 3, shift]);
    o
}

/// SYN and SYN-ACK with the given options, the ACK, then db advertises a raw window of
/// 1,000 (128,000 bytes with a scale of 7, as a Linux receiver under load does).
fn open_with_options(env: &Env, sport: u16, syn: &[u8], syn_ack: &[u8]) -> (u32, u32) {
    let (w, d) = (WEB_ISN + 1, DB_ISN + 1);
    let syn = web(sport, TCP_SYN, WEB_ISN, 0).with_tcp_options(syn);
    assert_eq!(inn(env, &syn), Outcome::Passed);
    let syn_ack = db(sport, TCP_SYN | TCP_ACK, DB_ISN, w).with_tcp_options(syn_ack);
    assert_eq!(out(env, &syn_ack), Outcome::Passed);
    assert_eq!(inn(env, &web(sport, TCP_ACK, w, d)), Outcome::Passed);
    let ack = db(sport, TCP_ACK, d, w).with_window(1000);
    assert_eq!(out(env, &ack), Outcome::Passed);
    assert_eq!(state(env, sport), st::ESTABLISHED);
    (w, d)
}

#[test]
fn the_window_scale_of_both_syns_scales_the_windows_after_them() {
    let env = env();
    let sport = 44700;
    let (w, _) = open_with_options(&env, sport, &linux_syn_options(7), &linux_syn_options(7));
    // 1,000 << 7 = 128,000 bytes from w: a RST just beyond changes nothing, one inside
    // (and beyond the unscaled 64,240 of the SYN-ACK) counts.
    assert_eq!(
        inn(&env, &web(sport, TCP_RST, w + 128_001, 0)),
        Outcome::Passed
    );
    assert_eq!(state(&env, sport), st::ESTABLISHED);
    assert_eq!(
        inn(&env, &web(sport, TCP_RST, w + 100_000, 0)),
        Outcome::Passed
    );
    assert_eq!(state(&env, sport), st::CLOSED);
}

#[test]
fn without_the_option_in_both_syns_windows_are_not_scaled() {
    let env = env();
    for (sport, syn, syn_ack) in [
        (44710, linux_syn_options(7), vec![2, 4, 0x05, 0xb4]),
        (44711, vec![2, 4, 0x05, 0xb4], vec![]),
    ] {
        let (w, _) = open_with_options(&env, sport, &syn, &syn_ack);
        // The largest window is the SYN-ACK's 64,240 bytes; 1,000 is 1,000 bytes.
        assert_eq!(
            inn(&env, &web(sport, TCP_RST, w + 100_000, 0)),
            Outcome::Passed
        );
        assert_eq!(state(&env, sport), st::ESTABLISHED, "{sport}");
        assert_eq!(
            inn(&env, &web(sport, TCP_RST, w + 60_000, 0)),
            Outcome::Passed
        );
        assert_eq!(state(&env, sport), st::CLOSED, "{sport}");
    }
}

/// A fast connection's segments are judged out of order on several CPUs: one can come
/// 70,000 bytes ahead of the last one counted, inside the scaled window but beyond the
/// largest unscaled one. It counts, so the end of what web sent keeps up and its FIN
/// counts too. Unscaled, it was never counted, every later segment lay further beyond, and
/// the session stayed open after the connection's end.
#[test]
fn a_segment_judged_ahead_of_others_inside_a_scaled_window_keeps_the_end_in_step() {
    let env = env();
    let sport = 44720;
    let (w, d) = open_with_options(&env, sport, &linux_syn_options(7), &linux_syn_options(7));
    let mss = 1400;
    assert_eq!(
        inn(&env, &web(sport, TCP_ACK, w, d).with_payload(mss)),
        Outcome::Passed
    );
    let ahead = web(sport, TCP_ACK, w + 70_000, d).with_payload(mss);
    assert_eq!(inn(&env, &ahead), Outcome::Passed);
    let fin = web(sport, TCP_FIN | TCP_ACK, w + 70_000 + mss as u32, d);
    assert_eq!(inn(&env, &fin), Outcome::Passed);
    assert_eq!(state(&env, sport), st::CLOSING);
}

#[test]
fn a_scale_over_14_counts_as_14_and_options_past_the_header_are_not_read() {
    let env = env();
    let sport = 44730;
    let (w, _) = open_with_options(&env, sport, &linux_syn_options(20), &linux_syn_options(20));
    // 1,000 << 14 = 16,384,000 bytes.
    assert_eq!(
        inn(&env, &web(sport, TCP_RST, w + 16_384_001, 0)),
        Outcome::Passed
    );
    assert_eq!(state(&env, sport), st::ESTABLISHED);
    assert_eq!(
        inn(&env, &web(sport, TCP_RST, w + 16_000_000, 0)),
        Outcome::Passed
    );
    assert_eq!(state(&env, sport), st::CLOSED);
    // An option list cut short (a length of 0, or an option running past the header) is
    // not followed: web's windows stay unscaled, the largest its SYN's 64,240 bytes.
    for (sport, syn) in [(44731, vec![5, 0, 3, 3, 7]), (44732, vec![1, 1, 1, 3])] {
        let (w, d) = open_with_options(&env, sport, &syn, &linux_syn_options(7));
        let ack = web(sport, TCP_ACK, w, d).with_window(1000);
        assert_eq!(inn(&env, &ack), Outcome::Passed);
        assert_eq!(
            out(&env, &db(sport, TCP_RST, d + 100_000, 0)),
            Outcome::Passed
        );
        assert_eq!(state(&env, sport), st::ESTABLISHED, "{sport}: scale read");
        assert_eq!(
            out(&env, &db(sport, TCP_RST, d + 60_000, 0)),
            Outcome::Passed
        );
        assert!(session(&env, sport).is_none(), "{sport}: db's RST ends it");
    }
}
