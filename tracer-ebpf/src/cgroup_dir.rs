//! `cgroup:cgroup_mkdir` and `cgroup:cgroup_rmdir` raw tracepoints
//! (include/trace/events/cgroup.h: TP_PROTO(struct cgroup *cgrp, const char *path)).
//! The path is built by the kernel from the hierarchy root (`cgroup_path`), so it is
//! host-absolute even when the tracer runs in a private cgroup namespace.
use aya_ebpf::{
    helpers::bpf_probe_read_kernel_str_bytes, macros::raw_tracepoint, programs::RawTracePointContext,
};
use tracer_common::{kind, CgroupDir};

use crate::kernel::{self, off, read};
use crate::maps::{account, EVENTS};

#[raw_tracepoint(tracepoint = "cgroup_mkdir")]
pub fn cgroup_mkdir(ctx: RawTracePointContext) -> i32 {
    let _ = try_cgroup_dir(&ctx, kind::CGROUP_MKDIR);
    0
}

#[raw_tracepoint(tracepoint = "cgroup_rmdir")]
pub fn cgroup_rmdir(ctx: RawTracePointContext) -> i32 {
    let _ = try_cgroup_dir(&ctx, kind::CGROUP_RMDIR);
    0
}

fn try_cgroup_dir(ctx: &RawTracePointContext, k: u16) -> Result<(), i64> {
    if !kernel::ready() {
        return Ok(());
    }
    let cgrp: *const u8 = ctx.arg(0);
    let path: *const u8 = ctx.arg(1);
    let Some(mut entry) = EVENTS.reserve::<CgroupDir>(0) else {
        account(k, false);
        return Ok(());
    };
    let r = unsafe { &mut *entry.as_mut_ptr() };
    kernel::fill_header(&mut r.header, k, core::mem::size_of::<CgroupDir>());
    r.cgroup_id = kernel::cgroup_id(cgrp);
    r.hierarchy_id = kernel::hierarchy_id(cgrp);
    r.level = read::<i32>(cgrp, off!(cgroup_level)).unwrap_or(-1) as u32;
    if k == kind::CGROUP_RMDIR {
        crate::cgroup_write::forget_cgroup(r.hierarchy_id, r.cgroup_id);
    }
    r.path[0] = 0;
    let _ = unsafe { bpf_probe_read_kernel_str_bytes(path, &mut r.path) };
    entry.submit(0);
    account(k, true);
    Ok(())
}
