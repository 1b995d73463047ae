//! What the network looks like, per namespace tracer has seen: a copy of the kernel's
//! links, addresses, routes (all tables) and rules, dumped over rtnetlink when the
//! namespace is first seen and kept current from its multicast groups
//! ([`rtnl::GROUPS`]).
//!
//! It answers what a delete request alone cannot ([`super::rtobject`]):
//! - which object a delete removed (`ip rule del pref 10` names only the priority; the
//!   kernel's `RTM_DELRULE` notification carries the whole rule), and whether the
//!   kernel removed anything at all (no notification: it refused);
//! - which IPv4 routes went with an address or a link: the kernel flushes them with no
//!   notification (fib_flush after fib_sync_down_addr/fib_sync_down_dev in
//!   net/ipv4/fib_frontend.c), so they are what a fresh dump no longer shows.
//!
//! The kernel queues the notification before the request's `sendmsg` returns
//! (rtnl_notify runs in the request's own handler), but in the syscall mode tracer reads
//! the request at syscall entry, maybe before the kernel acted: the caller waits up to
//! [`CONFIRM_WAIT`] for it ([`crate::session`]'s pending deletes). In the kernel-function
//! mode the request carries the handler's answer (`result`): a refusal is known at once,
//! and an applied delete is never taken as refused for want of its notification.
//!
//! Namespaces are found and entered by `kernel::netns`; the sockets opened there keep
//! the namespace alive, so a namespace with no process and no /run/netns name left is
//! closed and forgotten at the next [`NetState::housekeeping`].

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::kernel::{netns, rtnl};
use crate::pipeline::netlink::{self, AF_INET, AF_INET6, AF_UNSPEC};
use crate::pipeline::rtobject::{self, Addr, Change, Link, Route, RtObject, Rule};
use crate::stream::schema::{Event, Kind, Timestamp};

/// How long a delete request waits for the kernel's notification before it is taken
/// as not applied.
pub const CONFIRM_WAIT: Duration = Duration::from_millis(500);
/// Namespaces watched at most (a node runs a few hundred pods).
const MAX_SPACES: usize = 512;
/// Routes kept per namespace; past it the namespace's routes are not tracked (a full
/// BGP table would cost more memory than the whole tracer) and flushes are not named.
const MAX_ROUTES: usize = 50_000;
/// Removals the kernel announced that wait for a request to claim them.
const MAX_DELETED: usize = 4096;
const DELETED_FOR: Duration = Duration::from_secs(5);
/// A namespace that could not be entered is tried again after this.
const RETRY_AFTER: Duration = Duration::from_secs(10);
/// Namespaces are checked for still existing this often.
const ALIVE_EVERY: Duration = Duration::from_secs(5);
/// Interface names kept per namespace, the names of removed links included.
const MAX_NAMES: usize = 8192;

/// The kernel's removal of an object, waiting for the request that asked for it.
#[derive(Debug)]
struct Deleted {
    at: Instant,
    object: RtObject,
    claimed: bool,
}

#[derive(Debug)]
struct Space {
    monitor: rtnl::Socket,
    dumper: rtnl::Socket,
    /// Its name under /run/netns, if any.
    name: Option<String>,
    /// A process last seen in it, checked first when asking whether it still exists.
    pid: u32,
    /// When the watch started (wall clock, after subscribing): a request the kernel saw
    /// before it cannot be judged.
    since: Timestamp,
    links: HashMap<u32, Link>,
    /// Names by ifindex, the removed links' included (a flushed route names its device).
    names: HashMap<u32, String>,
    addrs: Vec<Addr>,
    routes: Vec<Route>,
    routes_complete: bool,
    rules: Vec<Rule>,
    deleted: VecDeque<Deleted>,
    /// Notifications were lost (the socket's buffer overflowed) at this time; the state
    /// was dumped again.
    overrun: Option<Timestamp>,
    /// The IPv4 routes dumped in the current settle round ([`NetState::flushed`]).
    fresh_v4: Option<Vec<Route>>,
}

