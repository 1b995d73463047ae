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

/// Every hook attaches, in the modes the header gives: the mode asked for
/// (`TRACER_HOOK_MODE`), or in `auto` kernel functions exactly where `tracer check`
/// finds BPF trampolines; `sys_enter`/`sys_exit` only while a family needs them.
#[test]
fn every_hook_attaches() {
    let mut t = tail();
    let hooks = t.header["hooks"].as_array().unwrap().clone();
    for h in &hooks {
        assert_eq!(h["state"], "attached", "hook not attached: {h}");
    }
    assert_eq!(t.header["schema"], 1);
    let modes = t.header["hook_modes"].as_array().expect("hook_modes in the header").clone();
    let families: Vec<&str> = modes.iter().map(|m| m["family"].as_str().unwrap()).collect();
    assert_eq!(families, ["cgroup_write", "netlink", "cgroup_bpf"], "{modes:?}");
    let trampolines = run_out(&tracer_bin().to_string_lossy(), &["check", "--json"]);
    let trampolines: Value = serde_json::from_str(&trampolines).unwrap();
    let want = match std::env::var("TRACER_HOOK_MODE").as_deref() {
        Ok("kfunc") => "kfunc",
        Ok("syscall") => "syscall",
        _ if trampolines["kernel_functions"]["available"] == true => "kfunc",
        _ => "syscall",
    };
    for m in &modes {
        assert_eq!(m["mode"], want, "{m}");
        assert!(!m["why"].as_str().unwrap().is_empty(), "{m}");
    }
    let mut names: Vec<&str> = hooks.iter().map(|h| h["name"].as_str().unwrap()).collect();
    names.sort();
    let mut expected = vec![
        "cgroup_mkdir",
        "cgroup_rmdir",
        "sched_process_exec",
        "sched_process_exit",
        "sched_process_fork",
        "signal_generate",
        "sysctl_write",
    ];
    if want == "kfunc" {
        expected.extend(["fentry_bpf", "fentry_cg_write", "fexit_bpf", "fexit_cg_write", "fexit_rtnl_msg"]);
    } else {
        expected.extend(["sys_enter", "sys_exit"]);
    }
    expected.sort();
    assert_eq!(names, expected);
    assert_eq!(t.stop(), 0);
}

/// `--hook-mode kfunc` where the kernel refuses BPF trampolines is an error that says
/// why and what to use instead; where it loads them, the tracer runs on them alone.
#[test]
fn hook_mode_kfunc_runs_on_kernel_functions_or_says_why_not() {
    let check = run_out(&tracer_bin().to_string_lossy(), &["check", "--json"]);
    let check: Value = serde_json::from_str(&check).unwrap();
    let mut cmd = std::process::Command::new(tracer_bin());
    cmd.args(["tail", "--json", "--hook-mode", "kfunc"]).env_remove("TRACER_HOOK_MODE");
    if check["kernel_functions"]["available"] == true {
        let mut t = Tracer::spawn(cmd);
        for m in t.header["hook_modes"].as_array().unwrap() {
            assert_eq!(m["mode"], "kfunc", "{m}");
            assert_eq!(m["why"], "--hook-mode kfunc", "{m}");
        }
        assert!(t.header["hooks"].as_array().unwrap().iter().all(|h| h["name"] != "sys_enter"));
        assert_eq!(t.stop(), 0);
    } else {
        let out = cmd.stdin(std::process::Stdio::null()).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{err}");
        let reason = check["kernel_functions"]["reason"].as_str().unwrap();
        assert!(err.contains("--hook-mode kfunc: ") && err.contains(reason), "{err}");
        assert!(err.contains("use --hook-mode auto"), "{err}");
        assert!(out.stdout.is_empty(), "no header when nothing runs");
    }
}

