//! Writes to cgroupfs files (v1 and v2), seen in one of two places (the hook mode):
//! - kernel functions: fentry/fexit on `cgroup_file_write`, which every cgroup file
//!   write reaches whatever issued it (`kfunc.rs`);
//! - syscalls: write/pwrite64/writev/pwritev/pwritev2 at `sys_enter`, which resolves
//!   fd -> file -> inode -> superblock magic and keeps only cgroupfs files.
//!
//! The entry sends a `CgroupWriteEnter` record at once: the file, the cgroup path
//! (kernfs walk), the bytes written (bounded by `VALUE_LEN`) and the cgroup's
//! `subtree_control` mask. The exit sends a small `CgroupWriteExit` with the result
//! and the mask after the write; userspace joins the two by thread id (an exit that
//! never comes leaves the event without a result, it never drops it).
//!
//! A storm of writes to the same few cgroups is the expensive case, so the path is
//! sent once per cgroup: `SENT` remembers (hierarchy, cgroup id) pairs whose path went
//! out in a record the ring buffer accepted, and later records carry `PATH_OMITTED`
//! and no path (userspace keeps the id -> path map; rmdir evicts on both sides).
//! Records are built in per-CPU scratch and copied once into the ring buffer with
//! only the path components they carry (and, without a path, only the value bytes).
use aya_ebpf::{
    helpers::{bpf_probe_read_kernel_str_bytes, generated::bpf_probe_read_user},
    macros::map,
    maps::{LruHashMap, PerCpuArray},
};
use tracer_common::{
    counter, flags, kind, sysno, CgroupWriteEnter, CgroupWriteExit, Header, CGROUP2_SUPER_MAGIC,
    CGROUP_SUPER_MAGIC, CGROUP_WRITE_ENTER_FIXED, CGROUP_WRITE_ENTER_HEAD, MASK_UNKNOWN, MAX_DEPTH, NAME_LEN,
    VALUE_LEN,
};

use crate::kernel::{self, off, read, read_ptr};
use crate::maps::{account, bump, EVENTS, LOST, SEEN};

#[map]
/// Thread id -> `struct cgroup *` of a write between its entry and exit (kernel pointer,
/// never sent). LRU: a thread killed inside the syscall never reaches sys_exit.
static PENDING: LruHashMap<u32, u64> = LruHashMap::with_max_entries(4096, 0);

/// A cgroup whose path userspace already has.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SentKey {
    id: u64,
    hierarchy_id: u32,
    _pad: u32,
}

#[map]
/// (hierarchy, cgroup id) whose path went out in an accepted record. LRU: an evicted
/// entry only means the path is sent again.
static SENT: LruHashMap<SentKey, u8> = LruHashMap::with_max_entries(8192, 0);

/// Scratch space to build a record (too large for the 512-byte BPF stack).
#[map]
static SCRATCH: PerCpuArray<CgroupWriteEnter> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
pub fn is_write(nr: u64) -> bool {
    nr == sysno::WRITE
        || nr == sysno::PWRITE64
        || nr == sysno::WRITEV
        || nr == sysno::PWRITEV
        || nr == sysno::PWRITEV2
}

/// At `cgroup_rmdir`: the path of a removed cgroup is sent again if it is ever written
/// through a descriptor still open (userspace forgets it too).
#[inline(always)]
pub fn forget_cgroup(hierarchy_id: u32, id: u64) {
    let _ = SENT.remove(SentKey { id, hierarchy_id, _pad: 0 });
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
    // inode->i_private is the file's kernfs_node (fs/kernfs/inode.c: kernfs_init_inode).
    let kn = read_ptr(inode, off!(inode_private))?;
    let (r, cgrp) = begin(kn, nr as u32, fd as i32)?;

    // The bytes written: the buffer, or the first iovec of the vector forms.
    let arg1 = read::<u64>(regs, off!(regs_si))?;
    let arg2 = read::<u64>(regs, off!(regs_dx))?;
    let (src, count) = if nr == sysno::WRITE || nr == sysno::PWRITE64 {
        (arg1, arg2)
    } else {
        let mut iov = [0u64; 2];
        let ok =
            unsafe { bpf_probe_read_user(iov.as_mut_ptr().cast(), 16, arg1 as *const core::ffi::c_void) };
        if ok != 0 {
            r.flags |= flags::VALUE_UNREADABLE;
        }
        if arg2 > 1 {
            // Only the first iovec is read: the value may go on in the others.
            r.flags |= flags::VALUE_TRUNCATED | flags::MORE_IOVECS;
        }
        (iov[0], iov[1])
    };
    set_value(r, count, |value| kernel::read_user_bounded(value, src, count));
    send(r, cgrp, tid, true);
    Ok(())
}

