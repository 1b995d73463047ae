//! Records shared by the kernel programs (`tracer-ebpf`) and userspace (`tracer-user`).
//!
//! Every record written to the ring buffer starts with a [`Header`]; `Header::kind` says
//! which record follows and `Header::size` how many bytes the whole record has. Userspace
//! never transmutes bytes into these types without checking `kind` and `size` first
//! (see `tracer-user/src/decode.rs`). Kind numbers are never reused.
//!
//! The layouts are `#[repr(C)]`, padded by hand to multiples of 8 bytes, and pinned by the
//! size assertions at the bottom of this file.
#![no_std]

/// `TASK_COMM_LEN` in the kernel (include/linux/sched.h).
pub const COMM_LEN: usize = 16;
/// Bytes of a cgroup file write that are copied (the value written). Longer writes are
/// marked truncated; the count of bytes requested is always kept.
pub const VALUE_LEN: usize = 256;
/// Bytes of a kernfs name (one path component) that are copied.
pub const NAME_LEN: usize = 128;
/// Path components of a cgroup directory walked up from the written file.
pub const MAX_DEPTH: usize = 8;
/// Bytes of a cgroup path given by the `cgroup_mkdir`/`cgroup_rmdir` tracepoints.
pub const PATH_LEN: usize = 512;
/// Bytes of a netlink request copied from the first iovec / buffer (batched messages
/// included, up to this bound).
pub const NETLINK_LEN: usize = 2048;
/// Bytes of a sysctl name (`net/ipv4/conf/<dev>/rp_filter` fits easily).
pub const SYSCTL_NAME_LEN: usize = 128;
/// Bytes of a sysctl value.
pub const SYSCTL_VALUE_LEN: usize = 64;
/// Bytes of an executable path from `linux_binprm::filename`.
pub const FILENAME_LEN: usize = 256;
/// Bytes of a new program's command line (its argv, NUL-separated, from the new
/// `mm->arg_start`): enough for `systemctl restart systemd-networkd.service`.
pub const ARGS_LEN: usize = 256;

/// cgroup v1 filesystem magic (`CGROUP_SUPER_MAGIC`, include/uapi/linux/magic.h).
pub const CGROUP_SUPER_MAGIC: u64 = 0x0027_e0eb;
/// cgroup v2 filesystem magic (`CGROUP2_SUPER_MAGIC`).
pub const CGROUP2_SUPER_MAGIC: u64 = 0x6367_7270;
/// sockfs magic (`SOCKFS_MAGIC`): a file on it is a socket.
pub const SOCKFS_MAGIC: u64 = 0x534f_434b;
/// `AF_NETLINK`.
pub const AF_NETLINK: u16 = 16;
/// `NETLINK_ROUTE`.
pub const NETLINK_ROUTE: u16 = 0;

/// Record kinds (`Header::kind`). Numbers are never reused.
pub mod kind {
    /// The first cgroup-write record (sent whole from `sys_exit`), replaced by
    /// `CGROUP_WRITE_ENTER` + `CGROUP_WRITE_EXIT`; no longer sent. The number is kept:
    /// it names the counter slot of cgroup writes and is never reused.
    pub const CGROUP_WRITE: u16 = 1;
    pub const CGROUP_MKDIR: u16 = 2;
    pub const CGROUP_RMDIR: u16 = 3;
    pub const SYSCTL_WRITE: u16 = 4;
    pub const NETLINK: u16 = 5;
    pub const SIGNAL: u16 = 6;
    pub const PROC_EXEC: u16 = 7;
    pub const PROC_FORK: u16 = 8;
    pub const PROC_EXIT: u16 = 9;
    /// A cgroup write at syscall entry ([`super::CgroupWriteEnter`], variable length).
    pub const CGROUP_WRITE_ENTER: u16 = 10;
    /// The result of a cgroup write at syscall exit ([`super::CgroupWriteExit`]).
    pub const CGROUP_WRITE_EXIT: u16 = 11;
    /// A program attached to or detached from a cgroup through `bpf()`
    /// ([`super::CgroupBpf`], sent at syscall exit with the result).
    pub const CGROUP_BPF: u16 = 12;
}

