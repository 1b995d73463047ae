//! Talking to the kernel: what the programs need from it and what the tracer may do.
pub mod bpf_sys;
pub mod btf_offsets;
pub mod cgroup_bpf;
pub mod hostns;
pub mod kfunc_probe;
pub mod loader;
pub mod netns;
pub mod openers;
pub mod privileges;
pub mod rtnl;
