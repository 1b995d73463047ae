//! The tests' own CRI client: drives the real containerd's CRI plugin the way kubelet
//! does (RunPodSandbox with a kubelet-style `cgroup_parent`, CreateContainer,
//! StartContainer, StopPodSandbox, RemovePodSandbox), and builds the one image the
//! pods use, locally (no registry): busybox-static with `sleep` as its entrypoint,
//! a docker-archive tar that `ctr -n k8s.io images import` takes.

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, CreateContainerRequest, ImageSpec, LinuxContainerConfig,
    LinuxContainerResources, LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceMode,
    NamespaceOption, PodSandboxConfig, PodSandboxMetadata, RemovePodSandboxRequest, RunPodSandboxRequest,
    StartContainerRequest, StopPodSandboxRequest,
};
use tonic::transport::{Channel, Endpoint, Uri};

/// The image every test pod and container runs (also the sandbox image).
pub const IMAGE: &str = "tracer.test/pause:1";

/// Writes the image as a docker-archive tar in `dir` and returns its path: one layer
/// with busybox at /bin (sh, sleep, cat, echo), entrypoint `sleep 3600`.
pub fn build_image(dir: &Path) -> PathBuf {
    let busybox = ["/usr/bin/busybox", "/bin/busybox"].into_iter().find(|p| Path::new(p).exists()).expect(
        "busybox (Debian's busybox-static) is needed for the pod image: apt-get install busybox-static",
    );
    let root = dir.join("image-rootfs");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    for d in ["proc", "dev", "sys", "tmp", "etc"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy(busybox, root.join("bin/busybox")).unwrap();
    for applet in ["sh", "sleep", "cat", "echo"] {
        let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
    }
    let layer = dir.join("layer.tar");
    crate::run("tar", &["-C", root.to_str().unwrap(), "-cf", layer.to_str().unwrap(), "."]);
    let sum = crate::run_out("sha256sum", &[layer.to_str().unwrap()]);
    let digest = sum.split_whitespace().next().expect("sha256sum output").to_string();
    std::fs::write(
        dir.join("config.json"),
        format!(
            r#"{{"architecture":"amd64","os":"linux","config":{{"Entrypoint":["/bin/sleep","3600"]}},"rootfs":{{"type":"layers","diff_ids":["sha256:{digest}"]}}}}"#
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("manifest.json"),
        format!(r#"[{{"Config":"config.json","RepoTags":["{IMAGE}"],"Layers":["layer.tar"]}}]"#),
    )
    .unwrap();
    let image = dir.join("image.tar");
    crate::run(
        "tar",
        &[
            "-C",
            dir.to_str().unwrap(),
            "-cf",
            image.to_str().unwrap(),
            "manifest.json",
            "config.json",
            "layer.tar",
        ],
    );
    image
}

/// containerd's configuration for the tests: the CRI plugin on, a private root, state
/// and socket, the `native` snapshotter (no overlayfs on overlayfs), the test image as
/// the sandbox image, `oom_score_adj` no lower than containerd's, and `SystemdCgroup` as
/// asked.
pub fn containerd_config(root: &Path, state: &Path, socket: &Path, systemd_cgroup: bool) -> String {
    format!(
        r#"version = 2
root = "{root}"
state = "{state}"
[grpc]
  address = "{socket}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{IMAGE}"
  # kubelet's -998 for the pause container needs CAP_SYS_RESOURCE, which a CI sandbox may
  # not have: no lower than containerd's own.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = {systemd_cgroup}
        NoPivotRoot = {no_pivot}
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{root}/cni/bin"
    conf_dir = "{root}/cni/conf"
"#,
        root = root.display(),
        state = state.display(),
        socket = socket.display(),
        no_pivot = root_is_initramfs(),
    )
}

/// The VM suite's nodes boot from an initramfs, where pivot_root(2) is refused: runc
/// then moves the container's root with MS_MOVE instead (`NoPivotRoot`).
fn root_is_initramfs() -> bool {
    std::fs::read_to_string("/proc/self/mounts").unwrap_or_default().lines().any(|l| {
        l.split_whitespace().nth(1) == Some("/")
            && l.split_whitespace().nth(2).is_some_and(|t| t == "rootfs" || t == "ramfs")
    })
}

/// A pod as kubelet describes it to the runtime.
pub struct PodSpec<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: &'a str,
    /// kubelet's cgroup for the pod: `/kubepods/besteffort/pod<uid>` (cgroupfs) or
    /// `kubepods-besteffort-pod<uid_>.slice` (systemd).
    pub cgroup_parent: &'a str,
    pub log_dir: &'a Path,
}

/// A synchronous CRI client on a runtime of its own.
pub struct CriDriver {
    rt: tokio::runtime::Runtime,
    client: RuntimeServiceClient<Channel>,
}

impl CriDriver {
    pub fn connect(socket: &Path) -> CriDriver {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let socket = socket.to_path_buf();
        let channel = rt
            .block_on(Endpoint::from_static("http://[::1]:0").connect_with_connector(tower::service_fn(
                move |_: Uri| {
                    let socket = socket.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(socket).await?))
                    }
                },
            )))
            .expect("connect to containerd's CRI socket");
        CriDriver { rt, client: RuntimeServiceClient::new(channel) }
    }

    fn config(pod: &PodSpec) -> PodSandboxConfig {
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: pod.name.into(),
                uid: pod.uid.into(),
                namespace: pod.namespace.into(),
                attempt: 0,
            }),
            // A host-network pod keeps the node's hostname (kubelet sends none).
            hostname: String::new(),
            log_directory: pod.log_dir.display().to_string(),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: pod.cgroup_parent.into(),
                security_context: Some(LinuxSandboxSecurityContext {
                    // Host network: no CNI needed. Its own PID and IPC namespaces.
                    namespace_options: Some(NamespaceOption {
                        network: NamespaceMode::Node as i32,
                        pid: NamespaceMode::Container as i32,
                        ipc: NamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// RunPodSandbox: the sandbox id.
    pub fn run_pod(&mut self, pod: &PodSpec) -> String {
        let req = RunPodSandboxRequest { config: Some(Self::config(pod)), runtime_handler: String::new() };
        let mut c = self.client.clone();
        self.rt
            .block_on(c.run_pod_sandbox(req))
            .unwrap_or_else(|e| panic!("RunPodSandbox {}: {e}", pod.name))
            .into_inner()
            .pod_sandbox_id
    }

    /// CreateContainer then StartContainer of `sh -c script`: the container id.
    pub fn start_container(&mut self, sandbox: &str, pod: &PodSpec, name: &str, script: &str) -> String {
        let req = CreateContainerRequest {
            pod_sandbox_id: sandbox.into(),
            config: Some(ContainerConfig {
                metadata: Some(ContainerMetadata { name: name.into(), attempt: 0 }),
                image: Some(ImageSpec { image: IMAGE.into(), ..Default::default() }),
                command: vec!["/bin/sh".into()],
                args: vec!["-c".into(), script.into()],
                log_path: format!("{name}.log"),
                linux: Some(LinuxContainerConfig {
                    // So that runc writes the container cgroup's files.
                    resources: Some(LinuxContainerResources { cpu_shares: 512, ..Default::default() }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            sandbox_config: Some(Self::config(pod)),
        };
        let mut c = self.client.clone();
        let id = self
            .rt
            .block_on(c.create_container(req))
            .unwrap_or_else(|e| panic!("CreateContainer {name}: {e}"))
            .into_inner()
            .container_id;
        self.rt
            .block_on(c.start_container(StartContainerRequest { container_id: id.clone() }))
            .unwrap_or_else(|e| panic!("StartContainer {name}: {e}"));
        id
    }

    /// StopPodSandbox then RemovePodSandbox (containers included); errors ignored (cleanup).
    pub fn remove_pod(&mut self, sandbox: &str) {
        let mut c = self.client.clone();
        let _ =
            self.rt.block_on(c.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: sandbox.into() }));
        let _ = self
            .rt
            .block_on(c.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: sandbox.into() }));
    }

    pub fn stop_pod(&mut self, sandbox: &str) {
        let mut c = self.client.clone();
        self.rt
            .block_on(c.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: sandbox.into() }))
            .unwrap_or_else(|e| panic!("StopPodSandbox: {e}"));
    }
}

/// The real containerd with its CRI plugin, in a node root of the test's own: `dir` holds
/// `etc/containerd/config.toml` (the configuration containerd runs with),
/// `var/lib/kubelet/config.yaml` (kubelet's driver and endpoint, for `--host-root`) and
/// the socket at `run/containerd/containerd.sock`, so `tracer --host-root DIR` finds all
/// three where they are on a node. With `private_run` (the host) containerd runs in PID
/// and mount namespaces of its own (its shims and containers end with it; a tmpfs on
/// /run holds their sockets); without it (the VM) it runs on the node as it would,
/// with its /run and D-Bus, where runc's systemd driver asks systemd for the scope.
pub struct ContainerdNode {
    pub dir: crate::TempDir,
    pub socket: PathBuf,
    pub cri: CriDriver,
    sandboxes: Vec<String>,
    _containerd: crate::ChildGuard,
}

impl ContainerdNode {
    pub fn start(systemd_cgroup: bool, kubelet_driver: &str, private_run: bool) -> ContainerdNode {
        for exe in
            ["/usr/bin/containerd", "/usr/bin/ctr", "/usr/bin/containerd-shim-runc-v2", "/usr/sbin/runc"]
        {
            assert!(Path::new(exe).exists(), "{exe} is needed: apt-get install containerd runc");
        }
        let dir = crate::TempDir::new("cri-node");
        let socket = dir.path.join("run/containerd/containerd.sock");
        std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
        let config = containerd_config(
            &dir.path.join("var/lib/containerd"),
            &dir.path.join("state"),
            &socket,
            systemd_cgroup,
        );
        let config_path = dir.write("etc/containerd/config.toml", &config);
        dir.write(
            "var/lib/kubelet/config.yaml",
            &format!(
                "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\ncgroupDriver: {kubelet_driver}\ncontainerRuntimeEndpoint: unix:///run/containerd/containerd.sock\n"
            ),
        );
        let image = build_image(&dir.path);
        let log = dir.path.join("containerd.log");
        let child = if private_run {
            let script = format!(
                "set -e\nmount -t tmpfs -o mode=755 tmpfs /run\nexec /usr/bin/containerd --config {} >{} 2>&1\n",
                config_path.display(),
                log.display(),
            );
            std::process::Command::new("unshare")
                .args(["-m", "--propagation", "private", "--pid", "--fork", "--kill-child", "--mount-proc"])
                .args(["sh", "-c", &script])
                .stdin(std::process::Stdio::null())
                .spawn()
                .expect("spawn unshare containerd")
        } else {
            // In the host's PID namespace: runc's systemd driver hands systemd the
            // container's pid as it sees it.
            std::process::Command::new("/usr/bin/containerd")
                .args(["--config", config_path.to_str().unwrap()])
                .stdin(std::process::Stdio::null())
                .stdout(std::fs::File::create(&log).unwrap())
                .stderr(std::fs::File::create(dir.path.join("containerd.err")).unwrap())
                .spawn()
                .expect("spawn containerd")
        };
        let guard = crate::ChildGuard(child);
        let addr = socket.display().to_string();
        let up = crate::succeeds_within(
            "ctr",
            &["--address", &addr, "version"],
            std::time::Duration::from_secs(30),
            std::time::Duration::from_millis(100),
        );
        assert!(
            up,
            "containerd did not answer within 30 s: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        crate::run(
            "ctr",
            &[
                "--address",
                &addr,
                "-n",
                "k8s.io",
                "images",
                "import",
                "--snapshotter",
                "native",
                image.to_str().unwrap(),
            ],
        );
        let cri = CriDriver::connect(&socket);
        ContainerdNode { dir, socket, cri, sandboxes: Vec::new(), _containerd: guard }
    }

    /// RunPodSandbox, remembered for removal at the end.
    pub fn run_pod(&mut self, pod: &PodSpec) -> String {
        let id = self.cri.run_pod(pod);
        self.sandboxes.push(id.clone());
        id
    }

    pub fn root(&self) -> &str {
        self.dir.path.to_str().unwrap()
    }

    pub fn log(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.path.join(f)).unwrap_or_default();
        read("containerd.log") + &read("containerd.err")
    }
}

impl Drop for ContainerdNode {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("containerd's log:\n{}", self.log());
        }
        for id in std::mem::take(&mut self.sandboxes) {
            self.cri.remove_pod(&id);
        }
    }
}

/// A pod uid unique to this run (the form kubelet's are: 8-4-4-4-12 hex).
pub fn pod_uid() -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    format!("{:08x}-7ac3-4e1b-9d2f-{:012x}", std::process::id(), 0xc0de_0000u64 + n as u64)
}