/// Every record kind in one table: its number, its name (the per-hook counters of
/// `stats` lines and metrics), and the schema-v1 `kind` values of the events it makes
/// (`tracer-user/src/stream/schema.rs` holds `Kind`, and a test there checks it against
/// this table).
pub mod kinds {
    use super::kind;

    pub struct KindInfo {
        pub number: u16,
        pub name: &'static str,
        pub events: &'static [&'static str],
    }

    pub const KINDS: &[KindInfo] = &[
        KindInfo { number: kind::CGROUP_WRITE, name: "cgroup_write", events: &["cgroup_write"] },
        KindInfo { number: kind::CGROUP_MKDIR, name: "cgroup_mkdir", events: &["cgroup_mkdir"] },
        KindInfo { number: kind::CGROUP_RMDIR, name: "cgroup_rmdir", events: &["cgroup_rmdir"] },
        KindInfo { number: kind::SYSCTL_WRITE, name: "sysctl_write", events: &["sysctl_write"] },
        KindInfo {
            number: kind::NETLINK,
            name: "netlink",
            events: &["route_delete", "rule_delete", "addr_delete", "link_delete", "link_set"],
        },
        KindInfo { number: kind::SIGNAL, name: "signal", events: &["signal"] },
        KindInfo { number: kind::PROC_EXEC, name: "proc_exec", events: &["exec"] },
        KindInfo { number: kind::PROC_FORK, name: "proc_fork", events: &[] },
        KindInfo { number: kind::PROC_EXIT, name: "proc_exit", events: &[] },
        // Counted in the slot of CGROUP_WRITE (its events are `cgroup_write`).
        KindInfo { number: kind::CGROUP_WRITE_ENTER, name: "cgroup_write_enter", events: &[] },
        KindInfo { number: kind::CGROUP_WRITE_EXIT, name: "cgroup_write_exit", events: &[] },
        KindInfo {
            number: kind::CGROUP_BPF,
            name: "cgroup_bpf",
            events: &["cgroup_bpf_attach", "cgroup_bpf_detach"],
        },
    ];

    /// The name of a record kind.
    pub fn name(number: u16) -> Option<&'static str> {
        let mut i = 0;
        while i < KINDS.len() {
            if KINDS[i].number == number {
                return Some(KINDS[i].name);
            }
            i += 1;
        }
        None
    }
}

/// The signals the `signal_generate` program keeps: those that end or stop a process
/// (SIGCHLD and friends would drown the ring buffer), with their names
/// (arch/x86/include/uapi/asm/signal.h) and whether they end it.
pub mod signals {
    pub struct SignalInfo {
        pub number: i32,
        pub name: &'static str,
        /// Ends the process unless handled (SIGSTOP stops it, SIGUSR1/2 only end an
        /// unprepared one: both are kept, but are no kill).
        pub terminating: bool,
    }

    pub const KEPT: &[SignalInfo] = &[
        SignalInfo { number: 1, name: "SIGHUP", terminating: true },
        SignalInfo { number: 2, name: "SIGINT", terminating: true },
        SignalInfo { number: 3, name: "SIGQUIT", terminating: true },
        SignalInfo { number: 6, name: "SIGABRT", terminating: true },
        SignalInfo { number: 9, name: "SIGKILL", terminating: true },
        SignalInfo { number: 10, name: "SIGUSR1", terminating: false },
        SignalInfo { number: 11, name: "SIGSEGV", terminating: true },
        SignalInfo { number: 12, name: "SIGUSR2", terminating: false },
        SignalInfo { number: 15, name: "SIGTERM", terminating: true },
        SignalInfo { number: 19, name: "SIGSTOP", terminating: false },
    ];

    /// Whether the kernel program keeps this signal (a loop the verifier bounds).
    #[inline(always)]
    pub fn kept(sig: i32) -> bool {
        let mut i = 0;
        while i < KEPT.len() {
            if KEPT[i].number == sig {
                return true;
            }
            i += 1;
        }
        false
    }

