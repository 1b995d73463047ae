//! What lived below a cgroup whose `cgroup.subtree_control` just lost a controller
//! ([`Below`]): the pods below it, which of them run, and whether any process is there.
//!
//! Why: losing a controller hurts only the cgroups below. The real systemd 252 as PID 1
//! trims what no unit below needs when the last container of a pod goes (all of the pod
//! slice's controllers, `cpuset` from the QoS slice and `kubepods.slice`: seen in the VM
//! suite with the real containerd on the systemd driver); nothing that runs loses
//! anything, and kubelet re-enables what it requires on the path of the next pod it
//! creates (libcontainer fs2 `CreateCgroupPath`). The same write with a running pod below
//! is incident 1. "Running" must see the driver mismatch too: there the pod slice is empty
//! and the pod's processes sit in container cgroups outside kubepods that name its uid.
//!
//! The tree is read from the cgroup2 mount just after the write (the write's event is
//! built once its result is in), so the answer is recorded in the event and replays the
//! same. One walk serves a whole burst: it is kept until a cgroup is made or removed, or
//! for [`FRESH`].

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::correlator::kube::{self, Level};
use crate::correlator::kubepods;
use crate::stream::schema::{Below, Event, Kind};

/// How long one walk answers for (systemd realizes a slice tree in a few milliseconds).
const FRESH: Duration = Duration::from_millis(100);

/// Directories one walk reads at most (a node has a few thousand cgroups).
const MAX_DIRS: usize = 32_768;

/// The pods of the cgroup2 tree, as one walk found them.
#[derive(Debug, Default)]
struct Tree {
    /// (path, uid, populated) of every pod cgroup in kubepods.
    pods: Vec<(String, String, bool)>,
    /// uids named by a populated container cgroup outside kubepods.
    running_outside: HashSet<String>,
    partial: bool,
}

/// Looks below cgroups on the host's cgroup2 mount.
#[derive(Debug)]
pub struct Looker {
    root: PathBuf,
    walked: Option<(Instant, Tree)>,
}

impl Looker {
    pub fn new(cgroup2_root: PathBuf) -> Self {
        Looker { root: cgroup2_root, walked: None }
    }

    /// Fills `ev.below` for a `subtree_control` write that removed a controller; forgets
    /// the last walk when a cgroup was made or removed.
    pub fn annotate(&mut self, ev: &mut Event) {
        match ev.kind {
            Kind::CgroupMkdir | Kind::CgroupRmdir => self.walked = None,
            // Only a whole host-absolute path can be looked up (not a truncated tail, not
            // `?`): otherwise `below` stays unknown and the removal counts.
            Kind::CgroupWrite if removed_controller(ev) && !ev.path_truncated => {
                if let Some(cg) = ev.cgroup.as_deref().filter(|c| c.starts_with('/')) {
                    ev.below = self.below(cg).map(Box::new);
                }
            }
            _ => {}
        }
    }

    /// What lives below `cg` (host-absolute), or `None` when it cannot be read.
    pub fn below(&mut self, cg: &str) -> Option<Below> {
        let dir = self.root.join(cg.trim_start_matches('/'));
        if !dir.exists() {
            // Removed since the write (its parent is still there, so this mount does show
            // the host's tree): only an empty cgroup can be removed, so nothing ran below
            // it any more (systemd stopping a slice trims it, then removes it).
            let parent_seen = dir.parent().is_some_and(|p| p != self.root && p.exists());
            return parent_seen.then(Below::default);
        }
        let populated = populated(&dir)?;
        if self.walked.as_ref().is_none_or(|(at, _)| at.elapsed() > FRESH) {
            self.walked = Some((Instant::now(), walk(&self.root)));
        }
        let tree = &self.walked.as_ref()?.1;
        let mut b = Below { populated, partial: tree.partial, ..Below::default() };
        for (path, uid, pod_populated) in &tree.pods {
            if path == cg || !kube::under(path, cg) {
                continue;
            }
            b.pods += 1;
            if *pod_populated || tree.running_outside.contains(uid) {
                b.running += 1;
                if b.running_pods.len() < Below::MAX_LISTED {
                    b.running_pods.push(uid.clone());
                }
            }
        }
        Some(b)
    }
}

/// A successful write to `cgroup.subtree_control` that took a controller away, as the
/// kubepods detector judges it (the kernel's masks, or `-x` tokens when the event has
/// none): exactly the writes that detector looks at `below` for.
fn removed_controller(ev: &Event) -> bool {
    kubepods::is_subtree_control(ev) && !kubepods::delta(ev, None).0.is_empty()
}

/// `populated` of a cgroup's `cgroup.events` (cgroup-v2.rst): a process in it or below.
fn populated(dir: &Path) -> Option<bool> {
    let events = std::fs::read_to_string(dir.join("cgroup.events")).ok()?;
    events.lines().find_map(|l| l.strip_prefix("populated ")).map(|v| v.trim() == "1")
}

