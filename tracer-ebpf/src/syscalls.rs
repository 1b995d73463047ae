//! Raw `sys_enter` / `sys_exit` tracepoints: the dispatch by syscall number.
//! TP_PROTO(struct pt_regs *regs, long id) and TP_PROTO(struct pt_regs *regs, long ret)
//! (include/trace/events/syscalls.h). Every syscall on the node passes here, so the
//! common path is one comparison chain and out.
use aya_ebpf::{helpers::bpf_get_current_pid_tgid, macros::raw_tracepoint, programs::RawTracePointContext};

use crate::kernel::{self, off, read};
use crate::{cgroup_write, netlink};

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn sys_enter(ctx: RawTracePointContext) -> i32 {
    let nr = ctx.arg::<u64>(1);
    if !(cgroup_write::is_write(nr) || netlink::is_send(nr)) {
        return 0;
    }
    let _ = try_sys_enter(&ctx, nr);
    0
}

fn try_sys_enter(ctx: &RawTracePointContext, nr: u64) -> Result<(), i64> {
    if !kernel::ready() {
        return Ok(());
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    if kernel::is_self((pid_tgid >> 32) as u32) {
        return Ok(());
    }
    let regs: *const u8 = ctx.arg(0);
    if cgroup_write::is_write(nr) {
        cgroup_write::enter(regs, nr, pid_tgid as u32)
    } else {
        netlink::enter(regs, nr)
    }
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn sys_exit(ctx: RawTracePointContext) -> i32 {
    let regs: *const u8 = ctx.arg(0);
    let nr = match read::<u64>(regs, off!(regs_orig_ax)) {
        Ok(nr) => nr,
        Err(_) => return 0,
    };
    if !cgroup_write::is_write(nr) {
        return 0;
    }
    let tid = bpf_get_current_pid_tgid() as u32;
    let _ = cgroup_write::exit(tid, ctx.arg::<u64>(1) as i64);
    0
}
