//! The incidents of docs/DESIGN.md, reproduced with the real components
//! (`tracer_tests::scenarios`), with `tracer tail --json` watching: each step's finding
//! must appear within a second of the change, name the right actor and carry the
//! evidence; the legitimate writers must give none. One tracer per test; run with
//! `--test-threads=1` (`cargo xtask test` does).

use std::time::{Duration, Instant};

use serde_json::Value;
use tracer_tests::scenarios::{self, Step};
use tracer_tests::*;

/// How long after a change its finding may take to reach `tail --json`.
const FINDING_WITHIN: Duration = Duration::from_secs(1);
/// A kubepods removal (and Cilium's socket-LB attaches) are reported when the burst is
/// over: one second without another write or attach of it (`BURST_GAP_NS` of
/// correlator/kubepods.rs and correlator/socket_lb.rs), then the next tick.
const BURST_FINDING_WITHIN: Duration = Duration::from_millis(2500);

fn tail() -> Tracer {
    Tracer::start(&["tail", "--json"])
}

fn is_finding(v: &Value, id: &str) -> bool {
    v["type"] == "finding" && v["id"] == id
}

fn u(v: &Value) -> Option<u64> {
    v.as_u64()
}

/// Waits for a finding of `step.expect` matching `pred`, within [`FINDING_WITHIN`] (bursts:
/// [`BURST_FINDING_WITHIN`]) of the
/// change; returns it and prints the latency.
fn expect_finding(t: &mut Tracer, step: &Step, pred: impl Fn(&Value) -> bool) -> Value {
    let id = step.expect.expect("step expects a finding");
    let at = step.at.unwrap_or_else(Instant::now);
    let burst = ["kubepods-controller-removed", SOCKET_LB];
    let within = if burst.contains(&id) { BURST_FINDING_WITHIN } else { FINDING_WITHIN };
    let left = within.saturating_sub(at.elapsed());
    let f = t.wait_for(&format!("finding {id} for {}", step.id), left, |v| is_finding(v, id) && pred(v));
    eprintln!("{}: {id} after {:?}: {}", step.id, at.elapsed(), f["summary"]);
    if let Some(a) = step.actor {
        assert_eq!(f["actor"], a, "{f}");
    }
    assert_eq!(f["severity"], "critical", "{f}");
    assert!(!f["evidence"].as_array().unwrap().is_empty(), "{f}");
    assert!(!f["remediation"].as_str().unwrap_or("").is_empty(), "{f}");
    f
}

/// A line that is certainly after everything before it: a signal to a child of ours.
/// Returns the index in `t.seen` of that signal's event. Network deletions are held
/// until the kernel's answer is known (up to `CONFIRM_WAIT` plus a tick, netstate.rs),
/// so the signal is sent after that long.
fn barrier(t: &mut Tracer) -> usize {
    std::thread::sleep(Duration::from_millis(1000));
    let mut child = std::process::Command::new("sleep").arg("60").spawn().unwrap();
    let target = child.id();
    // SAFETY: our own child.
    unsafe { libc::kill(target as i32, libc::SIGTERM) };
    let _ = child.wait();
    t.wait_event("signal", |v| u(&v["target_pid"]) == Some(target as u64));
    t.seen.iter().rposition(|v| v["kind"] == "signal" && u(&v["target_pid"]) == Some(target as u64)).unwrap()
}

