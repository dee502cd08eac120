//! Keys and values of the data plane's maps, and the maps' names.
//!
//! Policy state (endpoints, identities, policy entries) is double-buffered: every key of
//! those maps carries a `slot` (0 or 1). Userspace writes the next state into the slot
//! packets are not reading, then flips [`Config::active_slot`]. A packet reads the config
//! once, so it sees either the old state or the new one, never a mix.

/// Map names, as the kernel object declares them and as they are pinned under `--bpffs`.
pub mod names {
    pub const CONFIG: &str = "MSEG_CONFIG";
    pub const SESSIONS: &str = "MSEG_SESSIONS";
    pub const DENIED: &str = "MSEG_DENIED";
    pub const FRAGMENTS: &str = "MSEG_FRAGMENTS";
    pub const ENDPOINTS: &str = "MSEG_ENDPOINTS";
    pub const ENDPOINT_ADDRS: &str = "MSEG_ENDPOINT_ADDRS";
    pub const IDENTITIES: &str = "MSEG_IDENTITIES";
    pub const HOST_IDENTITIES: &str = "MSEG_HOST_IDENTITIES";
    pub const POLICY: &str = "MSEG_POLICY";
    pub const PORT_RANGES: &str = "MSEG_PORT_RANGES";
    pub const SOURCE_PORT_RULES: &str = "MSEG_SPORT_RULES";
    pub const STATS: &str = "MSEG_STATS";
    pub const RULE_COUNTERS: &str = "MSEG_RULE_COUNTERS";
    pub const EVENTS: &str = "MSEG_EVENTS";
    pub const JUMP: &str = "MSEG_JUMP";
    pub const HANDOFF: &str = "MSEG_HANDOFF";
}

/// Default capacities. Userspace may override them at load time.
pub mod capacity {
    pub const SESSIONS: u32 = 1 << 20;
    /// Tuples every local leg denies, kept apart so that a flood of them cannot evict
    /// allowed sessions (docs/SECURITY.md, "Floods of new tuples"): 12.5 MiB of elements.
    pub const DENIED: u32 = 1 << 16;
    pub const FRAGMENTS: u32 = 8192;
    /// Both slots together.
    pub const ENDPOINTS: u32 = 2 * 4096;
    pub const ENDPOINT_ADDRS: u32 = 2 * 16384;
    pub const IDENTITIES: u32 = 2 * 262_144;
    pub const HOST_IDENTITIES: u32 = 2 * 262_144;
    pub const POLICY: u32 = 2 * 524_288;
    pub const PORT_RANGES: u32 = 2 * 32_768;
    pub const SOURCE_PORT_RULES: u32 = 2 * 16_384;
    pub const RULES: u32 = 262_144;
    pub const EVENTS_BYTES: u32 = 4 << 20;
}

/// Maximum port intervals in one [`PortRangeTable`].
pub const MAX_PORT_RANGES: usize = 16;
/// Maximum rules with `sourcePorts` in one [`SourcePortTable`].
pub const MAX_SOURCE_PORT_RULES: usize = 16;

/// Rule id that stands for "no rule": the verdict came from no policy.
pub const RULE_NONE: u32 = 0;
/// Rule id of the implicit default deny of a direction some policy has a section for.
pub const RULE_DEFAULT_DENY: u32 = 1;
/// First rule id userspace hands out to real rules.
pub const RULE_FIRST: u32 = 2;

/// Identity 0 in a policy key means "any peer".
pub const IDENTITY_ANY: u32 = 0;
/// An address no workload owns and no CIDR peer covers.
pub const IDENTITY_WORLD: u32 = 1;
/// First identity userspace hands out.
pub const IDENTITY_FIRST: u32 = 256;

/// `MSEG_CONFIG[0]`: the switch for atomic updates and global options.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Slot of the policy state packets read (0 or 1).
    pub active_slot: u32,
    /// Raised on every policy change; sessions judged under an older one are judged again.
    pub generation: u32,
    /// [`config_flags`] bits.
    pub flags: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<Config>() == 16);

/// The policy a judgement is made under: the slot read and the generation it is stamped
/// with, which must belong together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicyVersion {
    pub slot: u32,
    pub generation: u32,
}

