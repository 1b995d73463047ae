//! Pod identity for the events about kubepods and container cgroups: `pod`
//! (`namespace/name`), `container` and `pod_uid`, from the node alone.
//!
//! The uid (and the container id) come from the cgroup path itself
//! ([`crate::correlator::kube::names`]); the names from the container runtime over CRI
//! ([`crate::node::cri`]): a thread of its own lists the pods and containers, at start,
//! whenever an event names a pod or container the index does not know (a new pod's
//! cgroups appear before the runtime can list it: the runtime is asked again), and every
//! [`REFRESH_EVERY`] to let go of what is gone. The reader thread only reads the index:
//! a runtime that is slow or gone never delays an event, which then carries the uid
//! without the names.
//!
//! Bounded: at most [`MAX_PODS`] pods and [`MAX_CONTAINERS`] containers; what the
//! runtime no longer lists is kept [`GONE_GRACE`] (the rmdir of a pod's cgroups and the
//! signals to its processes come as it is removed), then dropped.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::correlator::kube::names;
use crate::node::cri::{Cri, Snapshot};
use crate::stream::schema::{Event, Kind};

/// How often the index is listed anew when no event asks for it.
pub const REFRESH_EVERY: Duration = Duration::from_secs(30);
/// The least time between two listings (a burst of new cgroups asks once).
const MIN_GAP: Duration = Duration::from_millis(100);
/// How long a pod or container the runtime stopped listing is still named.
pub const GONE_GRACE: Duration = Duration::from_secs(120);
/// The same unknown uid or id asks the runtime again only after this long.
const ASK_AGAIN: Duration = Duration::from_secs(1);
pub const MAX_PODS: usize = 16_384;
pub const MAX_CONTAINERS: usize = 65_536;

#[derive(Debug, Clone)]
struct Pod {
    /// `namespace/name`.
    name: Arc<str>,
    gone: Option<Instant>,
}

#[derive(Debug, Clone)]
struct Container {
    name: Arc<str>,
    pod_uid: Arc<str>,
    gone: Option<Instant>,
}

/// What the runtime listed, by pod uid, sandbox id and container id.
#[derive(Debug, Default)]
struct Index {
    pods: HashMap<Arc<str>, Pod>,
    /// A sandbox's id names its pause container's cgroup.
    sandboxes: HashMap<Arc<str>, Arc<str>>,
    containers: HashMap<Arc<str>, Container>,
}

impl Index {
    /// Takes a listing: what it has is current, what it lacks is gone since `now` and
    /// dropped after [`GONE_GRACE`].
    fn apply(&mut self, snap: &Snapshot, now: Instant) {
        for p in self.pods.values_mut() {
            p.gone.get_or_insert(now);
        }
        for c in self.containers.values_mut() {
            c.gone.get_or_insert(now);
        }
        let mut uid_of_sandbox: HashMap<&str, Arc<str>> = HashMap::new();
        for p in &snap.pods {
            let uid: Arc<str> = p.uid.as_str().into();
            uid_of_sandbox.insert(p.sandbox_id.as_str(), uid.clone());
            self.sandboxes.insert(p.sandbox_id.as_str().into(), uid.clone());
            self.pods.insert(uid, Pod { name: format!("{}/{}", p.namespace, p.name).into(), gone: None });
        }
        for c in &snap.containers {
            let Some(uid) = uid_of_sandbox
                .get(c.sandbox_id.as_str())
                .cloned()
                .or_else(|| self.sandboxes.get(c.sandbox_id.as_str()).cloned())
            else {
                continue;
            };
            self.containers.insert(
                c.id.as_str().into(),
                Container { name: c.name.as_str().into(), pod_uid: uid, gone: None },
            );
        }
        let keep = |gone: Option<Instant>| gone.is_none_or(|t| now.duration_since(t) < GONE_GRACE);
        self.pods.retain(|_, p| keep(p.gone));
        self.containers.retain(|_, c| keep(c.gone));
        let pods = &self.pods;
        self.sandboxes.retain(|_, uid| pods.contains_key(uid));
        // Bounds: a node never has this many; a runtime that lists more is cut, never
        // the tracer's memory.
        if self.pods.len() > MAX_PODS {
            let extra: Vec<Arc<str>> = self.pods.keys().skip(MAX_PODS).cloned().collect();
            for k in extra {
                self.pods.remove(&k);
            }
        }
        if self.containers.len() > MAX_CONTAINERS {
            let extra: Vec<Arc<str>> = self.containers.keys().skip(MAX_CONTAINERS).cloned().collect();
            for k in extra {
                self.containers.remove(&k);
            }
        }
    }
}

