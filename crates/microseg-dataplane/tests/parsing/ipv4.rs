//! Plain IPv4 and IPv4 with options.

use microseg_dataplane::{packet::*, Hook};

use crate::common::*;
use crate::helpers::*;

#[test]
fn ipv4_plain_is_judged_on_its_ports() {
    let env = env();
    assert!(ingress(
        &env,
        &Frame::tcp(web4(), db4(), 40000, 80, TCP_SYN)
    ));
    assert!(!ingress(
        &env,
        &Frame::tcp(web4(), db4(), 40000, 81, TCP_SYN)
    ));
    assert!(ingress(&env, &Frame::udp(web4(), db4(), 40000, 53)));
    assert!(!ingress(&env, &Frame::udp(web4(), db4(), 40000, 54)));
    assert!(ingress(&env, &Frame::sctp(web4(), db4(), 40000, 9000)));
    assert!(!ingress(&env, &Frame::sctp(web4(), db4(), 40000, 9001)));
    assert!(ingress(&env, &Frame::echo_request(web4(), db4(), 7)));
    let s = stats(&env);
    assert_eq!((s.allowed(), s.denied(), s.parse_errors), (4, 3, 0));
}

#[test]
fn ipv4_options_shift_the_l4_header() {
    let env = env();
    // NOP, NOP, then a 12-byte timestamp-like option: 16 bytes of options, IHL 9.
    let opts = [1u8, 1, 68, 12, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    assert!(ingress(
        &env,
        &Frame::tcp(web4(), db4(), 40000, 80, TCP_SYN).with_ipv4_options(&opts)
    ));
    assert!(!ingress(
        &env,
        &Frame::tcp(web4(), db4(), 40001, 81, TCP_SYN).with_ipv4_options(&opts)
    ));
    // The longest header: 40 bytes of options (IHL 15).
    let max = [1u8; 40];
    assert!(ingress(
        &env,
        &Frame::udp(web4(), db4(), 40000, 53).with_ipv4_options(&max)
    ));
    assert!(!ingress(
        &env,
        &Frame::udp(web4(), db4(), 40000, 5353).with_ipv4_options(&max)
    ));
    assert_eq!(stats(&env).parse_errors, 0);
}

#[test]
fn an_ipv4_big_tcp_packet_is_judged_on_its_ports() {
    let env = env();
    // A GSO packet over 64 KiB (BIG TCP) carries a total length of 0: the stack takes the
    // frame's end for the packet's, and so must the parser.
    let big = |dport| {
        let mut b = Frame::tcp(web4(), db4(), 40000, dport, TCP_ACK).bytes();
        b[16..18].copy_from_slice(&[0, 0]);
        b
    };
    let gso = |frame: &[u8]| {
        env.dp
            .test_run_gso(Hook::ToWorkload, frame, LO, 1448)
            .expect("test run")
            .passed()
    };
    assert!(gso(&big(80)));
    assert!(!gso(&big(81)), "judged on its ports like any other");
    assert_eq!(stats(&env).parse_errors, 0);
    // Outside GSO a total length of 0 is malformed, as it is for the stack.
    assert_malformed(
        &env,
        Hook::ToWorkload,
        &big(80),
        "total length 0 without GSO",
    );
}
