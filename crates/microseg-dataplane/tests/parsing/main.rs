//! The parser, through the kernel: every frame shape either reaches the policy with the
//! right protocol and ports (shown by an allowed and a denied case judged on them), or is
//! dropped and counted as malformed; what the network needs passes, counted.

#[path = "../common/mod.rs"]
mod common;

mod helpers;

mod fragments;
mod ipv4;
mod ipv6;
mod malformed;
mod non_ip_and_nd;
mod protocols;
mod vlan;
