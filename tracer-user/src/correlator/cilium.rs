//! `cilium-route-deleted` and `cilium-rule-deleted`: someone other than Cilium removes
//! Cilium's routing state (incident 3: systemd-networkd >= 248 removes "foreign" routes
//! and rules on reconfigure).
//!
//! Cilium's state, per its datapath (pkg/datapath/linux/routing, `linux_defaults`):
//! - rules `9: fwmark 0x200/0xf00 lookup 2004`, `10: fwmark 0xa00/0xf00 lookup 2005`, and
//!   the local rule moved to priority 100;
//! - routes in tables 2004 and 2005, and routes via `cilium_host`, `cilium_net`, `lxc*`.
//!
//! The route protocol is not used: since Cilium 1.14 its routes are `proto kernel`, like
//! every connected route. Removing an address or a link (or setting it down) flushes its
//! IPv4 routes with no RTM_DELROUTE at all, so addr_delete, link_delete and link_set down
//! on those devices count as route deletions.

use super::rp_filter::is_cilium_dev;
use super::Detector;
use super::{attribution, finding, made_by, parse_num, who};
use crate::stream::schema::{table_name, Event, Finding, Kind, Severity};

pub const ROUTE_ID: &str = "cilium-route-deleted";
pub const RULE_ID: &str = "cilium-rule-deleted";

/// Cilium's routing tables (`linux_defaults.RouteTableToProxy`, `RouteTableFromProxy`).
pub const TABLES: &[u32] = &[2004, 2005];
/// Priorities of Cilium's rules: to-proxy, from-proxy, the moved local rule.
pub const PRIORITIES: &[u32] = &[9, 10, 100];
/// Cilium's proxy marks under mask 0xf00.
pub const MARKS: &[u32] = &[0x200, 0xa00];
const MARK_MASK: u32 = 0xf00;

/// Cilium's own components.
const OWNERS: &[&str] = &["cilium-agent", "cilium-cni"];

fn remediation(ev: &Event, what: &str) -> String {
    let networkd =
        "set `ManageForeignRoutes=no` and `ManageForeignRoutingPolicyRules=no` in the [Network] section of \
                    /etc/systemd/networkd.conf (or a networkd.conf.d drop-in) and restart systemd-networkd";
    let first = match super::actor(ev).as_str() {
        "systemd-networkd" => format!("systemd-networkd removes {what} it did not create: {networkd}."),
        "NetworkManager" => format!(
            "NetworkManager manages Cilium's devices: add `unmanaged-devices=interface-name:cilium_*;interface-name:lxc*` \
             under [keyfile] in NetworkManager.conf and reload it. If systemd-networkd runs too, {networkd}."
        ),
        _ => format!(
            "{} removed {what} owned by Cilium: stop it from managing foreign routing state. If it is systemd-networkd \
             or runs it, {networkd}.",
            super::actor(ev)
        ),
    };
    format!("{first} Restart cilium-agent (or wait for its next reconcile) to restore them.")
}

/// A fwmark as `0x200/0xf00` (mark/mask), or a bare mark.
fn cilium_mark(s: &str) -> bool {
    let (mark, mask) = match s.split_once('/') {
        Some((m, k)) => (parse_num(m), parse_num(k)),
        None => (parse_num(s), None),
    };
    let Some(mark) = mark else { return false };
    match mask {
        Some(k) if k != MARK_MASK => false,
        _ => MARKS.contains(&(mark & MARK_MASK)) && mark & !MARK_MASK == 0,
    }
}

#[derive(Debug, Default)]
pub struct CiliumDeletions {}

