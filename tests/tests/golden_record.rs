//! Records the golden traces of `tracer-user/testdata/golden/` (issue 3): the real
//! `tracer record` runs while an incident scenario plays on this kernel, and what it
//! wrote is kept as `<scenario>.jsonl`. `tracer-user/tests/golden.rs` replays them
//! through the correlator and compares the findings with `<scenario>.expected.json`,
//! which are written by hand from the incidents, not from these files.
//!
//! Not part of the normal test run (it rewrites files in the source tree): run it with
//! `cargo xtask golden` (as root), or
//! `TRACER_BIN=... cargo test --release -p tracer-tests --test golden_record -- --ignored --test-threads=1 --nocapture`.
//! `GOLDEN_ONLY=name,name` records only those scenarios; `GOLDEN_DIR` writes elsewhere.
//!
//! Each recording is filtered by kind with `--kind` (the scenario's kinds), then cut to
//! the scenario's own cgroup prefix or network namespace (whatever else this node did
//! meanwhile is not part of the scenario), so the files stay a few KB. Nothing else is
//! stripped or edited: events, findings and stats lines are as the tracer wrote them.
//! Findings recorded live are kept when all their evidence is kept (replay ignores them;
//! they document what the live tracer said).

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tracer_tests::scenarios::{self, Step};
use tracer_tests::*;

/// A running `tracer record`, SIGKILLed on drop if still running.
struct Recorder(Child);

impl Recorder {
    fn start(out: &Path, kinds: &str) -> Recorder {
        require_root();
        let mut child = Command::new(tracer_bin())
            .args(["record", "-o", out.to_str().unwrap(), "--kind", kinds])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tracer record");
        let err = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("[record] {line}");
                if line.contains("recording to") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(60)).expect("tracer record did not start within 60 s");
        std::thread::sleep(Duration::from_millis(200));
        Recorder(child)
    }

    fn stop(mut self) {
        // A moment for the last events to leave the ring buffer is not needed (SIGTERM
        // drains it), but the kubepods window and networkd's late deletions are.
        std::thread::sleep(Duration::from_millis(500));
        // SAFETY: our own child, by pid.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let st = self.0.wait().unwrap();
        assert!(st.success(), "tracer record exited with {st}");
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            // SAFETY: our own child, by pid.
            unsafe { libc::kill(self.0.id() as i32, libc::SIGKILL) };
            let _ = self.0.wait();
        }
    }
}

/// What part of a recording belongs to a scenario.
#[derive(Debug, Clone)]
enum Scope {
    /// Cgroup events under this prefix (signals: by the target's cgroup).
    Cgroup(String),
    /// Events in this network namespace.
    Netns(u64),
}

impl Scope {
    fn of(steps: &[Step]) -> Scope {
        let s = steps.first().expect("the scenario made no step");
        if let Some(ns) = s.netns {
            return Scope::Netns(ns);
        }
        if let Some((_, p)) = s.extra.iter().find(|(k, _)| *k == "prefix") {
            return Scope::Cgroup(p.clone());
        }
        let cg = s.cgroup.as_deref().expect("step names neither a netns nor a cgroup");
        let first = cg.trim_start_matches('/').split('/').next().unwrap();
        Scope::Cgroup(format!("/{first}"))
    }

    fn keeps(&self, ev: &Value) -> bool {
        let under = |p: &Value, prefix: &str| {
            p.as_str().is_some_and(|p| p == prefix || p.starts_with(&format!("{prefix}/")))
        };
        match self {
            Scope::Cgroup(prefix) => {
                under(&ev["cgroup"], prefix)
                    || (ev["kind"] == "signal" && under(&ev["target_cgroup"], prefix))
            }
            Scope::Netns(ns) => ev["netns"].as_u64() == Some(*ns),
        }
    }
}

/// Cuts a recording to the scenario's scope; returns the kept lines.
fn cut(raw: &str, scope: &Scope) -> (Vec<String>, usize) {
    let mut kept = Vec::new();
    let mut seqs = HashSet::new();
    let mut events = 0;
    for line in raw.lines() {
        let v: Value = serde_json::from_str(line).expect("recording line is JSON");
        let keep = match v["type"].as_str() {
            Some("header") | Some("stats") => true,
            Some("event") => {
                let k = scope.keeps(&v);
                if k {
                    seqs.insert(v["seq"].as_u64().unwrap());
                    events += 1;
                }
                k
            }
            Some("finding") => v["evidence"].as_array().is_some_and(|e| {
                !e.is_empty() && e.iter().all(|s| s.as_u64().is_some_and(|s| seqs.contains(&s)))
            }),
            _ => false,
        };
        if keep {
            kept.push(line.to_string());
        }
    }
    (kept, events)
}

fn golden_dir() -> PathBuf {
    std::env::var_os("GOLDEN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../tracer-user/testdata/golden"))
}

