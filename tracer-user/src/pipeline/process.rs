//! Process table keyed by (pid, start time), and actor attribution.
//!
//! The table is seeded from `/proc` at start and kept current from the kernel's exec,
//! fork and exit records. A process is the pair (pid, boot-based start time of its
//! thread-group leader): the kernel gives the start time in ns, `/proc/<pid>/stat` in
//! clock ticks, so keys match within one tick. A reused PID has a different start time
//! and never inherits the old entry; an exited process stays for a grace period so that
//! events which arrive after its exit (ring-buffer order is per CPU) still resolve.
//!
//! Attribution names the actor from the executable path first, then comm, then the
//! ancestry (comm is 15 bytes and set by the process itself: `systemd-network`,
//! `containerd-shim`, `runc:[2:INIT]`), and says on whose behalf a helper acted
//! (runc for containerd, systemd-sysctl for systemd-udevd).

use std::collections::{HashMap, VecDeque};
use std::path::Path;

use crate::pipeline::actor::{actor_name, on_behalf_of};
use crate::pipeline::decode::Task;
use crate::stream::schema::Event;

/// How long an exited process stays resolvable, in ns of the kernel's boot clock.
pub const DEFAULT_GRACE_NS: u64 = 30_000_000_000;
/// At most this many exited processes are kept, whatever their age.
pub const DEFAULT_MAX_EXITED: usize = 8192;
/// Ancestry walks stop after this many steps (and on any loop).
const MAX_ANCESTRY: usize = 32;

/// One process as the table knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    pub pid: u32,
    /// Boot-based start time in ns (tick resolution when it came from /proc).
    pub start_ns: u64,
    /// The parent that forked it (not the reaper it was re-parented to), 0 when unknown.
    pub ppid: u32,
    /// Start time of that parent, 0 when unknown.
    pub parent_start_ns: u64,
    pub comm: String,
    /// Executable path: readlink of /proc/pid/exe, or the exec filename.
    pub exe: Option<String>,
    /// Kernel boot-clock time of the exit, when it has exited.
    pub exited_ns: Option<u64>,
}

/// Processes by (pid, start time).
#[derive(Debug)]
pub struct ProcessTable {
    /// Entries of one pid, oldest first; at most one is alive.
    by_pid: HashMap<u32, Vec<Process>>,
    /// Exited entries in exit order, for pruning.
    exited: VecDeque<(u32, u64)>,
    /// One clock tick in ns: the tolerance of start-time matches.
    tick_ns: u64,
    grace_ns: u64,
    max_exited: usize,
    /// Latest kernel time seen.
    now_ns: u64,
    /// The last attribution, reused while the table is unchanged and the next event
    /// comes from the same task (a storm of writes from one process).
    memo: Option<Box<Memo>>,
}

/// What `attribute` computed for one task, valid until the table changes.
#[derive(Debug)]
struct Memo {
    pid: u32,
    start_ns: u64,
    ppid: u32,
    parent_start_ns: u64,
    comm: String,
    parent_comm: String,
    exe: Option<String>,
    actor: String,
    ancestry: Vec<String>,
    on_behalf_of: Option<String>,
}

impl Memo {
    fn matches(&self, t: &Task) -> bool {
        self.pid == t.pid
            && self.start_ns == t.start_ns
            && self.ppid == t.ppid
            && self.parent_start_ns == t.parent_start_ns
            && self.comm == t.comm
            && self.parent_comm == t.parent_comm
    }
}

impl Default for ProcessTable {
    fn default() -> Self {
        Self::new()
    }
}

impl ProcessTable {
    pub fn new() -> Self {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let hz = if hz > 0 { hz as u64 } else { 100 };
        Self::with_limits(1_000_000_000 / hz, DEFAULT_GRACE_NS, DEFAULT_MAX_EXITED)
    }

