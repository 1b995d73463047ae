//! What a cgroup path means: systemd unit, kubepods level, QoS class, pod, container.
//!
//! Input: a host-absolute cgroup path from the hierarchy root (cgroup v2, or any v1
//! hierarchy: the naming is the same), e.g. `/kubepods.slice/kubepods-burstable.slice`.
//! Both kubelet cgroup drivers are understood:
//!
//! - systemd driver: `/kubepods.slice/kubepods-burstable.slice/
//!   kubepods-burstable-pod<uid with _>.slice/cri-containerd-<id>.scope`. A slice's name
//!   repeats its parents' names joined by `-` (systemd.slice(5)), so a kubelet started
//!   with another cgroup root (kind: `/kubelet.slice/kubelet-kubepods.slice/...`) parses
//!   too. Pod UIDs have `_` for `-` (a `-` would mean another level).
//! - cgroupfs driver: `/kubepods/burstable/pod<uid>/<64 hex>`, `/kubepods/pod<uid>/<id>`.
//!
//! And the tell-tale of the driver mismatch (DESIGN.md, incident 1): a container cgroup
//! outside the kubepods tree, e.g. `/system.slice/kubepods-besteffort-pod<uid>.slice:
//! cri-containerd:<id>`: runc's cgroupfs manager takes kubelet's systemd-style
//! `slice:prefix:name` cgroupsPath as a plain directory name.
//!
//! Parsing never fails: what is not recognised is left `None`/`false`.

use serde::Serialize;

/// Where a cgroup sits in kubelet's tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KubeLevel {
    /// `kubepods.slice` / `kubepods`: the node-allocatable root.
    Root,
    /// `kubepods-burstable.slice`, `kubepods/besteffort`.
    Qos,
    /// A pod's cgroup.
    Pod,
    /// A container's cgroup (or below it).
    Container,
}

/// What a cgroup path means. All fields are empty for a path with no meaning to us.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CgroupInfo {
    /// The last systemd unit in the path: `kubelet.service`,
    /// `kubepods-burstable-pod<uid>.slice`, `cri-containerd-<id>.scope`.
    pub unit: Option<String>,
    /// The path is the kubepods root or below it.
    pub in_kubepods: bool,
    /// The level inside the kubepods tree (`None` outside it).
    pub level: Option<KubeLevel>,
    /// `guaranteed`, `burstable`, `besteffort`: at the QoS level and below (a pod directly
    /// under the root is guaranteed). `None` for the root itself.
    pub qos: Option<String>,
    /// The pod UID with dashes (systemd slices spell them `_`). Static pods have a
    /// 32-hex UID without dashes; it is kept as is.
    pub pod_uid: Option<String>,
    pub container_id: Option<String>,
    /// `containerd`, `crio`, `docker`, `podman`, when the name says (the cgroupfs driver's
    /// bare `<id>` does not).
    pub runtime: Option<String>,
    /// The kubepods root, a QoS cgroup or a pod cgroup: the cgroups kubelet owns and
    /// checks controllers on (its `Validate()`); removing a controller from one of
    /// these kills pods (DESIGN.md, incident 1). False for containers and the rest.
    pub kubelet_owned: bool,
    /// A CRI container cgroup outside the kubepods tree: the tell-tale of a cgroup
    /// driver mismatch (`/system.slice/kubepods-besteffort-pod<uid>.slice:cri-containerd:<id>`,
    /// `/system.slice/cri-containerd-<id>.scope`). A plain `docker-<id>.scope` outside
    /// kubepods is an ordinary Docker container and does not count.
    pub outside_kubepods_container: bool,
}

/// Unit suffixes that appear as cgroup names (systemd.unit(5)).
const UNIT_SUFFIXES: &[&str] = &[".slice", ".scope", ".service", ".socket", ".mount", ".swap"];

