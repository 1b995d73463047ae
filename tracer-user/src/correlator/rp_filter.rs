//! `rp-filter-on-cilium`: reverse-path filtering switched on for Cilium's interfaces
//! (incident 2). Cilium needs `rp_filter = 0` on `cilium_host`, `cilium_net` and `lxc*`;
//! the kernel uses max(`all`, interface), and a write to `default` is copied to every
//! interface whose value was never written (net/ipv4/devinet.c, `devinet_copy_dflt_conf`).
//!
//! Findings:
//! - a non-zero write on a Cilium interface, by sysctl or over rtnetlink (RTM_SETLINK
//!   with IFLA_INET_CONF, which the sysctl path never sees);
//! - a non-zero write on `all` (breaks every interface, whatever else is known);
//! - a non-zero write on `default` when Cilium interfaces exist in that netns and were
//!   never set explicitly. The correlator has no kernel: existence and explicit writes are
//!   inferred from the events seen in that netns (any event naming the interface, sysctl
//!   or rtnetlink writes of its rp_filter), and the finding says so.
//!
//! A write of 0 is never a finding: Cilium's own override (a sysctl.d file applied by
//! systemd-sysctl) is the fix, not the incident.

use std::collections::{BTreeMap, HashMap};

use super::{attribution, finding, who, HostKey};
use crate::schema::{Event, Finding, Kind, Severity};

pub const ID: &str = "rp-filter-on-cilium";

pub const REMEDIATION: &str = "Cilium needs rp_filter 0 on its interfaces and systemd's 50-default.conf sets 2 \
(udev runs systemd-sysctl for every new interface). Override it: create /etc/sysctl.d/99-zzz-override_cilium.conf with \
`-net.ipv4.conf.lxc*.rp_filter = 0`, `-net.ipv4.conf.cilium_*.rp_filter = 0` and `net.ipv4.conf.all.rp_filter = 0` \
(the kernel uses max(all, interface)), then `systemctl restart systemd-sysctl`; fix the running interfaces now with \
`sysctl -w net.ipv4.conf.<dev>.rp_filter=0`.";

/// ifindex -> name entries kept before starting over (ifindexes only grow in a netns).
const MAX_NAMES: usize = 65_536;
/// Interfaces remembered per netns: pod teardown destroys lxc devices without a
/// request we see, so names of gone interfaces pile up; past this, only Cilium's
/// interfaces that were never written are kept (the ones `default` can still reach), and
/// if they alone are too many, the inventory starts over.
const MAX_IFACES: usize = 16_384;

/// The interfaces Cilium needs rp_filter 0 on.
pub fn is_cilium_dev(dev: &str) -> bool {
    dev == "cilium_host" || dev == "cilium_net" || dev.starts_with("lxc")
}

#[derive(Debug, Default)]
struct Iface {
    /// Value written explicitly (sysctl on the interface, or rtnetlink).
    explicit: Option<u32>,
}

#[derive(Debug, Default)]
struct Netns {
    all: Option<u32>,
    default: Option<u32>,
    ifaces: BTreeMap<String, Iface>,
}

impl Netns {
    /// The interface's own value: written, or copied from `default`; 0 when unknown.
    fn own(&self, i: &Iface) -> u32 {
        i.explicit.or(self.default).unwrap_or(0)
    }
}

#[derive(Debug, Default)]
pub struct Detector {
    netns: HashMap<(HostKey, Option<u32>), Netns>,
    /// ifindex -> name per netns, learned from events naming both.
    names: HashMap<(HostKey, Option<u32>, u32), String>,
}

/// (interface, key) of `net.ipv4.conf.<dev>.<key>` (dotted or slashed).
fn conf_sysctl(ev: &Event) -> Option<(String, String, bool)> {
    let name = ev.name.as_deref()?.replace('/', ".");
    let (v4, rest) = if let Some(r) = name.strip_prefix("net.ipv4.conf.") {
        (true, r)
    } else {
        (false, name.strip_prefix("net.ipv6.conf.")?)
    };
    let (dev, key) = rest.rsplit_once('.')?;
    // The event's own dev is exact when the interface name has a dot (eth0.100).
    let dev = ev.dev.clone().unwrap_or_else(|| dev.to_string());
    Some((dev, key.to_string(), v4))
}

fn parse_value(v: Option<&str>) -> Option<u32> {
    let v = v?.trim().trim_end_matches('\0');
    v.parse::<i64>()
        .ok()
        .map(|n| n.clamp(0, u32::MAX as i64) as u32)
}

