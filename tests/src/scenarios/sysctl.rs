//! Incident 2: rp_filter on Cilium's interfaces, set by the real systemd-sysctl.

use std::time::Instant;

use super::*;

fn read_rp(ns: &NetNsGuard, dev: &str) -> String {
    run_out("ip", &["netns", "exec", &ns.name, "cat", &format!("/proc/sys/net/ipv4/conf/{dev}/rp_filter")])
        .trim()
        .to_string()
}

// ---------------------------------------------------------------------------------------
// 1. rp_filter on Cilium's interfaces, by the real systemd-sysctl.

pub const SYSTEMD_SYSCTL: &str = "/lib/systemd/systemd-sysctl";

/// Runs the real systemd-sysctl in the netns and a private mount namespace with `args`
/// (config file paths, `--prefix=`); returns its pid (the shell execs it).
fn systemd_sysctl(ns: &NetNsGuard, args: &[&str]) -> u32 {
    let mut a = vec![
        "netns",
        "exec",
        ns.name.as_str(),
        "unshare",
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        r#"echo $$; exec "$0" "$@""#,
        SYSTEMD_SYSCTL,
    ];
    a.extend_from_slice(args);
    let out = run_out("ip", &a);
    out.lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pid from systemd-sysctl run: {out}"))
}

/// The netns of the rp_filter scenarios: `cilium_host`/`cilium_net`, an `lxc…` veth
/// (its pod end `pod-eth0`) and a non-Cilium `eth1`; rp_filter 0 everywhere.
struct RpNetns {
    ns: NetNsGuard,
    cilium: Vec<String>,
    netns: Option<u64>,
    defaults: String,
    override_conf: String,
}

fn rp_netns() -> RpNetns {
    require_exe(SYSTEMD_SYSCTL, "systemd");
    let defaults = fixture("rp_filter/50-default.conf");
    let defaults = defaults.to_str().unwrap();
    let override_conf = fixture("rp_filter/99-zzz-override_cilium.conf");
    let override_conf = override_conf.to_str().unwrap();

    let ns = NetNsGuard::new("rpf");
    let lxc = format!("lxc{:08x}", std::process::id().wrapping_mul(2654435761));
    ns.ip(&["link", "add", "cilium_host", "type", "veth", "peer", "name", "cilium_net"]);
    ns.ip(&["link", "add", &lxc, "type", "veth", "peer", "name", "pod-eth0"]);
    ns.ip(&["link", "add", "eth1", "type", "veth", "peer", "name", "eth1p"]);
    let cilium: Vec<String> = vec!["cilium_host".into(), "cilium_net".into(), lxc.clone()];
    let netns = Some(ns.inode());
    for d in &cilium {
        assert_eq!(read_rp(&ns, d), "0", "a new netns starts with rp_filter 0 on {d}");
    }
    RpNetns { ns, cilium, netns, defaults: defaults.to_string(), override_conf: override_conf.to_string() }
}

/// Incident 2 of DESIGN.md, first half: systemd's 50-default.conf applied by the real
/// systemd-sysctl to Cilium interfaces that were never set explicitly. systemd-sysctl
/// writes `default` = 2 only: it reads each interface the glob matches and skips the
/// write when the value is already 2, which it is, because the kernel copied `default`
/// (net/ipv4/devinet.c, `devinet_copy_dflt_conf`). No write names an interface.
/// Step `rp_filter/never-set`.
pub fn rp_filter_never_set(obs: Observer) {
    let RpNetns { ns, cilium, netns, defaults, .. } = rp_netns();
    let defaults = defaults.as_str();
    let pid = systemd_sysctl(&ns, &[defaults]);
    let at = Some(Instant::now());
    for d in &cilium {
        assert_eq!(
            read_rp(&ns, d),
            "2",
            "systemd-sysctl's default = 2 did not reach {d}: the incident did not reproduce"
        );
    }
    obs(&Step {
        id: "rp_filter/never-set",
        text: format!(
            "systemd-sysctl applied 50-default.conf: default = 2, copied by the kernel to {} (never set explicitly)",
            cilium.join(", ")
        ),
        expect: Some("rp-filter-on-cilium"),
        actor: Some("systemd-sysctl"),
        netns,
        pid: Some(pid),
        devs: cilium.clone(),
        at,
        ..Default::default()
    });
}

/// Incident 2 of DESIGN.md with systemd's own 50-default.conf lines, after Cilium set 0
/// on its interfaces. Steps:
/// - `rp_filter/after-0`: systemd-sysctl's glob writes 2 on each of them;
/// - `rp_filter/udev-prefix`: `systemd-sysctl --prefix=/net/ipv4/conf/<lxc>` as udev's
///   99-systemd.rules runs it for a new interface;
/// - `rp_filter/cilium-override`: Cilium's sysctl.d override applied by systemd-sysctl
///   writes 0 back: the fix, no finding.
pub fn rp_filter(obs: Observer) {
    let RpNetns { ns, cilium, netns, defaults, override_conf } = rp_netns();
    let (defaults, override_conf) = (defaults.as_str(), override_conf.as_str());
    let lxc = cilium[2].clone();
    // Cilium sets 0 on its interfaces (explicitly: the kernel stops copying `default`).
    let script: String =
        cilium.iter().map(|d| format!("echo 0 > /proc/sys/net/ipv4/conf/{d}/rp_filter;")).collect();
    ns.sh(&script);
    let pid = systemd_sysctl(&ns, &[defaults]);
    let at = Some(Instant::now());
    for d in &cilium {
        assert_eq!(read_rp(&ns, d), "2", "systemd-sysctl's glob did not set {d}");
    }
    obs(&Step {
        id: "rp_filter/after-0",
        text: format!(
            "systemd-sysctl applied 50-default.conf again: its glob wrote 2 on {}",
            cilium.join(", ")
        ),
        expect: Some("rp-filter-on-cilium"),
        actor: Some("systemd-sysctl"),
        netns,
        pid: Some(pid),
        devs: cilium.clone(),
        at,
        ..Default::default()
    });

    ns.sh(&format!("echo 0 > /proc/sys/net/ipv4/conf/{lxc}/rp_filter"));
    let prefix = format!("--prefix=/net/ipv4/conf/{lxc}");
    let pid = systemd_sysctl(&ns, &[&prefix, defaults]);
    let at = Some(Instant::now());
    assert_eq!(read_rp(&ns, &lxc), "2");
    obs(&Step {
        id: "rp_filter/udev-prefix",
        text: format!("systemd-sysctl {prefix} 50-default.conf (udev's 99-systemd.rules for a new interface) set 2 on {lxc}"),
        expect: Some("rp-filter-on-cilium"),
        actor: Some("systemd-sysctl"),
        netns,
        pid: Some(pid),
        devs: vec![lxc.clone()],
        at,
        ..Default::default()
    });

    let pid = systemd_sysctl(&ns, &[override_conf]);
    let at = Some(Instant::now());
    for d in &cilium {
        assert_eq!(read_rp(&ns, d), "0", "Cilium's override did not set {d} back to 0");
    }
    obs(&Step {
        id: "rp_filter/cilium-override",
        text: format!(
            "systemd-sysctl applied Cilium's 99-zzz-override_cilium.conf: 0 on {}",
            cilium.join(", ")
        ),
        expect: None,
        actor: Some("systemd-sysctl"),
        netns,
        pid: Some(pid),
        devs: cilium.clone(),
        at,
        ..Default::default()
    });
}
