//! Writes to cgroupfs files (v1 and v2) via write/pwrite64/writev/pwritev/pwritev2.
//!
//! `sys_enter` resolves fd -> file -> inode -> superblock magic and keeps only cgroupfs
//! files; it records the file, the cgroup path (kernfs walk), the bytes written (bounded
//! by `VALUE_LEN`) and the cgroup's `subtree_control` mask, and parks the record in
//! `PENDING` keyed by thread id. `sys_exit` adds the result and the mask after the write,
//! and sends it. The raw `sys_enter`/`sys_exit` tracepoints need no tracefs and are the
//! one syscall hook that works on kernels without kprobes or trampolines.
use aya_ebpf::{
    helpers::{bpf_probe_read_kernel_str_bytes, generated::bpf_probe_read_user},
    macros::map,
    maps::{LruHashMap, PerCpuArray},
};
use tracer_common::{
    flags, kind, sysno, CgroupWrite, CGROUP2_SUPER_MAGIC, CGROUP_SUPER_MAGIC, MAX_DEPTH, VALUE_LEN,
};

use crate::kernel::{self, off, read, read_ptr};
use crate::maps::{account, bump, EVENTS, SEEN};

/// A write between its entry and its exit.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Pending {
    /// `struct cgroup *` of the written file's directory (kernel pointer; never sent).
    cgroup: u64,
    rec: CgroupWrite,
}

#[map]
/// LRU: a thread killed inside the syscall never reaches sys_exit; its entry ages out.
static PENDING: LruHashMap<u32, Pending> = LruHashMap::with_max_entries(2048, 0);

/// Scratch space to build a record (too large for the 512-byte BPF stack).
#[map]
static SCRATCH: PerCpuArray<Pending> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
pub fn is_write(nr: u64) -> bool {
    nr == sysno::WRITE
        || nr == sysno::PWRITE64
        || nr == sysno::WRITEV
        || nr == sysno::PWRITEV
        || nr == sysno::PWRITEV2
}

/// Entry of a write-family syscall. `regs` is the user `struct pt_regs`.
#[inline(always)]
pub fn enter(regs: *const u8, nr: u64, tid: u32) -> Result<(), i64> {
    let fd = read::<u64>(regs, off!(regs_di))?;
    let file = kernel::file_of_fd(fd)?;
    let (magic, inode) = kernel::file_magic(file)?;
    if magic != CGROUP_SUPER_MAGIC && magic != CGROUP2_SUPER_MAGIC {
        return Ok(());
    }
    let p = SCRATCH.get_ptr_mut(0).ok_or(-12i64)?;
    // SAFETY: per-CPU scratch, only this program on this CPU uses it now.
    let p = unsafe { &mut *p };
    let r = &mut p.rec;
    kernel::fill_header(&mut r.header, kind::CGROUP_WRITE, core::mem::size_of::<CgroupWrite>());
    r.magic = magic;
    r.syscall = nr as u32;
    r.fd = fd as i32;
    r.flags = 0;
    r.result = 0;
    r.subtree_after = 0;

    // inode->i_private is the file's kernfs_node; its parent is the cgroup directory,
    // whose ->priv is the `struct cgroup` (kernel/cgroup/cgroup.c: kernfs_create_dir).
    let kn = read_ptr(inode, off!(inode_private))?;
    let name = read_ptr(kn, off!(kn_name))?;
    let _ = unsafe { bpf_probe_read_kernel_str_bytes(name, &mut r.file) };
    let dir = read_ptr(kn, off!(kn_parent))?;
    r.cgroup_id = read::<u64>(dir, off!(kn_id)).unwrap_or(0);
    let cgrp = read_ptr(dir, off!(kn_priv)).unwrap_or(core::ptr::null());
    p.cgroup = cgrp as u64;
    r.hierarchy_id = kernel::hierarchy_id(cgrp);
    r.subtree_before = read::<u16>(cgrp, off!(cgroup_subtree_control)).unwrap_or(0);
    walk_path(dir, r);

    // The bytes written: the buffer, or the first iovec of the vector forms.
    let arg1 = read::<u64>(regs, off!(regs_si))?;
    let arg2 = read::<u64>(regs, off!(regs_dx))?;
    let (src, count) = if nr == sysno::WRITE || nr == sysno::PWRITE64 {
        (arg1, arg2)
    } else {
        let mut iov = [0u64; 2];
        let ok = unsafe {
            bpf_probe_read_user(iov.as_mut_ptr().cast(), 16, arg1 as *const core::ffi::c_void)
        };
        if ok != 0 {
            r.flags |= flags::VALUE_UNREADABLE;
        }
        if arg2 > 1 {
            r.flags |= flags::VALUE_TRUNCATED;
        }
        (iov[0], iov[1])
    };
    r.count = count;
    let mut n = count;
    if n > VALUE_LEN as u64 {
        n = VALUE_LEN as u64;
        r.flags |= flags::VALUE_TRUNCATED;
    }
    r.value_len = 0;
    if n > 0 && n <= VALUE_LEN as u64 {
        let ok = unsafe {
            bpf_probe_read_user(r.value.as_mut_ptr().cast(), n as u32, src as *const core::ffi::c_void)
        };
        if ok == 0 {
            r.value_len = n as u16;
        } else {
            // Not resident: report the value as unavailable, never drop the event.
            r.flags |= flags::VALUE_UNREADABLE;
        }
    }
    if PENDING.insert(&tid, &*p, 0).is_ok() {
        crate::openers::exit_work_begin();
    } else {
        bump(&SEEN, tracer_common::counter::PENDING_FULL);
        // Send it now, without a result, rather than lose it.
        p.rec.flags |= flags::NO_RESULT;
        let ok = EVENTS.output::<CgroupWrite>(&p.rec, 0).is_ok();
        account(kind::CGROUP_WRITE, ok);
    }
    Ok(())
}

/// Path components from the cgroup directory up to (not including) the root.
#[inline(always)]
fn walk_path(dir: *const u8, r: &mut CgroupWrite) {
    let mut cur = dir;
    let mut depth: u16 = 0;
    for i in 0..MAX_DEPTH {
        let parent = match read_ptr(cur, off!(kn_parent)) {
            Ok(p) => p,
            Err(_) => break,
        };
        if parent.is_null() {
            break; // `cur` is the hierarchy root: its name is not part of the path.
        }
        if let Ok(name) = read_ptr(cur, off!(kn_name)) {
            let _ = unsafe { bpf_probe_read_kernel_str_bytes(name, &mut r.path[i]) };
        }
        depth = i as u16 + 1;
        cur = parent;
    }
    r.depth = depth;
    if depth as usize == MAX_DEPTH {
        if let Ok(p) = read_ptr(cur, off!(kn_parent)) {
            if !p.is_null() {
                r.flags |= flags::PATH_TRUNCATED;
            }
        }
    }
}

/// Exit of a write-family syscall: complete and send the parked record.
#[inline(always)]
pub fn exit(tid: u32, ret: i64) -> Result<(), i64> {
    let Some(p) = PENDING.get_ptr_mut(&tid) else {
        return Ok(());
    };
    // SAFETY: the entry belongs to this thread; nothing else touches it now.
    let p = unsafe { &mut *p };
    p.rec.result = ret;
    p.rec.subtree_after = read::<u16>(p.cgroup as *const u8, off!(cgroup_subtree_control)).unwrap_or(0);
    let ok = EVENTS.output::<CgroupWrite>(&p.rec, 0).is_ok();
    account(kind::CGROUP_WRITE, ok);
    let _ = PENDING.remove(&tid);
    crate::openers::exit_work_end();
    Ok(())
}
