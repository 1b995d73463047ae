//! The links, addresses, routes and rules the kernel describes in its dump replies and
//! notifications (`RTM_NEW*`/`RTM_DEL*`), described the way `ip` prints them, and
//! matched against the delete requests tracer saw.
//!
//! These bytes come from the kernel (rtnl_fill_ifinfo, inet_fill_ifaddr, fib_dump_info,
//! rt6_fill_node, fib_nl_fill_rule), so the parse is lenient: a malformed attribute
//! ends the walk, nothing panics.

use std::fmt::Write as _;

use crate::pipeline::netlink::{
    self, byte, format_addr, nul_string, read_u16, read_u32, AF_INET, AF_INET6, FIB_RULE_HDR_LEN, FRA_DST,
    FRA_FWMARK, FRA_FWMASK, FRA_IIFNAME, FRA_OIFNAME, FRA_PRIORITY, FRA_PROTOCOL, FRA_TABLE, IFADDRMSG_LEN,
    IFA_ADDRESS, IFA_LOCAL, IFF_UP, IFINFOMSG_LEN, IFLA_IFNAME, RTA_DST, RTA_GATEWAY, RTA_OIF, RTA_PRIORITY,
    RTA_TABLE, RTA_VIA, RTMSG_LEN, RTM_DELADDR, RTM_DELLINK, RTM_DELROUTE, RTM_DELRULE, RTM_NEWADDR,
    RTM_NEWLINK, RTM_NEWROUTE, RTM_NEWRULE,
};
use crate::stream::schema::{table_name, Event, Kind};

// include/uapi/linux/rtnetlink.h
const RTA_SRC: u16 = 2;
const RTA_PREFSRC: u16 = 7;
const RTA_MULTIPATH: u16 = 9;
/// `struct rtnexthop`: len (u16), flags (u8), hops (u8), ifindex (i32).
const RTNH_LEN: usize = 8;
// include/uapi/linux/fib_rules.h
const FRA_SRC: u16 = 2;
const FRA_GOTO: u16 = 4;
const FRA_SUPPRESS_PREFIXLEN: u16 = 14;
const FRA_L3MDEV: u16 = 19;
const FRA_UID_RANGE: u16 = 20;
const FRA_IP_PROTO: u16 = 22;
const FRA_SPORT_RANGE: u16 = 23;
const FRA_DPORT_RANGE: u16 = 24;
const FIB_RULE_INVERT: u32 = 0x2;
// include/uapi/linux/if_addr.h
const IFA_LABEL: u16 = 3;
/// `RT_TABLE_MAIN`: where a route request without a table goes (fib_get_table and
/// fib6_get_table treat table 0 as main).
pub const RT_TABLE_MAIN: u32 = 254;
/// `RT_SCOPE_UNIVERSE`.
const SCOPE_UNIVERSE: u8 = 0;
/// `RTN_UNICAST`.
const RTN_UNICAST: u8 = 1;
/// `RTPROT_BOOT`, which `ip route` leaves out (the default of `ip route add`).
const RTPROT_BOOT: u8 = 3;
/// `RTPROT_KERNEL`.
const RTPROT_KERNEL: u8 = 2;

/// A link as the kernel describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: Option<String>,
    pub up: bool,
}

/// An interface address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addr {
    pub family: u8,
    pub prefixlen: u8,
    pub scope: u8,
    pub index: u32,
    /// `IFA_LOCAL`, else `IFA_ADDRESS` (the peer on point-to-point links).
    pub local: Option<String>,
    pub label: Option<String>,
}

/// A route (one `fib_alias` / `fib6_info`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub family: u8,
    pub dst_len: u8,
    pub src_len: u8,
    pub tos: u8,
    pub table: u32,
    pub protocol: u8,
    pub scope: u8,
    pub rtype: u8,
    pub dst: Option<String>,
    pub src: Option<String>,
    pub oif: Option<u32>,
    pub gateway: Option<String>,
    pub prefsrc: Option<String>,
    pub metric: Option<u32>,
    /// `RTA_MULTIPATH`: (ifindex, gateway) of each next hop.
    pub nexthops: Vec<(u32, Option<String>)>,
}