impl Detector {
    fn dev_of(&mut self, ev: &Event) -> Option<String> {
        let key = (ev.host.clone(), ev.netns);
        match (&ev.dev, ev.ifindex) {
            (Some(d), Some(i)) => {
                if self.names.len() >= MAX_NAMES {
                    self.names.clear();
                }
                self.names.insert((key.0, key.1, i), d.clone());
                Some(d.clone())
            }
            (Some(d), None) => Some(d.clone()),
            (None, Some(i)) => self.names.get(&(key.0, key.1, i)).cloned(),
            (None, None) => None,
        }
    }

    pub fn observe(&mut self, ev: &Event, out: &mut Vec<Finding>) {
        let key = (ev.host.clone(), ev.netns);
        match ev.kind {
            Kind::SysctlWrite => {
                let Some((dev, k, v4)) = conf_sysctl(ev) else {
                    return;
                };
                let ns = self.netns.entry(key).or_default();
                if ns.ifaces.len() >= MAX_IFACES {
                    ns.ifaces
                        .retain(|d, i| is_cilium_dev(d) && i.explicit.is_none());
                    if ns.ifaces.len() >= MAX_IFACES / 2 {
                        // Still too many: start over rather than pay this on every event.
                        ns.ifaces.clear();
                    }
                }
                if dev != "all" && dev != "default" {
                    ns.ifaces.entry(dev.clone()).or_default();
                }
                // The live pipeline lists the namespace's interfaces on writes to `all`
                // and `default` (events.rs): links created without any traced event
                // (RTM_NEWLINK is not traced) are known from there on.
                for name in ev.interfaces.iter().flatten() {
                    if name != "lo" {
                        ns.ifaces.entry(name.clone()).or_default();
                    }
                }
                if !(v4 && k == "rp_filter") {
                    return;
                }
                let Some(v) = parse_value(ev.value.as_deref()) else {
                    return;
                };
                match dev.as_str() {
                    "all" => {
                        let old = parse_value(ev.old_value.as_deref()).or(ns.all).unwrap_or(0);
                        ns.all = Some(v);
                        if v != 0 {
                            let changed: Vec<String> = ns
                                .ifaces
                                .iter()
                                .filter(|(d, _)| is_cilium_dev(d))
                                .filter(|(_, i)| v.max(ns.own(i)) != old.max(ns.own(i)))
                                .map(|(d, _)| d.clone())
                                .collect();
                            out.push(all_finding(ev, v, changed));
                        }
                    }
                    "default" => {
                        ns.default = Some(v);
                        let all = ns.all.unwrap_or(0);
                        let affected: Vec<String> = ns
                            .ifaces
                            .iter()
                            .filter(|(d, i)| is_cilium_dev(d) && i.explicit.is_none())
                            .map(|(d, _)| d.clone())
                            .collect();
                        if v != 0 && !affected.is_empty() {
                            out.push(default_finding(ev, v, all, affected));
                        }
                    }
                    _ => {
                        let iface = ns.ifaces.entry(dev.clone()).or_default();
                        iface.explicit = Some(v);
                        if v != 0 && is_cilium_dev(&dev) {
                            let all = ns.all.unwrap_or(0);
                            out.push(dev_finding(ev, &dev, v, all, "sysctl"));
                        }
                    }
                }
            }
            Kind::LinkSet | Kind::RouteDelete | Kind::AddrDelete => {
                let Some(dev) = self.dev_of(ev) else { return };
                let ns = self.netns.entry(key).or_default();
                let iface = ns.ifaces.entry(dev.clone()).or_default();
                if ev.kind != Kind::LinkSet {
                    return;
                }
                let Some(v) = ev.rp_filter else { return };
                iface.explicit = Some(v);
                if v != 0 && is_cilium_dev(&dev) {
                    let all = ns.all.unwrap_or(0);
                    out.push(dev_finding(ev, &dev, v, all, "rtnetlink"));
                }
            }
            Kind::LinkDelete => {
                // A new link of the same name starts from `default` again.
                let Some(dev) = self.dev_of(ev) else { return };
                if let Some(ns) = self.netns.get_mut(&key) {
                    ns.ifaces.remove(&dev);
                }
            }
            _ => {}
        }
    }
}

fn base(ev: &Event, dev: &str, v: u32, summary: String, interfaces: Vec<String>) -> Finding {
    let mut f = finding(ID, Severity::Critical, ev, summary, REMEDIATION);
    f.dev = Some(dev.to_string());
    f.value = Some(v.to_string());
    attribution(&mut f, ev);
    f.details.insert("interfaces".into(), interfaces.into());
    if let Some(n) = ev.netns {
        f.details.insert("netns".into(), n.into());
    }
    if let Some(n) = &ev.name {
        f.details.insert("name".into(), n.clone().into());
    }
    if let Some(o) = &ev.old_value {
        f.details.insert("old_value".into(), o.clone().into());
    }
    f
}

