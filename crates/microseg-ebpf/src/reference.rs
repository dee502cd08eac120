//! The bench's reference for an established packet (docs/PERFORMANCE.md section 1): the
//! least a stateful filter pays, one hit in an LRU hash shaped like the session table
//! (1,048,576 entries, the 40-byte `SessionKey`, a `Session` value), after the least
//! parsing that finds the key. It exists for `BPF_PROG_TEST_RUN` only; nothing attaches it.

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    macros::map,
    maps::LruHashMap,
    programs::TcContext,
};
use microseg_common::{capacity, proto, Session, SessionKey};

use crate::parse::{read, V4_MAPPED_WORD};

/// Same capacity, key and value as `MSEG_SESSIONS`. Userspace loads it with one entry
/// unless asked (the bench) for its full size: a preallocated LRU of this size is memory
/// an agent has no use for.
#[map]
pub static MSEG_LRU_REFERENCE: LruHashMap<SessionKey, Session> =
    LruHashMap::with_max_entries(capacity::SESSIONS, 0);

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;

/// TC_ACT_OK on a hit; TC_ACT_SHOT when the frame is not untagged IPv4 TCP or the key is
/// missing, so the bench can tell that every run hit.
#[inline(always)]
pub fn handle(ctx: &TcContext) -> i32 {
    match key(ctx) {
        Some(k) if MSEG_LRU_REFERENCE.get_ptr(&k).is_some() => TC_ACT_OK as i32,
        _ => TC_ACT_SHOT as i32,
    }
}

/// Ethernet type, IPv4 header (its length from IHL), TCP ports: what any filter must read
/// to find the connection of this frame. The key is built as the session table's is
/// (`session::session_key`: IPv4-mapped addresses, lower endpoint first).
#[inline(always)]
fn key(ctx: &TcContext) -> Option<SessionKey> {
    let ethertype = u16::from_be(read::<u16>(ctx, 12)?);
    if ethertype != ETH_P_IP {
        return None;
    }
    let ip = read::<[u32; 5]>(ctx, ETH_HLEN)?;
    let ihl = (ip[0].to_ne_bytes()[0] & 0x0f) as usize * 4;
    if ihl < 20 || ip[2].to_ne_bytes()[1] != proto::TCP {
        return None;
    }
    let ports = read::<[u16; 2]>(ctx, ETH_HLEN + ihl)?;
    let (src, dst) = (ip[3], ip[4]);
    let (sport, dport) = (u16::from_be(ports[0]), u16::from_be(ports[1]));
    // The first three words of two IPv4-mapped addresses are equal: the fourth decides.
    let src_is_lo = src < dst || (src == dst && sport <= dport);
    let ((lo, lo_port), (hi, hi_port)) = if src_is_lo {
        ((src, sport), (dst, dport))
    } else {
        ((dst, dport), (src, sport))
    };
    Some(SessionKey {
        lo_addr: [0, 0, V4_MAPPED_WORD, lo],
        hi_addr: [0, 0, V4_MAPPED_WORD, hi],
        lo_port,
        hi_port,
        protocol: proto::TCP,
        _pad: [0; 3],
    })
}