    pub fn info(sig: i32) -> Option<&'static SignalInfo> {
        KEPT.iter().find(|s| s.number == sig)
    }
}

/// Counter slots: one per record kind (`kind - 1`), plus internal ones.
pub mod counter {
    /// Number of counter slots in the `SEEN` and `LOST` per-CPU arrays.
    pub const SLOTS: u32 = 16;
    /// Slot of a record kind.
    pub const fn of_kind(kind: u16) -> u32 {
        (kind as u32).wrapping_sub(1) & (SLOTS - 1)
    }
    /// A cgroup write whose entry state could not be stored (pending map full).
    pub const PENDING_FULL: u32 = 12;
    /// Result records of cgroup writes (`CGROUP_WRITE_EXIT`); a lost one leaves its
    /// event without a result, it never drops the event.
    pub const CGROUP_WRITE_RESULT: u32 = 13;

    /// The name of a counter slot in `stats` lines: the record kind's, or an internal one.
    pub fn name(slot: u32) -> Option<&'static str> {
        match slot {
            PENDING_FULL => Some("cgroup_write_pending_full"),
            CGROUP_WRITE_RESULT => Some("cgroup_write_result"),
            // Slots 0..9 are the record kinds 1..10 that have counters of their own.
            s if s < 9 => super::kinds::name(s as u16 + 1),
            s if s == of_kind(super::kind::CGROUP_BPF) => super::kinds::name(super::kind::CGROUP_BPF),
            _ => None,
        }
    }
}

/// x86_64 syscall numbers the raw `sys_enter`/`sys_exit` programs act on
/// (arch/x86/entry/syscalls/syscall_64.tbl).
pub mod sysno {
    pub const WRITE: u64 = 1;
    pub const PWRITE64: u64 = 18;
    pub const WRITEV: u64 = 20;
    pub const SENDTO: u64 = 44;
    pub const SENDMSG: u64 = 46;
    pub const PWRITEV: u64 = 296;
    pub const PWRITEV2: u64 = 328;
    pub const OPEN: u64 = 2;
    pub const CREAT: u64 = 85;
    pub const OPENAT: u64 = 257;
    pub const OPENAT2: u64 = 437;
    pub const BPF: u64 = 321;
}

/// `bpf()` commands the cgroup-attach hook keeps (`enum bpf_cmd`, include/uapi/linux/bpf.h).
pub mod bpf_cmd {
    pub const PROG_ATTACH: u32 = 8;
    pub const PROG_DETACH: u32 = 9;
    pub const LINK_CREATE: u32 = 28;
    pub const LINK_DETACH: u32 = 34;

    /// The command's name as the uapi header spells it.
    pub fn name(cmd: u32) -> &'static str {
        match cmd {
            PROG_ATTACH => "BPF_PROG_ATTACH",
            PROG_DETACH => "BPF_PROG_DETACH",
            LINK_CREATE => "BPF_LINK_CREATE",
            LINK_DETACH => "BPF_LINK_DETACH",
            _ => "BPF_?",
        }
    }
}

/// `enum bpf_attach_type` values of the socket-address and socket program types
/// (`cgroup_sock_addr`, `cgroup_sock`; include/uapi/linux/bpf.h): inet4/6 bind, connect,
/// post_bind, udp4/6 sendmsg and recvmsg, getpeername, getsockname, sock_create,
/// sock_release, and the unix ones. Cilium's socket load balancer uses most of them
/// (bpf/bpf_sock.c); attached below the host's cgroup2 root they only see that subtree.
pub const SOCKET_ATTACH_TYPES: &[u32] =
    &[2, 8, 9, 10, 11, 12, 13, 14, 15, 19, 20, 29, 30, 31, 32, 34, 49, 50, 51, 52, 53];

