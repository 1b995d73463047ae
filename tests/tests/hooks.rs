//! Every hook family, live on the real kernel: the test makes a change and asserts on
//! the JSON line `tracer tail --json` prints for it (kind, values, pid, comm).
//! One tracer per test; run with `--test-threads=1` (`cargo xtask test` does).

use serde_json::Value;
use tracer_tests::*;

fn tail() -> Tracer {
    Tracer::start(&["tail", "--json", "--stats-every", "1"])
}

fn pid_is(v: &Value, pid: u32) -> bool {
    v["pid"].as_u64() == Some(pid as u64)
}

#[test]
fn every_hook_attaches() {
    let mut t = tail();
    let hooks = t.header["hooks"].as_array().unwrap().clone();
    assert_eq!(hooks.len(), 9, "{hooks:?}");
    for h in &hooks {
        assert_eq!(h["state"], "attached", "hook not attached: {h}");
    }
    assert_eq!(t.header["schema"], 1);
    assert_eq!(t.stop(), 0);
}

#[test]
fn cgroup_v2_mkdir_write_rmdir() {
    let root = cgroup2_root();
    let mut t = tail();
    let name = unique("v2");
    let cg = CgroupGuard::new(&root, &name);
    let mk = t.wait_event("cgroup_mkdir", |v| v["cgroup"] == cg.rel.as_str());
    assert_eq!(mk["hierarchy"], "v2");
    assert!(mk["cgroup_id"].as_u64().unwrap() > 0);

    // A write that succeeds, with the value and the byte count as result.
    let file = cg.path.join("cgroup.max.depth");
    let pid = sh(&format!("echo 5 > {}", file.display()));
    let w =
        t.wait_event("cgroup_write", |v| v["cgroup"] == cg.rel.as_str() && v["file"] == "cgroup.max.depth");
    assert!(pid_is(&w, pid), "pid {pid}: {w}");
    assert_eq!(w["comm"], "sh");
    assert_eq!(w["value"], "5\n");
    assert_eq!(w["result"], 2);
    assert_eq!(w["hierarchy"], "v2");

    // A write the kernel refuses: the result is the negative errno.
    let sub = cg.path.join("cgroup.subtree_control");
    let _ = std::process::Command::new("sh")
        .args(["-c", &format!("echo +nosuchctl > {}", sub.display())])
        .status();
    let w = t.wait_event("cgroup_write", |v| {
        v["cgroup"] == cg.rel.as_str() && v["file"] == "cgroup.subtree_control"
    });
    assert_eq!(w["value"], "+nosuchctl\n");
    assert!(w["result"].as_i64().unwrap() < 0, "{w}");
    assert!(w["controllers_before"].is_array(), "{w}");

    let rel = cg.rel.clone();
    drop(cg);
    t.wait_event("cgroup_rmdir", |v| v["cgroup"] == rel.as_str());
    assert_eq!(t.stop(), 0);
}

#[test]
fn cgroup_v1_write_names_the_hierarchy() {
    // With cgroup_no_v1=all (the VM suite) no controller can be bound to v1: the guest
    // mounts a named hierarchy (`none,name=tracer-vm`), which is cgroupfs v1 all the same.
    let Some(root) =
        cgroup1_mount("pids").or_else(|| cgroup1_mount("cpu")).or_else(|| cgroup1_mount("name=tracer-vm"))
    else {
        panic!("this machine has no cgroup v1 hierarchy with pids or cpu, nor a named one; the v1 test cannot run");
    };
    let mut t = tail();
    let name = unique("v1");
    let cg = CgroupGuard::new(&root, &name);
    let mk = t.wait_event("cgroup_mkdir", |v| v["cgroup"] == cg.rel.as_str());
    let hierarchy = mk["hierarchy"].as_str().unwrap().to_string();
    assert_ne!(hierarchy, "v2");
    let (file, value) = if hierarchy.contains("pids") {
        ("pids.max", "10")
    } else if hierarchy.contains("cpu") {
        ("cpu.shares", "512")
    } else {
        ("notify_on_release", "1")
    };
    let pid = sh(&format!("echo {value} > {}", cg.path.join(file).display()));
    let w = t.wait_event("cgroup_write", |v| v["cgroup"] == cg.rel.as_str() && v["file"] == file);
    assert!(pid_is(&w, pid), "{w}");
    assert_eq!(w["hierarchy"].as_str(), Some(hierarchy.as_str()));
    assert_eq!(w["value"], format!("{value}\n"));
    assert_eq!(w["result"].as_i64(), Some(value.len() as i64 + 1));
    drop(cg);
    assert_eq!(t.stop(), 0);
}

