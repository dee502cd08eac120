//! Reading the session table and removing expired sessions.

use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use std::sync::Arc;

use aya::maps::{HashMap, IterableMap, Map, MapData};
use microseg_common::{direction, names, proto, session_state as st, Session, SessionKey};

use crate::{batch, Dataplane, Error, Result};

/// Idle time after which a session is removed, by protocol and state.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub tcp_opening: Duration,
    pub tcp_established: Duration,
    pub tcp_closing: Duration,
    pub udp: Duration,
    pub icmp: Duration,
    pub other: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp_opening: Duration::from_secs(60),
            tcp_established: Duration::from_secs(6 * 3600),
            tcp_closing: Duration::from_secs(10),
            udp: Duration::from_secs(60),
            icmp: Duration::from_secs(30),
            other: Duration::from_secs(60),
        }
    }
}

impl Timeouts {
    pub fn for_session(&self, key: &SessionKey, s: &Session) -> Duration {
        match key.protocol {
            proto::TCP => match s.state {
                st::SYN_SENT | st::SYN_RECV => self.tcp_opening,
                st::CLOSING | st::CLOSED => self.tcp_closing,
                _ => self.tcp_established,
            },
            proto::UDP => self.udp,
            proto::ICMP | proto::ICMPV6 => self.icmp,
            _ => self.other,
        }
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the clock `bpf_ktime_get_ns` reads.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub fn state_name(state: u8) -> &'static str {
    match state {
        st::NEW => "NEW",
        st::SYN_SENT => "SYN_SENT",
        st::SYN_RECV => "SYN_RECV",
        st::ESTABLISHED => "ESTABLISHED",
        st::CLOSING => "CLOSING",
        st::CLOSED => "CLOSED",
        _ => "UNKNOWN",
    }
}

type SessionMap = HashMap<MapData, SessionKey, Session>;

/// A failed system call on the session table, as aya would report it.
fn syscall_error(call: &'static str, io_error: std::io::Error) -> aya::maps::MapError {
    aya::sys::SyscallError { call, io_error }.into()
}

/// Every session: read in batches, or one key at a time where the kernel has no batch reads.
fn read_all(map: &SessionMap) -> Vec<(SessionKey, Session)> {
    batch::lookup_all(map.map().fd().as_fd()).unwrap_or_else(|_| read_one_by_one(map))
}

/// Two system calls per session.
fn read_one_by_one(map: &SessionMap) -> Vec<(SessionKey, Session)> {
    map.iter().filter_map(|r| r.ok()).collect()
}

/// Sessions whose idle time at `now_ns` exceeds their timeout. `now_ns` is on the clock of
/// [`monotonic_ns`], which the kernel stamps sessions with.
pub fn idle(
    sessions: Vec<(SessionKey, Session)>,
    timeouts: &Timeouts,
    now_ns: u64,
) -> Vec<(SessionKey, Session)> {
    sessions
        .into_iter()
        .filter(|(k, s)| {
            now_ns.saturating_sub(s.last_seen_ns) > timeouts.for_session(k, s).as_nanos() as u64
        })
        .collect()
}

/// A handle of its own on the session table, so that it can be read without the
/// [`Dataplane`], and so without holding whatever guards it: a million sessions take a
/// good part of a second to read.
#[derive(Clone)]
pub struct SessionReader(Arc<SessionMap>);

impl SessionReader {
    pub fn sessions(&self) -> Vec<(SessionKey, Session)> {
        read_all(&self.0)
    }

    /// Calls `f` with every session, a batch at a time: a walk of a full table does not
    /// hold a copy of it (a million sessions are 160 MB).
    pub fn for_each(&self, mut f: impl FnMut(&SessionKey, &Session)) {
        let batched = batch::for_each_batch(self.0.map().fd().as_fd(), |keys, values| {
            keys.iter().zip(values).for_each(|(k, s)| f(k, s))
        });
        if batched.is_err() {
            for (k, s) in self.0.iter().filter_map(|r| r.ok()) {
                f(&k, &s);
            }
        }
    }
}

impl Dataplane {
    fn sessions_fd(&self) -> BorrowedFd<'_> {
        self.sessions.map().fd().as_fd()
    }

    /// A second handle on the session table (see [`SessionReader`]).
    pub fn session_reader(&self) -> Result<SessionReader> {
        let fd = self
            .sessions_fd()
            .try_clone_to_owned()
            .map_err(|e| Error::map_open(names::SESSIONS)(syscall_error("dup", e)))?;
        let map = MapData::from_fd(fd)
            .and_then(Map::from_map_data)
            .and_then(SessionMap::try_from)
            .map_err(Error::map_open(names::SESSIONS))?;
        Ok(SessionReader(Arc::new(map)))
    }

    /// Every session in the table.
    pub fn sessions(&self) -> Vec<(SessionKey, Session)> {
        read_all(&self.sessions)
    }

