//! What the node's components are configured to do, read from their own files (under
//! `--host-root`) and command lines, before anything happens: today the cgroup driver
//! of kubelet and of the container runtime ([`cgroup_driver`]).
pub mod cgroup_driver;
