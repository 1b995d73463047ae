//! Incident 1 with stand-ins: a kubepods controller removed by a process named systemd.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::*;

// ---------------------------------------------------------------------------------------
// 4. kubepods controller removal, with stand-ins for kubelet and systemd.

/// Restores the cgroup2 root's `cgroup.subtree_control` to what it was.
struct SubtreeControlGuard {
    file: PathBuf,
    before: Vec<String>,
}

impl SubtreeControlGuard {
    fn enable(root: &Path, controller: &str) -> SubtreeControlGuard {
        let file = root.join("cgroup.subtree_control");
        let before: Vec<String> = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("read {}: {e}", file.display()))
            .split_whitespace()
            .map(str::to_string)
            .collect();
        if !before.iter().any(|c| c == controller) {
            std::fs::write(&file, format!("+{controller}"))
                .unwrap_or_else(|e| panic!("enable {controller} in {}: {e}", file.display()));
        }
        SubtreeControlGuard { file, before }
    }
}

impl Drop for SubtreeControlGuard {
    fn drop(&mut self) {
        let now: Vec<String> = std::fs::read_to_string(&self.file)
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect();
        let off: Vec<String> =
            now.iter().filter(|c| !self.before.contains(c)).map(|c| format!("-{c}")).collect();
        let on: Vec<String> =
            self.before.iter().filter(|c| !now.contains(c)).map(|c| format!("+{c}")).collect();
        for v in off.iter().chain(on.iter()) {
            if let Err(e) = std::fs::write(&self.file, v) {
                eprintln!("warning: could not restore {} ({v}): {e}", self.file.display());
            }
        }
    }
}

/// A copy of the shell named like the component it stands in for, so that exe and comm
/// say `kubelet` or `systemd`.
fn stand_in(dir: &TempDir, name: &str) -> PathBuf {
    let p = dir.path.join(name);
    std::fs::copy("/bin/dash", &p).unwrap_or_else(|e| panic!("copy /bin/dash to {}: {e}", p.display()));
    p
}

/// Runs `script` with the stand-in `exe` (`exe -c script`), returns its stdout.
fn stand_in_run(exe: &Path, script: &str) -> String {
    run_out(exe.to_str().unwrap(), &["-c", script])
}

/// The controller that cgroup v2 has free on this machine (the v1 hierarchies hold the
/// others; they are never rebound). The detector handles `cpuset` the same way: kubelet
/// requires cpu, cpuset, memory, hugetlb and pids alike (correlator/kubepods.rs `REQUIRED`).
pub const KUBEPODS_CONTROLLER: &str = "hugetlb";

