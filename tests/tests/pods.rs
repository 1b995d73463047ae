//! Pods by name, from the real containerd's CRI plugin (Debian's containerd 1.6 with runc,
//! the cgroupfs driver: `SystemdCgroup = false`), driven through CRI by the tests' own
//! client as kubelet would, with kubelet-style `cgroup_parent`s under a unique prefix.
//! Host-network pods, so no CNI is needed. The systemd-driver half (systemd as PID 1,
//! `SystemdCgroup = true`) runs in the VM suite: `vm_incidents.rs`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;
use tracer_tests::cri::{pod_uid, ContainerdNode, PodSpec};
use tracer_tests::*;

/// The container's cgroup directory in some hierarchy that has `file`.
fn cgroup_file(rel: &str, file: &str) -> PathBuf {
    cgroup_mounts()
        .into_iter()
        .map(|m| m.join(rel.trim_start_matches('/')).join(file))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("no hierarchy has {rel}/{file}"))
}

fn events<'a>(seen: &'a [Value], pred: impl Fn(&Value) -> bool + 'a) -> impl Iterator<Item = &'a Value> + 'a {
    seen.iter().filter(move |v| v["type"] == "event" && pred(v))
}

fn replay(file: &std::path::Path, args: &[&str]) -> String {
    let mut a = vec!["replay", file.to_str().unwrap()];
    a.extend_from_slice(args);
    run_out(tracer_bin().to_str().unwrap(), &a)
}