/// What the index says of one cgroup path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub pod_uid: Option<String>,
    /// `namespace/name`.
    pub pod: Option<String>,
    pub container: Option<String>,
    /// The pod uid and container id the path names that the runtime did not list.
    pub unknown: Vec<String>,
}

impl Index {
    fn identify(&self, uid: Option<&str>, container_id: Option<&str>) -> Identity {
        let mut id = Identity { pod_uid: uid.map(str::to_string), ..Default::default() };
        if let Some(cid) = container_id {
            if let Some(c) = self.containers.get(cid) {
                id.container = Some(c.name.to_string());
                id.pod_uid.get_or_insert_with(|| c.pod_uid.to_string());
            } else if let Some(uid) = self.sandboxes.get(cid) {
                // The pause container: the pod itself.
                id.pod_uid.get_or_insert_with(|| uid.to_string());
            } else {
                id.unknown.push(cid.to_string());
            }
        }
        if let Some(uid) = id.pod_uid.as_deref() {
            match self.pods.get(uid) {
                Some(p) => id.pod = Some(p.name.to_string()),
                None => id.unknown.push(uid.to_string()),
            }
        }
        id
    }
}

/// State shared by the reader thread and the CRI thread.
struct Shared {
    index: Mutex<Index>,
    /// Bumped at every listing: cached answers of the reader thread are then stale.
    generation: AtomicU64,
    wake: Mutex<bool>,
    cond: Condvar,
    stop: AtomicBool,
}

/// The reader thread's handle: identifies events' cgroups, asks for a listing on a miss.
pub struct Pods {
    shared: Option<Arc<Shared>>,
    /// The last path looked up and its answer (a storm writes one cgroup many times).
    last: Option<(String, u64, Identity)>,
    asked: HashMap<String, Instant>,
}

impl Default for Pods {
    /// Uids from paths only, no runtime.
    fn default() -> Self {
        Pods { shared: None, last: None, asked: HashMap::new() }
    }
}