/// No finding matching `pred` among the lines seen from `from` up to a barrier.
fn expect_no_finding(t: &mut Tracer, step: &Step, from: usize, pred: impl Fn(&Value) -> bool) {
    let end = barrier(t);
    let bad: Vec<String> = t.seen[from..end]
        .iter()
        .filter(|v| v["type"] == "finding" && pred(v))
        .map(|v| v.to_string())
        .collect();
    assert!(bad.is_empty(), "{}: expected no finding, got:\n{}", step.id, bad.join("\n"));
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

fn pid_of(f: &Value) -> Option<u64> {
    u(&f["details"]["pid"])
}

/// systemd's 50-default.conf applied by the real systemd-sysctl to Cilium interfaces never
/// set explicitly: the only write is to `default`, and the finding must name the
/// interfaces the kernel copied it to. No event names them (links are created with
/// RTM_NEWLINK, not traced, and systemd-sysctl writes nothing per interface): the
/// tracer lists the namespace's interfaces when `default` or `all` is written.
#[test]
fn rp_filter_default_reaches_never_set_cilium_interfaces() {
    let mut t = tail();
    scenarios::rp_filter_never_set(&mut |s: &Step| {
        let pid = s.pid.map(u64::from);
        let netns = s.netns;
        let mine = |v: &Value| pid_of(v) == pid && u(&v["details"]["netns"]) == netns;
        match s.id {
            "rp_filter/never-set" => {
                // One write, to `default`: the finding must name the interfaces it reached.
                let f = expect_finding(&mut t, s, |v| mine(v));
                assert_eq!(f["dev"], "default", "{f}");
                assert_eq!(f["value"], "2", "{f}");
                let named = strings(&f["details"]["interfaces"]);
                for d in &s.devs {
                    assert!(named.contains(d), "{d} not named in {f}");
                }
            }
            other => panic!("unknown step {other}"),
        }
    });
    assert_eq!(t.stop(), 0);
}

/// systemd's 50-default.conf applied by the real systemd-sysctl after Cilium set 0 (the
/// glob writes each interface), udev's `--prefix` run, and Cilium's override (no finding).
#[test]
fn rp_filter_by_real_systemd_sysctl() {
    let mut t = tail();
    let mut mark = 0;
    scenarios::rp_filter(&mut |s: &Step| {
        let pid = s.pid.map(u64::from);
        let netns = s.netns;
        let mine = |v: &Value| pid_of(v) == pid && u(&v["details"]["netns"]) == netns;
        match s.id {
            "rp_filter/after-0" | "rp_filter/udev-prefix" => {
                for d in &s.devs {
                    let f = expect_finding(&mut t, s, |v| mine(v) && v["dev"] == d.as_str());
                    assert_eq!(f["value"], "2", "{f}");
                    assert_eq!(f["details"]["via"], "sysctl", "{f}");
                    assert_eq!(f["details"]["exe"], scenarios::SYSTEMD_SYSCTL, "{f}");
                }
                // eth1 and the pod's end of the veth are not Cilium's.
                let end = barrier(&mut t);
                let others: Vec<String> = t.seen[..end]
                    .iter()
                    .filter(|v| is_finding(v, "rp-filter-on-cilium") && mine(v))
                    .filter(|v| !s.devs.iter().any(|d| v["dev"] == d.as_str()))
                    .map(|v| v.to_string())
                    .collect();
                assert!(others.is_empty(), "findings on other interfaces: {others:?}");
                mark = end;
            }
            "rp_filter/cilium-override" => {
                // The writes of 0 happened (the tracer saw them) and gave no finding.
                for d in &s.devs {
                    let name = format!("net.ipv4.conf.{d}.rp_filter");
                    let w = t.wait_event("sysctl_write", |v| {
                        u(&v["pid"]) == pid && v["name"] == name.as_str() && v["value"] == "0"
                    });
                    assert_eq!(w["actor"], "systemd-sysctl", "{w}");
                }
                expect_no_finding(&mut t, s, mark, |v| mine(v));
            }
            other => panic!("unknown step {other}"),
        }
    });
    assert_eq!(t.stop(), 0);
}

/// Stand-ins named kubelet and systemd; the kubepods tree under a unique prefix in cgroup
/// v2; systemd removes hugetlb from the burstable slice; kubelet kills, removes the pod
/// and restores the controller.
#[test]
fn kubepods_controller_removed_by_systemd_stand_in() {
    let mut t = tail();
    let mut removal = Value::Null;
    scenarios::kubepods(&mut |s: &Step| {
        let cg = s.cgroup.clone().unwrap();
        let extra = |k: &str| s.extra.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone()).unwrap();
        match s.id {
            "kubepods/removed" => {
                let f = expect_finding(&mut t, s, |v| {
                    v["cgroup"] == cg.as_str() && v["details"]["phase"] == "removed"
                });
                assert_eq!(f["controller"], extra("controller").as_str(), "{f}");
                assert_eq!(pid_of(&f), s.pid.map(u64::from), "{f}");
                assert_eq!(f["details"]["level"], "QoS", "{f}");
                assert!(
                    f["details"].get("inferred_from").is_none(),
                    "the kernel's controller lists were read: {f}"
                );
                removal = f;
            }
            "kubepods/aftermath" => {
                // kubelet's own writes and kills are not findings.
                let victim: u64 = extra("victim").parse().unwrap();
                let sig = t.wait_event("signal", |v| u(&v["target_pid"]) == Some(victim));
                assert_eq!(sig["actor"], "kubelet", "{sig}");
                assert_eq!(sig["signal"], "SIGKILL", "{sig}");
                let rm = t.wait_event("cgroup_rmdir", |v| v["cgroup"] == extra("pod").as_str());
                // dash has no rmdir builtin: /usr/bin/rmdir acts for kubelet.
                assert!(rm["actor"] == "kubelet" || rm["on_behalf_of"] == "kubelet", "{rm}");
                let w = t.wait_event("cgroup_write", |v| {
                    v["cgroup"] == cg.as_str() && v["value"].as_str().is_some_and(|x| x.starts_with('+'))
                });
                assert_eq!(w["actor"], "kubelet", "{w}");
            }
            other => panic!("unknown step {other}"),
        }
    });
    // The window's follow-up: at the latest when tracer stops.
    assert_eq!(t.stop(), 0);
    let id = "kubepods-controller-removed";
    let closed: Vec<&Value> =
        t.seen.iter().filter(|v| is_finding(v, id) && v["details"]["phase"] == "window_closed").collect();
    assert_eq!(closed.len(), 1, "one follow-up finding: {closed:?}");
    let f = closed[0];
    assert_eq!(f["cgroup"], removal["cgroup"], "{f}");
    assert_eq!(f["details"]["restored_by"], "kubelet", "{f}");
    assert_eq!(
        f["details"]["pods_removed"],
        serde_json::json!(["8a3e1d2c-5b7f-4c9a-9e0d-1f2a3b4c5d6e"]),
        "{f}"
    );
    assert_eq!(
        f["details"]["pods_signalled"],
        serde_json::json!(["8a3e1d2c-5b7f-4c9a-9e0d-1f2a3b4c5d6e"]),
        "{f}"
    );
    assert!(f["evidence"].as_array().unwrap().len() >= 4, "removal, kill, rmdir and restore: {f}");
    eprintln!("kubepods/window_closed: {}", f["summary"]);
}

