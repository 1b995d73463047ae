//! `signal:signal_generate` raw tracepoint (include/trace/events/signal.h:
//! TP_PROTO(int sig, struct kernel_siginfo *info, struct task_struct *task, int group,
//! int result)). Only signals that end or stop a process are kept: SIGCHLD and friends
//! would drown the ring buffer.
use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};
use tracer_common::{kind, Signal};

use crate::kernel::{self, off, read, read_ptr};
use crate::maps::{account, EVENTS};

/// The signals kept are listed once, in `tracer_common::signals::KEPT`.
#[inline(always)]
fn wanted(sig: i32) -> bool {
    tracer_common::signals::kept(sig)
}

#[raw_tracepoint(tracepoint = "signal_generate")]
pub fn signal_generate(ctx: RawTracePointContext) -> i32 {
    let _ = try_signal(&ctx);
    0
}

fn try_signal(ctx: &RawTracePointContext) -> Result<(), i64> {
    if !kernel::ready() {
        return Ok(());
    }
    let sig = ctx.arg::<u64>(0) as i32;
    if !wanted(sig) {
        return Ok(());
    }
    let target: *const u8 = ctx.arg(2);
    let result = ctx.arg::<u64>(4) as i32;
    let Some(mut entry) = EVENTS.reserve::<Signal>(0) else {
        account(kind::SIGNAL, false);
        return Ok(());
    };
    let r = unsafe { &mut *entry.as_mut_ptr() };
    kernel::fill_header(&mut r.header, kind::SIGNAL, core::mem::size_of::<Signal>());
    r.sig = sig;
    r.result = result;
    r.target_pid = read::<u32>(target, off!(task_tgid)).unwrap_or(0);
    r.target_tid = read::<u32>(target, off!(task_pid)).unwrap_or(0);
    r.target_comm = read::<[u8; 16]>(target, off!(task_comm)).unwrap_or([0; 16]);
    r.target_start_ns = match read_ptr(target, off!(task_group_leader)) {
        Ok(l) => read::<u64>(l, off!(task_start_boottime)).unwrap_or(0),
        Err(_) => 0,
    };
    r.target_cgroup_id = match read_ptr(target, off!(task_cgroups)) {
        Ok(cset) => match read_ptr(cset, off!(css_set_dfl_cgrp)) {
            Ok(cg) => kernel::cgroup_id(cg),
            Err(_) => 0,
        },
        Err(_) => 0,
    };
    entry.submit(0);
    account(kind::SIGNAL, true);
    Ok(())
}
