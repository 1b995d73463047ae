//! `cargo xtask golden`: re-record the golden traces of `tracer-user/testdata/golden/`.
//!
//! Builds the release `tracer`, then runs the ignored test
//! `tests/tests/golden_record.rs` as root: the real tracer records while each incident
//! scenario plays on this kernel, and `<scenario>.jsonl` is rewritten. The hand-written
//! `<scenario>.expected.json` files are left alone: after re-recording, run
//! `cargo test -p tracer-user --test golden` and check any difference against the
//! incident, never by copying the new output into the expectations.

use std::ffi::OsString;

use anyhow::Result;

use crate::util::{self, exit_code};

#[derive(clap::Args)]
pub struct Options {
    /// Only these scenarios (comma-separated), e.g. `kubepods,rp_filter`.
    #[arg(long, value_name = "NAMES")]
    pub only: Option<String>,
    /// Arguments for the test binary, after `--`.
    #[arg(last = true)]
    pub args: Vec<OsString>,
}

pub fn run(opts: &Options) -> Result<i32> {
    let bin = util::tracer_bin("release");
    let cargo_bin = util::which("cargo").unwrap_or_else(|| "cargo".into());
    let mut cmd = crate::as_root(&cargo_bin, "record the golden traces")?;
    if !util::is_root() {
        cmd.arg("env").arg(format!("PATH={}", util::path_with_tools().to_string_lossy()));
        if let Some(only) = &opts.only {
            cmd.arg(format!("GOLDEN_ONLY={only}"));
        }
        cmd.arg(format!("TRACER_BIN={}", bin.display()));
        cmd.arg(&cargo_bin);
    }
    util::scrub_cargo_env(&mut cmd);
    cmd.env("PATH", util::path_with_tools()).env("TRACER_BIN", &bin);
    if let Some(only) = &opts.only {
        cmd.env("GOLDEN_ONLY", only);
    }
    cmd.args(["test", "--release", "-p", "tracer-tests", "--test", "golden_record"])
        .args(["--", "--ignored", "--test-threads=1", "--nocapture"])
        .args(&opts.args);
    let status = util::status_foreground(&mut cmd)?;
    if status.success() {
        eprintln!(
            "xtask: golden traces written to tracer-user/testdata/golden; now run \
             `cargo test -p tracer-user --test golden` and check any difference against the \
             incident before committing"
        );
    } else {
        eprintln!("xtask: recording the golden traces failed ({status})");
    }
    Ok(exit_code(status))
}