impl Space {
    fn open(monitor: rtnl::Socket, dumper: rtnl::Socket, pid: u32, name: Option<String>) -> Space {
        let mut s = Space {
            monitor,
            dumper,
            name,
            pid,
            since: Timestamp::now(),
            links: HashMap::new(),
            names: HashMap::new(),
            addrs: Vec::new(),
            routes: Vec::new(),
            routes_complete: true,
            rules: Vec::new(),
            deleted: VecDeque::new(),
            overrun: None,
            fresh_v4: None,
        };
        s.dump_all();
        s
    }

    /// Replaces the state with a fresh dump of everything.
    fn dump_all(&mut self) {
        self.links.clear();
        self.addrs.clear();
        self.rules.clear();
        for m in self.dump(netlink::RTM_GETLINK, &[0u8; 16]) {
            self.apply(m, false);
        }
        for m in self.dump(netlink::RTM_GETADDR, &[AF_UNSPEC, 0, 0, 0, 0, 0, 0, 0]) {
            self.apply(m, false);
        }
        for family in [AF_INET, AF_INET6] {
            for m in self.dump(netlink::RTM_GETRULE, &rule_hdr(family)) {
                self.apply(m, false);
            }
        }
        self.routes = self.dump_routes(AF_INET);
        let v6 = self.dump_routes(AF_INET6);
        self.routes.extend(v6);
        self.routes_complete = self.routes.len() <= MAX_ROUTES;
        if !self.routes_complete {
            self.routes.clear();
        }
    }

    fn dump(&mut self, msg_type: u16, header: &[u8]) -> Vec<Change> {
        match self.dumper.dump(msg_type, header) {
            Ok(msgs) => msgs.iter().filter_map(|m| rtobject::parse(m.msg_type, &m.body)).collect(),
            Err(e) => {
                tracing::debug!("rtnetlink dump {msg_type} failed: {e}");
                Vec::new()
            }
        }
    }

    fn dump_routes(&mut self, family: u8) -> Vec<Route> {
        let mut hdr = [0u8; 12];
        hdr[0] = family;
        self.dump(netlink::RTM_GETROUTE, &hdr)
            .into_iter()
            .filter_map(|c| match c.object {
                RtObject::Route(r) => Some(r),
                _ => None,
            })
            .take(MAX_ROUTES + 1)
            .collect()
    }

    /// Reads the notifications queued so far into the state.
    fn sync(&mut self) {
        let mut msgs = Vec::new();
        match self.monitor.drain(&mut msgs) {
            Ok(()) => {}
            Err(rtnl::RecvError::Overrun) => {
                tracing::warn!(
                    "rtnetlink notifications lost (socket buffer full); dumping the namespace again"
                );
                for m in msgs.drain(..) {
                    if let Some(c) = rtobject::parse(m.msg_type, &m.body) {
                        self.apply(c, true);
                    }
                }
                self.overrun = Some(Timestamp::now());
                // What the lost notifications would have said was removed: what the
                // state held and the fresh dump no longer shows ("the object is gone").
                let before = self.objects();
                self.dump_all();
                let after = self.objects();
                for object in gone(before, &after) {
                    if self.deleted.len() >= MAX_DELETED {
                        self.deleted.pop_front();
                    }
                    self.deleted.push_back(Deleted { at: Instant::now(), object, claimed: false });
                }
                return;
            }
            Err(rtnl::RecvError::Io(e)) => tracing::debug!("rtnetlink notifications: {e}"),
        }
        for m in msgs {
            if let Some(c) = rtobject::parse(m.msg_type, &m.body) {
                self.apply(c, true);
            }
        }
        let now = Instant::now();
        while self.deleted.front().is_some_and(|d| now.duration_since(d.at) > DELETED_FOR) {
            self.deleted.pop_front();
        }
    }

    /// Every object of the state, as objects.
    fn objects(&self) -> Vec<RtObject> {
        let mut out: Vec<RtObject> = self.links.values().cloned().map(RtObject::Link).collect();
        out.extend(self.addrs.iter().cloned().map(RtObject::Addr));
        out.extend(self.rules.iter().cloned().map(RtObject::Rule));
        out.extend(self.routes.iter().cloned().map(RtObject::Route));
        out
    }

