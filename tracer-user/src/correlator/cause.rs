//! The request behind an act: a finding whose actor is systemd or systemd-networkd names
//! the request that made it act, when one came shortly before (`details.cause`, and the
//! summary says it in words: "12 ms after kubelet called
//! SetUnitProperties(kubepods-burstable.slice, CPUWeight=7)").
//!
//! systemd and networkd act on requests: kubelet's `SetUnitProperties` every minute makes
//! systemd realize the QoS slice (incident 1's seed story); a package upgrade's
//! `systemctl restart systemd-networkd` makes the new networkd delete foreign rules
//! (incident 3, the Datadog outage). The requests are events:
//! - `dbus_call`: a method call on the system bus (node/bus.rs), with the caller;
//! - `exec` of a request tool (pipeline/requests.rs): `systemctl` as root talks to PID 1
//!   on its private socket, which no bus monitor sees, so its command line says it.
//!
//! The cause is the latest request to the finding's actor in the [`WINDOW_NS`] before its
//! first act (a bus call up to [`BUS_SKEW_NS`] after it: the monitor's clock is when it
//! received the call, not when systemd did). None: the finding says so, and guesses
//! nothing. Requests are learned from events, so replay names the same causes.

use std::collections::{HashMap, VecDeque};

use super::HostKey;
use crate::stream::schema::{Event, Finding, Kind, Timestamp};

/// How long before an act a request still explains it: systemd realizes a unit within
/// milliseconds, a restarted networkd deletes foreign rules within a second or two of
/// starting (seconds under emulation).
pub const WINDOW_NS: i64 = 10_000_000_000;

/// How much later than the act a bus call may be stamped (see the module comment).
const BUS_SKEW_NS: i64 = 500_000_000;

/// Requests and act times kept per host.
const MAX_REQUESTS: usize = 1024;
const MAX_ACTS: usize = 65_536;

/// Whom a request asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Systemd,
    Networkd,
}

#[derive(Debug, Clone)]
struct Request {
    time: Timestamp,
    seq: u64,
    /// Both when a restart of networkd is asked of systemd.
    targets: Vec<Target>,
    /// `SetUnitProperties(kubepods-burstable.slice, CPUWeight=7)`, `systemctl daemon-reload`.
    what: String,
    via_bus: bool,
    /// The component that asked (on whose behalf the tool ran), and the process.
    who: String,
    pid: u32,
    /// The caller and its ancestors, nearest first.
    chain: Vec<String>,
}

#[derive(Debug, Default)]
pub struct Causes {
    requests: HashMap<HostKey, VecDeque<Request>>,
    /// Times of the acts of systemd and networkd, by seq: a finding's evidence.
    acts: HashMap<(HostKey, u64), Timestamp>,
    act_order: VecDeque<(HostKey, u64)>,
}

/// `systemctl` verbs that change something (systemctl(1)); `status`, `show`, `cat` and the
/// `list-*`/`is-*` queries do not.
const SYSTEMCTL_CHANGES: &[&str] = &[
    "start",
    "stop",
    "restart",
    "try-restart",
    "reload",
    "reload-or-restart",
    "try-reload-or-restart",
    "condrestart",
    "force-reload",
    "kill",
    "isolate",
    "daemon-reload",
    "daemon-reexec",
    "set-property",
    "revert",
    "enable",
    "disable",
    "reenable",
    "mask",
    "unmask",
    "preset",
    "reset-failed",
];

fn target_of_actor(actor: &str) -> Option<Target> {
    match actor {
        "systemd" => Some(Target::Systemd),
        "systemd-networkd" => Some(Target::Networkd),
        _ => None,
    }
}

fn names_networkd(s: &str) -> bool {
    s == "systemd-networkd" || s == "systemd-networkd.service"
}

