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
//!
//! Flapping: when systemd-sysctl is restarted with Cilium's override in place (the fix),
//! one run applies 50-default.conf's `net.ipv4.conf.*.rp_filter = 2` and then the
//! override's `net.ipv4.conf.lxc*.rp_filter = 0` (globs are applied in file order), so
//! the same process writes 2 and then 0 to the same key a few milliseconds apart;
//! `sysctl --system` does the same. A non-zero write is therefore held for
//! [`REVERT_WINDOW_NS`] and dropped if the same process (pid and start time) puts 0 back
//! on the same key in that window (for `default`: on the same key, or explicitly on
//! every interface it reached); otherwise it is emitted by [`Detector::tick`] (the live
//! pipeline ticks every [`super::TICK_NS`] of wall time, replay of event time, and both
//! close every window at the end) or by the next event past the window.
//!
//! Why hold rather than emit at once and follow with an `info` "reverted" finding: the
//! on-call engineer sees (and alerts count) critical findings; a critical line for every
//! node where the fix is applied correctly is the false alarm that teaches people to
//! ignore this one. A hold of a quarter second costs nothing for a real incident (the
//! finding still comes well within a second, with the write's own time), and the two
//! writes stay visible as events in the tail and the recording.

use std::collections::{BTreeMap, HashMap};

use super::Detector;
use super::{attribution, finding, who, HostKey};
use crate::stream::schema::{Event, Finding, Kind, Severity, Timestamp};

pub const ID: &str = "rp-filter-on-cilium";

pub const REMEDIATION: &str = "Cilium needs rp_filter 0 on its interfaces and systemd's 50-default.conf sets 2 \
(udev runs systemd-sysctl for every new interface). Override it: create /etc/sysctl.d/99-zzz-override_cilium.conf with \
`-net.ipv4.conf.lxc*.rp_filter = 0`, `-net.ipv4.conf.cilium_*.rp_filter = 0` and `net.ipv4.conf.all.rp_filter = 0` \
(the kernel uses max(all, interface)), then `systemctl restart systemd-sysctl`; fix the running interfaces now with \
`sysctl -w net.ipv4.conf.<dev>.rp_filter=0`.";

/// Interfaces remembered per netns: pod teardown destroys lxc devices without a
/// request we see, so names of gone interfaces pile up; past this, only Cilium's
/// interfaces that were never written are kept (the ones `default` can still reach), and
/// if they alone are too many, the inventory starts over.
const MAX_IFACES: usize = 16_384;

/// How long a non-zero write waits for its writer to put 0 back (one systemd-sysctl or
/// `sysctl --system` run takes milliseconds). With the tick period
/// ([`super::TICK_NS`], 250 ms) a finding that is not reverted is out within half a second.
pub const REVERT_WINDOW_NS: i64 = 250_000_000;
/// Held writes kept at most; past this the oldest is emitted at once (never lost).
const MAX_HELD: usize = 4096;

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

/// What a held finding is about.
#[derive(Debug)]
enum Scope {
    /// One interface (sysctl or rtnetlink).
    Dev { dev: String, all: u32, via: &'static str },
    /// `all`, with the Cilium interfaces whose effective value changed.
    All { changed: Vec<String> },
    /// `default`, with the Cilium interfaces it reached that are not yet set back to 0.
    Default { all: u32, affected: Vec<String> },
}

/// A non-zero write waiting for [`REVERT_WINDOW_NS`] to see whether its writer reverts it.
#[derive(Debug)]
struct Held {
    ev: Event,
    value: u32,
    scope: Scope,
    until: i64,
}

impl Held {
    fn same_writer(&self, ev: &Event) -> bool {
        let a = &self.ev;
        a.host == ev.host
            && a.netns == ev.netns
            && a.pid == ev.pid
            && a.start_ns == ev.start_ns
            && a.actor == ev.actor
    }

    /// Applies a write of 0 on `dev` by the same writer; true when nothing is left to
    /// report.
    fn revert(&mut self, dev: &str) -> bool {
        match &mut self.scope {
            Scope::Dev { dev: d, .. } => d == dev,
            Scope::All { .. } => dev == "all",
            Scope::Default { affected, .. } => {
                if dev == "default" {
                    return true;
                }
                affected.retain(|d| d != dev);
                affected.is_empty()
            }
        }
    }