fn networkd_findings(t: &mut Tracer, s: &Step) -> Vec<Value> {
    let netns = s.netns;
    let mine = |v: &Value| u(&v["details"]["netns"]) == netns;
    let mut out = Vec::new();
    for prio in [9u64, 10, 100] {
        let f = expect_finding(t, s, |v| mine(v) && u(&v["details"]["priority"]) == Some(prio));
        assert_eq!(pid_of(&f), s.pid.map(u64::from), "{f}");
        assert!(f["details"]["exe"].as_str().unwrap_or("").ends_with("/systemd/systemd-networkd"), "{f}");
        assert!(f["remediation"].as_str().unwrap().contains("ManageForeignRoutingPolicyRules=no"), "{f}");
        out.push(f);
    }
    out
}

/// The real systemd-networkd managing one uplink veth: `networkctl reconfigure` removes
/// Cilium's rules 9, 10 and 100 (networkd 252 keeps the routes of links it does not
/// manage: see `scenarios::networkd`).
#[test]
fn networkd_reconfigure_deletes_cilium_rules() {
    let mut t = tail();
    scenarios::networkd(scenarios::Networkd { manage_foreign: true, catch_all: false }, &mut |s: &Step| {
        eprintln!("{}", s.text);
        let f = networkd_findings(&mut t, s);
        assert_eq!(f[0]["details"]["fwmark"], "0x200/0xf00", "{}", f[0]);
        assert_eq!(f[0]["details"]["table"], 2004, "{}", f[0]);
    });
    assert_eq!(t.stop(), 0);
}

