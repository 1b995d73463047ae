//! Programs attached to and detached from cgroups through `bpf()`: BPF_PROG_ATTACH,
//! BPF_PROG_DETACH, BPF_LINK_CREATE and BPF_LINK_DETACH whose target is a cgroup
//! directory (the fourth incident: Cilium's socket load balancer attached to a nested
//! cgroup; docs/DESIGN.md).
//!
//! The entry (`sys_enter`, or fentry on `__x64_sys_bpf` in the kernel-function mode:
//! `kfunc.rs`) reads the `union bpf_attr` the caller passed (include/uapi/linux/bpf.h:
//! the attach/detach form is `target_fd, attach_bpf_fd, attach_type, attach_flags`, the
//! link_create form `prog_fd, target_fd, attach_type, flags`, link_detach `link_fd`),
//! resolves the target fd to its cgroup in the kernel (its kernfs path is host-absolute
//! whatever cgroup namespace the caller sees), the program fd to its `bpf_prog` (id,
//! type, name), and the caller's cgroup-namespace root, and parks the record by thread;
//! `sys_exit` adds the result (and the id of a new link) and sends it. These calls are
//! rare, so the record is sent whole (no path caching as for cgroup writes).
use aya_ebpf::{
    helpers::generated::bpf_probe_read_user,
    macros::map,
    maps::{LruHashMap, PerCpuArray},
};
use tracer_common::{bpf_cmd, flags, kind, CgroupBpf, CGROUP2_SUPER_MAGIC, CGROUP_SUPER_MAGIC};

use crate::kernel::{self, off, read, read_ptr};
use crate::maps::{account, EVENTS};

/// Thread id -> the record of a `bpf()` call between its entry and exit. LRU: a thread
/// killed inside the syscall never reaches sys_exit.
#[map]
static BPF_PENDING: LruHashMap<u32, CgroupBpf> = LruHashMap::with_max_entries(256, 0);

/// Scratch space to build a record (too large for the 512-byte BPF stack).
#[map]
static BPF_SCRATCH: PerCpuArray<CgroupBpf> = PerCpuArray::with_max_entries(1, 0);

/// `BPF_LINK_TYPE_CGROUP` (`enum bpf_link_type`, include/uapi/linux/bpf.h).
const LINK_TYPE_CGROUP: u32 = 3;

#[inline(always)]
pub fn is_bpf(nr: u64) -> bool {
    nr == tracer_common::sysno::BPF
}

/// Whether `file` is an anon-inode file named `name` (the dentry of the fds that
/// `anon_inode_getfd("bpf-prog", ...)` and `bpf_link_prime` hand out:
/// kernel/bpf/syscall.c). A map or another fd passed in its place is told apart so
/// its memory is never read as a program.
#[inline(always)]
fn is_anon(file: *const u8, name: &[u8; 9]) -> bool {
    let Ok(dentry) = read_ptr(file, off!(file_dentry)) else { return false };
    let Ok(s) = read_ptr(dentry, off!(dentry_name)) else { return false };
    match read::<[u8; 9]>(s, 0) {
        Ok(got) => got == *name,
        Err(_) => false,
    }
}

const BPF_PROG: &[u8; 9] = b"bpf-prog\0";
const BPF_LINK: &[u8; 9] = b"bpf_link\0";

/// The object (`file->private_data`) behind the caller's fd, when it is an anon-inode
/// file named `name`: the `bpf_prog` of a `bpf-prog` fd, the `bpf_link` of a `bpf_link` one.
#[inline(always)]
fn bpf_object_of_fd(fd: u32, name: &[u8; 9]) -> Option<*const u8> {
    let file = kernel::file_of_fd(fd as u64).ok()?;
    if !is_anon(file, name) {
        return None;
    }
    read_ptr(file, off!(file_private_data)).ok().filter(|p| !p.is_null())
}

