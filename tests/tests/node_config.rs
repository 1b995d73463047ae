//! The cgroup-driver mismatch before it bites: `tracer check` and the first lines of
//! `tail` read kubelet's and the container runtime's configuration from the node's
//! files (`--host-root`, here a directory of the test's own holding this machine's real
//! `/etc/containerd/config.toml` from Debian's containerd package, which leaves
//! `SystemdCgroup` unset: cgroupfs) and flag a kubelet configured for systemd beside
//! it; kubelet on cgroupfs beside the same file is no finding.

use std::path::Path;

use serde_json::Value;
use tracer_tests::*;

/// A node root with the real containerd configuration and a kubelet config.yaml.
fn node_root(kubelet_driver: &str) -> TempDir {
    let dir = TempDir::new("node");
    let real = std::fs::read_to_string("/etc/containerd/config.toml")
        .expect("Debian's containerd package installs /etc/containerd/config.toml");
    assert!(!real.contains("SystemdCgroup = true"), "this machine's containerd uses systemd already");
    dir.write("etc/containerd/config.toml", &real);
    dir.write(
        "var/lib/kubelet/config.yaml",
        &format!(
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\ncgroupDriver: {kubelet_driver}\n"
        ),
    );
    dir
}

fn check(root: &Path) -> Value {
    let out =
        run_out(tracer_bin().to_str().unwrap(), &["check", "--json", "--host-root", root.to_str().unwrap()]);
    serde_json::from_str(&out).expect("check --json")
}

#[test]
fn check_and_tail_flag_kubelet_systemd_beside_containerd_cgroupfs() {
    require_root();
    let node = node_root("systemd");
    let c = check(&node.path);
    let d = &c["cgroup_drivers"];
    eprintln!("{d:#}");
    assert_eq!(d["kubelet"]["driver"], "systemd", "{d}");
    assert_eq!(d["runtimes"][0]["component"], "containerd", "{d}");
    assert_eq!(d["runtimes"][0]["driver"], "cgroupfs", "{d}");
    let f = &d["mismatch"];
    assert_eq!(f["id"], "cgroup-driver-mismatch", "{d}");
    let summary = f["summary"].as_str().unwrap();
    assert!(summary.contains("/var/lib/kubelet/config.yaml: cgroupDriver"), "{summary}");
    assert!(summary.contains("/etc/containerd/config.toml"), "{summary}");
    assert!(f["remediation"].as_str().unwrap().contains("SystemdCgroup = true"), "{f}");
    let files: Vec<&str> =
        f["details"]["files"].as_array().unwrap().iter().filter_map(|v| v.as_str()).collect();
    assert_eq!(files.len(), 2, "both files named: {files:?}");

    // The human report says it too.
    let human =
        run_out(tracer_bin().to_str().unwrap(), &["check", "--host-root", node.path.to_str().unwrap()]);
    assert!(
        human.contains("FINDING cgroup-driver-mismatch [warning]: kubelet uses the systemd cgroup driver"),
        "{human}"
    );

    // `tail` says it first, before any change, and a recording replays it.
    let root = node.path.to_str().unwrap().to_string();
    let mut t = Tracer::start(&["tail", "--json", "--host-root", &root]);
    let first =
        t.wait_for("the config finding", std::time::Duration::from_secs(5), |v| v["type"] == "finding");
    assert_eq!(first["id"], "cgroup-driver-mismatch", "{first}");
    assert_eq!(first["actor"], "config", "{first}");
    assert_eq!(t.stop(), 0);
    let dir = TempDir::new("replay");
    let mut text = format!("{}\n", t.header);
    for v in &t.seen {
        text.push_str(&format!("{v}\n"));
    }
    let file = dir.write("recording.jsonl", &text);
    let replay =
        run_out(tracer_bin().to_str().unwrap(), &["replay", "--color", "never", file.to_str().unwrap()]);
    assert!(replay.contains("config           FINDING cgroup-driver-mismatch [warning]"), "{replay}");
}

#[test]
fn kubelet_cgroupfs_beside_containerd_cgroupfs_is_no_finding() {
    require_root();
    let node = node_root("cgroupfs");
    let c = check(&node.path);
    let d = &c["cgroup_drivers"];
    assert_eq!(d["kubelet"]["driver"], "cgroupfs", "{d}");
    assert!(d["mismatch"].is_null(), "{d}");
    let mut t = Tracer::start(&["tail", "--json", "--host-root", node.path.to_str().unwrap()]);
    // A change of our own right after start: everything before it has been printed.
    let cg = CgroupGuard::new(&cgroup2_root(), &unique("cfg"));
    sh(&format!("echo 5 > {}", cg.path.join("cgroup.max.descendants").display()));
    t.wait_event("cgroup_write", |v| v["cgroup"] == cg.rel.as_str());
    let findings: Vec<&Value> = t.seen.iter().filter(|v| v["id"] == "cgroup-driver-mismatch").collect();
    assert!(findings.is_empty(), "{findings:?}");
    assert_eq!(t.stop(), 0);
}
