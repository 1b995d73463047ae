//! The incident detectors (docs/DESIGN.md, "The incidents it exists for").
//!
//! The correlator sees attributed events only, from the live pipeline or from `replay`,
//! so everything it knows comes from the event stream: which cgroups are kubepods, which
//! interfaces exist in a network namespace, which controllers a cgroup had. Time is the
//! events' time; [`Correlator::tick`] closes time windows when no event comes.
//!
//! | id | module |
//! |---|---|
//! | `kubepods-controller-removed` | [`kubepods`] |
//! | `cgroup-driver-mismatch` | [`cgroup_driver`] |
//! | `rp-filter-on-cilium` | [`rp_filter`] |
//! | `cilium-route-deleted`, `cilium-rule-deleted` | [`cilium`] |
//! | `cilium-socket-lb-nested-cgroup` | [`socket_lb`] |
//!
//! State is kept per host (`Event::host`, set when replay merges several nodes), so
//! merged recordings never mix one node's cgroups or namespaces with another's.

pub mod cause;
pub mod cgroup_driver;
pub mod cilium;
pub mod kube;
pub mod kubepods;
pub mod pods;
pub mod rp_filter;
pub mod socket_lb;

use crate::pipeline::actor;
use crate::stream::schema::{Event, Finding, Severity, Timestamp};

/// Runs every detector over the event stream.
#[derive(Debug, Default)]
pub struct Correlator {
    ifnames: IfIndexNames,
    kubepods: kubepods::ControllerRemoved,
    driver: cgroup_driver::DriverMismatch,
    rp_filter: rp_filter::RpFilter,
    cilium: cilium::CiliumDeletions,
    socket_lb: socket_lb::NestedSocketLb,
    pods: pods::PodNames,
    causes: cause::Causes,
}

/// One incident's detector: it sees every attributed event in time order and pushes the
/// findings an event completes; `tick` closes the time windows that ended by `now` (the
/// wall clock live, the events' time in replay: see [`Ticker`]); `finish` closes the rest
/// at the end of the stream. Adding one: docs/ARCHITECTURE.md, "Add a detector".
pub trait Detector {
    fn observe(&mut self, ev: &Event, out: &mut Vec<Finding>);
    fn tick(&mut self, _now: Timestamp, _out: &mut Vec<Finding>) {}
    fn finish(&mut self, _out: &mut Vec<Finding>) {}
}

impl Correlator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Findings the event completes, at once (live users see them with the event).
    fn detectors(&mut self) -> [&mut dyn Detector; 5] {
        [&mut self.kubepods, &mut self.driver, &mut self.rp_filter, &mut self.cilium, &mut self.socket_lb]
    }

    pub fn observe(&mut self, ev: &Event) -> Vec<Finding> {
        let ev = self.ifnames.resolve(ev);
        let ev = ev.as_ref();
        self.pods.learn(ev);
        self.causes.learn(ev);
        let mut out = Vec::new();
        for d in self.detectors() {
            d.observe(ev, &mut out);
        }
        self.named(out)
    }

    /// Findings with the pods their events named (`pods::PodNames`).
    fn named(&self, mut out: Vec<Finding>) -> Vec<Finding> {
        for f in &mut out {
            self.pods.annotate(f);
            self.causes.annotate(f);
        }
        out
    }

    /// Closes the time windows that ended by `now` (called about once a second live,
    /// and at the end of a replay).
    pub fn tick(&mut self, now: Timestamp) -> Vec<Finding> {
        let mut out = Vec::new();
        for d in self.detectors() {
            d.tick(now, &mut out);
        }
        self.named(out)
    }

    /// End of the stream: closes every open window.
    pub fn finish(&mut self) -> Vec<Finding> {
        let mut out = Vec::new();
        for d in self.detectors() {
            d.finish(&mut out);
        }
        self.named(out)
    }
}

/// What replay needs from the correlator (`correlator::Correlator`), behind a trait so
/// replay can be tested with a scripted one and keeps compiling while the real one
/// changes.
pub trait Correlate {
    fn observe(&mut self, e: &Event) -> Vec<Finding>;
    /// Time passes: findings whose window closed (e.g. "not re-added within 10 s").
    fn tick(&mut self, now: Timestamp) -> Vec<Finding>;
    /// End of input.
    fn finish(&mut self) -> Vec<Finding>;
}

/// The correlator replay uses by default.
pub fn default_correlator() -> Box<dyn Correlate> {
    Box::new(Correlator::new())
}

impl Correlate for Correlator {
    fn observe(&mut self, e: &Event) -> Vec<Finding> {
        Correlator::observe(self, e)
    }
    fn tick(&mut self, now: Timestamp) -> Vec<Finding> {
        Correlator::tick(self, now)
    }
    fn finish(&mut self) -> Vec<Finding> {
        Correlator::finish(self)
    }
}

