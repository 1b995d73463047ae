//! The socket-address and socket programs already attached to cgroups when tracer starts,
//! listed from the kernel, so that a tracer started after Cilium still finds its socket
//! load balancer on a nested cgroup (the live hook only sees attaches made after start).
//!
//! The kernel's own APIs (include/uapi/linux/bpf.h), the way `bpftool cgroup tree` does it:
//! `BPF_PROG_GET_NEXT_ID`/`BPF_PROG_GET_FD_BY_ID`/`BPF_OBJ_GET_INFO_BY_FD` name the loaded
//! programs; only when some are of type `cgroup_sock_addr` or `cgroup_sock` is the cgroup2
//! tree walked with `BPF_PROG_QUERY` per socket-LB attach type (a node without such
//! programs pays one pass over the program ids); `BPF_LINK_GET_NEXT_ID` finds the links
//! that hold them; the processes holding the programs or links (from `/proc/PID/fdinfo`,
//! whose `prog_id:`/`link_id:` lines kernel/bpf/syscall.c prints) are the likely loaders.

use crate::kernel::bpf_sys::{bpf, get_u32, get_u64, put_u32, put_u64};
use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use tracer_common::SOCKET_ATTACH_TYPES as SOCKET_LB;

const BPF_PROG_QUERY: i64 = 16;
const BPF_PROG_GET_NEXT_ID: i64 = 11;
const BPF_PROG_GET_FD_BY_ID: i64 = 13;
const BPF_OBJ_GET_INFO_BY_FD: i64 = 15;
const BPF_LINK_GET_FD_BY_ID: i64 = 30;
const BPF_LINK_GET_NEXT_ID: i64 = 31;
/// `BPF_PROG_TYPE_CGROUP_SOCK`, `BPF_PROG_TYPE_CGROUP_SOCK_ADDR`.
const SOCK_PROG_TYPES: &[u32] = &[9, 18];
/// `BPF_LINK_TYPE_CGROUP`.
const LINK_TYPE_CGROUP: u32 = 3;
/// Programs listed per cgroup and attach type (the kernel allows 64 per attach point).
const MAX_PROGS: usize = 64;
/// Depth of the cgroup walk (systemd's trees are 4-6 deep, kubepods' 5).
const MAX_DEPTH: usize = 16;

/// One program attached to one cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// Path from the cgroup2 root (`/` for the root).
    pub cgroup: String,
    pub cgroup_id: u64,
    pub attach_type: u32,
    /// The attach point's flags (`BPF_F_ALLOW_MULTI`, ...).
    pub attach_flags: u32,
    pub prog_id: u32,
    pub prog_type: u32,
    pub prog_name: String,
    /// The link attaching it, when it was attached with BPF_LINK_CREATE.
    pub link_id: Option<u32>,
    /// Processes holding the program or its link, lowest pid first.
    pub holders: Vec<u32>,
}

/// Ids from a `*_GET_NEXT_ID` command (`start_id` at 0, `next_id` at 4).
fn ids(cmd: i64) -> Vec<u32> {
    let mut out = Vec::new();
    let mut start = 0u32;
    loop {
        let mut a = [0u8; 128];
        put_u32(&mut a, 0, start);
        if bpf(cmd, &mut a).is_err() {
            return out; // ENOENT: no more
        }
        start = get_u32(&a, 4);
        out.push(start);
    }
}

/// An fd from a `*_GET_FD_BY_ID` command (the id at 0).
fn fd_by_id(cmd: i64, id: u32) -> Option<OwnedFd> {
    let mut a = [0u8; 128];
    put_u32(&mut a, 0, id);
    let fd = bpf(cmd, &mut a).ok()?;
    // SAFETY: a new fd the kernel just returned, owned by nobody else.
    Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `BPF_OBJ_GET_INFO_BY_FD` into a buffer of `N` bytes.
fn info<const N: usize>(fd: &OwnedFd) -> Option<[u8; N]> {
    let mut buf = [0u8; N];
    let mut a = [0u8; 128];
    put_u32(&mut a, 0, fd.as_raw_fd() as u32);
    put_u32(&mut a, 4, N as u32);
    put_u64(&mut a, 8, buf.as_mut_ptr() as u64);
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut a).ok()?;
    Some(buf)
}

/// (type, name) of every loaded socket-address or socket program, by id.
/// `struct bpf_prog_info`: `type` at 0, `id` at 4, `name[16]` at 64.
fn sock_programs() -> HashMap<u32, (u32, String)> {
    let mut out = HashMap::new();
    for id in ids(BPF_PROG_GET_NEXT_ID) {
        let Some(fd) = fd_by_id(BPF_PROG_GET_FD_BY_ID, id) else { continue };
        let Some(b) = info::<80>(&fd) else { continue };
        let t = get_u32(&b, 0);
        if SOCK_PROG_TYPES.contains(&t) {
            out.insert(id, (t, cstr(&b[64..80])));
        }
    }
    out
}

/// Bytes up to the first NUL, lossily decoded.
fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// (cgroup id, attach type, prog id) -> link id of every cgroup link.
/// `struct bpf_link_info`: `type` at 0, `id` at 4, `prog_id` at 8, `cgroup.cgroup_id` at
/// 16, `cgroup.attach_type` at 24.
fn cgroup_links() -> HashMap<(u64, u32, u32), u32> {
    let mut out = HashMap::new();
    for id in ids(BPF_LINK_GET_NEXT_ID) {
        let Some(fd) = fd_by_id(BPF_LINK_GET_FD_BY_ID, id) else { continue };
        let Some(b) = info::<32>(&fd) else { continue };
        if get_u32(&b, 0) == LINK_TYPE_CGROUP {
            out.insert((get_u64(&b, 16), get_u32(&b, 24), get_u32(&b, 8)), get_u32(&b, 4));
        }
    }
    out
}

