//! Builds the kernel programs (`tracer-ebpf`) with aya-build and leaves the object at
//! `$OUT_DIR/tracer`, where `loader.rs` embeds it.
//!
//! `AYA_BUILD_SKIP=1` skips the eBPF build (for working on userspace without the BPF
//! toolchain); the binary then says so at start-up instead of loading programs.
use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let skip = std::env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    if skip {
        std::fs::write(out.join("tracer"), [])?;
        return Ok(());
    }
    if which("bpf-linker").is_none() {
        anyhow::bail!(
            "bpf-linker is not on PATH: the eBPF programs cannot be linked. \
             Run `cargo xtask build`, which installs it into target/tools and builds everything \
             (or set AYA_BUILD_SKIP=1 to build userspace alone)."
        );
    }
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let ebpf_dir = manifest.join("../tracer-ebpf");
    let ebpf_dir = ebpf_dir.to_string_lossy();
    aya_build::build_ebpf(
        [aya_build::Package { name: "tracer-ebpf", root_dir: &ebpf_dir, ..Default::default() }],
        aya_build::Toolchain::Nightly,
    )
}

fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join(bin)).find(|p| p.is_file()))
}