    /// A table with an explicit tick (ns), grace period (ns) and exited-entry cap.
    pub fn with_limits(tick_ns: u64, grace_ns: u64, max_exited: usize) -> Self {
        ProcessTable {
            by_pid: HashMap::new(),
            exited: VecDeque::new(),
            tick_ns: tick_ns.max(1),
            grace_ns,
            max_exited,
            now_ns: 0,
            memo: None,
        }
    }

    /// Entries held, alive and exited (for metrics).
    pub fn len(&self) -> usize {
        self.by_pid.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.by_pid.is_empty()
    }

    /// Entries that have not exited.
    pub fn live_len(&self) -> usize {
        self.len() - self.exited.len()
    }

    /// The process (pid, start_ns), matching start times within one tick. A start of 0
    /// (unknown) matches the newest entry of the pid.
    pub fn get(&self, pid: u32, start_ns: u64) -> Option<&Process> {
        let i = self.find(pid, start_ns)?;
        self.by_pid.get(&pid).map(|v| &v[i])
    }

    fn find(&self, pid: u32, start_ns: u64) -> Option<usize> {
        let v = self.by_pid.get(&pid)?;
        if start_ns == 0 {
            return v.len().checked_sub(1);
        }
        v.iter()
            .enumerate()
            .filter(|(_, p)| p.start_ns == 0 || p.start_ns.abs_diff(start_ns) <= self.tick_ns)
            // Prefer an exact start over an unknown one.
            .min_by_key(|(_, p)| if p.start_ns == 0 { u64::MAX } else { p.start_ns.abs_diff(start_ns) })
            .map(|(i, _)| i)
    }

    /// Inserts a new process. Any other live entry of the same pid belongs to a process
    /// whose exit we missed: it is marked exited now, so it can never be matched as alive.
    fn insert(&mut self, p: Process) -> &mut Process {
        self.memo = None;
        let now = self.now_ns;
        let (pid, start) = (p.pid, p.start_ns);
        let v = self.by_pid.entry(pid).or_default();
        for old in v.iter_mut().filter(|o| o.exited_ns.is_none()) {
            old.exited_ns = Some(now);
            self.exited.push_back((old.pid, old.start_ns));
        }
        v.push(p);
        let i = v.len() - 1;
        debug_assert_eq!(v[i].start_ns, start);
        &mut self.by_pid.get_mut(&pid).expect("just inserted")[i]
    }

    /// The entry of (pid, start), created from what the caller knows when missing.
    fn entry(&mut self, pid: u32, start_ns: u64, make: impl FnOnce() -> Process) -> &mut Process {
        match self.find(pid, start_ns) {
            Some(i) => {
                let v = self.by_pid.get_mut(&pid).expect("found");
                // An entry from /proc or a fallback may lack the exact start; learn it.
                if v[i].start_ns == 0 {
                    v[i].start_ns = start_ns;
                }
                &mut v[i]
            }
            None => self.insert(make()),
        }
    }

    fn advance(&mut self, ktime_ns: u64) {
        if ktime_ns > self.now_ns {
            self.now_ns = ktime_ns;
        }
        self.prune();
    }

    /// Drops exited entries past the grace period, and the oldest beyond the cap.
    fn prune(&mut self) {
        while let Some(&(pid, start)) = self.exited.front() {
            let exited_at = self
                .by_pid
                .get(&pid)
                .and_then(|v| v.iter().find(|p| p.start_ns == start && p.exited_ns.is_some()))
                .and_then(|p| p.exited_ns);
            let expired = match exited_at {
                Some(t) => t.saturating_add(self.grace_ns) < self.now_ns,
                None => true, // already gone
            };
            if !expired && self.exited.len() <= self.max_exited {
                break;
            }
            self.exited.pop_front();
            self.memo = None;
            if let Some(v) = self.by_pid.get_mut(&pid) {
                if let Some(i) = v.iter().position(|p| p.start_ns == start && p.exited_ns.is_some()) {
                    v.remove(i);
                }
                if v.is_empty() {
                    self.by_pid.remove(&pid);
                }
            }
        }
    }

