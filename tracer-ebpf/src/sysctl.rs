//! Writes to sysctls under `net/` (rp_filter above all), from a `cgroup/sysctl` program
//! attached at the cgroup2 root so it sees every process. It runs before the write with
//! the current and the new value (kernel/bpf/cgroup.c: __cgroup_bpf_run_filter_sysctl)
//! and always allows it: tracer observes, it never blocks.
use aya_ebpf::{
    helpers::generated::{bpf_sysctl_get_current_value, bpf_sysctl_get_name, bpf_sysctl_get_new_value},
    macros::cgroup_sysctl,
    programs::SysctlContext,
};
use tracer_common::{kind, SysctlWrite};

use crate::kernel;
use crate::maps::{account, EVENTS};

const ALLOW: i32 = 1;

#[cgroup_sysctl]
pub fn sysctl_write(ctx: SysctlContext) -> i32 {
    let _ = try_sysctl(&ctx);
    ALLOW
}

fn try_sysctl(ctx: &SysctlContext) -> Result<(), i64> {
    if !kernel::ready() {
        return Ok(());
    }
    // SAFETY: ctx.sysctl is the context the kernel passed in.
    if unsafe { (*ctx.sysctl).write } == 0 {
        return Ok(());
    }
    let mut prefix = [0u8; 8];
    // Flag 0: the full name from /proc/sys ("net/ipv4/conf/all/rp_filter").
    let ret = unsafe { bpf_sysctl_get_name(ctx.sysctl, prefix.as_mut_ptr().cast(), prefix.len() as _, 0) };
    // -E2BIG is expected: the buffer holds the start of the name.
    if ret < 0 && ret != -7 {
        return Ok(());
    }
    if &prefix[..4] != b"net/" {
        return Ok(());
    }
    let Some(mut entry) = EVENTS.reserve::<SysctlWrite>(0) else {
        account(kind::SYSCTL_WRITE, false);
        return Ok(());
    };
    let r = unsafe { &mut *entry.as_mut_ptr() };
    kernel::fill_header(&mut r.header, kind::SYSCTL_WRITE, core::mem::size_of::<SysctlWrite>());
    unsafe {
        r.name_ret = bpf_sysctl_get_name(ctx.sysctl, r.name.as_mut_ptr().cast(), r.name.len() as _, 0) as i32;
        r.old_ret =
            bpf_sysctl_get_current_value(ctx.sysctl, r.old_value.as_mut_ptr().cast(), r.old_value.len() as _)
                as i32;
        r.new_ret =
            bpf_sysctl_get_new_value(ctx.sysctl, r.new_value.as_mut_ptr().cast(), r.new_value.len() as _)
                as i32;
    }
    r._pad = 0;
    entry.submit(0);
    account(kind::SYSCTL_WRITE, true);
    Ok(())
}