    /// One object added, changed or removed. `notified`: from a notification (a
    /// removal is then remembered for the request that caused it).
    fn apply(&mut self, c: Change, notified: bool) {
        match &c.object {
            RtObject::Link(l) => {
                if let Some(n) = &l.name {
                    if self.names.len() >= MAX_NAMES {
                        self.names.clear();
                    }
                    self.names.insert(l.index, n.clone());
                }
                if c.deleted {
                    self.links.remove(&l.index);
                } else {
                    self.links.insert(l.index, l.clone());
                }
            }
            RtObject::Addr(a) => {
                let same = |o: &Addr| {
                    (o.family, o.index, o.prefixlen, &o.local) == (a.family, a.index, a.prefixlen, &a.local)
                };
                self.addrs.retain(|o| !same(o));
                if !c.deleted {
                    self.addrs.push(a.clone());
                }
            }
            RtObject::Route(r) => {
                if let Some(i) = self.routes.iter().position(|o| o.same(r)) {
                    self.routes.remove(i);
                }
                if !c.deleted && self.routes_complete {
                    if self.routes.len() >= MAX_ROUTES {
                        self.routes_complete = false;
                        self.routes.clear();
                    } else {
                        self.routes.push(r.clone());
                    }
                }
            }
            RtObject::Rule(r) => {
                if let Some(i) = self.rules.iter().position(|o| o == r) {
                    self.rules.remove(i);
                }
                if !c.deleted {
                    // The kernel keeps rules sorted by priority, a new one after those
                    // of equal priority (fib_nl_newrule).
                    let at =
                        self.rules.iter().position(|o| o.priority > r.priority).unwrap_or(self.rules.len());
                    self.rules.insert(at, r.clone());
                }
            }
        }
        if c.deleted && notified {
            if self.deleted.len() >= MAX_DELETED {
                self.deleted.pop_front();
            }
            self.deleted.push_back(Deleted { at: Instant::now(), object: c.object, claimed: false });
        }
    }

    fn name_of(&self, index: u32) -> Option<String> {
        name_in(&self.links, &self.names, index)
    }

    /// Whether an object the request can delete is in the state now.
    fn holds(&self, ev: &Event) -> bool {
        let names = |i: u32| self.name_of(i);
        let matches = |o: RtObject| rtobject::request_matches(ev, &o, &names);
        match ev.kind {
            Kind::RouteDelete => self.routes.iter().any(|r| matches(RtObject::Route(r.clone()))),
            Kind::RuleDelete => self.rules.iter().any(|r| matches(RtObject::Rule(r.clone()))),
            Kind::AddrDelete => self.addrs.iter().any(|a| matches(RtObject::Addr(a.clone()))),
            Kind::LinkDelete => self.links.values().any(|l| matches(RtObject::Link(l.clone()))),
            _ => false,
        }
    }
}

/// The objects of `before` that `after` no longer holds (routes compared as the kernel
/// tells them apart, [`Route::same`]).
fn gone(before: Vec<RtObject>, after: &[RtObject]) -> Vec<RtObject> {
    let same = |a: &RtObject, b: &RtObject| match (a, b) {
        (RtObject::Route(x), RtObject::Route(y)) => x.same(y),
        (RtObject::Link(x), RtObject::Link(y)) => x.index == y.index,
        _ => a == b,
    };
    before.into_iter().filter(|o| !after.iter().any(|a| same(o, a))).collect()
}

/// A link's name: the current one, else the last seen (by field, so that a caller can
/// hold it while changing the rest of the [`Space`]).
fn name_in(links: &HashMap<u32, Link>, names: &HashMap<u32, String>, index: u32) -> Option<String> {
    links.get(&index).and_then(|l| l.name.clone()).or_else(|| names.get(&index).cloned())
}

fn rule_hdr(family: u8) -> [u8; 12] {
    let mut h = [0u8; 12];
    h[0] = family;
    h
}

/// What became of a delete request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The kernel removed this object.
    Removed(RtObject),
    /// Nothing was removed: the object the request names is still there, or there was
    /// none.
    NotApplied,
    /// The namespace's state is not known well enough to say.
    Unknown,
}

