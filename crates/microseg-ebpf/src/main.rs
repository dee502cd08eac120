//! microseg's TC classifiers.
//!
//! Two entry points share one code path: `microseg_from_workload` sits on the host side's
//! TC ingress hook (what the workload sends: its egress) and `microseg_to_workload` on the
//! TC egress hook (what is delivered to it: its ingress). Packets of a current session end
//! there; the rest continue, by tail call, in `microseg_slow_path`.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod events;
#[cfg(target_arch = "bpf")]
mod fast_path;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod parse;
#[cfg(target_arch = "bpf")]
mod policy;
#[cfg(target_arch = "bpf")]
mod reference;
#[cfg(target_arch = "bpf")]
mod session;
#[cfg(target_arch = "bpf")]
mod shared;
#[cfg(target_arch = "bpf")]
mod slow_path;

#[cfg(target_arch = "bpf")]
mod programs {
    use aya_ebpf::{macros::classifier, programs::TcContext};
    use microseg_common::direction;

    #[classifier]
    pub fn microseg_from_workload(ctx: TcContext) -> i32 {
        crate::fast_path::handle(&ctx, direction::EGRESS)
    }

    #[classifier]
    pub fn microseg_to_workload(ctx: TcContext) -> i32 {
        crate::fast_path::handle(&ctx, direction::INGRESS)
    }

    /// Reached by tail call from the two above for packets that need a policy decision.
    #[classifier]
    pub fn microseg_slow_path(ctx: TcContext) -> i32 {
        crate::slow_path::handle(&ctx)
    }

    /// The cheapest possible classifier: the benchmark's floor.
    #[classifier]
    pub fn microseg_pass(_ctx: TcContext) -> i32 {
        0
    }

    /// One hit in an LRU hash the session table's size: the bench's reference for an
    /// established packet (docs/PERFORMANCE.md section 1). Never attached.
    #[classifier]
    pub fn microseg_lru_reference(ctx: TcContext) -> i32 {
        crate::reference::handle(&ctx)
    }
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// SAFETY: a plain byte array in the section the kernel reads the licence from; the
// symbol name is unique in the object.
#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";

#[cfg(not(target_arch = "bpf"))]
fn main() {}
