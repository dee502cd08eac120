//! Types shared by the kernel programs (`microseg-ebpf`) and userspace.
//!
//! Every struct here is `#[repr(C)]` with explicit padding: the kernel and userspace read
//! the same bytes, and the hash maps hash every byte of a key, so no byte may be left
//! uninitialised. Each map type's size is asserted next to it at compile time: a change
//! there changes the maps' layout, which the maps an older build pinned no longer match.
#![cfg_attr(not(feature = "std"), no_std)]

pub mod event;
pub mod maps;
pub mod stats;
#[cfg(feature = "std")]
pub mod tables;
#[cfg(feature = "std")]
pub mod time;

pub use event::*;
pub use maps::*;
pub use stats::*;

/// Verdict codes carried in sessions, events and fragment entries.
pub mod verdict {
    pub const NONE: u8 = 0;
    pub const ALLOW: u8 = 1;
    pub const DENY: u8 = 2;
    pub const LOG: u8 = 3;
    /// A deny on a workload in audit mode: reported, not enforced.
    pub const AUDIT: u8 = 4;
}

/// Which way a packet goes, seen from the workload.
pub mod direction {
    /// Delivered to the workload: the host side's TC egress hook.
    pub const INGRESS: u8 = 0;
    /// Sent by the workload: the host side's TC ingress hook.
    pub const EGRESS: u8 = 1;
}

/// IANA protocol numbers the data plane treats specially.
pub mod proto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ICMPV6: u8 = 58;
    pub const SCTP: u8 = 132;

    /// Protocols whose rules may name ports.
    #[inline(always)]
    pub const fn has_ports(p: u8) -> bool {
        p == TCP || p == UDP || p == SCTP
    }
}

#[cfg(feature = "user")]
mod pod {
    use super::*;

    macro_rules! pod {
        ($($t:ty),* $(,)?) => {
            $(
                // SAFETY: `#[repr(C)]` and `Copy`, made of integers and arrays of them only:
                // every bit pattern is a valid value, laid out as the kernel lays it out.
                unsafe impl aya::Pod for $t {}
            )*
        };
    }

    pod!(
        SessionKey,
        Session,
        PolicyKey,
        PolicyEntry,
        PortRangeTable,
        SourcePortTable,
        IpKey,
        IdentityEntry,
        EndpointKey,
        EndpointInfo,
        EndpointAddrKey,
        FragmentKey,
        FragmentEntry,
        Config,
        Stats,
        RuleCounter,
        FlowEvent,
    );
}
