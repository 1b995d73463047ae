//! Route, rule, address and link deletions as the kernel applied them: the whole object
//! from the kernel's own notification, whether it took, and the IPv4 routes flushed
//! with an address or a link (which the kernel announces with no notification).
//!
//! Each test works in network namespaces of its own (`ip netns add`) with iproute2,
//! against the real kernel, with `tracer tail --json` watching. Run with
//! `--test-threads=1` (`cargo xtask test` does).

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use tracer_tests::*;

fn tail() -> Tracer {
    Tracer::start(&["tail", "--json"])
}

fn netns_of(v: &Value) -> Option<u64> {
    v["netns"].as_u64()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// Waits for the next event of `kind` in namespace `ns` (held events come up to 0.75 s
/// after the request: the kernel's answer is waited for).
fn event_in(t: &mut Tracer, kind: &str, ns: u64, pred: impl Fn(&Value) -> bool) -> Value {
    t.wait_for(&format!("{kind} in netns {ns}"), Duration::from_secs(5), |v| {
        v["type"] == "event" && v["kind"] == kind && netns_of(v) == Some(ns) && pred(v)
    })
}

/// The findings about namespace `ns` among everything seen after waiting `settle`
/// (findings follow their event at once: the wait is for ones that should not come).
fn findings_in(t: &mut Tracer, ns: u64, settle: Duration) -> Vec<Value> {
    t.read_for(settle);
    t.seen
        .iter()
        .filter(|v| v["type"] == "finding" && v["details"]["netns"].as_u64() == Some(ns))
        .cloned()
        .collect()
}

/// `tracer replay` (human, or `--json`) of what `t` printed: the schema-v1 lines
/// `record` writes. Replay re-runs the correlator on the events as recorded.
fn replay(t: &Tracer, json: bool) -> String {
    let dir = TempDir::new("replay");
    let mut text = format!("{}\n", t.header);
    for v in &t.seen {
        text.push_str(&format!("{v}\n"));
    }
    let file = dir.write("recording.jsonl", &text);
    let mut args = vec!["replay", "--color", "never"];
    if json {
        args.push("--json");
    }
    args.push(file.to_str().unwrap());
    run_out(tracer_bin().to_str().unwrap(), &args)
}

/// `ip -n <ns> ...` that is expected to fail; returns its stderr.
fn ip_fails(ns: &NetNsGuard, args: &[&str]) -> String {
    let out = Command::new("ip").arg("-n").arg(&ns.name).args(args).output().unwrap();
    assert!(!out.status.success(), "ip {args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `ip rule del pref 10` names only the priority: the event and the finding carry the
/// whole rule the kernel removed, and say it took. A rule of another table, deleted the
/// same way, is described as well and is no finding.
#[test]
fn a_rule_deleted_by_priority_alone_is_described_whole_and_confirmed() {
    require_root();
    let ns = NetNsGuard::new("nd-rule");
    ns.ip(&["rule", "add", "pref", "10", "fwmark", "0xa00/0xf00", "lookup", "2005"]);
    ns.ip(&["rule", "add", "pref", "1234", "iif", "lo", "lookup", "300"]);
    let ino = ns.inode();
    let mut t = tail();
    ns.ip(&["rule", "del", "pref", "10"]);
    let ev = event_in(&mut t, "rule_delete", ino, |_| true);
    eprintln!("event: {ev}");
    assert_eq!(ev["confirmed"], true, "{ev}");
    assert_eq!(ev["object"], "10: from all fwmark 0xa00/0xf00 lookup 2005", "{ev}");
    assert_eq!((ev["priority"].as_u64(), ev["table"].as_u64()), (Some(10), Some(2005)), "{ev}");
    assert_eq!((ev["fwmark"].as_str(), ev["action"].as_str()), (Some("0xa00/0xf00"), Some("lookup")), "{ev}");
    assert_eq!(ev["netns_name"], ns.name.as_str(), "{ev}");
    let f = t.wait_for("cilium-rule-deleted", Duration::from_secs(2), |v| {
        v["type"] == "finding" && v["id"] == "cilium-rule-deleted"
    });
    eprintln!("finding: {}", f["summary"]);
    assert!(
        f["summary"].as_str().unwrap().contains("rule 10: from all fwmark 0xa00/0xf00 lookup 2005:"),
        "{f}"
    );
    assert_eq!(f["details"]["confirmed"], true, "{f}");
    ns.ip(&["rule", "del", "pref", "1234"]);
    let other = event_in(&mut t, "rule_delete", ino, |v| v["priority"] == 1234);
    assert_eq!(other["object"], "1234: from all iif lo lookup 300", "{other}");
    assert_eq!(findings_in(&mut t, ino, Duration::from_millis(300)).len(), 1, "only rule 10 is Cilium's");
    assert_eq!(t.stop(), 0);
    // A recording keeps what was known at the time: replay prints the same rule and
    // gives the same finding.
    let human = replay(&t, false);
    eprintln!("{human}");
    let line = human.lines().find(|l| l.contains(" rule_delete ")).expect("rule_delete line");
    assert!(line.contains("10: from all fwmark 0xa00/0xf00 lookup 2005 (netns "), "{line}");
    assert!(line.contains(" confirmed"), "{line}");
    let findings: Vec<Value> = replay(&t, true)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["type"] == "finding" && v["id"] == "cilium-rule-deleted")
        .collect();
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0]["summary"], f["summary"]);
}

