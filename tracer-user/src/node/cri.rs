//! The container runtime's own view of the node, over its CRI socket (the gRPC API
//! kubelet drives it with: `k8s.io/cri-api` `runtime.v1.RuntimeService`), with no API
//! server: which pods and containers exist (namespace, name, uid, container name and
//! id), and the cgroup driver the runtime says it uses (`RuntimeConfig`, KEP-4033:
//! containerd 2.0+, CRI-O 1.28+; older runtimes answer `Unimplemented`).
//!
//! The socket is the one kubelet's `--container-runtime-endpoint` (or
//! `containerRuntimeEndpoint`) names, else the first of containerd's and CRI-O's
//! default sockets that exists under `--host-root`; `--cri-endpoint` overrides both.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{ListContainersRequest, ListPodSandboxRequest, RuntimeConfigRequest, VersionRequest};
use tonic::transport::{Channel, Endpoint, Uri};

use crate::node::cgroup_driver::Driver;

/// Default CRI sockets, in the order they are tried (containerd's, CRI-O's, and the
/// `/var/run` spellings older nodes use; `/var/run` is usually a link to `/run`).
pub const DEFAULT_SOCKETS: &[&str] = &[
    "/run/containerd/containerd.sock",
    "/run/crio/crio.sock",
    "/var/run/containerd/containerd.sock",
    "/var/run/crio/crio.sock",
];

/// How long one CRI call may take: the runtime answers list calls in milliseconds; a
/// runtime that hangs must not hold the tracer.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// What went wrong talking to the runtime.
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    #[error("cannot connect to the CRI socket {path}")]
    Connect {
        path: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("the runtime at {path} refused {call}: {status}")]
    Call { path: PathBuf, call: &'static str, status: Box<tonic::Status> },
    #[error("the runtime at {path} did not answer {call} within {CALL_TIMEOUT:?}")]
    Timeout { path: PathBuf, call: &'static str },
}

/// `unix:///run/containerd/containerd.sock` or a plain path -> the socket's path on the
/// node, under `host_root`. `None` for endpoints that are not unix sockets.
pub fn socket_path(host_root: &Path, endpoint: &str) -> Option<PathBuf> {
    let path = match endpoint.split_once("://") {
        Some(("unix", p)) => p,
        Some(_) => return None,
        None => endpoint,
    };
    path.starts_with('/').then(|| host_root.join(path.trim_start_matches('/')))
}

/// `--cri-endpoint none`: do not talk to the runtime at all.
pub const DISABLED: &str = "none";

/// The runtime's socket: `explicit` (`--cri-endpoint`), else kubelet's endpoint, else
/// the first default socket that exists. `Err` lists what was tried.
pub fn find_socket(
    host_root: &Path,
    explicit: Option<&str>,
    kubelet_endpoint: Option<&str>,
) -> Result<PathBuf, String> {
    if let Some(e) = explicit {
        if e == DISABLED {
            return Err("--cri-endpoint none: the container runtime is not asked".into());
        }
        return socket_path(host_root, e)
            .ok_or_else(|| format!("--cri-endpoint {e:?} is not a unix socket (unix:///path or /path)"));
    }
    let mut tried = Vec::new();
    let candidates = kubelet_endpoint.into_iter().chain(DEFAULT_SOCKETS.iter().copied());
    for c in candidates {
        if let Some(p) = socket_path(host_root, c) {
            if is_socket(&p) {
                return Ok(p);
            }
            tried.push(p.display().to_string());
        }
    }
    Err(format!("no container runtime socket found (tried {})", tried.join(", ")))
}

fn is_socket(p: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(p).is_ok_and(|m| m.file_type().is_socket())
}

/// The runtime's name and versions (`Version`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeVersion {
    pub name: String,
    pub version: String,
    pub api_version: String,
}

/// A pod sandbox as the runtime lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodMeta {
    /// The sandbox id (its pause container's id, and its cgroup's name).
    pub sandbox_id: String,
    pub uid: String,
    pub namespace: String,
    pub name: String,
}

/// A container as the runtime lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerMeta {
    pub id: String,
    pub sandbox_id: String,
    pub name: String,
}