/// Entry of `cgroup_file_write(of, buf, nbytes, off)` (kernel/cgroup/cgroup.c), which
/// every write to a cgroup v1 or v2 file reaches, however it was issued (write, writev,
/// io_uring, a passed descriptor): `buf` is the kernel's NUL-terminated copy of all of
/// it (fs/kernfs/file.c: kernfs_fop_write_iter).
#[inline(always)]
pub fn kfunc_enter(of: *const u8, buf: *const u8, nbytes: u64, tid: u32) -> Result<(), i64> {
    let kn = read_ptr(of, off!(kof_kn))?;
    // Which syscall and descriptor brought it here is not known in the kernel function.
    let (r, cgrp) = begin(kn, 0, -1)?;
    r.flags |= flags::KFUNC;
    r.magic = if r.hierarchy_id == 0 { CGROUP2_SUPER_MAGIC } else { CGROUP_SUPER_MAGIC };
    set_value(r, nbytes, |value| kernel::read_kernel_bounded(value, buf, nbytes));
    send(r, cgrp, tid, false);
    Ok(())
}

/// Starts a record in the per-CPU scratch for a write to the file `kn`: the header, the
/// file name, the cgroup (its id, hierarchy, `subtree_control` now) and its path unless
/// userspace has it already. The caller adds the value ([`set_value`]), then calls
/// [`send`].
#[inline(always)]
fn begin(kn: *const u8, syscall: u32, fd: i32) -> Result<(&'static mut CgroupWriteEnter, *const u8), i64> {
    let r = SCRATCH.get_ptr_mut(0).ok_or(-12i64)?;
    // SAFETY: per-CPU scratch, only this program on this CPU uses it now.
    let r = unsafe { &mut *r };
    kernel::fill_header(&mut r.header, kind::CGROUP_WRITE_ENTER, CGROUP_WRITE_ENTER_FIXED);
    r.magic = 0;
    r.syscall = syscall;
    r.fd = fd;
    r.flags = 0;
    r._pad = 0;

    // The file's kernfs parent is the cgroup directory, whose ->priv is the `struct
    // cgroup` (kernel/cgroup/cgroup.c: kernfs_create_dir).
    let name = read_ptr(kn, off!(kn_name))?;
    r.file[0] = 0;
    let _ = unsafe { bpf_probe_read_kernel_str_bytes(name, &mut r.file) };
    let dir = read_ptr(kn, off!(kn_parent))?;
    r.cgroup_id = read::<u64>(dir, off!(kn_id)).unwrap_or(0);
    let cgrp = read_ptr(dir, off!(kn_priv)).unwrap_or(core::ptr::null());
    r.hierarchy_id = kernel::hierarchy_id(cgrp);
    r.subtree_before = read::<u16>(cgrp, off!(cgroup_subtree_control)).unwrap_or(MASK_UNKNOWN);
    let key = SentKey { id: r.cgroup_id, hierarchy_id: r.hierarchy_id, _pad: 0 };
    if r.cgroup_id != 0 && unsafe { SENT.get(key) }.is_some() {
        r.flags |= flags::PATH_OMITTED;
        r.path_len = 0;
    } else {
        walk_path(dir, r);
    }
    Ok((r, cgrp))
}

/// The value written: `count` bytes were, and `copy` puts as many as fit in `value`
/// (`None`: not resident or unreadable, so the value is reported unavailable and the
/// event still goes out).
#[inline(always)]
fn set_value(r: &mut CgroupWriteEnter, count: u64, copy: impl FnOnce(&mut [u8; VALUE_LEN]) -> Option<u32>) {
    r.count = count;
    if count > VALUE_LEN as u64 {
        r.flags |= flags::VALUE_TRUNCATED;
    }
    r.value_len = match copy(&mut r.value) {
        Some(n) => n as u16,
        None => {
            r.flags |= flags::VALUE_UNREADABLE;
            0
        }
    };
}