/// The fix: `ManageForeignRoutes=no` and `ManageForeignRoutingPolicyRules=no`; the same
/// reconfigure removes nothing and there is no finding.
#[test]
fn networkd_with_manage_foreign_no_leaves_cilium_alone() {
    let mut t = tail();
    scenarios::networkd(scenarios::Networkd { manage_foreign: false, catch_all: false }, &mut |s: &Step| {
        let netns = s.netns;
        expect_no_finding(&mut t, s, 0, |v| u(&v["details"]["netns"]) == netns);
        // networkd re-adds its own address on nd0 (a delete of its own); nothing else.
        let deletions: Vec<&Value> = t
            .seen
            .iter()
            .filter(|v| v["type"] == "event" && u(&v["netns"]) == netns && v["actor"] == "systemd-networkd")
            .filter(|v| v["kind"].as_str().is_some_and(|k| k.ends_with("_delete")) && v["dev"] != "nd0")
            .collect();
        assert!(deletions.is_empty(), "networkd deleted: {deletions:?}");
    });
    assert_eq!(t.stop(), 0);
}

/// A catch-all `.network` (`Name=*`, as some distributions ship) makes networkd manage
/// `cilium_host` too: reconfiguring it removes Cilium's routes via `cilium_host` (main
/// and table 2005) and its address, besides the rules.
#[test]
fn networkd_catch_all_deletes_routes_via_cilium_host() {
    let mut t = tail();
    scenarios::networkd(scenarios::Networkd { manage_foreign: true, catch_all: true }, &mut |s: &Step| {
        eprintln!("{}", s.text);
        networkd_findings(&mut t, s);
        let netns = s.netns;
        let route = Step { expect: Some("cilium-route-deleted"), ..s.clone() };
        for want in ["10.1.0.0/24", "default"] {
            let f = expect_finding(&mut t, &route, |v| {
                u(&v["details"]["netns"]) == netns && v["dev"] == "cilium_host" && v["details"]["dst"] == want
            });
            assert_eq!(pid_of(&f), s.pid.map(u64::from), "{f}");
        }
    });
    assert_eq!(t.stop(), 0);
}

/// The real runc with a busybox rootfs: every cgroup event under the container's prefix
/// (mkdir in each hierarchy, the limits and cgroup.procs written, rmdir at exit) is
/// attributed to runc.
#[test]
fn runc_container_cgroups_are_attributed_to_runc() {
    let mut t = tail();
    scenarios::runc(&mut |s: &Step| {
        let evs = runtime_cgroup_events(&mut t, s);
        assert!(
            evs.iter().any(|v| v["kind"] == "cgroup_write" && v["file"] == "pids.max"),
            "no pids.max write"
        );
        for v in &evs {
            assert_eq!(v["actor"], "runc", "{v}");
        }
    });
    assert_eq!(t.stop(), 0);
}

