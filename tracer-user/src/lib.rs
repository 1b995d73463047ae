//! tracer: who changed the node under my pods?
//!
//! Map of the crate (kernel side is `tracer-ebpf`, shared layouts `tracer-common`):
//! - [`schema`]: event schema v1, the JSON lines every command reads and writes.
//! - [`decode`]: ring-buffer records -> Rust values, with typed errors.
//! - [`netlink`]: rtnetlink request bytes -> the route/rule/addr/link changes they ask for.
//! - [`btf_offsets`]: kernel struct offsets from the running kernel's BTF.
//! - [`loader`]: loads and attaches the programs, reports each hook.
//! - [`live`]: ring-buffer reader and the record -> event pipeline.
//! - [`process`]: process table keyed by (pid, start time); actor attribution.
//! - [`cgroup_info`]: what a cgroup path means (unit, QoS, pod, container).
//! - [`correlator`]: the incident detectors.
//! - [`filter`], [`output`]: what to show and how.
//! - [`record`], [`replay`]: recordings for the postmortem.
pub mod btf_offsets;
pub mod cgroup_info;
pub mod correlator;
pub mod decode;
pub mod events;
pub mod filter;
pub mod hostns;
pub mod live;
pub mod loader;
pub mod metrics;
pub mod netlink;
pub mod netns;
pub mod openers;
pub mod output;
pub mod privileges;
pub mod process;
pub mod record;
pub mod replay;
pub mod schema;
