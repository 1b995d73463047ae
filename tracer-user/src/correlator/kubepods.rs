//! `kubepods-controller-removed`: a controller kubelet requires disappears from
//! `cgroup.subtree_control` of a kubepods cgroup (root, QoS or pod level) by a writer
//! other than kubelet (incident 1: systemd realizing a unit it does not own drops
//! `cpuset`; kubelet's `Validate()` then fails and it kills the pod).
//!
//! Emission: the finding is emitted at the removal (live users see it with the event,
//! `details.phase = "removed"`). The removal opens a window of [`WINDOW_NS`]; when it
//! closes (a later event's time, [`Detector::tick`], or the end of the stream), a second
//! finding with the same id and `details.phase = "window_closed"` follows **if anything
//! happened in it**: who wrote the controller back and after how long (`restored_by`,
//! `restored_after_ms`), the pods under the cgroup whose cgroups were removed
//! (`pods_removed`) or whose processes were sent a terminating signal (`pods_signalled`).
//! Its evidence is the removal plus those events.

use std::collections::{BTreeSet, HashMap};

use super::kube::{self, Level};
use super::{attribution, finding, made_by, who, HostKey};
use crate::stream::schema::{Event, Finding, Kind, Severity, Timestamp};

pub const ID: &str = "kubepods-controller-removed";

/// kubelet requires every supported unified controller (kubernetes
/// pkg/kubelet/cm/cgroup_manager_linux.go, `getSupportedUnifiedControllers`).
pub const REQUIRED: &[&str] = &["cpu", "cpuset", "memory", "hugetlb", "pids"];

/// How long after a removal its consequences are collected.
pub const WINDOW_NS: i64 = 60_000_000_000;

pub const REMEDIATION: &str = "kubelet and the container runtime disagree on the cgroup driver, \
so systemd manages slices kubelet created and rewrites their cgroup.subtree_control. \
Use the systemd driver on both: in /etc/containerd/config.toml set `SystemdCgroup = true` under \
[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options] and restart containerd; \
set `cgroupDriver: systemd` in the kubelet configuration and restart kubelet (drain the node first).";

/// Signals that do not end a process: routine traffic, not a kill.
const ROUTINE_SIGNALS: &[&str] =
    &["CHLD", "URG", "WINCH", "CONT", "PIPE", "ALRM", "VTALRM", "PROF", "IO", "POLL"];

#[derive(Debug)]
struct Window {
    host: HostKey,
    cgroup: String,
    controllers: Vec<String>,
    removed_at: Timestamp,
    deadline: Timestamp,
    actor: String,
    /// The removal finding, reused for the update.
    first: Finding,
    restored: Option<(String, i64)>,
    pods_removed: BTreeSet<String>,
    pods_signalled: BTreeSet<String>,
    evidence: Vec<u64>,
}

#[derive(Debug, Default)]
pub struct Detector {
    /// Last known `cgroup.subtree_control` of each cgroup.
    enabled: HashMap<(HostKey, String), BTreeSet<String>>,
    windows: Vec<Window>,
    /// Removals so far per (host, cgroup): how often systemd keeps doing it.
    count: HashMap<(HostKey, String), u32>,
    /// Latest event time seen.
    last: Timestamp,
}

fn is_subtree_control(ev: &Event) -> bool {
    ev.file
        .as_deref()
        .is_some_and(|f| f == "cgroup.subtree_control" || f.ends_with("/cgroup.subtree_control"))
}

/// The `+x`/`-x` tokens of a write to `cgroup.subtree_control` (space separated, cgroup-v2.rst).
fn tokens(value: &str) -> impl Iterator<Item = (bool, &str)> {
    value
        .split(|c: char| c.is_whitespace() || c == '\0')
        .filter_map(|t| {
            t.strip_prefix('+').map(|n| (true, n)).or_else(|| t.strip_prefix('-').map(|n| (false, n)))
        })
        .filter(|(_, n)| !n.is_empty())
}

/// A signal that ends or is meant to end a process.
fn terminating(ev: &Event) -> bool {
    let name = ev.signal.as_deref().unwrap_or("");
    let name = name.strip_prefix("SIG").unwrap_or(name);
    if name.is_empty() {
        return ev.signo.is_some_and(|s| matches!(s, 1 | 2 | 3 | 6 | 9 | 15));
    }
    !ROUTINE_SIGNALS.contains(&name)
}