/// Every cgroup event under the step's prefix, after runc's mkdir, cgroup.procs write and
/// rmdir of the container's cgroup; no finding there.
fn runtime_cgroup_events(t: &mut Tracer, s: &Step) -> Vec<Value> {
    let cg = s.cgroup.clone().unwrap();
    let prefix = s.extra.iter().find(|(k, _)| *k == "prefix").unwrap().1.clone();
    t.wait_event("cgroup_mkdir", |v| v["cgroup"] == cg.as_str());
    t.wait_event("cgroup_write", |v| v["cgroup"] == cg.as_str() && v["file"] == "cgroup.procs");
    t.wait_event("cgroup_rmdir", |v| v["cgroup"] == cg.as_str());
    let end = barrier(t);
    let under =
        |v: &Value| v["cgroup"].as_str().is_some_and(|c| c == prefix || c.starts_with(&format!("{prefix}/")));
    let evs: Vec<Value> = t.seen[..end]
        .iter()
        .filter(|v| v["type"] == "event" && v["kind"].as_str().is_some_and(|k| k.starts_with("cgroup_")))
        .filter(|v| under(v))
        .cloned()
        .collect();
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    for v in &evs {
        *kinds
            .entry(format!("{}:{}", v["kind"].as_str().unwrap(), v["file"].as_str().unwrap_or("")))
            .or_default() += 1;
    }
    eprintln!("{}: {} cgroup events: {kinds:?}", s.id, evs.len());
    let bad: Vec<&Value> = t.seen[..end].iter().filter(|v| v["type"] == "finding" && under(v)).collect();
    assert!(bad.is_empty(), "findings on a plain container: {bad:?}");
    evs
}

/// The real containerd and ctr: runc's cgroup events are runc's, acting for containerd,
/// with the shim and containerd in the ancestry; the shim's own write (OOM notification
/// registration, v1 memory `cgroup.event_control`) is the shim's.
#[test]
fn containerd_runc_events_carry_the_shim_and_containerd() {
    let mut t = tail();
    scenarios::containerd(&mut |s: &Step| {
        let evs = runtime_cgroup_events(&mut t, s);
        for v in &evs {
            // The shim itself registers for OOM notifications (v1 memory
            // cgroup.event_control); everything else is runc's.
            let anc = strings(&v["ancestry"]);
            if v["actor"] == "containerd-shim" {
                assert_eq!(v["file"], "cgroup.event_control", "{v}");
            } else {
                assert_eq!(v["actor"], "runc", "{v}");
                assert!(anc.iter().any(|a| a == "containerd-shim"), "no shim in the ancestry: {v}");
            }
            assert_eq!(v["on_behalf_of"], "containerd", "{v}");
            assert!(anc.iter().any(|a| a == "containerd"), "no containerd in the ancestry: {v}");
        }
        let by_runc = evs.iter().filter(|v| v["actor"] == "runc").count();
        assert!(by_runc >= 3, "runc's mkdir, write and rmdir: {by_runc}");
    });
    assert_eq!(t.stop(), 0);
}

const SOCKET_LB: &str = "cilium-socket-lb-nested-cgroup";

fn prog_ids(s: &Step) -> Vec<u64> {
    let ids = &s.extra.iter().find(|(k, _)| *k == "prog_ids").expect("prog ids").1;
    ids.split(',').map(|i| i.parse().unwrap()).collect()
}

/// The first `n` `cgroup_bpf_*` events of `kind` made by process `pid`.
fn bpf_events(t: &mut Tracer, kind: &str, pid: Option<u64>, n: usize) -> Vec<Value> {
    let mut got: Vec<Value> = Vec::new();
    while got.len() < n {
        let seqs: Vec<u64> = got.iter().filter_map(|v| u(&v["seq"])).collect();
        let v = t.wait_for(&format!("{n} {kind} events of pid {pid:?}"), Duration::from_secs(10), |v| {
            v["type"] == "event"
                && v["kind"] == kind
                && u(&v["pid"]) == pid
                && !seqs.contains(&u(&v["seq"]).unwrap_or(0))
        });
        got.push(v);
    }
    got
}