fn was(ev: &Event) -> String {
    ev.old_value
        .as_deref()
        .map(|o| format!(" (was {})", o.trim()))
        .unwrap_or_default()
}

fn dev_finding(ev: &Event, dev: &str, v: u32, all: u32, via: &str) -> Finding {
    let how = if via == "rtnetlink" {
        format!("set rp_filter {v} on {dev} over rtnetlink (RTM_SETLINK IFLA_INET_CONF, invisible to sysctl)")
    } else {
        format!("set net.ipv4.conf.{dev}.rp_filter = {v}{}", was(ev))
    };
    let mut f = base(
        ev,
        dev,
        v,
        format!(
            "{} {how}: Cilium needs 0 on {dev}, IPv4 between its pods and outside the node is dropped",
            who(ev)
        ),
        vec![dev.to_string()],
    );
    f.details.insert("via".into(), via.into());
    f.details.insert("effective".into(), v.max(all).into());
    f
}

fn all_finding(ev: &Event, v: u32, changed: Vec<String>) -> Finding {
    let which = if changed.is_empty() {
        "cilium_host, cilium_net and lxc* (none seen in this netns yet)".to_string()
    } else {
        changed.join(", ")
    };
    let mut f = base(
        ev,
        "all",
        v,
        format!(
            "{} set net.ipv4.conf.all.rp_filter = {v}{}: the kernel uses max(all, interface), so rp_filter is on \
             for every interface, including Cilium's {which}",
            who(ev),
            was(ev)
        ),
        changed,
    );
    f.details.insert(
        "interfaces_inferred_from".into(),
        "events seen in this netns".into(),
    );
    f
}

