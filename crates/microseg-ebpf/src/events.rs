//! Flow events to userspace. A full ring buffer is counted, never silent.

use aya_ebpf::bindings::BPF_RB_NO_WAKEUP;
use microseg_common::*;

use crate::maps::MSEG_EVENTS;

/// Reserves an event, lets `fill` write every field in place (no copy on the small BPF
/// stack), and submits it.
#[inline(always)]
pub fn emit(stats: &mut Stats, fill: impl FnOnce(&mut FlowEvent)) {
    let Some(mut entry) = MSEG_EVENTS.reserve::<FlowEvent>(0) else {
        stats.events_lost += 1;
        return;
    };
    // SAFETY: the reservation is sized for a FlowEvent and `fill` writes all of it.
    let e = unsafe { &mut *entry.as_mut_ptr() };
    e._pad = [0; 3];
    fill(e);
    // No wake-up: the agent polls the ring. Waking it costs the sending packet an
    // interrupt, which on a busy node is most of a new connection's cost.
    entry.submit(BPF_RB_NO_WAKEUP as u64);
}
