//! What to show: the `--kind`, `--actor`, `--cgroup`, `--dev`, `--pod`, `--namespace` and
//! `--findings-only` flags
//! shared by `tail`, `record` and `replay`.
//!
//! Flags of different names combine with AND, repeated values of one flag with OR. Header
//! and stats lines always pass (a stream without them cannot be read back or trusted).
//! An event or finding that lacks the field a filter looks at does not match that filter.

use crate::stream::schema::{Event, Finding, Kind, Line};

/// Filter flags, flattened into each command's arguments.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct FilterArgs {
    /// Only these kinds of change (repeatable or comma-separated): cgroup_write,
    /// cgroup_mkdir, cgroup_rmdir, sysctl_write, route_delete, rule_delete, addr_delete,
    /// link_delete, link_set, signal, cgroup_bpf_attach, cgroup_bpf_detach. Findings are
    /// not filtered by kind.
    #[arg(long = "kind", value_name = "KIND", value_delimiter = ',', value_parser = parse_kind)]
    pub kinds: Vec<Kind>,

    /// Only changes made by this actor (repeatable or comma-separated), e.g. systemd,
    /// kubelet, systemd-networkd. Also matches helpers acting on its behalf (runc for
    /// containerd).
    #[arg(long = "actor", value_name = "NAME", value_delimiter = ',')]
    pub actors: Vec<String>,

    /// Only changes under this cgroup path (repeatable). Matches at a `/` boundary:
    /// `/kubepods.slice` matches `/kubepods.slice/x`, not `/kubepods.slicex`. For signals
    /// the target's cgroup is used.
    #[arg(long = "cgroup", value_name = "PREFIX")]
    pub cgroups: Vec<String>,

    /// Only changes naming this network interface (repeatable or comma-separated); a
    /// trailing `*` matches a prefix (`lxc*`). sysctl writes match on the interface in
    /// their name (`net.ipv4.conf.<dev>.rp_filter`).
    #[arg(long = "dev", value_name = "NAME", value_delimiter = ',')]
    pub devs: Vec<String>,

    /// Only changes about this pod (repeatable or comma-separated), as NAMESPACE/NAME:
    /// events whose cgroup (a signal's target's) is the pod's or one of its containers',
    /// and findings about it. Names come from the container runtime (CRI).
    #[arg(long = "pod", value_name = "NAMESPACE/NAME", value_delimiter = ',', value_parser = parse_pod)]
    pub pods: Vec<String>,

    /// Only changes about pods of this Kubernetes namespace (repeatable or comma-separated).
    #[arg(long = "namespace", value_name = "NAMESPACE", value_delimiter = ',')]
    pub namespaces: Vec<String>,

    /// Print findings only (plus the header and loss reports), no individual events.
    #[arg(long)]
    pub findings_only: bool,
}

/// clap value parser for `--kind`: a schema kind name, or an error listing them all.
pub fn parse_kind(s: &str) -> Result<Kind, String> {
    Kind::parse(s.trim()).ok_or_else(|| {
        let valid: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
        format!("unknown kind {s:?}; valid kinds: {}", valid.join(", "))
    })
}

/// clap value parser for `--pod`: `namespace/name`.
pub fn parse_pod(s: &str) -> Result<String, String> {
    let s = s.trim();
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => Ok(s.to_string()),
        _ => Err(format!("--pod takes NAMESPACE/NAME (kube-system/coredns-7db6d8ff4d-x2x9q), got {s:?}")),
    }
}

/// An interface-name pattern: exact, or a prefix when written with a trailing `*`.
#[derive(Clone, Debug, PartialEq, Eq)]
enum DevPattern {
    Exact(String),
    Prefix(String),
}

impl DevPattern {
    fn new(s: &str) -> Self {
        match s.strip_suffix('*') {
            Some(prefix) => DevPattern::Prefix(prefix.to_string()),
            None => DevPattern::Exact(s.to_string()),
        }
    }
    fn matches(&self, dev: &str) -> bool {
        match self {
            DevPattern::Exact(d) => d == dev,
            DevPattern::Prefix(p) => dev.starts_with(p.as_str()),
        }
    }
}

/// The resolved filter.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    kinds: Vec<Kind>,
    actors: Vec<String>,
    /// Normalized: leading `/`, no trailing `/` (the root is the empty string).
    cgroups: Vec<String>,
    devs: Vec<DevPattern>,
    pods: Vec<String>,
    namespaces: Vec<String>,
    findings_only: bool,
}