/// Finds nothing (replay with `--no-correlate`-like behaviour in tests and benches).
pub struct NoCorrelator;

impl Correlate for NoCorrelator {
    fn observe(&mut self, _: &Event) -> Vec<Finding> {
        Vec::new()
    }
    fn tick(&mut self, _: Timestamp) -> Vec<Finding> {
        Vec::new()
    }
    fn finish(&mut self) -> Vec<Finding> {
        Vec::new()
    }
}

/// How often time windows are closed when no event comes: the live session ticks with
/// the wall clock at this period, replay with the events' time. A held rp_filter finding
/// (its revert window, [`rp_filter::REVERT_WINDOW_NS`]) is out within two periods.
pub const TICK_NS: i64 = 250_000_000;
/// The one tick driver live and replay share: it ticks a correlator once a tick period
/// of the clock it is given has passed since its last tick (the wall clock live, each
/// event's time in replay), so windows close the same way in both.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ticker {
    last: Option<Timestamp>,
}

impl Ticker {
    /// The findings of the windows that closed by `now`, when a tick is due.
    pub fn advance(&mut self, c: &mut dyn Correlate, now: Timestamp) -> Vec<Finding> {
        match self.last {
            Some(last) if now.0.saturating_sub(last.0) < TICK_NS => Vec::new(),
            _ => {
                self.last = Some(now);
                c.tick(now)
            }
        }
    }
}

/// [`TICK_NS`] as a duration.
pub const TICK: std::time::Duration = std::time::Duration::from_nanos(TICK_NS as u64);

/// ifindex -> name per (host, netns), learned from events that name both (a request
/// naming the device, the live pipeline's names), so that every detector sees a
/// request that names a device by index only with its name filled in.
#[derive(Debug, Default)]
struct IfIndexNames {
    names: std::collections::HashMap<(HostKey, Option<u32>, u32), String>,
}

impl IfIndexNames {
    /// Entries kept before starting over (ifindexes only grow in a netns).
    const MAX: usize = 65_536;

    fn resolve<'a>(&mut self, ev: &'a Event) -> std::borrow::Cow<'a, Event> {
        use std::borrow::Cow;
        match (&ev.dev, ev.ifindex) {
            (Some(d), Some(i)) => {
                if self.names.len() >= Self::MAX {
                    self.names.clear();
                }
                self.names.insert((ev.host.clone(), ev.netns, i), d.clone());
                Cow::Borrowed(ev)
            }
            (None, Some(i)) => match self.names.get(&(ev.host.clone(), ev.netns, i)) {
                Some(name) => Cow::Owned(Event { dev: Some(name.clone()), ..ev.clone() }),
                None => Cow::Borrowed(ev),
            },
            _ => Cow::Borrowed(ev),
        }
    }
}

/// State of one node: replay may merge recordings of several.
type HostKey = Option<String>;

/// The actor of an event, re-derived from exe/comm when a recording left it empty.
pub(crate) fn actor(ev: &Event) -> String {
    if !ev.actor.is_empty() {
        return ev.actor.clone();
    }
    actor::actor_name(ev.exe.as_deref(), &ev.comm)
}

/// `systemd-sysctl (for systemd-udevd)`, for summaries.
pub(crate) fn who(ev: &Event) -> String {
    match &ev.on_behalf_of {
        Some(b) if !b.is_empty() && *b != actor(ev) => format!("{} (for {b})", actor(ev)),
        _ => actor(ev),
    }
}

/// Whether the event was made by one of `owners`, or by a helper acting for one.
pub(crate) fn made_by(ev: &Event, owners: &[&str]) -> bool {
    owners.contains(&actor(ev).as_str()) || ev.on_behalf_of.as_deref().is_some_and(|b| owners.contains(&b))
}

/// A finding on one event, with the common fields filled from it.
pub(crate) fn finding(
    id: &str,
    severity: Severity,
    ev: &Event,
    summary: String,
    remediation: &str,
) -> Finding {
    Finding {
        host: ev.host.clone(),
        ..Finding::new(id, severity, ev.time, &actor(ev), summary, vec![ev.seq]).with_remediation(remediation)
    }
}

/// Adds the actor's attribution to a finding's details.
pub(crate) fn attribution(f: &mut Finding, ev: &Event) {
    f.details.insert("pid".into(), ev.pid.into());
    if !ev.comm.is_empty() {
        f.details.insert("comm".into(), ev.comm.clone().into());
    }
    if let Some(exe) = &ev.exe {
        f.details.insert("exe".into(), exe.clone().into());
    }
    if let Some(b) = &ev.on_behalf_of {
        f.details.insert("on_behalf_of".into(), b.clone().into());
    }
    if !ev.ancestry.is_empty() {
        f.details.insert("ancestry".into(), ev.ancestry.clone().into());
    }
}