/// What reaches the kernel's functions but not the syscall hooks: a cgroup write through
/// io_uring, one through a descriptor passed over a unix socket, and route deletes sent
/// with sendmmsg (one refused). The kernel-function
/// mode sees each, with the kernel's answer; the syscall mode sees none (its known
/// limits), while an ordinary write and `ip route del` after them are seen in both.
#[test]
fn io_uring_passed_fd_and_sendmmsg_changes_are_seen_on_kernel_functions_only() {
    let mut t = tail();
    let kfunc = |family: &str| {
        t.header["hook_modes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["family"] == family && m["mode"] == "kfunc")
    };
    let (writes_kfunc, netlink_kfunc) = (kfunc("cgroup_write"), kfunc("netlink"));
    let helper = tracer_bin().with_file_name("tracer-kernel-paths");
    let helper = helper.to_string_lossy();

    let cg = CgroupGuard::new(&cgroup2_root(), &unique("uring"));
    let file = cg.path.join("cgroup.max.depth");
    let out = std::process::Command::new(&*helper)
        .args(["io-uring-write", &file.to_string_lossy(), "7\n"])
        .output()
        .unwrap();
    let uring_ok = out.status.success();
    if uring_ok {
        assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), "7", "the io_uring write did not land");
    } else {
        // Only a kernel with io_uring turned off may refuse; the rest of the test runs.
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("io_uring_setup"), "{err}");
        eprintln!("io_uring is off here: {err}");
    }
    sh(&format!("echo 3 > {}", file.display()));
    let marker = t.wait_event("cgroup_write", |v| v["cgroup"] == cg.rel.as_str() && v["value"] == "3\n");
    assert_eq!(marker["result"], 2, "{marker}");
    let uring: Vec<Value> = t
        .seen
        .iter()
        .filter(|v| v["kind"] == "cgroup_write" && v["cgroup"] == cg.rel.as_str() && v["value"] == "7\n")
        .cloned()
        .collect();
    if writes_kfunc && uring_ok {
        assert_eq!(uring.len(), 1, "{uring:?}");
        assert_eq!(uring[0]["file"], "cgroup.max.depth");
        assert_eq!(uring[0]["result"], 2, "{:?}", uring[0]);
    } else {
        assert!(uring.is_empty(), "the syscall mode cannot see io_uring writes: {uring:?}");
    }

    // A descriptor passed over a unix socket to a process that never opened a cgroupfs
    // file itself (forked before its parent opened one). Only the kernel-function mode
    // is asked: the syscall mode's miss cannot be staged from here, since this test
    // process opened cgroup files and its children inherit that mark.
    if writes_kfunc {
        let passed = format!(
        "import os, socket\n\
         a, b = socket.socketpair()\n\
         pid = os.fork()\n\
         if pid == 0:\n    _, fds, _, _ = socket.recv_fds(b, 1, 1)\n    os.write(fds[0], b'4\\n')\n    os._exit(0)\n\
         fd = os.open('{}', os.O_WRONLY)\n\
         socket.send_fds(a, [b'x'], [fd])\n\
         os.waitpid(pid, 0)",
        file.display()
    );
        run_out("python3", &["-c", &passed]);
        assert_eq!(
            std::fs::read_to_string(&file).unwrap().trim(),
            "4",
            "the write through the passed fd did not land"
        );
        sh(&format!("echo 2 > {}", file.display()));
        t.wait_event("cgroup_write", |v| v["cgroup"] == cg.rel.as_str() && v["value"] == "2\n");
        let via_passed: Vec<Value> = t
            .seen
            .iter()
            .filter(|v| v["kind"] == "cgroup_write" && v["cgroup"] == cg.rel.as_str() && v["value"] == "4\n")
            .cloned()
            .collect();
        assert_eq!(via_passed.len(), 1, "{via_passed:?}");
        assert_eq!(via_passed[0]["comm"], "python3", "{:?}", via_passed[0]);
    }

    let ns = NetNsGuard::new("mmsg");
    ns.ip(&["link", "set", "lo", "up"]);
    ns.ip(&["route", "add", "198.51.100.0/24", "dev", "lo"]);
    ns.ip(&["route", "add", "203.0.113.0/24", "dev", "lo"]);
    ns.ip(&["route", "add", "192.0.2.0/24", "dev", "lo"]);
    let acks = run_out(
        "ip",
        &[
            "netns",
            "exec",
            &ns.name,
            &*helper,
            "sendmmsg-delroute",
            "198.51.100.0/24",
            "203.0.113.0/24",
            "10.99.0.0/24",
        ],
    );
    assert_eq!(acks, "198.51.100.0/24 0\n203.0.113.0/24 0\n10.99.0.0/24 -3\n", "the kernel's acks");
    let pid = ns.ip(&["route", "del", "192.0.2.0/24", "dev", "lo"]);
    let marker = t.wait_event("route_delete", |v| pid_is(v, pid));
    assert_eq!(marker["dst"], "192.0.2.0/24");
    let deletes = |dst: &str| {
        t.seen
            .iter()
            .filter(|v| v["kind"] == "route_delete" && v["dst"] == dst)
            .cloned()
            .collect::<Vec<Value>>()
    };
    if netlink_kfunc {
        assert_eq!(marker["result"], 0, "{marker}");
        for dst in ["198.51.100.0/24", "203.0.113.0/24"] {
            let d = t.wait_event("route_delete", |v| v["dst"] == dst);
            assert_eq!(d["comm"], "tracer-kernel-p", "{d}");
            assert_eq!(d["result"], 0, "{d}");
            assert_eq!(d["confirmed"], true, "{d}");
        }
        let refused = t.wait_event("route_delete", |v| v["dst"] == "10.99.0.0/24");
        assert_eq!(refused["result"], -3, "ESRCH: {refused}");
        assert_eq!(refused["confirmed"], false, "{refused}");
    } else {
        assert!(marker.get("result").is_none(), "a request seen at the syscall has no answer: {marker}");
        for dst in ["198.51.100.0/24", "203.0.113.0/24", "10.99.0.0/24"] {
            assert!(
                deletes(dst).is_empty(),
                "sendmmsg is not hooked in the syscall mode: {:?}",
                deletes(dst)
            );
        }
    }
    drop(cg);
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

/// A `writev` of two iovecs to a cgroup file. At the syscall the program reads the
/// first, and the event says so (`more_iovecs`, `value_truncated`) instead of passing a
/// part as the whole value; in `cgroup_file_write` the kernel has joined them.
#[test]
fn cgroup_writev_says_only_the_first_iovec_was_read() {
    let mut t = tail();
    let kfunc = t.header["hook_modes"][0]["mode"] == "kfunc";
    let cg = CgroupGuard::new(&cgroup2_root(), &unique("iov"));
    let file = cg.path.join("cgroup.max.depth");
    let pid = sh(&format!(
        "exec python3 -c \"import os; fd = os.open('{}', os.O_WRONLY); os.writev(fd, [b'5', b'\\n'])\"",
        file.display()
    ));
    let w =
        t.wait_event("cgroup_write", |v| v["cgroup"] == cg.rel.as_str() && v["file"] == "cgroup.max.depth");
    assert!(pid_is(&w, pid), "{w}");
    if kfunc {
        assert_eq!(w["value"], "5\n", "{w}");
        assert!(w.get("more_iovecs").is_none() && w.get("value_truncated").is_none(), "{w}");
    } else {
        assert_eq!(w["value"], "5", "{w}");
        assert_eq!(w["more_iovecs"], true, "{w}");
        assert_eq!(w["value_truncated"], true, "{w}");
    }
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
