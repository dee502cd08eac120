//! Flow events the kernel sends on the `MSEG_EVENTS` ring buffer.

pub mod event_kind {
    /// First packet of a session (or first after a policy change re-judged it). Sent for
    /// every verdict but `allow`; for `allow` only under [`crate::config_flags::REPORT_START`]
    /// (an allowed connection is reported at its end and by the agent's walk of the table).
    pub const NEW: u8 = 1;
    /// A dropped packet of an existing session (rate limited per session).
    pub const DENY: u8 = 2;
    /// A packet of a `log` session (rate limited per session).
    pub const LOG: u8 = 3;
    /// The session ended (TCP FIN from both sides or RST); counters are final. One per
    /// session, with both local legs (see [`super::FlowEvent::other`]).
    pub const END: u8 = 4;
    /// Never sent by the kernel: the agent's walk of the session table reports a
    /// connection that lasts (every active timeout), with both local legs like `END`.
    pub const ACTIVE: u8 = 5;
}

/// Gap between two deny or log events of one session's leg, in [`crate::event_tick`]s of
/// 67.1 ms: 16 of them, so that two events are never less than a second apart (15 whole
/// ticks, 1.007 s) and a leg that keeps sending waits at most 1.074 s.
pub const EVENT_INTERVAL_TICKS: u16 = 16;

/// One flow event. Addresses are IPv4-mapped for IPv4; ports in host byte order.
///
/// The top-level leg fields (`ifindex` to `audit_verdict`, and `direction`) are the leg the
/// event is about. An `END` reports the whole connection: `other` carries the session's
/// other leg on this node (ifindex 0 when there is none), so that a connection between two
/// local workloads ends with one event, not one per leg.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowEvent {
    pub time_ns: u64,
    /// When the session began (kernel monotonic clock): the same in every event of it.
    pub start_ns: u64,
    /// Both directions summed.
    pub packets: u64,
    pub bytes: u64,
    pub ifindex: u32,
    pub rule_id: u32,
    pub audit_rule_id: u32,
    pub peer_identity: u32,
    pub src_addr: [u32; 4],
    pub dst_addr: [u32; 4],
    pub src_port: u16,
    pub dst_port: u16,
    pub kind: u8,
    pub direction: u8,
    pub verdict: u8,
    pub audit_verdict: u8,
    pub protocol: u8,
    pub _pad: [u8; 3],
    pub other: EventLeg,
}
/// 112 bytes, a multiple of the 8-byte alignment: no hidden padding to leave unwritten.
const _: () = assert!(core::mem::size_of::<FlowEvent>() == 112);

/// A leg's judgement as an event carries it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventLeg {
    /// 0: no such leg on this node.
    pub ifindex: u32,
    pub rule_id: u32,
    pub audit_rule_id: u32,
    pub peer_identity: u32,
    pub verdict: u8,
    pub audit_verdict: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<EventLeg>() == 20);

impl EventLeg {
    #[inline(always)]
    pub fn of(l: &crate::SessionLeg) -> EventLeg {
        EventLeg {
            ifindex: l.ifindex,
            rule_id: l.rule_id,
            audit_rule_id: l.audit_rule_id,
            peer_identity: l.peer_identity,
            verdict: l.verdict,
            audit_verdict: l.audit_verdict,
            _pad: [0; 2],
        }
    }
}

impl crate::SessionKey {
    /// The originator's side of a session: (source, source port, destination, destination
    /// port).
    #[inline(always)]
    pub fn orig_tuple(&self, s: &crate::Session) -> ([u32; 4], u16, [u32; 4], u16) {
        if s.flags & crate::session_flags::ORIG_IS_LO != 0 {
            (self.lo_addr, self.lo_port, self.hi_addr, self.hi_port)
        } else {
            (self.hi_addr, self.hi_port, self.lo_addr, self.lo_port)
        }
    }
}

impl crate::Session {
    /// The present legs, with the direction each judges.
    pub fn present_legs(&self) -> impl Iterator<Item = (u8, &crate::SessionLeg)> {
        [crate::direction::INGRESS, crate::direction::EGRESS]
            .into_iter()
            .map(|d| (d, &self.legs[d as usize]))
            .filter(|(_, l)| l.is_present())
    }
}

impl FlowEvent {
    /// Fills every field but the padding with an event of `kind` about a whole session as
    /// its `leg` judged it (and the other leg in `other`), in the originator's direction (in place: the kernel writes into
    /// its ring buffer).
    #[inline(always)]
    pub fn fill_from_session(
        &mut self,
        kind: u8,
        key: &crate::SessionKey,
        s: &crate::Session,
        leg: usize,
        time_ns: u64,
    ) {
        let (src, sport, dst, dport) = key.orig_tuple(s);
        let l = &s.legs[leg & 1];
        self.time_ns = time_ns;
        self.start_ns = s.created_ns;
        self.packets = s.packets[0] + s.packets[1];
        self.bytes = s.bytes[0] + s.bytes[1];
        self.ifindex = l.ifindex;
        self.rule_id = l.rule_id;
        self.audit_rule_id = l.audit_rule_id;
        self.peer_identity = l.peer_identity;
        self.src_addr = src;
        self.dst_addr = dst;
        self.src_port = sport;
        self.dst_port = dport;
        self.kind = kind;
        self.direction = (leg & 1) as u8;
        self.verdict = l.verdict;
        self.audit_verdict = l.audit_verdict;
        self.protocol = key.protocol;
        self.other = EventLeg::of(&s.legs[(leg & 1) ^ 1]);
    }
}