impl Detector {
    pub fn observe(&mut self, ev: &Event, out: &mut Vec<Finding>) {
        self.last = self.last.max(ev.time);
        self.expire(ev.time, out);
        match ev.kind {
            Kind::CgroupWrite if is_subtree_control(ev) => self.write(ev, out),
            Kind::CgroupRmdir => {
                let Some(cg) = ev.cgroup.as_deref() else {
                    return;
                };
                let Some(k) = kube::kube_path(cg) else { return };
                self.enabled.remove(&(ev.host.clone(), cg.to_string()));
                self.count.remove(&(ev.host.clone(), cg.to_string()));
                if k.level != Level::Pod {
                    return;
                }
                let uid = k.pod_uid.unwrap_or_else(|| cg.to_string());
                for w in self.windows.iter_mut().filter(|w| w.host == ev.host && kube::under(cg, &w.cgroup)) {
                    w.pods_removed.insert(uid.clone());
                    w.evidence.push(ev.seq);
                }
            }
            Kind::Signal if terminating(ev) => {
                let Some(cg) = ev.target_cgroup.as_deref() else {
                    return;
                };
                let Some(k) = kube::kube_path(cg) else { return };
                let pod = k.pod_uid.unwrap_or_else(|| cg.to_string());
                for w in self.windows.iter_mut().filter(|w| w.host == ev.host && kube::under(cg, &w.cgroup)) {
                    w.pods_signalled.insert(pod.clone());
                    w.evidence.push(ev.seq);
                }
            }
            _ => {}
        }
    }

    fn write(&mut self, ev: &Event, out: &mut Vec<Finding>) {
        let Some(cg) = ev.cgroup.as_deref() else {
            return;
        };
        let Some(k) = kube::kube_path(cg) else { return };
        let key = (ev.host.clone(), cg.to_string());
        let failed = ev.result.is_some_and(|r| r < 0);

        // What the write removed and added. The kernel's lists (entry and exit of the
        // syscall) are the truth when present; otherwise the written tokens of a write that
        // did not fail, minus the controllers we know were not enabled (`-pids` when pids
        // was off is a no-op).
        // Two empty lists on a kubepods cgroup mean the kernel could not read them (kubelet
        // always enables controllers there): the written value decides then.
        let lists = match (&ev.controllers_before, &ev.controllers_after) {
            (Some(b), Some(a)) if b.is_empty() && a.is_empty() => (None, None),
            (b, a) => (b.as_ref(), a.as_ref()),
        };
        let known = lists
            .0
            .map(|b| b.iter().cloned().collect::<BTreeSet<_>>())
            .or_else(|| self.enabled.get(&key).cloned());
        let (removed, added): (Vec<String>, Vec<String>) = match lists {
            (Some(before), Some(after)) => (
                before.iter().filter(|c| !after.contains(c)).cloned().collect(),
                after.iter().filter(|c| !before.contains(c)).cloned().collect(),
            ),
            _ if failed => (Vec::new(), Vec::new()),
            _ => {
                let value = ev.value.as_deref().unwrap_or("");
                let mut removed = Vec::new();
                let mut added = Vec::new();
                for (plus, name) in tokens(value) {
                    let on = known.as_ref().map(|k| k.contains(name));
                    match (plus, on) {
                        (false, Some(false)) | (true, Some(true)) => {} // no-op
                        (false, _) => removed.push(name.to_string()),
                        (true, _) => added.push(name.to_string()),
                    }
                }
                (removed, added)
            }
        };

        // Keep the cgroup's state current.
        if let Some(after) = lists.1 {
            self.enabled.insert(key.clone(), after.iter().cloned().collect());
        } else if let Some(mut state) = known.filter(|_| !failed) {
            for c in &removed {
                state.remove(c);
            }
            state.extend(added.iter().cloned());
            self.enabled.insert(key.clone(), state);
        }

        // A restore closes nothing (kills can follow it) but is recorded once.
        for w in
            self.windows.iter_mut().filter(|w| w.host == ev.host && w.cgroup == cg && w.restored.is_none())
        {
            if w.controllers.iter().any(|c| added.contains(c)) {
                let ms = (ev.time.0 - w.removed_at.0) / 1_000_000;
                w.restored = Some((who(ev), ms));
                w.evidence.push(ev.seq);
            }
        }

        let removed: Vec<String> = removed.into_iter().filter(|c| REQUIRED.contains(&c.as_str())).collect();
        if removed.is_empty() || k.level == Level::Container || made_by(ev, &["kubelet"]) {
            return;
        }
        let n = self.count.entry(key).or_default();
        *n += 1;
        let level = match k.level {
            Level::Root => "kubepods root",
            Level::Qos => "QoS",
            _ => "pod",
        };
        let list = removed.join(", ");
        let mut f = finding(
            ID,
            Severity::Critical,
            ev,
            format!(
                "{} removed {list} from cgroup.subtree_control of {level} cgroup {cg}: kubelet will find the \
                 controller missing and kill the pods below it",
                who(ev)
            ),
            REMEDIATION,
        );
        f.controller = Some(removed.join(","));
        f.cgroup = Some(cg.to_string());
        f.value = ev.value.clone();
        attribution(&mut f, ev);
        f.details.insert("phase".into(), "removed".into());
        f.details.insert("controllers".into(), removed.clone().into());
        f.details.insert("level".into(), level.into());
        f.details.insert("occurrence".into(), (*n).into());
        if let Some(uid) = &k.pod_uid {
            f.details.insert("pod_uid".into(), uid.clone().into());
        }
        if lists.0.is_none() {
            f.details.insert("inferred_from".into(), "written value".into());
        }
        f.details.insert("window_s".into(), (WINDOW_NS / 1_000_000_000).into());
        out.push(f.clone());
        self.windows.push(Window {
            host: ev.host.clone(),
            cgroup: cg.to_string(),
            controllers: removed,
            removed_at: ev.time,
            deadline: Timestamp(ev.time.0.saturating_add(WINDOW_NS)),
            actor: who(ev),
            first: f,
            restored: None,
            pods_removed: BTreeSet::new(),
            pods_signalled: BTreeSet::new(),
            evidence: vec![ev.seq],
        });
    }