    /// Seeds the table from a procfs tree (`/proc`, or a fixture in tests). Returns the
    /// number of processes read. Unreadable entries (raced exits, kernel threads without
    /// exe) are skipped or kept without exe.
    pub fn seed_from_proc(&mut self, proc_root: &Path) -> usize {
        self.memo = None;
        let Ok(dir) = std::fs::read_dir(proc_root) else {
            return 0;
        };
        let mut seeded = Vec::new();
        for ent in dir.flatten() {
            let name = ent.file_name();
            let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let base = proc_root.join(name);
            let Ok(stat) = std::fs::read_to_string(base.join("stat")) else {
                continue;
            };
            let Some(st) = parse_stat(&stat) else {
                continue;
            };
            if st.pid != pid {
                continue;
            }
            let exe = std::fs::read_link(base.join("exe")).ok().map(|p| p.to_string_lossy().into_owned());
            seeded.push((st, exe));
        }
        let starts: HashMap<u32, u64> =
            seeded.iter().map(|(st, _)| (st.pid, st.starttime_ticks * self.tick_ns)).collect();
        let n = seeded.len();
        for (st, exe) in seeded {
            let start_ns = st.starttime_ticks * self.tick_ns;
            if self.find(st.pid, start_ns).is_some() {
                continue;
            }
            self.insert(Process {
                pid: st.pid,
                start_ns,
                ppid: st.ppid,
                parent_start_ns: starts.get(&st.ppid).copied().unwrap_or(0),
                comm: st.comm,
                exe,
                exited_ns: None,
            });
        }
        n
    }

    /// A process called execve: same key, new executable and comm.
    pub fn exec(&mut self, task: &Task, filename: &str) {
        self.memo = None;
        self.advance(task.ktime_ns);
        let p = self.entry(task.pid, task.start_ns, || from_task(task));
        // Re-exec of the same binary through /proc/self/exe or an fd (runc does both to
        // protect its binary, CVE-2019-5736): the executable did not change, and the
        // filename would only name "exe" or "3".
        let reexec = filename.starts_with("/proc/") || filename.starts_with("/dev/fd/");
        let keep = filename.is_empty() || (reexec && p.exe.is_some());
        if !keep {
            p.exe = Some(filename.to_string());
        }
        if !task.comm.is_empty() {
            p.comm = task.comm.clone();
        }
        if p.ppid == 0 && task.ppid != 0 {
            p.ppid = task.ppid;
            p.parent_start_ns = task.parent_start_ns;
        }
        p.exited_ns = None;
    }

    /// `parent` forked a new process. A new thread (child_pid == parent pid) is no process.
    pub fn fork(&mut self, parent: &Task, child_pid: u32, child_start_ns: u64) {
        self.memo = None;
        self.advance(parent.ktime_ns);
        if child_pid == parent.pid || child_pid == 0 {
            return;
        }
        let (pexe, pcomm) = {
            let p = self.entry(parent.pid, parent.start_ns, || from_task(parent));
            (p.exe.clone(), p.comm.clone())
        };
        let child = Process {
            pid: child_pid,
            start_ns: child_start_ns,
            ppid: parent.pid,
            parent_start_ns: parent.start_ns,
            comm: if parent.comm.is_empty() { pcomm } else { parent.comm.clone() },
            exe: pexe,
            exited_ns: None,
        };
        match self.find(child_pid, child_start_ns) {
            // Already known (an event of the child arrived first): fill in the parent.
            Some(i) if child_start_ns != 0 => {
                let c = &mut self.by_pid.get_mut(&child_pid).expect("found")[i];
                c.ppid = child.ppid;
                c.parent_start_ns = child.parent_start_ns;
                if c.exe.is_none() {
                    c.exe = child.exe;
                }
            }
            _ => {
                self.insert(child);
            }
        }
    }

