//! `cargo xtask demo`: build the release `tracer` and the `tracer-demo` binary (crate
//! `tracer-tests`, `tests/src/bin/demo.rs`), then run the demo as root: the incidents of
//! docs/DESIGN.md are reproduced with the real components while `tracer tail` runs,
//! each in its own sandbox, cleaned up afterwards.

use std::ffi::OsString;
use std::path::Path;

use anyhow::{bail, Result};

use crate::util::{self, exit_code};

#[derive(clap::Args)]
pub struct Options {
    /// Only these scenarios (repeatable or comma-separated), e.g. `rp_filter,networkd`.
    #[arg(long, value_name = "NAMES")]
    pub only: Vec<String>,
    /// List the scenarios and what each shows, and exit.
    #[arg(long)]
    pub list: bool,
    /// Colour: auto (when stdout is a terminal), always, never.
    #[arg(long, default_value = "auto", value_parser = ["auto", "always", "never"])]
    pub color: String,
    /// Further arguments for tracer-demo, after `--` (e.g. `-- --pause 2`).
    #[arg(last = true)]
    pub args: Vec<OsString>,
}

pub fn run(opts: &Options) -> Result<i32> {
    crate::need_root_or_sudo("demo")?;
    crate::bootstrap::toolchain()?;
    if util::is_root() {
        crate::bootstrap::apt_packages()?;
    } else {
        eprintln!("xtask: not root: skipping apt packages (run `cargo xtask bootstrap --apt` as root)");
    }
    crate::build("release")?;
    let mut cmd = util::cargo(None);
    // The demo and the helpers its scenarios run (found beside the tracer).
    cmd.args([
        "build",
        "--release",
        "-p",
        "tracer-tests",
        "--bin",
        "tracer-demo",
        "--bin",
        "tracer-cgroup-attach",
    ]);
    util::run(&mut cmd)?;
    let tracer = util::tracer_bin("release");
    let demo = tracer.with_file_name("tracer-demo");
    if !demo.exists() {
        bail!("cargo succeeded but {} does not exist", demo.display());
    }
    // Through env(1), so that TRACER_BIN survives sudo when not root.
    let mut cmd = crate::as_root(Path::new("/usr/bin/env"), "run the demo")?;
    cmd.arg(format!("TRACER_BIN={}", tracer.display())).arg(&demo);
    for o in &opts.only {
        cmd.arg("--only").arg(o);
    }
    if opts.list {
        cmd.arg("--list");
    }
    cmd.args(["--color", &opts.color]).args(&opts.args);
    Ok(exit_code(util::status_foreground(&mut cmd)?))
}