/// A delete the kernel refuses (no such route; a rule of a priority that is not there)
/// is an event that says so, and no critical finding even in Cilium's tables.
#[test]
fn a_delete_the_kernel_refuses_is_not_applied_and_no_finding() {
    require_root();
    let ns = NetNsGuard::new("nd-refused");
    ns.ip(&["link", "set", "lo", "up"]);
    ns.ip(&["route", "add", "10.96.0.0/16", "dev", "lo", "table", "2004"]);
    let ino = ns.inode();
    let mut t = tail();
    let err = ip_fails(&ns, &["route", "del", "10.55.0.0/24", "table", "2004"]);
    eprintln!("ip: {}", err.trim());
    let ev = event_in(&mut t, "route_delete", ino, |_| true);
    eprintln!("event: {ev}");
    assert_eq!(ev["confirmed"], false, "{ev}");
    assert!(ev.get("object").is_none(), "{ev}");
    assert_eq!((ev["dst"].as_str(), ev["table"].as_u64()), (Some("10.55.0.0/24"), Some(2004)), "{ev}");
    ip_fails(&ns, &["rule", "del", "pref", "9"]);
    let rule = event_in(&mut t, "rule_delete", ino, |_| true);
    assert_eq!(rule["confirmed"], false, "{rule}");
    // The route that exists is deleted by a wider request and is confirmed.
    ns.ip(&["route", "del", "10.96.0.0/16", "table", "2004"]);
    let ok = event_in(&mut t, "route_delete", ino, |v| v["confirmed"] == true);
    assert_eq!(ok["object"], "10.96.0.0/16 dev lo table 2004 scope link", "{ok}");
    let f = findings_in(&mut t, ino, Duration::from_millis(500));
    assert_eq!(f.len(), 1, "only the route that was deleted is a finding: {f:#?}");
    assert!(f[0]["summary"].as_str().unwrap().contains("10.96.0.0/16 dev lo table 2004"), "{}", f[0]);
    assert_eq!(t.stop(), 0);
    let human = replay(&t, false);
    eprintln!("{human}");
    let refused: Vec<&str> = human.lines().filter(|l| l.contains("NOT APPLIED")).collect();
    assert_eq!(refused.len(), 2, "{human}");
    assert!(refused[0].contains("route_delete 10.55.0.0/24 table 2004 (netns "), "{}", refused[0]);
}

