//! What the detectors need to know about a cgroup path: where the kubepods tree is and
//! at which level a path sits in it, and the driver-mismatch tell-tale.
//!
//! One parser decides the meaning ([`names`]: a name it does not know below kubelet's
//! cgroups is nothing kubelet validates); this module maps it to the levels the
//! detectors use, and adds the tell-tale's fallback: any `<slice>.slice:<prefix>:<id>`
//! leaf outside kubepods, whatever the runtime's prefix.
//!
//! Both kubelet drivers are understood, under any cgroup root kubelet was given
//! (`--cgroup-root`):
//! - systemd: `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice/cri-containerd-<id>.scope`
//!   (`/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/...` with root `/kubelet`),
//!   the pod uid with `_` for `-`;
//! - cgroupfs: `/kubepods/burstable/pod<uid>/<id>`.

pub mod names;

use names::KubeLevel;

/// Level of a cgroup inside the kubepods tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// `kubepods.slice`, `kubepods`.
    Root,
    /// `kubepods-burstable.slice`, `besteffort`.
    Qos,
    /// A pod's cgroup (guaranteed pods sit directly under the root).
    Pod,
    /// A container's cgroup or anything deeper, or a cgroup of another kind below a
    /// QoS slice (a `.service` of systemd's own): nothing kubelet validates.
    Container,
}

/// A path in the kubepods tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubePath {
    pub level: Level,
    pub pod_uid: Option<String>,
}

/// Where `path` sits in the kubepods tree, or `None` when outside it.
pub fn kube_path(path: &str) -> Option<KubePath> {
    let info = names::parse(path);
    let level = match info.level? {
        KubeLevel::Root => Level::Root,
        KubeLevel::Qos => Level::Qos,
        KubeLevel::Pod => Level::Pod,
        KubeLevel::Container => Level::Container,
    };
    Some(KubePath { level, pod_uid: info.pod_uid })
}

impl Level {
    /// The cgroups kubelet's `Validate()` checks the controllers of (root, QoS, pod):
    /// removing one there makes kubelet kill the pods below.
    pub fn validated_by_kubelet(self) -> bool {
        matches!(self, Level::Root | Level::Qos | Level::Pod)
    }
}

pub fn in_kubepods(path: &str) -> bool {
    kube_path(path).is_some()
}

/// `path` is `prefix` or below it (at a `/` boundary).
pub fn under(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    path == prefix
        || (path.starts_with(prefix) && path.as_bytes().get(prefix.len()) == Some(&b'/'))
        || prefix.is_empty()
}

/// A container cgroup created outside the kubepods tree: cgroup_info's
/// `outside_kubepods_container`, or a systemd-style cgroupsPath (`<slice>:<prefix>:<id>`)
/// taken literally by a cgroupfs driver whatever the prefix. Returns (pod uid if named,
/// runtime, container id).
pub fn outside_container(path: &str) -> Option<(Option<String>, String, String)> {
    let info = names::parse(path);
    if info.in_kubepods {
        return None;
    }
    if info.outside_kubepods_container {
        let runtime = info.runtime.unwrap_or_else(|| "unknown".into());
        return Some((info.pod_uid, runtime, info.container_id.unwrap_or_default()));
    }
    let leaf = path.rsplit('/').find(|c| !c.is_empty())?;
    let mut parts = leaf.split(':');
    let (slice, runtime, id) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !slice.ends_with(".slice") || runtime.is_empty() || id.is_empty() {
        return None;
    }
    Some((names::slice_pod_uid(slice).or(info.pod_uid), runtime.to_string(), id.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "0d4c2c8e-4a6b-4b8e-9d4c-2c8e4a6b4b8e";

    #[test]
    fn systemd_and_cgroupfs_levels() {
        let l = |p: &str| kube_path(p).map(|k| k.level);
        assert_eq!(l("/kubepods.slice"), Some(Level::Root));
        assert_eq!(l("/kubepods.slice/kubepods-burstable.slice"), Some(Level::Qos));
        let pod = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0d4c2c8e_4a6b_4b8e_9d4c_2c8e4a6b4b8e.slice";
        let k = kube_path(pod).unwrap();
        assert_eq!((k.level, k.pod_uid.as_deref()), (Level::Pod, Some(UID)));
        assert_eq!(l(&format!("{pod}/cri-containerd-0123456789abcdef.scope")), Some(Level::Container));
        assert_eq!(l(&format!("{pod}/abc")), Some(Level::Container));
        assert_eq!(l(&format!("/kubepods/pod{UID}")), Some(Level::Pod));
        assert_eq!(l("/kubepods/besteffort"), Some(Level::Qos));
        assert_eq!(l(&format!("/kubepods/besteffort/pod{UID}/0123abcd")), Some(Level::Container));
        assert_eq!(
            l("/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice"),
            Some(Level::Qos)
        );
        assert_eq!(l("/system.slice/kubelet.service"), None);
        assert_eq!(l("/kubepods.slicex"), None);
    }

    #[test]
    fn driver_mismatch_tell_tale() {
        let p = "/system.slice/kubepods-besteffort-pod0d4c2c8e_4a6b_4b8e_9d4c_2c8e4a6b4b8e.slice:cri-containerd:abcdef";
        assert_eq!(outside_container(p), Some((Some(UID.into()), "containerd".into(), "abcdef".into())));
        let p = "/system.slice/kubepods-pod0d4c2c8e_4a6b_4b8e_9d4c_2c8e4a6b4b8e.slice:k3s-runtime:x1";
        assert_eq!(outside_container(p), Some((Some(UID.into()), "k3s-runtime".into(), "x1".into())));
        assert_eq!(outside_container("/system.slice/containerd.service"), None);
        assert_eq!(outside_container("/kubepods.slice/x.slice:cri-containerd:abc"), None);
    }
}