    /// The process exited (the thread-group leader; thread exits are ignored). The entry
    /// stays for the grace period.
    pub fn exit(&mut self, task: &Task) {
        self.memo = None;
        self.advance(task.ktime_ns);
        if task.tid != 0 && task.tid != task.pid {
            return;
        }
        let now = self.now_ns;
        let p = self.entry(task.pid, task.start_ns, || from_task(task));
        if p.exited_ns.is_none() {
            p.exited_ns = Some(now);
            let key = (p.pid, p.start_ns);
            self.exited.push_back(key);
        }
        self.prune();
    }

    /// Fills `ev.exe`, `ev.actor`, `ev.ancestry` and `ev.on_behalf_of` for the process
    /// that caused it. A process the table missed is inserted from what the task says
    /// (comm, parent pid and comm), so later events of it and its children resolve.
    pub fn attribute(&mut self, task: &Task, ev: &mut Event) {
        self.advance(task.ktime_ns);
        if let Some(m) = self.memo.as_deref() {
            if m.matches(task) {
                ev.on_behalf_of = m.on_behalf_of.clone();
                ev.exe = m.exe.clone();
                ev.actor = m.actor.clone();
                ev.ancestry = m.ancestry.clone();
                return;
            }
        }
        self.attribute_uncached(task, ev);
        self.memo = Some(Box::new(Memo {
            pid: task.pid,
            start_ns: task.start_ns,
            ppid: task.ppid,
            parent_start_ns: task.parent_start_ns,
            comm: task.comm.clone(),
            parent_comm: task.parent_comm.clone(),
            exe: ev.exe.clone(),
            actor: ev.actor.clone(),
            ancestry: ev.ancestry.clone(),
            on_behalf_of: ev.on_behalf_of.clone(),
        }));
    }

    /// Fills the process fields of `ev` (pid, comm, parent, start time) and its
    /// attribution for the process `pid`, when the table knows it (an event from a
    /// userspace source, the bus monitor, which has only the pid).
    pub fn attribute_pid(&mut self, pid: u32, ev: &mut Event) {
        ev.pid = pid;
        ev.tid = pid;
        // The newest entry of the pid, even exited: a `busctl` is gone by the time its
        // call reaches the reader thread (pids are not reused within the table's grace).
        let Some(p) = self.by_pid.get(&pid).and_then(|v| v.last()) else {
            return;
        };
        let parent_comm = self.get(p.ppid, p.parent_start_ns).map(|q| q.comm.clone()).unwrap_or_default();
        let task = Task {
            ktime_ns: self.now_ns,
            pid,
            tid: pid,
            ppid: p.ppid,
            uid: 0,
            start_ns: p.start_ns,
            parent_start_ns: p.parent_start_ns,
            cgroup_id: 0,
            netns: 0,
            comm: p.comm.clone(),
            parent_comm,
        };
        ev.comm = task.comm.clone();
        ev.ppid = task.ppid;
        ev.parent_comm = task.parent_comm.clone();
        ev.start_ns = task.start_ns;
        self.attribute(&task, ev);
    }

    fn attribute_uncached(&mut self, task: &Task, ev: &mut Event) {
        // The parent first, so that the child's entry can point at it.
        if task.ppid != 0 && self.find(task.ppid, task.parent_start_ns).is_none() {
            self.insert(Process {
                pid: task.ppid,
                start_ns: task.parent_start_ns,
                ppid: 0,
                parent_start_ns: 0,
                comm: task.parent_comm.clone(),
                exe: None,
                exited_ns: None,
            });
        }
        let (exe, comm, ppid, pstart) = {
            let p = self.entry(task.pid, task.start_ns, || from_task(task));
            if p.comm.is_empty() {
                p.comm = task.comm.clone();
            }
            (p.exe.clone(), p.comm.clone(), p.ppid, p.parent_start_ns)
        };
        // The thread's comm at the event is the freshest name (udev workers rename
        // themselves without exec); the exe still decides when it is known.
        let comm = if task.comm.is_empty() { comm } else { task.comm.clone() };
        let actor = actor_name(exe.as_deref(), &comm);
        let ancestry = self.ancestry(task.pid, ppid, pstart);
        ev.on_behalf_of = on_behalf_of(&actor, &ancestry);
        ev.exe = exe;
        ev.actor = actor;
        ev.ancestry = ancestry;
    }