impl Detector for CiliumDeletions {
    fn observe(&mut self, ev: &Event, out: &mut Vec<Finding>) {
        if !matches!(
            ev.kind,
            Kind::RouteDelete | Kind::RuleDelete | Kind::AddrDelete | Kind::LinkDelete | Kind::LinkSet
        ) {
            return;
        }
        let dev = ev.dev.clone();
        // A delete the kernel refused (no such route, no permission) changed nothing.
        if made_by(ev, OWNERS) || ev.confirmed == Some(false) {
            return;
        }
        let cilium_dev = dev.as_deref().filter(|d| is_cilium_dev(d));
        let cilium_table = ev.table.filter(|t| TABLES.contains(t));
        match ev.kind {
            Kind::RouteDelete => {
                if cilium_table.is_none() && cilium_dev.is_none() {
                    return;
                }
                let what = ev.object.as_deref().cloned().unwrap_or_else(|| {
                    let mut what = ev.dst.clone().unwrap_or_else(|| "a route".into());
                    if let Some(t) = ev.table {
                        what.push_str(&format!(" table {}", table_name(t)));
                    }
                    if let Some(d) = &dev {
                        what.push_str(&format!(" dev {d}"));
                    }
                    what
                });
                let mut f = finding(
                    ROUTE_ID,
                    Severity::Critical,
                    ev,
                    format!(
                        "{} deleted Cilium's route {what}: pod traffic through it is blackholed",
                        who(ev)
                    ),
                    &remediation(ev, "routes"),
                );
                f.dev = dev.clone();
                net_details(&mut f, ev);
                out.push(f);
            }
            Kind::AddrDelete | Kind::LinkDelete | Kind::LinkSet => {
                // The routes the kernel flushed with it, when tracer knew the state.
                let cilium_flushed: Option<Vec<&String>> =
                    ev.flushed_routes.as_ref().map(|r| r.iter().filter(|r| is_cilium_route(r)).collect());
                let flushed_any = cilium_flushed.as_ref().is_some_and(|r| !r.is_empty());
                let Some(d) = cilium_dev.or(dev.as_deref().filter(|_| flushed_any)) else { return };
                // Removing an IPv6 address (networkd drops the link-local fe80:: ones
                // routinely) flushes no IPv4 route; only IPv4 addresses matter here.
                if ev.kind == Kind::AddrDelete && ev.family.as_deref() == Some("inet6") {
                    return;
                }
                let action = match ev.kind {
                    Kind::AddrDelete => {
                        format!("deleted address {} from", ev.dst.as_deref().unwrap_or("an address"))
                    }
                    Kind::LinkDelete => "deleted link".into(),
                    _ if ev.up == Some(false) => "set down link".into(),
                    _ => return,
                };
                let consequence = match &cilium_flushed {
                    Some(r) if !r.is_empty() => format!(
                        "the kernel flushed {} of Cilium's IPv4 routes with no route notification: {}",
                        r.len(),
                        r.iter().map(|r| r.as_str()).collect::<Vec<_>>().join("; ")
                    ),
                    Some(_) => format!("no IPv4 route of Cilium's went with it, but {d} is Cilium's device"),
                    None => {
                        format!("the kernel flushes Cilium's IPv4 routes via {d} with no route notification")
                    }
                };
                let mut f = finding(
                    ROUTE_ID,
                    Severity::Critical,
                    ev,
                    format!("{} {action} {d}: {consequence}", who(ev)),
                    &remediation(ev, "addresses and links, and with them routes,"),
                );
                f.dev = Some(d.to_string());
                f.details.insert("flushed_by".into(), ev.kind.as_str().into());
                if let Some(r) = &cilium_flushed {
                    f.details.insert(
                        "flushed_routes".into(),
                        r.iter().map(|r| r.as_str()).collect::<Vec<_>>().into(),
                    );
                }
                net_details(&mut f, ev);
                out.push(f);
            }
            Kind::RuleDelete => {
                let by_prio = ev.priority.filter(|p| PRIORITIES.contains(p));
                let by_mark = ev.fwmark.as_deref().filter(|m| cilium_mark(m));
                if by_prio.is_none() && by_mark.is_none() && cilium_table.is_none() {
                    return;
                }
                let what = ev.object.as_deref().cloned().unwrap_or_else(|| {
                    let mut what = Vec::new();
                    if let Some(p) = ev.priority {
                        what.push(format!("{p}:"));
                    }
                    if let Some(m) = &ev.fwmark {
                        what.push(format!("fwmark {m}"));
                    }
                    if let Some(t) = ev.table {
                        what.push(format!("lookup {}", table_name(t)));
                    }
                    if what.is_empty() {
                        "a rule".to_string()
                    } else {
                        what.join(" ")
                    }
                });
                let mut f = finding(
                    RULE_ID,
                    Severity::Critical,
                    ev,
                    format!(
                        "{} deleted Cilium's routing policy rule {what}: proxied and local traffic stops matching \
                         its tables",
                        who(ev)
                    ),
                    &remediation(ev, "routing policy rules"),
                );
                f.dev = dev.clone();
                net_details(&mut f, ev);
                out.push(f);
            }
            _ => {}
        }
    }
}

