//! `cargo xtask`: bootstrap, build, run, test and bench the tracer.
//!
//! The eBPF crate is built by `tracer-user/build.rs` (aya-build) with the nightly
//! toolchain and `bpf-linker`; this tool makes sure both are there first, so that
//! one command works on a fresh machine.

mod bench;
mod bootstrap;
mod demo;
mod golden;
mod util;
mod vm;

use std::{
    ffi::OsString,
    process::{Command, ExitCode},
};

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};

use crate::util::{cargo, exit_code, is_root, tracer_bin};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Build, run, test and benchmark tracer",
    long_about = "Build, run, test and benchmark tracer.\n\n\
        Every command first installs what is missing (the nightly rust-src component, \
        bpf-linker built against the nightly's libLLVM into target/tools; apt packages for \
        `test`), so it works on a fresh machine.\n\n\
        Environment:\n  \
        TRACER_TOOLS_DIR  where bootstrap installs bpf-linker (default: <target>/tools)\n  \
        CARGO_TARGET_DIR  the cargo target directory (default: <workspace>/target)",
    after_help = "Examples:\n  \
        cargo xtask run -- tail             live tail of node changes (as root)\n  \
        cargo xtask run -- tail --json      the same, as schema-v1 JSON lines\n  \
        cargo xtask test                    all tests, kernel ones included (as root)\n  \
        cargo xtask test --vm               the same, then the VM suite (Debian 6.1/6.12, systemd as PID 1)\n  \
        cargo xtask vm --kernel 6.12 --only incidents -- networkd\n                                            one kernel, one step, tests named like `networkd`\n  \
        cargo xtask lint                    rustfmt and clippy -D warnings, as CI runs them\n  \
        cargo xtask test -- cgroup          only tests whose name contains `cgroup`\n  \
        cargo xtask bench --quick           a quick write-tax benchmark"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(clap::Args)]
struct Profile {
    /// Build with the release profile (the default).
    #[arg(long, conflicts_with = "debug")]
    release: bool,
    /// Build with the dev profile (target/debug/tracer).
    #[arg(long)]
    debug: bool,
}