impl From<&FilterArgs> for Filter {
    fn from(a: &FilterArgs) -> Self {
        Filter::new(a)
    }
}

impl Filter {
    pub fn new(a: &FilterArgs) -> Self {
        Filter {
            kinds: a.kinds.clone(),
            actors: a.actors.iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
            cgroups: a.cgroups.iter().map(|p| normalize_cgroup_prefix(p)).collect(),
            devs: a.devs.iter().map(|s| s.trim()).filter(|s| !s.is_empty()).map(DevPattern::new).collect(),
            pods: a.pods.clone(),
            namespaces: a.namespaces.iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
            findings_only: a.findings_only,
        }
    }

    /// `--pod` and `--namespace` on a `namespace/name` (absent: no match).
    fn pod_matches(&self, pod: Option<&str>) -> bool {
        if self.pods.is_empty() && self.namespaces.is_empty() {
            return true;
        }
        let Some(pod) = pod else { return false };
        let ns = pod.split_once('/').map_or(pod, |(ns, _)| ns);
        (self.pods.is_empty() || self.pods.iter().any(|p| p == pod))
            && (self.namespaces.is_empty() || self.namespaces.iter().any(|n| n == ns))
    }

    /// A filter that lets everything through.
    pub fn all() -> Self {
        Filter::default()
    }

    /// False with `--findings-only`: callers may skip building events they would drop.
    pub fn wants_events(&self) -> bool {
        !self.findings_only
    }

    /// Any line: header and stats always pass.
    pub fn matches(&self, line: &Line) -> bool {
        match line {
            Line::Header(_) | Line::Stats(_) => true,
            Line::Event(e) => self.matches_event(e),
            Line::Finding(f) => self.matches_finding(f),
        }
    }

    pub fn matches_event(&self, e: &Event) -> bool {
        if self.findings_only {
            return false;
        }
        if !self.kinds.is_empty() && !self.kinds.contains(&e.kind) {
            return false;
        }
        if !self.actors.is_empty()
            && !self.actors.iter().any(|a| *a == e.actor || e.on_behalf_of.as_deref() == Some(a.as_str()))
        {
            return false;
        }
        if !self.cgroups.is_empty() {
            let cg = e.cgroup.as_deref().or(e.target_cgroup.as_deref());
            if !cg.is_some_and(|cg| self.cgroup_matches(cg)) {
                return false;
            }
        }
        if !self.devs.is_empty() {
            let dev = e.dev.as_deref().or_else(|| e.name.as_deref().and_then(sysctl_dev));
            if !dev.is_some_and(|d| self.dev_matches(d)) {
                return false;
            }
        }
        self.pod_matches(e.pod.as_deref().map(String::as_str))
    }

    /// Findings pass the actor, cgroup and dev filters on their own fields; kinds do not
    /// apply to them.
    pub fn matches_finding(&self, f: &Finding) -> bool {
        if !self.actors.is_empty() && !self.actors.contains(&f.actor) {
            return false;
        }
        if !self.cgroups.is_empty() && !f.cgroup.as_deref().is_some_and(|cg| self.cgroup_matches(cg)) {
            return false;
        }
        if !self.devs.is_empty() && !f.dev.as_deref().is_some_and(|d| self.dev_matches(d)) {
            return false;
        }
        self.pod_matches(f.pod.as_deref().map(String::as_str))
    }

    fn cgroup_matches(&self, path: &str) -> bool {
        self.cgroups.iter().any(|prefix| cgroup_has_prefix(path, prefix))
    }

    fn dev_matches(&self, dev: &str) -> bool {
        self.devs.iter().any(|p| p.matches(dev))
    }
}

/// `/kubepods.slice/` -> `/kubepods.slice`, `kubepods.slice` -> `/kubepods.slice`, `/` -> ``.
fn normalize_cgroup_prefix(p: &str) -> String {
    let p = p.trim().trim_end_matches('/');
    if p.is_empty() {
        String::new()
    } else if p.starts_with('/') {
        p.to_string()
    } else {
        format!("/{p}")
    }
}