/// Whether a route, as `ip route` prints it, is Cilium's: in one of its tables or
/// through one of its devices.
fn is_cilium_route(route: &str) -> bool {
    let words: Vec<&str> = route.split_whitespace().collect();
    words.windows(2).any(|w| match w[0] {
        "table" => w[1].parse::<u32>().is_ok_and(|t| TABLES.contains(&t)),
        "dev" => is_cilium_dev(w[1]),
        _ => false,
    })
}

fn net_details(f: &mut Finding, ev: &Event) {
    attribution(f, ev);
    let d = &mut f.details;
    if let Some(n) = ev.netns {
        d.insert("netns".into(), n.into());
    }
    for (k, v) in [
        ("family", &ev.family),
        ("dst", &ev.dst),
        ("protocol", &ev.protocol),
        ("fwmark", &ev.fwmark),
        ("gateway", &ev.gateway),
        ("request", &ev.request),
    ] {
        if let Some(v) = v {
            d.insert(k.into(), v.clone().into());
        }
    }
    if let Some(o) = &ev.object {
        d.insert("object".into(), o.as_str().into());
    }
    if let Some(t) = ev.table {
        d.insert("table".into(), t.into());
    }
    if let Some(p) = ev.priority {
        d.insert("priority".into(), p.into());
    }
    if let Some(c) = ev.confirmed {
        d.insert("confirmed".into(), c.into());
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    fn route(actor: &str) -> B {
        ev(Kind::RouteDelete, actor).netns(4026531840)
    }
    fn rule(actor: &str) -> B {
        ev(Kind::RuleDelete, actor).netns(4026531840)
    }

    #[test]
    fn networkd_deletes_cilium_routes() {
        let f = run(vec![
            route("systemd-networkd").table(2004).dst("0.0.0.0/0").dev("lo"),
            route("systemd-networkd").table(254).dst("10.0.1.0/24").dev("cilium_host"),
            route("systemd-networkd").table(254).dst("10.0.1.17/32").dev("lxcab12"),
            route("systemd-networkd").table(2005).dst("10.0.1.5/32"),
        ]);
        assert_eq!(ids(&f), vec![ROUTE_ID; 4]);
        assert_eq!(f[0].actor, "systemd-networkd");
        assert!(
            f[0].remediation.contains("ManageForeignRoutes=no")
                && f[0].remediation.contains("ManageForeignRoutingPolicyRules=no")
        );
        assert_eq!(f[1].dev.as_deref(), Some("cilium_host"));
        assert!(f[1].summary.contains("10.0.1.0/24 table main dev cilium_host"), "{}", f[1].summary);
        assert!(f[0].summary.contains("0.0.0.0/0 table 2004 dev lo"), "{}", f[0].summary);
        assert_eq!(f[2].evidence, vec![3]);
    }

    #[test]
    fn dev_by_ifindex_and_flushes() {
        let f = run(vec![
            ev(Kind::LinkSet, "cilium-agent").netns(1).dev("cilium_net").ifindex(4).up(true),
            route("ip").netns(1).ifindex(4).dst("10.0.0.0/8"),
            ev(Kind::AddrDelete, "ip").netns(1).dev("cilium_host").dst("10.0.1.1/32"),
            ev(Kind::LinkDelete, "sh").netns(1).dev("lxc_health"),
            // An IPv6 address removal flushes no IPv4 route: not counted below.
            ev(Kind::AddrDelete, "systemd-networkd")
                .netns(1)
                .dev("cilium_host")
                .dst("fe80::1/64")
                .family("inet6"),
            ev(Kind::LinkSet, "NetworkManager").netns(1).ifindex(4).up(false),
        ]);
        assert_eq!(ids(&f), vec![ROUTE_ID; 4], "{f:#?}");
        assert_eq!(f[0].dev.as_deref(), Some("cilium_net"));
        assert_eq!(f[1].details["flushed_by"], "addr_delete");
        assert!(f[3].remediation.contains("unmanaged-devices"));
    }

    #[test]
    fn networkd_deletes_cilium_rules() {
        let f = run(vec![
            rule("systemd-networkd").priority(9).fwmark("0x200/0xf00").table(2004),
            rule("systemd-networkd").priority(10).fwmark("0xa00/0xf00").table(2005),
            rule("systemd-networkd").priority(100).table(255),
            rule("ip").fwmark("0xa00/0xf00"),
            rule("ip").table(2004),
        ]);
        assert_eq!(ids(&f), vec![RULE_ID; 5]);
        assert!(f[0].summary.contains("9: fwmark 0x200/0xf00 lookup 2004"), "{}", f[0].summary);
        // The moved local rule reads as `ip rule` prints it.
        assert!(f[2].summary.contains("rule 100: lookup local:"), "{}", f[2].summary);
        assert_eq!(f[2].details["table"], 255, "details keep the number");
    }

    #[test]
    fn the_kernels_description_and_answer_decide() {
        let f = run(vec![
            // `ip rule del pref 10`: the kernel's notification named the whole rule.
            rule("systemd-networkd")
                .priority(10)
                .fwmark("0xa00/0xf00")
                .table(2005)
                .object("10: from all fwmark 0xa00/0xf00 lookup 2005")
                .confirmed(true),
            // Refused deletes (nothing to delete) change nothing: no finding.
            rule("systemd-networkd").priority(9).confirmed(false),
            route("systemd-networkd").table(2004).dst("10.0.0.0/8").confirmed(false),
            ev(Kind::AddrDelete, "ip").netns(1).dev("cilium_host").dst("10.0.1.1/32").confirmed(false),
            // An address on another device whose removal flushed a route of table 2004.
            ev(Kind::AddrDelete, "ip").netns(1).dev("eth0").dst("192.168.1.5/24").confirmed(true).flushed(&[
                "10.1.0.0/16 via 192.168.1.1 dev eth0 table 2004",
                "192.168.7.0/24 via 192.168.1.1 dev eth0",
            ]),
            // ...and one that flushed nobody's route of Cilium's: no finding.
            ev(Kind::AddrDelete, "ip")
                .netns(1)
                .dev("eth1")
                .dst("192.168.2.5/24")
                .confirmed(true)
                .flushed(&["192.168.8.0/24 via 192.168.2.1 dev eth1"]),
            ev(Kind::LinkDelete, "ip").netns(1).dev("cilium_net").confirmed(true).flushed(&[]),
        ]);
        assert_eq!(ids(&f), vec![RULE_ID, ROUTE_ID, ROUTE_ID], "{f:#?}");
        assert!(
            f[0].summary.contains("rule 10: from all fwmark 0xa00/0xf00 lookup 2005:"),
            "{}",
            f[0].summary
        );
        assert!(
            f[1].summary
                .contains("flushed 1 of Cilium's IPv4 routes with no route notification: 10.1.0.0/16 via"),
            "{}",
            f[1].summary
        );
        assert!(f[2].summary.contains("no IPv4 route of Cilium's went with it"), "{}", f[2].summary);
    }

    #[test]
    fn reserved_tables_by_name() {
        assert_eq!(
            [255, 254, 253, 252, 2004, 0].map(table_name),
            ["local", "main", "default", "252", "2004", "0"].map(String::from)
        );
    }

    #[test]
    fn cilium_itself_and_unrelated_state_are_not_findings() {
        let f = run(vec![
            route("cilium-agent").table(2004).dst("0.0.0.0/0"),
            route("ip").behalf("cilium-agent").dev("cilium_host"),
            rule("cilium-agent").priority(0).table(255),
            rule("cilium-agent").priority(9).fwmark("0x200/0xf00").table(2004),
            ev(Kind::LinkDelete, "cilium-cni").dev("lxc01"),
            // Other tables, devices, priorities and marks.
            route("systemd-networkd").table(254).dst("192.168.0.0/24").dev("eth0"),
            route("systemd-networkd").table(2003).dst("0.0.0.0/0"),
            route("systemd-networkd").table(200).dev("vxlan.calico"),
            rule("systemd-networkd").priority(32766).table(254),
            rule("systemd-networkd").priority(1000).table(100),
            rule("systemd-networkd").priority(500).fwmark("0x100/0xf00").table(300),
            rule("systemd-networkd").priority(500).fwmark("0x200/0xffffffff").table(300),
            ev(Kind::AddrDelete, "systemd-networkd").dev("eth0"),
            ev(Kind::LinkSet, "systemd-networkd").dev("cilium_host").up(true),
            ev(Kind::LinkDelete, "ip").dev("veth12"),
        ]);
        assert!(f.is_empty(), "{f:#?}");
    }
}