#[inline(always)]
fn fill_prog(r: &mut CgroupBpf, prog: Option<*const u8>) {
    let Some(prog) = prog else {
        r.flags |= flags::PROG_UNKNOWN;
        return;
    };
    r.prog_type = read::<u32>(prog, off!(prog_type)).unwrap_or(u32::MAX);
    if let Ok(aux) = read_ptr(prog, off!(prog_aux)) {
        r.prog_id = read::<u32>(aux, off!(prog_aux_id)).unwrap_or(0);
        r.prog_name = read::<[u8; 16]>(aux, off!(prog_aux_name)).unwrap_or([0; 16]);
    }
}

/// The cgroup's kernfs directory: the target fd must be a directory on cgroupfs.
#[inline(always)]
fn cgroup_dir_of_fd(fd: u32) -> Option<*const u8> {
    let file = kernel::file_of_fd(fd as u64).ok()?;
    let (magic, inode) = kernel::file_magic(file).ok()?;
    if magic != CGROUP2_SUPER_MAGIC && magic != CGROUP_SUPER_MAGIC {
        return None;
    }
    // A cgroup directory's inode->i_private is its kernfs_node (fs/kernfs/inode.c:
    // kernfs_init_inode), whose ->priv is the `struct cgroup`.
    read_ptr(inode, off!(inode_private)).ok().filter(|p| !p.is_null())
}

#[inline(always)]
fn fill_target(r: &mut CgroupBpf, kn: *const u8) {
    r.cgroup_id = read::<u64>(kn, off!(kn_id)).unwrap_or(0);
    let cgrp = read_ptr(kn, off!(kn_priv)).unwrap_or(core::ptr::null());
    r.hierarchy_id = kernel::hierarchy_id(cgrp);
    let (depth, truncated) = kernel::kn_path(kn, &mut r.path);
    r.path_len = depth;
    if truncated {
        r.flags |= flags::PATH_TRUNCATED;
    }
}

/// The root of the caller's cgroup namespace: `nsproxy->cgroup_ns->root_cset->dfl_cgrp`
/// (include/linux/cgroup_namespace.h), the cgroup its cgroup2 mounts are rooted at.
#[inline(always)]
fn fill_ns_root(r: &mut CgroupBpf) {
    let task = kernel::current_task();
    let Ok(nsproxy) = read_ptr(task, off!(task_nsproxy)) else { return };
    let Ok(ns) = read_ptr(nsproxy, off!(nsproxy_cgroup_ns)) else { return };
    let Ok(cset) = read_ptr(ns, off!(cgroup_ns_root_cset)) else { return };
    let Ok(cgrp) = read_ptr(cset, off!(css_set_dfl_cgrp)) else { return };
    let Ok(kn) = read_ptr(cgrp, off!(cgroup_kn)) else { return };
    r.ns_root_id = read::<u64>(kn, off!(kn_id)).unwrap_or(0);
    let (depth, truncated) = kernel::kn_path(kn, &mut r.ns_path);
    r.ns_path_len = depth;
    if truncated {
        r.flags |= flags::NS_PATH_TRUNCATED;
    }
}