/// `0x200`, `512`: a number as netlink decoders and people write it.
pub(crate) fn parse_num(s: &str) -> Option<u32> {
    let s = s.trim();
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    //! A small builder for synthetic events and a runner that feeds them in order.
    use super::*;
    use crate::stream::schema::Kind;

    /// Seconds from an arbitrary origin to a timestamp.
    pub fn at(secs: f64) -> Timestamp {
        Timestamp(1_700_000_000_000_000_000 + (secs * 1e9) as i64)
    }

    pub struct B(pub Event);

    pub fn ev(kind: Kind, actor: &str) -> B {
        B(Event { kind, actor: actor.into(), comm: actor.chars().take(15).collect(), ..Default::default() })
    }
    pub fn cg_write(actor: &str, cgroup: &str, value: &str) -> B {
        ev(Kind::CgroupWrite, actor)
            .cgroup(cgroup)
            .file("cgroup.subtree_control")
            .value(value)
            .result(value.len() as i64)
    }
    pub fn sysctl(actor: &str, name: &str, value: &str) -> B {
        let mut b = ev(Kind::SysctlWrite, actor);
        b.0.name = Some(name.into());
        b.0.value = Some(value.into());
        b.netns(4026531840)
    }

    impl B {
        pub fn seq(mut self, s: u64) -> Self {
            self.0.seq = s;
            self
        }
        pub fn at(mut self, secs: f64) -> Self {
            self.0.time = at(secs);
            self
        }
        pub fn behalf(mut self, b: &str) -> Self {
            self.0.on_behalf_of = Some(b.into());
            self
        }
        pub fn cgroup(mut self, c: &str) -> Self {
            self.0.cgroup = Some(c.into());
            self
        }
        pub fn file(mut self, f: &str) -> Self {
            self.0.file = Some(f.into());
            self
        }
        pub fn value(mut self, v: &str) -> Self {
            self.0.value = Some(v.into());
            self
        }
        pub fn old(mut self, v: &str) -> Self {
            self.0.old_value = Some(v.into());
            self
        }
        pub fn result(mut self, r: i64) -> Self {
            self.0.result = Some(r);
            self
        }
        pub fn no_result(mut self) -> Self {
            self.0.result = None;
            self
        }
        pub fn controllers(mut self, before: &str, after: &str) -> Self {
            let l = |s: &str| s.split_whitespace().map(str::to_string).collect::<Vec<_>>();
            self.0.controllers_before = Some(l(before));
            self.0.controllers_after = Some(l(after));
            self
        }
        /// What was below the cgroup: `running` pods (listed), `populated`.
        pub fn below(mut self, pods: u32, running: &[&str], populated: bool) -> Self {
            self.0.below = Some(Box::new(crate::stream::schema::Below {
                pods,
                running: running.len() as u32,
                running_pods: running.iter().map(|u| u.to_string()).collect(),
                populated,
                partial: false,
            }));
            self
        }
        pub fn netns(mut self, n: u32) -> Self {
            self.0.netns = Some(n);
            self
        }
        pub fn dev(mut self, d: &str) -> Self {
            self.0.dev = Some(d.into());
            self
        }
        pub fn ifindex(mut self, i: u32) -> Self {
            self.0.ifindex = Some(i);
            self
        }
        pub fn table(mut self, t: u32) -> Self {
            self.0.table = Some(t);
            self
        }
        pub fn dst(mut self, d: &str) -> Self {
            self.0.dst = Some(d.into());
            self
        }
        pub fn family(mut self, f: &str) -> Self {
            self.0.family = Some(f.into());
            self
        }
        pub fn priority(mut self, p: u32) -> Self {
            self.0.priority = Some(p);
            self
        }
        pub fn fwmark(mut self, m: &str) -> Self {
            self.0.fwmark = Some(m.into());
            self
        }
        pub fn rp_filter(mut self, v: u32) -> Self {
            self.0.rp_filter = Some(v);
            self
        }
        pub fn up(mut self, up: bool) -> Self {
            self.0.up = Some(up);
            self
        }
        pub fn confirmed(mut self, c: bool) -> Self {
            self.0.confirmed = Some(c);
            self
        }
        pub fn object(mut self, o: &str) -> Self {
            self.0.object = Some(Box::new(o.into()));
            self
        }
        pub fn flushed(mut self, routes: &[&str]) -> Self {
            self.0.flushed_routes = Some(Box::new(routes.iter().map(|r| r.to_string()).collect()));
            self
        }
        pub fn signal(mut self, sig: &str, target_cgroup: &str) -> Self {
            self.0.signal = Some(sig.into());
            self.0.target_cgroup = Some(target_cgroup.into());
            self
        }
        pub fn host(mut self, h: &str) -> Self {
            self.0.host = Some(h.into());
            self
        }
    }

    /// Feeds events (numbering them 1.. when their seq is 0), ticks, finishes; returns
    /// every finding.
    pub fn run(events: Vec<B>) -> Vec<Finding> {
        let mut c = Correlator::new();
        let mut out = Vec::new();
        let mut last = Timestamp(0);
        for (i, b) in events.into_iter().enumerate() {
            let mut e = b.0;
            if e.seq == 0 {
                e.seq = i as u64 + 1;
            }
            last = last.max(e.time);
            out.extend(c.observe(&e));
        }
        out.extend(c.tick(last));
        out.extend(c.finish());
        out
    }

    pub fn ids(f: &[Finding]) -> Vec<&str> {
        f.iter().map(|f| f.id.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;
    use crate::pipeline::decode::Task;
    use crate::pipeline::process::ProcessTable;
    use crate::stream::schema::Kind;

    /// The process table and the correlator together: the finding names the actor the
    /// table resolved from exec/fork records, not the truncated comm.
    #[test]
    fn incidents_2_and_3_attributed_end_to_end() {
        let tick = 10_000_000;
        let mut t = ProcessTable::with_limits(tick, crate::pipeline::process::DEFAULT_GRACE_NS, 1024);
        let init = Task {
            ktime_ns: 1,
            pid: 1,
            tid: 1,
            start_ns: tick,
            comm: "systemd".into(),
            ..Default::default()
        };
        t.exec(&init, "/usr/lib/systemd/systemd");
        let spawn = |t: &mut ProcessTable, parent: &Task, pid: u32, comm: &str, exe: &str| {
            let child = Task {
                ktime_ns: parent.ktime_ns + 1,
                pid,
                tid: pid,
                ppid: parent.pid,
                start_ns: u64::from(pid) * tick,
                parent_start_ns: parent.start_ns,
                comm: comm.into(),
                parent_comm: parent.comm.clone(),
                netns: 4026531840,
                ..Default::default()
            };
            t.fork(parent, pid, child.start_ns);
            t.exec(&child, exe);
            child
        };
        let networkd = spawn(&mut t, &init, 600, "systemd-network", "/lib/systemd/systemd-networkd");
        let udevd = spawn(&mut t, &init, 300, "systemd-udevd", "/usr/bin/udevadm");
        let worker = spawn(&mut t, &udevd, 3001, "(udev-worker)", "/proc/self/exe");
        let sysctl = spawn(&mut t, &worker, 3002, "systemd-sysctl", "/lib/systemd/systemd-sysctl");
        t.exit(&Task { ktime_ns: 99, ..sysctl.clone() });

        let mut c = Correlator::new();
        let mut findings = Vec::new();
        let mut feed = |task: &Task, b: B, seq: u64| {
            let mut e = b.seq(seq).0;
            e.comm = task.comm.clone();
            e.actor = task.comm.clone(); // what the event builder puts before attribution
            t.attribute(task, &mut e);
            findings.extend(c.observe(&e));
        };
        feed(&sysctl, sysctl_b("net.ipv4.conf.lxc12ab.rp_filter", "2"), 1);
        feed(
            &networkd,
            // Past the rp_filter write's revert window, which this event closes.
            ev(Kind::RuleDelete, "").at(1.0).netns(4026531840).priority(9).fwmark("0x200/0xf00").table(2004),
            2,
        );
        assert_eq!(ids(&findings), vec![rp_filter::ID, cilium::RULE_ID]);
        assert_eq!(findings[0].actor, "systemd-sysctl");
        assert!(
            findings[0].summary.starts_with("systemd-sysctl (for systemd-udevd) set"),
            "{}",
            findings[0].summary
        );
        assert_eq!(findings[1].actor, "systemd-networkd");
        assert_eq!(findings[1].details["ancestry"], serde_json::json!(["systemd"]));
    }

    fn sysctl_b(name: &str, value: &str) -> B {
        sysctl("", name, value)
    }

    #[test]
    fn findings_serialize_as_schema_lines() {
        let f = run(vec![cg_write("systemd", "/kubepods.slice", "-cpuset")]);
        let line = serde_json::to_string(&crate::stream::schema::Line::Finding(f[0].clone())).unwrap();
        assert!(
            line.starts_with(r#"{"type":"finding","id":"kubepods-controller-removed","severity":"critical""#),
            "{line}"
        );
        let back: crate::stream::schema::Line = serde_json::from_str(&line).unwrap();
        assert_eq!(back, crate::stream::schema::Line::Finding(f[0].clone()));
    }

    #[test]
    fn empty_actor_in_old_recordings_is_rederived() {
        let mut e = ev(Kind::RuleDelete, "").priority(10).0;
        e.comm = "systemd-network".into();
        assert_eq!(actor(&e), "systemd-networkd");
        e.comm = "cilium-agent".into();
        assert!(Correlator::new().observe(&e).is_empty());
    }
}