#[test]
fn real_containerd_pods_are_named_in_events_findings_replay_and_filters() {
    require_root();
    let prefix = unique("kp");
    let _prefix = CgroupPrefixGuard(prefix.clone());
    let mut node = ContainerdNode::start(false, "cgroupfs", true);
    let mut t = Tracer::start(&["record", "-o", "-", "--host-root", node.root()]);

    // Two pods of other names and namespaces, a burstable one and a guaranteed one.
    let (uid_a, uid_b) = (pod_uid(), pod_uid());
    let logs = node.dir.path.join("pods");
    let pod_a = PodSpec {
        namespace: "shop",
        name: "cart-7f9c4d-x2k8p",
        uid: &uid_a,
        cgroup_parent: &format!("/{prefix}/kubepods/burstable/pod{uid_a}"),
        log_dir: &logs.join("a"),
    };
    let pod_b = PodSpec {
        namespace: "kube-system",
        name: "coredns-6d4b75cb6d-qz8lm",
        uid: &uid_b,
        cgroup_parent: &format!("/{prefix}/kubepods/pod{uid_b}"),
        log_dir: &logs.join("b"),
    };
    let sandbox_a = node.run_pod(&pod_a);
    let ctr_a = node.cri.start_container(&sandbox_a, &pod_a, "cart", "exec sleep 3600");
    let sandbox_b = node.run_pod(&pod_b);
    let ctr_b = node.cri.start_container(&sandbox_b, &pod_b, "coredns", "exec sleep 3600");

    // The cgroupfs driver's container cgroup: `<cgroup_parent>/<container id>`.
    let cg_a = format!("{}/{ctr_a}", pod_a.cgroup_parent);
    let cg_b = format!("{}/{ctr_b}", pod_b.cgroup_parent);
    t.wait_event("cgroup_mkdir", |v| v["cgroup"] == cg_a.as_str());
    t.wait_event("cgroup_mkdir", |v| v["cgroup"] == cg_b.as_str());

    // A write into each container's cgroup once the pods run: named by the runtime.
    let procs_a = cgroup_file(&cg_a, "cgroup.procs");
    let task = std::fs::read_to_string(&procs_a).unwrap();
    let task = task.lines().next().expect("the container runs a process").to_string();
    let deadline = Instant::now() + Duration::from_secs(15);
    let named = loop {
        // Moving the container's own process into its own cgroup: a real write, no change.
        std::fs::write(&procs_a, &task).unwrap();
        let got = t.wait_for("the write to the container cgroup", Duration::from_secs(5), |v| {
            v["type"] == "event"
                && v["kind"] == "cgroup_write"
                && v["cgroup"] == cg_a.as_str()
                && v["pid"] == std::process::id()
        });
        if got["pod"].is_string() || Instant::now() > deadline {
            break got;
        }
        t.seen.retain(|v| v != &got);
        std::thread::sleep(Duration::from_millis(500));
    };
    eprintln!("{named}");
    assert_eq!(named["pod"], "shop/cart-7f9c4d-x2k8p", "{named}");
    assert_eq!(named["container"], "cart", "{named}");
    assert_eq!(named["pod_uid"], uid_a.as_str(), "{named}");

    // A finding about the pod's cgroup names it: a `systemd` stand-in (a copy of dash)
    // takes hugetlb (the controller cgroup v2 has free on this hybrid host) from the pod
    // cgroup's subtree_control in the v2 hierarchy, where the test enabled it down to it.
    let v2 = cgroup2_root();
    let pod_v2 = v2.join(pod_a.cgroup_parent.trim_start_matches('/'));
    std::fs::create_dir_all(&pod_v2).unwrap();
    let mut dir = v2.clone();
    for comp in pod_a.cgroup_parent.trim_start_matches('/').split('/') {
        std::fs::write(dir.join("cgroup.subtree_control"), "+hugetlb")
            .unwrap_or_else(|e| panic!("+hugetlb in {}: {e}", dir.display()));
        dir = dir.join(comp);
    }
    std::fs::write(pod_v2.join("cgroup.subtree_control"), "+hugetlb").unwrap();
    let systemd = node.dir.path.join("systemd");
    std::fs::copy("/bin/dash", &systemd).unwrap();
    run(
        systemd.to_str().unwrap(),
        &["-c", &format!("echo -hugetlb > {}/cgroup.subtree_control", pod_v2.display())],
    );
    let finding = t.wait_for("kubepods-controller-removed on pod a", Duration::from_secs(10), |v| {
        v["type"] == "finding" && v["id"] == "kubepods-controller-removed"
    });
    eprintln!("{finding}");
    assert_eq!(finding["pod"], "shop/cart-7f9c4d-x2k8p", "{finding}");
    assert_eq!(finding["pod_uid"], uid_a.as_str(), "{finding}");

    // Stopping the pods: the signals to their processes and the removal of their
    // cgroups name the pod (the runtime still lists them, or did a moment ago).
    node.cri.stop_pod(&sandbox_b);
    let kill = t.wait_event("signal", |v| v["target_cgroup"] == cg_b.as_str());
    assert_eq!(
        (kill["pod"].as_str(), kill["container"].as_str()),
        (Some("kube-system/coredns-6d4b75cb6d-qz8lm"), Some("coredns")),
        "{kill}"
    );
    node.cri.remove_pod(&sandbox_b);
    let rmdir = t.wait_event("cgroup_rmdir", |v| v["cgroup"] == cg_b.as_str());
    assert_eq!(rmdir["pod"], "kube-system/coredns-6d4b75cb6d-qz8lm", "{rmdir}");
    assert_eq!(rmdir["pod_uid"], uid_b.as_str(), "{rmdir}");

    t.stop();
    // Every event about either pod's cgroups carries its uid; none names the wrong pod.
    let about = |uid: &str| {
        let uid = uid.to_string();
        move |v: &Value| {
            v["cgroup"]
                .as_str()
                .or(v["target_cgroup"].as_str())
                .is_some_and(|c| c.contains(&format!("pod{uid}")))
        }
    };
    let (n_a, n_b) = (events(&t.seen, about(&uid_a)).count(), events(&t.seen, about(&uid_b)).count());
    assert!(n_a >= 3 && n_b >= 3, "events about pod a: {n_a}, b: {n_b}");
    for v in events(&t.seen, about(&uid_a)) {
        assert_eq!(v["pod_uid"], uid_a.as_str(), "{v}");
        assert!(v["pod"].is_null() || v["pod"] == "shop/cart-7f9c4d-x2k8p", "{v}");
    }
    for v in events(&t.seen, about(&uid_b)) {
        assert_eq!(v["pod_uid"], uid_b.as_str(), "{v}");
        assert!(v["pod"].is_null() || v["pod"] == "kube-system/coredns-6d4b75cb6d-qz8lm", "{v}");
    }
    // Events about nothing of kubelet's name no pod.
    for v in events(&t.seen, |v| v["pod"].is_string()) {
        let c = v["cgroup"].as_str().or(v["target_cgroup"].as_str()).unwrap_or("");
        assert!(c.contains(&uid_a) || c.contains(&uid_b), "a pod named on an event about {c}: {v}");
    }

    // Replay: the human lines name them, and --pod / --namespace select them.
    let rec = node.dir.path.join("rec.jsonl");
    let text: Vec<String> = t.seen.iter().map(|v| v.to_string()).collect();
    std::fs::write(&rec, text.join("\n") + "\n").unwrap();
    let human = replay(&rec, &["--pod", "shop/cart-7f9c4d-x2k8p"]);
    let fline = human
        .lines()
        .find(|l| l.contains("FINDING kubepods-controller-removed"))
        .unwrap_or_else(|| panic!("no finding in:\n{human}"));
    eprintln!("{fline}");
    assert!(fline.contains("pod=shop/cart-7f9c4d-x2k8p"), "{fline}");
    // The test's own write (named once the runtime listed the container).
    let line = human
        .lines()
        .find(|l| {
            l.contains("cgroup_write")
                && l.contains(&ctr_a)
                && l.contains(&format!(" pid={} ", std::process::id()))
        })
        .unwrap_or_else(|| panic!("no write line for pod a in:\n{human}"));
    eprintln!("{line}");
    assert!(line.contains("pod=shop/cart-7f9c4d-x2k8p container=cart"), "{line}");
    assert!(!human.contains("coredns"), "--pod shows only that pod:\n{human}");
    let json = replay(&rec, &["--json", "--namespace", "kube-system"]);
    let shown: Vec<Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &Value| v["type"] == "event")
        .collect();
    assert!(!shown.is_empty(), "--namespace kube-system shows pod b's events");
    assert!(shown.iter().all(|v| v["pod"].as_str().is_some_and(|p| p.starts_with("kube-system/"))), "{json}");
    drop(node);
}