/// Incident 4 with a stand-in cilium-agent (run by a containerd-shim, as in a pod) on the
/// real kernel: in a private cgroup namespace with its own cgroup2 mount it attaches four
/// socket-LB programs (BPF_PROG_ATTACH and BPF_LINK_CREATE) at the root it sees, its own
/// cgroup: four events naming the host-absolute cgroup and the agent's namespace root, one
/// critical finding. The detaches are events, no finding. The same agent in the host's
/// cgroup namespace attaches at the host root: events, no finding.
#[test]
fn cilium_socket_lb_nested_is_found_and_at_the_host_root_is_not() {
    let mut t = tail();
    let mut mark = 0;
    // This scenario's findings only: the kernel is shared with the other tests, which
    // may attach their own agents meanwhile (a wrong finding at the root names `/`).
    let mut nested = String::new();
    let ours =
        |v: &Value, nested: &str| is_finding(v, SOCKET_LB) && (v["cgroup"] == nested || v["cgroup"] == "/");
    scenarios::cilium_socket_lb(&mut |s: &Step| {
        eprintln!("{}", s.text);
        let pid = s.pid.map(u64::from);
        let cg = s.cgroup.clone().unwrap();
        match s.id {
            "socket_lb/nested" => {
                nested = cg.clone();
                let ids = prog_ids(s);
                let evs = bpf_events(&mut t, "cgroup_bpf_attach", pid, ids.len());
                for (ev, id) in evs.iter().zip(&ids) {
                    assert_eq!(ev["cgroup"], cg.as_str(), "host-absolute target: {ev}");
                    assert_eq!(ev["cgroupns_root"], cg.as_str(), "the agent's namespace root: {ev}");
                    assert_eq!(ev["actor"], "cilium-agent", "{ev}");
                    assert_eq!(u(&ev["prog_id"]), Some(*id), "{ev}");
                    assert!(ev["prog_name"].as_str().unwrap().starts_with("cil_sock"), "{ev}");
                    assert!(ev["result"].as_i64().unwrap() >= 0, "{ev}");
                    assert!(strings(&ev["ancestry"]).iter().any(|a| a == "containerd-shim"), "{ev}");
                }
                let how: Vec<&str> = evs.iter().map(|v| v["request"].as_str().unwrap()).collect();
                assert_eq!(how, ["BPF_PROG_ATTACH", "BPF_LINK_CREATE", "BPF_LINK_CREATE", "BPF_PROG_ATTACH"]);
                let types: Vec<&str> = evs.iter().map(|v| v["attach_type"].as_str().unwrap()).collect();
                assert_eq!(
                    types,
                    [
                        "cgroup_inet4_connect",
                        "cgroup_inet6_connect",
                        "cgroup_udp4_sendmsg",
                        "cgroup_inet4_post_bind"
                    ]
                );
                assert_eq!(evs[0]["prog_type"], "cgroup_sock_addr", "{}", evs[0]);
                assert_eq!(evs[3]["prog_type"], "cgroup_sock", "{}", evs[3]);
                assert!(u(&evs[1]["link_id"]).is_some_and(|l| l > 0), "{}", evs[1]);
                let f = expect_finding(&mut t, s, |v| v["cgroup"] == cg.as_str());
                assert_eq!(pid_of(&f), pid, "{f}");
                let evidence: Vec<u64> = f["evidence"].as_array().unwrap().iter().filter_map(u).collect();
                let seqs: Vec<u64> = evs.iter().filter_map(|v| u(&v["seq"])).collect();
                assert_eq!(evidence, seqs, "{f}");
                assert_eq!(strings(&f["details"]["attach_types"]).len(), 4, "{f}");
                assert_eq!(f["details"]["cgroupns_root"], cg.as_str(), "{f}");
            }
            "socket_lb/nested-detached" => {
                let evs = bpf_events(&mut t, "cgroup_bpf_detach", pid, 4);
                for ev in &evs {
                    assert_eq!(ev["cgroup"], cg.as_str(), "{ev}");
                    assert_eq!(ev["result"], 0, "{ev}");
                }
                let how: Vec<&str> = evs.iter().map(|v| v["request"].as_str().unwrap()).collect();
                assert_eq!(how, ["BPF_PROG_DETACH", "BPF_LINK_DETACH", "BPF_LINK_DETACH", "BPF_PROG_DETACH"]);
                assert_eq!(
                    evs[1]["attach_type"], "cgroup_inet6_connect",
                    "the link knows its type: {}",
                    evs[1]
                );
                mark = barrier(&mut t);
                let findings = t.seen.iter().filter(|v| ours(v, &nested)).count();
                assert_eq!(findings, 1, "one finding for the nested burst, none for its detaches");
            }
            "socket_lb/host-root" => {
                let ids = prog_ids(s);
                let evs = bpf_events(&mut t, "cgroup_bpf_attach", pid, ids.len());
                for ev in &evs {
                    assert_eq!(ev["cgroup"], "/", "{ev}");
                    assert_eq!(ev["cgroupns_root"], "/", "{ev}");
                    assert_eq!(ev["actor"], "cilium-agent", "{ev}");
                }
                // Past the burst gap: a finding would have come by now.
                std::thread::sleep(BURST_FINDING_WITHIN);
                expect_no_finding(&mut t, s, mark, |v| ours(v, &nested));
            }
            other => panic!("unknown step {other}"),
        }
    });
    assert_eq!(t.stop(), 0);
    let live: Vec<&Value> = t.seen.iter().filter(|v| ours(v, &nested)).collect();
    let replayed: Vec<Value> =
        replayed_findings(&t, SOCKET_LB).into_iter().filter(|v| ours(v, &nested)).collect();
    assert_eq!(replayed.len(), 1, "replay gives the one finding: {replayed:?}");
    assert_eq!(replayed[0]["evidence"], live[0]["evidence"], "{}", replayed[0]);
    assert_eq!(replayed[0]["summary"], live[0]["summary"], "{}", replayed[0]);
}

