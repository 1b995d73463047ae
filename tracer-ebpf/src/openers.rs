//! Which processes hold a file on cgroupfs: the write hook only walks fd -> file ->
//! superblock for them, so every other write() on the node pays one hash lookup instead
//! of six kernel reads (measured by `cargo xtask bench`; see BENCHMARKS.md).
//!
//! A process becomes an opener when an open/openat/openat2/creat returns an fd on
//! cgroupfs (checked at sys_exit), or when userspace finds such an fd in /proc/<pid>/fd
//! at start-up (processes that opened cgroup files before tracer started), and its forked
//! children inherit the mark (they inherit the fds). Exit removes it. Not covered: a
//! cgroupfs fd received over SCM_RIGHTS by a process that never opened one itself.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap},
};
use tracer_common::{sysno, CGROUP2_SUPER_MAGIC, CGROUP_SUPER_MAGIC};

use crate::kernel;

/// tgid -> 1 for processes that opened a cgroupfs file. Userspace seeds it at start.
#[map]
pub static CG_OPENERS: HashMap<u32, u8> = HashMap::with_max_entries(32768, 0);

/// Threads inside an open whose exit must be inspected. Only exits whose entry was seen
/// here change `EXIT_WORK`, so syscalls already in flight when tracer attached cannot
/// unbalance the counter.
#[map]
static OPENING: HashMap<u32, u8> = HashMap::with_max_entries(16384, 0);

/// Syscalls in flight whose exit needs work (opens, parked cgroup writes). `sys_exit`
/// does nothing while it is 0, which is most of the time on most nodes.
#[map]
static EXIT_WORK: Array<u64> = Array::with_max_entries(1, 0);

#[inline(always)]
pub fn is_open(nr: u64) -> bool {
    nr == sysno::OPENAT || nr == sysno::OPEN || nr == sysno::OPENAT2 || nr == sysno::CREAT
}

#[inline(always)]
pub fn is_opener(tgid: u32) -> bool {
    unsafe { CG_OPENERS.get(tgid) }.is_some()
}

/// Atomic add on the shared counter. The BPF target has no Rust atomics with fetch
/// semantics, so this is the BPF `lock xadd` instruction (BPF_ATOMIC | BPF_ADD) itself.
#[inline(always)]
fn work_add(delta: i64) {
    if let Some(p) = EXIT_WORK.get_ptr_mut(0) {
        // SAFETY: p points at the map's u64 value, valid for the map's lifetime.
        unsafe {
            core::arch::asm!("lock *(u64 *)({p} + 0) += {d}", p = in(reg) p, d = in(reg) delta);
        }
    }
}

#[inline(always)]
pub fn exit_work_begin() {
    work_add(1);
}

#[inline(always)]
pub fn exit_work_end() {
    work_add(-1);
}

/// True when no syscall in flight needs its exit handled. A plain load: the thread
/// that incremented the counter at entry is the one reading it at exit (program order;
/// a migration between CPUs is a full barrier).
#[inline(always)]
pub fn no_exit_work() -> bool {
    match EXIT_WORK.get_ptr(0) {
        // SAFETY: as above.
        Some(p) => (unsafe { core::ptr::read_volatile(p) }) == 0,
        None => false,
    }
}

/// At the entry of an open.
#[inline(always)]
pub fn open_enter(tid: u32) {
    if OPENING.insert(tid, 1, 0).is_ok() {
        exit_work_begin();
    }
}

/// At the exit of an open: mark the process when the new fd is on cgroupfs.
#[inline(always)]
pub fn open_exit(tid: u32, tgid: u32, ret: i64) {
    if OPENING.remove(tid).is_err() {
        return; // entered before tracer attached
    }
    exit_work_end();
    if ret < 0 || is_opener(tgid) {
        return;
    }
    let Ok(file) = kernel::file_of_fd(ret as u64) else { return };
    let Ok((magic, _)) = kernel::file_magic(file) else { return };
    if magic == CGROUP_SUPER_MAGIC || magic == CGROUP2_SUPER_MAGIC {
        let _ = CG_OPENERS.insert(tgid, 1, 0);
    }
}

/// A new process inherits its parent's fds, and so its mark.
#[inline(always)]
pub fn inherit(parent_tgid: u32, child_tgid: u32) {
    if is_opener(parent_tgid) {
        let _ = CG_OPENERS.insert(child_tgid, 1, 0);
    }
}

#[inline(always)]
pub fn forget(tgid: u32) {
    let _ = CG_OPENERS.remove(tgid);
}