/// Incident 1 of DESIGN.md with stand-ins: a `kubelet` builds a kubepods tree in cgroup
/// v2 under a unique prefix (`/<prefix>/kubepods.slice/kubepods-burstable.slice/
/// kubepods-burstable-pod<uid>.slice`), enables the controller down to the QoS slice and
/// starts a process in the pod; a `systemd` started by the same parent writes
/// `-<controller>` on the burstable slice; kubelet SIGKILLs the pod's process, removes the
/// pod cgroup and writes `+<controller>` back. Steps:
/// - `kubepods/removed` (the finding, actor systemd, right away);
/// - `kubepods/aftermath` (kill, rmdir and restore done: the window's follow-up finding
///   comes when the window closes, at the latest when tracer stops).
pub fn kubepods(obs: Observer) {
    let ctl = KUBEPODS_CONTROLLER;
    let root = cgroup2_root();
    let available = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
    assert!(
        available.split_whitespace().any(|c| c == ctl),
        "cgroup v2 at {} has no {ctl} controller (has: {available}); the kubepods scenario needs one it may enable",
        root.display()
    );
    let bin = TempDir::new("standins");
    let kubelet = stand_in(&bin, "kubelet");
    let systemd = stand_in(&bin, "systemd");

    // Restored last (declared first): the prefix must be gone before the root's
    // subtree_control can drop the controller again.
    let _root_ctl = SubtreeControlGuard::enable(&root, ctl);
    let prefix = CgroupGuard::new(&root, &unique("kp"));
    let uid = "8a3e1d2c-5b7f-4c9a-9e0d-1f2a3b4c5d6e";
    let qos_rel = format!("{}/kubepods.slice/kubepods-burstable.slice", prefix.rel);
    let pod_rel = format!("{qos_rel}/kubepods-burstable-pod{}.slice", uid.replace('-', "_"));
    let abs = |rel: &str| root.join(rel.trim_start_matches('/'));
    let (qos, pod) = (abs(&qos_rel), abs(&pod_rel));

    // kubelet: the tree, the controller down to the QoS slice, a "container" in the pod.
    let script = format!(
        "set -e; mkdir -p {pod}; \
         for c in {p} {p}/kubepods.slice {qos}; do echo +{ctl} > $c/cgroup.subtree_control; done; \
         sleep 600 </dev/null >/dev/null 2>&1 & echo $! > {pod}/cgroup.procs; echo $!",
        pod = pod.display(),
        p = prefix.path.display(),
        qos = qos.display(),
    );
    let victim: u32 = stand_in_run(&kubelet, &script).trim().parse().expect("pid of the pod's process");
    // The pod's process is ours: make sure it ends whatever happens next.
    // It is killed on drop only while it is still in this scenario's cgroup: once it is
    // gone its pid may belong to someone else's process.
    struct Kill(u32, String);
    impl Drop for Kill {
        fn drop(&mut self) {
            let ours = std::fs::read_to_string(format!("/proc/{}/cgroup", self.0))
                .is_ok_and(|c| c.contains(&self.1));
            if ours {
                // SAFETY: a process this scenario started, still in its own cgroup.
                unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
            }
        }
    }
    let _victim = Kill(victim, prefix.rel.clone());
    let controllers = std::fs::read_to_string(pod.join("cgroup.controllers")).unwrap();
    assert!(controllers.contains(ctl), "kubelet's pod cgroup has no {ctl}: {controllers}");

    // systemd realizes the slice and rewrites its subtree_control without the controller.
    let sd_script = format!("echo -{ctl} > {}/cgroup.subtree_control; echo $$", qos.display());
    let sd_pid: u32 = stand_in_run(&systemd, &sd_script).trim().parse().unwrap();
    let at = Some(Instant::now());
    let controllers = std::fs::read_to_string(pod.join("cgroup.controllers")).unwrap();
    assert!(!controllers.contains(ctl), "{ctl} still in the pod's controllers: {controllers}");
    obs(&Step {
        id: "kubepods/removed",
        text: format!("systemd wrote -{ctl} to cgroup.subtree_control of {qos_rel}"),
        expect: Some("kubepods-controller-removed"),
        actor: Some("systemd"),
        pid: Some(sd_pid),
        cgroup: Some(qos_rel.clone()),
        extra: vec![("controller", ctl.into()), ("pod_uid", uid.into()), ("pod", pod_rel.clone())],
        at,
        ..Default::default()
    });

    // kubelet: Validate() fails, the pod is killed and its cgroup removed; the controller
    // is written back.
    let script = format!(
        "kill -KILL {victim}; while kill -0 {victim} 2>/dev/null; do sleep 0.05; done; \
         for i in $(seq 100); do rmdir {pod} 2>/dev/null && break; sleep 0.05; done; \
         echo +{ctl} > {qos}/cgroup.subtree_control",
        pod = pod.display(),
        qos = qos.display(),
    );
    // The victim is a child of the first kubelet (gone): it is reaped by the subreaper or
    // init; `kill -0` succeeds on a zombie, so wait on its cgroup instead.
    let script = script.replace(
        &format!("while kill -0 {victim} 2>/dev/null; do sleep 0.05; done; "),
        &format!("while [ -s {}/cgroup.procs ]; do sleep 0.05; done; ", pod.display()),
    );
    stand_in_run(&kubelet, &script);
    assert!(!pod.exists(), "kubelet could not remove the pod cgroup");
    obs(&Step {
        id: "kubepods/aftermath",
        text: format!("kubelet killed the pod's process, removed {pod_rel} and wrote +{ctl} back"),
        expect: Some("kubepods-controller-removed"),
        actor: Some("systemd"),
        pid: Some(sd_pid),
        cgroup: Some(qos_rel.clone()),
        extra: vec![
            ("controller", ctl.into()),
            ("pod_uid", uid.into()),
            ("pod", pod_rel.clone()),
            ("victim", victim.to_string()),
        ],
        at: Some(Instant::now()),
        ..Default::default()
    });
    drop(prefix);
}
