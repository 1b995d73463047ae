//! Turns decoded kernel records into schema-v1 events: names the cgroup hierarchy,
//! decodes netlink requests, resolves interface indexes and cgroup ids to names.
//!
//! Actor attribution (`process`) and the detectors (`correlator`) come after this step.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::kernel::btf_offsets::mask_names;
use crate::pipeline::decode::{Record, Task};
use crate::pipeline::{bpf_names, netlink};
use crate::stream::schema::{Event, Kind, Timestamp};

/// Converts kernel boot-based times to wall-clock time.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Realtime minus boottime, in ns.
    offset_ns: i64,
}

impl Clock {
    pub fn new() -> Self {
        let real = clock_ns(libc::CLOCK_REALTIME);
        let boot = clock_ns(libc::CLOCK_BOOTTIME);
        Clock { offset_ns: real - boot }
    }
    pub fn wall(&self, boot_ns: u64) -> Timestamp {
        Timestamp(boot_ns as i64 + self.offset_ns)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

fn clock_ns(clock: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// cgroup v1 hierarchy ids to their controller lists, from /proc/cgroups and
/// /proc/self/cgroup (named hierarchies such as `name=systemd` appear only there).
#[derive(Debug, Default, Clone)]
pub struct Hierarchies {
    names: HashMap<u32, String>,
}

impl Hierarchies {
    pub fn read() -> Self {
        let cgroups = std::fs::read_to_string("/proc/cgroups").unwrap_or_default();
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        Self::parse(&cgroups, &own)
    }

    pub fn parse(proc_cgroups: &str, self_cgroup: &str) -> Self {
        let mut lists: HashMap<u32, Vec<String>> = HashMap::new();
        for line in proc_cgroups.lines().filter(|l| !l.starts_with('#')) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() >= 2 {
                if let Ok(id) = f[1].parse::<u32>() {
                    if id != 0 {
                        lists.entry(id).or_default().push(f[0].to_string());
                    }
                }
            }
        }
        // "9:name=systemd:/" and "4:memory:/x": the middle field is authoritative.
        for line in self_cgroup.lines() {
            let mut it = line.splitn(3, ':');
            if let (Some(id), Some(ctrl)) = (it.next(), it.next()) {
                if let Ok(id) = id.parse::<u32>() {
                    if id != 0 && !ctrl.is_empty() {
                        lists.insert(id, ctrl.split(',').map(str::to_string).collect());
                    }
                }
            }
        }
        Hierarchies { names: lists.into_iter().map(|(k, v)| (k, v.join(","))).collect() }
    }

    /// `v2` for the default hierarchy, the controller list for a v1 one.
    pub fn name(&self, v2: bool, id: u32) -> String {
        if v2 || id == 0 {
            return "v2".into();
        }
        self.names.get(&id).cloned().unwrap_or_else(|| format!("v1:{id}"))
    }
}

/// cgroup v2 id -> path, learned from mkdir/rmdir and write events, and by scanning the
/// cgroup2 mount on a miss (the id is the directory's inode number).
#[derive(Debug, Default)]
pub struct CgroupPaths {
    root: Option<PathBuf>,
    paths: HashMap<u64, String>,
    last_scan: Option<Instant>,
}

impl CgroupPaths {
    pub fn new(root: Option<PathBuf>) -> Self {
        CgroupPaths { root, paths: HashMap::new(), last_scan: None }
    }

    pub fn learn(&mut self, id: u64, path: &str) {
        if id != 0 {
            self.paths.insert(id, path.to_string());
        }
    }

    pub fn lookup(&mut self, id: u64) -> Option<String> {
        if id == 0 {
            return None;
        }
        if let Some(p) = self.paths.get(&id) {
            return Some(p.clone());
        }
        // At most one scan a second: a busy node has many cgroups.
        if self.last_scan.is_some_and(|t| t.elapsed().as_millis() < 1000) {
            return None;
        }
        self.last_scan = Some(Instant::now());
        if let Some(root) = self.root.clone() {
            self.scan(&root, &root, 0);
        }
        self.paths.get(&id).cloned()
    }

    fn scan(&mut self, root: &Path, dir: &Path, depth: usize) {
        use std::os::unix::fs::MetadataExt;
        if depth > 16 {
            return;
        }
        let Ok(rd) = std::fs::read_dir(dir) else { return };
        for entry in rd.flatten() {
            let Ok(md) = entry.metadata() else { continue };
            if !md.is_dir() {
                continue;
            }
            let p = entry.path();
            if let Ok(rel) = p.strip_prefix(root) {
                self.paths.insert(md.ino(), format!("/{}", rel.display()));
            }
            self.scan(root, &p, depth + 1);
        }
    }
}

/// Signal names for the signals the kernel program keeps (`tracer_common::signals`).
pub fn signal_name(sig: i32) -> String {
    match tracer_common::signals::info(sig) {
        Some(s) => s.name.to_string(),
        None => format!("SIG{sig}"),
    }
}

/// Everything needed to turn records into events.
pub struct EventBuilder {
    pub clock: Clock,
    pub hierarchies: Hierarchies,
    pub controllers: Vec<String>,
    pub cgroups: CgroupPaths,
    pub netns_names: crate::pipeline::ifnames::IfNames,
    /// Netlink messages that could not be decoded (counted into `stats.decode_errors`).
    pub netlink_errors: u64,
    /// (hierarchy id, cgroup id) -> path, for write records whose path the kernel sent
    /// once and then omitted (`PATH_OMITTED`). rmdir evicts (after a grace period:
    /// a write that raced the rmdir may still name the id).
    write_paths: HashMap<(u32, u64), std::sync::Arc<str>>,
    removed: Vec<(u32, u64)>,
    expiring: Vec<(u32, u64)>,
    /// Write records that omitted a path this table did not have (counted into
    /// `stats.decode_errors`; the path is then looked up, or reported as `?`).
    pub path_misses: u64,
    /// The v2 path learned last: a storm of writes to one cgroup learns it once.
    last_learned: (u64, Option<std::sync::Arc<str>>),
}

impl EventBuilder {
    pub fn new(controllers: Vec<String>, cgroup2_root: Option<PathBuf>) -> Self {
        EventBuilder {
            clock: Clock::new(),
            hierarchies: Hierarchies::read(),
            controllers,
            cgroups: CgroupPaths::new(cgroup2_root),
            netns_names: crate::pipeline::ifnames::IfNames::default(),
            netlink_errors: 0,
            write_paths: HashMap::new(),
            removed: Vec::new(),
            expiring: Vec::new(),
            path_misses: 0,
            last_learned: (0, None),
        }
    }

    /// The path of a write record: from the record, or from what an earlier record of
    /// the same cgroup sent.
    fn write_path(&mut self, w: &crate::pipeline::decode::CgroupWrite) -> std::sync::Arc<str> {
        let key = (w.hierarchy_id, w.cgroup_id);
        if !w.path_omitted {
            let path: std::sync::Arc<str> = w.path().into();
            if w.cgroup_id != 0 {
                self.write_paths.insert(key, path.clone());
            }
            return path;
        }
        if let Some(p) = self.write_paths.get(&key) {
            return p.clone();
        }
        self.path_misses += 1;
        let found = if w.v2 { self.cgroups.lookup(w.cgroup_id) } else { None };
        let path: std::sync::Arc<str> = found.unwrap_or_else(|| "?".to_string()).into();
        path
    }

    /// Forgets the paths of cgroups removed before the previous call (called once a
    /// second, so after one to two seconds): the grace covers writes that raced their
    /// rmdir.
    pub fn expire_removed(&mut self) {
        for key in self.expiring.drain(..) {
            self.write_paths.remove(&key);
        }
        std::mem::swap(&mut self.removed, &mut self.expiring);
    }

    /// Completes a cgroup write event with the result sent at syscall exit.
    pub fn complete_write(&self, ev: &mut Event, result: i64, subtree_after: u16) {
        ev.result = Some(result);
        if ev.file.as_deref() == Some("cgroup.subtree_control") {
            ev.controllers_after = known_mask(subtree_after).map(|m| mask_names(&self.controllers, m));
        }
    }

    fn base(&self, t: &Task, kind: Kind) -> Event {
        Event {
            time: self.clock.wall(t.ktime_ns),
            kind,
            pid: t.pid,
            tid: t.tid,
            comm: t.comm.clone(),
            actor: t.comm.clone(),
            ppid: t.ppid,
            parent_comm: t.parent_comm.clone(),
            uid: t.uid,
            start_ns: t.start_ns,
            actor_cgroup_id: t.cgroup_id,
            ..Default::default()
        }
    }

    /// The events a record stands for: none for process records and uninteresting
    /// netlink requests, several for a batch of netlink requests. `seq` is left 0.
    pub fn build(&mut self, rec: &Record) -> Vec<Event> {
        match rec {
            Record::CgroupWrite(w) => {
                let mut ev = self.base(&w.task, Kind::CgroupWrite);
                let path = self.write_path(w);
                if w.v2 && (self.last_learned.0 != w.cgroup_id || self.last_learned.1.as_ref() != Some(&path))
                {
                    self.cgroups.learn(w.cgroup_id, &path);
                    self.last_learned = (w.cgroup_id, Some(path.clone()));
                }
                ev.cgroup = Some(path.to_string());
                ev.hierarchy = Some(self.hierarchies.name(w.v2, w.hierarchy_id));
                ev.cgroup_id = Some(w.cgroup_id);
                ev.file = Some(w.file.clone());
                ev.value = if w.value_unreadable && w.value.is_empty() {
                    None
                } else {
                    Some(String::from_utf8_lossy(&w.value).into_owned())
                };
                ev.value_truncated = w.value_truncated;
                ev.path_truncated = w.path_truncated;
                ev.more_iovecs = w.more_iovecs;
                ev.result = w.result;
                if w.file == "cgroup.subtree_control" {
                    ev.controllers_before =
                        known_mask(w.subtree_before).map(|m| mask_names(&self.controllers, m));
                    if w.result.is_some() {
                        ev.controllers_after =
                            known_mask(w.subtree_after).map(|m| mask_names(&self.controllers, m));
                    }
                }
                vec![ev]
            }
            Record::CgroupMkdir(d) | Record::CgroupRmdir(d) => {
                let kind =
                    if matches!(rec, Record::CgroupMkdir(_)) { Kind::CgroupMkdir } else { Kind::CgroupRmdir };
                let mut ev = self.base(&d.task, kind);
                let v2 = d.hierarchy_id == 0;
                if v2 {
                    self.cgroups.learn(d.cgroup_id, &d.path);
                }
                if kind == Kind::CgroupRmdir {
                    self.removed.push((d.hierarchy_id, d.cgroup_id));
                    self.last_learned = (0, None);
                }
                ev.cgroup = Some(d.path.clone());
                ev.hierarchy = Some(self.hierarchies.name(v2, d.hierarchy_id));
                ev.cgroup_id = Some(d.cgroup_id);
                vec![ev]
            }
            Record::SysctlWrite(s) => {
                let mut ev = self.base(&s.task, Kind::SysctlWrite);
                ev.name = Some(s.dotted_name());
                ev.value = s.new_value.clone();
                ev.old_value = s.old_value.clone();
                ev.netns = Some(s.task.netns);
                if let Some(dev) = sysctl_dev(&s.name) {
                    if dev == "all" || dev == "default" {
                        ev.interfaces = self.netns_names.list(s.task.pid, s.task.netns);
                    }
                    ev.dev = Some(dev);
                }
                vec![ev]
            }
            Record::Netlink(n) => {
                let (requests, errors) = netlink::decode_requests(&n.data);
                self.netlink_errors += errors.len() as u64;
                for e in &errors {
                    tracing::debug!("netlink request from pid {}: {e}", n.task.pid);
                }
                requests
                    .iter()
                    .map(|req| {
                        let mut ev = self.base(&n.task, req.kind);
                        req.apply_to(&mut ev);
                        ev.netns = Some(n.task.netns);
                        ev.more_iovecs = n.more_iovecs;
                        ev.result = n.result.map(i64::from);
                        if ev.dev.is_none() {
                            if let Some(ifindex) = req.ifindex {
                                ev.dev = self.netns_names.name(n.task.pid, n.task.netns, ifindex);
                            }
                        }
                        ev
                    })
                    .collect()
            }
            Record::Signal(s) => {
                let mut ev = self.base(&s.task, Kind::Signal);
                ev.signal = Some(signal_name(s.sig));
                ev.signo = Some(s.sig);
                ev.target_pid = Some(s.target_pid);
                ev.target_comm = Some(s.target_comm.clone());
                ev.target_cgroup = self.cgroups.lookup(s.target_cgroup_id);
                vec![ev]
            }
            Record::CgroupBpf(b) => {
                use tracer_common::bpf_cmd;
                let kind = match b.cmd {
                    bpf_cmd::PROG_DETACH | bpf_cmd::LINK_DETACH => Kind::CgroupBpfDetach,
                    _ => Kind::CgroupBpfAttach,
                };
                let mut ev = self.base(&b.task, kind);
                let v2 = b.hierarchy_id == 0;
                ev.cgroup = Some(b.path.clone());
                ev.cgroup_id = Some(b.cgroup_id);
                ev.hierarchy = Some(self.hierarchies.name(v2, b.hierarchy_id));
                ev.path_truncated = b.path_truncated || b.ns_root_truncated;
                ev.request = Some(bpf_cmd::name(b.cmd).to_string());
                ev.attach_type = Some(bpf_names::attach_type_name(b.attach_type));
                if b.cmd != bpf_cmd::LINK_DETACH {
                    ev.attach_flags = Some(bpf_names::attach_flag_names(b.attach_flags));
                }
                if let Some(p) = &b.prog {
                    ev.prog_id = Some(p.id);
                    ev.prog_name = Some(p.name.clone());
                    ev.prog_type = Some(bpf_names::prog_type_name(p.prog_type));
                }
                ev.link_id = (b.link_id != 0).then_some(b.link_id);
                ev.cgroupns_root = Some(b.ns_root.clone());
                ev.result = Some(b.result);
                vec![ev]
            }
            // Only the request tools' execs are events (pipeline/requests.rs).
            Record::Exec { task, filename, args, args_truncated, .. }
                if crate::pipeline::requests::is_request_tool(filename, &task.comm) =>
            {
                let mut ev = self.base(task, Kind::Exec);
                ev.exe = Some(filename.clone());
                ev.cmdline = Some(Box::new(crate::pipeline::requests::cmdline(args, *args_truncated)));
                vec![ev]
            }
            Record::Exec { .. }
            | Record::Fork { .. }
            | Record::Exit { .. }
            | Record::CgroupWriteResult(_) => Vec::new(),
        }
    }
}

/// `net/ipv4/conf/<dev>/rp_filter` -> `<dev>` (also for `all` and `default`).
pub fn sysctl_dev(name: &str) -> Option<String> {
    let rest = name.strip_prefix("net/ipv4/conf/").or_else(|| name.strip_prefix("net/ipv6/conf/"))?;
    let (dev, _) = rest.split_once('/')?;
    Some(dev.to_string())
}

/// A `subtree_control` mask, or `None` when the kernel could not read it (then the
/// event carries no controller list and the detectors fall back to the written value).
fn known_mask(mask: u16) -> Option<u16> {
    (mask != tracer_common::MASK_UNKNOWN).then_some(mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hierarchies_from_proc() {
        let h = Hierarchies::parse(
            "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpuset\t3\t1\t1\ncpu\t1\t1\t1\ncpuacct\t1\t1\t1\nhugetlb\t0\t1\t1\n",
            "9:name=systemd:/\n1:cpu,cpuacct:/\n0::/\n",
        );
        assert_eq!(h.name(false, 1), "cpu,cpuacct");
        assert_eq!(h.name(false, 3), "cpuset");
        assert_eq!(h.name(false, 9), "name=systemd");
        assert_eq!(h.name(true, 0), "v2");
        assert_eq!(h.name(false, 42), "v1:42");
    }

    #[test]
    fn sysctl_dev_names() {
        assert_eq!(sysctl_dev("net/ipv4/conf/lxc12ab/rp_filter").as_deref(), Some("lxc12ab"));
        assert_eq!(sysctl_dev("net/ipv4/conf/all/rp_filter").as_deref(), Some("all"));
        assert_eq!(sysctl_dev("net/core/somaxconn"), None);
    }
}
