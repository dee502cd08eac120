//! Flow events to userspace. A full ring buffer is counted, never silent.

use microseg_common::*;

use crate::maps::MSEG_EVENTS;

/// The flow an event describes, in the originator's direction.
pub struct Flow {
    pub ifindex: u32,
    pub direction: u8,
    pub protocol: u8,
    pub src: [u32; 4],
    pub dst: [u32; 4],
    pub sport: u16,
    pub dport: u16,
}

pub struct Outcome {
    pub verdict: u8,
    pub audit_verdict: u8,
    pub rule_id: u32,
    pub audit_rule_id: u32,
    pub peer_identity: u32,
    pub local_identity: u32,
    pub packets: u64,
    pub bytes: u64,
}

#[inline(always)]
pub fn emit(kind: u8, now: u64, flow: &Flow, out: &Outcome, stats: &mut Stats) {
    let Some(mut entry) = MSEG_EVENTS.reserve::<FlowEvent>(0) else {
        stats.events_lost += 1;
        return;
    };
    entry.write(FlowEvent {
        time_ns: now,
        packets: out.packets,
        bytes: out.bytes,
        ifindex: flow.ifindex,
        rule_id: out.rule_id,
        audit_rule_id: out.audit_rule_id,
        peer_identity: out.peer_identity,
        local_identity: out.local_identity,
        src_addr: flow.src,
        dst_addr: flow.dst,
        src_port: flow.sport,
        dst_port: flow.dport,
        kind,
        direction: flow.direction,
        verdict: out.verdict,
        audit_verdict: out.audit_verdict,
        protocol: flow.protocol,
        _pad: [0; 7],
    });
    entry.submit(0);
}
