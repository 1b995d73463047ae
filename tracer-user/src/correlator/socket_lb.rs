//! `cilium-socket-lb-nested-cgroup`: Cilium's socket load balancer attached below the
//! host's cgroup2 root (incident 4). A cgroup program sees only the sockets of the cgroup
//! it is attached to and its descendants, so socket-LB programs (connect, sendmsg,
//! recvmsg, getpeername, bind, post_bind, sock_release) on a nested cgroup translate
//! service addresses for the processes below it only: every other pod's service traffic
//! silently bypasses the load balancer. It happens when the agent runs in a private cgroup
//! namespace (Docker's default with cgroup v2) and mounts cgroup2 itself: its `/` is its
//! own cgroup (cilium issues 16259, 16815; cilium-cli PR 627 added the init container that
//! mounts the host's cgroup2 from PID 1's namespaces).
//!
//! Cilium's attaches come from cilium-agent (by executable, or a helper acting for it),
//! or, for attachments found at start whose loader is gone, from Cilium's program names
//! (`cil_sock4_connect`, ...: bpf/bpf_sock.c). One finding per (host, cgroup, attacher)
//! burst: the agent attaches a dozen programs at once; the burst closes after
//! [`BURST_GAP_NS`] without another.

use std::collections::BTreeMap;

use super::{attribution, made_by, Detector, HostKey};
use crate::pipeline::bpf_names::is_socket_lb;
use crate::stream::schema::{Event, Finding, Kind, Severity, Timestamp};

pub const ID: &str = "cilium-socket-lb-nested-cgroup";

/// A burst ends after this long without another attach to the same cgroup.
pub const BURST_GAP_NS: i64 = 1_000_000_000;

/// The prefix of Cilium's BPF program names (bpf/bpf_sock.c: `cil_sock4_connect`).
const PROG_PREFIX: &str = "cil_";

pub const REMEDIATION: &str = "Attach Cilium's socket load balancer at the host's cgroup2 root: \
run cilium-agent with a cgroup2 mount made from the host's cgroup namespace, which is what \
Cilium's Helm chart does with `cgroup.autoMount.enabled=true` and `cgroup.hostRoot=/run/cilium/cgroupv2` \
(its init container mounts it through PID 1's cgroup and mount namespaces; cilium-cli PR 627, \
cilium issues 16259 and 16815), or point the agent's `--cgroup-root` at such a mount, or run the \
agent in the host's cgroup namespace (`--cgroupns=host` with Docker or nerdctl; a pod-level \
host cgroup namespace where the runtime offers one). Then restart cilium-agent so it attaches at the \
root, and detach the nested programs (`bpftool cgroup detach <cgroup path> <attach type> id <prog id>`).";

#[derive(Debug)]
struct Burst {
    first: Timestamp,
    last: Timestamp,
    /// The first attach: the finding's actor and attribution.
    first_event: Event,
    evidence: Vec<u64>,
    /// attach type -> program names.
    programs: BTreeMap<String, Vec<String>>,
    /// How Cilium was recognised.
    by_name_only: bool,
}

#[derive(Debug, Default)]
pub struct NestedSocketLb {
    /// (host, target cgroup, attacher pid) -> the open burst.
    bursts: BTreeMap<(HostKey, String, u32), Burst>,
}

/// Whether the attach is Cilium's: made by cilium-agent or for it, or below it, or (for an
/// attachment found at start whose loader is unknown) a program named like Cilium's.
fn is_cilium(ev: &Event) -> (bool, bool) {
    let by_process = made_by(ev, &["cilium-agent"]) || ev.ancestry.iter().any(|a| a == "cilium-agent");
    let by_name = ev.prog_name.as_deref().is_some_and(|n| n.starts_with(PROG_PREFIX));
    // A live attach by a process that is not Cilium's is not Cilium's, whatever the
    // program is called; only an attachment found at start with no holder goes by name.
    let unknown_loader = ev.found_at_start && ev.pid == 0;
    (by_process || (unknown_loader && by_name), !by_process)
}