    fn into_finding(self) -> Finding {
        let (ev, v) = (&self.ev, self.value);
        match self.scope {
            Scope::Dev { dev, all, via } => dev_finding(ev, &dev, v, all, via),
            Scope::All { changed } => all_finding(ev, v, changed),
            Scope::Default { all, affected } => default_finding(ev, v, all, affected),
        }
    }
}

#[derive(Debug, Default)]
pub struct RpFilter {
    netns: HashMap<(HostKey, Option<u32>), Netns>,
    /// Non-zero writes inside their revert window, oldest first.
    held: Vec<Held>,
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
    v.parse::<i64>().ok().map(|n| n.clamp(0, u32::MAX as i64) as u32)
}

impl Detector for RpFilter {
    fn observe(&mut self, ev: &Event, out: &mut Vec<Finding>) {
        // Events past a window close it even between ticks (between ticks).
        self.tick(ev.time, out);
        let key = (ev.host.clone(), ev.netns);
        match ev.kind {
            Kind::SysctlWrite => {
                let Some((dev, k, v4)) = conf_sysctl(ev) else {
                    return;
                };
                let ns = self.netns.entry(key.clone()).or_default();
                if ns.ifaces.len() >= MAX_IFACES {
                    ns.ifaces.retain(|d, i| is_cilium_dev(d) && i.explicit.is_none());
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
                if v == 0 {
                    self.revert(ev, &dev);
                }
                let ns = self.netns.entry(key).or_default();
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
                            self.hold(ev, v, Scope::All { changed }, out);
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
                            self.hold(ev, v, Scope::Default { all, affected }, out);
                        }
                    }
                    _ => {
                        let iface = ns.ifaces.entry(dev.clone()).or_default();
                        iface.explicit = Some(v);
                        if v != 0 && is_cilium_dev(&dev) {
                            let all = ns.all.unwrap_or(0);
                            let dev = dev.clone();
                            self.hold(ev, v, Scope::Dev { dev, all, via: "sysctl" }, out);
                        }
                    }
                }
            }
            Kind::LinkSet | Kind::RouteDelete | Kind::AddrDelete => {
                let Some(dev) = ev.dev.clone() else { return };
                let ns = self.netns.entry(key).or_default();
                let iface = ns.ifaces.entry(dev.clone()).or_default();
                if ev.kind != Kind::LinkSet {
                    return;
                }
                let Some(v) = ev.rp_filter else { return };
                iface.explicit = Some(v);
                let all = ns.all.unwrap_or(0);
                if v == 0 {
                    self.revert(ev, &dev);
                } else if is_cilium_dev(&dev) {
                    self.hold(ev, v, Scope::Dev { dev, all, via: "rtnetlink" }, out);
                }
            }
            Kind::LinkDelete => {
                // A new link of the same name starts from `default` again.
                let Some(dev) = ev.dev.clone() else { return };
                if let Some(ns) = self.netns.get_mut(&key) {
                    ns.ifaces.remove(&dev);
                }
            }
            _ => {}
        }
    }

    /// Emits the held writes whose window closed by `now`.
    fn tick(&mut self, now: Timestamp, out: &mut Vec<Finding>) {
        if self.held.iter().any(|h| h.until <= now.0) {
            let (done, keep): (Vec<Held>, Vec<Held>) =
                std::mem::take(&mut self.held).into_iter().partition(|h| h.until <= now.0);
            self.held = keep;
            out.extend(done.into_iter().map(Held::into_finding));
        }
    }

    /// End of the stream: emits every held write.
    fn finish(&mut self, out: &mut Vec<Finding>) {
        out.extend(self.held.drain(..).map(Held::into_finding));
    }
}

impl RpFilter {
    fn hold(&mut self, ev: &Event, value: u32, scope: Scope, out: &mut Vec<Finding>) {
        if self.held.len() >= MAX_HELD {
            out.push(self.held.remove(0).into_finding());
        }
        self.held.push(Held {
            ev: ev.clone(),
            value,
            scope,
            until: ev.time.0.saturating_add(REVERT_WINDOW_NS),
        });
    }