impl Pods {
    /// Starts the CRI thread on `socket`. It lists at once; an unreachable runtime is
    /// said once (a warning) and tried again at every refresh.
    pub fn start(socket: PathBuf) -> std::io::Result<Pods> {
        let shared = Arc::new(Shared {
            index: Mutex::new(Index::default()),
            generation: AtomicU64::new(0),
            wake: Mutex::new(true),
            cond: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        std::thread::Builder::new().name("tracer-cri".into()).spawn(move || refresher(s, socket))?;
        Ok(Pods { shared: Some(shared), last: None, asked: HashMap::new() })
    }

    /// Waits up to `timeout` for the first listing (so that the pods that exist at start
    /// are named from the first event on). True when it came.
    pub fn wait_first(&self, timeout: Duration) -> bool {
        let Some(s) = &self.shared else { return false };
        let deadline = Instant::now() + timeout;
        while s.generation.load(Ordering::Acquire) == 0 {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    /// Fills `pod_uid`, `pod` and `container` of an event about a kubepods or container
    /// cgroup (its `cgroup`, or a signal's target's cgroup).
    pub fn annotate(&mut self, ev: &mut Event) {
        let path = match ev.kind {
            Kind::Signal => ev.target_cgroup.as_deref(),
            _ => ev.cgroup.as_deref(),
        };
        // Every kubelet and CRI naming has `pod` in it (`pod<uid>`, `kubepods`) or a
        // container id after a `:`/`-`: a path with neither is not looked at.
        let Some(path) = path.filter(|p| p.contains("pod") || p.contains("cri-") || p.contains("crio-"))
        else {
            return;
        };
        let generation = self.shared.as_ref().map_or(0, |s| s.generation.load(Ordering::Acquire));
        let id = match &self.last {
            Some((p, g, id)) if p == path && *g == generation => id.clone(),
            _ => {
                let info = names::parse(path);
                let id = match &self.shared {
                    Some(s) => s
                        .index
                        .lock()
                        .map(|ix| ix.identify(info.pod_uid.as_deref(), info.container_id.as_deref()))
                        .unwrap_or_default(),
                    None => Identity { pod_uid: info.pod_uid, ..Default::default() },
                };
                // Each key on its own: a new container of a pod asked for a moment ago
                // must still ask (its sandbox's uid is throttled, its id is not).
                let mut ask = false;
                for key in &id.unknown {
                    ask |= self.ask(key);
                }
                if ask {
                    self.wake();
                }
                self.last = Some((path.to_string(), generation, id.clone()));
                id
            }
        };
        ev.pod_uid = id.pod_uid.map(Box::new);
        ev.pod = id.pod.map(Box::new);
        ev.container = id.container.map(Box::new);
    }

    /// Whether `key` (not known to the runtime) is worth a listing: once per
    /// [`ASK_AGAIN`] (a cgroup of no runtime's, named like a pod's, asks rarely).
    fn ask(&mut self, key: &str) -> bool {
        let now = Instant::now();
        if self.asked.get(key).is_some_and(|t| now.duration_since(*t) < ASK_AGAIN) {
            return false;
        }
        if self.asked.len() >= 4096 {
            self.asked.retain(|_, t| now.duration_since(*t) < ASK_AGAIN);
        }
        self.asked.insert(key.to_string(), now);
        true
    }

    /// Asks the CRI thread for a listing.
    fn wake(&self) {
        let Some(s) = &self.shared else { return };
        if let Ok(mut w) = s.wake.lock() {
            *w = true;
            s.cond.notify_one();
        }
    }
}

impl Drop for Pods {
    fn drop(&mut self) {
        if let Some(s) = &self.shared {
            s.stop.store(true, Ordering::Release);
            if let Ok(mut w) = s.wake.lock() {
                *w = true;
                s.cond.notify_one();
            }
        }
    }
}

/// The CRI thread: lists when asked or every [`REFRESH_EVERY`], until stopped.
fn refresher(s: Arc<Shared>, socket: PathBuf) {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::warn!("cannot start the CRI client ({e}): events name pods by uid only");
            return;
        }
    };
    let mut cri: Option<Cri> = None;
    let mut failing = false;
    let mut last = Instant::now() - MIN_GAP;
    loop {
        {
            let Ok(mut wake) = s.wake.lock() else { return };
            while !*wake && !s.stop.load(Ordering::Acquire) {
                let (w, timeout) = match s.cond.wait_timeout(wake, REFRESH_EVERY) {
                    Ok(r) => r,
                    Err(_) => return,
                };
                wake = w;
                if timeout.timed_out() {
                    break;
                }
            }
            *wake = false;
        }
        if s.stop.load(Ordering::Acquire) {
            return;
        }
        let since = last.elapsed();
        if since < MIN_GAP {
            std::thread::sleep(MIN_GAP - since);
        }
        last = Instant::now();
        let listed = rt.block_on(async {
            if cri.is_none() {
                cri = Some(Cri::connect(&socket).await?);
            }
            match cri.as_ref() {
                Some(c) => c.snapshot().await,
                None => Ok(Snapshot::default()),
            }
        });
        match listed {
            Ok(snap) => {
                if failing {
                    tracing::warn!(
                        "the container runtime at {} answers again: pods are named",
                        socket.display()
                    );
                    failing = false;
                }
                if let Ok(mut ix) = s.index.lock() {
                    ix.apply(&snap, Instant::now());
                }
                s.generation.fetch_add(1, Ordering::AcqRel);
            }
            Err(e) => {
                cri = None;
                if !failing {
                    tracing::warn!(
                        "cannot list pods from the container runtime: {}; events name pods by uid only until it answers",
                        crate::kernel::loader::error_chain(&e)
                    );
                    failing = true;
                }
                // The first listing failed: say it is over, so that start-up does not wait.
                s.generation.fetch_max(1, Ordering::AcqRel);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::cri::{ContainerMeta, PodMeta};

    const UID: &str = "0d4c2c8e-4a6b-4b8e-9d4c-2c8e4a6b4b8e";
    const SANDBOX: &str = "5b1f00d1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d";
    const CTR: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";

    fn snap() -> Snapshot {
        Snapshot {
            pods: vec![PodMeta {
                sandbox_id: SANDBOX.into(),
                uid: UID.into(),
                namespace: "kube-system".into(),
                name: "coredns-7db6d8ff4d-x2x9q".into(),
            }],
            containers: vec![ContainerMeta {
                id: CTR.into(),
                sandbox_id: SANDBOX.into(),
                name: "coredns".into(),
            }],
        }
    }

    #[test]
    fn both_drivers_paths_name_the_pod_and_container() {
        let mut ix = Index::default();
        ix.apply(&snap(), Instant::now());
        let look = |p: &str| {
            let i = names::parse(p);
            ix.identify(i.pod_uid.as_deref(), i.container_id.as_deref())
        };
        let systemd = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{CTR}.scope",
            UID.replace('-', "_")
        );
        let id = look(&systemd);
        assert_eq!(
            (id.pod.as_deref(), id.container.as_deref(), id.pod_uid.as_deref(), id.unknown.len()),
            (Some("kube-system/coredns-7db6d8ff4d-x2x9q"), Some("coredns"), Some(UID), 0)
        );
        let id = look(&format!("/kubepods/besteffort/pod{UID}/{CTR}"));
        assert_eq!(
            (id.pod.as_deref(), id.container.as_deref()),
            (Some("kube-system/coredns-7db6d8ff4d-x2x9q"), Some("coredns"))
        );
        // The pause container's cgroup is the pod's, with no container name.
        let id = look(&format!("/kubepods/besteffort/pod{UID}/{SANDBOX}"));
        assert_eq!(
            (id.pod.as_deref(), id.container.as_deref(), id.unknown.len()),
            (Some("kube-system/coredns-7db6d8ff4d-x2x9q"), None, 0)
        );
        // The mismatch tell-tale: a container outside the pod slice is still named.
        let id = look(&format!(
            "/system.slice/kubepods-besteffort-pod{}.slice:cri-containerd:{CTR}",
            UID.replace('-', "_")
        ));
        assert_eq!(
            (id.pod.as_deref(), id.container.as_deref()),
            (Some("kube-system/coredns-7db6d8ff4d-x2x9q"), Some("coredns"))
        );
        // The pod's own slice, the QoS slice.
        let id = look(&format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice",
            UID.replace('-', "_")
        ));
        assert_eq!((id.pod.as_deref(), id.container), (Some("kube-system/coredns-7db6d8ff4d-x2x9q"), None));
        assert_eq!(look("/kubepods.slice/kubepods-burstable.slice"), Identity::default());
    }

    #[test]
    fn unknown_pods_are_asked_for_and_gone_ones_kept_for_a_grace() {
        let mut ix = Index::default();
        let t0 = Instant::now();
        ix.apply(&snap(), t0);
        let other = "11111111-2222-3333-4444-555555555555";
        let id = ix.identify(Some(other), None);
        assert_eq!((id.pod, id.unknown), (None, vec![other.to_string()]));
        // A new container of an unknown pod: both are asked for, each on its own.
        let id = ix.identify(Some(other), Some("ffff"));
        assert_eq!(id.unknown, vec!["ffff".to_string(), other.to_string()]);
        let mut pods = Pods::default();
        assert!(pods.ask(other) && !pods.ask(other), "the same key asks once per ASK_AGAIN");
        assert!(pods.ask("ffff"), "another key still asks");
        // The pod is gone from the next listing: still named within the grace...
        ix.apply(&Snapshot::default(), t0 + Duration::from_secs(1));
        assert!(ix.identify(Some(UID), Some(CTR)).container.is_some());
        // ...and dropped after it.
        ix.apply(&Snapshot::default(), t0 + GONE_GRACE + Duration::from_secs(2));
        assert_eq!(ix.identify(Some(UID), None).pod, None);
        assert!(ix.containers.is_empty() && ix.sandboxes.is_empty());
    }

    #[test]
    fn without_a_runtime_events_carry_the_uid_only() {
        let mut pods = Pods::default();
        let mut ev = Event {
            kind: Kind::Signal,
            target_cgroup: Some(format!("/kubepods/pod{UID}/{CTR}")),
            ..Default::default()
        };
        pods.annotate(&mut ev);
        assert_eq!((ev.pod_uid.as_deref().map(String::as_str), ev.pod.as_ref()), (Some(UID), None));
        let mut ev = Event { cgroup: Some("/system.slice/cron.service".into()), ..Default::default() };
        pods.annotate(&mut ev);
        assert_eq!(ev.pod_uid, None);
    }
}