/// Flags in record `flags` fields.
pub mod flags {
    /// The copied value is shorter than what was written.
    pub const VALUE_TRUNCATED: u32 = 1 << 0;
    /// The user buffer could not be read (page not resident): the value is unavailable.
    pub const VALUE_UNREADABLE: u32 = 1 << 1;
    /// The cgroup path has more components than `MAX_DEPTH`.
    pub const PATH_TRUNCATED: u32 = 1 << 2;
    /// The syscall exit was not seen (result unknown).
    pub const NO_RESULT: u32 = 1 << 3;
    /// A netlink sendmsg, or a cgroup writev/pwritev, had more than one iovec; only the
    /// first was copied.
    pub const MORE_IOVECS: u32 = 1 << 4;
    /// The cgroup path was sent in an earlier record for the same
    /// (`hierarchy_id`, `cgroup_id`) and is not repeated (`CgroupWriteEnter`).
    pub const PATH_OMITTED: u32 = 1 << 5;
    /// The attacher's cgroup-namespace root path has more components than `MAX_DEPTH`
    /// (`CgroupBpf`).
    pub const NS_PATH_TRUNCATED: u32 = 1 << 6;
    /// The program behind the request could not be read (no such fd, not a program):
    /// `prog_id`, `prog_type` and `prog_name` are unknown (`CgroupBpf`).
    pub const PROG_UNKNOWN: u32 = 1 << 7;
    /// Seen in a kernel function rather than at a syscall: a cgroup write's value is the
    /// kernel's copy of everything written (every iovec, io_uring included), a netlink
    /// record is one message as the kernel handled it, with the kernel's answer in
    /// `result` (`CgroupWriteEnter`, `Netlink`).
    pub const KFUNC: u32 = 1 << 8;
}

/// The hook families that can run on kernel functions (fentry/fexit) instead of the
/// syscall tracepoints: bits of the programs' global `KFUNC_FAMILIES`. A family whose bit
/// is set is skipped by `sys_enter`/`sys_exit` (its kernel-function programs report it).
pub mod family {
    /// Writes to cgroupfs files: `cgroup_file_write`.
    pub const CGROUP_WRITE: u32 = 1 << 0;
    /// rtnetlink requests: `rtnetlink_rcv_msg`.
    pub const NETLINK: u32 = 1 << 1;
    /// `bpf()` attach/detach on cgroups: the syscall's own function, `__x64_sys_bpf`.
    pub const CGROUP_BPF: u32 = 1 << 2;
    pub const ALL: u32 = CGROUP_WRITE | NETLINK | CGROUP_BPF;
}

/// Kernel struct field offsets, resolved from the running kernel's BTF at load time and
/// handed to the programs as the global `OFFSETS` (see `tracer-user/src/btf_offsets.rs`).
/// Nothing about kernel layout is compiled into the programs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offsets {
    // struct task_struct
    pub task_pid: u32,
    pub task_tgid: u32,
    pub task_real_parent: u32,
    pub task_group_leader: u32,
    pub task_comm: u32,
    pub task_start_boottime: u32,
    pub task_nsproxy: u32,
    pub task_files: u32,
    pub task_cgroups: u32,
    pub task_exit_code: u32,
    // struct nsproxy / struct net
    pub nsproxy_net_ns: u32,
    /// `net.ns.inum` (nested: offset of `ns` plus offset of `inum` in `ns_common`).
    pub net_ns_inum: u32,
    // struct files_struct / struct fdtable
    pub files_fdt: u32,
    pub fdtable_max_fds: u32,
    pub fdtable_fd: u32,
    // struct file
    pub file_inode: u32,
    pub file_private_data: u32,
    // struct inode / struct super_block
    pub inode_sb: u32,
    pub inode_private: u32,
    pub sb_magic: u32,
    // struct kernfs_node (`parent` is `__parent` since 6.15)
    pub kn_parent: u32,
    pub kn_name: u32,
    pub kn_id: u32,
    pub kn_priv: u32,
    // struct cgroup / struct cgroup_root / struct css_set
    pub cgroup_kn: u32,
    pub cgroup_root: u32,
    pub cgroup_subtree_control: u32,
    pub cgroup_level: u32,
    pub cgroup_root_hierarchy_id: u32,
    pub css_set_dfl_cgrp: u32,
    // struct socket / struct sock
    pub socket_sk: u32,
    pub sock_family: u32,
    pub sock_protocol: u32,
    // struct pt_regs (syscall arguments on x86_64: di, si, dx, r10; nr in orig_ax)
    pub regs_di: u32,
    pub regs_si: u32,
    pub regs_dx: u32,
    pub regs_r10: u32,
    pub regs_orig_ax: u32,
    // struct linux_binprm
    pub binprm_filename: u32,
    // struct task_struct / struct mm_struct (a new program's command line)
    pub task_mm: u32,
    pub mm_arg_start: u32,
    pub mm_arg_end: u32,
    // struct nsproxy / struct cgroup_namespace (the attacher's cgroup namespace root)
    pub nsproxy_cgroup_ns: u32,
    pub cgroup_ns_root_cset: u32,
    // struct file / struct dentry (the anon-inode name tells a bpf-prog fd from others)
    pub file_dentry: u32,
    pub dentry_name: u32,
    // struct bpf_prog / struct bpf_prog_aux
    pub prog_type: u32,
    pub prog_aux: u32,
    pub prog_aux_id: u32,
    pub prog_aux_name: u32,
    // struct bpf_link / struct bpf_cgroup_link
    pub link_id: u32,
    pub link_type: u32,
    pub link_prog: u32,
    pub cgroup_link_cgroup: u32,
    pub cgroup_link_attach_type: u32,
    // struct kernfs_open_file (the file a cgroup_file_write call writes)
    pub kof_kn: u32,
    /// Non-zero once userspace has filled the table; programs do nothing before that.
    pub ready: u32,
}

