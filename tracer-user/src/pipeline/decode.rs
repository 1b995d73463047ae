//! Decoding of ring-buffer records (`tracer-common`) into owned Rust values.
//!
//! The bytes come from the kernel but are treated as untrusted: the kind is matched
//! against the known numbers (never transmuted into an enum), the length is checked
//! against the record's size before any read, and strings are cut at their NUL and
//! decoded lossily. Every failure is a typed [`DecodeError`].

use std::mem::size_of;

use thiserror::Error;
use tracer_common as common;
use tracer_common::{flags, kind, Header};

/// Why a record could not be decoded.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer bytes than a header.
    #[error("record of {len} bytes is shorter than the {need}-byte header")]
    TooShortForHeader { len: usize, need: usize },
    /// The header names a kind this build does not know.
    #[error("unknown record kind {0}")]
    UnknownKind(u16),
    /// Fewer bytes than the record kind needs.
    #[error("{kind} record truncated: {len} bytes, need {need}")]
    Truncated { kind: &'static str, len: usize, need: usize },
    /// The header's size field disagrees with the kind's layout.
    #[error("{kind} record says it has {said} bytes, its layout has {need}")]
    SizeMismatch { kind: &'static str, said: usize, need: usize },
}

/// The process that caused an event, as the kernel saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Task {
    /// `bpf_ktime_get_boot_ns()` at the event.
    pub ktime_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub ppid: u32,
    pub uid: u32,
    /// Boot-based start time of the process (thread-group leader).
    pub start_ns: u64,
    pub parent_start_ns: u64,
    /// cgroup v2 id of the task.
    pub cgroup_id: u64,
    pub netns: u32,
    pub comm: String,
    pub parent_comm: String,
}

/// One decoded kernel record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    CgroupWrite(CgroupWrite),
    CgroupMkdir(CgroupDir),
    CgroupRmdir(CgroupDir),
    SysctlWrite(SysctlWrite),
    Netlink(Netlink),
    Signal(Signal),
    Exec {
        task: Task,
        filename: String,
        old_pid: u32,
        /// The new program's argv (what fit in `ARGS_LEN` bytes).
        args: Vec<String>,
        /// argv was longer than what was read.
        args_truncated: bool,
    },
    Fork {
        task: Task,
        child_pid: u32,
        child_start_ns: u64,
    },
    Exit {
        task: Task,
        exit_code: i32,
    },
    /// The result of a cgroup write sent earlier by the same thread (`task.tid`);
    /// `task` has only the time, pid and tid.
    CgroupWriteResult(CgroupWriteResult),
    CgroupBpf(CgroupBpf),
}

/// A `bpf()` attach or detach on a cgroup (`tracer_common::CgroupBpf`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupBpf {
    pub task: Task,
    /// `tracer_common::bpf_cmd`.
    pub cmd: u32,
    pub cgroup_id: u64,
    pub hierarchy_id: u32,
    /// The target cgroup's path from the hierarchy root (`/` for the root itself).
    pub path: String,
    pub path_truncated: bool,
    /// The root of the caller's cgroup namespace, host-absolute.
    pub ns_root: String,
    pub ns_root_id: u64,
    pub ns_root_truncated: bool,
    pub attach_type: u32,
    pub attach_flags: u32,
    /// `None` when the fd named no program the kernel program could read.
    pub prog: Option<BpfProg>,
    /// The link created or detached, 0 for none.
    pub link_id: u32,
    pub result: i64,
}

/// A BPF program as the kernel holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BpfProg {
    pub id: u32,
    /// `enum bpf_prog_type`.
    pub prog_type: u32,
    pub name: String,
}

/// `/a/b` from path components sent leaf first (`/` for none).
fn path_of(leaf_first: &[[u8; common::NAME_LEN]]) -> String {
    if leaf_first.is_empty() {
        return "/".into();
    }
    let mut p = String::new();
    for c in leaf_first.iter().rev() {
        p.push('/');
        p.push_str(&cstr(c));
    }
    p
}

/// The exit of a cgroup write (`CgroupWriteExit`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupWriteResult {
    pub task: Task,
    pub result: i64,
    pub subtree_after: u16,
}

