//! Findings name the pods their events named: every event about a kubepods or
//! container cgroup carries `pod_uid`, and `pod`/`container` when the runtime listed
//! them (pipeline/pods.rs); the correlator learns uid -> `namespace/name` from them, so
//! that a finding about a pod's cgroup, and the pods a finding lists by uid
//! (`pods_removed`, `pods_signalled`, `running_pods`), are named the same live and in replay.

use std::collections::HashMap;

use crate::correlator::kube::names;
use crate::stream::schema::{Event, Finding};

/// uid -> `namespace/name`, per host (replay may merge several nodes).
#[derive(Debug, Default)]
pub struct PodNames {
    names: HashMap<(Option<String>, String), String>,
    /// container id -> container name, per host.
    containers: HashMap<(Option<String>, String), String>,
}

impl PodNames {
    /// Entries kept before starting over (a node has far fewer pods).
    const MAX: usize = 65_536;

    pub fn learn(&mut self, ev: &Event) {
        let (Some(uid), Some(pod)) = (&ev.pod_uid, &ev.pod) else { return };
        if self.names.len() >= Self::MAX {
            self.names.clear();
            self.containers.clear();
        }
        let key = (ev.host.clone(), uid.to_string());
        if self.names.get(&key).map(String::as_str) != Some(pod.as_str()) {
            self.names.insert(key, pod.to_string());
        }
        if let (Some(c), Some(path)) = (&ev.container, ev.cgroup.as_deref().or(ev.target_cgroup.as_deref())) {
            if let Some(id) = names::parse(path).container_id {
                self.containers.insert((ev.host.clone(), id), c.to_string());
            }
        }
    }

    /// Fills `pod_uid`, `pod`, `container` from the finding's `cgroup`, and names the
    /// uids listed in `details.pods_removed`/`pods_signalled`/`running_pods`
    /// (`details.pod_names`).
    pub fn annotate(&self, f: &mut Finding) {
        if let Some(info) = f.cgroup.as_deref().map(names::parse) {
            if let Some(uid) = info.pod_uid {
                let host = f.host.clone();
                f.pod = f
                    .pod
                    .take()
                    .or_else(|| self.names.get(&(host.clone(), uid.clone())).cloned().map(Box::new));
                if let Some(id) = info.container_id {
                    f.container = f
                        .container
                        .take()
                        .or_else(|| self.containers.get(&(host, id)).cloned().map(Box::new));
                }
                f.pod_uid = Some(Box::new(uid));
            }
        }
        let mut named = serde_json::Map::new();
        for key in ["pods_removed", "pods_signalled", "running_pods"] {
            let Some(serde_json::Value::Array(uids)) = f.details.get(key) else { continue };
            for uid in uids.iter().filter_map(|u| u.as_str()) {
                if let Some(name) = self.names.get(&(f.host.clone(), uid.to_string())) {
                    named.insert(uid.to_string(), name.clone().into());
                }
            }
        }
        if !named.is_empty() {
            f.details.insert("pod_names".into(), named.into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::schema::{Kind, Severity, Timestamp};

    const UID: &str = "0d4c2c8e-4a6b-4b8e-9d4c-2c8e4a6b4b8e";

    #[test]
    fn findings_take_the_names_events_carried() {
        let mut p = PodNames::default();
        let pod_slice = format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice",
            UID.replace('-', "_")
        );
        p.learn(&Event {
            kind: Kind::CgroupWrite,
            cgroup: Some(format!("{pod_slice}/cri-containerd-abc123.scope")),
            pod_uid: Some(Box::new(UID.into())),
            pod: Some(Box::new("shop/cart-0".into())),
            container: Some(Box::new("cart".into())),
            ..Default::default()
        });
        let mut f = Finding::new(
            "kubepods-controller-removed",
            Severity::Critical,
            Timestamp(0),
            "systemd",
            String::new(),
            vec![1],
        );
        f.cgroup = Some(pod_slice);
        f.details.insert(
            "pods_signalled".into(),
            serde_json::json!([UID, "ffffffff-0000-0000-0000-000000000000"]),
        );
        p.annotate(&mut f);
        assert_eq!(
            (
                f.pod.as_deref().map(String::as_str),
                f.pod_uid.as_deref().map(String::as_str),
                f.container.as_deref()
            ),
            (Some("shop/cart-0"), Some(UID), None)
        );
        assert_eq!(f.details["pod_names"], serde_json::json!({ UID: "shop/cart-0" }));
        // Another host's pod of the same uid is not this one.
        let mut g = f.clone();
        g.pod = None;
        g.host = Some("node-b".into());
        p.annotate(&mut g);
        assert_eq!(g.pod, None);
    }
}
