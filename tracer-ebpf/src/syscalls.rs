//! Raw `sys_enter` / `sys_exit` tracepoints: the dispatch by syscall number.
//! TP_PROTO(struct pt_regs *regs, long id) and TP_PROTO(struct pt_regs *regs, long ret)
//! (include/trace/events/syscalls.h). Every syscall on the node passes here, so the
//! common path is short: a comparison chain on enter, one array load on exit.
use aya_ebpf::{helpers::bpf_get_current_pid_tgid, macros::raw_tracepoint, programs::RawTracePointContext};

use tracer_common::family;

use crate::kernel::{self, off, read, syscall_families};
use crate::{cgroup_bpf, cgroup_write, netlink, openers};

/// Attached only when a family runs in the syscall mode; the families that run on
/// kernel functions (`kfunc.rs`) are skipped (`KFUNC_FAMILIES`).
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn sys_enter(ctx: RawTracePointContext) -> i32 {
    let nr = ctx.arg::<u64>(1);
    let serves = syscall_families();
    if serves & family::CGROUP_WRITE != 0 && cgroup_write::is_write(nr) {
        let pid_tgid = bpf_get_current_pid_tgid();
        // Only processes that hold a cgroupfs file can write one (openers.rs).
        if openers::is_opener((pid_tgid >> 32) as u32) {
            let _ = try_write_enter(&ctx, nr, pid_tgid);
        }
    } else if serves & family::CGROUP_WRITE != 0 && openers::is_open(nr) {
        openers::open_enter(bpf_get_current_pid_tgid() as u32);
    } else if serves & family::NETLINK != 0 && netlink::is_send(nr) {
        let _ = try_send_enter(&ctx, nr);
    } else if serves & family::CGROUP_BPF != 0 && cgroup_bpf::is_bpf(nr) {
        let _ = try_bpf_enter(&ctx);
    }
    0
}

fn try_bpf_enter(ctx: &RawTracePointContext) -> Result<(), i64> {
    let Some(tid) = kernel::reported_tid(bpf_get_current_pid_tgid()) else { return Ok(()) };
    cgroup_bpf::enter(ctx.arg(0), tid, true)
}

fn try_write_enter(ctx: &RawTracePointContext, nr: u64, pid_tgid: u64) -> Result<(), i64> {
    let Some(tid) = kernel::reported_tid(pid_tgid) else { return Ok(()) };
    cgroup_write::enter(ctx.arg(0), nr, tid)
}

fn try_send_enter(ctx: &RawTracePointContext, nr: u64) -> Result<(), i64> {
    if kernel::reported_tid(bpf_get_current_pid_tgid()).is_none() {
        return Ok(());
    }
    netlink::enter(ctx.arg(0), nr)
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn sys_exit(ctx: RawTracePointContext) -> i32 {
    if openers::no_exit_work() {
        return 0;
    }
    let regs: *const u8 = ctx.arg(0);
    let Ok(nr) = read::<u64>(regs, off!(regs_orig_ax)) else { return 0 };
    let ret = ctx.arg::<u64>(1) as i64;
    let pid_tgid = bpf_get_current_pid_tgid();
    let serves = syscall_families();
    if serves & family::CGROUP_WRITE != 0 && cgroup_write::is_write(nr) {
        let _ = cgroup_write::exit(pid_tgid as u32, ret, true);
    } else if serves & family::CGROUP_WRITE != 0 && openers::is_open(nr) {
        openers::open_exit(pid_tgid as u32, (pid_tgid >> 32) as u32, ret);
    } else if serves & family::CGROUP_BPF != 0 && cgroup_bpf::is_bpf(nr) {
        let _ = cgroup_bpf::exit(pid_tgid as u32, ret, true);
    }
    0
}