/// Parses a host-absolute cgroup path. Never fails.
pub fn parse(path: &str) -> CgroupInfo {
    let mut info = CgroupInfo::default();
    // Set by a `slice:prefix:name` component: a CRI container named in systemd style.
    let mut cri_named = false;
    for comp in path.split('/').filter(|c| !c.is_empty() && *c != ".") {
        if is_unit(comp) {
            info.unit = Some(comp.to_string());
        }
        if let Some(c) = colon_container(comp) {
            info.pod_uid = c.pod.as_ref().map(|p| p.uid.clone()).or(info.pod_uid.take());
            if let Some(q) = c.pod.and_then(|p| p.qos) {
                info.qos = Some(q);
            }
            info.runtime = Some(c.runtime.to_string());
            info.container_id = Some(c.id);
            cri_named = true;
            if info.in_kubepods {
                info.level = Some(KubeLevel::Container);
            }
            continue;
        }
        if let Some(k) = slice_component(comp) {
            match k {
                SliceKube::Root => {
                    info.in_kubepods = true;
                    info.level = Some(KubeLevel::Root);
                }
                SliceKube::Qos(q) if info.in_kubepods => {
                    info.qos = Some(q.to_string());
                    info.level = Some(KubeLevel::Qos);
                }
                SliceKube::Qos(_) => {}
                SliceKube::Pod(p) => {
                    // Also outside kubepods: a pod slice in the wrong place is still a pod.
                    info.qos = p
                        .qos
                        .or(info.qos.take())
                        .or_else(|| (info.level == Some(KubeLevel::Root)).then(|| "guaranteed".to_string()));
                    info.pod_uid = Some(p.uid);
                    if info.in_kubepods {
                        info.level = Some(KubeLevel::Pod);
                    }
                }
            }
            continue;
        }
        // cgroupfs driver naming, only where kubelet puts it.
        if comp == "kubepods" {
            info.in_kubepods = true;
            info.level = Some(KubeLevel::Root);
            continue;
        }
        if info.level == Some(KubeLevel::Root) && (comp == "burstable" || comp == "besteffort") {
            info.qos = Some(comp.to_string());
            info.level = Some(KubeLevel::Qos);
            continue;
        }
        if matches!(info.level, Some(KubeLevel::Root | KubeLevel::Qos)) {
            if let Some(uid) = comp.strip_prefix("pod").and_then(pod_uid) {
                if info.level == Some(KubeLevel::Root) {
                    info.qos = Some("guaranteed".to_string());
                }
                info.pod_uid = Some(uid);
                info.level = Some(KubeLevel::Pod);
                continue;
            }
        }
        if let Some((runtime, id)) = container_component(comp) {
            // Only the first container component counts: a cgroup nested inside a
            // container (its own systemd, say) belongs to that container.
            if info.container_id.is_none() {
                info.runtime = runtime.map(str::to_string);
                info.container_id = Some(id);
            }
            if info.in_kubepods {
                info.level = Some(KubeLevel::Container);
            }
        } else if info.in_kubepods
            && matches!(info.level, Some(KubeLevel::Root | KubeLevel::Qos | KubeLevel::Pod))
        {
            // A name this parser does not know below kubelet's cgroups (a unit of
            // systemd's own, `kubepods-burstable.slice/node-exporter.service`, or a
            // runtime's unnamed child): nothing kubelet validates.
            info.level = Some(KubeLevel::Container);
        }
    }
    if !info.in_kubepods {
        info.level = None;
    }
    info.kubelet_owned = matches!(info.level, Some(KubeLevel::Root | KubeLevel::Qos | KubeLevel::Pod));
    info.outside_kubepods_container = !info.in_kubepods
        && info.container_id.is_some()
        && (cri_named || matches!(info.runtime.as_deref(), Some("containerd" | "crio")));
    info
}

fn is_unit(comp: &str) -> bool {
    UNIT_SUFFIXES.iter().any(|s| comp.len() > s.len() && comp.ends_with(s) && !comp.contains(':'))
}

struct PodName {
    qos: Option<String>,
    uid: String,
}

