//! Running the programs on crafted packets with `BPF_PROG_TEST_RUN`.

use std::time::Duration;

use std::os::fd::AsFd;

use aya::{
    maps::{HashMap, IterableMap, MapData},
    programs::{TestRun, TestRunOptions},
};
use microseg_common::{Session, SessionKey};

use crate::{
    batch,
    loader::{
        MAP_LRU_REFERENCE, PROG_FROM_WORKLOAD, PROG_LRU_REFERENCE, PROG_PASS, PROG_TO_WORKLOAD,
    },
    Dataplane, Error, Result,
};

/// Which program a packet goes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// The workload sends (host side's TC ingress).
    FromWorkload,
    /// The workload receives (host side's TC egress).
    ToWorkload,
    /// The do-nothing classifier: the benchmark's floor.
    Pass,
    /// One lookup in an LRU hash the session table's size (TC_ACT_OK on a hit, else
    /// TC_ACT_SHOT): the benchmark's reference for an established packet. Its map is
    /// filled with [`Dataplane::fill_lru_reference`].
    LruReference,
}

impl Hook {
    pub(crate) fn program(self) -> &'static str {
        match self {
            Hook::FromWorkload => PROG_FROM_WORKLOAD,
            Hook::ToWorkload => PROG_TO_WORKLOAD,
            Hook::Pass => PROG_PASS,
            Hook::LruReference => PROG_LRU_REFERENCE,
        }
    }
}

/// What a test run returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunResult {
    /// The TC action: 0 passes, 2 drops.
    pub action: u32,
    /// Mean time per repetition, as the kernel measured it.
    pub per_run: Duration,
}

impl RunResult {
    pub fn passed(&self) -> bool {
        self.action == 0
    }
}

/// `struct __sk_buff` is 192 bytes; userspace may set `ifindex` (offset 40), `gso_size`
/// (offset 176) and a few others.
const SKB_CTX_LEN: usize = 192;
const SKB_IFINDEX_OFFSET: usize = 40;
const SKB_GSO_SIZE_OFFSET: usize = 176;

impl Dataplane {
    /// Runs `frame` (an Ethernet frame) through one program `repeat` times, as if it crossed
    /// interface `ifindex` (which must exist in the caller's network namespace; 1 is `lo`).
    pub fn test_run(
        &self,
        hook: Hook,
        frame: &[u8],
        ifindex: u32,
        repeat: u32,
    ) -> Result<RunResult> {
        self.run_with_ctx(hook, frame, skb_ctx(ifindex, 0), repeat)
    }

    /// Runs `frame` once as a GSO packet: one the stack will cut into `gso_size`-byte
    /// segments (as a BIG TCP packet is).
    pub fn test_run_gso(
        &self,
        hook: Hook,
        frame: &[u8],
        ifindex: u32,
        gso_size: u32,
    ) -> Result<RunResult> {
        self.run_with_ctx(hook, frame, skb_ctx(ifindex, gso_size), 1)
    }

    fn run_with_ctx(
        &self,
        hook: Hook,
        frame: &[u8],
        ctx: [u8; SKB_CTX_LEN],
        repeat: u32,
    ) -> Result<RunResult> {
        let prog = self.classifier(hook.program())?;
        let mut out = vec![0u8; frame.len() + 256];
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx),
            repeat: repeat.max(1),
            ..Default::default()
        };
        let r = prog.test_run(opts).map_err(|source| Error::TestRun {
            program: hook.program(),
            source,
        })?;
        Ok(RunResult {
            action: r.return_value,
            per_run: r.duration,
        })
    }
}

impl Dataplane {
    /// Writes `entries` into the map of [`Hook::LruReference`] (loaded with
    /// [`crate::LoadOptions::lru_reference`] entries), in batches where the kernel has them.
    pub fn fill_lru_reference(&mut self, entries: &[(SessionKey, Session)]) -> Result<()> {
        let map = self
            .ebpf
            .map_mut(MAP_LRU_REFERENCE)
            .ok_or(Error::MapMissing {
                name: MAP_LRU_REFERENCE,
            })?;
        let mut map: HashMap<&mut MapData, SessionKey, Session> =
            HashMap::try_from(map).map_err(Error::map_open(MAP_LRU_REFERENCE))?;
        let (keys, values): (Vec<SessionKey>, Vec<Session>) = entries.iter().copied().unzip();
        match batch::update_all(map.map().fd().as_fd(), &keys, &values, 1) {
            Ok(()) => return Ok(()),
            Err((0, e)) if batch::unsupported(&e) => {}
            Err((_, io_error)) => {
                let e = aya::sys::SyscallError {
                    call: "bpf_map_update_batch",
                    io_error,
                };
                return Err(Error::map_write(MAP_LRU_REFERENCE)(e.into()));
            }
        }
        for (k, v) in entries {
            map.insert(k, v, 0)
                .map_err(Error::map_write(MAP_LRU_REFERENCE))?;
        }
        Ok(())
    }
}

fn skb_ctx(ifindex: u32, gso_size: u32) -> [u8; SKB_CTX_LEN] {
    let mut ctx = [0u8; SKB_CTX_LEN];
    ctx[SKB_IFINDEX_OFFSET..SKB_IFINDEX_OFFSET + 4].copy_from_slice(&ifindex.to_ne_bytes());
    ctx[SKB_GSO_SIZE_OFFSET..SKB_GSO_SIZE_OFFSET + 4].copy_from_slice(&gso_size.to_ne_bytes());
    ctx
}
