//! Interface index -> name, in the network namespace of the process that sent a
//! netlink request. A request names links by ifindex, which only means something inside
//! its namespace: a helper thread joins that namespace ([`netns::run_in`]) and lists
//! its interfaces (if_nameindex(3)). No namespace is held open here.

use std::collections::HashMap;
use std::ffi::CStr;

use crate::kernel::netns;

/// Interface names by (netns, ifindex): the last names seen. A request that deletes a
/// link usually arrives after the link is gone; the name it had is then taken from
/// here (every visit to a namespace lists all its interfaces).
#[derive(Debug, Default)]
pub struct IfNames {
    seen: HashMap<(u32, u32), String>,
}

/// Entries kept at most (interfaces come and go with pods).
const MAX_NAMES: usize = 16384;

impl IfNames {
    /// The name of `ifindex` in network namespace `netns` (inode number), as seen by
    /// `pid` or any other process in that namespace, or as last seen.
    pub fn name(&mut self, pid: u32, netns: u32, ifindex: u32) -> Option<String> {
        if ifindex == 0 {
            return None;
        }
        if let Some(all) = list_in(pid, netns) {
            if self.seen.len() + all.len() > MAX_NAMES {
                self.seen.clear();
            }
            for (idx, name) in all {
                self.seen.insert((netns, idx), name);
            }
        }
        self.seen.get(&(netns, ifindex)).cloned()
    }
}

impl IfNames {
    /// The interfaces of a network namespace now (also remembered for `name`).
    pub fn list(&mut self, pid: u32, netns: u32) -> Option<Vec<String>> {
        let all = list_in(pid, netns)?;
        for (idx, name) in &all {
            self.seen.insert((netns, *idx), name.clone());
        }
        Some(all.into_iter().map(|(_, n)| n).collect())
    }
}

/// Every (ifindex, name) of a network namespace.
fn list_in(pid: u32, netns: u32) -> Option<Vec<(u32, String)>> {
    if netns::own() == Some(netns) {
        return Some(list_interfaces());
    }
    netns::run_in(&netns::open(pid, netns)?, list_interfaces)
}

/// if_nameindex(3) in the calling thread's network namespace.
fn list_interfaces() -> Vec<(u32, String)> {
    let mut out = Vec::new();
    // SAFETY: if_nameindex returns an array terminated by a zero entry, freed below.
    unsafe {
        let head = libc::if_nameindex();
        if head.is_null() {
            return out;
        }
        let mut p = head;
        while (*p).if_index != 0 && !(*p).if_name.is_null() {
            out.push(((*p).if_index, CStr::from_ptr((*p).if_name).to_string_lossy().into_owned()));
            p = p.add(1);
        }
        libc::if_freenameindex(head);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_in_own_namespace() {
        let ns = netns::own().unwrap();
        assert_eq!(IfNames::default().name(std::process::id(), ns, 1).as_deref(), Some("lo"));
        assert_eq!(IfNames::default().name(std::process::id(), ns, 0), None);
    }

    #[test]
    fn a_name_seen_once_outlives_the_interface() {
        let mut names = IfNames::default();
        names.seen.insert((7, 42), "lxc_gone".into());
        // Namespace 7 cannot be entered (no such namespace): the name last seen is used.
        assert_eq!(names.name(u32::MAX, 7, 42).as_deref(), Some("lxc_gone"));
    }
}
