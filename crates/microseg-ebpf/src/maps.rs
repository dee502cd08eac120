//! Every map of the data plane. Keys and values are documented on their types in
//! `microseg_common::maps`; capacities there are defaults userspace may change at load.

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, ProgramArray, RingBuf},
};
use microseg_common::*;

use crate::parse::Packet;

/// `[0]`: active slot, generation, options.
#[map]
pub static MSEG_CONFIG: Array<Config> = Array::with_max_entries(1, 0);

/// Connection → session, shared by the connection's local interfaces (its legs). LRU: a
/// full table forgets the least recently used session.
#[map]
pub static MSEG_SESSIONS: LruHashMap<SessionKey, Session> =
    LruHashMap::with_max_entries(capacity::SESSIONS, 0);

/// Connection → session, for tuples every present leg denies (docs/SECURITY.md, "Floods
/// of new tuples"): kept apart so that a flood of them evicts only its own kind, never an
/// allowed session. Looked up only after `MSEG_SESSIONS` misses.
#[map]
pub static MSEG_DENIED: LruHashMap<SessionKey, Session> =
    LruHashMap::with_max_entries(capacity::DENIED, 0);

/// First fragment's verdict, for the later fragments of the same datagram.
#[map]
pub static MSEG_FRAGMENTS: LruHashMap<FragmentKey, FragmentEntry> =
    LruHashMap::with_max_entries(capacity::FRAGMENTS, 0);

/// (slot, ifindex) → the endpoint's profile, identity and flags.
#[map]
pub static MSEG_ENDPOINTS: HashMap<EndpointKey, EndpointInfo> =
    HashMap::with_max_entries(capacity::ENDPOINTS, BPF_F_NO_PREALLOC);

/// (slot, ifindex, address) → present when the workload may send from that address.
#[map]
pub static MSEG_ENDPOINT_ADDRS: HashMap<EndpointAddrKey, u32> =
    HashMap::with_max_entries(capacity::ENDPOINT_ADDRS, BPF_F_NO_PREALLOC);

/// (slot, address prefix) → peer identity, longest prefix wins. Holds the CIDR prefixes;
/// single addresses are in MSEG_HOST_IDENTITIES.
#[map]
pub static MSEG_IDENTITIES: LpmTrie<IpKey, IdentityEntry> =
    LpmTrie::with_max_entries(capacity::IDENTITIES, BPF_F_NO_PREALLOC);

/// (slot, address) → identity of a single address (/32, /128: workloads, host CIDRs).
/// An exact hash lookup is several times cheaper than the trie, and a full-length
/// prefix is the longest match there could be, so a hit here is the answer.
#[map]
pub static MSEG_HOST_IDENTITIES: HashMap<IpKey, IdentityEntry> =
    HashMap::with_max_entries(capacity::HOST_IDENTITIES, BPF_F_NO_PREALLOC);

/// (profile, peer, port, protocol, slot/tier/direction/kind) → winning rule.
#[map]
pub static MSEG_POLICY: HashMap<PolicyKey, PolicyEntry> =
    HashMap::with_max_entries(capacity::POLICY, BPF_F_NO_PREALLOC);

/// Same key with kind RANGES → wide port intervals and their winners.
#[map]
pub static MSEG_PORT_RANGES: HashMap<PolicyKey, PortRangeTable> =
    HashMap::with_max_entries(capacity::PORT_RANGES, BPF_F_NO_PREALLOC);

/// Same key, kind PORT, port and protocol 0 → rules that also match source ports.
#[map]
pub static MSEG_SPORT_RULES: HashMap<PolicyKey, SourcePortTable> =
    HashMap::with_max_entries(capacity::SOURCE_PORT_RULES, BPF_F_NO_PREALLOC);

/// `[0]`: the counters, one copy per CPU.
#[map]
pub static MSEG_STATS: PerCpuArray<Stats> = PerCpuArray::with_max_entries(1, 0);

/// `[rule_id]`: packets and bytes of the sessions each rule decided.
#[map]
pub static MSEG_RULE_COUNTERS: PerCpuArray<RuleCounter> =
    PerCpuArray::with_max_entries(capacity::RULES, 0);

/// Flow events for userspace.
#[map]
pub static MSEG_EVENTS: RingBuf = RingBuf::with_byte_size(capacity::EVENTS_BYTES, 0);

/// `[SLOW_PATH]`: the program that judges packets without a current session. A tail call
/// keeps the fast path small and lets the verifier check each half on its own.
#[map]
pub static MSEG_JUMP: ProgramArray = ProgramArray::with_max_entries(1, 0);
pub const SLOW_PATH: u32 = 0;

/// What the fast path hands to the slow path, per CPU (a TC program runs to completion
/// on its CPU, so the slot cannot be overwritten in between).
#[derive(Clone, Copy, Default)]
pub struct Handoff {
    pub pkt: Packet,
    pub len: u64,
    pub ifindex: u32,
    pub direction: u8,
    /// The packet has a session, but its leg on this interface is missing or was judged
    /// under an older generation: the slow path looks the session up again only then.
    pub has_session: bool,
    /// The fast path found the tuple in `MSEG_DENIED` (not in `MSEG_SESSIONS`).
    pub denied: bool,
    /// Scratch space where the slow path builds a session before inserting it: a session
    /// does not fit on the 512-byte stack beside the rest.
    pub new_session: Session,
}

/// The handoff map's value size, which a pinned map of an older build must match.
const _: () = assert!(core::mem::size_of::<Handoff>() == 208);

#[map]
pub static MSEG_HANDOFF: PerCpuArray<Handoff> = PerCpuArray::with_max_entries(1, 0);