    /// A write of 0 on `dev` by `ev`'s process: drops what it reverts.
    fn revert(&mut self, ev: &Event, dev: &str) {
        self.held.retain_mut(|h| !(h.same_writer(ev) && h.revert(dev)));
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
    ev.old_value.as_deref().map(|o| format!(" (was {})", o.trim())).unwrap_or_default()
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
    f.details.insert("interfaces_inferred_from".into(), "events seen in this netns".into());
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
    f.details.insert("interfaces_inferred_from".into(), "events seen in this netns".into());
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
            sysctl("systemd-sysctl", &rp("lxc8f3a1"), "2").old("0").behalf("systemd-udevd"),
        ]);
        assert_eq!(ids(&f), vec![ID]);
        let f = &f[0];
        assert_eq!(
            (f.dev.as_deref(), f.value.as_deref(), f.evidence.as_slice()),
            (Some("lxc8f3a1"), Some("2"), &[2][..])
        );
        assert_eq!(f.details["interfaces"], serde_json::json!(["lxc8f3a1"]));
        assert!(
            f.summary.starts_with(
                "systemd-sysctl (for systemd-udevd) set net.ipv4.conf.lxc8f3a1.rp_filter = 2 (was 0)"
            ),
            "{}",
            f.summary
        );
        assert!(
            f.remediation.contains("net.ipv4.conf.lxc*.rp_filter = 0")
                && f.remediation.contains("restart systemd-sysctl")
        );
    }

    #[test]
    fn cilium_host_and_net_slashed_names_and_rtnetlink() {
        assert_eq!(run(vec![sysctl("sh", "net/ipv4/conf/cilium_host/rp_filter", "1")]).len(), 1);
        assert_eq!(run(vec![sysctl("sh", &rp("cilium_net"), "2\n")]).len(), 1);
        let f = run(vec![
            ev(Kind::LinkSet, "netplan").netns(1).dev("cilium_host").ifindex(7),
            ev(Kind::LinkSet, "netplan").netns(1).ifindex(7).rp_filter(1),
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
        assert_eq!(f[0].details["interfaces"], serde_json::json!(["cilium_host", "lxc01"]));
        assert_eq!(f[0].dev.as_deref(), Some("all"));
        // Even with no Cilium interface seen.
        assert_eq!(run(vec![sysctl("systemd-sysctl", &rp("all"), "1")]).len(), 1);
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
            ev(Kind::LinkSet, "netplan").netns(4026531840).dev("eth0").rp_filter(2),
            ev(Kind::LinkSet, "cilium-agent").netns(4026531840).dev("lxc01").rp_filter(0),
        ]);
        assert!(f.is_empty(), "{f:#?}");
    }

    #[test]
    fn deleted_link_comes_back_fresh() {
        let f = run(vec![
            sysctl("cilium-agent", &rp("lxc01"), "0"),
            ev(Kind::LinkDelete, "cilium-agent").netns(4026531840).dev("lxc01"),
            ev(Kind::RouteDelete, "cilium-agent").netns(4026531840).dev("lxc01"),
            sysctl("systemd-sysctl", &rp("default"), "1"),
        ]);
        assert_eq!(ids(&f), vec![ID]);
    }

    /// The same event as written by process `pid` started at `start`.
    fn by(mut b: B, pid: u32, start: u64) -> B {
        b.0.pid = pid;
        b.0.start_ns = start;
        b
    }

    /// A systemd-sysctl run (pid 700) with 50-default.conf and Cilium's override.
    fn sd(name: &str, v: &str, secs: f64) -> B {
        by(sysctl("systemd-sysctl", name, v), 700, 1_000).at(secs)
    }

    #[test]
    fn one_run_writing_2_then_0_is_the_fix_not_the_incident() {
        // systemd-sysctl restarted with the override: `*.rp_filter = 2` then
        // `lxc*.rp_filter = 0` / `cilium_*.rp_filter = 0`, milliseconds apart.
        let f = run(vec![
            sd(&rp("cilium_host"), "2", 10.000).old("0"),
            sd(&rp("lxcab12"), "2", 10.001).old("0"),
            sd(&rp("eth0"), "2", 10.001),
            sd(&rp("cilium_host"), "0", 10.003).old("2"),
            sd(&rp("lxcab12"), "0", 10.004).old("2"),
        ]);
        assert!(f.is_empty(), "{f:#?}");
        // `all` and `default` put back by the same run: nothing either.
        let mut d = sd(&rp("default"), "2", 1.0);
        d.0.interfaces = Some(vec!["cilium_host".into(), "lxcab12".into()]);
        let f = run(vec![
            sd(&rp("all"), "2", 1.0),
            d,
            sd(&rp("all"), "0", 1.002),
            sd(&rp("default"), "0", 1.003),
        ]);
        assert!(f.is_empty(), "{f:#?}");
    }

    #[test]
    fn default_reverted_per_interface_keeps_what_is_left() {
        // `default` = 2 reached two never-set interfaces; the same run sets only one of
        // them back explicitly: the finding names the other one.
        let mut d = sd(&rp("default"), "2", 5.0);
        d.0.interfaces = Some(vec!["cilium_host".into(), "lxcab12".into()]);
        let f = run(vec![d, sd(&rp("cilium_host"), "0", 5.002)]);
        assert_eq!(ids(&f), vec![ID]);
        assert_eq!(f[0].details["interfaces"], serde_json::json!(["lxcab12"]));
        assert!(f[0].summary.contains("Cilium's lxcab12 "), "{}", f[0].summary);
        assert_eq!(f[0].evidence, vec![1]);
        // Both set back: nothing.
        let mut d = sd(&rp("default"), "2", 5.0);
        d.0.interfaces = Some(vec!["cilium_host".into(), "lxcab12".into()]);
        assert!(run(vec![d, sd(&rp("cilium_host"), "0", 5.002), sd(&rp("lxcab12"), "0", 5.003)]).is_empty());
    }

    #[test]
    fn reverts_that_do_not_count() {
        // Another process fixing it (the incident happened), a reused pid (other start
        // time), a revert after the window, a revert of another key, or `all` = 0 (the
        // kernel uses max(all, interface)): the finding stays.
        let late = REVERT_WINDOW_NS as f64 / 1e9 + 0.05;
        for second in [
            by(sysctl("cilium-agent", &rp("lxcab12"), "0"), 900, 5).at(3.001),
            by(sysctl("systemd-sysctl", &rp("lxcab12"), "0"), 700, 2_000).at(3.001),
            sd(&rp("lxcab12"), "0", 3.0 + late),
            sd(&rp("cilium_host"), "0", 3.001),
            sd(&rp("all"), "0", 3.001),
        ] {
            let f = run(vec![sd(&rp("lxcab12"), "2", 3.0).old("0"), second]);
            assert_eq!(ids(&f), vec![ID], "{f:#?}");
            assert_eq!((f[0].dev.as_deref(), f[0].evidence.as_slice()), (Some("lxcab12"), &[1][..]));
            assert_eq!(f[0].time, at(3.0), "the finding keeps the write's time");
        }
        // 2, 0, 2 again in one run: the last 2 stands.
        let f = run(vec![
            sd(&rp("lxcab12"), "2", 3.0),
            sd(&rp("lxcab12"), "0", 3.001),
            sd(&rp("lxcab12"), "1", 3.002),
        ]);
        assert_eq!(ids(&f), vec![ID]);
        assert_eq!((f[0].value.as_deref(), f[0].evidence.as_slice()), (Some("1"), &[3][..]));
    }

    #[test]
    fn rtnetlink_flap_is_dropped_too() {
        let link = |v: u32, secs: f64| {
            by(ev(Kind::LinkSet, "netplan").netns(1).dev("cilium_net"), 42, 7).rp_filter(v).at(secs)
        };
        assert!(run(vec![link(1, 2.0), link(0, 2.01)]).is_empty());
        assert_eq!(ids(&run(vec![link(1, 2.0)])), vec![ID]);
    }

    #[test]
    fn a_write_not_reverted_comes_out_within_a_second() {
        // Live: the pipeline ticks with the wall clock (every 250 ms), and at stop.
        let mut d = RpFilter::default();
        let mut out = Vec::new();
        d.observe(&sd(&rp("lxcab12"), "2", 20.0).seq(8).0, &mut out);
        assert!(out.is_empty(), "held for its revert window");
        d.tick(at(20.0 + (REVERT_WINDOW_NS as f64 - 1e6) / 1e9), &mut out);
        assert!(out.is_empty());
        d.tick(at(20.0 + REVERT_WINDOW_NS as f64 / 1e9), &mut out);
        assert_eq!(ids(&out), vec![ID]);
        const { assert!(REVERT_WINDOW_NS + super::super::TICK_NS <= 500_000_000, "out within half a second") };
        // The next event past the window closes it too (between ticks).
        let mut d = RpFilter::default();
        let mut out = Vec::new();
        d.observe(&sd(&rp("lxcab12"), "2", 20.0).0, &mut out);
        d.observe(&sysctl("sh", "net.ipv4.ip_forward", "1").at(20.3).0, &mut out);
        assert_eq!(ids(&out), vec![ID]);
        // At stop, whatever is held comes out.
        let mut d = RpFilter::default();
        let mut out = Vec::new();
        d.observe(&sd(&rp("all"), "1", 20.0).0, &mut out);
        d.finish(&mut out);
        assert_eq!(ids(&out), vec![ID]);
    }

    #[test]
    fn held_writes_stay_bounded() {
        let mut d = RpFilter::default();
        let mut out = Vec::new();
        for i in 0..(MAX_HELD + 10) {
            let e = by(sysctl("sh", &rp("lxcab12"), "2"), i as u32 + 1, 1).at(1.0).0;
            d.observe(&e, &mut out);
        }
        assert_eq!(d.held.len(), MAX_HELD);
        assert_eq!(out.len(), 10, "the oldest are emitted, never lost");
        d.finish(&mut out);
        assert_eq!(out.len(), MAX_HELD + 10);
    }

    #[test]
    fn interface_inventory_stays_bounded_under_pod_churn() {
        let mut d = RpFilter::default();
        let mut out = Vec::new();
        for i in 0..(MAX_IFACES * 3) {
            let e = sysctl("cilium-agent", &format!("net.ipv4.conf.lxc{i:x}.forwarding"), "1").0;
            d.observe(&e, &mut out);
        }
        assert!(d.netns.values().all(|ns| ns.ifaces.len() <= MAX_IFACES));
        assert!(out.is_empty());
    }
}
