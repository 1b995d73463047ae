//! Reading kernel memory at offsets resolved from BTF, and the common record header.
use aya_ebpf::helpers::{
    bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
    bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes,
    generated::{bpf_get_current_task, bpf_ktime_get_boot_ns},
};
use tracer_common::{Header, Offsets, MAX_DEPTH, NAME_LEN};

/// Filled by userspace from the running kernel's BTF (`EbpfLoader::set_global`).
#[unsafe(no_mangle)]
static OFFSETS: Offsets = unsafe { core::mem::zeroed() };

/// The tracer's own process id: its own activity is not reported.
#[unsafe(no_mangle)]
static TRACER_TGID: u32 = 0;

/// The hook families reported by the kernel-function programs (`tracer_common::family`
/// bits), which `sys_enter`/`sys_exit` then skip. Set by userspace at load; read-only, so
/// the verifier drops the branches of a family the syscall programs do not serve.
#[unsafe(no_mangle)]
static KFUNC_FAMILIES: u32 = 0;

/// The families the syscall programs serve (`tracer_common::family` bits): those not on
/// kernel functions. Read once per program run.
#[inline(always)]
pub fn syscall_families() -> u32 {
    !unsafe { core::ptr::read_volatile(&KFUNC_FAMILIES) }
}

/// Reads one field of `OFFSETS` (volatile: the value is patched in at load time).
macro_rules! off {
    ($field:ident) => {
        unsafe { core::ptr::read_volatile(&$crate::kernel::offsets().$field) }
    };
}
pub(crate) use off;

#[inline(always)]
pub fn offsets() -> &'static Offsets {
    &OFFSETS
}

#[inline(always)]
pub fn ready() -> bool {
    off!(ready) != 0
}

#[inline(always)]
pub fn is_self(tgid: u32) -> bool {
    tgid == unsafe { core::ptr::read_volatile(&TRACER_TGID) }
}

/// The thread id of `pid_tgid` (`bpf_get_current_pid_tgid`), or `None` when nothing is
/// reported for it: before the offsets are in, and for the tracer's own threads.
#[inline(always)]
pub fn reported_tid(pid_tgid: u64) -> Option<u32> {
    if !ready() || is_self((pid_tgid >> 32) as u32) {
        return None;
    }
    Some(pid_tgid as u32)
}

/// Reads a `T` at `base + off` from kernel memory.
#[inline(always)]
pub fn read<T: Copy>(base: *const u8, off: u32) -> Result<T, i64> {
    if base.is_null() {
        return Err(-14);
    }
    // SAFETY: bpf_probe_read_kernel validates the address; a bad one is an error.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(off as usize) as *const T) }.map_err(|e| e as i64)
}

/// Reads a pointer at `base + off`.
#[inline(always)]
pub fn read_ptr(base: *const u8, off: u32) -> Result<*const u8, i64> {
    read::<*const u8>(base, off)
}

#[inline(always)]
pub fn current_task() -> *const u8 {
    unsafe { bpf_get_current_task() as *const u8 }
}

#[inline(always)]
pub fn ktime() -> u64 {
    unsafe { bpf_ktime_get_boot_ns() }
}

/// Fills the common header for the current task. Fields that cannot be read stay 0.
#[inline(always)]
pub fn fill_header(h: &mut Header, kind: u16, size: usize) {
    h.kind = kind;
    h._reserved = 0;
    h.size = size as u32;
    h.ktime_ns = ktime();
    let pid_tgid = bpf_get_current_pid_tgid();
    h.pid = (pid_tgid >> 32) as u32;
    h.tid = pid_tgid as u32;
    h.uid = bpf_get_current_uid_gid() as u32;
    h.cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    h.comm = bpf_get_current_comm().unwrap_or([0; 16]);
    h._pad = 0;
    fill_task_links(h, current_task());
}

/// The parts of the header that walk `task_struct`.
#[inline(always)]
fn fill_task_links(h: &mut Header, task: *const u8) {
    h.start_ns = 0;
    h.ppid = 0;
    h.parent_start_ns = 0;
    h.parent_comm = [0; 16];
    h.netns = 0;
    if let Ok(leader) = read_ptr(task, off!(task_group_leader)) {
        h.start_ns = read::<u64>(leader, off!(task_start_boottime)).unwrap_or(0);
    }
    if let Ok(parent) = read_ptr(task, off!(task_real_parent)) {
        h.ppid = read::<u32>(parent, off!(task_tgid)).unwrap_or(0);
        if let Ok(pl) = read_ptr(parent, off!(task_group_leader)) {
            h.parent_start_ns = read::<u64>(pl, off!(task_start_boottime)).unwrap_or(0);
            h.parent_comm = read::<[u8; 16]>(pl, off!(task_comm)).unwrap_or([0; 16]);
        }
    }
    if let Ok(nsproxy) = read_ptr(task, off!(task_nsproxy)) {
        if let Ok(net) = read_ptr(nsproxy, off!(nsproxy_net_ns)) {
            h.netns = read::<u32>(net, off!(net_ns_inum)).unwrap_or(0);
        }
    }
}

