//! A five-instruction TC program that pushes VLAN tags with `bpf_skb_vlan_push`, as a VLAN
//! device on a veth does: the newest tag goes into the skb's metadata, one already there
//! into the frame. It stands in for `ip link add ... type vlan` on kernels built without
//! 802.1Q support.

use std::ffi::CString;
use std::os::fd::{FromRawFd, OwnedFd};

use aya_obj::generated::{
    bpf_attach_type::BPF_TCX_EGRESS,
    bpf_cmd::{BPF_LINK_CREATE, BPF_PROG_LOAD},
    bpf_func_id::BPF_FUNC_skb_vlan_push,
    bpf_prog_type::BPF_PROG_TYPE_SCHED_CLS,
    BPF_F_BEFORE,
};

pub const DOT1Q: u16 = 0x8100;
pub const DOT1AD: u16 = 0x88a8;

/// `struct bpf_insn`: registers packed as dst (low nibble) and src (high nibble).
#[repr(C)]
#[derive(Clone, Copy)]
struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

const MOV64_IMM: u8 = 0xb7;
const MOV64_REG: u8 = 0xbf;
const CALL: u8 = 0x85;
const EXIT: u8 = 0x95;
/// TCX_NEXT: the next program on the hook (the data plane's) runs.
const TCX_NEXT: i32 = -1;

fn insn(code: u8, dst: u8, src: u8, imm: i32) -> Insn {
    Insn {
        code,
        regs: dst | (src << 4),
        off: 0,
        imm,
    }
}

/// `struct bpf_attr` for BPF_PROG_LOAD, up to the log buffer.
#[repr(C)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
}

/// `struct bpf_attr` for BPF_LINK_CREATE of a TCX link.
#[repr(C)]
struct LinkCreate {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
    relative_fd: u32,
    _pad: u32,
    expected_revision: u64,
}

fn bpf<T>(cmd: u32, attr: &mut T) -> std::io::Result<OwnedFd> {
    // SAFETY: `attr` is a bpf_attr prefix of the size given, alive for the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T,
            std::mem::size_of::<T>() as u32,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new descriptor the kernel gave us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Puts, before any other program on the egress of `ifindex` (in the calling thread's
/// network namespace), a program pushing `tags` (TPID, VLAN id), innermost first.
/// Attached while the returned link is open.
pub fn push_tags(ifindex: u32, tags: &[(u16, u16)]) -> OwnedFd {
    let mut prog = vec![insn(MOV64_REG, 6, 1, 0)];
    for &(tpid, id) in tags {
        prog.push(insn(MOV64_REG, 1, 6, 0));
        // The helper takes the TPID in network byte order.
        prog.push(insn(MOV64_IMM, 2, 0, tpid.to_be() as i32));
        prog.push(insn(MOV64_IMM, 3, 0, id as i32));
        prog.push(insn(CALL, 0, 0, BPF_FUNC_skb_vlan_push as i32));
    }
    prog.push(insn(MOV64_IMM, 0, 0, TCX_NEXT));
    prog.push(insn(EXIT, 0, 0, 0));

    let license = CString::new("GPL").unwrap();
    let mut log = vec![0u8; 64 * 1024];
    let mut load = ProgLoad {
        prog_type: BPF_PROG_TYPE_SCHED_CLS as u32,
        insn_cnt: prog.len() as u32,
        insns: prog.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
    };
    let prog_fd = bpf(BPF_PROG_LOAD as u32, &mut load).unwrap_or_else(|e| {
        let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
        panic!(
            "loading the tag pusher: {e}\n{}",
            String::from_utf8_lossy(&log[..end])
        )
    });
    let mut link = LinkCreate {
        prog_fd: std::os::fd::AsRawFd::as_raw_fd(&prog_fd) as u32,
        target_ifindex: ifindex,
        attach_type: BPF_TCX_EGRESS as u32,
        flags: BPF_F_BEFORE,
        relative_fd: 0,
        _pad: 0,
        expected_revision: 0,
    };
    bpf(BPF_LINK_CREATE as u32, &mut link).expect("attaching the tag pusher")
}