/// A routing policy rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub family: u8,
    pub priority: u32,
    pub src_len: u8,
    pub dst_len: u8,
    pub tos: u8,
    pub action: u8,
    pub invert: bool,
    pub table: u32,
    pub src: Option<String>,
    pub dst: Option<String>,
    pub iif: Option<String>,
    pub oif: Option<String>,
    pub fwmark: Option<u32>,
    pub fwmask: Option<u32>,
    pub goto: Option<u32>,
    pub suppress_prefixlen: Option<u32>,
    pub l3mdev: bool,
    pub uid_range: Option<(u32, u32)>,
    pub ip_proto: Option<u8>,
    pub sport: Option<(u16, u16)>,
    pub dport: Option<(u16, u16)>,
    pub protocol: u8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RtObject {
    Link(Link),
    Addr(Addr),
    Route(Route),
    Rule(Rule),
}

/// A notification or dump reply: whether it announces the object or its removal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub deleted: bool,
    pub object: RtObject,
}

/// Parses one kernel message; `None` for other types or a body too short.
pub fn parse(msg_type: u16, body: &[u8]) -> Option<Change> {
    let (deleted, object) = match msg_type {
        RTM_NEWLINK | RTM_DELLINK => (msg_type == RTM_DELLINK, RtObject::Link(parse_link(body)?)),
        RTM_NEWADDR | RTM_DELADDR => (msg_type == RTM_DELADDR, RtObject::Addr(parse_addr(body)?)),
        RTM_NEWROUTE | RTM_DELROUTE => (msg_type == RTM_DELROUTE, RtObject::Route(parse_route(body)?)),
        RTM_NEWRULE | RTM_DELRULE => (msg_type == RTM_DELRULE, RtObject::Rule(parse_rule(body)?)),
        _ => return None,
    };
    Some(Change { deleted, object })
}

fn u32_of(p: &[u8]) -> Option<u32> {
    read_u32(p, 0)
}

fn parse_link(body: &[u8]) -> Option<Link> {
    let hdr = body.get(..IFINFOMSG_LEN)?;
    let mut l = Link { index: read_u32(hdr, 4)?, name: None, up: read_u32(hdr, 8)? & IFF_UP != 0 };
    for (ty, p) in netlink::attributes(&body[IFINFOMSG_LEN..]) {
        if ty == IFLA_IFNAME {
            l.name = nul_string(p);
        }
    }
    Some(l)
}

fn parse_addr(body: &[u8]) -> Option<Addr> {
    let hdr = body.get(..IFADDRMSG_LEN)?;
    let mut a = Addr {
        family: byte(hdr, 0),
        prefixlen: byte(hdr, 1),
        scope: byte(hdr, 3),
        index: read_u32(hdr, 4)?,
        local: None,
        label: None,
    };
    let mut address = None;
    for (ty, p) in netlink::attributes(&body[IFADDRMSG_LEN..]) {
        match ty {
            IFA_LOCAL => a.local = format_addr(p),
            IFA_ADDRESS => address = format_addr(p),
            IFA_LABEL => a.label = nul_string(p),
            _ => {}
        }
    }
    if a.local.is_none() {
        a.local = address;
    }
    Some(a)
}

fn parse_route(body: &[u8]) -> Option<Route> {
    let hdr = body.get(..RTMSG_LEN)?;
    let mut r = Route {
        family: byte(hdr, 0),
        dst_len: byte(hdr, 1),
        src_len: byte(hdr, 2),
        tos: byte(hdr, 3),
        table: u32::from(byte(hdr, 4)),
        protocol: byte(hdr, 5),
        scope: byte(hdr, 6),
        rtype: byte(hdr, 7),
        dst: None,
        src: None,
        oif: None,
        gateway: None,
        prefsrc: None,
        metric: None,
        nexthops: Vec::new(),
    };
    for (ty, p) in netlink::attributes(&body[RTMSG_LEN..]) {
        match ty {
            RTA_DST => r.dst = format_addr(p),
            RTA_SRC => r.src = format_addr(p),
            RTA_OIF => r.oif = u32_of(p),
            RTA_GATEWAY => r.gateway = format_addr(p),
            RTA_VIA => r.gateway = p.get(2..).and_then(format_addr),
            RTA_PREFSRC => r.prefsrc = format_addr(p),
            RTA_PRIORITY => r.metric = u32_of(p),
            RTA_TABLE => r.table = u32_of(p).unwrap_or(r.table),
            RTA_MULTIPATH => r.nexthops = nexthops(p),
            _ => {}
        }
    }
    Some(r)
}

