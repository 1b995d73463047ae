//! The host's view from inside a container: tracer in a pod (hostPID, but a private
//! cgroup namespace and a private mount namespace) must attach the sysctl program at the
//! *host's* cgroup2 root and report host-absolute cgroup paths and host PIDs.
//!
//! What a container sees, and what this module does about it:
//! - Its cgroup2 mount (`/sys/fs/cgroup`) is usually a mount of the container's own
//!   cgroup, shown with root `/` in its mountinfo because mountinfo paths are relative to
//!   the reader's cgroup namespace (kernel/cgroup/cgroup.c: `cgroup_show_path`). A
//!   sysctl program attached there sees only the container's writers. So a cgroup2
//!   directory counts as the hierarchy root only when it really is one: the root cgroup
//!   has no `cgroup.type` file (that file is `CFTYPE_NOT_ON_ROOT`), whatever namespace
//!   looks at it.
//! - When none of our own mounts is the root, PID 1's are: `/proc/1/root` + PID 1's
//!   cgroup2 mount point (from `/proc/1/mountinfo`) opens the host's cgroup2 root through
//!   PID 1's mount namespace, with no mount of our own. That needs hostPID and
//!   CAP_SYS_PTRACE (ptrace read access to PID 1, which holds every capability).
//! - When our cgroup namespace is not PID 1's, we `setns` into PID 1's (needs
//!   CAP_SYS_ADMIN: kernel/cgroup/namespace.c `cgroupns_install`), so that anything
//!   reading `/proc/<pid>/cgroup` or mountinfo afterwards sees host-absolute paths.
//!   Without CAP_SYS_ADMIN that step is skipped with a note: the kernel programs build
//!   cgroup paths by walking kernfs to the real hierarchy root, so event paths are
//!   host-absolute either way.
//! - The kernel programs see init-namespace PIDs; our own PID as the kernel knows it
//!   (to ignore our own activity) is the one host `/proc` shows, not `getpid()`, which
//!   is 1 in a private PID namespace.

use std::path::{Path, PathBuf};

/// Where the host's cgroup2 hierarchy root was found, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRoot {
    pub path: PathBuf,
    /// `own mount` or `PID 1's mount namespace`.
    pub via: &'static str,
}

/// Is this directory the root of a cgroup2 hierarchy (not a sub-cgroup mounted or
/// bind-mounted as if it were the root)?
pub fn is_cgroup2_hierarchy_root(dir: &Path) -> bool {
    dir.join("cgroup.procs").exists()
        && dir.join("cgroup.subtree_control").exists()
        && !dir.join("cgroup.type").exists()
}

/// Mount points of cgroup2 filesystems in a mountinfo(5) text, in order.
pub fn cgroup2_mounts(mountinfo: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        if !post.starts_with("cgroup2 ") {
            continue;
        }
        let fields: Vec<&str> = pre.split(' ').collect();
        if fields.len() >= 5 {
            out.push(PathBuf::from(unescape_mount(fields[4])));
        }
    }
    out
}

fn unescape_mount(s: &str) -> String {
    s.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
}

/// The host's cgroup2 root: one of our own mounts if it is the hierarchy root, else
/// PID 1's through `/proc/1/root`. `None` when neither can be seen.
pub fn host_cgroup2_root() -> Option<HostRoot> {
    host_cgroup2_root_in(Path::new("/proc"))
}

/// [`host_cgroup2_root`] with another proc root (tests).
pub fn host_cgroup2_root_in(proc_root: &Path) -> Option<HostRoot> {
    let own = std::fs::read_to_string(proc_root.join("self/mountinfo")).unwrap_or_default();
    if let Some(path) = cgroup2_mounts(&own).into_iter().find(|m| is_cgroup2_hierarchy_root(m)) {
        return Some(HostRoot { path, via: "own mount" });
    }
    let init = std::fs::read_to_string(proc_root.join("1/mountinfo")).ok()?;
    let root = proc_root.join("1/root");
    cgroup2_mounts(&init)
        .into_iter()
        .map(|m| root.join(m.strip_prefix("/").unwrap_or(&m)))
        .find(|p| is_cgroup2_hierarchy_root(p))
        .map(|path| HostRoot { path, via: "PID 1's mount namespace" })
}

/// Namespace identity (`cgroup:[4026531835]`) of a process, if readable.
fn ns_id(proc_root: &Path, pid: &str, ns: &str) -> Option<PathBuf> {
    std::fs::read_link(proc_root.join(pid).join("ns").join(ns)).ok()
}