impl Config {
    /// `active_slot` and `generation` in one 8-byte load (they are the first word of the
    /// 8-aligned value, and userspace writes the whole value at once): two loads could see
    /// a flip between them and stamp the old slot's judgement with the new generation.
    #[inline(always)]
    pub fn policy_version(&self) -> PolicyVersion {
        // SAFETY: Config is 8-aligned and starts with the two u32 fields.
        let word = unsafe { core::ptr::read_volatile(self as *const Config as *const u64) };
        let b = word.to_ne_bytes();
        PolicyVersion {
            slot: u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) & 1,
            generation: u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
        }
    }
}

pub mod config_flags {
    /// Drop non-IP frames other than ARP (counted either way).
    pub const DROP_NON_IP: u32 = 1 << 0;
    /// Benchmark only: never insert sessions, so every packet takes the policy path.
    pub const NO_SESSION_INSERT: u32 = 1 << 1;
    /// Send a `NEW` event for allowed sessions too. Set by the agent while the session
    /// table is under pressure (an LRU eviction could drop a session before its first
    /// report), or always with `--flow-report-start`.
    pub const REPORT_START: u32 = 1 << 2;
}

/// `MSEG_SESSIONS` key (LRU hash): one session per connection the node's programs see.
/// Also the `MSEG_DENIED` key (LRU hash, value [`Session`]): a tuple whose every present
/// leg denies is kept there instead, with the same value, so that a flood of denied tuples
/// evicts only other denied tuples (docs/SECURITY.md, "Floods of new tuples"). It moves to
/// `MSEG_SESSIONS` as soon as one of its legs lets packets through.
///
/// Both directions of a connection share one key: the (address, port) pairs are ordered,
/// lower first. IPv4 addresses are stored IPv4-mapped (`::ffff:a.b.c.d`). No interface is
/// part of the key: a connection between two workloads of the node is one session whose two
/// [`SessionLeg`]s are the two interfaces, so the second program finds the entry the first
/// one just touched, in a warm cache line, instead of a second cold one.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SessionKey {
    pub lo_addr: [u32; 4],
    pub hi_addr: [u32; 4],
    /// Host byte order.
    pub lo_port: u16,
    pub hi_port: u16,
    pub protocol: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(core::mem::size_of::<SessionKey>() == 40);

/// TCP and pseudo states of a session.
pub mod session_state {
    pub const NEW: u8 = 0;
    pub const SYN_SENT: u8 = 1;
    pub const SYN_RECV: u8 = 2;
    pub const ESTABLISHED: u8 = 3;
    pub const CLOSING: u8 = 4;
    pub const CLOSED: u8 = 5;
}

/// [`Session::flags`] bits.
pub mod session_flags {
    /// The originator is the `lo` side of the key.
    pub const ORIG_IS_LO: u8 = 1 << 0;
    pub const FIN_ORIG: u8 = 1 << 2;
    pub const FIN_REPLY: u8 = 1 << 3;
    /// The FIN that closed the connection (the second one) came from the replier, so the
    /// originator's next ACK is the connection's last packet.
    pub const CLOSED_BY_REPLY: u8 = 1 << 4;
    /// The originator's [`super::Session::seq_end`] and window are known (from its first
    /// TCP segment seen); `SEQ_ORIG << 1` is the replier's.
    pub const SEQ_ORIG: u8 = 1 << 5;
    pub const SEQ_REPLY: u8 = 1 << 6;
}

/// [`SessionLeg::flags`] bits.
pub mod leg_flags {
    /// The session's END event (one for both legs) was sent while this leg was there.
    pub const ENDED: u8 = 1 << 0;
}

/// `MSEG_SESSIONS` value: what the connection did, and how each local interface judged it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Session {
    pub created_ns: u64,
    pub last_seen_ns: u64,
    /// Originator's packets and bytes, then the replier's; each packet counted once, by
    /// the first local program it passes.
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
    pub state: u8,
    /// [`session_flags`] bits.
    pub flags: u8,
    /// Each leg's last deny or log event, in [`event_tick`]s, for rate limiting.
    pub last_event: [u16; 2],
    /// TCP, per side: the window scale its SYN announced (RFC 7323), the shift that turns
    /// its raw windows after the SYN into bytes; 0 when either SYN went without the
    /// option, [`WIN_SCALE_UNKNOWN`] for a side learnt mid-stream.
    pub win_scale: [u8; 2],
    /// TCP, per side: the sequence number just past the highest one the side sent (data,
    /// SYN and FIN count) or the other side acknowledged, from segments inside the window
    /// only, so that a blind third party cannot move it.
    pub seq_end: [u32; 2],
    /// TCP, per side: the largest window the side advertised, in bytes (scaled). It
    /// bounds how far from the other side's [`Session::seq_end`] a segment its stack would
    /// accept can lie (docs/SECURITY.md, "TCP"). Valid once the side's
    /// `SEQ_ORIG`/`SEQ_REPLY` flag is set.
    pub max_win: [u32; 2],
    /// Indexed by the direction the leg judges, seen from its workload:
    /// `[direction::EGRESS]` is the originator's interface (its egress),
    /// `[direction::INGRESS]` the replier's (its ingress). Absent legs have ifindex 0.
    pub legs: [SessionLeg; 2],
}
const _: () = assert!(core::mem::size_of::<Session>() == 120);