/// `struct rtnexthop` entries, each followed by its own attributes (the gateway).
fn nexthops(mut p: &[u8]) -> Vec<(u32, Option<String>)> {
    let mut out = Vec::new();
    while let (Some(len), Some(ifindex)) = (read_u16(p, 0), read_u32(p, 4)) {
        let len = usize::from(len);
        if len < RTNH_LEN || len > p.len() {
            break;
        }
        let gw = netlink::attributes(&p[RTNH_LEN..len]).into_iter().find_map(|(ty, a)| match ty {
            RTA_GATEWAY => format_addr(a),
            RTA_VIA => a.get(2..).and_then(format_addr),
            _ => None,
        });
        out.push((ifindex, gw));
        p = &p[((len + 3) & !3).min(p.len())..];
    }
    out
}

fn parse_rule(body: &[u8]) -> Option<Rule> {
    let hdr = body.get(..FIB_RULE_HDR_LEN)?;
    let mut r = Rule {
        family: byte(hdr, 0),
        priority: 0,
        dst_len: byte(hdr, 1),
        src_len: byte(hdr, 2),
        tos: byte(hdr, 3),
        table: u32::from(byte(hdr, 4)),
        action: byte(hdr, 7),
        invert: read_u32(hdr, 8)? & FIB_RULE_INVERT != 0,
        src: None,
        dst: None,
        iif: None,
        oif: None,
        fwmark: None,
        fwmask: None,
        goto: None,
        suppress_prefixlen: None,
        l3mdev: false,
        uid_range: None,
        ip_proto: None,
        sport: None,
        dport: None,
        protocol: 0,
    };
    let range16 = |p: &[u8]| Some((read_u16(p, 0)?, read_u16(p, 2)?));
    for (ty, p) in netlink::attributes(&body[FIB_RULE_HDR_LEN..]) {
        match ty {
            FRA_PRIORITY => r.priority = u32_of(p).unwrap_or(0),
            FRA_SRC => r.src = format_addr(p),
            FRA_DST => r.dst = format_addr(p),
            FRA_IIFNAME => r.iif = nul_string(p),
            FRA_OIFNAME => r.oif = nul_string(p),
            FRA_FWMARK => r.fwmark = u32_of(p),
            FRA_FWMASK => r.fwmask = u32_of(p),
            FRA_TABLE => r.table = u32_of(p).unwrap_or(r.table),
            FRA_GOTO => r.goto = u32_of(p),
            // The kernel reports "unset" as -1 (fib_nl_fill_rule).
            FRA_SUPPRESS_PREFIXLEN => r.suppress_prefixlen = u32_of(p).filter(|v| *v != u32::MAX),
            FRA_L3MDEV => r.l3mdev = p.first().is_some_and(|v| *v != 0),
            FRA_UID_RANGE => r.uid_range = Some((read_u32(p, 0)?, read_u32(p, 4)?)),
            FRA_IP_PROTO => r.ip_proto = p.first().copied(),
            FRA_SPORT_RANGE => r.sport = range16(p),
            FRA_DPORT_RANGE => r.dport = range16(p),
            FRA_PROTOCOL => r.protocol = p.first().copied().unwrap_or(0),
            _ => {}
        }
    }
    Some(r)
}

/// Interface names of one namespace, by index.
pub type Names<'a> = &'a dyn Fn(u32) -> Option<String>;