/// What [`enter_host_cgroupns`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupNs {
    /// Already in PID 1's cgroup namespace.
    Host,
    /// Moved into PID 1's cgroup namespace.
    Entered,
    /// In another cgroup namespace than PID 1 and could not leave it: why.
    Private(String),
    /// PID 1's namespace cannot be read (no hostPID, no CAP_SYS_PTRACE, or a sandbox
    /// that hides PID 1): why.
    Unknown(String),
}

/// Joins PID 1's cgroup namespace when ours is a different one. Call it before any
/// thread is started: a namespace is per thread, and threads inherit the creator's.
pub fn enter_host_cgroupns() -> CgroupNs {
    let proc_root = Path::new("/proc");
    let own = ns_id(proc_root, "self", "cgroup");
    let init = match ns_id(proc_root, "1", "cgroup") {
        Some(i) => i,
        None => {
            return CgroupNs::Unknown(
                "cannot read /proc/1/ns/cgroup (no hostPID, or no CAP_SYS_PTRACE)".into(),
            )
        }
    };
    if own.as_ref() == Some(&init) {
        return CgroupNs::Host;
    }
    let file = match std::fs::File::open("/proc/1/ns/cgroup") {
        Ok(f) => f,
        Err(e) => return CgroupNs::Private(format!("cannot open /proc/1/ns/cgroup: {e}")),
    };
    use std::os::fd::AsRawFd;
    // SAFETY: a valid namespace fd; CLONE_NEWCGROUP only changes this thread's cgroup
    // namespace (which paths /proc/*/cgroup and mountinfo show relative to).
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWCGROUP) } != 0 {
        let e = std::io::Error::last_os_error();
        return CgroupNs::Private(format!("setns into PID 1's cgroup namespace: {e} (needs CAP_SYS_ADMIN)"));
    }
    CgroupNs::Entered
}

/// Our process id as the kernel programs see it (init PID namespace), when `/proc` is
/// the host's (hostPID); `getpid()` otherwise.
pub fn own_kernel_tgid() -> u32 {
    std::fs::read_link("/proc/self")
        .ok()
        .and_then(|p| p.to_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(std::process::id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup2_mounts_in_order() {
        let mi = "\
30 24 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw
31 24 0:27 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
32 24 0:26 /.. /host\\040cg rw,relatime - cgroup2 cgroup2 rw
";
        assert_eq!(cgroup2_mounts(mi), vec![PathBuf::from("/sys/fs/cgroup"), PathBuf::from("/host cg")]);
    }

    #[test]
    fn this_machines_root_is_found() {
        let r = host_cgroup2_root().expect("a cgroup2 hierarchy root on this machine");
        assert!(is_cgroup2_hierarchy_root(&r.path), "{r:?}");
    }

    /// A container's view: its own cgroup2 mount is a sub-cgroup, and PID 1's mount
    /// namespace (here a symlink to this machine's root) has the hierarchy root.
    #[test]
    fn falls_back_to_pid_1s_mounts_when_ours_is_a_sub_cgroup() {
        let real = host_cgroup2_root().expect("a cgroup2 hierarchy root on this machine").path;
        let sub = real.join(format!("hostns-test-{}", std::process::id()));
        std::fs::create_dir(&sub).unwrap();
        let fake = std::env::temp_dir().join(format!("hostns-proc-{}", std::process::id()));
        std::fs::create_dir_all(fake.join("self")).unwrap();
        std::fs::create_dir_all(fake.join("1")).unwrap();
        let line = |mp: &Path| format!("30 24 0:26 / {} rw - cgroup2 cgroup2 rw\n", mp.display());
        std::fs::write(fake.join("self/mountinfo"), line(&sub)).unwrap();
        std::fs::write(fake.join("1/mountinfo"), line(&real)).unwrap();
        std::os::unix::fs::symlink("/", fake.join("1/root")).unwrap();
        let found = host_cgroup2_root_in(&fake);
        let _ = std::fs::remove_dir_all(&fake);
        let _ = std::fs::remove_dir(&sub);
        assert!(!is_cgroup2_hierarchy_root(&sub));
        let found = found.expect("the root through PID 1's mounts");
        assert_eq!(found.via, "PID 1's mount namespace");
        assert_eq!(found.path, fake.join("1/root").join(real.strip_prefix("/").unwrap()));
    }

    #[test]
    fn own_tgid_matches_getpid_in_the_host_pid_namespace() {
        assert_eq!(own_kernel_tgid(), std::process::id());
    }
}