/// Parks the cgroup for the exit (to read its mask after the write) and sends the
/// record, as long as the path and value it holds. `from_syscall`: the exit is
/// `sys_exit`, which must be told there is work for it.
#[inline(always)]
fn send(r: &mut CgroupWriteEnter, cgrp: *const u8, tid: u32, from_syscall: bool) {
    // Park before sending, so the record says whether a result will follow.
    let parked = PENDING.insert(tid, cgrp as u64, 0).is_ok();
    if !parked {
        bump(&SEEN, counter::PENDING_FULL);
        r.flags |= flags::NO_RESULT;
    }
    let mut path_len = r.path_len as usize;
    if path_len > MAX_DEPTH {
        path_len = MAX_DEPTH;
    }
    let mut value_len = r.value_len as usize;
    if value_len > VALUE_LEN {
        value_len = VALUE_LEN;
    }
    // Without a path the record ends with the value bytes it holds.
    let size = if path_len == 0 {
        CGROUP_WRITE_ENTER_HEAD + value_len
    } else {
        CGROUP_WRITE_ENTER_FIXED + path_len * NAME_LEN
    };
    r.header.size = size as u32;
    // SAFETY: `size` is at most the size of the scratch record.
    let bytes = unsafe { core::slice::from_raw_parts((r as *const CgroupWriteEnter).cast::<u8>(), size) };
    let ok = EVENTS.output::<[u8]>(bytes, 0).is_ok();
    account(kind::CGROUP_WRITE, ok);
    if ok {
        if r.flags & flags::PATH_OMITTED == 0 && r.cgroup_id != 0 {
            let key = SentKey { id: r.cgroup_id, hierarchy_id: r.hierarchy_id, _pad: 0 };
            let _ = SENT.insert(key, 1, 0);
        }
        if parked && from_syscall {
            crate::openers::exit_work_begin();
        }
    } else if parked {
        let _ = PENDING.remove(tid);
    }
}

/// Path components from the cgroup directory up to (not including) the root.
#[inline(always)]
fn walk_path(dir: *const u8, r: &mut CgroupWriteEnter) {
    let (depth, truncated) = kernel::kn_path(dir, &mut r.path);
    r.path_len = depth;
    if truncated {
        r.flags |= flags::PATH_TRUNCATED;
    }
}

/// Exit of a write-family syscall, or of `cgroup_file_write` (`from_syscall` false):
/// send the result of a write parked at entry.
#[inline(always)]
pub fn exit(tid: u32, ret: i64, from_syscall: bool) -> Result<(), i64> {
    let Some(cgrp) = (unsafe { PENDING.get(tid) }).copied() else {
        return Ok(());
    };
    let _ = PENDING.remove(tid);
    if from_syscall {
        crate::openers::exit_work_end();
    }
    let Some(mut entry) = EVENTS.reserve::<CgroupWriteExit>(0) else {
        bump(&SEEN, counter::CGROUP_WRITE_RESULT);
        bump(&LOST, counter::CGROUP_WRITE_RESULT);
        return Ok(());
    };
    // SAFETY: the reserved entry is ours until submitted.
    let e = unsafe { &mut *entry.as_mut_ptr() };
    let pid_tgid = aya_ebpf::helpers::bpf_get_current_pid_tgid();
    e.header = Header {
        kind: kind::CGROUP_WRITE_EXIT,
        _reserved: 0,
        size: core::mem::size_of::<CgroupWriteExit>() as u32,
        ktime_ns: kernel::ktime(),
        pid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        ppid: 0,
        uid: 0,
        start_ns: 0,
        parent_start_ns: 0,
        cgroup_id: 0,
        netns: 0,
        _pad: 0,
        comm: [0; 16],
        parent_comm: [0; 16],
    };
    e.result = ret;
    e.subtree_after = read::<u16>(cgrp as *const u8, off!(cgroup_subtree_control)).unwrap_or(MASK_UNKNOWN);
    e._pad = [0; 3];
    entry.submit(0);
    bump(&SEEN, counter::CGROUP_WRITE_RESULT);
    Ok(())
}
