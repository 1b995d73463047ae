//! The incidents with the real culprits on real nodes: these tests run inside the VM
//! suite (`cargo xtask vm`), where the real systemd 252 is PID 1 on pure cgroup v2 with
//! D-Bus and udev running, on Debian's 6.1 and 6.12 kernels. On any other machine they
//! are `#[ignore]`d with that reason (the stand-in versions in `incidents.rs` run there);
//! the guest runs them with `--ignored`, and one that finds itself outside such a node
//! fails saying so.
//!
//! Inside the VM anything goes (it is ours and powers off after the suite), but each test
//! still removes what it made so that the next one starts from a clean node.

use std::path::Path;

use tracer_tests::*;

/// PID 1 must be the real systemd and the cgroup2 root must offer the controllers
/// kubelet requires; otherwise the tests below would prove nothing.
fn require_real_node() {
    require_root();
    let init = std::fs::read_link("/proc/1/exe").unwrap_or_default();
    assert!(
        init.to_string_lossy().ends_with("/systemd"),
        "PID 1 is {init:?}, not systemd: these tests run in the VM suite (cargo xtask vm)"
    );
    let controllers = std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers").unwrap_or_default();
    for c in ["cpuset", "cpu", "memory", "pids"] {
        assert!(controllers.split_whitespace().any(|x| x == c), "cgroup2 root lacks {c}: {controllers}");
    }
    assert!(
        !Path::new("/sys/fs/cgroup/unified").exists(),
        "a hybrid hierarchy: the VM suite boots with cgroup_no_v1=all"
    );
}

#[test]
#[ignore = "runs in the VM suite with systemd as PID 1: cargo xtask vm"]
fn the_node_is_real_systemd_on_pure_cgroup2() {
    require_real_node();
    let v = run_out("systemctl", &["--version"]);
    assert!(v.starts_with("systemd 2"), "{v}");
}
