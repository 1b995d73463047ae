//! tracer: who changed the node under my pods?
//!
//! The crate by layer, in the order a kernel record travels (docs/ARCHITECTURE.md has
//! the whole path and the checklists for adding a hook, an event kind or a detector;
//! the kernel side is `tracer-ebpf`, the shared record layouts `tracer-common`):
//! - [`kernel`]: talking to the kernel: BTF offsets, loading and attaching the programs,
//!   the cgroupfs openers seeded from /proc, privileges, the host's namespaces.
//! - [`pipeline`]: ring-buffer records -> attributed schema-v1 events: typed decode,
//!   rtnetlink requests judged against each namespace's network state, the process
//!   table and actor policy, interface names.
//! - [`node`]: the node's components' configuration, read from their files
//!   (kubelet's and the runtime's cgroup driver).
//! - [`correlator`]: the incident detectors over the event stream, and the tick that
//!   closes their time windows.
//! - [`stream`]: the schema-v1 lines and everything that reads or writes them: the
//!   printer, filters, metrics, the recording writer and reader.
//! - [`session`]: the drivers that connect the layers: the live session (tail, record),
//!   the replay merge, stop signals.
//! - [`cli`]: the `tracer` subcommands, their clap arguments and what each runs.
pub mod cli;
pub mod correlator;
pub mod kernel;
pub mod node;
pub mod pipeline;
pub mod session;
pub mod stream;