/// Common first part of every record.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Header {
    pub kind: u16,
    pub _reserved: u16,
    /// Size of the whole record in bytes.
    pub size: u32,
    /// `bpf_ktime_get_boot_ns()` at the event.
    pub ktime_ns: u64,
    /// Process id (tgid) and thread id of the actor.
    pub pid: u32,
    pub tid: u32,
    pub ppid: u32,
    pub uid: u32,
    /// Start time (boot-based ns) of the actor's thread-group leader: with `pid` the key
    /// that survives PID reuse.
    pub start_ns: u64,
    /// Start time of the parent's thread-group leader.
    pub parent_start_ns: u64,
    /// cgroup v2 id of the actor (`bpf_get_current_cgroup_id`).
    pub cgroup_id: u64,
    /// Network namespace inode number of the actor.
    pub netns: u32,
    pub _pad: u32,
    pub comm: [u8; COMM_LEN],
    pub parent_comm: [u8; COMM_LEN],
}

/// A write to a file on cgroupfs, sent from `sys_enter` (the result follows in a
/// [`CgroupWriteExit`] of the same thread unless `flags` has `NO_RESULT`).
///
/// Variable length: only the first `path_len` entries of `path` are sent, so
/// `header.size == CGROUP_WRITE_ENTER_FIXED + path_len * NAME_LEN`. `path_len` is 0 when
/// `flags` has `PATH_OMITTED` (the path went out in an earlier record for this cgroup);
/// such a record also stops after the bytes of `value` it holds:
/// `header.size == CGROUP_WRITE_ENTER_HEAD + value_len` (a storm's record is ~280 bytes).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CgroupWriteEnter {
    pub header: Header,
    /// kernfs id of the cgroup directory holding the file (the cgroup id).
    pub cgroup_id: u64,
    /// Bytes the caller asked to write.
    pub count: u64,
    /// Superblock magic: `CGROUP_SUPER_MAGIC` (v1) or `CGROUP2_SUPER_MAGIC` (v2).
    pub magic: u64,
    /// `cgroup_root::hierarchy_id` (0 is the v2 hierarchy).
    pub hierarchy_id: u32,
    pub flags: u32,
    pub syscall: u32,
    pub fd: i32,
    /// `cgroup::subtree_control` before the write (bit per controller id), or
    /// [`MASK_UNKNOWN`] when the kernel could not read it.
    pub subtree_before: u16,
    pub value_len: u16,
    /// Path components in this record (`path[..path_len]`), leaf (the cgroup dir) first.
    pub path_len: u16,
    pub _pad: u16,
    pub file: [u8; NAME_LEN],
    pub value: [u8; VALUE_LEN],
    /// The cgroup's path components, `path[0]` the cgroup itself, up to the root.
    pub path: [[u8; NAME_LEN]; MAX_DEPTH],
}

