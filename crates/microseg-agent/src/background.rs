//! The agent's background work, each a task of its own and a client of the state owner:
//! reading flow events, expiring idle sessions, catching the standby slot up.

use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use microseg_common::FlowEvent;
use microseg_dataplane::sessions::{end_events, idle, monotonic_ns, Timeouts};

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

/// Names `events` with the view in force and adds them to the flow log.
fn keep_flows(state: &DataPlaneHandle, events: impl Iterator<Item = FlowEvent>) {
    let clock = Clock::now();
    let view = state.view();
    let names = Names {
        endpoints: &view.endpoints,
        rules: &view.rules,
    };
    let mut log = state.flows();
    for e in events {
        log.push(names.flow(&e, &clock));
    }
}

/// Every `interval`, removes the sessions idle by then.
pub async fn expire_sessions(interval: Duration, state: DataPlaneHandle) {
    let mut tick = tokio::time::interval(interval);
    loop {
        tick.tick().await;
        expire_idle(&state, &Timeouts::default(), monotonic_ns()).await;
    }
}

/// Removes the sessions idle at `now_ns` (on the kernel's monotonic clock) past their
/// timeout, reporting each as an ended flow.
pub async fn expire_idle(state: &DataPlaneHandle, timeouts: &Timeouts, now_ns: u64) -> usize {
    let expired = idle(state.sessions().await, timeouts, now_ns);
    if expired.is_empty() {
        return 0;
    }
    let keys = expired.iter().map(|(k, _)| *k).collect();
    match state.remove_sessions(keys).await {
        Some(Ok(_)) => {}
        Some(Err(e)) => {
            tracing::warn!(error = %e, "session expiry failed");
            return 0;
        }
        None => return 0, // the owner has stopped: the agent is ending
    }
    let ended = expired.iter().flat_map(|(k, s)| end_events(k, s));
    keep_flows(state, ended);
    expired.len()
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