fn dev_name(names: Names<'_>, index: u32) -> String {
    names(index).unwrap_or_else(|| format!("if{index}"))
}

fn prefix_or_all(addr: &Option<String>, len: u8, family: u8) -> String {
    match addr {
        Some(a) if len == 0 || (family == AF_INET && len == 32) || (family == AF_INET6 && len == 128) => {
            a.clone()
        }
        Some(a) => format!("{a}/{len}"),
        None => "all".into(),
    }
}

/// `ip route`'s name of a route type (`RTN_*`) and a scope (`RT_SCOPE_*`), from
/// iproute2's lib/rt_names.c.
pub fn route_type_name(t: u8) -> String {
    match t {
        0 => "unspec",
        1 => "unicast",
        2 => "local",
        3 => "broadcast",
        4 => "anycast",
        5 => "multicast",
        6 => "blackhole",
        7 => "unreachable",
        8 => "prohibit",
        9 => "throw",
        10 => "nat",
        11 => "xresolve",
        n => return n.to_string(),
    }
    .into()
}

pub fn scope_name(s: u8) -> String {
    match s {
        0 => "global",
        200 => "site",
        253 => "link",
        254 => "host",
        255 => "nowhere",
        n => return n.to_string(),
    }
    .into()
}

/// A rule's action (`FR_ACT_*`, include/uapi/linux/fib_rules.h) as `ip rule` prints it.
pub fn rule_action_name(a: u8) -> &'static str {
    match a {
        1 => "lookup",
        2 => "goto",
        3 => "nop",
        6 => "blackhole",
        7 => "unreachable",
        8 => "prohibit",
        _ => "unspec",
    }
}

impl Route {
    /// The destination as `ip route` prints it: `default`, `10.0.0.0/24`, `10.0.0.1`.
    pub fn dst_text(&self) -> String {
        if self.dst_len == 0 {
            return "default".into();
        }
        prefix_or_all(&self.dst, self.dst_len, self.family)
    }

    /// Whether the route goes through interface `index` (its own or a next hop's).
    pub fn uses_dev(&self, index: u32) -> bool {
        self.oif == Some(index) || self.nexthops.iter().any(|(i, _)| *i == index)
    }

    /// The same route (what the kernel tells one from another by); the rest of a
    /// notification may differ from the dump (flags, cache info).
    pub fn same(&self, o: &Route) -> bool {
        (self.family, self.table, self.dst_len, &self.dst, self.src_len, &self.src, self.tos, self.metric)
            == (o.family, o.table, o.dst_len, &o.dst, o.src_len, &o.src, o.tos, o.metric)
            && (self.oif, &self.gateway, self.rtype) == (o.oif, &o.gateway, o.rtype)
    }

    /// `[type] DST [from SRC] [via GW] dev DEV [table T] [proto P] [scope S] [src A]
    /// [metric M]`, in `ip route`'s order.
    pub fn describe(&self, names: Names<'_>) -> String {
        let mut s = String::new();
        if self.rtype != RTN_UNICAST {
            let _ = write!(s, "{} ", route_type_name(self.rtype));
        }
        s.push_str(&self.dst_text());
        if self.src_len != 0 {
            let _ = write!(s, " from {}", prefix_or_all(&self.src, self.src_len, self.family));
        }
        if let Some(g) = &self.gateway {
            let _ = write!(s, " via {g}");
        }
        if let Some(i) = self.oif {
            let _ = write!(s, " dev {}", dev_name(names, i));
        }
        if self.table != RT_TABLE_MAIN {
            let _ = write!(s, " table {}", table_name(self.table));
        }
        if self.protocol != RTPROT_BOOT {
            let _ = write!(s, " proto {}", netlink::protocol_name(self.protocol));
        }
        if self.scope != SCOPE_UNIVERSE {
            let _ = write!(s, " scope {}", scope_name(self.scope));
        }
        if let Some(p) = &self.prefsrc {
            let _ = write!(s, " src {p}");
        }
        if let Some(m) = self.metric.filter(|m| *m != 0) {
            let _ = write!(s, " metric {m}");
        }
        for (i, g) in &self.nexthops {
            s.push_str(" nexthop");
            if let Some(g) = g {
                let _ = write!(s, " via {g}");
            }
            let _ = write!(s, " dev {}", dev_name(names, *i));
        }
        s
    }
}