impl Record {
    pub fn task(&self) -> &Task {
        match self {
            Record::CgroupWrite(r) => &r.task,
            Record::CgroupMkdir(r) | Record::CgroupRmdir(r) => &r.task,
            Record::SysctlWrite(r) => &r.task,
            Record::Netlink(r) => &r.task,
            Record::Signal(r) => &r.task,
            Record::CgroupWriteResult(r) => &r.task,
            Record::CgroupBpf(r) => &r.task,
            Record::Exec { task, .. } | Record::Fork { task, .. } | Record::Exit { task, .. } => task,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupWrite {
    pub task: Task,
    pub cgroup_id: u64,
    /// Path components from the cgroup up to (not including) the hierarchy root.
    pub components_leaf_first: Vec<String>,
    pub path_truncated: bool,
    pub v2: bool,
    pub hierarchy_id: u32,
    pub file: String,
    pub value: Vec<u8>,
    pub value_truncated: bool,
    /// A `writev`/`pwritev` with more than one iovec: only the first was read.
    pub more_iovecs: bool,
    pub value_unreadable: bool,
    pub count: u64,
    /// `None` when the syscall exit was not seen.
    pub result: Option<i64>,
    pub subtree_before: u16,
    pub subtree_after: u16,
    pub syscall: u32,
    pub fd: i32,
    /// The record carries no path: it was sent in an earlier record for the same
    /// (`hierarchy_id`, `cgroup_id`) (`components_leaf_first` is empty).
    pub path_omitted: bool,
    /// A `CgroupWriteResult` of the same thread follows (entry records only).
    pub result_follows: bool,
}

impl CgroupWrite {
    /// `/a/b/c` from the hierarchy root (`/` for the root itself).
    pub fn path(&self) -> String {
        if self.components_leaf_first.is_empty() {
            return "/".into();
        }
        let mut p = String::new();
        for c in self.components_leaf_first.iter().rev() {
            p.push('/');
            p.push_str(c);
        }
        p
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupDir {
    pub task: Task,
    pub cgroup_id: u64,
    pub hierarchy_id: u32,
    pub level: u32,
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysctlWrite {
    pub task: Task,
    /// Slash-separated as the kernel gives it: `net/ipv4/conf/all/rp_filter`.
    pub name: String,
    pub old_value: Option<String>,
    pub new_value: Option<String>,
}

impl SysctlWrite {
    /// Dotted form used in events: `net.ipv4.conf.all.rp_filter`.
    pub fn dotted_name(&self) -> String {
        self.name.replace('/', ".")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Netlink {
    pub task: Task,
    pub syscall: u32,
    pub fd: i32,
    pub len: u64,
    pub data: Vec<u8>,
    pub more_iovecs: bool,
    /// The kernel's answer to this one message (0, or a negative errno: refused), when
    /// it was seen in the kernel function that handled it (`rtnetlink_rcv_msg`); `None`
    /// for a request seen at the syscall, before the kernel acted.
    pub result: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signal {
    pub task: Task,
    pub sig: i32,
    pub result: i32,
    pub target_pid: u32,
    pub target_tid: u32,
    pub target_start_ns: u64,
    pub target_cgroup_id: u64,
    pub target_comm: String,
}

/// Bytes up to the first NUL, lossily decoded.
pub fn cstr(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// Reads a `T` from the start of `buf` after checking the length.
///
/// `T` must be one of the plain-old-data records of `tracer-common` (integers and byte
/// arrays only, any bit pattern valid), which is why this is private to this module.
fn read_pod<T: Copy>(buf: &[u8], name: &'static str) -> Result<T, DecodeError> {
    let need = size_of::<T>();
    if buf.len() < need {
        return Err(DecodeError::Truncated { kind: name, len: buf.len(), need });
    }
    // SAFETY: length checked above; `read_unaligned` copes with any alignment; every
    // `T` used here is a `#[repr(C)]` record of integers and byte arrays, for which all
    // bit patterns are valid.
    Ok(unsafe { std::ptr::read_unaligned(buf.as_ptr().cast::<T>()) })
}

fn task(h: &Header) -> Task {
    Task {
        ktime_ns: h.ktime_ns,
        pid: h.pid,
        tid: h.tid,
        ppid: h.ppid,
        uid: h.uid,
        start_ns: h.start_ns,
        parent_start_ns: h.parent_start_ns,
        cgroup_id: h.cgroup_id,
        netns: h.netns,
        comm: cstr(&h.comm),
        parent_comm: cstr(&h.parent_comm),
    }
}

/// The kind number of a record, or an error when it is shorter than a header.
pub fn peek_kind(buf: &[u8]) -> Result<u16, DecodeError> {
    let h: Header = read_pod(buf, "header")
        .map_err(|_| DecodeError::TooShortForHeader { len: buf.len(), need: size_of::<Header>() })?;
    Ok(h.kind)
}

/// A record kind's name, for errors (from tracer-common's one kind table).
fn kind_name(k: u16) -> &'static str {
    tracer_common::kinds::name(k).unwrap_or("unknown")
}

fn checked<T: Copy>(buf: &[u8], name: &'static str) -> Result<T, DecodeError> {
    let rec: T = read_pod(buf, name)?;
    let h: Header = read_pod(buf, "header")?;
    let need = size_of::<T>();
    if h.size as usize != need {
        return Err(DecodeError::SizeMismatch { kind: name, said: h.size as usize, need });
    }
    Ok(rec)
}

fn sysctl_value(bytes: &[u8], ret: i32) -> Option<String> {
    // The helpers return the length copied, or -E2BIG when the value was cut (the
    // buffer still holds its start), or another negative errno.
    if ret >= 0 || ret == -libc::E2BIG {
        Some(cstr(bytes).trim_end().to_string())
    } else {
        None
    }
}

/// Decodes one ring-buffer record.
pub fn decode(buf: &[u8]) -> Result<Record, DecodeError> {
    let k = peek_kind(buf)?;
    Ok(match k {
        kind::CGROUP_WRITE_ENTER => decode_write_enter(buf)?,
        kind::CGROUP_WRITE_EXIT => {
            let r: common::CgroupWriteExit = checked(buf, kind_name(kind::CGROUP_WRITE_EXIT))?;
            Record::CgroupWriteResult(CgroupWriteResult {
                task: Task {
                    ktime_ns: r.header.ktime_ns,
                    pid: r.header.pid,
                    tid: r.header.tid,
                    ..Task::default()
                },
                result: r.result,
                subtree_after: r.subtree_after,
            })
        }
        kind::CGROUP_MKDIR | kind::CGROUP_RMDIR => {
            let r: common::CgroupDir = checked(buf, "cgroup_dir")?;
            let d = CgroupDir {
                task: task(&r.header),
                cgroup_id: r.cgroup_id,
                hierarchy_id: r.hierarchy_id,
                level: r.level,
                path: cstr(&r.path),
            };
            if k == kind::CGROUP_MKDIR {
                Record::CgroupMkdir(d)
            } else {
                Record::CgroupRmdir(d)
            }
        }
        kind::SYSCTL_WRITE => {
            let r: common::SysctlWrite = checked(buf, kind_name(kind::SYSCTL_WRITE))?;
            Record::SysctlWrite(SysctlWrite {
                task: task(&r.header),
                name: cstr(&r.name),
                old_value: sysctl_value(&r.old_value, r.old_ret),
                new_value: sysctl_value(&r.new_value, r.new_ret),
            })
        }
        kind::NETLINK => {
            let r: common::Netlink = checked(buf, kind_name(kind::NETLINK))?;
            let n = (r.captured as usize).min(common::NETLINK_LEN);
            Record::Netlink(Netlink {
                task: task(&r.header),
                syscall: r.syscall,
                fd: r.fd,
                len: r.len,
                data: r.data[..n].to_vec(),
                more_iovecs: r.flags & flags::MORE_IOVECS != 0,
                result: (r.flags & flags::KFUNC != 0).then_some(r.result),
            })
        }
        kind::SIGNAL => {
            let r: common::Signal = checked(buf, kind_name(kind::SIGNAL))?;
            Record::Signal(Signal {
                task: task(&r.header),
                sig: r.sig,
                result: r.result,
                target_pid: r.target_pid,
                target_tid: r.target_tid,
                target_start_ns: r.target_start_ns,
                target_cgroup_id: r.target_cgroup_id,
                target_comm: cstr(&r.target_comm),
            })
        }
        kind::PROC_EXEC => {
            let r: common::ProcExec = checked(buf, kind_name(kind::PROC_EXEC))?;
            let n = (r.filename_len as usize).min(common::FILENAME_LEN);
            let a = (r.args_len as usize).min(common::ARGS_LEN);
            // argv strings are NUL-terminated; a cut one ends without its NUL.
            let args = r.args[..a]
                .split(|&b| b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect();
            Record::Exec {
                task: task(&r.header),
                filename: cstr(&r.filename[..n]),
                old_pid: r.old_pid,
                args,
                args_truncated: r.args_total as usize > a,
            }
        }
        kind::PROC_FORK => {
            let r: common::ProcFork = checked(buf, kind_name(kind::PROC_FORK))?;
            Record::Fork { task: task(&r.header), child_pid: r.child_pid, child_start_ns: r.child_start_ns }
        }
        kind::PROC_EXIT => {
            let r: common::ProcExit = checked(buf, kind_name(kind::PROC_EXIT))?;
            Record::Exit { task: task(&r.header), exit_code: r.exit_code }
        }
        kind::CGROUP_BPF => {
            let r: common::CgroupBpf = checked(buf, kind_name(kind::CGROUP_BPF))?;
            let depth = (r.path_len as usize).min(common::MAX_DEPTH);
            let ns_depth = (r.ns_path_len as usize).min(common::MAX_DEPTH);
            Record::CgroupBpf(CgroupBpf {
                task: task(&r.header),
                cmd: r.cmd,
                cgroup_id: r.cgroup_id,
                hierarchy_id: r.hierarchy_id,
                path: path_of(&r.path[..depth]),
                path_truncated: r.flags & flags::PATH_TRUNCATED != 0,
                ns_root: path_of(&r.ns_path[..ns_depth]),
                ns_root_id: r.ns_root_id,
                ns_root_truncated: r.flags & flags::NS_PATH_TRUNCATED != 0,
                attach_type: r.attach_type,
                attach_flags: r.attach_flags,
                prog: (r.flags & flags::PROG_UNKNOWN == 0).then(|| BpfProg {
                    id: r.prog_id,
                    prog_type: r.prog_type,
                    name: cstr(&r.prog_name),
                }),
                link_id: r.link_id,
                result: r.result,
            })
        }
        other => return Err(DecodeError::UnknownKind(other)),
    })
}

/// `CgroupWriteEnter`: variable length, `header.size` says how many path components
/// were sent; the size must match exactly.
fn decode_write_enter(buf: &[u8]) -> Result<Record, DecodeError> {
    const NAME: &str = "cgroup_write_enter";
    let fixed = common::CGROUP_WRITE_ENTER_FIXED;
    let head = common::CGROUP_WRITE_ENTER_HEAD;
    if buf.len() < head {
        return Err(DecodeError::Truncated { kind: NAME, len: buf.len(), need: head });
    }
    let mut r: common::CgroupWriteEnter = unsafe { std::mem::zeroed() };
    let copy = buf.len().min(fixed);
    // SAFETY: `copy` bytes are present and fit the record; it is plain old data (see
    // read_pod).
    unsafe {
        std::ptr::copy_nonoverlapping(
            buf.as_ptr(),
            (&mut r as *mut common::CgroupWriteEnter).cast::<u8>(),
            copy,
        )
    };
    let path_len = r.path_len as usize;
    let value_len = (r.value_len as usize).min(common::VALUE_LEN);
    if path_len > common::MAX_DEPTH {
        return Err(DecodeError::SizeMismatch {
            kind: NAME,
            said: r.header.size as usize,
            need: size_of::<common::CgroupWriteEnter>(),
        });
    }
    // With a path: the whole value field and `path_len` components; without: the value
    // bytes only.
    let need = if path_len == 0 { head + value_len } else { fixed + path_len * common::NAME_LEN };
    if r.header.size as usize != need {
        return Err(DecodeError::SizeMismatch { kind: NAME, said: r.header.size as usize, need });
    }
    if buf.len() < need {
        return Err(DecodeError::Truncated { kind: NAME, len: buf.len(), need });
    }
    let path = if path_len == 0 { &[][..] } else { &buf[fixed..need] };
    Ok(Record::CgroupWrite(CgroupWrite {
        task: task(&r.header),
        cgroup_id: r.cgroup_id,
        components_leaf_first: path.chunks_exact(common::NAME_LEN).map(cstr).collect(),
        path_truncated: r.flags & flags::PATH_TRUNCATED != 0,
        v2: r.magic == common::CGROUP2_SUPER_MAGIC,
        hierarchy_id: r.hierarchy_id,
        file: cstr(&r.file),
        value: r.value[..value_len].to_vec(),
        value_truncated: r.flags & flags::VALUE_TRUNCATED != 0,
        more_iovecs: r.flags & flags::MORE_IOVECS != 0,
        value_unreadable: r.flags & flags::VALUE_UNREADABLE != 0,
        count: r.count,
        result: None,
        subtree_before: r.subtree_before,
        subtree_after: 0,
        syscall: r.syscall,
        fd: r.fd,
        path_omitted: r.flags & flags::PATH_OMITTED != 0,
        result_follows: r.flags & flags::NO_RESULT == 0,
    }))
}

impl From<CgroupWrite> for Record {
    fn from(w: CgroupWrite) -> Self {
        Record::CgroupWrite(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of<T: Copy>(v: &T) -> Vec<u8> {
        // SAFETY: T is a POD record; reading its bytes is fine.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    fn header(k: u16, size: usize) -> Header {
        let mut comm = [0u8; 16];
        comm[..7].copy_from_slice(b"systemd");
        Header {
            kind: k,
            _reserved: 0,
            size: size as u32,
            ktime_ns: 5,
            pid: 1,
            tid: 1,
            ppid: 0,
            uid: 0,
            start_ns: 1,
            parent_start_ns: 0,
            cgroup_id: 1,
            netns: 4026531840,
            _pad: 0,
            comm,
            parent_comm: [0; 16],
        }
    }

    #[test]
    fn decodes_cgroup_bpf_and_refuses_a_short_one() {
        let mut r: common::CgroupBpf = unsafe { std::mem::zeroed() };
        r.header = header(kind::CGROUP_BPF, size_of::<common::CgroupBpf>());
        r.cmd = common::bpf_cmd::LINK_CREATE;
        r.cgroup_id = 99;
        r.attach_type = 10;
        r.prog_id = 42;
        r.prog_type = 18;
        r.prog_name[..15].copy_from_slice(b"cil_sock4_conne");
        r.link_id = 7;
        r.result = 5;
        for (i, c) in ["docker-1.scope", "system.slice"].iter().enumerate() {
            r.path[i][..c.len()].copy_from_slice(c.as_bytes());
            r.ns_path[i][..c.len()].copy_from_slice(c.as_bytes());
        }
        r.path_len = 2;
        r.ns_path_len = 2;
        let b = bytes_of(&r);
        let Record::CgroupBpf(d) = decode(&b).unwrap() else { panic!() };
        assert_eq!(d.path, "/system.slice/docker-1.scope");
        assert_eq!(d.ns_root, "/system.slice/docker-1.scope");
        assert_eq!(d.prog, Some(BpfProg { id: 42, prog_type: 18, name: "cil_sock4_conne".into() }));
        assert_eq!((d.cmd, d.attach_type, d.link_id, d.result), (common::bpf_cmd::LINK_CREATE, 10, 7, 5));
        // No program behind the fd; a host-root target has no components.
        r.flags = flags::PROG_UNKNOWN;
        r.path_len = 0;
        r.ns_path_len = 200; // clamped, never read past the field
        let Record::CgroupBpf(d) = decode(&bytes_of(&r)).unwrap() else { panic!() };
        assert_eq!((d.prog, d.path.as_str()), (None, "/"));
        assert!(matches!(decode(&b[..b.len() - 1]), Err(DecodeError::Truncated { .. })));
    }

    #[test]
    fn decodes_cgroup_write() {
        let b = write_enter(&["kubepods-burstable.slice", "kubepods.slice"]);
        let Record::CgroupWrite(w) = decode(&b).unwrap() else { panic!() };
        assert_eq!(w.path(), "/kubepods.slice/kubepods-burstable.slice");
        assert_eq!(w.file, "cgroup.max.depth");
        assert_eq!(w.value, b"5\n");
        assert!(w.v2);
        assert_eq!(w.task.comm, "systemd");
    }

    #[test]
    fn truncated_record_is_a_typed_error() {
        let b = write_enter(&["a"]);
        assert_eq!(
            decode(&b[..100]),
            Err(DecodeError::Truncated {
                kind: "cgroup_write_enter",
                len: 100,
                need: common::CGROUP_WRITE_ENTER_HEAD
            })
        );
        assert_eq!(decode(&b[..10]), Err(DecodeError::TooShortForHeader { len: 10, need: 96 }));
        assert_eq!(decode(&[]), Err(DecodeError::TooShortForHeader { len: 0, need: 96 }));
    }

    #[test]
    fn unknown_kind_and_size_mismatch_are_errors() {
        let mut b = write_enter(&["a"]);
        b[..2].copy_from_slice(&999u16.to_ne_bytes());
        assert_eq!(decode(&b), Err(DecodeError::UnknownKind(999)));
        // Kind 1, the first cgroup-write layout, is no longer sent nor read.
        b[..2].copy_from_slice(&kind::CGROUP_WRITE.to_ne_bytes());
        assert_eq!(decode(&b), Err(DecodeError::UnknownKind(kind::CGROUP_WRITE)));
        let mut b = write_enter(&["a"]);
        b[4..8].copy_from_slice(&12u32.to_ne_bytes());
        assert!(matches!(decode(&b), Err(DecodeError::SizeMismatch { .. })));
    }

    fn write_enter(path: &[&str]) -> Vec<u8> {
        let mut r: common::CgroupWriteEnter = unsafe { std::mem::zeroed() };
        for (i, c) in path.iter().enumerate() {
            r.path[i][..c.len()].copy_from_slice(c.as_bytes());
        }
        r.path_len = path.len() as u16;
        let size = if path.is_empty() {
            common::CGROUP_WRITE_ENTER_HEAD + 2
        } else {
            common::CGROUP_WRITE_ENTER_FIXED + path.len() * common::NAME_LEN
        };
        r.header = header(kind::CGROUP_WRITE_ENTER, size);
        r.file[..16].copy_from_slice(b"cgroup.max.depth");
        r.value[..2].copy_from_slice(b"5\n");
        r.value_len = 2;
        r.magic = common::CGROUP2_SUPER_MAGIC;
        r.cgroup_id = 77;
        if path.is_empty() {
            r.flags = flags::PATH_OMITTED;
        }
        bytes_of(&r)[..size].to_vec()
    }

    #[test]
    fn decodes_variable_length_write_enter_and_exit() {
        let b = write_enter(&["b", "a"]);
        let Record::CgroupWrite(w) = decode(&b).unwrap() else { panic!() };
        assert_eq!(w.path(), "/a/b");
        assert_eq!(w.value, b"5\n");
        assert_eq!(w.result, None);
        assert!(w.result_follows && !w.path_omitted);
        let short = write_enter(&[]);
        assert_eq!(short.len(), common::CGROUP_WRITE_ENTER_HEAD + 2);
        let Record::CgroupWrite(w) = decode(&short).unwrap() else { panic!() };
        assert!(w.path_omitted);
        assert!(w.components_leaf_first.is_empty());
        assert_eq!(w.value, b"5\n");
        assert!(matches!(decode(&short[..short.len() - 1]), Err(DecodeError::Truncated { .. })));
        // Cut short, or a size that disagrees with the path count: typed errors.
        assert!(matches!(decode(&b[..b.len() - 1]), Err(DecodeError::Truncated { .. })));
        assert!(matches!(decode(&b[..300]), Err(DecodeError::Truncated { .. })));
        let mut bad = b.clone();
        bad[4] = bad[4].wrapping_add(8);
        assert!(matches!(decode(&bad), Err(DecodeError::SizeMismatch { .. })));

        let mut x: common::CgroupWriteExit = unsafe { std::mem::zeroed() };
        x.header = header(kind::CGROUP_WRITE_EXIT, size_of::<common::CgroupWriteExit>());
        x.result = -22;
        x.subtree_after = 3;
        let Record::CgroupWriteResult(r) = decode(&bytes_of(&x)).unwrap() else { panic!() };
        assert_eq!((r.result, r.subtree_after, r.task.tid), (-22, 3, 1));
        assert!(matches!(decode(&bytes_of(&x)[..100]), Err(DecodeError::Truncated { .. })));
    }

    #[test]
    fn oversized_lengths_are_clamped_or_refused() {
        // A value length past the field is clamped to the field.
        let mut b = write_enter(&["a"]);
        let off = std::mem::offset_of!(common::CgroupWriteEnter, value_len);
        b[off..off + 2].copy_from_slice(&60000u16.to_ne_bytes());
        let Record::CgroupWrite(w) = decode(&b).unwrap() else { panic!() };
        assert_eq!(w.value.len(), common::VALUE_LEN);
        // More path components than the record can hold is an error, not a clamp.
        let mut b = write_enter(&["a"]);
        let off = std::mem::offset_of!(common::CgroupWriteEnter, path_len);
        b[off..off + 2].copy_from_slice(&200u16.to_ne_bytes());
        assert!(matches!(decode(&b), Err(DecodeError::SizeMismatch { .. })));
    }
}