#[test]
fn nested_cgroup_path_is_from_the_hierarchy_root() {
    let root = cgroup2_root();
    let mut t = tail();
    let name = unique("nest");
    let cg = CgroupGuard::new(&root, &name);
    let deep = cg.path.join("kubepods.slice").join("kubepods-burstable.slice");
    std::fs::create_dir_all(&deep).unwrap();
    sh(&format!("echo 3 > {}", deep.join("cgroup.max.depth").display()));
    let want = format!("{}/kubepods.slice/kubepods-burstable.slice", cg.rel);
    let w = t.wait_event("cgroup_write", |v| v["file"] == "cgroup.max.depth" && v["cgroup"] == want.as_str());
    assert_eq!(w["value"], "3\n");
    drop(cg);
    assert_eq!(t.stop(), 0);
}

#[test]
fn sysctl_write_in_a_netns() {
    let ns = NetNsGuard::new("sysctl");
    let mut t = tail();
    let pid = ns.sh("echo 2 > /proc/sys/net/ipv4/conf/lo/rp_filter");
    let w = t.wait_event("sysctl_write", |v| v["name"] == "net.ipv4.conf.lo.rp_filter" && pid_is(v, pid));
    assert_eq!(w["value"], "2");
    assert_eq!(w["old_value"], "0");
    assert_eq!(w["comm"], "sh");
    assert_eq!(w["netns"].as_u64(), Some(ns.inode()));
    assert_eq!(w["dev"], "lo");
    assert_eq!(t.stop(), 0);
}

/// Routes, rules, addresses and links deleted with iproute2 (sendmsg).
#[test]
fn rtnetlink_deletions_via_iproute2() {
    let ns = NetNsGuard::new("rtnl");
    ns.ip(&["link", "add", "cilium_host", "type", "veth", "peer", "name", "cilium_net"]);
    ns.ip(&["addr", "add", "10.200.0.1/24", "dev", "cilium_host"]);
    ns.ip(&["link", "set", "cilium_host", "up"]);
    ns.ip(&["link", "set", "cilium_net", "up"]);
    ns.ip(&["route", "add", "10.201.0.0/24", "dev", "cilium_host", "table", "2004"]);
    ns.ip(&["rule", "add", "fwmark", "0x200/0xf00", "lookup", "2004", "priority", "9"]);
    let netns = ns.inode();

    let mut t = tail();
    let pid = ns.ip(&["route", "del", "10.201.0.0/24", "dev", "cilium_host", "table", "2004"]);
    let r = t.wait_event("route_delete", |v| pid_is(v, pid));
    assert_eq!(r["dst"], "10.201.0.0/24");
    assert_eq!(r["table"], 2004);
    assert_eq!(r["dev"], "cilium_host", "ifindex resolved in the request's netns: {r}");
    assert_eq!(r["family"], "inet");
    assert_eq!(r["comm"], "ip");
    assert_eq!(r["netns"].as_u64(), Some(netns));

    let pid = ns.ip(&["rule", "del", "priority", "9"]);
    let r = t.wait_event("rule_delete", |v| pid_is(v, pid));
    assert_eq!(r["priority"], 9);

    let pid = ns.ip(&["link", "set", "cilium_net", "down"]);
    let r = t.wait_event("link_set", |v| pid_is(v, pid));
    assert_eq!(r["up"], false);
    assert_eq!(r["dev"], "cilium_net");

    let pid = ns.ip(&["addr", "del", "10.200.0.1/24", "dev", "cilium_host"]);
    let r = t.wait_event("addr_delete", |v| pid_is(v, pid));
    assert_eq!(r["dst"], "10.200.0.1/24");
    assert_eq!(r["dev"], "cilium_host");

    let pid = ns.ip(&["link", "del", "cilium_host"]);
    let r = t.wait_event("link_delete", |v| pid_is(v, pid));
    assert_eq!(r["dev"], "cilium_host");
    assert_eq!(t.stop(), 0);
}

