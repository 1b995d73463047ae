//! Command-line options shared by the commands that capture live (`tail`, `record`).
use std::path::PathBuf;
use std::time::Duration;

use crate::kernel::loader::{HookMode, LoadOptions, DEFAULT_RINGBUF_MIB};
use crate::session::live::LiveOptions;

#[derive(clap::Args, Debug, Clone)]
pub struct LiveArgs {
    /// Ring buffer size in MiB (a power of two). Larger absorbs longer bursts.
    #[arg(long, default_value_t = DEFAULT_RINGBUF_MIB, value_name = "MIB")]
    pub ringbuf_mib: u32,
    /// cgroup2 mount to attach the sysctl hook to (default: found in /proc/self/mountinfo).
    #[arg(long, value_name = "DIR")]
    pub cgroup2_root: Option<PathBuf>,
    /// Seconds between `stats` lines (they are also emitted whenever records are lost).
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    pub stats_every: u64,
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics (events by kind, records seen
    /// and lost by hook, findings by id, process-table size), e.g. 0.0.0.0:9400. Used by `tail`.
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Where the node's filesystem is: kubelet's and the container runtime's configuration
    /// are read under it (a DaemonSet mounting the host's / at /host passes /host). A
    /// disagreement on the cgroup driver is a `cgroup-driver-mismatch` finding at start.
    #[arg(long, default_value = "/", value_name = "DIR")]
    pub host_root: PathBuf,
    #[command(flatten)]
    pub cri: CriArgs,
    #[command(flatten)]
    pub bus: BusArgs,
    #[command(flatten)]
    pub mode: ModeArgs,
}

/// Where the cgroup write, rtnetlink and bpf() hooks run (`tail`, `record`, `check`).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ModeArgs {
    /// kfunc: fentry/fexit on the kernel functions that apply the changes
    /// (cgroup_file_write, rtnetlink_rcv_msg, __x64_sys_bpf): nothing runs on unrelated
    /// syscalls, and writes through io_uring, passed descriptors, sendmmsg and later
    /// iovecs are seen. syscall: the sys_enter/sys_exit tracepoints, which every syscall
    /// on the node passes (for kernels that refuse BPF trampolines: lockdown, some
    /// hardened distributions). auto: kfunc where the kernel allows it, hook by hook.
    /// The header and `tracer check` say which mode each runs in and why.
    #[arg(long, value_enum, default_value_t = HookMode::Auto, value_name = "MODE", env = "TRACER_HOOK_MODE")]
    pub hook_mode: HookMode,
}

/// Where the system bus is (`tail`, `record`, `check`).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct BusArgs {
    /// The system bus socket, watched for requests to systemd and networkd
    /// (SetUnitProperties, StartTransientUnit, Restart/Stop/ReloadUnit, daemon-reload,
    /// networkd's Reload/Reconfigure), which findings then name as their cause. Default:
    /// run/dbus/system_bus_socket under --host-root. `none`: not watched.
    #[arg(long, value_name = "PATH", env = "TRACER_DBUS_SOCKET")]
    pub dbus_socket: Option<PathBuf>,
}

impl BusArgs {
    /// The socket to watch, or `None` when turned off.
    pub fn socket(&self, host_root: &std::path::Path) -> Option<PathBuf> {
        match &self.dbus_socket {
            Some(p) if p.as_os_str() == "none" => None,
            Some(p) => Some(p.clone()),
            None => Some(host_root.join(crate::node::bus::SOCKET)),
        }
    }
}

/// Where the container runtime's CRI socket is (`tail`, `record`, `check`).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct CriArgs {
    /// The container runtime's CRI socket, asked for pod and container names and its
    /// cgroup driver (unix:///run/containerd/containerd.sock, /run/crio/crio.sock; under
    /// --host-root). Default: kubelet's --container-runtime-endpoint, else containerd's or
    /// CRI-O's default socket, whichever exists. `none`: never ask; events then name pods
    /// by uid only.
    #[arg(long, value_name = "ENDPOINT", env = "TRACER_CRI_ENDPOINT")]
    pub cri_endpoint: Option<String>,
}

impl LiveArgs {
    pub fn options(&self) -> anyhow::Result<LiveOptions> {
        if !self.ringbuf_mib.is_power_of_two() || self.ringbuf_mib > 1024 {
            anyhow::bail!("--ringbuf-mib must be a power of two up to 1024, got {}", self.ringbuf_mib);
        }
        Ok(LiveOptions {
            load: LoadOptions {
                ringbuf_bytes: self.ringbuf_mib << 20,
                cgroup2_root: self.cgroup2_root.clone(),
                only: Vec::new(),
                hook_mode: self.mode.hook_mode,
            },
            stats_every: Duration::from_secs(self.stats_every.max(1)),
            proc_root: PathBuf::from("/proc"),
            host_root: self.host_root.clone(),
            cri_endpoint: self.cri.cri_endpoint.clone(),
            dbus_socket: self.bus.socket(&self.host_root),
        })
    }
}