    fn expire(&mut self, now: Timestamp, out: &mut Vec<Finding>) {
        let mut i = 0;
        while i < self.windows.len() {
            if self.windows[i].deadline <= now {
                let w = self.windows.remove(i);
                let t = w.deadline;
                close(w, t, out);
            } else {
                i += 1;
            }
        }
    }

    pub fn tick(&mut self, now: Timestamp, out: &mut Vec<Finding>) {
        self.expire(now, out);
    }

    pub fn finish(&mut self, out: &mut Vec<Finding>) {
        for w in std::mem::take(&mut self.windows) {
            let t = w.deadline.min(self.last.max(w.removed_at));
            close(w, t, out);
        }
    }
}

/// The follow-up finding of a window, when anything happened in it.
fn close(w: Window, time: Timestamp, out: &mut Vec<Finding>) {
    if w.restored.is_none() && w.pods_removed.is_empty() && w.pods_signalled.is_empty() {
        return;
    }
    let mut f = w.first;
    f.time = time;
    f.evidence = w.evidence;
    f.details.insert("phase".into(), "window_closed".into());
    let mut parts = Vec::new();
    match &w.restored {
        Some((by, ms)) => {
            f.details.insert("restored_by".into(), by.clone().into());
            f.details.insert("restored_after_ms".into(), (*ms).into());
            parts.push(format!("{by} restored it after {:.1} s", *ms as f64 / 1000.0));
        }
        None => parts.push(format!("not restored within {} s", WINDOW_NS / 1_000_000_000)),
    }
    if !w.pods_removed.is_empty() {
        parts.push(format!("{} pod cgroup(s) removed", w.pods_removed.len()));
    }
    if !w.pods_signalled.is_empty() {
        parts.push(format!("{} pod(s) signalled", w.pods_signalled.len()));
    }
    f.details.insert("pods_removed".into(), w.pods_removed.into_iter().collect::<Vec<_>>().into());
    f.details.insert("pods_signalled".into(), w.pods_signalled.into_iter().collect::<Vec<_>>().into());
    f.summary =
        format!("{} removed {} from {}; {}", w.actor, w.controllers.join(", "), w.cgroup, parts.join(", "));
    out.push(f);
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    const QOS: &str = "/kubepods.slice/kubepods-burstable.slice";
    const POD: &str = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0d4c2c8e_4a6b_4b8e_9d4c_2c8e4a6b4b8e.slice";
    const UID: &str = "0d4c2c8e-4a6b-4b8e-9d4c-2c8e4a6b4b8e";

    fn removals(f: &[Finding]) -> Vec<&Finding> {
        f.iter().filter(|f| f.id == ID && f.details["phase"] == "removed").collect()
    }

    #[test]
    fn systemd_drops_cpuset_then_kubelet_kills_and_restores() {
        let f = run(vec![
            cg_write("systemd", QOS, "-cpuset")
                .controllers("cpuset cpu memory pids", "cpu memory pids")
                .at(0.0),
            ev(Kind::Signal, "containerd-shim")
                .signal("SIGKILL", &format!("{POD}/cri-containerd-abc.scope"))
                .at(1.0),
            ev(Kind::CgroupRmdir, "containerd").cgroup(&format!("{POD}/cri-containerd-abc.scope")).at(1.5),
            ev(Kind::CgroupRmdir, "kubelet").cgroup(POD).at(2.0),
            cg_write("kubelet", QOS, "+cpuset")
                .controllers("cpu memory pids", "cpuset cpu memory pids")
                .at(4.25),
            ev(Kind::Signal, "containerd-shim").signal("SIGCHLD", &format!("{POD}/x.scope")).at(5.0),
            ev(Kind::CgroupMkdir, "kubelet").cgroup("/kubepods.slice").at(61.0),
        ]);
        assert_eq!(ids(&f), vec![ID, ID], "{f:#?}");
        let (first, upd) = (&f[0], &f[1]);
        assert_eq!(first.severity, Severity::Critical);
        assert_eq!(
            (first.actor.as_str(), first.controller.as_deref(), first.cgroup.as_deref()),
            ("systemd", Some("cpuset"), Some(QOS))
        );
        assert_eq!(first.evidence, vec![1]);
        assert!(first.summary.starts_with("systemd removed cpuset"), "{}", first.summary);
        assert!(
            first.remediation.contains("SystemdCgroup = true")
                && first.remediation.contains("cgroupDriver: systemd")
        );
        assert_eq!(upd.details["phase"], "window_closed");
        assert_eq!(upd.details["restored_by"], "kubelet");
        assert_eq!(upd.details["restored_after_ms"], 4250);
        assert_eq!(upd.details["pods_removed"], serde_json::json!([UID]));
        assert_eq!(upd.details["pods_signalled"], serde_json::json!([UID]));
        assert_eq!(upd.evidence, vec![1, 2, 4, 5]);
    }

    #[test]
    fn any_required_controller_at_any_kube_level_counts() {
        for (cg, v) in
            [("/kubepods.slice", "-pids"), (POD, "-memory"), ("/kubepods/besteffort", "+cpu -hugetlb\n")]
        {
            let f = run(vec![cg_write("systemd", cg, v)]);
            assert_eq!(removals(&f).len(), 1, "{cg} {v}: {f:#?}");
        }
        // Someone else than systemd: still a finding, named.
        let f = run(vec![cg_write("runc", POD, "-cpu").behalf("containerd")]);
        assert!(f[0].summary.starts_with("runc (for containerd) removed cpu"), "{}", f[0].summary);
    }

    #[test]
    fn noop_and_failed_writes_are_not_findings() {
        // -pids when pids was not enabled: the kernel's lists say nothing changed.
        let f =
            run(
                vec![cg_write("systemd", QOS, "-pids").controllers("cpu cpuset memory", "cpu cpuset memory")],
            );
        assert!(f.is_empty(), "{f:#?}");
        // Lists the kernel could not read (both empty): the value decides.
        let f = run(vec![cg_write("systemd", QOS, "-cpuset").controllers("", "")]);
        assert_eq!(removals(&f).len(), 1);
        assert_eq!(f[0].details["inferred_from"], "written value");
        // No lists (v1-era recording): failed write.
        assert!(run(vec![cg_write("systemd", QOS, "-cpuset").result(-22)]).is_empty());
        // No lists, but an earlier event told us pids was off.
        let f = run(vec![
            cg_write("kubelet", QOS, "+cpu").controllers("cpuset memory", "cpu cpuset memory"),
            cg_write("systemd", QOS, "-pids").no_result(),
        ]);
        assert!(f.is_empty(), "{f:#?}");
    }

    #[test]
    fn kubelet_unrelated_cgroups_and_other_controllers_are_not_findings() {
        assert!(run(vec![cg_write("kubelet", QOS, "-cpuset")]).is_empty());
        assert!(run(vec![cg_write("systemd", "/system.slice", "-cpuset")]).is_empty());
        assert!(run(vec![cg_write("systemd", QOS, "-io -rdma")]).is_empty());
        assert!(run(vec![cg_write("systemd", QOS, "+cpuset")]).is_empty());
        assert!(
            run(vec![cg_write("systemd", &format!("{POD}/cri-containerd-abc.scope"), "-cpuset")]).is_empty()
        );
        assert!(run(vec![cg_write("systemd", QOS, "-cpuset").file("cpuset.cpus")]).is_empty());
    }

    #[test]
    fn quiet_window_gives_one_finding_and_windows_close_on_tick() {
        let f = run(vec![cg_write("systemd", QOS, "-cpuset")]);
        assert_eq!(f.len(), 1);
        let mut d = Detector::default();
        let mut out = Vec::new();
        let mut e = cg_write("systemd", QOS, "-cpuset").at(0.0).seq(1).0;
        d.observe(&e, &mut out);
        e = cg_write("kubelet", QOS, "+cpuset").at(3.0).seq(2).0;
        d.observe(&e, &mut out);
        d.tick(at(30.0), &mut out);
        assert_eq!(out.len(), 1);
        d.tick(at(60.0), &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].details["restored_after_ms"], 3000);
    }

    #[test]
    fn pods_elsewhere_and_other_hosts_are_not_counted() {
        let other = "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod11111111_2222_3333_4444_555555555555.slice";
        let f = run(vec![
            cg_write("systemd", QOS, "-cpuset").host("a"),
            ev(Kind::CgroupRmdir, "kubelet").cgroup(other).host("a"),
            ev(Kind::CgroupRmdir, "kubelet").cgroup(POD).host("b"),
        ]);
        assert_eq!(f.len(), 1, "{f:#?}");
    }
}