/// [`Session::win_scale`] of a side whose SYN was not seen: the scale it uses is unknown,
/// and the window check assumes Linux's usual one (docs/SECURITY.md, "TCP").
pub const WIN_SCALE_UNKNOWN: u8 = 0xff;

/// One local interface's judgement of a session.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionLeg {
    /// The enforcing interface; 0 when no local interface judges this side.
    pub ifindex: u32,
    /// [`Config::generation`] the verdict was computed under.
    pub generation: u32,
    pub rule_id: u32,
    pub audit_rule_id: u32,
    pub peer_identity: u32,
    pub verdict: u8,
    pub audit_verdict: u8,
    /// [`leg_flags`] bits.
    pub flags: u8,
    pub _pad: u8,
}
const _: () = assert!(core::mem::size_of::<SessionLeg>() == 24);

/// [`Session::last_event`] counts ticks of 2^26 ns (67 ms). Sixteen bits of them wrap
/// after 73 minutes: only a leg silent for a multiple of that can notice, by its next event
/// coming up to a second late.
pub const EVENT_TICK_SHIFT: u32 = 26;

#[inline(always)]
pub const fn event_tick(now_ns: u64) -> u16 {
    (now_ns >> EVENT_TICK_SHIFT) as u16
}

/// The kernel's hash element header (48 bytes) + key + value make 208 bytes: 208 MiB of
/// elements for a 1,048,576-entry table (plus 16 MiB of buckets). It was 192 (three whole
/// cache lines) until the TCP window check (docs/SECURITY.md, "TCP: the receive window")
/// took 8 bytes, and 200 until windows in bytes and their scales took 8 more: no other field
/// could be narrowed without losing something.
const _: () =
    assert!(48 + core::mem::size_of::<SessionKey>() + core::mem::size_of::<Session>() == 208);

impl Session {
    /// Whether `leg` may send another deny or log event at `now_ns`.
    #[inline(always)]
    pub fn event_due(&self, leg: usize, now_ns: u64) -> bool {
        event_tick(now_ns).wrapping_sub(self.last_event[leg & 1]) >= crate::EVENT_INTERVAL_TICKS
    }
}

impl SessionLeg {
    #[inline(always)]
    pub fn is_present(&self) -> bool {
        self.ifindex != 0
    }

    /// Whether the session's END event was sent while this leg was there.
    #[inline(always)]
    pub fn has_ended(&self) -> bool {
        self.flags & leg_flags::ENDED != 0
    }
}

/// Which leg judges a packet that passes a program of `direction`: the originator's
/// packets leave through its egress leg and reach the replier's ingress leg, and replies
/// go the other way.
#[inline(always)]
pub const fn leg_of(direction: u8, is_orig: bool) -> usize {
    let d = (direction & 1) as usize;
    if is_orig {
        d
    } else {
        d ^ 1
    }
}

/// `MSEG_POLICY` key (hash) and `MSEG_PORT_RANGES` key (with kind [`policy_kind::RANGES`]).
///
/// A policy entry says: for endpoints of `profile`, in this direction and tier, packets
/// from/to a peer of identity `peer` (or any, [`IDENTITY_ANY`]) with this protocol and
/// destination port resolve to this winning rule. Userspace folds every less specific rule
/// into the more specific entries, so the first entry found along
/// exact port → port range → any port → any protocol is the answer for that peer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyKey {
    /// Endpoints selected by the same set of policies share a profile and their entries.
    pub profile: u32,
    pub peer: u32,
    /// Destination port, host byte order; 0 unless kind is [`policy_kind::PORT`].
    pub port: u16,
    /// 0 when kind is [`policy_kind::ANY_PROTOCOL`].
    pub protocol: u8,
    /// [`policy_key`] bits: slot, tier, direction and kind.
    pub flags: u8,
}
const _: () = assert!(core::mem::size_of::<PolicyKey>() == 12);