impl NestedSocketLb {
    fn emit(key: &(HostKey, String, u32), b: Burst, out: &mut Vec<Finding>) {
        let ev = &b.first_event;
        let types: Vec<&str> = b.programs.keys().map(String::as_str).collect();
        let ns = ev.cgroupns_root.as_deref().unwrap_or("?");
        let how = if ev.found_at_start { "is attached" } else { "attached" };
        let who = if b.by_name_only { "Cilium (by its program names)".to_string() } else { super::who(ev) };
        let ns_note = match ev.cgroupns_root.as_deref() {
            Some("/") | None => String::new(),
            Some(root) => {
                format!("; the attacher's cgroup namespace is rooted at {root}, so this is its `/`")
            }
        };
        let summary = format!(
            "{who} {how} Cilium's socket load balancer ({}) to {}, not the host's cgroup2 root: only processes in \
             that cgroup get service translation, every other pod's service traffic bypasses it{ns_note}",
            types.join(", "),
            key.1,
        );
        let actor = if b.by_name_only { "unknown".to_string() } else { super::actor(ev) };
        let mut f = Finding::new(ID, Severity::Critical, b.first, &actor, summary, b.evidence)
            .with_remediation(REMEDIATION);
        f.host = key.0.clone();
        f.cgroup = Some(key.1.clone());
        attribution(&mut f, ev);
        f.details.insert("attach_types".into(), types.into());
        f.details.insert("programs".into(), serde_json::to_value(&b.programs).unwrap_or_default());
        f.details.insert("cgroupns_root".into(), ns.into());
        if ev.found_at_start {
            f.details.insert("found_at_start".into(), true.into());
        }
        if b.by_name_only {
            f.details.insert("recognised_by".into(), "program name (cil_*)".into());
        }
        f.details.insert("last_attach".into(), b.last.to_rfc3339().into());
        out.push(f);
    }
}

impl Detector for NestedSocketLb {
    fn observe(&mut self, ev: &Event, out: &mut Vec<Finding>) {
        if ev.kind != Kind::CgroupBpfAttach {
            return;
        }
        // A refused attach changed nothing.
        if ev.result.is_some_and(|r| r < 0) {
            return;
        }
        let Some(attach_type) = ev.attach_type.as_deref() else { return };
        let Some(cgroup) = ev.cgroup.as_deref() else { return };
        if !is_socket_lb(attach_type, ev.prog_type.as_deref())
            || cgroup == "/"
            || ev.hierarchy.as_deref().is_some_and(|h| h != "v2")
        {
            return;
        }
        let (cilium, by_name_only) = is_cilium(ev);
        if !cilium {
            return;
        }
        let key = (ev.host.clone(), cgroup.to_string(), ev.pid);
        // A burst whose gap passed before this event closes first (replay without ticks).
        if self.bursts.get(&key).is_some_and(|b| ev.time.0 - b.last.0 >= BURST_GAP_NS) {
            if let Some(b) = self.bursts.remove(&key) {
                Self::emit(&key, b, out);
            }
        }
        let b = self.bursts.entry(key).or_insert_with(|| Burst {
            first: ev.time,
            last: ev.time,
            first_event: ev.clone(),
            evidence: Vec::new(),
            programs: BTreeMap::new(),
            by_name_only,
        });
        b.last = ev.time;
        b.evidence.push(ev.seq);
        let name = match (&ev.prog_name, ev.prog_id) {
            (Some(n), _) if !n.is_empty() => n.clone(),
            (_, Some(id)) => format!("prog {id}"),
            _ => "?".into(),
        };
        b.programs.entry(attach_type.to_string()).or_default().push(name);
    }

    fn tick(&mut self, now: Timestamp, out: &mut Vec<Finding>) {
        let done: Vec<_> = self
            .bursts
            .iter()
            .filter(|(_, b)| now.0 - b.last.0 >= BURST_GAP_NS)
            .map(|(k, _)| k.clone())
            .collect();
        for k in done {
            if let Some(b) = self.bursts.remove(&k) {
                Self::emit(&k, b, out);
            }
        }
    }

