//! Small helpers shared by the xtask commands: paths, privilege, running commands.

use std::{
    env,
    ffi::OsString,
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
};

use anyhow::{bail, Context as _, Result};

/// The workspace root (the parent of this crate's manifest directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives inside the workspace").to_path_buf()
}

/// The cargo target directory: `$CARGO_TARGET_DIR` if set, else `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        }
        _ => workspace_root().join("target"),
    }
}

/// Where bootstrap installs its tools (bpf-linker): `$TRACER_TOOLS_DIR` if set,
/// else `<target>/tools`. Binaries go to `<tools>/bin`.
pub fn tools_dir() -> PathBuf {
    match env::var_os("TRACER_TOOLS_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                env::current_dir().unwrap_or_else(|_| workspace_root()).join(dir)
            }
        }
        _ => target_dir().join("tools"),
    }
}

/// The `tracer` binary for a profile ("release" or "debug").
pub fn tracer_bin(profile: &str) -> PathBuf {
    target_dir().join(profile).join("tracer")
}

/// `PATH` with `<tools>/bin` and `~/.cargo/bin` first, so that aya-build finds
/// bpf-linker and the rustup proxies (`cargo +nightly`).
pub fn path_with_tools() -> OsString {
    let mut dirs = vec![tools_dir().join("bin")];
    if let Some(home) = cargo_home() {
        dirs.push(home.join("bin"));
    }
    if let Some(path) = env::var_os("PATH") {
        dirs.extend(env::split_paths(&path));
    }
    dirs.dedup();
    env::join_paths(dirs).expect("PATH entries contain no ':'")
}

fn cargo_home() -> Option<PathBuf> {
    env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
}

/// A `cargo` command, optionally for a toolchain (`+nightly`), with the tools on PATH.
///
/// `cargo xtask` runs inside `cargo run`, which exports variables meant for the
/// xtask build (`RUSTC`, `RUSTUP_TOOLCHAIN`, ...); they would pin the inner cargo to
/// the outer toolchain, so they are removed.
pub fn cargo(toolchain: Option<&str>) -> Command {
    let mut cmd = Command::new("cargo");
    if let Some(tc) = toolchain {
        cmd.arg(format!("+{tc}"));
    }
    scrub_cargo_env(&mut cmd);
    cmd.env("PATH", path_with_tools());
    cmd
}

/// Removes the variables the outer `cargo run` exported for the xtask build.
pub fn scrub_cargo_env(cmd: &mut Command) {
    for var in ["RUSTC", "RUSTDOC", "RUSTUP_TOOLCHAIN", "CARGO"] {
        cmd.env_remove(var);
    }
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Whether `program` is an executable file in `PATH`.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path).map(|dir| dir.join(program)).find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    p.metadata().map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

/// Renders a command the way a user would type it, for messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        let a = arg.to_string_lossy();
        if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '\'' || c == '"') {
            s.push_str(&format!("'{}'", a.replace('\'', r"'\''")));
        } else {
            s.push_str(&a);
        }
    }
    s
}

/// Runs a command with inherited stdio; fails with the command line if it fails.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = status(cmd)?;
    if !status.success() {
        bail!("`{}` failed ({status})", describe(cmd));
    }
    Ok(())
}

/// Runs a command with inherited stdio and returns its exit status.
pub fn status(cmd: &mut Command) -> Result<ExitStatus> {
    eprintln!("xtask: $ {}", describe(cmd));
    cmd.status().with_context(|| format!("could not start `{}`", describe(cmd)))
}

/// Runs a long-lived foreground command (the tracer, the tests) and returns its
/// exit status. Ctrl-C reaches the whole process group; xtask outlives it so that
/// the child can flush its last lines and xtask can pass its exit code on.
pub fn status_foreground(cmd: &mut Command) -> Result<ExitStatus> {
    extern "C" fn ignore(_: libc::c_int) {}
    // A handler, not SIG_IGN: handlers are reset to the default on exec, so the
    // child still gets the signals; an ignored disposition would be inherited.
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGQUIT] {
        // SAFETY: installing an async-signal-safe no-op handler.
        unsafe { libc::signal(sig, ignore as extern "C" fn(libc::c_int) as libc::sighandler_t) };
    }
    status(cmd)
}

/// Runs a command quietly and returns its trimmed stdout if it succeeded.
pub fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.stdin(Stdio::null()).stderr(Stdio::null()).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Maps an exit status to a process exit code (signals become 128 + signo).
pub fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt as _;
    status.code().or_else(|| status.signal().map(|s| 128 + s)).unwrap_or(1)
}
