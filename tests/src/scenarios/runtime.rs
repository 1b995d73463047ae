//! The real container runtimes (runc, containerd with ctr) making cgroups, attributed.

use std::path::PathBuf;
use std::time::Instant;

use super::network::Sandbox;
use super::*;

// ---------------------------------------------------------------------------------------
// 3. A container runtime creates, writes and removes container cgroups.

pub const RUNC: &str = "/usr/sbin/runc";

/// `runc delete --force` of a container, whatever happened.
struct RuncContainerGuard {
    state: PathBuf,
    id: String,
}

impl Drop for RuncContainerGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new(RUNC)
            .args(["--root", self.state.to_str().unwrap(), "delete", "--force", &self.id])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// A busybox rootfs in `dir/rootfs`.
fn busybox_rootfs(dir: &TempDir) -> PathBuf {
    let busybox = require_exe("/usr/bin/busybox", "busybox-static");
    let rootfs = dir.path.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    for d in ["proc", "dev", "sys", "tmp", "etc"] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    std::fs::copy(&busybox, rootfs.join("bin/busybox")).unwrap();
    for applet in ["sh", "sleep", "cat", "echo"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    rootfs
}

/// The real runc runs a busybox container whose cgroup (`linux.cgroupsPath`, cgroupfs
/// driver) is `/<prefix>/<id>`, with a pids limit and CPU shares so that runc writes
/// them; `runc run` in the foreground creates the cgroups in every hierarchy, writes the
/// limits and `cgroup.procs`, and removes them when the container exits. Step `runc/run`.
pub fn runc(obs: Observer) {
    require_exe(RUNC, "runc");
    let dir = TempDir::new("runc");
    busybox_rootfs(&dir);
    let state = dir.path.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let bundle = dir.path.to_str().unwrap();
    run_out(RUNC, &["spec", "--bundle", bundle]);
    let prefix = unique("rt");
    let _prefix = CgroupPrefixGuard(prefix.clone());
    let id = unique("ctr");
    let cgroup = format!("/{prefix}/{id}");
    let config = dir.path.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    spec["process"]["terminal"] = false.into();
    spec["process"]["args"] = serde_json::json!(["sh", "-c", "echo hello from the container; sleep 0.2"]);
    spec["root"]["readonly"] = true.into();
    spec["hostname"] = "tracer-test".into();
    spec["linux"]["cgroupsPath"] = cgroup.clone().into();
    spec["linux"]["resources"]["pids"] = serde_json::json!({ "limit": 64 });
    spec["linux"]["resources"]["cpu"] = serde_json::json!({ "shares": 512 });
    std::fs::write(&config, serde_json::to_string_pretty(&spec).unwrap()).unwrap();

    let _container = RuncContainerGuard { state: state.clone(), id: id.clone() };
    let child = std::process::Command::new(RUNC)
        .args(["--root", state.to_str().unwrap(), "run", "--bundle", bundle, &id])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn runc");
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "runc run failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("hello from the container"));
    obs(&Step {
        id: "runc/run",
        text: format!("runc ran container {id} in cgroup {cgroup} and removed it"),
        expect: None,
        actor: Some("runc"),
        pid: Some(pid),
        cgroup: Some(cgroup),
        extra: vec![("prefix", format!("/{prefix}"))],
        at: Some(Instant::now()),
        ..Default::default()
    });
}

pub const CONTAINERD: &str = "/usr/bin/containerd";

/// The real containerd (private root, state, socket and /run; no CRI plugin, no
/// registry) runs a busybox container with `ctr run --rootfs --cgroup /<prefix>/<id>`:
/// containerd starts its runc shim, the shim runs runc, runc creates, writes and removes
/// the container's cgroups. Step `containerd/run`.
pub fn containerd(obs: Observer) {
    require_exe(CONTAINERD, "containerd");
    require_exe("/usr/bin/ctr", "containerd");
    require_exe("/usr/bin/containerd-shim-runc-v2", "containerd");
    require_exe(RUNC, "runc");
    let dir = TempDir::new("containerd");
    let rootfs = busybox_rootfs(&dir);
    let prefix = unique("rt");
    let _prefix = CgroupPrefixGuard(prefix.clone());
    let id = unique("ctr");
    let cgroup = format!("/{prefix}/{id}");
    let d = dir.path.display();
    dir.write(
        "config.toml",
        &format!(
            "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{d}/containerd.sock\"\n"
        ),
    );
    let script = format!(
        r#"set -e
mount -t tmpfs -o mode=755 tmpfs /run
{CONTAINERD} --config {d}/config.toml >{d}/containerd.log 2>&1 &
for i in $(seq 100); do ctr --address {d}/containerd.sock version >/dev/null 2>&1 && break; sleep 0.1; done
echo READY
ctr --address {d}/containerd.sock run --rm --cgroup {cgroup} --rootfs {rootfs} {id} /bin/sh -c 'echo hello from the container; sleep 0.2'
echo DONE
kill $! || true
wait || true
echo BYE
"#,
        rootfs = rootfs.display()
    );
    let mut sb = Sandbox::start(None, &script);
    sb.expect("READY");
    let pid = sb.child.pid();
    sb.expect("DONE");
    obs(&Step {
        id: "containerd/run",
        text: format!("containerd + ctr ran container {id} in cgroup {cgroup} and removed it"),
        expect: None,
        actor: Some("runc"),
        pid: Some(pid),
        cgroup: Some(cgroup),
        extra: vec![("prefix", format!("/{prefix}"))],
        at: Some(Instant::now()),
        ..Default::default()
    });
    sb.expect("BYE");
}