/// A tracer started after the agent attached finds the attachments in the kernel
/// (`found_at_start`, attributed to the agent holding them) and raises the finding;
/// `tracer check` lists them.
#[test]
fn cilium_socket_lb_attached_before_start_is_found_at_start() {
    let mut tracer: Option<Tracer> = None;
    // The scenario's cgroup: other tests' agents may be attached meanwhile.
    let mut agent_cg = String::new();
    scenarios::cilium_socket_lb_before_start(&mut |s: &Step| {
        let cg = s.cgroup.clone().unwrap();
        let ids = prog_ids(s);
        let check: Value =
            serde_json::from_str(&run_out(tracer_bin().to_str().unwrap(), &["check", "--json"]))
                .expect("check --json");
        let listed: Vec<u64> = check["cgroup_socket_programs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["cgroup"] == cg.as_str())
            .filter_map(|p| u(&p["prog_id"]))
            .collect();
        assert_eq!(listed, ids, "tracer check lists them: {check}");
        let mut t = tail();
        let mut found = Vec::new();
        for id in &ids {
            let ev = t.wait_event("cgroup_bpf_attach", |v| u(&v["prog_id"]) == Some(*id));
            assert_eq!(ev["found_at_start"], true, "{ev}");
            assert_eq!(ev["cgroup"], cg.as_str(), "{ev}");
            assert_eq!(ev["actor"], "cilium-agent", "{ev}");
            assert_eq!(u(&ev["pid"]), s.pid.map(u64::from), "{ev}");
            found.push(ev);
        }
        assert!(u(&found[1]["link_id"]).is_some_and(|l| l > 0), "the link was found: {}", found[1]);
        let f = expect_finding(&mut t, &Step { at: Some(Instant::now()), ..s.clone() }, |v| {
            v["cgroup"] == cg.as_str()
        });
        assert_eq!(f["details"]["found_at_start"], true, "{f}");
        agent_cg = cg;
        tracer = Some(t);
    });
    let mut t = tracer.expect("the scenario ran");
    assert_eq!(t.stop(), 0);
    let replayed: Vec<Value> =
        replayed_findings(&t, SOCKET_LB).into_iter().filter(|v| v["cgroup"] == agent_cg.as_str()).collect();
    assert_eq!(replayed.len(), 1, "replay gives the finding from the found-at-start events: {replayed:?}");
    assert_eq!(replayed[0]["details"]["found_at_start"], true, "{}", replayed[0]);
}
