//! Flow events the kernel sends on the `MSEG_EVENTS` ring buffer.

pub mod event_kind {
    /// First packet of a session (or first after a policy change re-judged it).
    pub const NEW: u8 = 1;
    /// A dropped packet of an existing session (rate limited per session).
    pub const DENY: u8 = 2;
    /// A packet of a `log` session (rate limited per session).
    pub const LOG: u8 = 3;
    /// The session ended (TCP FIN from both sides or RST); counters are final.
    pub const END: u8 = 4;
}

/// Minimum gap between two deny or log events of one session.
pub const EVENT_INTERVAL_NS: u64 = 1_000_000_000;

/// One flow event. Addresses are IPv4-mapped for IPv4; ports in host byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowEvent {
    pub time_ns: u64,
    /// Both directions summed.
    pub packets: u64,
    pub bytes: u64,
    pub ifindex: u32,
    pub rule_id: u32,
    pub audit_rule_id: u32,
    pub peer_identity: u32,
    pub local_identity: u32,
    pub src_addr: [u32; 4],
    pub dst_addr: [u32; 4],
    pub src_port: u16,
    pub dst_port: u16,
    pub kind: u8,
    pub direction: u8,
    pub verdict: u8,
    pub audit_verdict: u8,
    pub protocol: u8,
    pub _pad: [u8; 7],
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
    /// The direction of the originator's first packet, from the workload's side.
    #[inline(always)]
    pub fn orig_direction(&self) -> u8 {
        if self.flags & crate::session_flags::ORIG_EGRESS != 0 {
            crate::direction::EGRESS
        } else {
            crate::direction::INGRESS
        }
    }
}

impl FlowEvent {
    /// Fills every field but the padding with an event of `kind` about a whole session,
    /// in its originator's direction (in place: the kernel writes into its ring buffer).
    #[inline(always)]
    pub fn fill_from_session(
        &mut self,
        kind: u8,
        key: &crate::SessionKey,
        s: &crate::Session,
        time_ns: u64,
    ) {
        let (src, sport, dst, dport) = key.orig_tuple(s);
        self.time_ns = time_ns;
        self.packets = s.packets[0] + s.packets[1];
        self.bytes = s.bytes[0] + s.bytes[1];
        self.ifindex = key.ifindex;
        self.rule_id = s.rule_id;
        self.audit_rule_id = s.audit_rule_id;
        self.peer_identity = s.peer_identity;
        self.local_identity = 0;
        self.src_addr = src;
        self.dst_addr = dst;
        self.src_port = sport;
        self.dst_port = dport;
        self.kind = kind;
        self.direction = s.orig_direction();
        self.verdict = s.verdict;
        self.audit_verdict = s.audit_verdict;
        self.protocol = key.protocol;
    }
}
