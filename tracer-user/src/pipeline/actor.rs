//! Actor policy: which component a process is (from its executable path first, then
//! comm; comm is 15 bytes and set by the process itself) and on whose behalf a helper
//! acted (runc for containerd, systemd-sysctl for systemd-udevd).

/// Components that act for others, and the components that own the node's state.
const PRINCIPALS: &[&str] = &[
    "systemd",
    "systemd-networkd",
    "systemd-udevd",
    "kubelet",
    "containerd",
    "crio",
    "dockerd",
    "cilium-agent",
];

/// Whether `actor` is one of the components that own the node's state (systemd,
/// kubelet, the runtimes, cilium-agent, ...).
pub fn is_principal(actor: &str) -> bool {
    PRINCIPALS.contains(&actor)
}

/// The well-known name for an executable basename or a comm, if it is one.
fn canonical(name: &str) -> Option<&'static str> {
    Some(match name {
        "systemd" => "systemd",
        // comm is 15 bytes: systemd-networkd runs as `systemd-network`.
        "systemd-networkd" | "systemd-network" => "systemd-networkd",
        "systemd-sysctl" => "systemd-sysctl",
        // udev workers are called `(udev-worker)` since systemd 253.
        "systemd-udevd" | "(udev-worker)" => "systemd-udevd",
        "kubelet" => "kubelet",
        "containerd" => "containerd",
        "crio" => "crio",
        "conmon" => "conmon",
        "dockerd" => "dockerd",
        "cilium-agent" => "cilium-agent",
        "runc" => "runc",
        // containerd-shim, containerd-shim-runc-v1/v2 (comm `containerd-shim`).
        n if n.starts_with("containerd-shim") => "containerd-shim",
        // runc names its stages `runc:[0:PARENT]`, `runc:[1:CHILD]`, `runc:[2:INIT]`.
        n if n.starts_with("runc:[") => "runc",
        _ => return None,
    })
}

/// Interpreters and multi-call binaries: the comm (the script or applet) names the
/// program better than the executable.
fn is_interpreter(base: &str) -> bool {
    const EXACT: &[&str] =
        &["sh", "bash", "dash", "ash", "zsh", "busybox", "env", "node", "perl", "ruby", "lua"];
    EXACT.contains(&base) || base.starts_with("python") || base.starts_with("perl5")
}

/// The actor for a process with this executable path (when known) and comm.
///
/// The executable decides when it is known: a process can call itself anything in comm,
/// but not change what /proc/pid/exe points at.
pub fn actor_name(exe: Option<&str>, comm: &str) -> String {
    let comm_name = || canonical(comm).map(str::to_string).unwrap_or_else(|| comm.to_string());
    let Some(exe) = exe.filter(|e| !e.is_empty()) else {
        return comm_name();
    };
    let path = exe.strip_suffix(" (deleted)").unwrap_or(exe);
    // runc runs from a sealed memfd copy of itself: `/memfd:runc_cloned:/proc/self/exe`.
    if let Some(memfd) = path.strip_prefix("/memfd:") {
        if memfd.starts_with("runc") {
            return "runc".into();
        }
        return comm_name();
    }
    let base = path.rsplit('/').next().unwrap_or(path);
    if base == "udevadm" {
        // systemd-udevd is a symlink to udevadm since systemd 247; argv[0] tells them apart.
        return match canonical(comm) {
            Some("systemd-udevd") => "systemd-udevd".into(),
            _ => "udevadm".into(),
        };
    }
    if let Some(c) = canonical(base) {
        return c.into();
    }
    // pid 1 through the /sbin/init symlink, interpreters and multi-call binaries.
    if (base == "init" || is_interpreter(base)) && !comm.is_empty() {
        return comm_name();
    }
    if base.is_empty() {
        return comm_name();
    }
    base.to_string()
}

/// On whose behalf `actor` acted, given its ancestry (nearest first).
///
/// Container runtime helpers act for their runtime (runc and the shim for containerd,
/// conmon for CRI-O). Any other process acts for the nearest component above it
/// (systemd-sysctl run by a udev rule -> systemd-udevd; `ip` run by kubelet ->
/// kubelet), except that systemd, everyone's ancestor, says nothing, and a container's
/// processes (below a shim or conmon) act for themselves.
pub fn on_behalf_of(actor: &str, ancestry: &[String]) -> Option<String> {
    match actor {
        "containerd-shim" => return Some("containerd".into()),
        "conmon" => return Some("crio".into()),
        "runc" => {
            return ancestry.iter().find_map(|a| match a.as_str() {
                "containerd-shim" | "containerd" => Some("containerd".to_string()),
                "conmon" | "crio" => Some("crio".to_string()),
                "dockerd" => Some("dockerd".to_string()),
                _ => None,
            })
        }
        a if PRINCIPALS.contains(&a) => return None,
        _ => {}
    }
    for (i, a) in ancestry.iter().enumerate() {
        match a.as_str() {
            "systemd" => continue,
            // An OCI hook run by runc acts for runc's runtime.
            "runc" => return on_behalf_of("runc", &ancestry[i + 1..]),
            // The container boundary.
            "containerd-shim" | "conmon" => return None,
            p if PRINCIPALS.contains(&p) => return Some(p.to_string()),
            _ => {}
        }
    }
    None
}