impl Rule {
    /// A fwmark as the event carries it: `0x200/0xf00`, or the bare mark when the mask
    /// is all ones (what the kernel uses when none is given).
    pub fn fwmark_text(&self) -> Option<String> {
        let mark = self.fwmark.unwrap_or(0);
        match self.fwmask {
            _ if self.fwmark.is_none() && self.fwmask.is_none_or(|m| m == 0) => None,
            Some(k) if k != u32::MAX => Some(format!("{mark:#x}/{k:#x}")),
            _ => Some(format!("{mark:#x}")),
        }
    }

    /// `PRIO: [not] from SRC [to DST] [tos T] [fwmark M/K] [iif X] [oif Y] [l3mdev]
    /// [uidrange A-B] [ipproto P] [sport A-B] [dport A-B] ACTION`, as `ip rule` prints it.
    pub fn describe(&self) -> String {
        let mut s = format!("{}:", self.priority);
        if self.invert {
            s.push_str(" not");
        }
        let _ = write!(s, " from {}", prefix_or_all(&self.src, self.src_len, self.family));
        if self.dst_len != 0 || self.dst.is_some() {
            let _ = write!(s, " to {}", prefix_or_all(&self.dst, self.dst_len, self.family));
        }
        if self.tos != 0 {
            let _ = write!(s, " tos {:#x}", self.tos);
        }
        if let Some(m) = self.fwmark_text() {
            let _ = write!(s, " fwmark {m}");
        }
        if let Some(i) = &self.iif {
            let _ = write!(s, " iif {i}");
        }
        if let Some(o) = &self.oif {
            let _ = write!(s, " oif {o}");
        }
        if self.l3mdev {
            s.push_str(" lookup [l3mdev-table]");
        }
        if let Some((a, b)) = self.uid_range {
            let _ = write!(s, " uidrange {a}-{b}");
        }
        if let Some(p) = self.ip_proto {
            let _ = write!(s, " ipproto {p}");
        }
        for (name, r) in [("sport", self.sport), ("dport", self.dport)] {
            match r {
                Some((a, b)) if a == b => {
                    let _ = write!(s, " {name} {a}");
                }
                Some((a, b)) => {
                    let _ = write!(s, " {name} {a}-{b}");
                }
                None => {}
            }
        }
        match self.action {
            1 if !self.l3mdev => {
                let _ = write!(s, " lookup {}", table_name(self.table));
                if let Some(p) = self.suppress_prefixlen {
                    let _ = write!(s, " suppress_prefixlength {p}");
                }
            }
            1 => {}
            2 => {
                let _ = write!(s, " goto {}", self.goto.unwrap_or(0));
            }
            a => {
                let _ = write!(s, " {}", rule_action_name(a));
            }
        }
        // iproute2's print_rule leaves out `proto kernel` (RTPROT_KERNEL, the kernel's
        // default rules) as well as unspec.
        if self.protocol != 0 && self.protocol != RTPROT_KERNEL {
            let _ = write!(s, " proto {}", netlink::protocol_name(self.protocol));
        }
        s
    }
}

impl Addr {
    pub fn text(&self) -> String {
        format!("{}/{}", self.local.as_deref().unwrap_or("?"), self.prefixlen)
    }
}

impl RtObject {
    /// The object as `ip route`/`ip rule`/`ip addr`/`ip link` prints it.
    pub fn describe(&self, names: Names<'_>) -> String {
        match self {
            RtObject::Route(r) => r.describe(names),
            RtObject::Rule(r) => r.describe(),
            RtObject::Addr(a) => {
                let fam = if a.family == AF_INET6 { "inet6" } else { "inet" };
                let mut s = format!(
                    "{fam} {} scope {} dev {}",
                    a.text(),
                    scope_name(a.scope),
                    dev_name(names, a.index)
                );
                if let Some(l) = a.label.as_ref().filter(|l| Some(*l) != names(a.index).as_ref()) {
                    let _ = write!(s, " label {l}");
                }
                s
            }
            RtObject::Link(l) => {
                format!(
                    "{} (ifindex {})",
                    l.name.clone().unwrap_or_else(|| format!("if{}", l.index)),
                    l.index
                )
            }
        }
    }