/// A `subtree_control` mask the program could not read (no `struct cgroup` behind the
/// file, or the read faulted). Never a real mask: the kernel has fewer than 16
/// controllers (`CGROUP_SUBSYS_COUNT`), so not every bit can be set. An empty mask (0)
/// is a real, empty `subtree_control`: systemd writes `-cpu -cpuset ...` into those of
/// every slice it creates.
pub const MASK_UNKNOWN: u16 = u16::MAX;

/// Bytes of a [`CgroupWriteEnter`] before `value`.
pub const CGROUP_WRITE_ENTER_HEAD: usize = 96 + 48 + NAME_LEN;
/// Bytes of a [`CgroupWriteEnter`] before `path`.
pub const CGROUP_WRITE_ENTER_FIXED: usize = 96 + 48 + NAME_LEN + VALUE_LEN;

/// The exit of a cgroup write: `header` carries only kind, size, time, pid and tid.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CgroupWriteExit {
    pub header: Header,
    /// Syscall return value: bytes written or negative errno.
    pub result: i64,
    /// `cgroup::subtree_control` after the write, or [`MASK_UNKNOWN`].
    pub subtree_after: u16,
    pub _pad: [u16; 3],
}

/// `cgroup:cgroup_mkdir` / `cgroup:cgroup_rmdir`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CgroupDir {
    pub header: Header,
    pub cgroup_id: u64,
    pub hierarchy_id: u32,
    pub level: u32,
    pub path: [u8; PATH_LEN],
}

/// A write to a sysctl under `net/` (the `cgroup/sysctl` program).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SysctlWrite {
    pub header: Header,
    pub name: [u8; SYSCTL_NAME_LEN],
    pub old_value: [u8; SYSCTL_VALUE_LEN],
    pub new_value: [u8; SYSCTL_VALUE_LEN],
    /// Return values of the helpers (negative errno, or length). `-E2BIG` means truncated.
    pub name_ret: i32,
    pub old_ret: i32,
    pub new_ret: i32,
    pub _pad: u32,
}

/// A request sent on a `NETLINK_ROUTE` socket (sendmsg/sendto): the raw bytes,
/// decoded in userspace.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Netlink {
    pub header: Header,
    pub syscall: u32,
    pub fd: i32,
    /// Bytes the caller sent.
    pub len: u64,
    /// Bytes copied into `data`.
    pub captured: u32,
    pub flags: u32,
    /// With `flags::KFUNC`: what the kernel's handler returned for this message (0, or
    /// a negative errno: refused). 0 and meaningless otherwise.
    pub result: i32,
    pub _pad: u32,
    pub data: [u8; NETLINK_LEN],
}

