//! Network namespaces by inode number: finding a file that refers to one, and running a
//! short piece of work inside it.
//!
//! A namespace is entered by a process's `/proc/PID/ns/net` or by the bind mounts `ip
//! netns add` leaves under `/run/netns`, never by moving the tracer's own threads: the
//! work runs on a helper thread that `setns`es (which affects only the calling thread,
//! setns(2)) and ends right after. Sockets opened there stay in that namespace
//! (socket(2) binds a socket to the namespace of its creator for its whole life).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;

/// Where `ip netns` keeps its namespaces (iproute2's NETNS_RUN_DIR), and the old path.
const NAMED_DIRS: [&str; 2] = ["/run/netns", "/var/run/netns"];

/// The inode of the tracer's own network namespace.
pub fn own() -> Option<u32> {
    std::fs::metadata("/proc/self/ns/net").ok().map(|m| m.ino() as u32)
}

/// A file referring to namespace `netns`: `pid`'s when it is still in it, else any
/// process's in it, else a bind mount under /run/netns. The sender of a request is
/// often gone by the time its record is read (`ip route del` lives a millisecond).
pub fn open(pid: u32, netns: u32) -> Option<File> {
    open_of(pid, netns).or_else(|| find_process(netns)).or_else(|| named(netns).map(|(_, f)| f))
}

/// `/proc/PID/ns/net` when it is namespace `netns`.
pub fn open_of(pid: u32, netns: u32) -> Option<File> {
    let f = File::open(format!("/proc/{pid}/ns/net")).ok()?;
    (f.metadata().ok()?.ino() as u32 == netns).then_some(f)
}

/// A process in `netns`, from a walk of /proc.
pub fn find_process(netns: u32) -> Option<File> {
    let pid = find_pid(netns)?;
    open_of(pid, netns)
}

/// The first process found in `netns` (a walk of /proc).
pub fn find_pid(netns: u32) -> Option<u32> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        if is_in(pid, netns) {
            return Some(pid);
        }
    }
    None
}

/// Whether process `pid` is in `netns` now.
pub fn is_in(pid: u32, netns: u32) -> bool {
    std::fs::metadata(format!("/proc/{pid}/ns/net")).is_ok_and(|md| md.ino() as u32 == netns)
}

/// The namespaces named under /run/netns: (name, inode). A namespace kept by a bind
/// mount may hold no process at all.
pub fn list_named() -> Vec<(String, u32)> {
    let mut out = Vec::new();
    for dir in NAMED_DIRS {
        let Ok(rd) = std::fs::read_dir(dir) else { continue };
        for entry in rd.flatten() {
            // stat follows the bind mount to the nsfs inode; an unmounted leftover file
            // is on tmpfs and is not a namespace.
            let Ok(md) = std::fs::metadata(entry.path()) else { continue };
            if md.dev() != nsfs_dev().unwrap_or(u64::MAX) {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            if !out.iter().any(|(_, ino)| *ino == md.ino() as u32) {
                out.push((name, md.ino() as u32));
            }
        }
    }
    out
}

/// The name `ip netns` gives `netns`, and a file referring to it.
pub fn named(netns: u32) -> Option<(String, File)> {
    for dir in NAMED_DIRS {
        let Ok(rd) = std::fs::read_dir(dir) else { continue };
        for entry in rd.flatten() {
            let Ok(f) = File::open(entry.path()) else { continue };
            if f.metadata().map(|m| m.ino() as u32 == netns).unwrap_or(false) {
                return Some((entry.file_name().to_string_lossy().into_owned(), f));
            }
        }
    }
    None
}

/// The device of nsfs (every namespace file is on it).
fn nsfs_dev() -> Option<u64> {
    std::fs::metadata("/proc/self/ns/net").ok().map(|m| m.dev())
}

/// Runs `work` on a helper thread inside the namespace `ns` refers to. `None` when the
/// namespace cannot be entered (no CAP_SYS_ADMIN, or it is gone).
pub fn run_in<T: Send>(ns: &File, work: impl FnOnce() -> T + Send) -> Option<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns on this helper thread only; it ends right after `work`.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return None;
            }
            Some(work())
        })
        .join()
        .ok()
        .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_namespace_is_found_by_pid_and_entered() {
        let ns = own().unwrap();
        let f = open(std::process::id(), ns).expect("our own namespace");
        assert_eq!(run_in(&f, || 7), Some(7));
        assert!(open_of(std::process::id(), ns.wrapping_add(1)).is_none());
    }
}
