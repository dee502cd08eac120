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