/// Entry of `bpf(cmd, attr, size)`. `regs` is the user `struct pt_regs`; `from_syscall`:
/// at `sys_enter` (the exit is `sys_exit`, told there is work for it), else at
/// `__x64_sys_bpf`.
#[inline(always)]
pub fn enter(regs: *const u8, tid: u32, from_syscall: bool) -> Result<(), i64> {
    let cmd = read::<u64>(regs, off!(regs_di))? as u32;
    if cmd != bpf_cmd::PROG_ATTACH
        && cmd != bpf_cmd::PROG_DETACH
        && cmd != bpf_cmd::LINK_CREATE
        && cmd != bpf_cmd::LINK_DETACH
    {
        return Ok(());
    }
    let uattr = read::<u64>(regs, off!(regs_si))?;
    let mut attr = [0u32; 4];
    let ok = unsafe { bpf_probe_read_user(attr.as_mut_ptr().cast(), 16, uattr as *const core::ffi::c_void) };
    if ok != 0 {
        return Ok(());
    }
    let r = BPF_SCRATCH.get_ptr_mut(0).ok_or(-12i64)?;
    // SAFETY: per-CPU scratch, only this program on this CPU uses it now.
    let r = unsafe { &mut *r };
    r.cmd = cmd;
    r.flags = 0;
    r.prog_id = 0;
    r.prog_type = 0;
    r.prog_name = [0; 16];
    r.link_id = 0;
    r.path_len = 0;
    r.ns_path_len = 0;
    r.ns_root_id = 0;
    r._pad = 0;
    r.result = 0;
    if cmd == bpf_cmd::LINK_DETACH {
        // The link says what it was attached to (struct bpf_cgroup_link,
        // include/linux/bpf-cgroup-defs.h); only cgroup links are kept.
        let Some(link) = bpf_object_of_fd(attr[0], BPF_LINK) else { return Ok(()) };
        if read::<u32>(link, off!(link_type)).unwrap_or(0) != LINK_TYPE_CGROUP {
            return Ok(());
        }
        let cgrp = read_ptr(link, off!(cgroup_link_cgroup))?;
        let kn = read_ptr(cgrp, off!(cgroup_kn))?;
        r.link_id = read::<u32>(link, off!(link_id)).unwrap_or(0);
        r.attach_type = read::<u32>(link, off!(cgroup_link_attach_type)).unwrap_or(u32::MAX);
        r.attach_flags = 0;
        fill_prog(r, read_ptr(link, off!(link_prog)).ok().filter(|p| !p.is_null()));
        fill_target(r, kn);
    } else {
        let (target_fd, prog_fd) =
            if cmd == bpf_cmd::LINK_CREATE { (attr[1], attr[0]) } else { (attr[0], attr[1]) };
        let Some(kn) = cgroup_dir_of_fd(target_fd) else { return Ok(()) };
        r.attach_type = attr[2];
        r.attach_flags = attr[3];
        // A detach may name no program (fd 0 and flags without BPF_F_ALLOW_MULTI: the
        // one program there); whatever fd it names is only read if it is a program.
        fill_prog(r, bpf_object_of_fd(prog_fd, BPF_PROG));
        fill_target(r, kn);
    }
    fill_ns_root(r);
    kernel::fill_header(&mut r.header, kind::CGROUP_BPF, core::mem::size_of::<CgroupBpf>());
    // By reference: the value is 2 KiB, four times the BPF stack.
    #[allow(clippy::needless_borrows_for_generic_args)]
    let parked = BPF_PENDING.insert(tid, &*r, 0).is_ok();
    if parked {
        if from_syscall {
            crate::openers::exit_work_begin();
        }
    } else {
        account(kind::CGROUP_BPF, false);
    }
    Ok(())
}

/// Exit of `bpf()`: the result, and the record goes out.
#[inline(always)]
pub fn exit(tid: u32, ret: i64, from_syscall: bool) -> Result<(), i64> {
    let Some(r) = BPF_PENDING.get_ptr_mut(tid) else { return Ok(()) };
    if from_syscall {
        crate::openers::exit_work_end();
    }
    // SAFETY: the map value stays valid while this program runs (RCU).
    let r = unsafe { &mut *r };
    r.result = ret;
    if r.cmd == bpf_cmd::LINK_CREATE && ret >= 0 {
        if let Some(link) = bpf_object_of_fd(ret as u32, BPF_LINK) {
            r.link_id = read::<u32>(link, off!(link_id)).unwrap_or(0);
        }
    }
    let ok = EVENTS.output::<CgroupBpf>(&*r, 0).is_ok();
    account(kind::CGROUP_BPF, ok);
    let _ = BPF_PENDING.remove(tid);
    Ok(())
}