#[test]
fn check_reads_the_runtime_over_cri_and_flags_kubelet_on_systemd_beside_it() {
    require_root();
    // kubelet configured for systemd beside the real containerd on cgroupfs.
    let node = ContainerdNode::start(false, "systemd", true);
    let out = run_out(tracer_bin().to_str().unwrap(), &["check", "--json", "--host-root", node.root()]);
    let c: Value = serde_json::from_str(&out).expect("check --json");
    let cri = &c["cri"];
    eprintln!("{cri:#}");
    assert_eq!(cri["runtime"]["name"], "containerd", "{cri}");
    assert!(cri["problem"].is_null(), "{cri}");
    // containerd 1.6 predates KEP-4033: its file is read instead, and said so.
    assert!(cri["runtime_config_cgroup_driver"].as_str().unwrap().contains("not implemented"), "{cri}");
    let d = &c["cgroup_drivers"];
    assert_eq!(
        (d["kubelet"]["driver"].as_str(), d["runtimes"][0]["driver"].as_str()),
        (Some("systemd"), Some("cgroupfs")),
        "{d}"
    );
    assert_eq!(d["mismatch"]["id"], "cgroup-driver-mismatch", "{d}");
    let human = run_out(tracer_bin().to_str().unwrap(), &["check", "--host-root", node.root()]);
    eprintln!("{human}");
    assert!(human.contains("CRI         containerd 1.6"), "{human}");
    assert!(
        human.contains("FINDING cgroup-driver-mismatch [warning]: kubelet uses the systemd cgroup driver"),
        "{human}"
    );
    drop(node);
    // The same runtime beside kubelet on cgroupfs: no finding.
    let node = ContainerdNode::start(false, "cgroupfs", true);
    let out = run_out(tracer_bin().to_str().unwrap(), &["check", "--json", "--host-root", node.root()]);
    let c: Value = serde_json::from_str(&out).unwrap();
    assert!(c["cgroup_drivers"]["mismatch"].is_null(), "{}", c["cgroup_drivers"]);
    assert_eq!(c["cri"]["pods"], 0, "{}", c["cri"]);
}
