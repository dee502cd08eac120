//! Hand-assembled test programs, to price single operations in the same harness.

pub struct Insn([u8; 8]);

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    let mut b = [0u8; 8];
    b[0] = code;
    b[1] = (src << 4) | (dst & 0xf);
    b[2..4].copy_from_slice(&off.to_le_bytes());
    b[4..8].copy_from_slice(&imm.to_le_bytes());
    Insn(b)
}

pub fn mov_imm(dst: u8, imm: i32) -> Insn {
    insn(0xb7, dst, 0, 0, imm)
}
pub fn mov_reg(dst: u8, src: u8) -> Insn {
    insn(0xbf, dst, src, 0, 0)
}
pub fn add_imm(dst: u8, imm: i32) -> Insn {
    insn(0x07, dst, 0, 0, imm)
}
/// *(u32 *)(r10 + off) = imm
pub fn st_w(off: i16, imm: i32) -> Insn {
    insn(0x62, 10, 0, off, imm)
}
pub fn call(helper: i32) -> Insn {
    insn(0x85, 0, 0, 0, helper)
}
pub fn exit() -> Insn {
    insn(0x95, 0, 0, 0, 0)
}
/// r{dst} = map (two instructions).
pub fn ld_map_fd(dst: u8, fd: i32) -> [Insn; 2] {
    [insn(0x18, dst, 1, 0, fd), insn(0, 0, 0, 0, 0)]
}

pub const HELPER_MAP_LOOKUP: i32 = 1;
pub const HELPER_KTIME_GET_NS: i32 = 5;
pub const HELPER_JIFFIES64: i32 = 118;
pub const HELPER_RINGBUF_RESERVE: i32 = 131;
pub const HELPER_RINGBUF_SUBMIT: i32 = 132;
pub const HELPER_KTIME_GET_COARSE_NS: i32 = 160;

/// r0 = bpf_ringbuf_reserve(map, size, 0); if r0 { bpf_ringbuf_submit(r0, 0) }; return 0.
pub fn ringbuf_event(map_fd: i32, size: i32) -> Vec<Insn> {
    let mut v = Vec::new();
    v.extend(ld_map_fd(1, map_fd));
    v.push(mov_imm(2, size));
    v.push(mov_imm(3, 0));
    v.push(call(HELPER_RINGBUF_RESERVE));
    v.push(insn(0x15, 0, 0, 3, 0)); // if r0 == 0 goto +3
    v.push(mov_reg(1, 0));
    v.push(mov_imm(2, 0));
    v.push(call(HELPER_RINGBUF_SUBMIT));
    v.push(mov_imm(0, 0));
    v.push(exit());
    v
}

fn sys_bpf(cmd: i64, attr: &mut [u8]) -> i64 {
    // SAFETY: attr is a zero-padded bpf_attr of the right layout for `cmd`.
    unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) }
}

/// A loaded SCHED_CLS program; closed on drop.
pub struct Prog(i32);

impl Drop for Prog {
    fn drop(&mut self) {
        // SAFETY: we own the fd.
        unsafe { libc::close(self.0) };
    }
}

pub fn load(insns: &[Insn]) -> Result<Prog, String> {
    let code: Vec<u8> = insns.iter().flat_map(|i| i.0).collect();
    let license = b"GPL\0";
    let mut log = vec![0u8; 1 << 16];
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&3u32.to_ne_bytes()); // BPF_PROG_TYPE_SCHED_CLS
    attr[4..8].copy_from_slice(&(insns.len() as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(code.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
    attr[24..28].copy_from_slice(&1u32.to_ne_bytes());
    attr[28..32].copy_from_slice(&(log.len() as u32).to_ne_bytes());
    attr[32..40].copy_from_slice(&(log.as_mut_ptr() as u64).to_ne_bytes());
    attr[48..56].copy_from_slice(b"mseg_bench\0\0\0\0\0\0"[..8].as_ref());
    let fd = sys_bpf(5, &mut attr); // BPF_PROG_LOAD
    if fd < 0 {
        let end = log.iter().position(|b| *b == 0).unwrap_or(0);
        return Err(format!(
            "BPF_PROG_LOAD: {}: {}",
            std::io::Error::last_os_error(),
            String::from_utf8_lossy(&log[..end])
        ));
    }
    Ok(Prog(fd as i32))
}

/// Kernel-measured ns per run (integer, as the kernel reports it).
pub fn test_run(p: &Prog, frame: &[u8], repeat: u32) -> Result<u32, String> {
    let mut out = vec![0u8; frame.len() + 256];
    let mut attr = [0u8; 80];
    attr[0..4].copy_from_slice(&(p.0 as u32).to_ne_bytes());
    attr[8..12].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
    attr[12..16].copy_from_slice(&(out.len() as u32).to_ne_bytes());
    attr[16..24].copy_from_slice(&(frame.as_ptr() as u64).to_ne_bytes());
    attr[24..32].copy_from_slice(&(out.as_mut_ptr() as u64).to_ne_bytes());
    attr[32..36].copy_from_slice(&repeat.to_ne_bytes());
    if sys_bpf(10, &mut attr) < 0 {
        // BPF_PROG_TEST_RUN
        return Err(format!(
            "BPF_PROG_TEST_RUN: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(u32::from_ne_bytes(attr[36..40].try_into().unwrap()))
}

/// `copies` times: r0 = bpf_map_lookup_elem(map, key on the stack); then return 0.
pub fn lookups(map_fd: i32, key: &[u8], copies: usize) -> Vec<Insn> {
    let mut k = key.to_vec();
    k.resize(key.len().div_ceil(8) * 8, 0);
    let base = -(k.len() as i16);
    let mut v = Vec::new();
    for (i, w) in k.chunks(4).enumerate() {
        v.push(st_w(
            base + 4 * i as i16,
            i32::from_ne_bytes(w.try_into().unwrap()),
        ));
    }
    for _ in 0..copies {
        v.extend(ld_map_fd(1, map_fd));
        v.push(mov_reg(2, 10));
        v.push(add_imm(2, base as i32));
        v.push(call(HELPER_MAP_LOOKUP));
    }
    v.push(mov_imm(0, 0));
    v.push(exit());
    v
}

pub fn helper_calls(helper: i32, copies: usize) -> Vec<Insn> {
    let mut v: Vec<Insn> = (0..copies).map(|_| call(helper)).collect();
    v.push(mov_imm(0, 0));
    v.push(exit());
    v
}
