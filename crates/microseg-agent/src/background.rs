//! The agent's background work, each a task of its own and a client of the state owner:
//! reading flow events, catching the standby slot up (the session table's walk is
//! [`crate::export`]).

use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use microseg_common::FlowEvent;

use crate::flows::{Clock, Names};
use crate::handle::DataPlaneHandle;

/// How often the event ring is drained. The kernel submits events without waking us
/// (a wake-up per event costs the sender an interrupt), so the agent polls instead.
const EVENT_POLL: Duration = Duration::from_millis(20);
/// An empty ring doubles the wait up to this, so an idle agent wakes a few times a second;
/// the first event brings the wait back to [`EVENT_POLL`].
const EVENT_POLL_IDLE: Duration = Duration::from_millis(320);

/// How soon after an update the standby slot is brought up to date.
const STANDBY_DELAY: Duration = Duration::from_millis(200);

/// Reads the kernel's flow events and keeps them, named as of the policy in force.
pub async fn read_events(mut rb: RingBuf<MapData>, state: DataPlaneHandle) {
    let mut wait = EVENT_POLL;
    let mut batch = Vec::new();
    loop {
        tokio::time::sleep(wait).await;
        while let Some(item) = rb.next() {
            if item.len() >= std::mem::size_of::<FlowEvent>() {
                // SAFETY: the kernel wrote a FlowEvent; read_unaligned copes with any alignment.
                batch.push(unsafe { std::ptr::read_unaligned(item.as_ptr() as *const FlowEvent) });
            }
        }
        if batch.is_empty() {
            wait = (wait * 2).min(EVENT_POLL_IDLE);
            continue;
        }
        wait = EVENT_POLL;
        keep_flows(&state, batch.drain(..));
    }
}

/// Names `events` with the view in force and adds their flows to the flow log.
pub(crate) fn keep_flows(state: &DataPlaneHandle, events: impl Iterator<Item = FlowEvent>) {
    let clock = Clock::now();
    let view = state.view();
    let names = Names {
        endpoints: &view.endpoints,
        rules: &view.rules,
    };
    let mut log = state.flows();
    for e in events {
        for flow in names.flows(&e, &clock) {
            log.push(flow);
        }
    }
}

/// After an update the standby slot lacks that update's changes: it is caught up once, a
/// moment later, instead of polled (a timer that wakes the agent costs a TCP stream here
/// even when it finds nothing to do). Updates meanwhile do not postpone it.
pub async fn catch_up_standby(state: DataPlaneHandle) {
    loop {
        state.standby_behind().notified().await;
        tokio::time::sleep(STANDBY_DELAY).await;
        state.catch_up_standby();
    }
}
