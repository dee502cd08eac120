//! Data-plane counters: `MSEG_STATS[0]`, one copy per CPU, summed by userspace.

/// Every counter the kernel keeps. Field names are the keys of `microseg stats -o json`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub packets: u64,
    pub bytes: u64,
    /// Packets by verdict code (`crate::verdict`): allowed, denied, logged, audited.
    pub verdicts: [u64; 8],
    /// Packets whose session, or denied tuple's entry (`MSEG_DENIED`), was found.
    pub session_hits: u64,
    pub session_misses: u64,
    /// Sessions inserted into `MSEG_SESSIONS`; a denied tuple's entry is not one.
    pub sessions_created: u64,
    /// TCP sessions removed by their connection's last packet (RST, or the final ACK).
    pub sessions_closed: u64,
    /// Packets judged again because the policy changed since their session's verdict.
    pub rejudged: u64,
    pub parse_errors: u64,
    pub fragments: u64,
    /// Later fragments with no known first fragment.
    pub fragments_dropped: u64,
    pub events_lost: u64,
    pub arp: u64,
    /// IPv6 neighbour discovery (ICMPv6 133-137).
    pub neighbor_discovery: u64,
    pub non_ip: u64,
    pub non_ip_dropped: u64,
    /// Egress packets whose source address is not the workload's.
    pub spoofed: u64,
    /// ICMP errors passed because they belong to an allowed session.
    pub icmp_related: u64,
    pub vlan: u64,
}
const _: () = assert!(core::mem::size_of::<Stats>() == 208);

impl Stats {
    /// Field-wise sum, for adding up the per-CPU copies.
    pub fn add(&mut self, o: &Stats) {
        macro_rules! sum {
            ($($f:ident),*) => { $( self.$f = self.$f.wrapping_add(o.$f); )* };
        }
        sum!(
            packets,
            bytes,
            session_hits,
            session_misses,
            sessions_created,
            sessions_closed,
            rejudged,
            parse_errors,
            fragments,
            fragments_dropped,
            events_lost,
            arp,
            neighbor_discovery,
            non_ip,
            non_ip_dropped,
            spoofed,
            icmp_related,
            vlan
        );
        for (a, b) in self.verdicts.iter_mut().zip(o.verdicts) {
            *a = a.wrapping_add(b);
        }
    }

    pub fn allowed(&self) -> u64 {
        self.verdicts[crate::verdict::ALLOW as usize]
    }
    pub fn denied(&self) -> u64 {
        self.verdicts[crate::verdict::DENY as usize]
    }
    pub fn logged(&self) -> u64 {
        self.verdicts[crate::verdict::LOG as usize]
    }
    pub fn audited(&self) -> u64 {
        self.verdicts[crate::verdict::AUDIT as usize]
    }
}
