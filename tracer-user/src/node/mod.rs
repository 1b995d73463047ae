//! What the node's components are configured to do and what they run, read from their
//! own files (under `--host-root`), command lines and sockets, before anything happens:
//! the cgroup driver of kubelet and of the container runtime ([`cgroup_driver`]), and
//! the pods and containers the runtime knows over CRI ([`cri`]).
pub mod bus;
pub mod cgroup_driver;
pub mod cri;

use std::path::{Path, PathBuf};

/// The node's cgroup drivers with the runtime's own answer applied: the files and
/// command lines ([`cgroup_driver::DriverReport`]), then the runtime over CRI at the
/// socket `--cri-endpoint` or kubelet names ([`cri::RuntimeReport`]), whose
/// `RuntimeConfig` answer outranks its file. `list`: also count its pods and containers.
pub struct NodeReport {
    pub drivers: cgroup_driver::DriverReport,
    /// The runtime's socket, or why none is used.
    pub socket: Result<PathBuf, String>,
    pub runtime: cri::RuntimeReport,
}

impl NodeReport {
    pub fn read(host_root: &Path, proc_root: &Path, cri_endpoint: Option<&str>, list: bool) -> NodeReport {
        let mut drivers = cgroup_driver::DriverReport::read(host_root, proc_root);
        let socket = cri::find_socket(host_root, cri_endpoint, drivers.kubelet_endpoint.as_deref());
        let runtime = cri::RuntimeReport::read(socket.clone(), list);
        drivers.apply_runtime(runtime.driver_setting());
        NodeReport { drivers, socket, runtime }
    }
}
