//! tracer's kernel programs. One module per hook family; each program is a thin entry
//! point around a `try_*` body. Every kernel struct offset comes from the global
//! `OFFSETS` that userspace fills from the running kernel's BTF before load
//! (docs/DESIGN.md: "No kernel layout is compiled in").
#![no_std]
#![no_main]
#![feature(asm_experimental_arch)]

mod cgroup_bpf;
mod cgroup_dir;
mod cgroup_write;
mod floor;
mod kernel;
mod kfunc;
mod maps;
mod netlink;
mod openers;
mod process;
mod signal;
mod syscalls;
mod sysctl;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