/// Is `path` the cgroup `prefix` or below it? `prefix` is normalized (see above).
fn cgroup_has_prefix(path: &str, prefix: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// The interface named by a per-interface sysctl: `net.ipv4.conf.lxc1.rp_filter` ->
/// `lxc1`. Interface names may contain dots (`eth0.100`, a VLAN), so the device is
/// everything between the fixed prefix and the last dot.
pub fn sysctl_dev(name: &str) -> Option<&str> {
    const PREFIXES: [&str; 4] = ["net.ipv4.conf.", "net.ipv6.conf.", "net.ipv4.neigh.", "net.ipv6.neigh."];
    let rest = PREFIXES.iter().find_map(|p| name.strip_prefix(p))?;
    let (dev, _key) = rest.rsplit_once('.')?;
    (!dev.is_empty()).then_some(dev)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        f: FilterArgs,
    }

    fn filter(args: &[&str]) -> Filter {
        let mut v = vec!["t"];
        v.extend_from_slice(args);
        Filter::new(&Cli::try_parse_from(v).unwrap().f)
    }

    fn ev(kind: Kind, actor: &str) -> Event {
        Event { kind, actor: actor.into(), comm: actor.into(), ..Default::default() }
    }

    fn finding(actor: &str) -> Finding {
        Finding::new(
            "kubepods-controller-removed",
            crate::stream::schema::Severity::Critical,
            Default::default(),
            actor,
            String::new(),
            vec![],
        )
    }

    #[test]
    fn pod_and_namespace_select_named_events_and_findings() {
        let mut a = ev(Kind::CgroupWrite, "runc");
        a.pod = Some(Box::new("shop/cart-0".into()));
        let mut b = ev(Kind::Signal, "containerd");
        b.pod = Some(Box::new("kube-system/coredns-1".into()));
        let unnamed = ev(Kind::CgroupWrite, "systemd");
        let f = filter(&["--pod", "shop/cart-0"]);
        assert!(f.matches_event(&a) && !f.matches_event(&b) && !f.matches_event(&unnamed));
        let f = filter(&["--namespace", "kube-system,monitoring"]);
        assert!(!f.matches_event(&a) && f.matches_event(&b) && !f.matches_event(&unnamed));
        let mut fi = finding("systemd");
        assert!(!f.matches_finding(&fi));
        fi.pod = Some(Box::new("kube-system/coredns-1".into()));
        assert!(f.matches_finding(&fi));
        // Both: AND.
        assert!(!filter(&["--pod", "shop/cart-0", "--namespace", "kube-system"]).matches_event(&a));
        let mut v = vec!["t", "--pod", "cart-0"];
        assert!(Cli::try_parse_from(&v).unwrap_err().to_string().contains("NAMESPACE/NAME"));
        v[2] = "a/b/c";
        assert!(Cli::try_parse_from(&v).is_err());
    }

    #[test]
    fn empty_filter_passes_everything() {
        let f = filter(&[]);
        assert!(f.wants_events());
        assert!(f.matches_event(&ev(Kind::Signal, "kubelet")));
        assert!(f.matches_finding(&finding("systemd")));
    }

    #[test]
    fn kinds_repeatable_and_comma_separated() {
        let f = filter(&["--kind", "cgroup_write,sysctl_write", "--kind", "signal"]);
        assert!(f.matches_event(&ev(Kind::CgroupWrite, "x")));
        assert!(f.matches_event(&ev(Kind::SysctlWrite, "x")));
        assert!(f.matches_event(&ev(Kind::Signal, "x")));
        assert!(!f.matches_event(&ev(Kind::RouteDelete, "x")));
        // Kinds do not apply to findings.
        assert!(f.matches_finding(&finding("systemd")));
    }

    #[test]
    fn unknown_kind_lists_valid_ones() {
        let err = Cli::try_parse_from(["t", "--kind", "cgroup_wrte"]).unwrap_err().to_string();
        assert!(err.contains("unknown kind \"cgroup_wrte\""), "{err}");
        for k in Kind::ALL {
            assert!(err.contains(k.as_str()), "{err}");
        }
    }

    #[test]
    fn actor_matches_actor_or_on_behalf_of() {
        let f = filter(&["--actor", "containerd", "--actor", "systemd"]);
        assert!(f.matches_event(&ev(Kind::CgroupWrite, "systemd")));
        assert!(!f.matches_event(&ev(Kind::CgroupWrite, "kubelet")));
        let mut runc = ev(Kind::CgroupMkdir, "runc");
        assert!(!f.matches_event(&runc));
        runc.on_behalf_of = Some("containerd".into());
        assert!(f.matches_event(&runc));
        assert!(f.matches_finding(&finding("systemd")));
        assert!(!f.matches_finding(&finding("systemd-networkd")));
    }

    #[test]
    fn cgroup_prefix_at_slash_boundary() {
        let f = filter(&["--cgroup", "/kubepods.slice"]);
        let mut e = ev(Kind::CgroupWrite, "systemd");
        for (path, want) in [
            ("/kubepods.slice", true),
            ("/kubepods.slice/kubepods-burstable.slice", true),
            ("/kubepods.slicex", false),
            ("/kubepods.slicex/y", false),
            ("/system.slice", false),
            ("/", false),
        ] {
            e.cgroup = Some(path.into());
            assert_eq!(f.matches_event(&e), want, "{path}");
        }
        e.cgroup = None;
        assert!(!f.matches_event(&e), "no cgroup: no match");
        // Trailing slash and missing leading slash normalize to the same prefix.
        for spelled in ["/kubepods.slice/", "kubepods.slice"] {
            let f = filter(&["--cgroup", spelled]);
            e.cgroup = Some("/kubepods.slice/x".into());
            assert!(f.matches_event(&e), "{spelled}");
            e.cgroup = Some("/kubepods.slicex".into());
            assert!(!f.matches_event(&e), "{spelled}");
        }
        // The root matches everything that has a cgroup.
        let f = filter(&["--cgroup", "/"]);
        e.cgroup = Some("/a".into());
        assert!(f.matches_event(&e));
    }

    #[test]
    fn cgroup_filter_uses_signal_target_and_finding_cgroup() {
        let f = filter(&["--cgroup", "/kubepods.slice"]);
        let mut s = ev(Kind::Signal, "kubelet");
        s.target_cgroup = Some("/kubepods.slice/kubepods-pod1.slice/cri-containerd-1.scope".into());
        assert!(f.matches_event(&s));
        let mut fi = finding("systemd");
        assert!(!f.matches_finding(&fi));
        fi.cgroup = Some("/kubepods.slice/kubepods-burstable.slice".into());
        assert!(f.matches_finding(&fi));
    }

    #[test]
    fn dev_exact_and_glob() {
        let f = filter(&["--dev", "cilium_host", "--dev", "lxc*"]);
        let mut e = ev(Kind::RouteDelete, "systemd-networkd");
        for (dev, want) in
            [("cilium_host", true), ("lxc12ab", true), ("lxc", true), ("cilium_net", false), ("eth0", false)]
        {
            e.dev = Some(dev.into());
            assert_eq!(f.matches_event(&e), want, "{dev}");
        }
        e.dev = None;
        assert!(!f.matches_event(&e));
        let mut s = ev(Kind::SysctlWrite, "systemd-sysctl");
        s.name = Some("net.ipv4.conf.lxc1.rp_filter".into());
        assert!(f.matches_event(&s));
        s.name = Some("net.ipv4.conf.all.rp_filter".into());
        assert!(!f.matches_event(&s));
        let mut fi = finding("systemd-sysctl");
        fi.dev = Some("lxcabc".into());
        assert!(f.matches_finding(&fi));
        fi.dev = Some("eth0".into());
        assert!(!f.matches_finding(&fi));
    }

    #[test]
    fn sysctl_dev_names() {
        assert_eq!(sysctl_dev("net.ipv4.conf.lxc1.rp_filter"), Some("lxc1"));
        assert_eq!(sysctl_dev("net.ipv4.conf.eth0.100.rp_filter"), Some("eth0.100"));
        assert_eq!(sysctl_dev("net.ipv6.conf.all.forwarding"), Some("all"));
        assert_eq!(sysctl_dev("net.ipv4.ip_forward"), None);
        assert_eq!(sysctl_dev("net.ipv4.conf.rp_filter"), None);
    }

    #[test]
    fn findings_only_drops_events_keeps_findings_header_stats() {
        let f = filter(&["--findings-only"]);
        assert!(!f.wants_events());
        assert!(!f.matches_event(&ev(Kind::CgroupWrite, "systemd")));
        assert!(f.matches_finding(&finding("systemd")));
        assert!(f.matches(&Line::Stats(Default::default())));
        assert!(!f.matches(&Line::Event(Box::new(ev(Kind::Signal, "x")))));
    }

    #[test]
    fn filters_combine_with_and() {
        let f = filter(&["--kind", "cgroup_write", "--actor", "systemd"]);
        assert!(f.matches_event(&ev(Kind::CgroupWrite, "systemd")));
        assert!(!f.matches_event(&ev(Kind::CgroupWrite, "kubelet")));
        assert!(!f.matches_event(&ev(Kind::CgroupMkdir, "systemd")));
    }
}