/// `file` behind descriptor `fd` of the current task.
#[inline(always)]
pub fn file_of_fd(fd: u64) -> Result<*const u8, i64> {
    let task = current_task();
    let files = read_ptr(task, off!(task_files))?;
    let fdt = read_ptr(files, off!(files_fdt))?;
    let max = read::<u32>(fdt, off!(fdtable_max_fds))?;
    if fd >= max as u64 {
        return Err(-9);
    }
    let fds = read_ptr(fdt, off!(fdtable_fd))?;
    let file = read::<*const u8>(fds, (fd as u32).wrapping_mul(8))?;
    if file.is_null() {
        return Err(-9);
    }
    Ok(file)
}

/// Superblock magic of a file, with its inode.
#[inline(always)]
pub fn file_magic(file: *const u8) -> Result<(u64, *const u8), i64> {
    let inode = read_ptr(file, off!(file_inode))?;
    let sb = read_ptr(inode, off!(inode_sb))?;
    let magic = read::<u64>(sb, off!(sb_magic))?;
    Ok((magic, inode))
}

/// kernfs id of a cgroup (`cgroup->kn->id`).
#[inline(always)]
pub fn cgroup_id(cgrp: *const u8) -> u64 {
    match read_ptr(cgrp, off!(cgroup_kn)) {
        Ok(kn) => read::<u64>(kn, off!(kn_id)).unwrap_or(0),
        Err(_) => 0,
    }
}

/// The path components of kernfs directory `kn` up to (not including) its hierarchy
/// root, leaf first, into `path`: (components, whether more were left above).
#[inline(always)]
pub fn kn_path(kn: *const u8, path: &mut [[u8; NAME_LEN]; MAX_DEPTH]) -> (u16, bool) {
    let mut cur = kn;
    let mut depth: u16 = 0;
    for (i, slot) in path.iter_mut().enumerate() {
        let parent = match read_ptr(cur, off!(kn_parent)) {
            Ok(p) => p,
            Err(_) => break,
        };
        if parent.is_null() {
            break; // `cur` is the hierarchy root: its name is not part of the path.
        }
        slot[0] = 0;
        if let Ok(name) = read_ptr(cur, off!(kn_name)) {
            let _ = unsafe { bpf_probe_read_kernel_str_bytes(name, slot) };
        }
        depth = i as u16 + 1;
        cur = parent;
    }
    let mut truncated = false;
    if depth as usize == MAX_DEPTH {
        if let Ok(p) = read_ptr(cur, off!(kn_parent)) {
            truncated = !p.is_null();
        }
    }
    (depth, truncated)
}

/// `cgroup->root->hierarchy_id`.
#[inline(always)]
pub fn hierarchy_id(cgrp: *const u8) -> u32 {
    match read_ptr(cgrp, off!(cgroup_root)) {
        Ok(root) => read::<i32>(root, off!(cgroup_root_hierarchy_id)).unwrap_or(-1) as u32,
        Err(_) => u32::MAX,
    }
}

/// Copies up to `dst.len()` bytes of kernel memory at `src` (`len` there) into `dst`:
/// the bytes copied, or `None` when the read faulted.
#[inline(always)]
pub fn read_kernel_bounded(dst: &mut [u8], src: *const u8, len: u64) -> Option<u32> {
    let max = dst.len() as u64;
    let n = if len > max { max } else { len };
    if n == 0 || n > max {
        return Some(0);
    }
    // SAFETY: `n` is at most `dst.len()`; the helper checks `src`.
    let ok = unsafe {
        aya_ebpf::helpers::generated::bpf_probe_read_kernel(dst.as_mut_ptr().cast(), n as u32, src.cast())
    };
    (ok == 0).then_some(n as u32)
}

/// Copies up to `dst.len()` bytes of user memory at `src` (`len` asked for) into `dst`.
/// Returns the bytes copied, 0 for nothing to copy, or `None` when the memory could not
/// be read (a page not resident: the caller reports the value as unavailable and still
/// sends the event).
#[inline(always)]
pub fn read_user_bounded(dst: &mut [u8], src: u64, len: u64) -> Option<u32> {
    let max = dst.len() as u64;
    let n = if len > max { max } else { len };
    if n == 0 || n > max {
        return Some(0);
    }
    // SAFETY: `n` is at most `dst.len()`; the helper checks `src`.
    let ok = unsafe {
        aya_ebpf::helpers::generated::bpf_probe_read_user(
            dst.as_mut_ptr().cast(),
            n as u32,
            src as *const core::ffi::c_void,
        )
    };
    (ok == 0).then_some(n as u32)
}
