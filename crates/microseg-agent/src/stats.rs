//! The `stats` object: the contract's keys, then the rest of the kernel's counters.

use microseg_common::Stats;
use serde_json::{json, Value};

pub fn stats_json(s: &Stats, sessions: usize) -> Value {
    json!({
        "packets": s.packets,
        "bytes": s.bytes,
        "allowed": s.allowed(),
        "denied": s.denied(),
        "logged": s.logged(),
        "audited": s.audited(),
        "session_hits": s.session_hits,
        "session_misses": s.session_misses,
        "sessions": sessions,
        "parse_errors": s.parse_errors,
        "fragments": s.fragments,
        "events_lost": s.events_lost,
        "sessions_created": s.sessions_created,
        "sessions_closed": s.sessions_closed,
        "rejudged": s.rejudged,
        "fragments_dropped": s.fragments_dropped,
        "arp": s.arp,
        "neighbor_discovery": s.neighbor_discovery,
        "non_ip": s.non_ip,
        "non_ip_dropped": s.non_ip_dropped,
        "spoofed": s.spoofed,
        "icmp_related": s.icmp_related,
        "vlan": s.vlan,
    })
}