/// The request an event is, if any.
fn request(ev: &Event) -> Option<Request> {
    let (targets, what, via_bus) = match ev.kind {
        Kind::DbusCall => {
            let c = ev.call.as_deref()?;
            let mut t = Vec::new();
            match c.destination.as_str() {
                "org.freedesktop.systemd1" => {
                    t.push(Target::Systemd);
                    if c.unit.as_deref().is_some_and(names_networkd) {
                        t.push(Target::Networkd);
                    }
                }
                "org.freedesktop.network1" => t.push(Target::Networkd),
                _ => return None,
            }
            (t, c.describe(), true)
        }
        Kind::Exec => {
            let cmd = ev.cmdline.as_deref()?;
            let args: Vec<&str> = cmd.split_whitespace().collect();
            let tool = ev.exe.as_deref().and_then(|e| e.rsplit('/').next()).unwrap_or(ev.comm.as_str());
            // The verb: the first argument that is not an option.
            let verb = args.iter().skip(1).find(|a| !a.starts_with('-')).copied().unwrap_or("");
            let networkd = args.iter().skip(1).any(|a| names_networkd(a));
            let mut t = Vec::new();
            match tool {
                "systemctl" if SYSTEMCTL_CHANGES.contains(&verb) => {
                    t.push(Target::Systemd);
                    if networkd {
                        t.push(Target::Networkd);
                    }
                }
                "systemd-run" => t.push(Target::Systemd),
                "deb-systemd-invoke" | "invoke-rc.d" | "service" if networkd => {
                    t.extend([Target::Systemd, Target::Networkd])
                }
                "deb-systemd-invoke" | "invoke-rc.d" | "service" => t.push(Target::Systemd),
                "networkctl"
                    if matches!(verb, "reload" | "reconfigure" | "renew" | "forcerenew" | "up" | "down") =>
                {
                    t.push(Target::Networkd)
                }
                _ => return None,
            }
            (t, cmd.to_string(), false)
        }
        _ => return None,
    };
    let who = ev.on_behalf_of.clone().unwrap_or_else(|| ev.actor.clone());
    let mut chain = vec![ev.actor.clone()];
    chain.extend(ev.ancestry.iter().take_while(|a| *a != "systemd").cloned());
    Some(Request { time: ev.time, seq: ev.seq, targets, what, via_bus, who, pid: ev.pid, chain })
}

impl Causes {
    pub fn learn(&mut self, ev: &Event) {
        if let Some(r) = request(ev) {
            let q = self.requests.entry(ev.host.clone()).or_default();
            if q.len() >= MAX_REQUESTS {
                q.pop_front();
            }
            q.push_back(r);
            return;
        }
        if target_of_actor(&ev.actor).is_some() && ev.seq != 0 {
            let key = (ev.host.clone(), ev.seq);
            if self.act_order.len() >= MAX_ACTS {
                if let Some(old) = self.act_order.pop_front() {
                    self.acts.remove(&old);
                }
            }
            self.acts.insert(key.clone(), ev.time);
            self.act_order.push_back(key);
        }
    }

