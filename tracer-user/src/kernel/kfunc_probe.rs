//! Whether this kernel runs BPF programs on kernel functions (fentry/fexit through BPF
//! trampolines): the condition for the kernel-function hook mode, which hooks the cgroup
//! write and rtnetlink paths themselves and runs nothing on unrelated syscalls
//! ([`crate::kernel::loader`]). Many locked-down kernels refuse trampolines (this CI
//! machine's 6.18 does, with EPERM); Debian's 6.1 and 6.12 load them.
//!
//! The probe loads the smallest tracing program there is (`r0 = 0; exit`) as fentry on
//! `cgroup_file_write` (kernel/cgroup/cgroup.c: every cgroup v1 and v2 file write goes
//! through it), attaches it, and closes both at once: the kernel's own answer, not a
//! guess from its version or config. It costs a millisecond, where loading the whole
//! object to find out would cost the start-up a second load.

use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;

use crate::kernel::bpf_sys::{bpf, put_u32, put_u64};
use crate::kernel::btf_offsets;

/// The kernel function probed.
pub const FUNCTION: &str = "cgroup_file_write";

const BPF_PROG_LOAD: i64 = 5;
const BPF_RAW_TRACEPOINT_OPEN: i64 = 17;
const BPF_PROG_TYPE_TRACING: u32 = 26;
const BPF_TRACE_FENTRY: u32 = 24;

/// `Ok` when an fentry program on [`FUNCTION`] loads and attaches; else the step that
/// failed and the kernel's reason.
pub fn probe() -> Result<(), String> {
    let btf = btf_offsets::open(Path::new(btf_offsets::VMLINUX_BTF)).map_err(|e| e.to_string())?;
    probe_with(&btf)
}

/// [`probe`] with the kernel's BTF already open.
pub fn probe_with(btf: &btf_rs::Btf) -> Result<(), String> {
    let ids =
        btf.resolve_ids_by_name(FUNCTION).map_err(|e| format!("{FUNCTION} not in the kernel's BTF: {e}"))?;
    let id = ids
        .into_iter()
        .find(|id| matches!(btf.resolve_type_by_id(*id), Ok(btf_rs::Type::Func(_))))
        .ok_or_else(|| format!("{FUNCTION} is not a function in the kernel's BTF"))?;
    // r0 = 0; exit (include/uapi/linux/bpf.h: BPF_ALU64 | BPF_MOV | BPF_K, BPF_JMP | BPF_EXIT).
    let insns: [u8; 16] = [0xb7, 0, 0, 0, 0, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0];
    let license = b"GPL\0";
    let mut attr = [0u8; 128];
    put_u32(&mut attr, 0, BPF_PROG_TYPE_TRACING);
    put_u32(&mut attr, 4, 2);
    put_u64(&mut attr, 8, insns.as_ptr() as u64);
    put_u64(&mut attr, 16, license.as_ptr() as u64);
    attr[48..48 + 12].copy_from_slice(b"tracer_probe");
    put_u32(&mut attr, 68, BPF_TRACE_FENTRY);
    put_u32(&mut attr, 108, id);
    let prog =
        bpf(BPF_PROG_LOAD, &mut attr).map_err(|e| format!("fentry on {FUNCTION} does not load: {e}"))?;
    // SAFETY: a new fd the kernel just returned, owned here only.
    let prog = unsafe { OwnedFd::from_raw_fd(prog as i32) };
    let mut attr = [0u8; 128];
    put_u32(&mut attr, 8, std::os::fd::AsRawFd::as_raw_fd(&prog) as u32);
    let link = bpf(BPF_RAW_TRACEPOINT_OPEN, &mut attr)
        .map_err(|e| format!("fentry on {FUNCTION} loads but does not attach: {e}"))?;
    // SAFETY: as above; closing it detaches the probe.
    drop(unsafe { OwnedFd::from_raw_fd(link as i32) });
    Ok(())
}
