//! Interface index -> name, in the network namespace of the process that sent a
//! netlink request. A request names links by ifindex, which only means something inside
//! its namespace: a helper thread joins that namespace (setns affects only the calling
//! thread) and asks the kernel (SIOCGIFNAME via if_indextoname).
//!
//! The sender is often gone by the time its record is read (`ip route del` lives a
//! millisecond), so another process in the same namespace is looked up in /proc, then
//! the namespaces kept by bind mounts under /run/netns. No
//! namespace is held open: tracer must not keep other people's namespaces alive.

use std::ffi::CStr;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;

#[derive(Debug, Default)]
pub struct IfNames {}

impl IfNames {
    /// The name of `ifindex` in network namespace `netns` (inode number), as seen by
    /// `pid` or any other process in that namespace.
    pub fn name(&mut self, pid: u32, netns: u32, ifindex: u32) -> Option<String> {
        if ifindex == 0 {
            return None;
        }
        if own_netns() == Some(netns) {
            return index_to_name(ifindex);
        }
        let file = open_netns_of(pid, netns).or_else(|| find_netns(netns)).or_else(|| named_netns(netns))?;
        std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: setns on this helper thread only; it ends right after.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return None;
                }
                index_to_name(ifindex)
            })
            .join()
            .ok()
            .flatten()
        })
    }
}

fn own_netns() -> Option<u32> {
    std::fs::metadata("/proc/self/ns/net").ok().map(|m| m.ino() as u32)
}

fn open_netns_of(pid: u32, netns: u32) -> Option<File> {
    let path = format!("/proc/{pid}/ns/net");
    let f = File::open(&path).ok()?;
    (f.metadata().ok()?.ino() as u32 == netns).then_some(f)
}

fn find_netns(netns: u32) -> Option<File> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(md) = std::fs::metadata(format!("/proc/{pid}/ns/net")) else { continue };
        if md.ino() as u32 == netns {
            if let Some(f) = open_netns_of(pid, netns) {
                return Some(f);
            }
        }
    }
    None
}

/// Namespaces kept by a bind mount (`ip netns add`) may hold no process at all.
fn named_netns(netns: u32) -> Option<File> {
    for dir in ["/run/netns", "/var/run/netns"] {
        let Ok(rd) = std::fs::read_dir(dir) else { continue };
        for entry in rd.flatten() {
            let Ok(f) = File::open(entry.path()) else { continue };
            if f.metadata().map(|m| m.ino() as u32 == netns).unwrap_or(false) {
                return Some(f);
            }
        }
    }
    None
}

fn index_to_name(ifindex: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buf has IF_NAMESIZE bytes as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: if_indextoname wrote a NUL-terminated name into buf.
    Some(unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_in_own_namespace() {
        let ns = own_netns().unwrap();
        assert_eq!(IfNames::default().name(std::process::id(), ns, 1).as_deref(), Some("lo"));
        assert_eq!(IfNames::default().name(std::process::id(), ns, 0), None);
    }
}