enum SliceKube {
    Root,
    Qos(&'static str),
    Pod(PodName),
}

/// The pod uid a slice name carries (`kubepods-besteffort-pod<uid>.slice`).
pub fn slice_pod_uid(comp: &str) -> Option<String> {
    match slice_component(comp)? {
        SliceKube::Pod(p) => Some(p.uid),
        _ => None,
    }
}

/// A systemd slice of kubelet's tree: `[<prefix>-]kubepods[-<qos>][-pod<uid>].slice`.
fn slice_component(comp: &str) -> Option<SliceKube> {
    let stem = comp.strip_suffix(".slice")?;
    kube_slice_stem(stem)
}

fn kube_slice_stem(stem: &str) -> Option<SliceKube> {
    let tokens: Vec<&str> = stem.split('-').collect();
    let at = tokens.iter().position(|t| *t == "kubepods")?;
    let rest = tokens.get(at + 1..).unwrap_or(&[]);
    let qos_of = |t: &str| match t {
        "burstable" => Some("burstable"),
        "besteffort" => Some("besteffort"),
        _ => None,
    };
    match rest {
        [] => Some(SliceKube::Root),
        [q] => {
            if let Some(q) = qos_of(q) {
                Some(SliceKube::Qos(q))
            } else {
                let uid = q.strip_prefix("pod").and_then(pod_uid)?;
                Some(SliceKube::Pod(PodName { qos: None, uid }))
            }
        }
        [q, p] => {
            let q = qos_of(q)?;
            let uid = p.strip_prefix("pod").and_then(pod_uid)?;
            Some(SliceKube::Pod(PodName { qos: Some(q.to_string()), uid }))
        }
        _ => None,
    }
}

/// A pod UID as it appears after `pod`: a UUID with `-` or `_`, or a static pod's 32
/// hex digits. Returned with dashes.
fn pod_uid(s: &str) -> Option<String> {
    let hex = s.chars().filter(|c| c.is_ascii_hexdigit()).count();
    let ok = hex == 32
        && s.chars().all(|c| c.is_ascii_hexdigit() || c == '-' || c == '_')
        && (s.len() == 32 || s.len() == 36);
    ok.then(|| s.replace('_', "-"))
}

fn container_id(s: &str) -> Option<String> {
    (s.len() >= 12 && s.len() <= 64 && s.chars().all(|c| c.is_ascii_hexdigit()))
        .then(|| s.to_ascii_lowercase())
}

/// Runtime prefixes of container cgroup names, longest first.
const RUNTIME_PREFIXES: &[(&str, &str)] = &[
    ("cri-containerd-", "containerd"),
    ("crio-conmon-", "crio"),
    ("crio-", "crio"),
    ("docker-", "docker"),
    ("libpod-conmon-", "podman"),
    ("libpod-", "podman"),
];

/// `cri-containerd-<id>.scope`, `crio-<id>.scope`, `docker-<id>.scope`, the same without
/// `.scope` (cgroupfs driver with a prefix), or a bare id (cgroupfs driver: runtime
/// unknown).
fn container_component(comp: &str) -> Option<(Option<&'static str>, String)> {
    let name = comp.strip_suffix(".scope").unwrap_or(comp);
    for (prefix, runtime) in RUNTIME_PREFIXES {
        if let Some(id) = name.strip_prefix(prefix) {
            return container_id(id).map(|id| (Some(*runtime), id));
        }
    }
    if name.len() == 64 {
        return container_id(name).map(|id| (None, id));
    }
    None
}

struct ColonContainer {
    pod: Option<PodName>,
    runtime: &'static str,
    id: String,
}

/// kubelet's systemd-style cgroupsPath `slice:prefix:name` used as a directory name:
/// `kubepods-besteffort-pod<uid>.slice:cri-containerd:<id>`.
fn colon_container(comp: &str) -> Option<ColonContainer> {
    let mut parts = comp.splitn(3, ':');
    let (slice, prefix, name) = (parts.next()?, parts.next()?, parts.next()?);
    let runtime = match prefix {
        "cri-containerd" => "containerd",
        "crio" => "crio",
        "docker" => "docker",
        _ => return None,
    };
    // The `slice:prefix:name` shape is the tell-tale by itself: any non-empty id.
    let id_ok = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric());
    if !id_ok || !slice.ends_with(".slice") {
        return None;
    }
    let id = name.to_ascii_lowercase();
    let pod = match slice.strip_suffix(".slice").and_then(kube_slice_stem) {
        Some(SliceKube::Pod(p)) => Some(p),
        _ => None,
    };
    Some(ColonContainer { pod, runtime, id })
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID_: &str = "1b2c3d4e_5f60_7182_93a4_b5c6d7e8f901";
    const UID: &str = "1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901";
    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn s(v: &str) -> Option<String> {
        Some(v.to_string())
    }

    #[test]
    fn systemd_root() {
        let i = parse("/kubepods.slice");
        assert_eq!(
            i,
            CgroupInfo {
                unit: s("kubepods.slice"),
                in_kubepods: true,
                level: Some(KubeLevel::Root),
                kubelet_owned: true,
                ..Default::default()
            }
        );
    }

    #[test]
    fn systemd_qos() {
        let i = parse("/kubepods.slice/kubepods-burstable.slice");
        assert_eq!(i.unit, s("kubepods-burstable.slice"));
        assert_eq!(i.qos, s("burstable"));
        assert_eq!(i.level, Some(KubeLevel::Qos));
        assert!(i.in_kubepods && i.kubelet_owned && !i.outside_kubepods_container);
        assert_eq!(i.pod_uid, None);
    }