    /// Names the cause of a finding of systemd or networkd (its follow-ups keep the
    /// first finding's).
    pub fn annotate(&self, f: &mut Finding) {
        let Some(target) = target_of_actor(&f.actor) else { return };
        if f.details.get("phase").and_then(|p| p.as_str()) == Some("window_closed") {
            return;
        }
        // The first act: the earliest evidence event known, else the finding's time.
        let first = f
            .evidence
            .iter()
            .filter_map(|s| self.acts.get(&(f.host.clone(), *s)))
            .min()
            .copied()
            .unwrap_or(f.time);
        let cause = self.requests.get(&f.host).and_then(|q| {
            q.iter().rev().find(|r| {
                let skew = if r.via_bus { BUS_SKEW_NS } else { 0 };
                r.targets.contains(&target) && r.time.0 <= first.0 + skew && first.0 - r.time.0 <= WINDOW_NS
            })
        });
        let whom = if target == Target::Systemd { "systemd" } else { "systemd-networkd" };
        match cause {
            Some(r) => {
                let ms = (first.0 - r.time.0) / 1_000_000;
                let when = if ms >= 0 { format!("{ms} ms after") } else { format!("as (within {} ms)", -ms) };
                let how = if r.via_bus {
                    format!("{} called {}", r.who, r.what)
                } else if r.who != r.chain[0] {
                    format!("{} ran `{}`", r.who, r.what)
                } else {
                    format!("`{}` ran", r.what)
                };
                let chain =
                    if r.chain.len() > 1 { format!(" ({})", r.chain.join(" ← ")) } else { String::new() };
                f.summary.push_str(&format!("; {when} {how}{chain}"));
                f.details.insert(
                    "cause".into(),
                    serde_json::json!({
                        "who": r.who,
                        "what": r.what,
                        "via": if r.via_bus { "dbus" } else { "exec" },
                        "ms_before": ms,
                        "pid": r.pid,
                        "chain": r.chain,
                        "seq": r.seq,
                    }),
                );
            }
            None => {
                f.summary.push_str(&format!(
                    "; no request to {whom} seen in the {} s before (no cause known)",
                    WINDOW_NS / 1_000_000_000
                ));
                f.details.insert("cause".into(), serde_json::Value::Null);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use crate::stream::schema::{BusCall, Severity};

    fn finding_of(actor: &str, evidence: Vec<u64>, secs: f64) -> Finding {
        Finding::new("x", Severity::Critical, at(secs), actor, "it happened".into(), evidence)
    }

    #[test]
    fn a_bus_call_names_the_caller_and_how_long_before() {
        let mut c = Causes::default();
        let mut call = ev(Kind::DbusCall, "busctl").at(10.0).0;
        call.seq = 1;
        call.on_behalf_of = Some("kubelet".into());
        call.ancestry = vec!["kubelet".into(), "systemd".into()];
        call.call = Some(Box::new(BusCall {
            destination: "org.freedesktop.systemd1".into(),
            member: "SetUnitProperties".into(),
            unit: Some("kubepods-burstable.slice".into()),
            args: vec!["CPUWeight=7".into()],
            ..Default::default()
        }));
        c.learn(&call);
        let mut act = cg_write("systemd", "/kubepods.slice", "-cpuset").at(10.012).0;
        act.seq = 2;
        c.learn(&act);
        let mut f = finding_of("systemd", vec![2], 10.5);
        c.annotate(&mut f);
        assert!(
            f.summary.ends_with(
                "12 ms after kubelet called SetUnitProperties(kubepods-burstable.slice, CPUWeight=7) (busctl ← kubelet)"
            ),
            "{}",
            f.summary
        );
        assert_eq!(f.details["cause"]["who"], "kubelet");
        assert_eq!(f.details["cause"]["seq"], 1);
        // networkd's finding is not systemd's request.
        let mut g = finding_of("systemd-networkd", vec![], 10.5);
        c.annotate(&mut g);
        assert!(g.details["cause"].is_null(), "{:?}", g.details);
        assert!(g.summary.contains("no request to systemd-networkd seen"), "{}", g.summary);
    }

    #[test]
    fn systemctl_restart_of_networkd_from_a_package_upgrade() {
        let mut c = Causes::default();
        let mut run = ev(Kind::Exec, "systemctl").at(5.0).0;
        run.seq = 7;
        run.exe = Some("/usr/bin/systemctl".into());
        run.cmdline = Some(Box::new("systemctl restart systemd-networkd".into()));
        run.ancestry = vec!["sh".into(), "dpkg".into(), "unattended-upgr".into(), "systemd".into()];
        c.learn(&run);
        // A query is no request.
        let mut status = run.clone();
        status.seq = 8;
        status.cmdline = Some(Box::new("systemctl status systemd-networkd".into()));
        c.learn(&status);
        let mut f = finding_of("systemd-networkd", vec![], 5.4);
        c.annotate(&mut f);
        assert!(
            f.summary.ends_with("400 ms after `systemctl restart systemd-networkd` ran (systemctl ← sh ← dpkg ← unattended-upgr)"),
            "{}",
            f.summary
        );
        assert_eq!(f.details["cause"]["seq"], 7);
        // Too long before: no cause.
        let mut late = finding_of("systemd-networkd", vec![], 16.0);
        c.annotate(&mut late);
        assert!(late.details["cause"].is_null());
    }
}
