//! Installs what building and testing need on a fresh machine: the nightly
//! `rust-src` component, `bpf-linker` built against the nightly's own libLLVM,
//! and the apt packages the end-to-end tests use. Each step checks first and
//! does nothing when its tool is already there. See docs/TOOLCHAIN.md.

use std::{
    fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

use crate::util::{self, cargo, output, run, tools_dir};

/// The toolchain aya-build uses for the eBPF crate (`rustup run nightly cargo`).
pub const NIGHTLY: &str = "nightly";
const BPF_LINKER_VERSION: &str = "0.13.0";
/// The bpf-linker feature that matches the nightly's LLVM major version.
const BPF_LINKER_LLVM_FEATURE: &str = "llvm-22";

/// Packages the end-to-end tests need: a missing one fails the bootstrap. The incident
/// tests run the real components: systemd-sysctl and systemd-networkd (package
/// systemd), dbus for `networkctl`, runc and containerd with a busybox rootfs, and
/// python3 for the raw netlink requests.
/// bpftool lists the programs the cluster tests check are gone after SIGTERM.
const APT_REQUIRED: &[&str] = &[
    "iproute2",
    "python3",
    "systemd",
    "dbus",
    "runc",
    "containerd",
    "busybox-static",
    "bpftool",
    "prometheus",
];
/// Packages some tests and the bench use: a missing one is a warning.
const APT_OPTIONAL: &[&str] = &["bpftrace", "strace"];
/// Tried, in order, when the optional package `bpftool` cannot be installed.
const BPFTOOL_FALLBACKS: &[&str] = &["linux-bpf-dev"];

/// Everything `cargo xtask build` needs.
pub fn toolchain() -> Result<()> {
    rust_src()?;
    bpf_linker()?;
    protoc()?;
    Ok(())
}

/// Ensures `protoc`: the CRI client (the k8s-cri crate) is generated from
/// k8s.io/cri-api's proto at build time.
pub fn protoc() -> Result<()> {
    if util::which("protoc").is_some() || std::env::var_os("PROTOC").is_some() {
        return Ok(());
    }
    if !util::is_root() {
        bail!("protoc is needed to build the CRI client: run `sudo apt-get install protobuf-compiler` (or set PROTOC)");
    }
    eprintln!("xtask: installing protobuf-compiler (protoc, for the CRI client)");
    apt_install(&["protobuf-compiler"])
}

/// Ensures the nightly toolchain has `rust-src` (for `-Z build-std=core`).
pub fn rust_src() -> Result<()> {
    let installed =
        output(Command::new("rustup").args(["component", "list", "--installed", "--toolchain", NIGHTLY]))
            .with_context(|| {
                format!(
                    "`rustup component list --toolchain {NIGHTLY}` failed: is rustup installed and the \
             nightly toolchain present? Install it with `rustup toolchain install {NIGHTLY} \
             --profile minimal --component rust-src`"
                )
            })?;
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        return Ok(());
    }
    eprintln!("xtask: installing rust-src for the {NIGHTLY} toolchain");
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", NIGHTLY]))
        .context("could not install rust-src; the eBPF crate cannot be built without it")
}