    #[test]
    fn systemd_burstable_container() {
        let p = format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{ID}.scope");
        let i = parse(&p);
        assert_eq!(
            i,
            CgroupInfo {
                unit: Some(format!("cri-containerd-{ID}.scope")),
                in_kubepods: true,
                level: Some(KubeLevel::Container),
                qos: s("burstable"),
                pod_uid: s(UID),
                container_id: s(ID),
                runtime: s("containerd"),
                kubelet_owned: false,
                outside_kubepods_container: false,
            }
        );
    }

    #[test]
    fn systemd_pod_slice() {
        let i =
            parse(&format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice"));
        assert_eq!(
            (i.level, i.qos.as_deref(), i.pod_uid.as_deref()),
            (Some(KubeLevel::Pod), Some("besteffort"), Some(UID))
        );
        assert_eq!(i.unit, Some(format!("kubepods-besteffort-pod{UID_}.slice")));
        assert!(i.kubelet_owned);
    }

    #[test]
    fn systemd_guaranteed_pod_has_no_qos_level() {
        let i = parse(&format!("/kubepods.slice/kubepods-pod{UID_}.slice"));
        assert_eq!(
            (i.level, i.qos.as_deref(), i.pod_uid.as_deref()),
            (Some(KubeLevel::Pod), Some("guaranteed"), Some(UID))
        );
        assert!(i.kubelet_owned);
    }

    #[test]
    fn static_pod_uid_without_dashes() {
        let uid = "8f1b4c2d9e0a7b6c5d4e3f2a1b0c9d8e";
        let i = parse(&format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid}.slice"));
        assert_eq!(i.pod_uid.as_deref(), Some(uid));
    }

    #[test]
    fn cgroupfs_burstable_container() {
        let i = parse(&format!("/kubepods/burstable/pod{UID}/{ID}"));
        assert_eq!(
            i,
            CgroupInfo {
                unit: None,
                in_kubepods: true,
                level: Some(KubeLevel::Container),
                qos: s("burstable"),
                pod_uid: s(UID),
                container_id: s(ID),
                runtime: None,
                kubelet_owned: false,
                outside_kubepods_container: false,
            }
        );
    }

    #[test]
    fn cgroupfs_levels() {
        let i = parse("/kubepods");
        assert_eq!((i.level, i.kubelet_owned, i.qos.clone()), (Some(KubeLevel::Root), true, None));
        let i = parse("/kubepods/besteffort");
        assert_eq!((i.level, i.qos.as_deref()), (Some(KubeLevel::Qos), Some("besteffort")));
        let i = parse(&format!("/kubepods/pod{UID}"));
        assert_eq!(
            (i.level, i.qos.as_deref(), i.pod_uid.as_deref()),
            (Some(KubeLevel::Pod), Some("guaranteed"), Some(UID))
        );
        let i = parse(&format!("/kubepods/pod{UID}/{ID}"));
        assert_eq!(
            (i.level, i.qos.as_deref(), i.container_id.as_deref()),
            (Some(KubeLevel::Container), Some("guaranteed"), Some(ID))
        );
        assert!(!i.kubelet_owned);
    }

    #[test]
    fn crio_and_docker_scopes() {
        let i = parse(&format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/crio-{ID}.scope"
        ));
        assert_eq!((i.runtime.as_deref(), i.container_id.as_deref()), (Some("crio"), Some(ID)));
        let i = parse(&format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/crio-conmon-{ID}.scope"));
        assert_eq!((i.runtime.as_deref(), i.container_id.as_deref()), (Some("crio"), Some(ID)));
        let i = parse(&format!("/kubepods.slice/kubepods-pod{UID_}.slice/docker-{ID}.scope"));
        assert_eq!((i.runtime.as_deref(), i.level), (Some("docker"), Some(KubeLevel::Container)));
        // cgroupfs driver with crio's prefix.
        let i = parse(&format!("/kubepods/besteffort/pod{UID}/crio-{ID}"));
        assert_eq!(
            (i.runtime.as_deref(), i.container_id.as_deref(), i.unit.clone()),
            (Some("crio"), Some(ID), None)
        );
    }

    #[test]
    fn system_services() {
        let i = parse("/system.slice/containerd.service");
        assert_eq!(i, CgroupInfo { unit: s("containerd.service"), ..Default::default() });
        let i = parse("/system.slice/kubelet.service");
        assert_eq!(i.unit, s("kubelet.service"));
        assert!(!i.in_kubepods && !i.kubelet_owned);
    }

    #[test]
    fn driver_mismatch_colon_form() {
        let i = parse(&format!("/system.slice/kubepods-besteffort-pod{UID_}.slice:cri-containerd:{ID}"));
        assert_eq!(
            i,
            CgroupInfo {
                unit: s("system.slice"),
                in_kubepods: false,
                level: None,
                qos: s("besteffort"),
                pod_uid: s(UID),
                container_id: s(ID),
                runtime: s("containerd"),
                kubelet_owned: false,
                outside_kubepods_container: true,
            }
        );
        // Under containerd's own service cgroup.
        let i = parse(&format!(
            "/system.slice/containerd.service/kubepods-burstable-pod{UID_}.slice:cri-containerd:{ID}"
        ));
        assert!(i.outside_kubepods_container);
        assert_eq!((i.unit.as_deref(), i.qos.as_deref()), (Some("containerd.service"), Some("burstable")));
        // Short ids (as in hand-written fixtures) and a slice that is not a pod's.
        let i = parse("/system.slice/kubepods-besteffort.slice:crio:cc");
        assert!(i.outside_kubepods_container);
        assert_eq!(
            (i.runtime.as_deref(), i.container_id.as_deref(), i.pod_uid.clone()),
            (Some("crio"), Some("cc"), None)
        );
    }

    #[test]
    fn driver_mismatch_scope_outside_kubepods() {
        let i = parse(&format!("/system.slice/cri-containerd-{ID}.scope"));
        assert!(i.outside_kubepods_container);
        assert_eq!((i.runtime.as_deref(), i.container_id.as_deref()), (Some("containerd"), Some(ID)));
        assert_eq!(i.level, None);
        let i = parse(&format!("/system.slice/crio-{ID}.scope"));
        assert!(i.outside_kubepods_container);
        // A plain Docker container is not a Kubernetes container.
        let i = parse(&format!("/system.slice/docker-{ID}.scope"));
        assert!(!i.outside_kubepods_container);
        assert_eq!(i.runtime.as_deref(), Some("docker"));
    }

    #[test]
    fn other_kubelet_cgroup_root() {
        // kind / kubelet --cgroup-root=/kubelet with the systemd driver, inside a node container.
        let p = format!("/system.slice/docker-{ID}.scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/kubelet-kubepods-burstable-pod{UID_}.slice");
        let i = parse(&p);
        assert!(i.in_kubepods && i.kubelet_owned);
        assert_eq!(
            (i.level, i.qos.as_deref(), i.pod_uid.as_deref()),
            (Some(KubeLevel::Pod), Some("burstable"), Some(UID))
        );
        // The node container's docker id is not a pod's container.
        assert!(!i.outside_kubepods_container);
    }

    #[test]
    fn root_and_garbage() {
        assert_eq!(parse("/"), CgroupInfo::default());
        assert_eq!(parse(""), CgroupInfo::default());
        for g in [
            "//",
            "not/a/path",
            "/.slice",
            "/kubepods-.slice",
            "/kubepods-pod.slice",
            "/kubepods-burstable-podxyz.slice",
            "/kubepods-burstable-pod1-2.slice/",
            "/a:b:c",
            "/x.slice:cri-containerd:",
            "/x.scope:cri-containerd:ab",
            "/x.slice:runc:ab",
            "/\u{0}\u{ffff}/é.scope",
            "/burstable/pod1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901",
            "/kubepods-foo-bar-baz.slice",
        ] {
            let i = parse(g);
            assert!(!i.kubelet_owned && !i.outside_kubepods_container && i.pod_uid.is_none(), "{g}: {i:?}");
        }
        assert_eq!(parse("/\u{0}\u{ffff}/é.scope").unit.as_deref(), Some("é.scope"));
    }

    #[test]
    fn trailing_slash_and_nested_container_cgroups() {
        let i =
            parse(&format!("/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{ID}.scope/init.scope/"));
        assert_eq!(
            (i.level, i.container_id.as_deref(), i.unit.as_deref()),
            (Some(KubeLevel::Container), Some(ID), Some("init.scope"))
        );
    }

    #[test]
    fn serializes_snake_case() {
        let j = serde_json::to_string(&parse("/kubepods.slice")).unwrap();
        assert!(j.contains(r#""level":"root""#) && j.contains(r#""kubelet_owned":true"#), "{j}");
    }
}