/// sendto(), a batch of two requests in one buffer, and rp_filter set over rtnetlink
/// (RTM_SETLINK + IFLA_AF_SPEC/AF_INET/IFLA_INET_CONF), which the sysctl path never sees.
#[test]
fn rtnetlink_sendto_batch_and_rp_filter() {
    let ns = NetNsGuard::new("rtnl2");
    ns.ip(&["link", "add", "lxc0test", "type", "veth", "peer", "name", "lxc0peer"]);
    ns.ip(&["link", "set", "lxc0test", "up"]);
    ns.ip(&["route", "add", "10.210.0.0/24", "dev", "lxc0test", "table", "2005"]);
    ns.ip(&["route", "add", "10.211.0.0/24", "dev", "lxc0test", "table", "2005"]);
    let mut t = tail();
    let script = format!("{}/tests/rtnl.py", env!("CARGO_MANIFEST_DIR"));
    let pid = ns.sh(&format!("exec python3 {script} lxc0test"));
    let a = t.wait_event("route_delete", |v| pid_is(v, pid) && v["dst"] == "10.210.0.0/24");
    let b = t.wait_event("route_delete", |v| pid_is(v, pid) && v["dst"] == "10.211.0.0/24");
    assert_eq!(a["table"], 2005);
    assert_eq!(b["table"], 2005);
    let s = t.wait_event("link_set", |v| pid_is(v, pid) && v["rp_filter"].is_number());
    assert_eq!(s["rp_filter"], 2);
    assert_eq!(s["dev"], "lxc0test");
    assert_eq!(t.stop(), 0);
}