/// Removing a device's last IPv4 address makes the kernel flush every IPv4 route via
/// it with no notification: the event names them, and the finding names the one in
/// Cilium's table 2004 although the device is not Cilium's.
#[test]
fn an_address_removal_names_the_routes_it_flushed() {
    require_root();
    let ns = NetNsGuard::new("nd-flush");
    ns.sh(
        "ip link add d0 type veth peer name d0p && ip link set d0p up && ip link set d0 up && ip addr add 10.99.0.1/24 dev d0 && \
         ip route add 10.98.0.0/24 via 10.99.0.2 dev d0 && \
         ip route add 10.97.0.0/16 via 10.99.0.2 dev d0 table 2004 proto static && \
         ip link add d9 type veth peer name d9p && ip link set d9p up && ip link set d9 up && ip addr add 10.77.0.1/24 dev d9 && \
         ip route add 10.76.0.0/24 via 10.77.0.2 dev d9",
    );
    let ino = ns.inode();
    let mut t = tail();
    ns.ip(&["addr", "del", "10.99.0.1/24", "dev", "d0"]);
    let ev = event_in(&mut t, "addr_delete", ino, |_| true);
    eprintln!("event: {ev}");
    assert_eq!(ev["confirmed"], true, "{ev}");
    assert_eq!(ev["object"], "inet 10.99.0.1/24 scope global dev d0", "{ev}");
    let mut flushed = strings(&ev["flushed_routes"]);
    flushed.sort();
    assert_eq!(
        flushed,
        ["10.97.0.0/16 via 10.99.0.2 dev d0 table 2004 proto static", "10.98.0.0/24 via 10.99.0.2 dev d0"],
        "{ev}"
    );
    let f = t.wait_for("cilium-route-deleted", Duration::from_secs(2), |v| {
        v["type"] == "finding" && v["id"] == "cilium-route-deleted"
    });
    eprintln!("finding: {}", f["summary"]);
    assert_eq!(
        strings(&f["details"]["flushed_routes"]),
        ["10.97.0.0/16 via 10.99.0.2 dev d0 table 2004 proto static"]
    );
    // d9's route was not touched and no other finding came.
    assert!(!t.seen.iter().any(|v| v.to_string().contains("10.76.0.0")), "d9's route named");
    assert_eq!(findings_in(&mut t, ino, Duration::from_millis(500)).len(), 1);
    assert_eq!(t.stop(), 0);
}

/// `ip link del` is confirmed by the kernel's RTM_DELLINK and names the IPv4 routes
/// that went with the link. An address removed on another device a moment before is
/// judged in the same round: each names its own device's routes.
#[test]
fn a_link_deletion_is_confirmed_with_its_routes() {
    require_root();
    let ns = NetNsGuard::new("nd-link");
    ns.sh(
        "ip link add d1 type veth peer name d1p && ip link set d1p up && ip link set d1 up && ip addr add 10.88.0.1/24 dev d1 && \
         ip route add 10.87.0.0/24 via 10.88.0.2 dev d1 table 100 && \
         ip link add d2 type veth peer name d2p && ip link set d2p up && ip link set d2 up && ip addr add 10.66.0.1/24 dev d2 && \
         ip route add 10.65.0.0/24 via 10.66.0.2 dev d2",
    );
    let ino = ns.inode();
    let mut t = tail();
    ns.ip(&["addr", "del", "10.66.0.1/24", "dev", "d2"]);
    ns.ip(&["link", "del", "d1"]);
    let ev = event_in(&mut t, "link_delete", ino, |_| true);
    eprintln!("event: {ev}");
    assert_eq!(ev["confirmed"], true, "{ev}");
    assert_eq!(ev["dev"], "d1", "{ev}");
    assert!(ev["object"].as_str().unwrap().starts_with("d1 (ifindex "), "{ev}");
    let flushed = strings(&ev["flushed_routes"]);
    assert!(flushed.contains(&"10.87.0.0/24 via 10.88.0.2 dev d1 table 100".to_string()), "{ev}");
    assert!(!flushed.iter().any(|r| r.contains("d2")), "{ev}");
    let addr = event_in(&mut t, "addr_delete", ino, |_| true);
    assert_eq!(strings(&addr["flushed_routes"]), ["10.65.0.0/24 via 10.66.0.2 dev d2"], "{addr}");
    // Deleting it again is refused: no such device (by name, which ip resolves first,
    // so it fails before sending: no event). A link index that does not exist is sent.
    ip_fails(&ns, &["link", "del", "d1"]);
    assert_eq!(t.stop(), 0);
}