    fn finish(&mut self, out: &mut Vec<Finding>) {
        for (k, b) in std::mem::take(&mut self.bursts) {
            Self::emit(&k, b, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::correlator::testutil::*;

    fn attach(actor: &str, cgroup: &str, attach_type: &str, prog: &str) -> B {
        let mut b = ev(Kind::CgroupBpfAttach, actor).cgroup(cgroup);
        b.0.attach_type = Some(attach_type.into());
        b.0.prog_name = Some(prog.into());
        b.0.prog_id = Some(42);
        b.0.hierarchy = Some("v2".into());
        b.0.request = Some("BPF_LINK_CREATE".into());
        b.0.cgroupns_root = Some(cgroup.into());
        b.0.result = Some(5);
        b.0.pid = 4242;
        b
    }

    const NESTED: &str = "/system.slice/docker-0123abcd.scope";

    #[test]
    fn cilium_agent_at_a_nested_cgroup_is_one_finding_per_burst() {
        let f = run(vec![
            attach("cilium-agent", NESTED, "cgroup_inet4_connect", "cil_sock4_connect").seq(1).at(1.0),
            attach("cilium-agent", NESTED, "cgroup_inet6_connect", "cil_sock6_connect").seq(2).at(1.01),
            attach("cilium-agent", NESTED, "cgroup_udp4_sendmsg", "cil_sock4_sendmsg").seq(3).at(1.02),
        ]);
        assert_eq!(ids(&f), vec![ID]);
        let f = &f[0];
        assert_eq!(f.severity, Severity::Critical);
        assert_eq!(f.evidence, vec![1, 2, 3]);
        assert_eq!(f.cgroup.as_deref(), Some(NESTED));
        assert!(
            f.summary.contains("cgroup_inet4_connect, cgroup_inet6_connect, cgroup_udp4_sendmsg"),
            "{}",
            f.summary
        );
        assert!(f.summary.contains(NESTED), "{}", f.summary);
        assert!(f.remediation.contains("cgroup.hostRoot"), "{}", f.remediation);
    }

    #[test]
    fn the_host_root_other_programs_other_actors_and_refusals_are_no_finding() {
        let mut refused = attach("cilium-agent", NESTED, "cgroup_inet4_connect", "cil_sock4_connect");
        refused.0.result = Some(-1);
        let f = run(vec![
            // Cilium as it should be: at the root.
            attach("cilium-agent", "/", "cgroup_inet4_connect", "cil_sock4_connect").seq(1),
            // Cilium's other cgroup programs are not the socket LB.
            attach("cilium-agent", NESTED, "cgroup_inet_ingress", "cil_ingress").seq(2),
            // systemd's SocketBindDeny= attaches bind4/6 programs to a unit's cgroup.
            attach("systemd", "/system.slice/x.service", "cgroup_inet4_bind", "sd_bind4").seq(3),
            // Another tool's connect4 program named like Cilium's: a live attach by a
            // process that is not Cilium's is not Cilium's.
            attach("mytool", NESTED, "cgroup_inet4_connect", "cil_sock4_connect").seq(4),
            refused.seq(5),
        ]);
        assert!(f.is_empty(), "{f:?}");
    }

    #[test]
    fn found_at_start_goes_by_holder_or_by_cilium_s_names() {
        let mut no_holder = attach("", NESTED, "cgroup_inet4_connect", "cil_sock4_connect");
        no_holder.0.found_at_start = true;
        no_holder.0.pid = 0;
        no_holder.0.comm.clear();
        no_holder.0.result = None;
        let mut other = attach("", "/other.slice", "cgroup_inet4_connect", "my_connect4");
        other.0.found_at_start = true;
        other.0.pid = 0;
        other.0.comm.clear();
        let f = run(vec![no_holder.seq(1), other.seq(2)]);
        assert_eq!(ids(&f), vec![ID]);
        assert_eq!(f[0].details["recognised_by"], "program name (cil_*)");
        assert!(f[0].summary.starts_with("Cilium (by its program names) is attached"), "{}", f[0].summary);
    }

    #[test]
    fn a_helper_below_cilium_agent_counts_as_cilium() {
        let b = attach("bpftool", NESTED, "cgroup_inet4_connect", "connect4").behalf("cilium-agent");
        assert_eq!(ids(&run(vec![b])), vec![ID]);
    }
}
