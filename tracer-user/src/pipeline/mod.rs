//! Ring-buffer records to attributed schema-v1 events.
//!
//! [`decode`] turns bytes into typed records (never trusting the kernel's sizes),
//! [`netlink`] decodes the rtnetlink requests they carry, [`bpf_names`] names BPF attach and program types, [`process`] keeps the process
//! table that [`actor`] names components from, [`requests`] says which execs are events, [`ifnames`] names interfaces per network
//! namespace, [`pods`] names the pods and containers of kubepods cgroups (CRI), [`below`] looks at
//! what lived below a cgroup that lost a controller, and [`enrich`] builds the events from all of them (joining a cgroup
//! write's entry and exit records).
pub mod actor;
pub mod below;
pub mod bpf_names;
pub mod decode;
pub mod enrich;
pub mod ifnames;
pub mod netlink;
pub mod netstate;
pub mod pods;
pub mod process;
pub mod requests;
pub mod rtobject;