const CGROUP_KINDS: &str = "cgroup_write,cgroup_mkdir,cgroup_rmdir,signal";
const NET_KINDS: &str = "sysctl_write,route_delete,rule_delete,addr_delete,link_delete,link_set";

type Scenario = fn(&mut dyn FnMut(&Step));

/// The golden scenarios: name, kinds recorded, the scenario.
fn all() -> Vec<(&'static str, &'static str, Scenario)> {
    vec![
        ("rp_filter", NET_KINDS, scenarios::rp_filter),
        ("rp_filter_never_set", NET_KINDS, scenarios::rp_filter_never_set),
        ("kubepods", CGROUP_KINDS, scenarios::kubepods),
        ("kubepods_legit", CGROUP_KINDS, own::kubepods_legit),
        ("driver_mismatch", CGROUP_KINDS, own::driver_mismatch),
        ("runc", CGROUP_KINDS, scenarios::runc),
        ("networkd_rules", NET_KINDS, |o: &mut dyn FnMut(&Step)| {
            scenarios::networkd(scenarios::Networkd { manage_foreign: true, catch_all: false }, o)
        }),
        ("networkd_catch_all", NET_KINDS, |o: &mut dyn FnMut(&Step)| {
            scenarios::networkd(scenarios::Networkd { manage_foreign: true, catch_all: true }, o)
        }),
        ("networkd_fixed", NET_KINDS, |o: &mut dyn FnMut(&Step)| {
            scenarios::networkd(scenarios::Networkd { manage_foreign: false, catch_all: false }, o)
        }),
    ]
}

#[test]
#[ignore = "rewrites tracer-user/testdata/golden: run with `cargo xtask golden`"]
fn record_golden_traces() {
    let only: Option<Vec<String>> = std::env::var("GOLDEN_ONLY")
        .ok()
        .filter(|s| !s.is_empty())
        .map(|s| s.split(',').map(str::to_string).collect());
    let dir = golden_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let tmp = TempDir::new("golden");
    let mut done = 0;
    for (name, kinds, scenario) in all() {
        if only.as_ref().is_some_and(|o| !o.iter().any(|n| n == name)) {
            continue;
        }
        let started = Instant::now();
        let raw_path = tmp.path.join(format!("{name}.jsonl"));
        let rec = Recorder::start(&raw_path, kinds);
        let mut steps = Vec::new();
        scenario(&mut |s: &Step| {
            eprintln!("{name}: step {}: {}", s.id, s.text.lines().next().unwrap_or(""));
            steps.push(s.clone());
        });
        rec.stop();
        let raw = std::fs::read_to_string(&raw_path).unwrap();
        let scope = Scope::of(&steps);
        let (kept, events) = cut(&raw, &scope);
        assert!(events > 0, "{name}: no event of the scenario was recorded ({scope:?})");
        let out = dir.join(format!("{name}.jsonl"));
        let text = kept.join("\n") + "\n";
        std::fs::write(&out, &text).unwrap();
        eprintln!(
            "{name}: {} ({events} events of {} lines recorded, {} bytes, {scope:?}) in {:?}",
            out.display(),
            raw.lines().count(),
            text.len(),
            started.elapsed()
        );
        done += 1;
    }
    assert!(
        done > 0,
        "GOLDEN_ONLY={only:?} names no scenario; scenarios: {:?}",
        all().iter().map(|s| s.0).collect::<Vec<_>>()
    );
}

/// Scenarios of the golden set that `tracer_tests::scenarios` does not have.
mod own {
    use super::*;
    use std::path::Path;

    /// A copy of the shell named like the component it stands in for.
    fn stand_in(dir: &TempDir, name: &str) -> PathBuf {
        let p = dir.path.join(name);
        std::fs::copy("/bin/dash", &p).unwrap_or_else(|e| panic!("copy /bin/dash to {}: {e}", p.display()));
        p
    }

    fn as_(exe: &Path, script: &str) -> String {
        run_out(exe.to_str().unwrap(), &["-c", script])
    }

    /// Enables a controller in the cgroup2 root's subtree_control for the scenario and
    /// restores what was there.
    struct RootController {
        file: PathBuf,
        ctl: &'static str,
        added: bool,
    }

    impl RootController {
        fn enable(ctl: &'static str) -> RootController {
            let file = cgroup2_root().join("cgroup.subtree_control");
            let before = std::fs::read_to_string(&file).unwrap();
            let added = !before.split_whitespace().any(|c| c == ctl);
            if added {
                std::fs::write(&file, format!("+{ctl}"))
                    .unwrap_or_else(|e| panic!("+{ctl} in {}: {e}", file.display()));
            }
            RootController { file, ctl, added }
        }
    }

    impl Drop for RootController {
        fn drop(&mut self) {
            if self.added {
                if let Err(e) = std::fs::write(&self.file, format!("-{}", self.ctl)) {
                    eprintln!("warning: could not restore {} (-{}): {e}", self.file.display(), self.ctl);
                }
            }
        }
    }