    /// Actor names of the ancestors of `pid`, nearest first, up to init. Consecutive
    /// repeats are folded (a daemonizing shim, a runc that re-executes itself).
    pub fn ancestry(&self, pid: u32, mut ppid: u32, mut pstart: u64) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut seen = vec![pid];
        while ppid != 0 && out.len() < MAX_ANCESTRY && !seen.contains(&ppid) {
            seen.push(ppid);
            let Some(p) = self.get(ppid, pstart) else {
                break;
            };
            let name = actor_name(p.exe.as_deref(), &p.comm);
            if out.last() != Some(&name) && !name.is_empty() {
                out.push(name);
            }
            if p.pid == 1 {
                break;
            }
            (ppid, pstart) = (p.ppid, p.parent_start_ns);
        }
        out
    }
}

fn from_task(task: &Task) -> Process {
    Process {
        pid: task.pid,
        start_ns: task.start_ns,
        ppid: task.ppid,
        parent_start_ns: task.parent_start_ns,
        comm: task.comm.clone(),
        exe: None,
        exited_ns: None,
    }
}

/// The fields of `/proc/<pid>/stat` the table needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub pid: u32,
    pub comm: String,
    pub ppid: u32,
    /// Field 22: start time after boot, in clock ticks.
    pub starttime_ticks: u64,
}