/// The namespaces watched, by inode.
#[derive(Debug, Default)]
pub struct NetState {
    spaces: HashMap<u32, Space>,
    /// Namespaces that could not be entered, and when that was tried.
    unreachable: HashMap<u32, Instant>,
    last_alive_check: Option<Instant>,
    /// Warned once that [`MAX_SPACES`] was reached.
    full_warned: bool,
}

impl NetState {
    /// Starts watching namespace `netns` (that `pid` is or was in) if it is not yet.
    /// Returns whether it is watched.
    pub fn watch(&mut self, netns: u32, pid: u32) -> bool {
        if netns == 0 {
            return false;
        }
        if let Some(s) = self.spaces.get_mut(&netns) {
            if pid != 0 {
                s.pid = pid;
            }
            return true;
        }
        if self.unreachable.get(&netns).is_some_and(|t| t.elapsed() < RETRY_AFTER) {
            return false;
        }
        if self.spaces.len() >= MAX_SPACES {
            if !self.full_warned {
                tracing::warn!("watching {MAX_SPACES} network namespaces already; more are not described");
                self.full_warned = true;
            }
            return false;
        }
        let name = netns::named(netns).map(|(n, _)| n);
        let sockets = if netns::own() == Some(netns) {
            Some(open_sockets())
        } else {
            netns::open(pid, netns).and_then(|f| netns::run_in(&f, open_sockets))
        };
        match sockets {
            Some(Ok((monitor, dumper))) => {
                self.unreachable.remove(&netns);
                self.spaces.insert(netns, Space::open(monitor, dumper, pid, name));
                true
            }
            Some(Err(e)) => {
                tracing::warn!("network namespace {netns}: cannot open rtnetlink sockets: {e}");
                self.unreachable.insert(netns, Instant::now());
                false
            }
            None => {
                tracing::debug!("network namespace {netns}: no process or /run/netns file refers to it");
                self.unreachable.insert(netns, Instant::now());
                false
            }
        }
    }

    /// Reads every namespace's notifications queued so far.
    pub fn sync(&mut self) {
        for s in self.spaces.values_mut() {
            s.sync();
        }
    }

    /// The name `ip netns` gives `netns`.
    pub fn name(&self, netns: u32) -> Option<String> {
        self.spaces.get(&netns).and_then(|s| s.name.clone())
    }

    /// Interface `index`'s name in `netns`, the removed ones' included.
    pub fn dev_name(&self, netns: u32, index: u32) -> Option<String> {
        self.spaces.get(&netns).and_then(|s| s.name_of(index))
    }

    /// What became of delete request `ev` so far: the removal the kernel announced that
    /// matches it (claimed, so no other request gets it); `None` while nothing is known
    /// yet and the wait is not `over`.
    pub fn outcome(&mut self, ev: &Event, over: bool) -> Option<Outcome> {
        // Seen in the kernel's handler (the kernel-function mode): its answer is known.
        if ev.result.is_some_and(|r| r < 0) {
            return Some(Outcome::NotApplied);
        }
        let Some(s) = ev.netns.and_then(|n| self.spaces.get_mut(&n)) else {
            return over.then_some(Outcome::Unknown);
        };
        let names = |i: u32| name_in(&s.links, &s.names, i);
        if let Some(d) =
            s.deleted.iter_mut().find(|d| !d.claimed && rtobject::request_matches(ev, &d.object, &names))
        {
            d.claimed = true;
            return Some(Outcome::Removed(d.object.clone()));
        }
        if !over {
            return None;
        }
        // Nothing announced. With the watch older than the request (by the kernel's
        // time of it: a namespace first seen at a later record of the same batch was
        // dumped after this request was carried out) and no lost notification since,
        // the kernel removed nothing.
        let reliable = s.since <= ev.time && s.overrun.is_none_or(|t| t < ev.time);
        let applied = ev.result == Some(0);
        Some(if !applied && (reliable || s.holds(ev)) { Outcome::NotApplied } else { Outcome::Unknown })
    }

