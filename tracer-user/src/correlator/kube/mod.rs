//! What the detectors need to know about a cgroup path: where the kubepods tree is and
//! at which level a path sits in it, and the driver-mismatch tell-tale.
//!
//! [`names`] decides the meaning; a structural check of the path's shape
//! backs it up where a name is not recognised: anything below a pod's cgroup is a
//! container's (kubelet validates only root, QoS and pod cgroups), and any
//! `<slice>.slice:<prefix>:<id>` leaf outside kubepods is the tell-tale, whatever the
//! runtime's prefix.
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

fn is_root(c: &str) -> bool {
    c == "kubepods" || c == "kubepods.slice" || c.ends_with("-kubepods.slice")
}

fn is_qos(c: &str) -> bool {
    matches!(c, "besteffort" | "burstable")
        || c.ends_with("kubepods-besteffort.slice")
        || c.ends_with("kubepods-burstable.slice")
}

/// The pod uid of a pod cgroup name: `pod<uid>` or `...-pod<uid_with_underscores>.slice`.
pub fn pod_uid_of(c: &str) -> Option<String> {
    if let Some(uid) = c.strip_prefix("pod") {
        if looks_like_uid(uid) {
            return Some(uid.to_string());
        }
    }
    let stem = c.strip_suffix(".slice")?;
    let i = stem.rfind("-pod")?;
    let uid = stem[i + 4..].replace('_', "-");
    looks_like_uid(&uid).then_some(uid)
}

fn looks_like_uid(s: &str) -> bool {
    s.len() >= 8 && s.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

/// Where `path` sits in the kubepods tree, or `None` when outside it.
pub fn kube_path(path: &str) -> Option<KubePath> {
    let info = names::parse(path);
    let own = structural(path);
    if !info.in_kubepods {
        return own;
    }
    let mut level = match info.level {
        Some(KubeLevel::Root) => Level::Root,
        Some(KubeLevel::Qos) => Level::Qos,
        Some(KubeLevel::Pod) => Level::Pod,
        Some(KubeLevel::Container) | None => Level::Container,
    };
    // A name the parser does not know below a pod or a QoS slice (a unit of systemd's
    // own, `kubepods-burstable.slice/foo.service`) is no cgroup kubelet validates: the
    // shape of the path says it sits deeper than the name parser saw.
    if level != Level::Container && own.as_ref().is_some_and(|k| k.level == Level::Container) {
        level = Level::Container;
    }
    let pod_uid = info.pod_uid.or_else(|| own.and_then(|k| k.pod_uid));
    Some(KubePath { level, pod_uid })
}

/// The level from the shape of the path alone.
fn structural(path: &str) -> Option<KubePath> {
    let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let root = comps.iter().position(|c| is_root(c))?;
    let mut level = Level::Root;
    let mut pod_uid = None;
    for c in comps.iter().skip(root + 1) {
        level = match level {
            Level::Root if is_qos(c) => Level::Qos,
            Level::Root | Level::Qos => match pod_uid_of(c) {
                Some(uid) => {
                    pod_uid = Some(uid);
                    Level::Pod
                }
                None => Level::Container,
            },
            _ => Level::Container,
        };
    }
    Some(KubePath { level, pod_uid })
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
    if info.in_kubepods || structural(path).is_some() {
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
    Some((pod_uid_of(slice).or(info.pod_uid), runtime.to_string(), id.to_string()))
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
