//! The bypass suite: packets shaped to slip past a verdict, run through the attached
//! programs with BPF_PROG_TEST_RUN. Each module states what it checks and the verdict
//! docs/POLICY.md gives it; every case asserts that a denied destination is never reached
//! and that an allowed connection's packets pass. docs/SECURITY.md lists the classes.
//!
//! Covered elsewhere and not repeated here:
//! - tests/parsing: each IPv6 extension header alone, chains of 8 and 9, mobility/HIP/
//!   shim6 as protocols, IPv4-mapped addresses; in-order and orphan fragments, the IPv4
//!   TCP fragment at offset 1 (RFC 1858); one 802.1Q/802.1ad tag, QinQ with an 802.1Q
//!   inner tag, tagged ARP; IPv4 options; chosen truncations and invalid IP headers; ARP,
//!   neighbour discovery and its hop limit, IPv4 protocol 58; unknown IP protocols.
//! - tests/vlan_veth: a tag in the skb's metadata, on a real veth.
//! - tests/sessions.rs: ICMP errors about allowed, denied and non-existent connections,
//!   errors sent the wrong way, errors after a policy change; the TCP state machine.
//! - tests/spoofing.rs: egress from another workload's or nobody's address, link-local
//!   and unspecified sources.
//! - tests/two_local_workloads.rs: a RST a leg drops closes nothing; a packet in a local
//!   workload's name that skipped its interface moves nothing.

#[path = "../common/mod.rs"]
mod common;

#[path = "helpers.rs"]
mod bypass_helpers;

mod flood;
mod fragments;
mod icmp;
mod ipv6_ext;
mod l2;
mod races;
mod spoof;
mod tcp;
mod tcp_window;
mod truncation;
mod veth;
