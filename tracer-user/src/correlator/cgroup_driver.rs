//! `cgroup-driver-mismatch`: container cgroups created outside the kubepods tree with a
//! systemd-style name taken literally (`system.slice/kubepods-besteffort-pod<uid>.slice:cri-containerd:<id>`),
//! while kubepods slices exist: containerd's cgroupfs driver under kubelet's systemd
//! driver, the cause behind incident 1.
//!
//! Emitted once per pod (or per parent cgroup when no pod is named), on the mkdir when
//! kubepods was already seen in the stream or the name itself is a kubepods pod slice,
//! else when the first kubepods event arrives.

use std::collections::HashSet;

use super::kube;
use super::kubepods::REMEDIATION;
use super::Detector;
use super::{attribution, finding, who, HostKey};
use crate::stream::schema::{Event, Finding, Kind, Severity};

pub const ID: &str = "cgroup-driver-mismatch";

/// Pending tell-tales kept per host before kubepods is seen.
const MAX_PENDING: usize = 64;

#[derive(Debug, Default)]
pub struct DriverMismatch {
    /// Hosts where kubepods cgroups were seen (written, created, removed, signalled into).
    kubepods_seen: HashSet<HostKey>,
    /// (host, pod or parent) already reported.
    reported: HashSet<(HostKey, String)>,
    /// Tell-tales seen before any kubepods event.
    pending: Vec<Event>,
}

/// Every cgroup path an event names.
fn paths(ev: &Event) -> impl Iterator<Item = &str> {
    ev.cgroup.as_deref().into_iter().chain(ev.target_cgroup.as_deref())
}

impl Detector for DriverMismatch {
    fn observe(&mut self, ev: &Event, out: &mut Vec<Finding>) {
        let first_kube = !self.kubepods_seen.contains(&ev.host) && paths(ev).any(kube::in_kubepods);
        if first_kube && self.kubepods_seen.insert(ev.host.clone()) {
            let (now, later): (Vec<Event>, Vec<Event>) =
                std::mem::take(&mut self.pending).into_iter().partition(|p| p.host == ev.host);
            self.pending = later;
            for p in now {
                self.report(&p, out);
            }
        }
        if ev.kind != Kind::CgroupMkdir {
            return;
        }
        let Some(cg) = ev.cgroup.as_deref() else {
            return;
        };
        if kube::outside_container(cg).is_none() {
            return;
        }
        // A slice named after a kubepods pod proves kubelet manages kubepods slices.
        let names_kubepods = cg.rsplit('/').next().is_some_and(|leaf| leaf.contains("kubepods"));
        if names_kubepods || self.kubepods_seen.contains(&ev.host) {
            self.report(ev, out);
        } else if self.pending.len() < MAX_PENDING {
            self.pending.push(ev.clone());
        }
    }
}

impl DriverMismatch {
    fn report(&mut self, ev: &Event, out: &mut Vec<Finding>) {
        let cg = ev.cgroup.as_deref().unwrap_or_default();
        let Some((uid, runtime, id)) = kube::outside_container(cg) else {
            return;
        };
        let parent = cg.rsplit_once('/').map(|(p, _)| p).unwrap_or("/");
        let key = uid.clone().unwrap_or_else(|| format!("{parent}/{runtime}"));
        if !self.reported.insert((ev.host.clone(), key)) {
            return;
        }
        let pod = uid.as_deref().map(|u| format!(" for pod {u}")).unwrap_or_default();
        let mut f = finding(
            ID,
            Severity::Warning,
            ev,
            format!(
                "{} created container cgroup {cg}{pod} outside the kubepods tree: the runtime uses the cgroupfs \
                 driver while kubelet uses systemd, so systemd will rewrite kubepods slices it does not own",
                who(ev)
            ),
            REMEDIATION,
        );
        f.cgroup = Some(cg.to_string());
        attribution(&mut f, ev);
        if let Some(uid) = uid {
            f.details.insert("pod_uid".into(), uid.into());
        }
        f.details.insert("runtime".into(), runtime.into());
        f.details.insert("container_id".into(), id.into());
        out.push(f);
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    const BAD: &str =
        "/system.slice/kubepods-besteffort-pod0d4c2c8e_4a6b_4b8e_9d4c_2c8e4a6b4b8e.slice:cri-containerd:";

    #[test]
    fn container_outside_kubepods_once_per_pod() {
        let f = run(vec![
            ev(Kind::CgroupMkdir, "kubelet").cgroup("/kubepods.slice/kubepods-besteffort.slice"),
            ev(Kind::CgroupMkdir, "runc").behalf("containerd").cgroup(&format!("{BAD}aaaa")),
            ev(Kind::CgroupMkdir, "runc").behalf("containerd").cgroup(&format!("{BAD}bbbb")),
            ev(Kind::CgroupMkdir, "runc").cgroup("/system.slice/kubepods-burstable-pod11111111_2222_3333_4444_555555555555.slice:cri-containerd:cc"),
        ]);
        assert_eq!(ids(&f), vec![ID, ID], "{f:#?}");
        assert_eq!(f[0].severity, Severity::Warning);
        assert_eq!(f[0].evidence, vec![2]);
        assert_eq!(f[0].details["pod_uid"], "0d4c2c8e-4a6b-4b8e-9d4c-2c8e4a6b4b8e");
        assert!(f[0].summary.starts_with("runc (for containerd) created container cgroup"));
        assert!(f[0].remediation.contains("SystemdCgroup = true"));
    }

    #[test]
    fn reported_once_kubepods_is_seen_even_if_later() {
        let f = run(vec![
            ev(Kind::CgroupMkdir, "runc").cgroup("/system.slice/app.slice:cri-containerd:aaaa"),
            cg_write("kubelet", "/kubepods.slice", "+cpu"),
        ]);
        assert_eq!(ids(&f), vec![ID]);
        assert_eq!(f[0].evidence, vec![1]);
    }

    #[test]
    fn the_pod_slice_name_is_proof_enough() {
        let f = run(vec![ev(Kind::CgroupMkdir, "runc").cgroup(&format!("{BAD}aaaa"))]);
        assert_eq!(ids(&f), vec![ID]);
    }

    #[test]
    fn normal_cgroups_and_no_kubernetes_are_not_findings() {
        let f = run(vec![
            ev(Kind::CgroupMkdir, "kubelet").cgroup("/kubepods.slice/kubepods-besteffort.slice"),
            ev(Kind::CgroupMkdir, "runc").cgroup("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0d4c2c8e_4a6b_4b8e_9d4c_2c8e4a6b4b8e.slice/cri-containerd-aaaa.scope"),
            ev(Kind::CgroupMkdir, "systemd").cgroup("/system.slice/containerd.service"),
            ev(Kind::CgroupMkdir, "runc").cgroup("/system.slice/docker-abc.scope"),
        ]);
        assert!(f.is_empty(), "{f:#?}");
        // The tell-tale on a node without kubepods at all.
        assert!(run(vec![ev(Kind::CgroupMkdir, "runc").cgroup("/system.slice/app.slice:cri-containerd:aa")])
            .is_empty());
    }
}