    /// The event kind a request deleting this object has.
    fn kind(&self) -> Kind {
        match self {
            RtObject::Route(_) => Kind::RouteDelete,
            RtObject::Rule(_) => Kind::RuleDelete,
            RtObject::Addr(_) => Kind::AddrDelete,
            RtObject::Link(_) => Kind::LinkDelete,
        }
    }

    fn family(&self) -> Option<u8> {
        match self {
            RtObject::Route(r) => Some(r.family),
            RtObject::Rule(r) => Some(r.family),
            RtObject::Addr(a) => Some(a.family),
            RtObject::Link(_) => None,
        }
    }
}

/// A fwmark field (`0x200/0xf00`, `0x200`) as (mark, mask); no mask is all ones.
fn parse_fwmark(s: &str) -> Option<(u32, Option<u32>)> {
    let num = |t: &str| u32::from_str_radix(t.trim_start_matches("0x"), 16).ok();
    match s.split_once('/') {
        Some((m, k)) => Some((num(m)?, Some(num(k)?))),
        None => Some((num(s)?, None)),
    }
}

/// Whether deleting request `ev` (what it names: every field it leaves out matches
/// anything) can have removed `obj`. The fields compared are those the kernel looks
/// up by: for rules rule_find in net/core/fib_rules.c (a priority, table, mark, mask,
/// interface names and protocol when given), for IPv4 routes fib_table_delete (the
/// prefix, the table with 0 meaning main, and the metric, protocol, device and gateway
/// when given), for IPv6 routes ip6_route_del (the same), for addresses
/// inet_rtm_deladdr/inet6_addr_del (the address, the device when
/// given), for links rtnl_dellink (the index, else the name).
pub fn request_matches(ev: &Event, obj: &RtObject, names: Names<'_>) -> bool {
    if ev.kind != obj.kind() {
        return false;
    }
    if let (Some(f), Some(of)) = (ev.family.as_deref(), obj.family()) {
        let want = match f {
            "inet" => AF_INET,
            "inet6" => AF_INET6,
            _ => of, // unspec and the rest: not a filter here
        };
        if want != of {
            return false;
        }
    }
    match obj {
        RtObject::Route(r) => {
            let table = ev.table.unwrap_or(RT_TABLE_MAIN);
            ev.dst.as_deref().is_none_or(|d| d == dst_as_requested(r))
                && table == r.table
                && ev.priority.is_none_or(|p| r.metric.unwrap_or(0) == p)
                && ev.protocol.as_deref().is_none_or(|p| p == netlink::protocol_name(r.protocol))
                && ev.ifindex.is_none_or(|i| r.uses_dev(i))
                && ev.gateway.as_ref().is_none_or(|g| {
                    r.gateway.as_ref() == Some(g) || r.nexthops.iter().any(|(_, ng)| ng.as_ref() == Some(g))
                })
        }
        RtObject::Rule(r) => {
            let mark_ok = match ev.fwmark.as_deref().and_then(parse_fwmark) {
                None => true,
                Some((m, k)) => {
                    (m == 0 || r.fwmark == Some(m)) && k.is_none_or(|k| r.fwmask.unwrap_or(u32::MAX) == k)
                }
            };
            ev.priority.is_none_or(|p| r.priority == p)
                && ev.table.is_none_or(|t| r.table == t)
                && mark_ok
                && ev.dst.as_deref().is_none_or(|d| Some(d) == r.dst_as_requested().as_deref())
                && ev.dev.as_ref().is_none_or(|d| r.iif.as_ref() == Some(d) || r.oif.as_ref() == Some(d))
                && ev.protocol.as_deref().is_none_or(|p| p == netlink::protocol_name(r.protocol))
        }
        // The address alone: `ip addr del 10.0.0.1 dev eth0` (a "wildcard deletion",
        // iproute2 warns) sends /32 and no IFA_ADDRESS, and the kernel then removes
        // 10.0.0.1 whatever its prefix length (inet_rtm_deladdr compares the prefix
        // length only with IFA_ADDRESS).
        RtObject::Addr(a) => {
            let addr_of = |d: &str| d.split('/').next().map(str::to_string);
            ev.dst.as_deref().is_none_or(|d| addr_of(d) == a.local) && ev.ifindex.is_none_or(|i| i == a.index)
        }
        RtObject::Link(l) => match (ev.ifindex, &ev.dev) {
            (Some(i), _) => i == l.index,
            (None, Some(d)) => l.name.as_ref() == Some(d) || names(l.index).as_ref() == Some(d),
            (None, None) => false,
        },
    }
}