/// The nightly's libLLVM, e.g. `<sysroot>/lib/libLLVM.so.22.1-rust-1.97.0-nightly`.
fn nightly_libllvm() -> Result<(PathBuf, PathBuf)> {
    let sysroot = output(Command::new("rustc").args([&format!("+{NIGHTLY}"), "--print", "sysroot"]))
        .with_context(|| {
            format!("`rustc +{NIGHTLY} --print sysroot` failed: is the {NIGHTLY} toolchain installed?")
        })?;
    let lib = Path::new(&sysroot).join("lib");
    let mut found: Vec<PathBuf> = fs::read_dir(&lib)
        .with_context(|| format!("reading {}", lib.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libLLVM.so.")))
        .collect();
    found.sort();
    match found.pop() {
        Some(so) => Ok((lib, so)),
        None => bail!(
            "no libLLVM.so.* in {}: this nightly ships no shared LLVM, so bpf-linker cannot be \
             built against it; install bpf-linker by hand into {}/bin",
            lib.display(),
            tools_dir().display()
        ),
    }
}

/// Ensures `<tools>/bin/bpf-linker` runs and was built against the current
/// nightly's libLLVM (recorded in `<tools>/bpf-linker.stamp`); builds it otherwise.
pub fn bpf_linker() -> Result<()> {
    let tools = tools_dir();
    let bin = tools.join("bin").join("bpf-linker");
    let stamp = tools.join("bpf-linker.stamp");
    let (lib_dir, libllvm) = nightly_libllvm()?;
    let want = format!("bpf-linker {BPF_LINKER_VERSION} {}\n", libllvm.display());

    let works = output(Command::new(&bin).arg("--version")).is_some();
    match fs::read_to_string(&stamp) {
        Ok(have) if works && have == want => return Ok(()),
        // Built before stamps existed (by hand, from TOOLCHAIN.md): it links the
        // nightly's libLLVM by its versioned name, so running means it matches.
        Err(_) if works => {
            fs::write(&stamp, &want).with_context(|| format!("writing {}", stamp.display()))?;
            return Ok(());
        }
        Ok(have) if works => eprintln!(
            "xtask: bpf-linker in {} was built for {}; rebuilding for {}",
            bin.display(),
            have.trim(),
            libllvm.display()
        ),
        _ => {}
    }

    eprintln!(
        "xtask: building bpf-linker {BPF_LINKER_VERSION} against {} into {} (about a minute)",
        libllvm.display(),
        tools.display()
    );
    // llvm-sys finds LLVM through LLVM_PREFIX/lib/libLLVM.so.
    let prefix = tools.join("llvm");
    let prefix_lib = prefix.join("lib");
    fs::create_dir_all(&prefix_lib).with_context(|| format!("creating {}", prefix_lib.display()))?;
    let link = prefix_lib.join("libLLVM.so");
    if link.symlink_metadata().is_ok() {
        fs::remove_file(&link).with_context(|| format!("removing {}", link.display()))?;
    }
    symlink(&libllvm, &link).with_context(|| format!("creating {}", link.display()))?;
    let _ = fs::remove_file(&stamp);

    let mut cmd = cargo(Some(NIGHTLY));
    cmd.args([
        "install",
        &format!("bpf-linker@{BPF_LINKER_VERSION}"),
        "--locked",
        "--force",
        "--no-default-features",
        "--features",
        BPF_LINKER_LLVM_FEATURE,
        "--root",
    ])
    .arg(&tools)
    .env("LLVM_PREFIX", &prefix)
    // Without the rpath the binary cannot find libLLVM at run time.
    .env("RUSTFLAGS", format!("-C link-arg=-Wl,-rpath,{}", lib_dir.display()))
    // Keep cargo install's scratch build out of the workspace's target dir.
    .env_remove("CARGO_TARGET_DIR");
    run(&mut cmd).context(
        "building bpf-linker failed; see the cargo output above (TOOLCHAIN.md has the manual recipe)",
    )?;
    output(Command::new(&bin).arg("--version"))
        .with_context(|| format!("{} was installed but does not run (`--version` failed)", bin.display()))?;
    fs::write(&stamp, &want).with_context(|| format!("writing {}", stamp.display()))?;
    Ok(())
}

fn dpkg_installed(pkg: &str) -> bool {
    output(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]))
        .is_some_and(|s| s.ends_with("install ok installed"))
}

/// Ensures the apt packages the tests and the bench use. Skips apt (with a
/// message) when not root; a missing required package is then an error.
pub fn apt_packages() -> Result<()> {
    if util::which("dpkg-query").is_none() {
        eprintln!("xtask: warning: no dpkg-query: not a Debian system, skipping apt packages");
        return check_required_tools();
    }
    let missing: Vec<&str> =
        APT_REQUIRED.iter().chain(APT_OPTIONAL).copied().filter(|p| !dpkg_installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !util::is_root() {
        eprintln!(
            "xtask: not root, so not running apt-get; missing packages: {}\n\
             xtask: install them with `sudo apt-get install {}`",
            missing.join(" "),
            missing.join(" ")
        );
        return check_required_tools();
    }
    eprintln!("xtask: installing apt packages: {}", missing.join(" "));
    apt_update();
    for pkg in missing {
        let mut candidates = vec![pkg];
        if pkg == "bpftool" {
            candidates.extend(BPFTOOL_FALLBACKS);
        }
        let ok = candidates
            .iter()
            .any(|c| run(&mut apt(&["install", "-y", "-q", "--no-install-recommends", c])).is_ok());
        if !ok {
            if APT_REQUIRED.contains(&pkg) {
                bail!("could not install the required package {pkg}: run `apt-get install {pkg}` and read its error");
            }
            eprintln!(
                "xtask: warning: could not install optional package {pkg}; tests that need it will say so"
            );
        }
    }
    Ok(())
}

/// `apt-get ARGS`, non-interactive, waiting for another apt (unattended upgrades, a
/// parallel job) to release the dpkg lock instead of failing.
fn apt(args: &[&str]) -> Command {
    let mut cmd = Command::new("apt-get");
    cmd.args(["-o", "DPkg::Lock::Timeout=600"]).args(args).env("DEBIAN_FRONTEND", "noninteractive");
    cmd
}

/// `apt-get update`; on failure the existing package lists are used.
fn apt_update() {
    if let Err(e) = run(&mut apt(&["update", "-q"])) {
        eprintln!("xtask: warning: {e:#}; trying to install from the existing package lists");
    }
}

/// Installs these packages (root), waiting for another apt's lock.
pub fn apt_install(pkgs: &[&str]) -> Result<()> {
    apt_update();
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend_from_slice(pkgs);
    run(&mut apt(&args)).with_context(|| format!("apt-get install {} failed", pkgs.join(" ")))
}

/// Without apt, check for the commands the required packages provide.
fn check_required_tools() -> Result<()> {
    let sbin = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip"].iter().any(|p| Path::new(p).exists());
    if util::which("ip").is_none() && !sbin {
        bail!("`ip` (iproute2) is required by the tests and is not installed");
    }
    Ok(())
}