/// A namespace created after tracer started is watched from the first request made in
/// it (here, adding the rule), so a later delete by priority is described whole, and
/// the namespace is named as `ip netns` names it.
#[test]
fn a_namespace_created_after_start_is_watched_from_its_first_request() {
    require_root();
    let mut t = tail();
    let ns = NetNsGuard::new("nd-late");
    let ino = ns.inode();
    ns.ip(&["rule", "add", "pref", "9", "fwmark", "0x200/0xf00", "lookup", "2004"]);
    // The add is a request tracer sees (no event: additions are not reported).
    std::thread::sleep(Duration::from_millis(300));
    ns.ip(&["rule", "del", "pref", "9"]);
    let ev = event_in(&mut t, "rule_delete", ino, |_| true);
    eprintln!("event: {ev}");
    assert_eq!(ev["confirmed"], true, "{ev}");
    assert_eq!(ev["object"], "9: from all fwmark 0x200/0xf00 lookup 2004", "{ev}");
    assert_eq!(ev["netns_name"], ns.name.as_str(), "{ev}");
    let f = t.wait_for("cilium-rule-deleted", Duration::from_secs(2), |v| {
        v["type"] == "finding" && v["id"] == "cilium-rule-deleted"
    });
    assert!(f["summary"].as_str().unwrap().contains("9: from all fwmark 0x200/0xf00 lookup 2004"), "{f}");
    assert_eq!(t.stop(), 0);
}