/// A route's destination the way the request decoder writes it.
fn dst_as_requested(r: &Route) -> String {
    netlink::prefix(r.family, r.dst.clone(), r.dst_len, true)
}

impl Rule {
    fn dst_as_requested(&self) -> Option<String> {
        (self.dst.is_some() || self.dst_len != 0)
            .then(|| netlink::prefix(self.family, self.dst.clone(), self.dst_len, false))
    }
}

/// Fills `ev` with what the kernel said of the object it removed: `object` (the `ip`
/// line) and the fields of the object, replacing what the request named.
pub fn describe_into(ev: &mut Event, obj: &RtObject, names: Names<'_>) {
    ev.object = Some(Box::new(obj.describe(names)));
    match obj {
        RtObject::Route(r) => {
            ev.family = Some(netlink::family_name(r.family));
            ev.dst = Some(dst_as_requested(r));
            ev.table = Some(r.table);
            ev.protocol = Some(netlink::protocol_name(r.protocol));
            ev.scope = Some(Box::new(scope_name(r.scope)));
            ev.route_type = Some(Box::new(route_type_name(r.rtype)));
            if let Some(i) = r.oif.or(r.nexthops.first().map(|(i, _)| *i)) {
                ev.ifindex = Some(i);
                ev.dev = names(i).or(ev.dev.take());
            }
            ev.gateway = r.gateway.clone().or_else(|| r.nexthops.iter().find_map(|(_, g)| g.clone()));
            ev.prefsrc = r.prefsrc.clone().map(Box::new);
            ev.src = (r.src_len != 0).then(|| Box::new(prefix_or_all(&r.src, r.src_len, r.family)));
            ev.priority = r.metric;
        }
        RtObject::Rule(r) => {
            ev.family = Some(netlink::family_name(r.family));
            ev.priority = Some(r.priority);
            ev.table = (r.table != 0).then_some(r.table);
            ev.fwmark = r.fwmark_text();
            ev.dst = r.dst_as_requested();
            ev.src = Some(Box::new(prefix_or_all(&r.src, r.src_len, r.family)));
            ev.iif = r.iif.clone().map(Box::new);
            ev.oif = r.oif.clone().map(Box::new);
            ev.dev = r.iif.clone().or_else(|| r.oif.clone());
            ev.action = Some(Box::new(rule_action_name(r.action).to_string()));
            ev.protocol = (r.protocol != 0).then(|| netlink::protocol_name(r.protocol));
        }
        RtObject::Addr(a) => {
            ev.family = Some(netlink::family_name(a.family));
            ev.dst = Some(a.text());
            ev.ifindex = Some(a.index);
            ev.dev = names(a.index).or(ev.dev.take());
            ev.scope = Some(Box::new(scope_name(a.scope)));
        }
        RtObject::Link(l) => {
            ev.ifindex = Some(l.index);
            ev.dev = l.name.clone().or(ev.dev.take());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_names(_: u32) -> Option<String> {
        None
    }

    fn attr(ty: u16, payload: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend(((4 + payload.len()) as u16).to_ne_bytes());
        b.extend(ty.to_ne_bytes());
        b.extend(payload);
        while b.len() % 4 != 0 {
            b.push(0);
        }
        b
    }

    /// `9: from all fwmark 0x200/0xf00 lookup 2004`, as fib_nl_fill_rule sends it.
    fn cilium_rule() -> Vec<u8> {
        let mut b = vec![AF_INET, 0, 0, 0, 252, 0, 0, 1];
        b.extend(0u32.to_ne_bytes());
        b.extend(attr(FRA_TABLE, &2004u32.to_ne_bytes()));
        b.extend(attr(FRA_PRIORITY, &9u32.to_ne_bytes()));
        b.extend(attr(FRA_FWMARK, &0x200u32.to_ne_bytes()));
        b.extend(attr(FRA_FWMASK, &0xf00u32.to_ne_bytes()));
        b.extend(attr(FRA_SUPPRESS_PREFIXLEN, &u32::MAX.to_ne_bytes()));
        b
    }

    #[test]
    fn a_rule_reads_like_ip_rule_and_matches_a_delete_by_priority() {
        let c = parse(RTM_DELRULE, &cilium_rule()).unwrap();
        assert!(c.deleted);
        assert_eq!(c.object.describe(&no_names), "9: from all fwmark 0x200/0xf00 lookup 2004");
        let mut ev = Event {
            kind: Kind::RuleDelete,
            family: Some("inet".into()),
            priority: Some(9),
            ..Default::default()
        };
        assert!(request_matches(&ev, &c.object, &no_names));
        for (p, t, m) in [(10, None, None), (9, Some(2005), None), (9, None, Some("0xa00/0xf00"))] {
            let other = Event { priority: Some(p), table: t, fwmark: m.map(String::from), ..ev.clone() };
            assert!(!request_matches(&other, &c.object, &no_names), "{other:?}");
        }
        let by_mark = Event { priority: None, fwmark: Some("0x200/0xf00".into()), ..ev.clone() };
        assert!(request_matches(&by_mark, &c.object, &no_names));
        describe_into(&mut ev, &c.object, &no_names);
        assert_eq!(
            (ev.table, ev.fwmark.as_deref(), ev.action.as_deref().map(String::as_str)),
            (Some(2004), Some("0x200/0xf00"), Some("lookup"))
        );
    }

    #[test]
    fn a_route_reads_like_ip_route_and_a_request_without_table_means_main() {
        let mut b = vec![AF_INET, 24, 0, 0, 254, 4, 0, 1];
        b.extend(0u32.to_ne_bytes());
        b.extend(attr(RTA_TABLE, &254u32.to_ne_bytes()));
        b.extend(attr(RTA_DST, &[10, 98, 0, 0]));
        b.extend(attr(RTA_GATEWAY, &[10, 99, 0, 2]));
        b.extend(attr(RTA_OIF, &3u32.to_ne_bytes()));
        let c = parse(RTM_NEWROUTE, &b).unwrap();
        assert!(!c.deleted);
        let names = |i: u32| (i == 3).then(|| "d0".to_string());
        assert_eq!(c.object.describe(&names), "10.98.0.0/24 via 10.99.0.2 dev d0 proto static");
        let ev = Event {
            kind: Kind::RouteDelete,
            family: Some("inet".into()),
            dst: Some("10.98.0.0/24".into()),
            ..Default::default()
        };
        assert!(request_matches(&ev, &c.object, &names));
        assert!(!request_matches(&Event { table: Some(100), ..ev.clone() }, &c.object, &names));
        assert!(!request_matches(&Event { ifindex: Some(4), ..ev.clone() }, &c.object, &names));
        assert!(!request_matches(&Event { dst: Some("10.98.0.0/16".into()), ..ev }, &c.object, &names));
    }

    #[test]
    fn short_bodies_are_not_objects() {
        assert_eq!(parse(RTM_NEWROUTE, &[2, 24]), None);
        assert_eq!(parse(RTM_NEWLINK, &[0; 8]), None);
        assert_eq!(parse(99, &[0; 64]), None);
    }
}