    /// The IPv4 routes through the device or from the address `ev` removed (an
    /// `addr_delete`, `link_delete`, or a `link_set` down) that a fresh dump no longer
    /// shows: the ones the kernel flushed, as `ip route` lines. `None` when the
    /// namespace's routes are not tracked.
    pub fn flushed(&mut self, ev: &Event) -> Option<Vec<String>> {
        let s = self.spaces.get_mut(&ev.netns?)?;
        if !s.routes_complete {
            return None;
        }
        let index = ev.ifindex?;
        let addr = match ev.kind {
            Kind::AddrDelete => ev.dst.as_deref().and_then(|d| d.split('/').next()).map(str::to_string),
            _ => None,
        };
        if ev.kind == Kind::AddrDelete && ev.family.as_deref() == Some("inet6") {
            return Some(Vec::new());
        }
        // One dump per settle round serves every removal judged in it: two removals a
        // millisecond apart are both done by the time of the dump, and each is given
        // the routes through its own device.
        if s.fresh_v4.is_none() {
            s.fresh_v4 = Some(s.dump_routes(AF_INET));
        }
        let fresh = s.fresh_v4.as_ref()?;
        if fresh.len() > MAX_ROUTES {
            return None;
        }
        let names = |i: u32| name_in(&s.links, &s.names, i);
        let mut gone = Vec::new();
        let mut kept = Vec::with_capacity(s.routes.len());
        for r in std::mem::take(&mut s.routes) {
            let via = r.family == AF_INET && (r.uses_dev(index) || (addr.is_some() && r.prefsrc == addr));
            if via && !fresh.iter().any(|f| f.same(&r)) {
                gone.push(r.describe(&names));
            } else {
                kept.push(r);
            }
        }
        s.routes = kept;
        Some(gone)
    }

    /// Ends a settle round: a namespace with no removal still waiting takes its IPv4
    /// routes from the round's fresh dump (dropping routes that went without anybody's
    /// request tracer saw, e.g. a link set down by ioctl).
    fn end_round(&mut self, waiting: &[u32]) {
        for (ns, s) in self.spaces.iter_mut() {
            let Some(fresh) = s.fresh_v4.take() else { continue };
            if waiting.contains(ns) || fresh.len() > MAX_ROUTES {
                continue;
            }
            s.routes.retain(|r| r.family != AF_INET);
            s.routes.extend(fresh);
        }
    }

    /// Forgets (and closes the sockets of) the namespaces no process and no /run/netns
    /// name refers to any more, and starts watching those named under /run/netns.
    /// Cheap when called often: it works at most every [`ALIVE_EVERY`].
    pub fn housekeeping(&mut self) {
        if self.last_alive_check.is_some_and(|t| t.elapsed() < ALIVE_EVERY) {
            return;
        }
        self.last_alive_check = Some(Instant::now());
        let own = netns::own();
        let named = netns::list_named();
        let gone: Vec<u32> = self
            .spaces
            .iter_mut()
            .filter(|(ns, _)| Some(**ns) != own && !named.iter().any(|(_, i)| i == *ns))
            .filter_map(|(ns, s)| {
                if netns::is_in(s.pid, *ns) {
                    return None;
                }
                match netns::find_pid(*ns) {
                    Some(p) => {
                        s.pid = p;
                        None
                    }
                    None => Some(*ns),
                }
            })
            .collect();
        for ns in gone {
            tracing::debug!("network namespace {ns} is gone; forgetting it");
            self.spaces.remove(&ns);
        }
        for (name, ino) in named {
            if !self.spaces.contains_key(&ino) && self.watch(ino, 0) {
                if let Some(s) = self.spaces.get_mut(&ino) {
                    s.name = Some(name);
                }
            }
        }
        self.unreachable.retain(|_, t| t.elapsed() < RETRY_AFTER);
    }
}

/// An address or link removal is judged this long after tracer saw the request, so
/// the kernel has finished flushing its routes before they are looked for.
const FLUSH_SETTLE: Duration = Duration::from_millis(100);

/// Delete requests held until the kernel's answer is known, then handed back in the
/// order they came, filled in: `confirmed`, the removed `object`, `flushed_routes`.
#[derive(Debug, Default)]
pub struct Confirmer {
    pub net: NetState,
    pending: Vec<(Instant, Box<Event>)>,
}