/// Walks the cgroup2 tree: pod cgroups in kubepods and container cgroups outside it are
/// read and not descended into (what is below them is theirs).
fn walk(root: &Path) -> Tree {
    let mut tree = Tree::default();
    let mut stack = vec![String::new()];
    let mut seen = 0usize;
    while let Some(rel) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(root.join(rel.trim_start_matches('/'))) else { continue };
        for entry in entries.flatten() {
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            seen += 1;
            if seen > MAX_DIRS {
                tree.partial = true;
                return tree;
            }
            let name = entry.file_name();
            let path = format!("{rel}/{}", name.to_string_lossy());
            match kube::kube_path(&path) {
                Some(k) if k.level == Level::Pod => {
                    if let Some(uid) = k.pod_uid {
                        let running = populated(&entry.path()).unwrap_or(true);
                        tree.pods.push((path, uid, running));
                    }
                    continue;
                }
                Some(k) if k.level == Level::Container => continue,
                Some(_) => {}
                None => {
                    if let Some((uid, _, _)) = kube::outside_container(&path) {
                        if let Some(uid) = uid.filter(|_| populated(&entry.path()).unwrap_or(true)) {
                            tree.running_outside.insert(uid);
                        }
                        continue;
                    }
                }
            }
            stack.push(path);
        }
    }
    tree
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0d4c2c8e-4a6b-4b8e-9d4c-2c8e4a6b4b8e";
    const B: &str = "1e5d3d9f-5b7c-4c9f-8e5d-3d9f5b7c4c9f";

    fn slice(uid: &str) -> String {
        format!("kubepods-besteffort-pod{}.slice", uid.replace('-', "_"))
    }

    /// A fake cgroup2 tree: directories with a `cgroup.events` file each, removed on drop.
    struct Fake(PathBuf);
    impl Drop for Fake {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    impl Fake {
        fn path(&self) -> &Path {
            &self.0
        }
    }

    fn tree(dirs: &[(&str, bool)]) -> Fake {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let t = Fake(std::env::temp_dir().join(format!("tracer-below-{}-{n}", std::process::id())));
        for (d, populated) in dirs {
            let p = t.path().join(d.trim_start_matches('/'));
            std::fs::create_dir_all(&p).unwrap();
            std::fs::write(
                p.join("cgroup.events"),
                format!("populated {}\nfrozen 0\n", u8::from(*populated)),
            )
            .unwrap();
        }
        std::fs::write(t.path().join("cgroup.events"), "populated 1\n").unwrap();
        t
    }

    #[test]
    fn a_running_pod_below_counts_and_an_emptied_one_does_not() {
        let qos = "/kubepods.slice/kubepods-besteffort.slice";
        let (a, b) = (format!("{qos}/{}", slice(A)), format!("{qos}/{}", slice(B)));
        let t = tree(&[
            ("/kubepods.slice", true),
            (qos, true),
            (&a, true),
            (&format!("{a}/cri-containerd-0123.scope"), true),
            // B's containers are gone: the pod is being removed.
            (&b, false),
        ]);
        let mut l = Looker::new(t.path().to_path_buf());
        let got = l.below(qos).unwrap();
        assert_eq!(
            (got.pods, got.running, got.running_pods.clone(), got.populated),
            (2, 1, vec![A.into()], true)
        );
        let got = l.below(&b).unwrap();
        assert_eq!((got.pods, got.running, got.populated), (0, 0, false));
        // A cgroup removed by the time tracer looks had nothing running below it.
        assert_eq!(l.below(&format!("{qos}/gone.slice")), Some(Below::default()));
        // The cgroup2 root sees the same pods.
        assert_eq!(l.below("/").unwrap().pods, 2);
    }

    #[test]
    fn the_driver_mismatch_runs_outside_kubepods() {
        let qos = "/kubepods.slice/kubepods-besteffort.slice";
        let pod = format!("{qos}/{}", slice(A));
        let outside = format!("/system.slice/{}:cri-containerd:0123456789ab", slice(A));
        let t = tree(&[
            ("/kubepods.slice", false),
            (qos, false),
            (&pod, false),
            ("/system.slice", true),
            (&outside, true),
        ]);
        let got = Looker::new(t.path().to_path_buf()).below(qos).unwrap();
        assert_eq!((got.pods, got.running, got.populated), (1, 1, false), "{got:?}");
        // Stopped, the outside container no longer makes the pod run.
        let t = tree(&[
            ("/kubepods.slice", false),
            (qos, false),
            (&pod, false),
            ("/system.slice", true),
            (&outside, false),
        ]);
        let got = Looker::new(t.path().to_path_buf()).below(qos).unwrap();
        assert_eq!((got.pods, got.running), (1, 0), "{got:?}");
    }

    #[test]
    fn a_walk_is_forgotten_when_a_cgroup_goes() {
        let qos = "/kubepods.slice/kubepods-besteffort.slice";
        let pod = format!("{qos}/{}", slice(A));
        let t = tree(&[("/kubepods.slice", true), (qos, true), (&pod, true)]);
        let mut l = Looker::new(t.path().to_path_buf());
        let mut ev = Event {
            kind: Kind::CgroupWrite,
            cgroup: Some(qos.into()),
            file: Some("cgroup.subtree_control".into()),
            value: Some("-cpuset".into()),
            result: Some(7),
            controllers_before: Some(vec!["cpuset".into(), "memory".into()]),
            controllers_after: Some(vec!["memory".into()]),
            ..Event::default()
        };
        l.annotate(&mut ev);
        assert_eq!(ev.below.as_ref().unwrap().running, 1);
        std::fs::write(t.path().join(pod.trim_start_matches('/')).join("cgroup.events"), "populated 0\n")
            .unwrap();
        l.annotate(&mut Event { kind: Kind::CgroupRmdir, ..Event::default() });
        ev.below = None;
        l.annotate(&mut ev);
        assert_eq!(ev.below.as_ref().unwrap().running, 0);
        // A write that removed nothing (systemd's `-x` to an already empty
        // subtree_control) is not looked below; neither is a failed one.
        let mut noop = Event { controllers_before: Some(vec!["memory".into()]), below: None, ..ev.clone() };
        l.annotate(&mut noop);
        assert!(noop.below.is_none());
        let mut failed = Event { result: Some(-16), below: None, ..ev };
        l.annotate(&mut failed);
        assert!(failed.below.is_none());
    }
}