    /// Every session, one key at a time (the fallback of [`Dataplane::sessions`]).
    pub fn sessions_one_by_one(&self) -> Vec<(SessionKey, Session)> {
        read_one_by_one(&self.sessions)
    }

    /// Sessions in the table (a connection between two local workloads is one).
    pub fn session_count(&self) -> usize {
        self.sessions().len()
    }

    /// Removes sessions idle at `now_ns` (see [`idle`]) for longer than their timeout;
    /// returns them as they were.
    pub fn expire_sessions(
        &mut self,
        timeouts: &Timeouts,
        now_ns: u64,
    ) -> Result<Vec<(SessionKey, Session)>> {
        let expired = idle(self.sessions(), timeouts, now_ns);
        let keys: Vec<SessionKey> = expired.iter().map(|(k, _)| *k).collect();
        self.remove_sessions(&keys)?;
        Ok(expired)
    }

    /// Removes these sessions, in batches; keys already gone (evicted by the LRU meanwhile)
    /// are skipped. Returns how many were removed.
    pub fn remove_sessions(&mut self, keys: &[SessionKey]) -> Result<usize> {
        match batch::delete_all(self.sessions_fd(), keys) {
            Ok(n) => Ok(n),
            // A kernel without batch deletes (before 5.6): one key at a time.
            Err(e) if batch::unsupported(&e) => {
                let mut removed = 0;
                for k in keys {
                    match self.sessions.remove(k) {
                        Ok(()) => removed += 1,
                        Err(aya::maps::MapError::KeyNotFound) => {}
                        Err(e) => return Err(Error::map_write(names::SESSIONS)(e)),
                    }
                }
                Ok(removed)
            }
            Err(e) => Err(Error::map_write(names::SESSIONS)(syscall_error(
                "bpf_map_delete_batch",
                e,
            ))),
        }
    }

    /// Empties the session table and the denied tuples' (used by tests and `--cleanup`).
    pub fn clear_sessions(&mut self) {
        for map in [&mut self.sessions, &mut self.denied] {
            let keys: Vec<_> = map.keys().filter_map(|k| k.ok()).collect();
            for k in keys {
                let _ = map.remove(&k);
            }
        }
    }

    /// Tuples every present local leg denies: kept apart from the session table, in an LRU
    /// of their own (`MSEG_DENIED`, docs/SECURITY.md "Floods of new tuples").
    pub fn denied_sessions(&self) -> Vec<(SessionKey, Session)> {
        read_all(&self.denied)
    }
}

impl Dataplane {
    /// The session of a connection, found from either direction's tuple.
    pub fn session_for(
        &self,
        protocol: u8,
        src: std::net::IpAddr,
        sport: u16,
        dst: std::net::IpAddr,
        dport: u16,
    ) -> Option<(SessionKey, Session)> {
        find_tuple(&self.sessions, protocol, (src, sport), (dst, dport))
    }

    /// A denied tuple's entry (see [`Dataplane::denied_sessions`]), found from either
    /// direction's tuple.
    pub fn denied_for(
        &self,
        protocol: u8,
        src: std::net::IpAddr,
        sport: u16,
        dst: std::net::IpAddr,
        dport: u16,
    ) -> Option<(SessionKey, Session)> {
        find_tuple(&self.denied, protocol, (src, sport), (dst, dport))
    }
}

fn find_tuple(
    map: &SessionMap,
    protocol: u8,
    src: (std::net::IpAddr, u16),
    dst: (std::net::IpAddr, u16),
) -> Option<(SessionKey, Session)> {
    use microseg_common::tables::addr_words;
    let (a, b) = ((addr_words(src.0), src.1), (addr_words(dst.0), dst.1));
    [(a, b), (b, a)].into_iter().find_map(|(lo, hi)| {
        let key = SessionKey {
            lo_addr: lo.0,
            hi_addr: hi.0,
            lo_port: lo.1,
            hi_port: hi.1,
            protocol,
            _pad: [0; 3],
        };
        map.get(&key, 0).ok().map(|s| (key, s))
    })
}

/// The END event the kernel would have sent had it seen the session end (for sessions that
/// expire idle, which the kernel never sees end): one per session, about the egress leg
/// when there is one, with the other leg in `other`, as the kernel sends it. None when the
/// session has no present leg, or the kernel already sent its end (every present leg ended).
pub fn end_event(key: &SessionKey, s: &Session) -> Option<microseg_common::FlowEvent> {
    if s.present_legs().all(|(_, l)| l.has_ended()) {
        return None;
    }
    let direction = [direction::EGRESS, direction::INGRESS]
        .into_iter()
        .find(|d| s.legs[*d as usize].is_present())?;
    let mut e = microseg_common::FlowEvent::default();
    e.fill_from_session(
        microseg_common::event_kind::END,
        key,
        s,
        direction as usize,
        s.last_seen_ns,
    );
    Some(e)
}