impl Confirmer {
    /// Whether events of this kind wait for the kernel's answer.
    pub fn waits_for(ev: &Event) -> bool {
        matches!(ev.kind, Kind::RouteDelete | Kind::RuleDelete | Kind::AddrDelete | Kind::LinkDelete)
            || (ev.kind == Kind::LinkSet && ev.up == Some(false))
    }

    /// Holds `ev` if it waits for the kernel (see [`Confirmer::waits_for`]), else gives
    /// it back.
    pub fn hold(&mut self, mut ev: Box<Event>) -> Option<Box<Event>> {
        if let Some(n) = ev.netns {
            ev.netns_name = self.net.name(n).map(Box::new);
        }
        if !Self::waits_for(&ev) {
            return Some(ev);
        }
        self.pending.push((Instant::now(), ev));
        None
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// The held events whose answer is known now (all of them when `all`: at the end).
    pub fn settle(&mut self, all: bool) -> Vec<Box<Event>> {
        if self.pending.is_empty() {
            return Vec::new();
        }
        self.net.sync();
        let now = Instant::now();
        let mut out = Vec::new();
        for (seen, mut ev) in std::mem::take(&mut self.pending) {
            let age = now.duration_since(seen);
            let flushes = matches!(ev.kind, Kind::AddrDelete | Kind::LinkDelete | Kind::LinkSet);
            if flushes && age < FLUSH_SETTLE && !all {
                self.pending.push((seen, ev));
                continue;
            }
            if ev.kind == Kind::LinkSet {
                ev.flushed_routes = self.net.flushed(&ev).map(Box::new);
                out.push(ev);
                continue;
            }
            match self.net.outcome(&ev, all || age >= CONFIRM_WAIT) {
                None => {
                    self.pending.push((seen, ev));
                    continue;
                }
                Some(Outcome::Removed(obj)) => {
                    let netns = ev.netns.unwrap_or(0);
                    let net = &self.net;
                    rtobject::describe_into(&mut ev, &obj, &|i| net.dev_name(netns, i));
                    ev.confirmed = Some(true);
                    if flushes {
                        ev.flushed_routes = self.net.flushed(&ev).map(Box::new);
                    }
                }
                Some(Outcome::NotApplied) => ev.confirmed = Some(false),
                Some(Outcome::Unknown) => {}
            }
            out.push(ev);
        }
        let waiting: Vec<u32> = self
            .pending
            .iter()
            .filter(|(_, e)| matches!(e.kind, Kind::AddrDelete | Kind::LinkDelete | Kind::LinkSet))
            .filter_map(|(_, e)| e.netns)
            .collect();
        self.net.end_round(&waiting);
        out
    }
}

fn open_sockets() -> std::io::Result<(rtnl::Socket, rtnl::Socket)> {
    // The monitor first: a change made during the dump is then in both, and applying
    // it twice is harmless.
    Ok((rtnl::Socket::monitor()?, rtnl::Socket::dumper()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_fresh_dump_no_longer_shows_is_gone() {
        let link = |index, name: &str| RtObject::Link(Link { index, name: Some(name.into()), up: true });
        let before = vec![link(1, "lo"), link(7, "lxc1"), link(8, "lxc2")];
        // lxc2 renamed and set down is the same link; lxc1 is gone.
        let after = vec![link(1, "lo"), RtObject::Link(Link { index: 8, name: Some("x".into()), up: false })];
        assert_eq!(gone(before, &after), vec![link(7, "lxc1")]);
    }

    #[test]
    fn own_namespace_has_loopback_and_its_routes() {
        let mut n = NetState::default();
        let ns = netns::own().unwrap();
        assert!(n.watch(ns, std::process::id()));
        assert_eq!(n.dev_name(ns, 1).as_deref(), Some("lo"));
        let s = &n.spaces[&ns];
        // `local 127.0.0.1 dev lo table local proto kernel scope host src 127.0.0.1`
        assert!(
            s.routes.iter().any(|r| r.table == 255 && r.dst.as_deref() == Some("127.0.0.1")),
            "{:?}",
            s.routes
        );
        assert!(s.rules.iter().any(|r| r.priority == 32766 && r.table == 254), "{:?}", s.rules);
        assert!(s.addrs.iter().any(|a| a.local.as_deref() == Some("127.0.0.1")));
    }
}
