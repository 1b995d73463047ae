//! What the node's components are configured to do and what they run, read from their
//! own files (under `--host-root`), command lines and sockets, before anything happens:
//! the cgroup driver of kubelet and of the container runtime ([`cgroup_driver`]), and
//! the pods and containers the runtime knows over CRI ([`cri`]).
pub mod cgroup_driver;
pub mod cri;
