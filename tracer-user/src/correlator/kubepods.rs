//! `kubepods-controller-removed`: a controller kubelet requires disappears from
//! `cgroup.subtree_control` of a cgroup kubelet validates (incident 1: systemd realizing
//! a unit it does not own drops `cpuset`; kubelet's `Validate()` then fails and it kills
//! the pod).
//!
//! What counts, as the real systemd 252 as PID 1 requires (seen in the VM suite):
//! - **A removal is a controller the kernel had enabled and no longer has.** systemd
//!   writes `-cpu`, `-cpuset`, `-io`, `-memory`, `-pids` one by one into the
//!   `subtree_control` of every cgroup it realizes, including the still empty one of a
//!   slice it just created: those writes remove nothing and are no finding. The kernel's
//!   masks before and after the write decide; only a recording without them falls back
//!   to the written tokens minus what is known to be off. A write that failed (`EBUSY`:
//!   a child still has the controller, systemd then retries bottom-up) removed nothing.
//! - **The cgroups that count** are the ones kubelet validates (the kubepods root, QoS
//!   and pod cgroups, any pod uid form; not a `.service` of systemd's own below a QoS
//!   slice, not containers) and every ancestor of a kubepods cgroup seen on the host, the
//!   cgroup2 root included: removing `cpuset` there takes it from `kubepods.slice` and so
//!   from every pod.
//! - **Only what reaches a running pod.** Every cgroup below loses the controller with
//!   the one it was taken from. When the last container of a pod goes, systemd trims what
//!   no unit below needs any more (the pod slice's controllers, `cpuset` from the QoS
//!   slice and `kubepods.slice`: seen in the VM suite with the real containerd on the
//!   systemd driver); nothing that runs loses anything, and kubelet enables what it
//!   requires again on the path of the next pod it makes. So a burst is a finding only if
//!   one of its removals had a running pod below (the event's `below`, read by
//!   pipeline/below.rs just after the write), or, at a pod cgroup, a process in the pod's
//!   containers. A pod of the driver mismatch runs outside its slice and still counts.
//!   Without `below` (an older recording, an unreadable tree) a removal counts.
//! - **One finding per incident**: the burst of one actor (same process, writes less
//!   than [`BURST_GAP_NS`] apart). It names every cgroup and controller the burst took,
//!   and carries every `subtree_control` write of the burst to the cgroups that count as
//!   evidence. It is emitted when the burst ends (the next tick after the gap, or the end
//!   of the stream).
//!
//! Follow-up: the removal opens a window of [`WINDOW_NS`]; when it closes, a second
//! finding with the same id and `details.phase = "window_closed"` follows **if anything
//! happened in it**: who wrote a controller back and after how long (`restored_by`,
//! `restored_after_ms`), the pods below whose cgroups were removed (`pods_removed`) or
//! whose processes were sent a terminating signal (`pods_signalled`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::kube::{self, Level};
use super::Detector;
use super::{attribution, finding, made_by, who, HostKey};
use crate::stream::schema::{Event, Finding, Kind, Severity, Timestamp};

pub const ID: &str = "kubepods-controller-removed";

/// kubelet requires every supported unified controller (kubernetes
/// pkg/kubelet/cm/cgroup_manager_linux.go, `getSupportedUnifiedControllers`).
pub const REQUIRED: &[&str] = &["cpu", "cpuset", "memory", "hugetlb", "pids"];

/// How long after a removal its consequences are collected.
pub const WINDOW_NS: i64 = 60_000_000_000;

/// Writes of one actor closer than this are one burst (systemd realizes a whole slice
/// tree in milliseconds; kubelet's next SetUnitProperties is a minute away).
pub const BURST_GAP_NS: i64 = 1_000_000_000;

/// Kubepods cgroups remembered per host (a node runs at most a few hundred pods, each
/// with a handful of cgroups).
const MAX_KUBE_CGROUPS: usize = 16_384;

/// Evidence kept per incident (a `daemon-reload` on a busy node writes thousands).
const MAX_EVIDENCE: usize = 1024;