pub mod policy_kind {
    pub const PORT: u8 = 0;
    pub const ANY_PORT: u8 = 1;
    pub const ANY_PROTOCOL: u8 = 2;
    pub const RANGES: u8 = 3;
}

pub mod tier {
    /// Enforced policies.
    pub const ENFORCE: u8 = 0;
    /// Staged (`mode: audit`) policies: reported, never enforced.
    pub const AUDIT: u8 = 1;
}

/// Packing of [`PolicyKey::flags`].
pub mod policy_key {
    #[inline(always)]
    pub const fn flags(slot: u8, tier: u8, direction: u8, kind: u8) -> u8 {
        (slot & 1) | ((tier & 1) << 1) | ((direction & 1) << 2) | ((kind & 3) << 3)
    }
}

/// Rank of a rule: lower wins. Priority first, then deny before log before allow.
#[inline(always)]
pub const fn rank(priority: u32, verdict: u8) -> u32 {
    let precedence = match verdict {
        crate::verdict::DENY => 0,
        crate::verdict::LOG => 1,
        _ => 2,
    };
    priority * 4 + precedence
}

/// The verdict a rank stands for.
#[inline(always)]
pub const fn rank_verdict(rank: u32) -> u8 {
    match rank & 3 {
        0 => crate::verdict::DENY,
        1 => crate::verdict::LOG,
        _ => crate::verdict::ALLOW,
    }
}

/// Highest priority a policy may have so that its rank fits in 32 bits.
pub const MAX_PRIORITY: u32 = 1_000_000_000;

/// `MSEG_POLICY` value: the winning rule of the key, already resolved by userspace.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PolicyEntry {
    pub rank: u32,
    pub rule_id: u32,
}
const _: () = assert!(core::mem::size_of::<PolicyEntry>() == 8);

impl PolicyEntry {
    /// Lower rank wins; on equal rank, the lower rule id (as userspace resolves ties).
    #[inline(always)]
    pub fn beats(&self, other: &PolicyEntry) -> bool {
        self.rank < other.rank || (self.rank == other.rank && self.rule_id < other.rule_id)
    }
}

/// One interval of a [`PortRangeTable`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PortRangeEntry {
    /// Inclusive, host byte order.
    pub start: u16,
    pub end: u16,
    pub rank: u32,
    pub rule_id: u32,
}
const _: () = assert!(core::mem::size_of::<PortRangeEntry>() == 12);

/// `MSEG_PORT_RANGES` value: sorted, disjoint port intervals too wide to spell as single
/// ports, each with its winner (less specific rules already folded in).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PortRangeTable {
    pub count: u32,
    pub ranges: [PortRangeEntry; MAX_PORT_RANGES],
}
const _: () = assert!(core::mem::size_of::<PortRangeTable>() == 196);

/// One rule with `sourcePorts`, spelt out for one peer: it matches when the protocol
/// (0: any protocol with ports), destination port and source port all fall in.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SourcePortEntry {
    pub protocol: u8,
    pub _pad: [u8; 3],
    /// Inclusive, host byte order.
    pub dport_start: u16,
    pub dport_end: u16,
    pub sport_start: u16,
    pub sport_end: u16,
    pub rank: u32,
    pub rule_id: u32,
}
const _: () = assert!(core::mem::size_of::<SourcePortEntry>() == 20);

/// `MSEG_SPORT_RULES` value, keyed like a policy entry with kind PORT, port 0 and
/// protocol 0: the few rules that also match on the source port, which cannot be folded
/// into the destination-keyed entries. Checked only where
/// [`dir_flags::HAS_SOURCE_PORTS`] is set, and bounded. Entries are sorted by (rank, rule
/// id), so the first one that matches is the winner.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SourcePortTable {
    pub count: u32,
    pub entries: [SourcePortEntry; MAX_SOURCE_PORT_RULES],
}
const _: () = assert!(core::mem::size_of::<SourcePortTable>() == 324);

/// Data of the `MSEG_IDENTITIES` LPM key: slot, then the IPv4-mapped or IPv6 address.
/// The prefix length counts the 32 slot bits too.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IpKey {
    pub slot: u32,
    /// Network byte order, as the packet carries it.
    pub addr: [u32; 4],
}
const _: () = assert!(core::mem::size_of::<IpKey>() == 20);

/// `MSEG_IDENTITIES` value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IdentityEntry {
    pub identity: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<IdentityEntry>() == 8);

/// `MSEG_ENDPOINTS` key: an enforced interface in one slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EndpointKey {
    pub slot: u32,
    pub ifindex: u32,
}
const _: () = assert!(core::mem::size_of::<EndpointKey>() == 8);

