//! The hooks on kernel functions (fentry/fexit through BPF trampolines), where the
//! kernel loads them: no program runs on unrelated syscalls, and what reaches these
//! functions is seen however it was issued (io_uring, a passed descriptor, `sendmmsg`,
//! every iovec). Userspace attaches them instead of the syscall path of the same family
//! (`tracer_common::family`, `KFUNC_FAMILIES`) and falls back to that path where the
//! kernel refuses trampolines (docs/DESIGN.md, "Kernel hooks").
//!
//! An fexit program's context is the function's arguments followed by its return value
//! (kernel/bpf/trampoline.c), read here as the argument after the last, which works on
//! every kernel with fexit (`bpf_get_func_ret` needs 5.17).
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{fentry, fexit},
    programs::{FEntryContext, FExitContext},
};

use crate::{cgroup_bpf, cgroup_write, kernel, netlink};

/// The current thread id, unless nothing is reported for it (`kernel::reported_tid`).
#[inline(always)]
fn reported_tid() -> Option<u32> {
    kernel::reported_tid(bpf_get_current_pid_tgid())
}

/// `ssize_t cgroup_file_write(struct kernfs_open_file *of, char *buf, size_t nbytes,
/// loff_t off)` (kernel/cgroup/cgroup.c).
#[fentry(function = "cgroup_file_write")]
pub fn fentry_cg_write(ctx: FEntryContext) -> i32 {
    if let Some(tid) = reported_tid() {
        let _ = cgroup_write::kfunc_enter(ctx.arg(0), ctx.arg(1), ctx.arg(2), tid);
    }
    0
}

#[fexit(function = "cgroup_file_write")]
pub fn fexit_cg_write(ctx: FExitContext) -> i32 {
    let tid = bpf_get_current_pid_tgid() as u32;
    let _ = cgroup_write::exit(tid, ctx.arg::<i64>(4), false);
    0
}

/// `int rtnetlink_rcv_msg(struct sk_buff *skb, struct nlmsghdr *nlh, struct
/// netlink_ext_ack *extack)` (net/core/rtnetlink.c): one rtnetlink request message,
/// called by netlink_rcv_skb in the sender's context; at its exit the kernel has
/// applied the request or refused it.
#[fexit(function = "rtnetlink_rcv_msg")]
pub fn fexit_rtnl_msg(ctx: FExitContext) -> i32 {
    if reported_tid().is_some() {
        let _ = netlink::kfunc_message(ctx.arg(1), ctx.arg::<i64>(3) as i32);
    }
    0
}

/// `long __x64_sys_bpf(const struct pt_regs *regs)`: the bpf() syscall's own entry
/// (arch/x86/include/asm/syscall_wrapper.h), so that only bpf() calls run these, with
/// the same reading of the caller's registers as at `sys_enter`.
#[fentry(function = "__x64_sys_bpf")]
pub fn fentry_bpf(ctx: FEntryContext) -> i32 {
    if let Some(tid) = reported_tid() {
        let _ = cgroup_bpf::enter(ctx.arg(0), tid, false);
    }
    0
}

#[fexit(function = "__x64_sys_bpf")]
pub fn fexit_bpf(ctx: FExitContext) -> i32 {
    let tid = bpf_get_current_pid_tgid() as u32;
    let _ = cgroup_bpf::exit(tid, ctx.arg::<i64>(1), false);
    0
}
