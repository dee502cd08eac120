//! Odd frames through the kernel, each against the reference reading (`frames::read`):
//! malformed ones dropped and counted, ARP, neighbour discovery and other ethertypes passed,
//! later fragments following their first, spoofed sources dropped, and every other frame
//! judged as the evaluator judges the packet in it.

use std::collections::HashMap;
use std::net::IpAddr;

use microseg_dataplane::common::{event_kind, tables::addr_words, Stats};
use microseg_dataplane::{Dataplane, Hook};
use microseg_policy::{evaluate, Direction, Packet, Verdict};

use crate::check::{compare, Judged, Judging};
use crate::common::LO;
use crate::frames::{read, FragmentKey, Reading};

/// What the odd frames came to, and what the reference must remember across cases.
#[derive(Default)]
pub struct OddTally {
    /// Malformed, passed without a verdict, later fragments, spoofed, judged by policy.
    pub seen: [usize; 5],
    /// The first fragments judged so far, and whether they passed.
    pub fragments: HashMap<FragmentKey, bool>,
    /// Frames `BPF_PROG_TEST_RUN` would not run (see [`harness_refuses`]).
    pub not_run: usize,
    /// Later fragments whose first fragment was judged before.
    pub followed: usize,
}

/// Frames the kernel's test run refuses: shorter than Ethernet, or too short for the IP
/// header the (outer) ethertype announces.
fn harness_refuses(b: &[u8]) -> bool {
    b.len() < 14
        || match u16::from_be_bytes([b[12], b[13]]) {
            0x0800 => b.len() < 14 + 20,
            0x86dd => b.len() < 14 + 40,
            _ => false,
        }
}

/// Egress sources the data plane does not check (docs/POLICY.md, "Workload").
fn exempt(src: &IpAddr) -> bool {
    match src {
        IpAddr::V4(a) => a.is_unspecified(),
        IpAddr::V6(a) => a.is_unspecified() || a.segments()[0] & 0xffc0 == 0xfe80,
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn stats(dp: &Dataplane) -> Result<Stats, String> {
    dp.stats().map_err(|e| format!("stats: {e}"))
}

/// Runs one odd frame in `direction` and checks it; Err says what differs. False when
/// the kernel would not run the frame (then nothing was checked).
pub fn check_odd(
    dp: &mut Dataplane,
    tally: &mut OddTally,
    at: &Judging,
    direction: Direction,
    hook: Hook,
    bytes: &[u8],
) -> Result<bool, String> {
    let reading = read(bytes);
    let report = |what: &str, got: String| {
        format!(
            "odd frame: {what}\n  frame: {}\n  {direction:?}, reference: {reading:?}\n  kernel: {got}",
            hex(bytes)
        )
    };
    let before = stats(dp)?;
    let run = match dp.test_run(hook, bytes, LO, 1) {
        Ok(run) => run,
        // The kernel refuses to run frames shorter than an Ethernet header, or with an IP
        // ethertype and less than that IP header behind it: none reaches the program.
        Err(_) if reading == Reading::Malformed && harness_refuses(bytes) => {
            tally.not_run += 1;
            return Ok(false);
        }
        Err(e) => return Err(report("test run failed", e.to_string())),
    };
    let events = dp.drain_events();
    let after = stats(dp)?;
    let news: Vec<_> = events
        .iter()
        .filter(|e| e.kind == event_kind::NEW)
        .collect();
    let parse_errors = after.parse_errors - before.parse_errors;
    let spoofed = after.spoofed - before.spoofed;
    let (passes, judged) = match &reading {
        Reading::Malformed => {
            tally.seen[0] += 1;
            (false, None)
        }
        Reading::Passes => {
            tally.seen[1] += 1;
            (true, None)
        }
        Reading::Later(key) => {
            tally.seen[2] += 1;
            tally.followed += usize::from(tally.fragments.contains_key(key));
            (tally.fragments.get(key).copied().unwrap_or(false), None)
        }
        Reading::Ip {
            src,
            dst,
            protocol,
            sport,
            dport,
            first,
            error,
        } => {
            let spoof =
                direction == Direction::Egress && !exempt(src) && !at.local.ips.contains(src);
            let packet = Packet {
                src: *src,
                dst: *dst,
                protocol: *protocol,
                src_port: *sport,
                dst_port: *dport,
            };
            let want = (!spoof).then(|| evaluate(at.set, at.local, direction, &packet));
            let passes = want.as_ref().is_some_and(|w| w.verdict != Verdict::Deny);
            if let Some(key) = first {
                tally.fragments.insert(*key, passes);
            }
            tally.seen[if spoof { 3 } else { 4 }] += 1;
            if spoof && spoofed != 1 {
                return Err(report("not counted spoofed", format!("spoofed +{spoofed}")));
            }
            // An ICMP error sends no event (docs/POLICY.md): only its TC action tells.
            (passes, want.filter(|_| !error).map(|w| (packet, w)))
        }
    };
    if run.passed() != passes {
        return Err(report(
            "TC action differs",
            format!("passed={} events={events:?}", run.passed()),
        ));
    }
    if parse_errors != u64::from(reading == Reading::Malformed) {
        return Err(report(
            "parse_errors differs",
            format!("parse_errors +{parse_errors}"),
        ));
    }
    let Some((packet, want)) = judged else {
        if !news.is_empty() {
            return Err(report("an event without a verdict", format!("{news:?}")));
        }
        return Ok(true);
    };
    let [e] = news.as_slice() else {
        return Err(report("expected one NEW event", format!("{events:?}")));
    };
    // The kernel read the same packet: addresses, protocol, ports.
    let tuple = (e.src_addr, e.dst_addr, e.protocol, e.src_port, e.dst_port);
    let want_tuple = (
        addr_words(packet.src),
        addr_words(packet.dst),
        packet.protocol,
        packet.src_port,
        packet.dst_port,
    );
    if tuple != want_tuple {
        return Err(report("packet read differently", format!("{e:?}")));
    }
    let got = Judged::of_event(e);
    compare(at, direction, &packet, &want, &got).map_err(|what| {
        report(
            what,
            format!("{} (oracle: {want:?})", got.describe(at.rules)),
        )
    })?;
    Ok(true)
}
