//! Process lifecycle for the userspace process table: `sched_process_exec`,
//! `sched_process_fork` (new processes only, not threads) and `sched_process_exit`
//! (thread-group leaders only). include/trace/events/sched.h.
use aya_ebpf::{
    helpers::bpf_probe_read_kernel_str_bytes, macros::raw_tracepoint, programs::RawTracePointContext,
};
use tracer_common::{kind, ProcExec, ProcExit, ProcFork};

use crate::kernel::{self, off, read, read_ptr};
use crate::maps::{account, EVENTS};

/// TP_PROTO(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn sched_process_exec(ctx: RawTracePointContext) -> i32 {
    let _ = try_exec(&ctx);
    0
}

fn try_exec(ctx: &RawTracePointContext) -> Result<(), i64> {
    if !kernel::ready() {
        return Ok(());
    }
    let old_pid = ctx.arg::<u64>(1) as u32;
    let bprm: *const u8 = ctx.arg(2);
    let Some(mut entry) = EVENTS.reserve::<ProcExec>(0) else {
        account(kind::PROC_EXEC, false);
        return Ok(());
    };
    let r = unsafe { &mut *entry.as_mut_ptr() };
    kernel::fill_header(&mut r.header, kind::PROC_EXEC, core::mem::size_of::<ProcExec>());
    r.old_pid = old_pid;
    r.filename_len = 0;
    r.filename[0] = 0;
    if let Ok(name) = read_ptr(bprm, off!(binprm_filename)) {
        if let Ok(s) = unsafe { bpf_probe_read_kernel_str_bytes(name, &mut r.filename) } {
            r.filename_len = s.len() as u32;
        }
    }
    // The new program's argv: exec has just copied it to the top of the new stack,
    // between `mm->arg_start` and `arg_end` (fs/exec.c, create_elf_tables), so it is
    // resident. The environment follows it there and is not read.
    r.args_len = 0;
    r.args_total = 0;
    if let Ok(mm) = read_ptr(kernel::current_task(), off!(task_mm)) {
        let start = read::<u64>(mm, off!(mm_arg_start)).unwrap_or(0);
        let end = read::<u64>(mm, off!(mm_arg_end)).unwrap_or(0);
        if start != 0 && end > start {
            r.args_total = (end - start).min(u32::MAX as u64) as u32;
            r.args_len = kernel::read_user_bounded(&mut r.args, start, end - start).unwrap_or(0);
        }
    }
    entry.submit(0);
    account(kind::PROC_EXEC, true);
    Ok(())
}

/// TP_PROTO(struct task_struct *parent, struct task_struct *child)
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn sched_process_fork(ctx: RawTracePointContext) -> i32 {
    let _ = try_fork(&ctx);
    0
}

fn try_fork(ctx: &RawTracePointContext) -> Result<(), i64> {
    if !kernel::ready() {
        return Ok(());
    }
    let child: *const u8 = ctx.arg(1);
    let pid = read::<u32>(child, off!(task_pid))?;
    let tgid = read::<u32>(child, off!(task_tgid))?;
    if pid != tgid {
        return Ok(()); // a new thread, not a new process
    }
    let parent_tgid = (aya_ebpf::helpers::bpf_get_current_pid_tgid() >> 32) as u32;
    crate::openers::inherit(parent_tgid, pid);
    let Some(mut entry) = EVENTS.reserve::<ProcFork>(0) else {
        account(kind::PROC_FORK, false);
        return Ok(());
    };
    let r = unsafe { &mut *entry.as_mut_ptr() };
    kernel::fill_header(&mut r.header, kind::PROC_FORK, core::mem::size_of::<ProcFork>());
    r.child_pid = pid;
    r._pad = 0;
    r.child_start_ns = read::<u64>(child, off!(task_start_boottime)).unwrap_or(0);
    entry.submit(0);
    account(kind::PROC_FORK, true);
    Ok(())
}

/// TP_PROTO(struct task_struct *p, ...)
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn sched_process_exit(ctx: RawTracePointContext) -> i32 {
    let _ = try_exit(&ctx);
    0
}

fn try_exit(ctx: &RawTracePointContext) -> Result<(), i64> {
    if !kernel::ready() {
        return Ok(());
    }
    let task: *const u8 = ctx.arg(0);
    let pid = read::<u32>(task, off!(task_pid))?;
    let tgid = read::<u32>(task, off!(task_tgid))?;
    if pid != tgid {
        return Ok(());
    }
    crate::openers::forget(tgid);
    let Some(mut entry) = EVENTS.reserve::<ProcExit>(0) else {
        account(kind::PROC_EXIT, false);
        return Ok(());
    };
    let r = unsafe { &mut *entry.as_mut_ptr() };
    kernel::fill_header(&mut r.header, kind::PROC_EXIT, core::mem::size_of::<ProcExit>());
    r.exit_code = read::<i32>(task, off!(task_exit_code)).unwrap_or(0);
    r._pad = 0;
    entry.submit(0);
    account(kind::PROC_EXIT, true);
    Ok(())
}