#[test]
fn signal_to_a_child() {
    let mut t = tail();
    let mut child = std::process::Command::new("sleep").arg("60").spawn().unwrap();
    let target = child.id();
    // Wait for the exec: before it, the child still carries this test's name.
    for _ in 0..500 {
        if std::fs::read_to_string(format!("/proc/{target}/comm")).is_ok_and(|c| c.trim() == "sleep") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    // SAFETY: our own child.
    unsafe { libc::kill(target as i32, libc::SIGTERM) };
    let _ = child.wait();
    let s = t.wait_event("signal", |v| v["target_pid"].as_u64() == Some(target as u64));
    assert_eq!(s["signal"], "SIGTERM");
    assert_eq!(s["signo"], 15);
    assert_eq!(s["target_comm"], "sleep");
    assert!(pid_is(&s, std::process::id()), "sender is this test process: {s}");
    assert_eq!(t.stop(), 0);
}

#[test]
fn sigterm_ends_with_stats_and_detaches() {
    let mut t = tail();
    assert_eq!(t.stop(), 0);
    let last = t.seen.last().expect("lines after SIGTERM");
    assert_eq!(last["type"], "stats", "last line is the final stats: {last}");
    assert_eq!(last["lost"], 0);
}

/// A `writev` of two iovecs to a cgroup file: the kernel program reads the first, and the
/// event says so (`more_iovecs`, `value_truncated`) instead of passing a part as the
/// whole value.
#[test]
fn cgroup_writev_says_only_the_first_iovec_was_read() {
    let mut t = tail();
    let cg = CgroupGuard::new(&cgroup2_root(), &unique("iov"));
    let file = cg.path.join("cgroup.max.depth");
    let pid = sh(&format!(
        "exec python3 -c \"import os; fd = os.open('{}', os.O_WRONLY); os.writev(fd, [b'5', b'\\n'])\"",
        file.display()
    ));
    let w =
        t.wait_event("cgroup_write", |v| v["cgroup"] == cg.rel.as_str() && v["file"] == "cgroup.max.depth");
    assert!(pid_is(&w, pid), "{w}");
    assert_eq!(w["value"], "5", "{w}");
    assert_eq!(w["more_iovecs"], true, "{w}");
    assert_eq!(w["value_truncated"], true, "{w}");
    assert_eq!(w["result"].as_i64(), Some(2), "{w}");
    drop(cg);
    assert_eq!(t.stop(), 0);
}

/// `bpf()` attaches to a cgroup: a refused one (the fd is no program) is an event with the
/// kernel's errno and no program; an attach to a file that is not a cgroup is no event.
#[test]
fn cgroup_bpf_refused_attach_and_non_cgroup_targets() {
    use std::os::fd::AsRawFd;
    let root = cgroup2_root();
    let mut t = tail();
    let cg = CgroupGuard::new(&root, &unique("bpf"));
    let dir = std::fs::File::open(&cg.path).unwrap();
    let not_a_prog = std::fs::File::open("/proc/self/stat").unwrap();
    let attach = |target: i32| {
        let mut a = [0u8; 128];
        a[..4].copy_from_slice(&(target as u32).to_ne_bytes());
        a[4..8].copy_from_slice(&(not_a_prog.as_raw_fd() as u32).to_ne_bytes());
        a[8..12].copy_from_slice(&10u32.to_ne_bytes()); // BPF_CGROUP_INET4_CONNECT
                                                        // SAFETY: BPF_PROG_ATTACH (8) with a zeroed 128-byte attr.
        let r = unsafe { libc::syscall(libc::SYS_bpf, 8i64, a.as_mut_ptr(), 128u32) };
        (r, std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    };
    // First at a regular file (no event), then at the cgroup (the event).
    let (r, _) = attach(not_a_prog.as_raw_fd());
    assert!(r < 0, "the kernel accepted a file as a cgroup");
    let (r, errno) = attach(dir.as_raw_fd());
    assert!(r < 0, "the kernel accepted a file as a program");
    let me = std::process::id();
    let ev = t.wait_event("cgroup_bpf_attach", |v| pid_is(v, me));
    assert_eq!(ev["cgroup"], cg.rel.as_str(), "{ev}");
    assert_eq!(ev["request"], "BPF_PROG_ATTACH", "{ev}");
    assert_eq!(ev["attach_type"], "cgroup_inet4_connect", "{ev}");
    assert_eq!(ev["result"], -(errno as i64), "the kernel's errno: {ev}");
    assert!(ev.get("prog_id").is_none(), "no program behind the fd: {ev}");
    assert_eq!(ev["cgroupns_root"], "/", "{ev}");
    assert_eq!(ev["cgroup_id"].as_u64(), Some(std::os::unix::fs::MetadataExt::ino(&dir.metadata().unwrap())));
    assert_eq!(t.stop(), 0);
    let attaches = t.seen.iter().filter(|v| v["kind"] == "cgroup_bpf_attach" && pid_is(v, me)).count();
    assert_eq!(attaches, 1, "the attach at a regular file is no event");
    let findings: Vec<&Value> = t
        .seen
        .iter()
        .filter(|v| v["type"] == "finding" && v["details"]["pid"].as_u64() == Some(me as u64))
        .collect();
    assert!(findings.is_empty(), "a refused attach is no finding: {findings:?}");
}