/// Programs attached directly to `dir` with `attach_type`: (attach flags, prog ids).
/// `BPF_PROG_QUERY`: `target_fd` at 0, `attach_type` at 4, `query_flags` at 8,
/// `attach_flags` at 12 (out), `prog_ids` at 16, `prog_cnt` at 24 (in and out).
fn query(dir: &std::fs::File, attach_type: u32) -> Option<(u32, Vec<u32>)> {
    let mut progs = [0u32; MAX_PROGS];
    let mut a = [0u8; 128];
    put_u32(&mut a, 0, dir.as_raw_fd() as u32);
    put_u32(&mut a, 4, attach_type);
    put_u64(&mut a, 16, progs.as_mut_ptr() as u64);
    put_u32(&mut a, 24, MAX_PROGS as u32);
    bpf(BPF_PROG_QUERY, &mut a).ok()?;
    let n = (get_u32(&a, 24) as usize).min(MAX_PROGS);
    Some((get_u32(&a, 12), progs[..n].to_vec()))
}

/// Every socket-LB attachment under the cgroup2 mount `root` (the host's).
pub fn scan(root: &Path, proc_root: &Path) -> Vec<Attachment> {
    let progs = sock_programs();
    if progs.is_empty() {
        return Vec::new();
    }
    let links = cgroup_links();
    let mut out = Vec::new();
    walk(root, root, 0, &progs, &links, &mut out);
    if !out.is_empty() {
        let holders = holders(proc_root);
        for a in &mut out {
            let mut pids: Vec<u32> = holders.progs.get(&a.prog_id).cloned().unwrap_or_default();
            if let Some(l) = a.link_id {
                pids.extend(holders.links.get(&l).cloned().unwrap_or_default());
            }
            pids.sort_unstable();
            pids.dedup();
            a.holders = pids;
        }
    }
    out
}

fn walk(
    root: &Path,
    dir: &Path,
    depth: usize,
    progs: &HashMap<u32, (u32, String)>,
    links: &HashMap<(u64, u32, u32), u32>,
    out: &mut Vec<Attachment>,
) {
    let Ok(f) = std::fs::File::open(dir) else { return };
    let Ok(md) = f.metadata() else { return };
    let cgroup = match dir.strip_prefix(root) {
        Ok(rel) if rel.as_os_str().is_empty() => "/".to_string(),
        Ok(rel) => format!("/{}", rel.display()),
        Err(_) => return,
    };
    for &t in SOCKET_LB {
        let Some((flags, ids)) = query(&f, t) else { continue };
        for id in ids {
            let (prog_type, prog_name) = progs.get(&id).cloned().unwrap_or((u32::MAX, String::new()));
            out.push(Attachment {
                cgroup: cgroup.clone(),
                cgroup_id: md.ino(),
                attach_type: t,
                attach_flags: flags,
                prog_id: id,
                prog_type,
                prog_name,
                link_id: links.get(&(md.ino(), t, id)).copied(),
                holders: Vec::new(),
            });
        }
    }
    if depth >= MAX_DEPTH {
        return;
    }
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    let mut subdirs: Vec<_> =
        rd.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()).collect();
    subdirs.sort();
    for d in subdirs {
        walk(root, &d, depth + 1, progs, links, out);
    }
}

#[derive(Default)]
struct Holders {
    progs: BTreeMap<u32, Vec<u32>>,
    links: BTreeMap<u32, Vec<u32>>,
}

/// Which processes hold which programs and links: their `bpf-prog`/`bpf_link` fds'
/// fdinfo. Only fds whose link names those anon inodes are read.
fn holders(proc_root: &Path) -> Holders {
    let mut h = Holders::default();
    let Ok(rd) = std::fs::read_dir(proc_root) else { return h };
    for ent in rd.flatten() {
        let Some(pid) = ent.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(fds) = std::fs::read_dir(ent.path().join("fd")) else { continue };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else { continue };
            let t = target.to_string_lossy();
            if t != "anon_inode:bpf-prog" && t != "anon_inode:bpf_link" {
                continue;
            }
            let info = ent.path().join("fdinfo").join(fd.file_name());
            let Ok(text) = std::fs::read_to_string(info) else { continue };
            let (prog, link) = parse_fdinfo(&text);
            if t == "anon_inode:bpf_link" {
                if let Some(l) = link {
                    h.links.entry(l).or_default().push(pid);
                }
            } else if let Some(p) = prog {
                h.progs.entry(p).or_default().push(pid);
            }
        }
    }
    h
}

/// `prog_id:` and `link_id:` of a bpf fd's fdinfo (kernel/bpf/syscall.c:
/// `bpf_prog_show_fdinfo`, `bpf_link_show_fdinfo`).
fn parse_fdinfo(text: &str) -> (Option<u32>, Option<u32>) {
    let field =
        |name: &str| text.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().parse().ok());
    (field("prog_id:"), field("link_id:"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fdinfo_of_programs_and_links() {
        let prog = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1057\nprog_type:\t18\nprog_jited:\t1\nprog_tag:\t3b185187f1855c4c\nprog_id:\t42\n";
        assert_eq!(parse_fdinfo(prog), (Some(42), None));
        let link = "pos:\t0\nflags:\t02000000\nmnt_id:\t15\nino:\t1057\nlink_type:\tcgroup\nlink_id:\t7\nprog_tag:\t3b185187f1855c4c\nprog_id:\t42\ncgroup_id:\t9\nattach_type:\t10\n";
        assert_eq!(parse_fdinfo(link), (Some(42), Some(7)));
        assert_eq!(parse_fdinfo(""), (None, None));
    }
}