/// Per (tier, direction) facts about an endpoint's policy, in [`EndpointInfo::dir_flags`].
pub mod dir_flags {
    /// Some policy of this tier selecting the endpoint has a section for the direction:
    /// no matching rule means default deny.
    pub const HAS_SECTION: u8 = 1 << 0;
    /// Some policy of this tier selects the endpoint (audit tier: verdicts are reported).
    pub const SELECTED: u8 = 1 << 1;
    /// Entries keyed by a specific peer identity exist.
    pub const PEER_SPECIFIC: u8 = 1 << 2;
    /// Entries keyed by [`super::IDENTITY_ANY`] exist.
    pub const PEER_ANY: u8 = 1 << 3;
    /// Port range tables exist.
    pub const HAS_RANGES: u8 = 1 << 4;
    /// Rules with `sourcePorts` exist ([`super::SourcePortTable`]).
    pub const HAS_SOURCE_PORTS: u8 = 1 << 5;
}

pub mod endpoint_flags {
    /// `mode: audit`: a deny is reported as audit and the packet passes.
    pub const AUDIT_MODE: u32 = 1 << 0;
    /// Egress source addresses must be the workload's own (IPv4).
    pub const VERIFY_SOURCE_V4: u32 = 1 << 1;
    /// Egress source addresses must be the workload's own (IPv6, link-local exempt).
    pub const VERIFY_SOURCE_V6: u32 = 1 << 2;
}

/// `MSEG_ENDPOINTS` value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EndpointInfo {
    pub profile: u32,
    /// The workload's own identity, reported in events.
    pub identity: u32,
    /// [`endpoint_flags`] bits.
    pub flags: u32,
    /// Indexed by `tier * 2 + direction`.
    pub dir_flags: [u8; 4],
}
const _: () = assert!(core::mem::size_of::<EndpointInfo>() == 16);

/// `MSEG_ENDPOINT_ADDRS` key: an address the workload behind `ifindex` may send from.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EndpointAddrKey {
    pub slot: u32,
    pub ifindex: u32,
    pub addr: [u32; 4],
}
const _: () = assert!(core::mem::size_of::<EndpointAddrKey>() == 24);

/// `MSEG_FRAGMENTS` key (LRU hash): identifies the fragments of one IP datagram.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragmentKey {
    pub ifindex: u32,
    pub src: [u32; 4],
    pub dst: [u32; 4],
    pub id: u32,
    pub protocol: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(core::mem::size_of::<FragmentKey>() == 44);

/// `MSEG_FRAGMENTS` value: the first fragment's verdict, followed by the later ones.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragmentEntry {
    pub verdict: u8,
    pub _pad: [u8; 3],
    pub rule_id: u32,
}
const _: () = assert!(core::mem::size_of::<FragmentEntry>() == 8);

/// `MSEG_RULE_COUNTERS[rule_id]` (per-CPU array).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleCounter {
    pub packets: u64,
    pub bytes: u64,
}
const _: () = assert!(core::mem::size_of::<RuleCounter>() == 16);

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    #[test]
    fn a_leg_sends_at_most_one_deny_or_log_event_a_second() {
        let t0 = 5_000 * SECOND;
        let mut s = Session::default();
        s.last_event[1] = event_tick(t0);
        assert!(!s.event_due(1, t0));
        assert!(!s.event_due(1, t0 + SECOND - 1));
        assert!(s.event_due(1, t0 + SECOND + 75_000_000));
        // Wherever in its tick the last event fell: never less than a second apart.
        for offset in (0..1u64 << EVENT_TICK_SHIFT).step_by(1 << 20) {
            s.last_event[1] = event_tick(t0 + offset);
            assert!(!s.event_due(1, t0 + offset + SECOND));
            assert!(s.event_due(1, t0 + offset + SECOND + 75_000_000));
        }
        // Each leg keeps its own clock.
        assert!(s.event_due(0, t0));
    }

    #[test]
    fn the_tick_clock_wraps_without_silencing_a_leg() {
        // The last event just before the 16-bit tick wraps; the next second is past it.
        let wrap = (1u64 << 16) << EVENT_TICK_SHIFT;
        let last = wrap - 2 * (1 << EVENT_TICK_SHIFT);
        let mut s = Session::default();
        s.last_event[0] = event_tick(last);
        assert!(!s.event_due(0, last + SECOND / 2));
        assert!(s.event_due(0, last + 2 * SECOND));
    }
}