pub const REMEDIATION: &str = "kubelet and the container runtime disagree on the cgroup driver, \
so systemd manages slices kubelet created and rewrites their cgroup.subtree_control. \
Use the systemd driver on both: in /etc/containerd/config.toml set `SystemdCgroup = true` under \
[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options] and restart containerd; \
set `cgroupDriver: systemd` in the kubelet configuration and restart kubelet (drain the node first).";

/// One actor's burst of removals, then its follow-up window.
#[derive(Debug)]
struct Incident {
    host: HostKey,
    /// (pid, start time) of the writer: one burst is one process's.
    writer: (u32, u64),
    actor: String,
    /// The first write of the burst: the finding's attribution.
    first_event: Event,
    first_removal: Timestamp,
    last_write: Timestamp,
    /// Cgroup -> controllers the burst took from it.
    removed: BTreeMap<String, BTreeSet<String>>,
    evidence: Vec<u64>,
    /// Set once the removal finding is out.
    emitted: Option<Finding>,
    restored: Option<(String, i64)>,
    /// A removal of the burst reached a running pod (or did not say what was below).
    reaches_running: bool,
    /// The running pods below the burst's removals, as the events listed them.
    running_pods: BTreeSet<String>,
    /// Whether any removal said what was below (the summary then counts the pods).
    looked_below: bool,
    /// The burst ended with nothing running below: no finding, dropped.
    spared: bool,
    pods_removed: BTreeSet<String>,
    pods_signalled: BTreeSet<String>,
    followup_evidence: Vec<u64>,
}

#[derive(Debug, Default)]
pub struct ControllerRemoved {
    /// Last known `cgroup.subtree_control` of each cgroup.
    enabled: HashMap<(HostKey, String), BTreeSet<String>>,
    /// Kubepods cgroups seen per host (written, created, signalled into): their
    /// ancestors count too.
    kube_cgroups: HashMap<HostKey, HashSet<String>>,
    incidents: Vec<Incident>,
    /// Incidents so far per host: how often it keeps happening.
    count: HashMap<HostKey, u32>,
    /// Latest event time seen.
    last: Timestamp,
}