impl Profile {
    fn name(&self) -> &'static str {
        if self.debug {
            "debug"
        } else {
            "release"
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Install missing tools, then build the eBPF object and the `tracer` binary.
    Build {
        #[command(flatten)]
        profile: Profile,
    },
    /// Build, then run `tracer ARGS...` as root (default ARGS: `tail`).
    ///
    /// Re-runs the binary through `sudo -E` when not root.
    Run {
        #[command(flatten)]
        profile: Profile,
        /// Arguments for the tracer binary, after `--` (e.g. `-- tail --json`).
        #[arg(last = true)]
        args: Vec<OsString>,
    },
    /// Install missing tools and apt packages, build, and run the whole test suite as root.
    ///
    /// Runs `cargo test --release --no-fail-fast --workspace --exclude tracer-ebpf -- --test-threads=1`
    /// with TRACER_BIN set to the built binary. Arguments after `--` go to the test
    /// binaries (a name filter, `--nocapture`, ...).
    Test {
        /// Then run the VM suite too (`cargo xtask vm`: Debian's 6.1 and 6.12 kernels,
        /// systemd as PID 1, the real components); the run fails if either fails.
        #[arg(long)]
        vm: bool,
        /// Arguments for the test binaries, after `--`.
        #[arg(last = true)]
        args: Vec<OsString>,
    },
    /// Measure the tax tracer puts on every unrelated write() (as root).
    ///
    /// Times a loop of 1-byte writes to /dev/null with no tracer, with an empty program
    /// on the same hook (`tracer bench-floor`, the floor), with `tracer tail --json`,
    /// and with bpftrace doing the same filter; setups are interleaved in rounds and
    /// the medians compared.
    Bench(bench::Options),
    /// Build, then play the incident scenarios with the real components while `tracer
    /// tail` runs (as root), each in its own sandbox, cleaned up afterwards.
    Demo(demo::Options),
    /// Re-record the golden traces (tracer-user/testdata/golden) with the real tracer
    /// while the incident scenarios play (as root).
    Golden(golden::Options),
    /// The suite on real nodes: Debian's 6.1 and 6.12 kernels under qemu, systemd 252 as
    /// PID 1 on pure cgroup v2; `tracer check`, the hooks tests and the incident tests
    /// with the real components inside (as root). The rootfs and kernels are cached in
    /// /var/cache/tracer-vm (TRACER_VM_CACHE).
    Vm(vm::Options),
    /// Check formatting and lints: `cargo fmt --check`, then clippy with `-D warnings` on
    /// the userspace crates and on the eBPF crate (its own target, the nightly).
    Lint,
    /// Only install what is missing (rust-src, bpf-linker, and with --apt the apt packages).
    Bootstrap {
        /// Also install the apt packages the tests use (needs root).
        #[arg(long)]
        apt: bool,
    },
    /// Internal: the timed write loop the bench runs in a child process.
    #[command(hide = true)]
    BenchWriter {
        /// Number of timed calls.
        writes: u64,
        /// The call timed: write (1 byte to /dev/null), read (1 byte from /dev/zero), getppid.
        #[arg(long, default_value = "write")]
        call: bench::Call,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli.command) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a command; the result is the process exit code.
fn dispatch(cmd: Cmd) -> Result<i32> {
    match cmd {
        Cmd::Build { profile } => {
            build(profile.name())?;
            Ok(0)
        }
        Cmd::Run { profile, args } => run_tracer(profile.name(), args),
        Cmd::Test { vm, args } => {
            let host = test(args)?;
            if !vm {
                return Ok(host);
            }
            let opts = vm::Options {
                kernels: vec!["6.1".into(), "6.12".into()],
                only: Vec::new(),
                test_args: Vec::new(),
                timeout: 1500,
                verbose: false,
            };
            let in_vm = vm::run_vm(&opts)?;
            if host != 0 {
                eprintln!("xtask: the tests on this machine failed (exit {host})");
            }
            Ok(if host != 0 { host } else { in_vm })
        }
        Cmd::Bench(opts) => {
            need_root("bench")?;
            if opts.tracer.is_none() {
                build("release")?;
            }
            bench::run(&opts)?;
            Ok(0)
        }
        Cmd::Demo(opts) => demo::run(&opts),
        Cmd::Golden(opts) => {
            need_root_or_sudo("golden")?;
            build("release")?;
            golden::run(&opts)
        }
        Cmd::Lint => lint(),
        Cmd::Vm(opts) => vm::run_vm(&opts),
        Cmd::Bootstrap { apt } => {
            bootstrap::toolchain()?;
            if apt {
                bootstrap::apt_packages()?;
            }
            eprintln!("xtask: bootstrap done; tools in {}", util::tools_dir().display());
            Ok(0)
        }
        Cmd::BenchWriter { writes, call } => {
            bench::writer(writes, call)?;
            Ok(0)
        }
    }
}

/// Bootstraps, then builds `tracer-user` (whose build.rs builds the eBPF crate).
fn build(profile: &str) -> Result<()> {
    bootstrap::toolchain()?;
    let mut cmd = cargo(None);
    cmd.args(["build", "-p", "tracer-user"]);
    if profile == "release" {
        cmd.arg("--release");
    }
    util::run(&mut cmd).context(
        "build failed; see cargo's errors above. Errors in the eBPF crate arrive as \
         `warning: tracer-user@...` lines cut to their first line: for the full errors \
         build it alone with `PATH=target/tools/bin:$PATH cargo +nightly build --release \
         -p tracer-ebpf --target bpfel-unknown-none -Z build-std=core`",
    )?;
    let bin = tracer_bin(profile);
    if !bin.exists() {
        bail!("cargo succeeded but {} does not exist", bin.display());
    }
    eprintln!("xtask: built {}", bin.display());
    Ok(())
}

/// `cargo fmt --check` and clippy on every crate; the first failure stops it.
fn lint() -> Result<i32> {
    bootstrap::toolchain()?;
    let steps: [(&str, Option<&str>, &[&str]); 3] = [
        ("rustfmt", None, &["fmt", "--all", "--check"]),
        (
            "clippy (userspace)",
            None,
            &[
                "clippy",
                "--release",
                "--workspace",
                "--exclude",
                "tracer-ebpf",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
        ),
        (
            "clippy (eBPF)",
            Some("nightly"),
            &[
                "clippy",
                "--release",
                "-p",
                "tracer-ebpf",
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
                "--",
                "-D",
                "warnings",
            ],
        ),
    ];
    for (what, toolchain, args) in steps {
        eprintln!("xtask: lint: {what}");
        let mut cmd = cargo(toolchain);
        cmd.args(args).env("PATH", util::path_with_tools());
        let status = util::status(&mut cmd)?;
        if !status.success() {
            eprintln!("xtask: lint: {what} failed ({status}); `cargo fmt --all` fixes formatting");
            return Ok(exit_code(status));
        }
    }
    eprintln!("xtask: lint: ok");
    Ok(0)
}

fn run_tracer(profile: &str, mut args: Vec<OsString>) -> Result<i32> {
    build(profile)?;
    if args.is_empty() {
        args.push("tail".into());
    }
    let mut cmd = as_root(&tracer_bin(profile), "run the tracer")?;
    cmd.args(args);
    Ok(exit_code(util::status_foreground(&mut cmd)?))
}

fn test(args: Vec<OsString>) -> Result<i32> {
    need_root_or_sudo("test")?;
    bootstrap::toolchain()?;
    if is_root() {
        bootstrap::apt_packages()?;
    } else {
        eprintln!("xtask: not root: skipping apt packages (run `cargo xtask bootstrap --apt` as root)");
    }
    build("release")?;
    let bin = tracer_bin("release");
    let cargo_bin = util::which("cargo").unwrap_or_else(|| "cargo".into());
    let mut cmd = as_root(&cargo_bin, "run the kernel tests")?;
    if !is_root() {
        // sudo resets PATH; give the inner cargo the same one.
        cmd.arg("env").arg(format!("PATH={}", util::path_with_tools().to_string_lossy()));
        cmd.arg(&cargo_bin);
    }
    util::scrub_cargo_env(&mut cmd);
    cmd.env("PATH", util::path_with_tools());
    cmd.args(["test", "--release", "--no-fail-fast", "--workspace", "--exclude", "tracer-ebpf"])
        .args(["--", "--test-threads=1"])
        .args(args)
        .env("TRACER_BIN", &bin);
    let status = util::status_foreground(&mut cmd)?;
    if !status.success() {
        eprintln!("xtask: tests failed ({status})");
    }
    Ok(exit_code(status))
}

/// A command that runs `program` as root: directly when root, else through `sudo -E`.
fn as_root(program: &std::path::Path, what: &str) -> Result<Command> {
    if is_root() {
        return Ok(Command::new(program));
    }
    match util::which("sudo") {
        Some(sudo) => {
            eprintln!("xtask: not root: using sudo -E to {what}");
            let mut cmd = Command::new(sudo);
            cmd.arg("-E").arg(program);
            Ok(cmd)
        }
        None => bail!(
            "{what} needs root (or CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN) and sudo is not \
             installed: run this command as root"
        ),
    }
}

fn need_root(what: &str) -> Result<()> {
    if !is_root() {
        bail!("`cargo xtask {what}` must run as root: it loads eBPF programs; run it as root (e.g. `sudo -E cargo xtask {what}`)");
    }
    Ok(())
}

fn need_root_or_sudo(what: &str) -> Result<()> {
    if !is_root() && util::which("sudo").is_none() {
        bail!(
            "`cargo xtask {what}` needs root for the kernel tests and sudo is not installed: run it as root"
        );
    }
    Ok(())
}