    /// Negative for `kubepods-controller-removed`: the legitimate owner and an unrelated
    /// cgroup. A `kubelet` builds a kubepods tree under a unique prefix and enables the
    /// controller down to the QoS slice; kubelet itself removes it from the QoS slice and
    /// puts it back (its own cgroup manager); a `systemd` removes it from a non-kubepods
    /// slice (`<prefix>/system.slice`). Neither is the incident.
    pub fn kubepods_legit(obs: &mut dyn FnMut(&Step)) {
        let ctl = scenarios::KUBEPODS_CONTROLLER;
        let bin = TempDir::new("standins");
        let kubelet = stand_in(&bin, "kubelet");
        let systemd = stand_in(&bin, "systemd");
        let root = cgroup2_root();
        let _root_ctl = RootController::enable(ctl);
        let prefix = CgroupGuard::new(&root, &unique("kl"));
        let qos = prefix.path.join("kubepods.slice/kubepods-burstable.slice");
        let sys = prefix.path.join("system.slice/foo.service");
        let p = prefix.path.display();
        as_(
            &kubelet,
            &format!(
                "set -e; mkdir -p {q} {s}; for c in {p} {p}/kubepods.slice {p}/system.slice; do echo +{ctl} > $c/cgroup.subtree_control; done",
                q = qos.display(),
                s = sys.display()
            ),
        );
        as_(
            &kubelet,
            &format!("set -e; echo +{ctl} > {q}/cgroup.subtree_control; echo -{ctl} > {q}/cgroup.subtree_control; echo +{ctl} > {q}/cgroup.subtree_control", q = qos.display()),
        );
        obs(&Step {
            id: "kubepods_legit/kubelet",
            text: format!("kubelet wrote +{ctl}, -{ctl}, +{ctl} on its own QoS slice"),
            expect: None,
            actor: Some("kubelet"),
            cgroup: Some(format!("{}/kubepods.slice/kubepods-burstable.slice", prefix.rel)),
            ..Default::default()
        });
        as_(&systemd, &format!("set -e; echo -{ctl} > {p}/system.slice/cgroup.subtree_control"));
        obs(&Step {
            id: "kubepods_legit/unrelated",
            text: format!("systemd wrote -{ctl} on {}/system.slice (not kubepods)", prefix.rel),
            expect: None,
            actor: Some("systemd"),
            cgroup: Some(format!("{}/system.slice", prefix.rel)),
            ..Default::default()
        });
        drop(prefix);
    }

    /// `cgroup-driver-mismatch`: a `kubelet` manages a kubepods tree (systemd driver
    /// naming) under a unique prefix; a `containerd` on the cgroupfs driver takes the
    /// systemd-style cgroupsPath literally and creates the container's cgroup as
    /// `<prefix>/system.slice/kubepods-besteffort-pod<uid>.slice:cri-containerd:<id>`,
    /// outside the pod slice. Also a container cgroup created correctly inside the pod
    /// slice, which is no finding.
    pub fn driver_mismatch(obs: &mut dyn FnMut(&Step)) {
        let bin = TempDir::new("standins");
        let kubelet = stand_in(&bin, "kubelet");
        // containerd makes the cgroup directories itself (no helper process): a copy of
        // mkdir named `containerd` has its exe and comm.
        let containerd = bin.path.join("containerd");
        std::fs::copy("/bin/mkdir", &containerd).expect("copy /bin/mkdir");
        let root = cgroup2_root();
        let prefix = CgroupGuard::new(&root, &unique("dm"));
        let uid = "3f1c9a7e_22b4_4d1e_9b8a_6c5d4e3f2a1b";
        let id = "4b825dc642cb6eb9a060e54bf8d69288fbee4904b825dc642cb6eb9a060e54b";
        let pod = format!("kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid}.slice");
        let p = prefix.path.display();
        as_(&kubelet, &format!("set -e; mkdir -p {p}/{pod} {p}/system.slice"));
        let wrong = format!("system.slice/kubepods-besteffort-pod{uid}.slice:cri-containerd:{id}");
        let right = format!("{pod}/cri-containerd-{}.scope", &id[..12]);
        run(containerd.to_str().unwrap(), &[&format!("{p}/{right}")]);
        run(containerd.to_str().unwrap(), &[&format!("{p}/{wrong}")]);
        obs(&Step {
            id: "driver_mismatch/mkdir",
            text: format!(
                "containerd created {}/{wrong} (outside the pod slice) and {}/{right}",
                prefix.rel, prefix.rel
            ),
            expect: Some("cgroup-driver-mismatch"),
            actor: Some("containerd"),
            cgroup: Some(format!("{}/{wrong}", prefix.rel)),
            extra: vec![("pod_uid", uid.replace('_', "-"))],
            ..Default::default()
        });
        drop(prefix);
    }
}
