//! The tracer as a pod runs it (issue 6): inside private cgroup, mount and PID
//! namespaces with only the capabilities the manifests grant, serving Prometheus metrics,
//! and stopping cleanly on SIGTERM with no program left in the kernel.
//!
//! Run as root, one at a time: `cargo xtask test -- cluster`.

use std::collections::BTreeSet;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use tracer_tests::*;

/// The capabilities deploy/*.yaml grant (tests/tests/manifests.rs holds the manifests
/// to this list), as setpriv names them.
const POD_CAPS: &str = "-all,+bpf,+perfmon,+net_admin,+sys_ptrace,+sys_admin";

fn ns_link(pid: &str, ns: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{ns}"))
        .unwrap_or_else(|e| panic!("readlink /proc/{pid}/ns/{ns}: {e}"))
        .display()
        .to_string()
}

fn require_tool(name: &str, why: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false);
    assert!(found, "{name} is not installed: {why}");
}

/// The tracer in a pod with hostPID but its own cgroup namespace rooted at a test
/// cgroup, its own cgroup2 mount of that cgroup (what a container runtime mounts at
/// /sys/fs/cgroup) and its own PID namespace: the sysctl hook must still attach at the
/// host's cgroup2 root, and changes made outside must come out with host-absolute cgroup
/// paths and host PIDs.
#[test]
fn private_cgroup_mount_and_pid_namespaces_report_the_host_view() {
    require_root();
    require_tool("unshare", "util-linux's unshare runs the tracer in new namespaces");
    require_tool("setpriv", "util-linux's setpriv limits the tracer to the pod's capabilities");
    let root = cgroup2_root();
    let pod = CgroupGuard::new(&root, &unique("pod"));
    let outside = CgroupGuard::new(&root, &unique("outside"));
    let tracer = tracer_bin();

    // The shell moves itself (a process this test started) into the pod cgroup, then
    // becomes unshare, whose new cgroup namespace is rooted there. Inside, as a container
    // runtime and kubelet would: the host's cgroup2 hierarchy is bind-mounted where the
    // manifests mount it (hostPath, read-only there), and a fresh cgroup2 mount - of the
    // pod cgroup, by the rules of cgroup namespaces - covers /sys/fs/cgroup. Both mounts
    // exist only in the private mount namespace (unshare makes propagation private) and
    // go away with it; the machine's mounts are untouched.
    let host = TempDir::new("hostcg");
    let script = format!(
        "echo $$ > {procs} && exec unshare --cgroup --mount --pid --fork sh -c \
         'mount --bind {root} {host} && mount -t cgroup2 none /sys/fs/cgroup && \
          exec setpriv --bounding-set {caps} -- {tracer} tail --json --stats-every 1'",
        procs = pod.path.join("cgroup.procs").display(),
        root = root.display(),
        host = host.path.display(),
        caps = POD_CAPS,
        tracer = tracer.display(),
    );
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &script]);
    // SAFETY: setsid is async-signal-safe; the tracer tree gets its own session.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut t = Tracer::spawn(cmd);
    let unshare_pid = t.pid();
    let tracer_pid = find_descendant(unshare_pid, "tracer", Duration::from_secs(5))
        .expect("the tracer process under unshare");

    // The setup is what a pod looks like.
    let unshare_pid_s = unshare_pid.to_string();
    let tracer_pid_s = tracer_pid.to_string();
    assert_ne!(
        ns_link(&unshare_pid_s, "cgroup"),
        ns_link("self", "cgroup"),
        "unshare must be in a private cgroup namespace"
    );
    assert_ne!(
        ns_link(&tracer_pid_s, "mnt"),
        ns_link("self", "mnt"),
        "the tracer must be in a private mount namespace"
    );
    assert_ne!(
        ns_link(&tracer_pid_s, "pid"),
        ns_link("self", "pid"),
        "the tracer must be in a private PID namespace"
    );
    let status = std::fs::read_to_string(format!("/proc/{tracer_pid}/status")).unwrap();
    let nspid = status.lines().find(|l| l.starts_with("NSpid:")).unwrap_or("");
    assert!(nspid.trim_end().ends_with("\t1"), "the tracer is PID 1 of its namespace: {nspid}");
    let mountinfo = std::fs::read_to_string(format!("/proc/{tracer_pid}/mountinfo")).unwrap();
    let own_mount = mountinfo.lines().find(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        l.contains(" - cgroup2 ") && f.get(4) == Some(&"/sys/fs/cgroup")
    });
    // Read from the host's cgroup namespace, the tracer's mount shows its real root.
    let own_root = own_mount.and_then(|l| l.split(' ').nth(3)).unwrap_or("");
    assert_eq!(
        own_root, pod.rel,
        "the tracer's /sys/fs/cgroup must be the pod cgroup, as in a container: {own_mount:?}"
    );
    // PID 1 of this machine cannot be inspected (not even by root here), so the tracer
    // cannot join its cgroup namespace: kernel-built paths must be host-absolute anyway.

    let sysctl_hook = t.header["hooks"]
        .as_array()
        .and_then(|h| h.iter().find(|h| h["name"] == "sysctl_write"))
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(sysctl_hook["state"], "attached", "sysctl hook: {sysctl_hook}");

    // A mkdir by this test process (host PID) outside the pod cgroup.
    let child = outside.path.join("child");
    std::fs::create_dir(&child).unwrap();
    let want = format!("{}/child", outside.rel);
    let ev = t.wait_event("cgroup_mkdir", |v| v["cgroup"] == want.as_str());
    assert_eq!(ev["pid"], std::process::id(), "host PID of the test: {ev}");
    assert_eq!(ev["hierarchy"], "v2", "{ev}");

    // A cgroup file write by a shell (host PID, actor sh) outside the pod cgroup.
    let file = outside.path.join("cgroup.max.descendants");
    let sh_pid = sh(&format!("echo 7 > {}", file.display()));
    let ev = t.wait_event("cgroup_write", |v| {
        v["cgroup"] == outside.rel.as_str() && v["file"] == "cgroup.max.descendants"
    });
    assert_eq!(ev["pid"], sh_pid, "{ev}");
    assert_eq!(ev["actor"], "sh", "{ev}");
    assert_eq!(ev["value"].as_str().map(str::trim), Some("7"), "{ev}");

    // A sysctl write in a test network namespace by a process outside the pod cgroup:
    // seen only if the program is attached at the host's root.
    let netns = NetNsGuard::new("clns");
    let w_pid = netns.sh("echo 2 > /proc/sys/net/ipv4/conf/lo/rp_filter");
    let ev = t.wait_event("sysctl_write", |v| v["name"] == "net.ipv4.conf.lo.rp_filter" && v["pid"] == w_pid);
    assert_eq!(ev["netns"], netns.inode(), "{ev}");
    assert_eq!(ev["value"].as_str().map(str::trim), Some("2"), "{ev}");

    // A signal to a process in the outside cgroup: its cgroup resolved by scanning the
    // host's hierarchy (the id is not in any earlier event).
    let target = ChildGuard(
        Command::new("sh")
            .args([
                "-c",
                &format!("echo $$ > {} && exec sleep 60", outside.path.join("cgroup.procs").display()),
            ])
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !std::fs::read_to_string(format!("/proc/{}/comm", target.pid())).is_ok_and(|c| c.trim() == "sleep")
    {
        assert!(Instant::now() < deadline, "sleep did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    // SAFETY: our own child, by pid.
    unsafe { libc::kill(target.pid() as i32, libc::SIGKILL) };
    let ev = t.wait_event("signal", |v| v["target_pid"] == target.pid());
    assert_eq!(ev["target_cgroup"], outside.rel.as_str(), "{ev}");
    drop(target);

    // SIGTERM to the tracer itself (unshare does not pass signals on).
    // SAFETY: a process this test started, by pid.
    unsafe { libc::kill(tracer_pid as i32, libc::SIGTERM) };
    let code = t.stop();
    assert_eq!(code, 0, "tracer exit code");
    assert_eq!(
        t.seen.last().map(|v| v["type"].clone()),
        Some(Value::from("stats")),
        "last line must be stats"
    );
    drop(netns);
    drop(outside);
    drop(pod);
    drop(host);
}

/// bpf program ids held open by a process (its fds' fdinfo says `prog_id:`).
fn prog_ids_of(pid: u32) -> BTreeSet<u64> {
    let mut ids = BTreeSet::new();
    if let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) {
        for e in rd.flatten() {
            if let Ok(s) = std::fs::read_to_string(e.path()) {
                ids.extend(
                    s.lines()
                        .filter_map(|l| l.strip_prefix("prog_id:"))
                        .filter_map(|v| v.trim().parse::<u64>().ok()),
                );
            }
        }
    }
    ids
}

/// id -> name of every program loaded in the kernel (`bpftool prog show`).
fn loaded_programs() -> Vec<(u64, String)> {
    require_tool("bpftool", "the test compares the kernel's program list before and after");
    let out = run_out("bpftool", &["prog", "show", "--json"]);
    let v: Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("bpftool output is not JSON ({e}): {out}"));
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| Some((p["id"].as_u64()?, p["name"].as_str().unwrap_or("").to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// Everything under /sys/fs/bpf (empty when no bpffs is mounted).
fn pins() -> BTreeSet<String> {
    fn walk(dir: &std::path::Path, out: &mut BTreeSet<String>) {
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                out.insert(e.path().display().to_string());
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    walk(&e.path(), out);
                }
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(std::path::Path::new("/sys/fs/bpf"), &mut out);
    out
}

/// A rollout ends the pod: metrics were scraped on loopback while it ran, SIGTERM ends it
/// with exit 0 within 10 s and a final stats line, and its programs leave the kernel.
#[test]
fn sigterm_ends_with_stats_metrics_served_and_no_program_left() {
    require_root();
    let pins_before = pins();
    let port = free_loopback_port();
    let addr = format!("127.0.0.1:{port}");
    let mut t = Tracer::start(&["tail", "--json", "--metrics-addr", &addr, "--stats-every", "1"]);

    // Our programs, by the fds the tracer holds; they are in the kernel's list.
    let ours = prog_ids_of(t.pid());
    let loaded = loaded_programs();
    let names: BTreeSet<String> =
        loaded.iter().filter(|(id, _)| ours.contains(id)).map(|(_, n)| n.clone()).collect();
    // The kernel keeps 15 characters of a name (BPF_OBJ_NAME_LEN - 1); bpftool shows the
    // full function name when the program has BTF.
    for want in [
        "sys_enter",
        "sys_exit",
        "sysctl_write",
        "cgroup_mkdir",
        "cgroup_rmdir",
        "signal_generate",
        "sched_process_exec",
    ] {
        let short = &want[..want.len().min(15)];
        assert!(
            names.iter().any(|n| n == want || n == short),
            "program {want} not among the tracer's loaded programs {names:?}"
        );
    }

    // A change, then the counters on /metrics.
    let cg = CgroupGuard::new(&cgroup2_root(), &unique("metrics"));
    sh(&format!("echo 9 > {}", cg.path.join("cgroup.max.descendants").display()));
    t.wait_event("cgroup_write", |v| v["cgroup"] == cg.rel.as_str());
    // A stats line after the change carries the kernel counters and the table size.
    t.wait_for("a stats line", Duration::from_secs(5), |v| {
        v["type"] == "stats" && v["events"].as_u64() > Some(0)
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    let body = loop {
        let (status, body) =
            http_get(&addr, "/metrics").unwrap_or_else(|e| panic!("GET http://{addr}/metrics: {e}"));
        assert_eq!(status, 200, "{body}");
        let ready = metric_value(&body, r#"tracer_events_total{kind="cgroup_write"}"#)
            .is_some_and(|v| v >= 1.0)
            && metric_value(&body, "tracer_process_table_entries").is_some_and(|v| v > 0.0);
        if ready || Instant::now() > deadline {
            break body;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let show = |series: &str| metric_value(&body, series);
    assert!(show(r#"tracer_events_total{kind="cgroup_write"}"#) >= Some(1.0), "{body}");
    assert!(show("tracer_process_table_entries") > Some(0.0), "{body}");
    assert!(show(r#"tracer_hook_records_total{hook="cgroup_write"}"#) >= Some(1.0), "{body}");
    assert_eq!(show(r#"tracer_lost_records_total{hook="cgroup_write"}"#), Some(0.0), "{body}");
    assert_eq!(show(r#"tracer_hook_attached{hook="sysctl_write"}"#), Some(1.0), "{body}");
    // The hook mode of each family, as the header says it.
    for m in t.header["hook_modes"].as_array().unwrap() {
        let series = format!(r#"tracer_hook_kfunc{{family="{}"}}"#, m["family"].as_str().unwrap());
        let want = if m["mode"] == "kfunc" { 1.0 } else { 0.0 };
        assert_eq!(show(&series), Some(want), "{series}: {body}");
    }
    let (status, _) = http_get(&addr, "/").unwrap();
    assert_eq!(status, 404);

    let started = Instant::now();
    let code = t.stop();
    let took = started.elapsed();
    assert_eq!(code, 0, "exit code after SIGTERM");
    assert!(took < Duration::from_secs(10), "SIGTERM to exit took {took:?}");
    let last = t.seen.last().cloned().unwrap_or(Value::Null);
    assert_eq!(last["type"], "stats", "the last line must be the final stats: {last}");
    assert_eq!(last["lost"], 0, "{last}");

    // The kernel frees a program after an RCU grace period once its last fd and link
    // are closed: give it a moment, no more.
    let deadline = Instant::now() + Duration::from_secs(3);
    let left = loop {
        let after: BTreeSet<u64> = loaded_programs().into_iter().map(|(id, _)| id).collect();
        let left: Vec<u64> = ours.intersection(&after).copied().collect();
        if left.is_empty() || Instant::now() > deadline {
            break left;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(left.is_empty(), "programs still loaded 3 s after the tracer exited: {left:?}");
    assert_eq!(pins(), pins_before, "the tracer must pin nothing under /sys/fs/bpf");
    assert!(std::net::TcpStream::connect(&addr).is_err(), "metrics port still open after exit");
}