/// Parses `/proc/<pid>/stat`. comm may hold spaces and parentheses, so it runs from the
/// first `(` to the last `)` (proc(5)).
pub fn parse_stat(s: &str) -> Option<Stat> {
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    if close < open {
        return None;
    }
    let pid = s[..open].trim().parse().ok()?;
    let comm = s[open + 1..close].to_string();
    // Fields from 3 (state) on.
    let rest: Vec<&str> = s[close + 1..].split_whitespace().collect();
    let ppid = rest.get(1)?.parse().ok()?;
    let starttime_ticks = rest.get(22 - 3)?.parse().ok()?;
    Some(Stat { pid, comm, ppid, starttime_ticks })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: u64 = 10_000_000; // USER_HZ 100

    fn fixture() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/proc")
    }

    fn seeded() -> ProcessTable {
        let mut t = ProcessTable::with_limits(TICK, DEFAULT_GRACE_NS, DEFAULT_MAX_EXITED);
        assert_eq!(t.seed_from_proc(&fixture()), 8);
        t
    }

    /// A task as the kernel reports it: exact ns start, within one tick of /proc's.
    fn task(pid: u32, start_ticks: u64, ppid: u32, pstart_ticks: u64, comm: &str, pcomm: &str) -> Task {
        Task {
            ktime_ns: 1_000_000_000_000,
            pid,
            tid: pid,
            ppid,
            start_ns: start_ticks * TICK + 3_456_789,
            parent_start_ns: pstart_ticks * TICK + 1_234_567,
            comm: comm.into(),
            parent_comm: pcomm.into(),
            ..Default::default()
        }
    }

    fn attribute(t: &mut ProcessTable, task: &Task) -> Event {
        let mut ev = Event { pid: task.pid, comm: task.comm.clone(), ..Default::default() };
        t.attribute(task, &mut ev);
        ev
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_stat_with_odd_comm() {
        let s = "42 (a) b (c)) S 7 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 12345 0 0";
        assert_eq!(
            parse_stat(s),
            Some(Stat { pid: 42, comm: "a) b (c)".into(), ppid: 7, starttime_ticks: 12345 })
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn fixture_seeds_exe_comm_and_parents() {
        let t = seeded();
        let net = t.get(612, 500 * TICK + 5).unwrap();
        assert_eq!(net.comm, "systemd-network");
        assert_eq!(net.exe.as_deref(), Some("/usr/lib/systemd/systemd-networkd"));
        assert_eq!(net.ppid, 1);
        assert_eq!(net.parent_start_ns, 2 * TICK);
        // Kernel thread: no exe.
        assert_eq!(t.get(2, 0).unwrap().exe, None);
    }

    #[test]
    fn comm_truncation_is_resolved_by_exe() {
        let mut t = seeded();
        let ev = attribute(&mut t, &task(612, 500, 1, 2, "systemd-network", "systemd"));
        assert_eq!(ev.actor, "systemd-networkd");
        assert_eq!(ev.exe.as_deref(), Some("/usr/lib/systemd/systemd-networkd"));
        assert_eq!(ev.ancestry, strings(&["systemd"]));
        assert_eq!(ev.on_behalf_of, None);
        // pid 1 from the fixture.
        let ev = attribute(&mut t, &task(1, 2, 0, 0, "systemd", ""));
        assert_eq!(ev.actor, "systemd");
        assert!(ev.ancestry.is_empty());
    }

    #[test]
    fn a_process_calling_itself_kubelet_is_not_kubelet() {
        assert_eq!(actor_name(Some("/tmp/evil"), "kubelet"), "evil");
        assert_eq!(actor_name(None, "kubelet"), "kubelet");
        assert_eq!(actor_name(Some("/usr/bin/python3.11"), "networkd-dispat"), "networkd-dispat");
        assert_eq!(actor_name(Some("/usr/bin/udevadm"), "systemd-udevd"), "systemd-udevd");
        assert_eq!(actor_name(Some("/usr/bin/udevadm"), "(udev-worker)"), "systemd-udevd");
        assert_eq!(actor_name(Some("/usr/bin/udevadm"), "udevadm"), "udevadm");
        assert_eq!(actor_name(Some("/memfd:runc_cloned:/proc/self/exe (deleted)"), "runc:[2:INIT]"), "runc");
        assert_eq!(
            actor_name(Some("/usr/bin/containerd-shim-runc-v2 (deleted)"), "containerd-shim"),
            "containerd-shim"
        );
        assert_eq!(actor_name(Some("/sbin/init"), "systemd"), "systemd");
    }

    #[test]
    fn containerd_shim_runc_chain() {
        let mut t = seeded();
        // containerd runs `containerd-shim-runc-v2 start`, which daemonizes the shim; the
        // shim forks runc, which re-executes itself through /proc/self/exe.
        let containerd = task(700, 600, 1, 2, "containerd", "systemd");
        let start = Task {
            start_ns: 9_000 * TICK,
            parent_start_ns: containerd.start_ns,
            ..task(5000, 0, 700, 0, "containerd", "containerd")
        };
        t.fork(&containerd, start.pid, start.start_ns);
        t.exec(&Task { comm: "containerd-shim".into(), ..start.clone() }, "/usr/bin/containerd-shim-runc-v2");
        let shim = Task {
            start_ns: 9_001 * TICK,
            parent_start_ns: start.start_ns,
            ..task(5001, 0, 5000, 0, "containerd-shim", "containerd-shim")
        };
        t.fork(&start, shim.pid, shim.start_ns);
        t.exit(&Task { ktime_ns: 3, ..start.clone() });
        let runc = Task {
            start_ns: 9_002 * TICK,
            parent_start_ns: shim.start_ns,
            ppid: 5001,
            ..task(5002, 0, 1, 0, "containerd-shim", "containerd-shim")
        };
        t.fork(&Task { ppid: 1, ..shim.clone() }, runc.pid, runc.start_ns);
        t.exec(&runc, "/usr/bin/runc");
        t.exec(&Task { comm: "exe".into(), ..runc.clone() }, "/proc/self/exe");
        let ev = attribute(&mut t, &Task { comm: "runc:[2:INIT]".into(), ..runc });
        assert_eq!(ev.actor, "runc");
        assert_eq!(ev.exe.as_deref(), Some("/usr/bin/runc"));
        assert_eq!(ev.ancestry, strings(&["containerd-shim", "containerd", "systemd"]));
        assert_eq!(ev.on_behalf_of.as_deref(), Some("containerd"));
    }

    #[test]
    fn shim_seeded_from_proc_is_reparented_but_still_containerd_s() {
        let mut t = seeded();
        // In /proc the shim's parent is pid 1 (it daemonized before we started).
        let shim = task(900, 800, 1, 2, "containerd-shim", "systemd");
        let ev = attribute(&mut t, &shim);
        assert_eq!(ev.actor, "containerd-shim");
        assert_eq!(ev.ancestry, strings(&["systemd"]));
        assert_eq!(ev.on_behalf_of.as_deref(), Some("containerd"));
        let runc = Task {
            start_ns: 9_000 * TICK,
            parent_start_ns: shim.start_ns,
            ..task(5000, 0, 900, 0, "containerd-shim", "containerd-shim")
        };
        t.fork(&shim, runc.pid, runc.start_ns);
        t.exec(&runc, "/usr/sbin/runc");
        let ev = attribute(&mut t, &Task { comm: "runc".into(), ..runc });
        assert_eq!((ev.actor.as_str(), ev.on_behalf_of.as_deref()), ("runc", Some("containerd")));
        // cilium-agent runs in a pod under that shim: it is a principal of its own.
        let ev = attribute(&mut t, &task(1500, 1400, 900, 800, "cilium-agent", "containerd-shim"));
        assert_eq!((ev.actor.as_str(), ev.on_behalf_of.as_deref()), ("cilium-agent", None));
        assert_eq!(ev.ancestry, strings(&["containerd-shim", "systemd"]));
    }

    #[test]
    fn udev_rule_runs_systemd_sysctl() {
        let mut t = seeded();
        // systemd-udevd (pid 400, exe udevadm) forks a worker, which forks systemd-sysctl.
        let udevd = task(400, 300, 1, 2, "systemd-udevd", "systemd");
        t.fork(&udevd, 6000, 10_000 * TICK);
        let worker = Task {
            start_ns: 10_000 * TICK,
            parent_start_ns: udevd.start_ns,
            ..task(6000, 0, 400, 0, "(udev-worker)", "systemd-udevd")
        };
        t.fork(&worker, 6001, 10_001 * TICK);
        let sysctl = Task {
            start_ns: 10_001 * TICK,
            parent_start_ns: worker.start_ns,
            ..task(6001, 0, 6000, 0, "(udev-worker)", "(udev-worker)")
        };
        t.exec(&Task { comm: "systemd-sysctl".into(), ..sysctl.clone() }, "/usr/lib/systemd/systemd-sysctl");
        let ev = attribute(&mut t, &Task { comm: "systemd-sysctl".into(), ..sysctl });
        assert_eq!(ev.actor, "systemd-sysctl");
        assert_eq!(ev.ancestry, strings(&["systemd-udevd", "systemd"]));
        assert_eq!(ev.on_behalf_of.as_deref(), Some("systemd-udevd"));
        // The worker is udevd itself.
        let ev = attribute(&mut t, &worker);
        assert_eq!(ev.actor, "systemd-udevd");
        assert_eq!(ev.on_behalf_of, None);
    }

    #[test]
    fn short_lived_process_resolves_after_its_exit() {
        let mut t = seeded();
        let kubelet = task(800, 700, 1, 2, "kubelet", "systemd");
        t.fork(&kubelet, 7000, 20_000 * TICK);
        let base = kubelet.ktime_ns;
        let child = Task {
            ktime_ns: base + 5,
            start_ns: 20_000 * TICK,
            parent_start_ns: kubelet.start_ns,
            ..task(7000, 0, 800, 0, "kubelet", "kubelet")
        };
        t.exec(&Task { comm: "ip".into(), ..child.clone() }, "/usr/sbin/ip");
        t.exit(&Task { ktime_ns: base + 10, ..child.clone() });
        // Its event is read after the exit record (another CPU's ring-buffer order).
        let ev = attribute(&mut t, &Task { ktime_ns: base + 9, comm: "ip".into(), ..child.clone() });
        assert_eq!(ev.actor, "ip");
        assert_eq!(ev.exe.as_deref(), Some("/usr/sbin/ip"));
        assert_eq!(ev.ancestry, strings(&["kubelet", "systemd"]));
        assert_eq!(ev.on_behalf_of.as_deref(), Some("kubelet"));
        // Still there just before the end of the grace period, gone after it.
        t.advance(base + 10 + DEFAULT_GRACE_NS);
        assert!(t.get(7000, child.start_ns).is_some());
        t.advance(base + 10 + DEFAULT_GRACE_NS + 1);
        assert!(t.get(7000, child.start_ns).is_none());
    }

    #[test]
    fn reused_pid_never_inherits_the_old_entry() {
        let mut t = seeded();
        // pid 612 (systemd-networkd in the fixture) exits, a shell gets the same pid.
        t.exit(&Task { ktime_ns: 100, ..task(612, 500, 1, 2, "systemd-network", "systemd") });
        let newcomer = task(612, 50_000, 1, 2, "evil", "systemd");
        let ev = attribute(&mut t, &newcomer);
        assert_eq!(ev.actor, "evil");
        assert_eq!(ev.exe, None);
        // And the old one still resolves within its grace period.
        let ev = attribute(&mut t, &task(612, 500, 1, 2, "systemd-network", "systemd"));
        assert_eq!(ev.actor, "systemd-networkd");
        // A reuse whose exit we missed: the old entry is retired, never matched again.
        let again = task(612, 90_000, 1, 2, "sh", "systemd");
        t.exec(&again, "/bin/sh");
        assert_eq!(t.get(612, newcomer.start_ns).unwrap().exited_ns, Some(t.now_ns));
        assert_eq!(attribute(&mut t, &again).actor, "sh");
    }

    #[test]
    fn unknown_process_falls_back_to_comm_and_is_remembered() {
        let mut t = ProcessTable::with_limits(TICK, DEFAULT_GRACE_NS, DEFAULT_MAX_EXITED);
        let ev = attribute(&mut t, &task(4242, 1, 4000, 1, "systemd-network", "systemd"));
        assert_eq!(ev.actor, "systemd-networkd");
        assert_eq!(ev.ancestry, strings(&["systemd"]));
        assert_eq!(t.len(), 2);
        let ev = attribute(&mut t, &task(4243, 2, 4100, 1, "containerd-shim", "containerd"));
        assert_eq!(ev.actor, "containerd-shim");
        assert_eq!(ev.ancestry, strings(&["containerd"]));
        assert_eq!(ev.on_behalf_of.as_deref(), Some("containerd"));
    }

    #[test]
    fn exited_cap_bounds_the_table() {
        let mut t = ProcessTable::with_limits(TICK, u64::MAX / 2, 3);
        for pid in 100..110 {
            let tk = task(pid, pid as u64, 1, 1, "x", "init");
            t.fork(&task(1, 1, 0, 0, "init", ""), pid, tk.start_ns);
            t.exit(&tk);
        }
        assert_eq!(t.live_len(), 1);
        assert_eq!(t.len(), 4);
    }

    #[test]
    fn container_processes_act_for_themselves() {
        let anc = strings(&["sh", "containerd-shim", "containerd", "systemd"]);
        assert_eq!(on_behalf_of("ip", &anc), None);
        let anc = strings(&["runc", "containerd-shim", "containerd", "systemd"]);
        assert_eq!(on_behalf_of("nvidia-hook", &anc).as_deref(), Some("containerd"));
        assert_eq!(on_behalf_of("runc", &strings(&["conmon", "systemd"])).as_deref(), Some("crio"));
        assert_eq!(on_behalf_of("sh", &strings(&["sshd", "systemd"])), None);
    }
}