fn default_finding(ev: &Event, v: u32, all: u32, affected: Vec<String>) -> Finding {
    let mut f = base(
        ev,
        "default",
        v,
        format!(
            "{} set net.ipv4.conf.default.rp_filter = {v}{}: the kernel copies it to every interface never set \
             explicitly, here Cilium's {} (inferred from the events seen in this netns)",
            who(ev),
            was(ev),
            affected.join(", ")
        ),
        affected,
    );
    f.details.insert(
        "interfaces_inferred_from".into(),
        "events seen in this netns".into(),
    );
    f.details.insert("effective".into(), v.max(all).into());
    f
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    fn rp(dev: &str) -> String {
        format!("net.ipv4.conf.{dev}.rp_filter")
    }

    #[test]
    fn udev_sysctl_sets_2_on_new_lxc() {
        let f = run(vec![
            sysctl("cilium-agent", &rp("lxc8f3a1"), "0").old("2"),
            sysctl("systemd-sysctl", &rp("lxc8f3a1"), "2")
                .old("0")
                .behalf("systemd-udevd"),
        ]);
        assert_eq!(ids(&f), vec![ID]);
        let f = &f[0];
        assert_eq!(
            (f.dev.as_deref(), f.value.as_deref(), f.evidence.as_slice()),
            (Some("lxc8f3a1"), Some("2"), &[2][..])
        );
        assert_eq!(f.details["interfaces"], serde_json::json!(["lxc8f3a1"]));
        assert!(f.summary.starts_with("systemd-sysctl (for systemd-udevd) set net.ipv4.conf.lxc8f3a1.rp_filter = 2 (was 0)"), "{}", f.summary);
        assert!(
            f.remediation.contains("net.ipv4.conf.lxc*.rp_filter = 0")
                && f.remediation.contains("restart systemd-sysctl")
        );
    }

    #[test]
    fn cilium_host_and_net_slashed_names_and_rtnetlink() {
        assert_eq!(
            run(vec![sysctl(
                "sh",
                "net/ipv4/conf/cilium_host/rp_filter",
                "1"
            )])
            .len(),
            1
        );
        assert_eq!(run(vec![sysctl("sh", &rp("cilium_net"), "2\n")]).len(), 1);
        let f = run(vec![
            ev(Kind::LinkSet, "netplan")
                .netns(1)
                .dev("cilium_host")
                .ifindex(7),
            ev(Kind::LinkSet, "netplan")
                .netns(1)
                .ifindex(7)
                .rp_filter(1),
        ]);
        assert_eq!(ids(&f), vec![ID]);
        assert_eq!(f[0].dev.as_deref(), Some("cilium_host"));
        assert_eq!(f[0].details["via"], "rtnetlink");
    }

    #[test]
    fn all_breaks_every_interface() {
        let f = run(vec![
            sysctl("cilium-agent", &rp("cilium_host"), "0"),
            sysctl("cilium-agent", "net.ipv4.conf.lxc01.forwarding", "1"),
            sysctl("systemd-sysctl", &rp("all"), "2").old("0"),
        ]);
        assert_eq!(ids(&f), vec![ID]);
        assert_eq!(
            f[0].details["interfaces"],
            serde_json::json!(["cilium_host", "lxc01"])
        );
        assert_eq!(f[0].dev.as_deref(), Some("all"));
        // Even with no Cilium interface seen.
        assert_eq!(
            run(vec![sysctl("systemd-sysctl", &rp("all"), "1")]).len(),
            1
        );
    }

    #[test]
    fn default_reaches_interfaces_listed_with_the_write() {
        // No event ever named the interfaces: the write itself carries the inventory.
        let mut w = sysctl("systemd-sysctl", &rp("default"), "2").old("0");
        w.0.interfaces = Some(vec!["lo".into(), "eth0".into(), "cilium_host".into(), "lxcab12".into()]);
        let f = run(vec![w]);
        assert_eq!(ids(&f), vec![ID]);
        assert_eq!(f[0].details["interfaces"], serde_json::json!(["cilium_host", "lxcab12"]));
        // The same inventory with a write of 0 (Cilium's override): nothing.
        let mut w = sysctl("systemd-sysctl", &rp("default"), "0");
        w.0.interfaces = Some(vec!["cilium_host".into()]);
        assert!(run(vec![w]).is_empty());
    }

    #[test]
    fn default_only_matters_for_cilium_interfaces_never_set() {
        // lxc01 seen (another sysctl), never had its rp_filter written: default reaches it.
        let f = run(vec![
            sysctl("cilium-agent", "net.ipv4.conf.lxc01.forwarding", "1"),
            sysctl("cilium-agent", &rp("cilium_host"), "0"),
            sysctl("systemd-sysctl", &rp("default"), "2").old("0"),
        ]);
        assert_eq!(ids(&f), vec![ID]);
        assert_eq!(f[0].details["interfaces"], serde_json::json!(["lxc01"]));
        assert!(f[0].summary.contains("inferred"), "{}", f[0].summary);
        // Every Cilium interface set explicitly, or none seen, or in another netns: nothing.
        assert!(run(vec![
            sysctl("cilium-agent", &rp("lxc01"), "0"),
            sysctl("systemd-sysctl", &rp("default"), "2")
        ])
        .is_empty());
        assert!(run(vec![sysctl("systemd-sysctl", &rp("default"), "2")]).is_empty());
        assert!(run(vec![
            sysctl("cilium-agent", "net.ipv4.conf.lxc01.forwarding", "1").netns(5),
            sysctl("systemd-sysctl", &rp("default"), "2")
        ])
        .is_empty());
    }

    #[test]
    fn zero_and_unrelated_interfaces_are_not_findings() {
        let f = run(vec![
            sysctl("systemd-sysctl", &rp("lxc01"), "0").old("2"),
            sysctl("systemd-sysctl", &rp("all"), "0"),
            sysctl("systemd-sysctl", &rp("eth0"), "2"),
            sysctl("systemd-sysctl", &rp("ens5.100"), "1").dev("ens5.100"),
            sysctl("systemd-sysctl", &rp("vxlan.calico"), "1"),
            sysctl("systemd-sysctl", "net.ipv4.conf.lxc01.accept_local", "1"),
            sysctl("systemd-sysctl", "net.ipv4.ip_forward", "1"),
            ev(Kind::LinkSet, "netplan")
                .netns(4026531840)
                .dev("eth0")
                .rp_filter(2),
            ev(Kind::LinkSet, "cilium-agent")
                .netns(4026531840)
                .dev("lxc01")
                .rp_filter(0),
        ]);
        assert!(f.is_empty(), "{f:#?}");
    }

    #[test]
    fn deleted_link_comes_back_fresh() {
        let f = run(vec![
            sysctl("cilium-agent", &rp("lxc01"), "0"),
            ev(Kind::LinkDelete, "cilium-agent")
                .netns(4026531840)
                .dev("lxc01"),
            ev(Kind::RouteDelete, "cilium-agent")
                .netns(4026531840)
                .dev("lxc01"),
            sysctl("systemd-sysctl", &rp("default"), "1"),
        ]);
        assert_eq!(ids(&f), vec![ID]);
    }

    #[test]
    fn interface_inventory_stays_bounded_under_pod_churn() {
        let mut d = Detector::default();
        let mut out = Vec::new();
        for i in 0..(MAX_IFACES * 3) {
            let e = sysctl(
                "cilium-agent",
                &format!("net.ipv4.conf.lxc{i:x}.forwarding"),
                "1",
            )
            .0;
            d.observe(&e, &mut out);
        }
        assert!(d.netns.values().all(|ns| ns.ifaces.len() <= MAX_IFACES));
        assert!(out.is_empty());
    }
}