/// Every pod and container the runtime knows, at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub pods: Vec<PodMeta>,
    pub containers: Vec<ContainerMeta>,
}

/// A connection to one runtime's CRI socket.
pub struct Cri {
    path: PathBuf,
    client: RuntimeServiceClient<Channel>,
}

impl Cri {
    /// Connects (lazily checked: the first call says whether the runtime answers).
    pub async fn connect(path: &Path) -> Result<Cri, CriError> {
        let socket = path.to_path_buf();
        // The URI is required by tonic and ignored by the connector.
        let channel = Endpoint::from_static("http://[::1]:0")
            .connect_timeout(CALL_TIMEOUT)
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let socket = socket.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(socket).await?))
                }
            }))
            .await
            .map_err(|source| CriError::Connect { path: path.to_path_buf(), source })?;
        Ok(Cri { path: path.to_path_buf(), client: RuntimeServiceClient::new(channel) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn call<T>(
        &self,
        call: &'static str,
        fut: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, CriError> {
        match tokio::time::timeout(CALL_TIMEOUT, fut).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(status)) => {
                Err(CriError::Call { path: self.path.clone(), call, status: Box::new(status) })
            }
            Err(_) => Err(CriError::Timeout { path: self.path.clone(), call }),
        }
    }

    pub async fn version(&self) -> Result<RuntimeVersion, CriError> {
        let mut c = self.client.clone();
        let v = self.call("Version", c.version(VersionRequest { version: "v1".into() })).await?;
        Ok(RuntimeVersion {
            name: v.runtime_name,
            version: v.runtime_version,
            api_version: v.runtime_api_version,
        })
    }

    /// Every pod sandbox and container, ready or not (a stopped pod's cgroups are
    /// still written to and removed).
    pub async fn snapshot(&self) -> Result<Snapshot, CriError> {
        let mut c = self.client.clone();
        let pods =
            self.call("ListPodSandbox", c.list_pod_sandbox(ListPodSandboxRequest { filter: None })).await?;
        let containers =
            self.call("ListContainers", c.list_containers(ListContainersRequest { filter: None })).await?;
        Ok(Snapshot {
            pods: pods
                .items
                .into_iter()
                .filter_map(|p| {
                    let m = p.metadata?;
                    Some(PodMeta { sandbox_id: p.id, uid: m.uid, namespace: m.namespace, name: m.name })
                })
                .collect(),
            containers: containers
                .containers
                .into_iter()
                .filter_map(|c| {
                    let m = c.metadata?;
                    Some(ContainerMeta { id: c.id, sandbox_id: c.pod_sandbox_id, name: m.name })
                })
                .collect(),
        })
    }

    /// The cgroup driver the runtime reports (`RuntimeConfig`, KEP-4033); `Ok(None)`
    /// when the runtime does not implement the call (containerd before 2.0, CRI-O
    /// before 1.28) or reports no Linux configuration.
    pub async fn cgroup_driver(&self) -> Result<Option<Driver>, CriError> {
        let mut c = self.client.clone();
        match self.call("RuntimeConfig", c.runtime_config(RuntimeConfigRequest {})).await {
            Ok(r) => Ok(r.linux.map(|l| match l.cgroup_driver() {
                k8s_cri::v1::CgroupDriver::Systemd => Driver::Systemd,
                k8s_cri::v1::CgroupDriver::Cgroupfs => Driver::Cgroupfs,
            })),
            Err(CriError::Call { status, .. }) if status.code() == tonic::Code::Unimplemented => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// What `tracer check` and the start of a session learn from the runtime.
#[derive(Debug, Clone, Default)]
pub struct RuntimeReport {
    /// The socket used, or why none could be.
    pub socket: Option<PathBuf>,
    pub version: Option<RuntimeVersion>,
    pub pods: Option<usize>,
    pub containers: Option<usize>,
    /// `Some(None)`: the runtime answered and does not implement `RuntimeConfig`.
    pub cgroup_driver: Option<Option<Driver>>,
    /// What failed, for the user.
    pub problem: Option<String>,
}

impl RuntimeReport {
    /// Asks the runtime at `socket` (or records `problem`) its version and cgroup
    /// driver, and with `list` counts its pods and containers; each call bounded by
    /// [`CALL_TIMEOUT`]. Runs its own single-threaded runtime on a thread of its own, so
    /// callers may be synchronous or inside another runtime.
    pub fn read(socket: Result<PathBuf, String>, list: bool) -> RuntimeReport {
        std::thread::scope(|s| s.spawn(|| Self::read_here(socket, list)).join()).unwrap_or_else(|_| {
            RuntimeReport { problem: Some("the CRI client panicked".into()), ..Default::default() }
        })
    }

    fn read_here(socket: Result<PathBuf, String>, list: bool) -> RuntimeReport {
        let mut r = RuntimeReport::default();
        let path = match socket {
            Ok(p) => p,
            Err(why) => {
                r.problem = Some(why);
                return r;
            }
        };
        r.socket = Some(path.clone());
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                r.problem = Some(format!("cannot start a runtime for the CRI client: {e}"));
                return r;
            }
        };
        let result: Result<(), CriError> = rt.block_on(async {
            let cri = Cri::connect(&path).await?;
            r.version = Some(cri.version().await?);
            r.cgroup_driver = Some(cri.cgroup_driver().await?);
            if list {
                let snap = cri.snapshot().await?;
                r.pods = Some(snap.pods.len());
                r.containers = Some(snap.containers.len());
            }
            Ok(())
        });
        if let Err(e) = result {
            r.problem = Some(crate::kernel::loader::error_chain(&e));
        }
        r
    }

    /// The runtime's own answer on its cgroup driver, as a [`Setting`] that outranks
    /// its configuration file (it is what the runtime runs with).
    pub fn driver_setting(&self) -> Option<crate::node::cgroup_driver::Setting> {
        let driver = self.cgroup_driver.flatten()?;
        let v = self.version.as_ref()?;
        Some(crate::node::cgroup_driver::Setting {
            component: component_of(&v.name),
            driver,
            from: format!(
                "{} {} over CRI RuntimeConfig at {}",
                v.name,
                v.version,
                self.socket.as_deref().map(|p| p.display().to_string()).unwrap_or_default()
            ),
        })
    }
}

/// The component name [`crate::node::cgroup_driver`] uses for a runtime's CRI name.
pub fn component_of(runtime_name: &str) -> &'static str {
    if runtime_name.contains("cri-o") || runtime_name.contains("crio") {
        "cri-o"
    } else {
        "containerd"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_unix_sockets_under_the_host_root() {
        let root = Path::new("/proc/1/root");
        assert_eq!(
            socket_path(root, "unix:///run/containerd/containerd.sock"),
            Some(PathBuf::from("/proc/1/root/run/containerd/containerd.sock"))
        );
        assert_eq!(
            socket_path(Path::new("/"), "/run/crio/crio.sock"),
            Some(PathBuf::from("/run/crio/crio.sock"))
        );
        assert_eq!(socket_path(root, "tcp://10.0.0.1:1234"), None);
        assert_eq!(socket_path(root, "relative.sock"), None);
    }

    #[test]
    fn no_socket_says_what_was_tried() {
        let root = std::env::temp_dir().join(format!("tracer-cri-none-{}", std::process::id()));
        let err = find_socket(&root, None, Some("unix:///run/k.sock")).unwrap_err();
        assert!(err.contains("run/k.sock") && err.contains("run/containerd/containerd.sock"), "{err}");
        let err = find_socket(&root, Some("tcp://x:1"), None).unwrap_err();
        assert!(err.contains("--cri-endpoint"), "{err}");
    }

    #[test]
    fn a_socket_that_does_not_answer_is_a_problem_not_a_panic() {
        let dir = std::env::temp_dir().join(format!("tracer-cri-dead-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("dead.sock");
        let _ = std::fs::remove_file(&sock);
        // Bound, never accepted: the connect itself succeeds, the HTTP/2 handshake does not.
        let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        drop(listener);
        let r = RuntimeReport::read(Ok(sock.clone()), true);
        assert!(r.problem.is_some() && r.version.is_none(), "{r:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