/// tracer's sockets in a namespace keep it alive, so they are closed once nothing else
/// refers to it: after `ip netns del`, the namespace is destroyed within the
/// housekeeping period (5 s) with tracer still running. Seen from outside: the veth end
/// in the deleted namespace takes its peer in another namespace with it.
#[test]
fn a_deleted_namespace_is_let_go() {
    require_root();
    let a = NetNsGuard::new("nd-gone");
    let b = NetNsGuard::new("nd-peer");
    a.ip(&["link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", &b.name]);
    let mut t = tail();
    // Both are watched (named under /run/netns at start): a request in each proves it.
    a.ip(&["link", "set", "va", "down"]);
    event_in(&mut t, "link_set", a.inode(), |_| true);
    Command::new("ip").args(["netns", "del", &a.name]).status().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(12);
    loop {
        let out = Command::new("ip").args(["-n", &b.name, "link", "show", "vb"]).output().unwrap();
        if !out.status.success() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "namespace {} still alive 12 s after ip netns del (its veth peer vb is still there)",
            a.name
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(t.stop(), 0);
}

/// Setting a link down flushes its IPv4 routes too (fib_disable_ip on NETDEV_DOWN): the
/// link_set event names them. IPv6 deletes are confirmed and described like IPv4 ones.
#[test]
fn a_link_set_down_names_its_flushed_routes_and_ipv6_deletes_are_confirmed() {
    require_root();
    let ns = NetNsGuard::new("nd-down");
    ns.sh(
        "ip link add d3 type veth peer name d3p && ip link set d3p up && ip link set d3 up && \
         ip addr add 10.55.0.1/24 dev d3 && ip route add 10.54.0.0/24 via 10.55.0.2 dev d3 table 2005 && \
         ip -6 addr add fd00:55::1/64 dev d3 nodad && ip -6 route add fd00:54::/64 via fd00:55::2 dev d3 table 2004 && \
         ip -6 rule add pref 20 from fd00:1::/64 lookup 2004",
    );
    let ino = ns.inode();
    let mut t = tail();
    ns.ip(&["-6", "rule", "del", "pref", "20"]);
    let rule = event_in(&mut t, "rule_delete", ino, |_| true);
    assert_eq!(rule["confirmed"], true, "{rule}");
    assert_eq!(rule["object"], "20: from fd00:1::/64 lookup 2004", "{rule}");
    assert_eq!(rule["family"], "inet6", "{rule}");
    ns.ip(&["-6", "route", "del", "fd00:54::/64", "table", "2004"]);
    let route = event_in(&mut t, "route_delete", ino, |_| true);
    assert_eq!(route["confirmed"], true, "{route}");
    assert!(
        route["object"].as_str().unwrap().starts_with("fd00:54::/64 via fd00:55::2 dev d3 table 2004"),
        "{route}"
    );
    ns.ip(&["link", "set", "d3", "down"]);
    let down = event_in(&mut t, "link_set", ino, |v| v["up"] == false);
    eprintln!("event: {down}");
    assert!(
        strings(&down["flushed_routes"])
            .contains(&"10.54.0.0/24 via 10.55.0.2 dev d3 table 2005".to_string()),
        "{down}"
    );
    let f = t.wait_for("cilium-route-deleted", Duration::from_secs(2), |v| {
        v["type"] == "finding"
            && v["id"] == "cilium-route-deleted"
            && v["details"]["flushed_by"] == "link_set"
    });
    assert!(f["summary"].as_str().unwrap().contains("10.54.0.0/24 via 10.55.0.2 dev d3 table 2005"), "{f}");
    assert_eq!(t.stop(), 0);
}

/// A namespace whose first request tracer reads only after the delete that follows it
/// was carried out (add and delete a moment apart, read in one batch): its state was
/// dumped after the delete, so tracer cannot say the kernel refused it: no `confirmed`
/// (never a false "not applied"), and the Cilium finding stands.
#[test]
fn a_delete_in_a_namespace_seen_too_late_is_not_called_refused() {
    require_root();
    let mut t = tail();
    let ns = NetNsGuard::new("nd-quick");
    let ino = ns.inode();
    ns.sh("ip rule add pref 10 fwmark 0xa00/0xf00 lookup 2005 && ip rule del pref 10");
    let ev = event_in(&mut t, "rule_delete", ino, |_| true);
    eprintln!("event: {ev}");
    assert_ne!(ev["confirmed"], false, "{ev}");
    t.wait_for("cilium-rule-deleted", Duration::from_secs(2), |v| {
        v["type"] == "finding"
            && v["id"] == "cilium-rule-deleted"
            && v["details"]["netns"].as_u64() == Some(ino)
    });
    assert_eq!(t.stop(), 0);
}

/// When the kernel drops notifications (tracer's socket buffer full: here made tiny with
/// `TRACER_RTNL_RCVBUF`, under a burst of 400 route additions), tracer dumps the
/// namespace again and takes what is gone from it as removed: the rule deleted in the
/// burst is still described whole and confirmed.
#[test]
fn a_lost_notification_is_made_up_for_by_a_fresh_dump() {
    require_root();
    let ns = NetNsGuard::new("nd-overrun");
    ns.ip(&["link", "set", "lo", "up"]);
    ns.ip(&["rule", "add", "pref", "10", "fwmark", "0xa00/0xf00", "lookup", "2005"]);
    let ino = ns.inode();
    let dir = TempDir::new("batch");
    let mut batch: String = (0..400)
        .map(|i| format!("route add 10.{}.{}.0/24 dev lo table 300\n", 100 + i / 200, i % 200))
        .collect();
    batch.push_str("rule del pref 10\n");
    let file = dir.write("batch", &batch);
    let mut cmd = Command::new(tracer_bin());
    cmd.args(["tail", "--json"]).env("TRACER_RTNL_RCVBUF", "256");
    let mut t = Tracer::spawn(cmd);
    ns.ip(&["-batch", file.to_str().unwrap()]);
    let ev = event_in(&mut t, "rule_delete", ino, |_| true);
    eprintln!("event: {ev}");
    assert_eq!(ev["confirmed"], true, "{ev}");
    assert_eq!(ev["object"], "10: from all fwmark 0xa00/0xf00 lookup 2005", "{ev}");
    assert_eq!(t.stop(), 0);
}