/// A `bpf()` attach or detach whose target is a cgroup (BPF_PROG_ATTACH/DETACH,
/// BPF_LINK_CREATE/DETACH), sent at syscall exit: what `sys_enter` read, and the result.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CgroupBpf {
    pub header: Header,
    /// kernfs id of the target cgroup.
    pub cgroup_id: u64,
    /// kernfs id of the root of the caller's cgroup namespace (the host root's id when
    /// the caller shares the host's).
    pub ns_root_id: u64,
    /// Syscall return value: 0 or a new link fd, or negative errno.
    pub result: i64,
    /// `bpf_cmd`.
    pub cmd: u32,
    /// `enum bpf_attach_type`.
    pub attach_type: u32,
    /// `BPF_F_ALLOW_OVERRIDE` (1), `BPF_F_ALLOW_MULTI` (2), `BPF_F_REPLACE` (4), ...
    pub attach_flags: u32,
    /// `bpf_prog_aux::id`, 0 when unknown.
    pub prog_id: u32,
    /// `enum bpf_prog_type`.
    pub prog_type: u32,
    /// `bpf_link::id` of the link created or detached, 0 when none.
    pub link_id: u32,
    pub flags: u32,
    /// `cgroup_root::hierarchy_id` of the target (0: the v2 hierarchy).
    pub hierarchy_id: u32,
    /// Components in `path` and `ns_path`.
    pub path_len: u16,
    pub ns_path_len: u16,
    pub _pad: u32,
    /// `bpf_prog_aux::name` (the object's function name, cut to 15 bytes).
    pub prog_name: [u8; COMM_LEN],
    /// The target cgroup's path components, leaf first, up to the hierarchy root.
    pub path: [[u8; NAME_LEN]; MAX_DEPTH],
    /// The caller's cgroup-namespace root, leaf first (empty: the host root).
    pub ns_path: [[u8; NAME_LEN]; MAX_DEPTH],
}

/// `signal:signal_generate`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Signal {
    pub header: Header,
    pub sig: i32,
    /// `TRACE_SIGNAL_*` result (0 delivered).
    pub result: i32,
    pub target_pid: u32,
    pub target_tid: u32,
    pub target_start_ns: u64,
    /// cgroup v2 id of the target.
    pub target_cgroup_id: u64,
    pub target_comm: [u8; COMM_LEN],
}

/// `sched:sched_process_exec`: the header is the process after exec.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ProcExec {
    pub header: Header,
    pub old_pid: u32,
    pub filename_len: u32,
    pub filename: [u8; FILENAME_LEN],
    /// Bytes of `args` read; the whole command line was `args_total` bytes.
    pub args_len: u32,
    pub args_total: u32,
    pub args: [u8; ARGS_LEN],
}

/// `sched:sched_process_fork` of a new process (threads are not reported):
/// the header is the parent.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ProcFork {
    pub header: Header,
    pub child_pid: u32,
    pub _pad: u32,
    pub child_start_ns: u64,
}

/// `sched:sched_process_exit` of a thread-group leader.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ProcExit {
    pub header: Header,
    pub exit_code: i32,
    pub _pad: u32,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are `#[repr(C)]`, made only of integers and byte arrays, with
    // no padding holes (checked by the size assertions below).
    unsafe impl aya::Pod for super::Offsets {}
}

// Layout guards: a change here is a change of the kernel/user contract.
const _: () = {
    assert!(core::mem::size_of::<Header>() == 96);
    assert!(core::mem::size_of::<CgroupWriteEnter>() == CGROUP_WRITE_ENTER_FIXED + NAME_LEN * MAX_DEPTH);
    assert!(core::mem::offset_of!(CgroupWriteEnter, path) == CGROUP_WRITE_ENTER_FIXED);
    assert!(core::mem::offset_of!(CgroupWriteEnter, value) == CGROUP_WRITE_ENTER_HEAD);
    assert!(core::mem::size_of::<CgroupWriteExit>() == 96 + 16);
    assert!(core::mem::size_of::<CgroupDir>() == 96 + 16 + PATH_LEN);
    assert!(core::mem::size_of::<SysctlWrite>() == 96 + SYSCTL_NAME_LEN + 2 * SYSCTL_VALUE_LEN + 16);
    assert!(core::mem::size_of::<Netlink>() == 96 + 32 + NETLINK_LEN);
    assert!(core::mem::size_of::<Signal>() == 96 + 32 + COMM_LEN);
    assert!(core::mem::size_of::<ProcExec>() == 96 + 8 + FILENAME_LEN + 8 + ARGS_LEN);
    assert!(core::mem::size_of::<ProcFork>() == 96 + 16);
    assert!(core::mem::size_of::<ProcExit>() == 96 + 8);
    assert!(core::mem::size_of::<CgroupBpf>() == 96 + 64 + COMM_LEN + 2 * NAME_LEN * MAX_DEPTH);
    assert!(core::mem::size_of::<Offsets>().is_multiple_of(4));
};