pub(crate) fn is_subtree_control(ev: &Event) -> bool {
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

/// A signal that ends or is meant to end a process (`tracer_common::signals`, the list
/// the kernel program keeps; by number, or by name in recordings).
fn terminating(ev: &Event) -> bool {
    let by_name = ev.signal.as_deref().and_then(|n| {
        let n = if n.starts_with("SIG") { n.to_string() } else { format!("SIG{n}") };
        tracer_common::signals::KEPT.iter().find(|s| s.name == n)
    });
    by_name.or_else(|| ev.signo.and_then(tracer_common::signals::info)).is_some_and(|s| s.terminating)
}

/// Whether a removal from `level`'s `subtree_control` reached something that runs: a
/// running pod below it, or at a pod cgroup a process in its containers. Unknown counts.
fn reaches_running(ev: &Event, level: &str) -> bool {
    match ev.below.as_deref() {
        None => true,
        Some(b) => b.partial || b.running > 0 || (level == "pod" && b.populated),
    }
}

/// What a `subtree_control` write removed and added: from the kernel's masks when the
/// event has them, else from the written tokens minus what `known` says was already so.
pub(crate) fn delta(ev: &Event, known: Option<&BTreeSet<String>>) -> (Vec<String>, Vec<String>) {
    if ev.result.is_some_and(|r| r < 0) {
        return (Vec::new(), Vec::new());
    }
    if let (Some(before), Some(after)) = (&ev.controllers_before, &ev.controllers_after) {
        return (
            before.iter().filter(|c| !after.contains(c)).cloned().collect(),
            after.iter().filter(|c| !before.contains(c)).cloned().collect(),
        );
    }
    let before = ev.controllers_before.as_ref().map(|b| b.iter().cloned().collect::<BTreeSet<_>>());
    let known = before.as_ref().or(known);
    let mut removed = Vec::new();
    let mut added = Vec::new();
    for (plus, name) in tokens(ev.value.as_deref().unwrap_or("")) {
        match (plus, known.map(|k| k.contains(name))) {
            (false, Some(false)) | (true, Some(true)) => {} // no-op
            (false, _) => removed.push(name.to_string()),
            (true, _) => added.push(name.to_string()),
        }
    }
    (removed, added)
}

impl Detector for ControllerRemoved {
    fn observe(&mut self, ev: &Event, out: &mut Vec<Finding>) {
        self.last = self.last.max(ev.time);
        self.expire(ev.time, out);
        for p in ev.cgroup.iter().chain(ev.target_cgroup.iter()) {
            if kube::in_kubepods(p) && ev.kind != Kind::CgroupRmdir {
                let set = self.kube_cgroups.entry(ev.host.clone()).or_default();
                // Bounded: a missed rmdir must not grow it forever; starting over only
                // forgets ancestors until the next kubepods event names them again.
                if set.len() >= MAX_KUBE_CGROUPS && !set.contains(p) {
                    set.clear();
                }
                set.insert(p.clone());
            }
        }
        match ev.kind {
            Kind::CgroupWrite if is_subtree_control(ev) => self.write(ev),
            Kind::CgroupRmdir => {
                let Some(cg) = ev.cgroup.as_deref() else { return };
                self.enabled.remove(&(ev.host.clone(), cg.to_string()));
                if let Some(set) = self.kube_cgroups.get_mut(&ev.host) {
                    set.remove(cg);
                }
                let Some(k) = kube::kube_path(cg) else { return };
                if k.level != Level::Pod {
                    return;
                }
                let uid = k.pod_uid.unwrap_or_else(|| cg.to_string());
                for i in self.incidents.iter_mut().filter(|i| i.host == ev.host && i.covers(cg)) {
                    i.pods_removed.insert(uid.clone());
                    i.followup_evidence.push(ev.seq);
                }
            }
            Kind::Signal if terminating(ev) => {
                let Some(cg) = ev.target_cgroup.as_deref() else { return };
                // A pod's process is in its pod cgroup, or (the driver mismatch) in a
                // container cgroup outside kubepods that names the pod: then the pod
                // slice of that uid is what the incident must cover.
                let (pod, at) = match kube::kube_path(cg) {
                    Some(k) => (k.pod_uid.unwrap_or_else(|| cg.to_string()), cg.to_string()),
                    None => {
                        let Some((Some(uid), _, _)) = kube::outside_container(cg) else { return };
                        let slice = self.kube_cgroups.get(&ev.host).and_then(|set| {
                            set.iter()
                                .find(|p| {
                                    kube::kube_path(p).is_some_and(|k| k.pod_uid.as_deref() == Some(&uid))
                                })
                                .cloned()
                        });
                        let Some(slice) = slice else { return };
                        (uid, slice)
                    }
                };
                let cg = at.as_str();
                for i in self.incidents.iter_mut().filter(|i| i.host == ev.host && i.covers(cg)) {
                    i.pods_signalled.insert(pod.clone());
                    i.followup_evidence.push(ev.seq);
                }
            }
            _ => {}
        }
    }

    fn tick(&mut self, now: Timestamp, out: &mut Vec<Finding>) {
        self.expire(now, out);
    }

    fn finish(&mut self, out: &mut Vec<Finding>) {
        for n in 0..self.incidents.len() {
            if self.incidents[n].emitted.is_none() {
                self.emit(n, out);
            }
        }
        let last = self.last;
        for i in std::mem::take(&mut self.incidents) {
            let t = i.deadline().min(last.max(i.first_removal));
            close(i, t, out);
        }
    }
}

impl ControllerRemoved {
    /// Whether kubelet depends on this cgroup's `subtree_control`: one it validates, or an
    /// ancestor of a kubepods cgroup seen on the host (the cgroup2 root included).
    fn counts(&self, host: &HostKey, cg: &str) -> Option<&'static str> {
        match kube::kube_path(cg).map(|k| k.level) {
            Some(Level::Root) => return Some("kubepods root"),
            Some(Level::Qos) => return Some("QoS"),
            Some(Level::Pod) => return Some("pod"),
            Some(Level::Container) => return None,
            None => {}
        }
        let below = self.kube_cgroups.get(host)?.iter().any(|k| k != cg && kube::under(k, cg));
        below.then_some(if cg == "/" || cg.is_empty() { "cgroup2 root" } else { "ancestor of kubepods" })
    }

    fn write(&mut self, ev: &Event) {
        let Some(cg) = ev.cgroup.as_deref() else { return };
        let key = (ev.host.clone(), cg.to_string());
        let (removed, added) = delta(ev, self.enabled.get(&key));

        // Keep the cgroup's state current.
        if let Some(after) = &ev.controllers_after {
            self.enabled.insert(key.clone(), after.iter().cloned().collect());
        } else if ev.result.is_none_or(|r| r >= 0) {
            let base = ev
                .controllers_before
                .as_ref()
                .map(|b| b.iter().cloned().collect())
                .or_else(|| self.enabled.get(&key).cloned());
            if let Some(mut state) = base {
                for c in &removed {
                    state.remove(c);
                }
                state.extend(added.iter().cloned());
                self.enabled.insert(key.clone(), state);
            }
        }

        let Some(level) = self.counts(&ev.host, cg) else { return };
        // A restore: a later write that puts back a controller an incident took here.
        for i in self.incidents.iter_mut().filter(|i| i.host == ev.host && i.restored.is_none()) {
            if i.removed.get(cg).is_some_and(|r| r.iter().any(|c| added.contains(c))) {
                let ms = (ev.time.0 - i.first_removal.0) / 1_000_000;
                i.restored = Some((who(ev), ms));
                i.followup_evidence.push(ev.seq);
            }
        }
        if made_by(ev, &["kubelet"]) {
            return;
        }
        let writer = (ev.pid, ev.start_ns);
        let removed: Vec<String> = removed.into_iter().filter(|c| REQUIRED.contains(&c.as_str())).collect();
        let reaches = !removed.is_empty() && reaches_running(ev, level);
        let running: Vec<String> = match ev.below.as_deref() {
            Some(b) if !removed.is_empty() => b.running_pods.clone(),
            _ => Vec::new(),
        };
        let looked = !removed.is_empty() && ev.below.is_some();
        let open = self.incidents.iter().position(|i| {
            i.host == ev.host
                && i.writer == writer
                && i.emitted.is_none()
                && ev.time.0 - i.last_write.0 < BURST_GAP_NS
        });
        match open {
            Some(n) => {
                let i = &mut self.incidents[n];
                i.last_write = ev.time;
                if i.evidence.len() < MAX_EVIDENCE {
                    i.evidence.push(ev.seq);
                }
                if !removed.is_empty() {
                    i.removed.entry(cg.to_string()).or_default().extend(removed);
                }
                i.reaches_running |= reaches;
                i.looked_below |= looked;
                i.running_pods.extend(running);
            }
            None if !removed.is_empty() => self.incidents.push(Incident {
                host: ev.host.clone(),
                writer,
                actor: who(ev),
                first_event: ev.clone(),
                first_removal: ev.time,
                last_write: ev.time,
                removed: BTreeMap::from([(cg.to_string(), removed.into_iter().collect())]),
                evidence: vec![ev.seq],
                emitted: None,
                restored: None,
                reaches_running: reaches,
                running_pods: running.into_iter().collect(),
                looked_below: looked,
                spared: false,
                pods_removed: BTreeSet::new(),
                pods_signalled: BTreeSet::new(),
                followup_evidence: Vec::new(),
            }),
            None => {}
        }
    }

    /// Emits bursts that ended and closes windows that ran out by `now`.
    fn expire(&mut self, now: Timestamp, out: &mut Vec<Finding>) {
        for n in 0..self.incidents.len() {
            if self.incidents[n].emitted.is_none() && now.0 - self.incidents[n].last_write.0 >= BURST_GAP_NS {
                self.emit(n, out);
            }
        }
        self.incidents.retain(|i| !i.spared);
        let mut i = 0;
        while i < self.incidents.len() {
            let inc = &self.incidents[i];
            if inc.emitted.is_some() && inc.deadline() <= now {
                let inc = self.incidents.remove(i);
                let t = inc.deadline();
                close(inc, t, out);
            } else {
                i += 1;
            }
        }
    }

    fn emit(&mut self, n: usize, out: &mut Vec<Finding>) {
        if !self.incidents[n].reaches_running {
            let i = &mut self.incidents[n];
            tracing::debug!(
                "{} removed controllers from {:?} with no running pod below: not a finding",
                i.actor,
                i.removed.keys().collect::<Vec<_>>()
            );
            i.spared = true;
            return;
        }
        let count = {
            let c = self.count.entry(self.incidents[n].host.clone()).or_default();
            *c += 1;
            *c
        };
        let levels: Vec<(String, &'static str)> = self.incidents[n]
            .removed
            .keys()
            .map(|cg| (cg.clone(), self.counts(&self.incidents[n].host, cg).unwrap_or("kubepods")))
            .collect();
        let i = &mut self.incidents[n];
        let ev = &i.first_event;
        let controllers: BTreeSet<&str> = i.removed.values().flatten().map(String::as_str).collect();
        let list = controllers.iter().copied().collect::<Vec<_>>().join(", ");
        // Top-most cgroup first: that is where the damage reaches furthest.
        let mut cgroups: Vec<(&String, &BTreeSet<String>)> = i.removed.iter().collect();
        cgroups.sort_by_key(|(cg, _)| (cg.matches('/').count(), (*cg).clone()));
        let named = cgroups
            .iter()
            .map(|(cg, cs)| {
                let level = levels.iter().find(|(c, _)| c == *cg).map(|(_, l)| *l).unwrap_or("kubepods");
                format!("{cg} ({level}: -{})", cs.iter().cloned().collect::<Vec<_>>().join(" -"))
            })
            .collect::<Vec<_>>()
            .join(", ");
        let n_cg = cgroups.len();
        let plural = if controllers.len() == 1 { "" } else { "s" };
        let consequence = if i.looked_below && !i.running_pods.is_empty() {
            let n = i.running_pods.len();
            format!(
                "{n} running pod{} below lose{} it: kubelet will find the controller{plural} missing and kill {}",
                if n == 1 { "" } else { "s" },
                if n == 1 { "s" } else { "" },
                if n == 1 { "it" } else { "them" },
            )
        } else {
            format!("kubelet will find the controller{plural} missing and kill the pods below")
        };
        let mut f = finding(
            ID,
            Severity::Critical,
            ev,
            format!(
                "{} removed {list} from cgroup.subtree_control of {n_cg} cgroup{} kubelet depends on: {named}; {consequence}",
                i.actor,
                if n_cg == 1 { "" } else { "s" },
            ),
            REMEDIATION,
        );
        f.time = i.last_write;
        f.actor = super::actor(ev);
        f.evidence = i.evidence.clone();
        f.controller = Some(controllers.iter().copied().collect::<Vec<_>>().join(","));
        f.cgroup = cgroups.first().map(|(cg, _)| (*cg).clone());
        attribution(&mut f, ev);
        f.details.insert("phase".into(), "removed".into());
        f.details.insert("controllers".into(), controllers.iter().copied().collect::<Vec<_>>().into());
        f.details.insert(
            "cgroups".into(),
            cgroups
                .iter()
                .map(|(cg, cs)| {
                    let level = levels.iter().find(|(c, _)| c == *cg).map(|(_, l)| *l).unwrap_or("kubepods");
                    let pod_uid = kube::kube_path(cg).and_then(|k| k.pod_uid);
                    serde_json::json!({"cgroup": cg, "level": level, "controllers": cs, "pod_uid": pod_uid})
                })
                .collect::<Vec<_>>()
                .into(),
        );
        if let Some(level) = cgroups.first().and_then(|(cg, _)| levels.iter().find(|(c, _)| c == *cg)) {
            f.details.insert("level".into(), level.1.into());
        }
        f.details.insert("writes".into(), i.evidence.len().into());
        if i.looked_below {
            f.details
                .insert("running_pods".into(), i.running_pods.iter().cloned().collect::<Vec<_>>().into());
        }
        f.details.insert("occurrence".into(), count.into());
        if ev.controllers_before.is_none() {
            f.details.insert("inferred_from".into(), "written value".into());
        }
        f.details.insert("window_s".into(), (WINDOW_NS / 1_000_000_000).into());
        out.push(f.clone());
        i.emitted = Some(f);
    }
}

impl Incident {
    fn deadline(&self) -> Timestamp {
        Timestamp(self.first_removal.0.saturating_add(WINDOW_NS))
    }

    /// `cg` is at or below a cgroup this incident took a controller from.
    fn covers(&self, cg: &str) -> bool {
        self.removed.keys().any(|r| kube::under(cg, r))
    }
}

/// The follow-up finding of a window, when anything happened in it.
fn close(i: Incident, time: Timestamp, out: &mut Vec<Finding>) {
    if i.restored.is_none() && i.pods_removed.is_empty() && i.pods_signalled.is_empty() {
        return;
    }
    let Some(mut f) = i.emitted else { return };
    f.time = time;
    f.evidence = i.evidence.iter().take(1).chain(&i.followup_evidence).copied().collect();
    f.details.insert("phase".into(), "window_closed".into());
    let mut parts = Vec::new();
    match &i.restored {
        Some((by, ms)) => {
            f.details.insert("restored_by".into(), by.clone().into());
            f.details.insert("restored_after_ms".into(), (*ms).into());
            parts.push(format!("{by} restored it after {:.1} s", *ms as f64 / 1000.0));
        }
        None => parts.push(format!("not restored within {} s", WINDOW_NS / 1_000_000_000)),
    }
    if !i.pods_removed.is_empty() {
        parts.push(format!("{} pod cgroup(s) removed", i.pods_removed.len()));
    }
    if !i.pods_signalled.is_empty() {
        parts.push(format!("{} pod(s) signalled", i.pods_signalled.len()));
    }
    f.details.insert("pods_removed".into(), i.pods_removed.into_iter().collect::<Vec<_>>().into());
    f.details.insert("pods_signalled".into(), i.pods_signalled.into_iter().collect::<Vec<_>>().into());
    let controllers: BTreeSet<&String> = i.removed.values().flatten().collect();
    f.summary = format!(
        "{} removed {} from {}; {}",
        i.actor,
        controllers.into_iter().cloned().collect::<Vec<_>>().join(", "),
        i.removed.keys().cloned().collect::<Vec<_>>().join(", "),
        parts.join(", ")
    );
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

    /// systemd 252's trim when the last container of the last pod of a QoS class goes
    /// (as the VM suite saw it, bottom-up): the pod slice's controllers, then cpuset from
    /// the QoS slice and kubepods.slice. Nothing that runs is below: no finding.
    #[test]
    fn the_trim_after_the_last_pod_goes_is_not_a_finding() {
        let f = run(vec![
            cg_write("systemd", POD, "-cpu")
                .controllers("cpu cpuset memory pids", "cpuset memory pids")
                .below(0, &[], false)
                .at(0.0),
            cg_write("systemd", POD, "-cpuset -memory -pids")
                .controllers("cpuset memory pids", "")
                .below(0, &[], false)
                .at(0.001),
            cg_write("systemd", QOS, "-cpuset")
                .controllers("cpu cpuset memory pids", "cpu memory pids")
                .below(1, &[], false)
                .at(0.002),
            cg_write("systemd", "/kubepods.slice", "-cpuset")
                .controllers("cpu cpuset memory pids", "cpu memory pids")
                .below(1, &[], true)
                .at(0.003),
            ev(Kind::CgroupMkdir, "kubelet").cgroup("/kubepods.slice").at(70.0),
        ]);
        assert!(f.is_empty(), "{f:#?}");
    }

    /// The same burst with another pod still running below the QoS slice (or a pod of the
    /// driver mismatch, running outside its slice: pipeline/below.rs counts it running):
    /// one finding, which names the running pod.
    #[test]
    fn a_removal_over_a_running_pod_is_one_finding_naming_it() {
        let f = run(vec![
            cg_write("systemd", POD, "-cpuset")
                .controllers("cpu cpuset memory pids", "cpu memory pids")
                .below(0, &[], false)
                .at(0.0),
            cg_write("systemd", QOS, "-cpuset")
                .controllers("cpu cpuset memory pids", "cpu memory pids")
                .below(2, &["9b1f7c1e-0000-4000-8000-00000000000a"], false)
                .at(0.002),
        ]);
        let r = removals(&f);
        assert_eq!(r.len(), 1, "{f:#?}");
        assert_eq!(r[0].details["running_pods"], serde_json::json!(["9b1f7c1e-0000-4000-8000-00000000000a"]));
        assert!(r[0].summary.contains("1 running pod below loses it"), "{}", r[0].summary);
        // At a pod cgroup, its own containers running is enough.
        let f = run(vec![cg_write("systemd", POD, "-memory")
            .controllers("cpu memory pids", "cpu pids")
            .below(0, &[], true)
            .at(0.0)]);
        assert_eq!(removals(&f).len(), 1, "{f:#?}");
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
        // Two empty lists are an empty subtree_control (a slice systemd just created),
        // not lists the kernel could not read: nothing was removed.
        assert!(run(vec![cg_write("systemd", QOS, "-cpuset").controllers("", "")]).is_empty());
        // No lists at all (the kernel could not read the mask): the value decides.
        let f = run(vec![cg_write("systemd", QOS, "-cpuset")]);
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
        let mut d = ControllerRemoved::default();
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

    /// What the real systemd 252 writes when it realizes a kubepods slice tree it did
    /// not create the controllers of (VM suite): each controller on its own, into every
    /// cgroup, bottom-up, the empty ones included; a removal a child still needs fails
    /// with EBUSY. One burst, one finding, naming every cgroup and controller it took,
    /// with every write as evidence.
    #[test]
    fn one_realize_burst_is_one_finding_naming_every_cgroup() {
        let pod2 = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod11111111_2222_3333_4444_555555555555.slice";
        let all = "cpuset cpu io memory pids";
        let mut evs = Vec::new();
        let mut t = 0.0;
        let mut w = |cg: &str, v: &str, before: &str, after: &str, r: i64| {
            t += 0.001;
            evs.push(cg_write("systemd", cg, v).controllers(before, after).result(r).at(t));
        };
        // A new pod slice systemd just created: empty subtree_control, no-ops.
        for c in ["-cpu", "-cpuset", "-io", "-memory", "-pids"] {
            w(pod2, c, "", "", 4);
        }
        // The pod kubelet had enabled everything in: cpuset and cpu go.
        w(POD, "-cpuset", all, "cpu io memory pids", 8);
        w(POD, "-cpu", "cpu io memory pids", "io memory pids", 5);
        // The QoS slice: cpuset goes once the pod no longer has it; +io is kept.
        w(QOS, "+io", all, all, 4);
        w(QOS, "-cpuset", all, "cpu io memory pids", 8);
        // An EBUSY attempt: nothing removed, still part of the burst's evidence.
        w("/kubepods.slice", "-memory", all, all, -16);
        let f = run(evs);
        let r = removals(&f);
        assert_eq!(r.len(), 1, "{f:#?}");
        let r = r[0];
        assert_eq!(r.actor, "systemd");
        assert_eq!(r.controller.as_deref(), Some("cpu,cpuset"));
        assert_eq!(r.cgroup.as_deref(), Some(QOS), "the top-most cgroup");
        assert_eq!(r.evidence, (6..=10).collect::<Vec<u64>>(), "every write to a cgroup kubelet depends on");
        let cgs = r.details["cgroups"].as_array().unwrap();
        assert_eq!(cgs.len(), 2, "{cgs:#?}");
        assert_eq!(cgs[0]["cgroup"], QOS);
        assert_eq!(cgs[0]["controllers"], serde_json::json!(["cpuset"]));
        assert_eq!(cgs[1]["cgroup"], POD);
        assert_eq!(cgs[1]["controllers"], serde_json::json!(["cpu", "cpuset"]));
        assert_eq!(cgs[1]["pod_uid"], UID);
        assert!(r.summary.contains(&format!("{QOS} (QoS: -cpuset)")), "{}", r.summary);
        assert!(r.summary.contains(&format!("{POD} (pod: -cpu -cpuset)")), "{}", r.summary);
    }

    /// The correct configuration: systemd realizes the slices (every controller written
    /// off in empty subtree_controls, kept where a delegated scope needs it) and removes
    /// nothing: no finding at all.
    #[test]
    fn a_burst_that_removes_nothing_is_no_finding() {
        let all = "cpuset cpu io memory pids";
        let mut evs = Vec::new();
        for (i, cg) in ["/kubepods.slice", QOS, POD].iter().enumerate() {
            for c in ["+cpu", "+cpuset", "+io", "+memory", "+pids"] {
                evs.push(cg_write("systemd", cg, c).controllers(all, all).at(i as f64 * 0.01));
            }
        }
        for c in ["-cpu", "-cpuset", "-io", "-memory", "-pids"] {
            evs.push(cg_write("systemd", &format!("{POD}/cri-containerd-abc.scope"), c).controllers("", ""));
        }
        assert!(run(evs).is_empty());
    }

    /// Removing cpuset at the cgroup2 root takes it from kubepods.slice and every pod:
    /// it counts once kubepods is known on the host; before, the root is any cgroup.
    #[test]
    fn a_removal_at_the_cgroup2_root_counts_once_kubepods_is_known() {
        let f = run(vec![
            ev(Kind::CgroupMkdir, "kubelet").cgroup(QOS).at(0.0),
            cg_write("systemd", "/", "-cpuset")
                .controllers("cpuset cpu memory pids", "cpu memory pids")
                .at(5.0),
        ]);
        let r = removals(&f);
        assert_eq!(r.len(), 1, "{f:#?}");
        assert_eq!(r[0].details["cgroups"][0]["level"], "cgroup2 root");
        assert_eq!(r[0].cgroup.as_deref(), Some("/"));
        // Same write on a node without kubepods: nothing kubelet depends on.
        let f = run(vec![cg_write("systemd", "/", "-cpuset").controllers("cpuset cpu", "cpu")]);
        assert!(f.is_empty(), "{f:#?}");
    }

    /// A unit of systemd's own below a QoS slice is no cgroup kubelet validates.
    #[test]
    fn a_service_below_a_qos_slice_is_not_kubelets() {
        let f = run(vec![cg_write("systemd", &format!("{QOS}/node-exporter.service"), "-cpuset")
            .controllers("cpuset cpu", "cpu")]);
        assert!(f.is_empty(), "{f:#?}");
    }

    /// Two realize runs a minute apart (kubelet's periodic SetUnitProperties) are two
    /// incidents; the second counts as occurrence 2.
    #[test]
    fn bursts_apart_are_separate_incidents() {
        let f = run(vec![
            cg_write("systemd", QOS, "-cpuset").controllers("cpuset cpu", "cpu").at(0.0),
            cg_write("kubelet", QOS, "+cpuset").controllers("cpu", "cpuset cpu").at(4.0),
            cg_write("systemd", QOS, "-cpuset").controllers("cpuset cpu", "cpu").at(60.5),
        ]);
        let r = removals(&f);
        assert_eq!(r.len(), 2, "{f:#?}");
        assert_eq!(r[1].details["occurrence"], 2);
    }
}
