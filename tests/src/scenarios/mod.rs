//! The incidents of docs/DESIGN.md, reproduced with the real components wherever this
//! machine can run them (systemd-sysctl, systemd-networkd, runc, containerd, the kernel's
//! cgroup BPF attach), each in a
//! sandbox of its own: a network namespace, a private mount namespace, cgroups under a
//! unique prefix. Every scenario sets up, makes the change, hands each step to the
//! caller right after it happened, and cleans up (RAII guards: also when the caller
//! panics in a step). The tests assert on what `tracer` printed at each step; a demo can
//! print the steps and tail at the same time.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::*;

mod cgroups;
mod network;
mod runtime;
mod socket_lb;
mod sysctl;

pub use cgroups::{kubepods, KUBEPODS_CONTROLLER};
pub use network::{networkd, Networkd, SYSTEMD_NETWORKD};
pub use runtime::{containerd, runc, CONTAINERD, RUNC};
pub use socket_lb::{cilium_socket_lb, cilium_socket_lb_before_start, Agent};
pub use sysctl::{rp_filter, rp_filter_never_set, SYSTEMD_SYSCTL};

/// One change a scenario just made.
#[derive(Debug, Clone, Default)]
pub struct Step {
    /// `scenario/step`, e.g. `rp_filter/udev-prefix`.
    pub id: &'static str,
    /// What happened, for people.
    pub text: String,
    /// The finding tracer should print for it, or `None` for none.
    pub expect: Option<&'static str>,
    /// The actor tracer should name.
    pub actor: Option<&'static str>,
    /// Network namespace (inode) the change happened in.
    pub netns: Option<u64>,
    /// The process that made the change, when the scenario knows its (global) pid.
    pub pid: Option<u32>,
    /// Interfaces the change concerns.
    pub devs: Vec<String>,
    /// Cgroup (path from the hierarchy root) the change concerns.
    pub cgroup: Option<String>,
    /// Other facts, e.g. the pod uid.
    pub extra: Vec<(&'static str, String)>,
    /// When the change was made (right before the step is handed over).
    pub at: Option<Instant>,
}

pub type Observer<'a> = &'a mut dyn FnMut(&Step);

/// A file under `tests/scenarios/`.
pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios").join(rel)
}

/// Fails with an install hint unless `path` exists.
pub fn require_exe(path: &str, package: &str) -> String {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: this scenario runs the real component (`apt-get install {package}`)"
    );
    path.to_string()
}
