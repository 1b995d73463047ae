//! Loading and attaching the kernel programs, one hook at a time.
//!
//! A hook that cannot load or attach is reported with the kernel's reason (the verifier
//! log included) and the others run: the tracer works with what it could attach.
//!
//! Three hook families can run in two modes ([`HookMode`], [`FAMILIES`]): on kernel
//! functions (fentry/fexit; no program runs on unrelated syscalls) where the kernel
//! loads BPF trampolines, else on the `sys_enter`/`sys_exit` tracepoints, which every
//! syscall on the node passes. `auto` asks the kernel ([`kfunc_probe`]) and falls back
//! family by family; the header and `tracer check` say which mode each runs in and why.

use std::fs::File;
use std::path::{Path, PathBuf};

use aya::programs::{CgroupAttachMode, CgroupSysctl, Program, RawTracePoint};
use aya::{Ebpf, EbpfLoader};
use thiserror::Error;
use tracer_common::{family, Offsets};

use crate::kernel::btf_offsets::{self, OffsetError};
use crate::kernel::kfunc_probe;
use crate::kernel::privileges::Privileges;
use crate::stream::schema::{FamilyMode, HookState, HookStatus};

/// The programs, built by build.rs from `tracer-ebpf` (aya-build).
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer"));

/// What a hook watches and where it attaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hook {
    /// Program name in the object.
    pub program: &'static str,
    /// Kernel attach point: a raw tracepoint name, or `cgroup2 root` for the sysctl hook.
    pub attach: &'static str,
    /// The event kinds it produces.
    pub produces: &'static str,
}

/// Where the hook families with two modes run (`--hook-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum HookMode {
    /// Kernel functions where the kernel loads them, family by family; the syscall
    /// tracepoints for the rest.
    #[default]
    Auto,
    /// Kernel functions only: an error where the kernel refuses them.
    Kfunc,
    /// The syscall tracepoints only (every syscall on the node runs two programs).
    Syscall,
}

impl HookMode {
    fn flag(self) -> &'static str {
        match self {
            HookMode::Auto => "--hook-mode auto",
            HookMode::Kfunc => "--hook-mode kfunc",
            HookMode::Syscall => "--hook-mode syscall",
        }
    }
}

/// A hook family that runs on kernel functions or on the syscall tracepoints.
#[derive(Debug)]
pub struct Family {
    /// `tracer_common::family` bit.
    pub bit: u32,
    /// As in the header's `hook_modes`.
    pub name: &'static str,
    /// The kernel function its fentry/fexit programs attach to.
    pub function: &'static str,
    /// Those programs.
    pub programs: &'static [&'static str],
    /// What `sys_enter`/`sys_exit` look at for it in the syscall mode.
    pub syscalls: &'static str,
}

pub const FAMILIES: &[Family] = &[
    Family {
        bit: family::CGROUP_WRITE,
        name: "cgroup_write",
        function: "cgroup_file_write",
        programs: &["fentry_cg_write", "fexit_cg_write"],
        syscalls: "write, pwrite64, writev, pwritev, pwritev2 (and opens, to know who holds cgroupfs files)",
    },
    Family {
        bit: family::NETLINK,
        name: "netlink",
        function: "rtnetlink_rcv_msg",
        programs: &["fexit_rtnl_msg"],
        syscalls: "sendto, sendmsg (first iovec)",
    },
    Family {
        bit: family::CGROUP_BPF,
        name: "cgroup_bpf",
        function: "__x64_sys_bpf",
        programs: &["fentry_bpf", "fexit_bpf"],
        syscalls: "bpf",
    },
];

/// The syscall tracepoint programs: attached while a family runs in the syscall mode.
const SYSCALL_PROGRAMS: &[&str] = &["sys_exit", "sys_enter"];

/// Every hook, in attach order. The process hooks go first so the process table
/// knows the actors of the first changes. The kernel-function programs of
/// [`FAMILIES`] and the syscall ones are attached as the modes say.
pub const HOOKS: &[Hook] = &[
    Hook { program: "sched_process_exec", attach: "sched_process_exec", produces: "process table (exec)" },
    Hook { program: "sched_process_fork", attach: "sched_process_fork", produces: "process table (fork)" },
    Hook { program: "sched_process_exit", attach: "sched_process_exit", produces: "process table (exit)" },
    Hook { program: "sys_exit", attach: "sys_exit", produces: "cgroup_write and cgroup_bpf results" },
    Hook {
        program: "sys_enter",
        attach: "sys_enter",
        produces: "cgroup_write, route/rule/addr/link requests, cgroup_bpf_attach/detach",
    },
    Hook { program: "fentry_cg_write", attach: "cgroup_file_write", produces: "cgroup_write" },
    Hook { program: "fexit_cg_write", attach: "cgroup_file_write", produces: "cgroup_write results" },
    Hook {
        program: "fexit_rtnl_msg",
        attach: "rtnetlink_rcv_msg",
        produces: "route/rule/addr/link requests, with the kernel's answer",
    },
    Hook { program: "fentry_bpf", attach: "__x64_sys_bpf", produces: "cgroup_bpf_attach/detach" },
    Hook { program: "fexit_bpf", attach: "__x64_sys_bpf", produces: "cgroup_bpf results" },
    Hook { program: "cgroup_mkdir", attach: "cgroup_mkdir", produces: "cgroup_mkdir" },
    Hook { program: "cgroup_rmdir", attach: "cgroup_rmdir", produces: "cgroup_rmdir" },
    Hook { program: "signal_generate", attach: "signal_generate", produces: "signal" },
    Hook { program: "sysctl_write", attach: "cgroup2 root", produces: "sysctl_write" },
];

/// Why the tracer cannot start at all.
#[derive(Debug, Error)]
pub enum LoadError {
    #[error(transparent)]
    Offsets(#[from] OffsetError),
    #[error("{0}")]
    Privileges(String),
    #[error("this tracer binary was built without its eBPF programs (AYA_BUILD_SKIP was set); build it with `cargo xtask build`")]
    NoObject,
    /// The kernel refused the object as a whole (its maps, BTF or a program).
    #[error("cannot load the eBPF object")]
    Object(#[source] aya::EbpfError),
    /// A map the programs share with userspace is missing or of another type.
    #[error("the eBPF object's map {name} is missing or not what tracer expects")]
    Map {
        name: &'static str,
        #[source]
        source: Option<aya::maps::MapError>,
    },
    /// A resource of the tracer's own (an eventfd, its ring-buffer thread).
    #[error("cannot create {what}")]
    Resource {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The benchmark floor's programs did not attach.
    #[error("cannot attach the benchmark floor: {0}")]
    Floor(String),
    #[error("no hook could be attached:\n{0}")]
    NothingAttached(String),
    /// `--hook-mode kfunc` on a kernel that refuses them.
    #[error(
        "--hook-mode kfunc: {0}; use --hook-mode auto (falls back to the syscall tracepoints) or syscall"
    )]
    KfuncRefused(String),
}

/// The ring buffer's default size in MiB (`--ringbuf-mib`), sized by the storm bench
/// (BENCHMARKS.md, "Ring buffer size"): its pages are mapped twice and count twice in
/// the tracer's RSS, and the ring thread's chunks absorb what it cannot
/// (`session/live.rs`).
pub const DEFAULT_RINGBUF_MIB: u32 = 2;

/// Load-time options.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Ring buffer size in bytes (a power of two, multiple of the page size).
    pub ringbuf_bytes: u32,
    /// cgroup v2 mount to attach the sysctl program to; found in mountinfo when `None`.
    pub cgroup2_root: Option<PathBuf>,
    /// Only these programs (for benchmarks); all when empty.
    pub only: Vec<String>,
    pub hook_mode: HookMode,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            ringbuf_bytes: DEFAULT_RINGBUF_MIB << 20,
            cgroup2_root: None,
            only: Vec::new(),
            hook_mode: HookMode::Auto,
        }
    }
}

/// The loaded programs and what became of each hook.
pub struct Loaded {
    pub ebpf: Ebpf,
    pub hooks: Vec<HookStatus>,
    pub offsets: Offsets,
    /// Controller names by subsystem id (bit order of `subtree_control`).
    pub controllers: Vec<String>,
    pub cgroup2_root: Option<PathBuf>,
    /// The mode of each family of [`FAMILIES`].
    pub modes: Vec<FamilyMode>,
    /// `tracer_common::family` bits of the families on kernel functions.
    pub kfunc_families: u32,
}

impl Loaded {
    pub fn attached(&self) -> usize {
        self.hooks.iter().filter(|h| h.state == HookState::Attached).count()
    }

    /// Whether `bit`'s family runs on kernel functions.
    pub fn on_kfunc(&self, bit: u32) -> bool {
        self.kfunc_families & bit != 0
    }
}

/// The families to put on kernel functions before loading, and why each goes where it
/// goes: the mode asked for, and in `auto` the kernel's answer to [`kfunc_probe`] and
/// whether each function is in its BTF.
fn plan_modes(mode: HookMode, btf: &btf_rs::Btf) -> Result<(u32, Vec<String>), LoadError> {
    let mut why = vec![String::new(); FAMILIES.len()];
    match mode {
        HookMode::Syscall => {
            why.iter_mut().for_each(|w| *w = mode.flag().into());
            return Ok((0, why));
        }
        HookMode::Kfunc => {
            kfunc_probe::probe_with(btf).map_err(LoadError::KfuncRefused)?;
            why.iter_mut().for_each(|w| *w = mode.flag().into());
            return Ok((family::ALL, why));
        }
        HookMode::Auto => {}
    }
    if let Err(e) = kfunc_probe::probe_with(btf) {
        why.iter_mut().for_each(|w| *w = format!("the kernel refuses BPF trampolines: {e}"));
        return Ok((0, why));
    }
    let mut mask = 0;
    for (f, w) in FAMILIES.iter().zip(why.iter_mut()) {
        if btf.resolve_ids_by_name(f.function).is_ok() {
            mask |= f.bit;
            *w = "BPF trampolines load here".into();
        } else {
            *w = format!("{} is not in the kernel's BTF", f.function);
        }
    }
    Ok((mask, why))
}

fn family_modes(kfunc: u32, why: &[String]) -> Vec<FamilyMode> {
    FAMILIES
        .iter()
        .zip(why)
        .map(|(f, w)| {
            let on = kfunc & f.bit != 0;
            FamilyMode {
                family: f.name.into(),
                mode: if on { "kfunc" } else { "syscall" }.into(),
                at: if on {
                    let kinds: Vec<&str> =
                        f.programs.iter().map(|p| p.split('_').next().unwrap_or("")).collect();
                    format!("{} {}", kinds.join("/"), f.function)
                } else {
                    format!("sys_enter/sys_exit: {}", f.syscalls)
                },
                why: w.clone(),
            }
        })
        .collect()
}

/// Whether `hook` is attached when the families in `kfunc` run on kernel functions.
fn in_use(hook: &Hook, kfunc: u32) -> bool {
    if SYSCALL_PROGRAMS.contains(&hook.program) {
        return kfunc != family::ALL;
    }
    match FAMILIES.iter().find(|f| f.programs.contains(&hook.program)) {
        Some(f) => kfunc & f.bit != 0,
        None => true,
    }
}

/// Resolves offsets, checks privileges, loads the object and attaches every hook it can.
pub fn load(opts: &LoadOptions) -> Result<Loaded, LoadError> {
    if EBPF_OBJECT.is_empty() {
        return Err(LoadError::NoObject);
    }
    let privs = Privileges::current();
    if let Some(msg) = privs.missing_for_tracing() {
        return Err(LoadError::Privileges(msg));
    }
    let btf = btf_offsets::open(Path::new(btf_offsets::VMLINUX_BTF))?;
    let offsets = btf_offsets::resolve(&btf)?;
    let controllers = btf_offsets::controllers(&btf);
    // In a pod: see cgroups as the host does, and know our PID as the kernel does.
    match crate::kernel::hostns::enter_host_cgroupns() {
        crate::kernel::hostns::CgroupNs::Host => {}
        crate::kernel::hostns::CgroupNs::Entered => {
            tracing::info!("joined the host's cgroup namespace (PID 1's)")
        }
        crate::kernel::hostns::CgroupNs::Private(why) => {
            tracing::warn!("staying in a private cgroup namespace: {why}")
        }
        crate::kernel::hostns::CgroupNs::Unknown(why) => {
            tracing::info!("cgroup namespace left as it is: {why}")
        }
    }
    let tgid = crate::kernel::hostns::own_kernel_tgid();
    let (mut kfunc, mut why) = plan_modes(opts.hook_mode, &btf)?;
    drop(btf);
    let cgroup2_root = opts.cgroup2_root.clone().or_else(find_cgroup2_root);
    // aya's reading of the kernel's BTF names the functions of fentry/fexit programs.
    let mut aya_btf = None;
    loop {
        if kfunc != 0 && aya_btf.is_none() {
            aya_btf = Some(aya::Btf::from_sys_fs().map_err(|e| {
                LoadError::KfuncRefused(format!("cannot read the kernel's BTF for fentry/fexit: {e}"))
            })?);
        }
        // `EbpfLoader::new` reads the kernel's BTF on its own (about 25 ms of start-up;
        // aya 0.14 offers no way around it). The programs carry no CO-RE relocations
        // (every offset comes from `OFFSETS`), so that reading is only needed to name
        // the functions of fentry/fexit: `aya_btf`, read once for every attempt.
        let mut loader = EbpfLoader::new();
        loader.btf(aya_btf.as_ref());
        let mut ebpf = loader
            .override_global("OFFSETS", &offsets, true)
            .override_global("TRACER_TGID", &tgid, true)
            .override_global("KFUNC_FAMILIES", &kfunc, true)
            .map_max_entries("EVENTS", opts.ringbuf_bytes)
            .load(EBPF_OBJECT)
            .map_err(LoadError::Object)?;

        let mut hooks = Vec::new();
        for hook in HOOKS {
            if !in_use(hook, kfunc) || (!opts.only.is_empty() && !opts.only.iter().any(|o| o == hook.program))
            {
                continue;
            }
            let result = attach(&mut ebpf, hook, cgroup2_root.as_deref(), &privs, aya_btf.as_ref());
            let (state, error) = match result {
                Ok(()) => (HookState::Attached, None),
                Err((stage, msg)) => (stage, Some(msg)),
            };
            hooks.push(HookStatus { name: hook.program.to_string(), state, error });
        }
        // In `auto`, a family whose kernel-function programs did not all attach goes
        // back to the syscall tracepoints, with the kernel's reason (one more load).
        let mut refused = 0;
        if opts.hook_mode == HookMode::Auto {
            for (i, f) in FAMILIES.iter().enumerate() {
                let failed = hooks
                    .iter()
                    .find(|h| f.programs.contains(&h.name.as_str()) && h.state != HookState::Attached);
                if let Some(h) = failed {
                    refused |= f.bit;
                    why[i] = format!(
                        "{} {} on {}: {}",
                        h.name,
                        h.state,
                        f.function,
                        h.error.as_deref().unwrap_or("?")
                    );
                }
            }
        }
        if refused != 0 {
            tracing::warn!("kernel functions refused for some hooks; loading again with the syscall tracepoints for them");
            kfunc &= !refused;
            continue;
        }
        let modes = family_modes(kfunc, &why);
        let loaded = Loaded { ebpf, hooks, offsets, controllers, cgroup2_root, modes, kfunc_families: kfunc };
        if loaded.attached() == 0 {
            let why = loaded
                .hooks
                .iter()
                .map(|h| format!("  {}: {}", h.name, h.error.as_deref().unwrap_or("?")))
                .collect::<Vec<_>>()
                .join("\n");
            return Err(LoadError::NothingAttached(why));
        }
        return Ok(loaded);
    }
}

/// Loads and attaches one hook; on failure, the stage that failed and why.
fn attach(
    ebpf: &mut Ebpf,
    hook: &Hook,
    cgroup2_root: Option<&Path>,
    privs: &Privileges,
    btf: Option<&aya::Btf>,
) -> Result<(), (HookState, String)> {
    let load_err = |e: String| (HookState::NotLoaded, e);
    let attach_err = |e: String| (HookState::NotAttached, e);
    let prog = ebpf
        .program_mut(hook.program)
        .ok_or_else(|| load_err(format!("program {} missing from the eBPF object", hook.program)))?;
    let at = |e: &dyn std::error::Error| attach_err(format!("attach to {}: {}", hook.attach, error_chain(e)));
    match &mut *prog {
        Program::FEntry(p) => {
            let btf = btf.ok_or_else(|| load_err("no kernel BTF for fentry".into()))?;
            p.load(hook.attach, btf).map_err(|e| load_err(error_chain(&e)))?;
            return p.attach().map(drop).map_err(|e| at(&e));
        }
        Program::FExit(p) => {
            let btf = btf.ok_or_else(|| load_err("no kernel BTF for fexit".into()))?;
            p.load(hook.attach, btf).map_err(|e| load_err(error_chain(&e)))?;
            return p.attach().map(drop).map_err(|e| at(&e));
        }
        _ => {}
    }
    if hook.program == "sysctl_write" {
        let p: &mut CgroupSysctl = prog.try_into().map_err(|e| load_err(error_chain(&e)))?;
        p.load().map_err(|e| load_err(error_chain(&e)))?;
        if !privs.net_admin {
            return Err(attach_err(
                "attaching a cgroup/sysctl program needs CAP_NET_ADMIN (or CAP_SYS_ADMIN)".into(),
            ));
        }
        let root = cgroup2_root.ok_or_else(|| {
            attach_err("no cgroup2 hierarchy root found (looked at our mounts and PID 1's); mount one or pass --cgroup2-root".into())
        })?;
        let dir = File::open(root)
            .map_err(|e| attach_err(format!("cannot open cgroup2 root {}: {e}", root.display())))?;
        // aya attaches through a bpf_link where the kernel has them (5.7+); links never
        // exclude other programs on the same cgroup, and link_create rejects the
        // BPF_F_ALLOW_MULTI flag (EINVAL), so "Single" is the mode that works here.
        p.attach(dir, CgroupAttachMode::Single)
            .map_err(|e| attach_err(format!("attach at {}: {}", root.display(), error_chain(&e))))?;
    } else {
        attach_raw(ebpf, hook.program, hook.attach)?;
    }
    Ok(())
}

fn attach_raw(ebpf: &mut Ebpf, program: &str, tracepoint: &str) -> Result<(), (HookState, String)> {
    let prog = ebpf
        .program_mut(program)
        .ok_or_else(|| (HookState::NotLoaded, format!("program {program} missing from the eBPF object")))?;
    let p: &mut RawTracePoint = prog.try_into().map_err(|e| (HookState::NotLoaded, error_chain(&e)))?;
    p.load().map_err(|e| (HookState::NotLoaded, error_chain(&e)))?;
    p.attach(tracepoint).map_err(|e| {
        (HookState::NotAttached, format!("attach to raw tracepoint {tracepoint}: {}", error_chain(&e)))
    })?;
    Ok(())
}

/// The floor of the benchmark: empty programs on `sys_enter` and `sys_exit`.
pub fn load_floor() -> Result<Ebpf, LoadError> {
    if EBPF_OBJECT.is_empty() {
        return Err(LoadError::NoObject);
    }
    let mut ebpf = EbpfLoader::new().load(EBPF_OBJECT).map_err(LoadError::Object)?;
    for (prog, tp) in [("floor_sys_enter", "sys_enter"), ("floor_sys_exit", "sys_exit")] {
        attach_raw(&mut ebpf, prog, tp).map_err(|(_, e)| LoadError::Floor(e))?;
    }
    Ok(ebpf)
}

/// An error with its sources, the verifier log included (aya keeps it in the error).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(src) = cur {
        let t = src.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = src.source();
    }
    s
}

/// The host's cgroup2 hierarchy root: one of our mounts if it really is the root (not a
/// mount of a sub-cgroup, as in a container with a private cgroup namespace), else PID
/// 1's through `/proc/1/root` ([`crate::kernel::hostns`]).
pub fn find_cgroup2_root() -> Option<PathBuf> {
    let found = crate::kernel::hostns::host_cgroup2_root()?;
    tracing::debug!("cgroup2 root {} (via {})", found.path.display(), found.via);
    Some(found.path)
}

/// mountinfo(5): `id parent major:minor root mount_point options ... - fstype source super`.
pub fn cgroup2_root_in(mountinfo: &str) -> Option<PathBuf> {
    for line in mountinfo.lines() {
        let Some((pre, post)) = line.split_once(" - ") else { continue };
        if !post.starts_with("cgroup2 ") {
            continue;
        }
        let fields: Vec<&str> = pre.split(' ').collect();
        if fields.len() >= 5 && fields[3] == "/" {
            return Some(PathBuf::from(unescape_mount(fields[4])));
        }
    }
    None
}

fn unescape_mount(s: &str) -> String {
    s.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup2_root_skips_bind_mounts_of_subtrees() {
        let mi = "\
30 24 0:26 /kubepods.slice /sys/fs/cgroup/x rw - cgroup2 cgroup2 rw
31 24 0:27 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
32 24 0:26 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
        assert_eq!(cgroup2_root_in(mi), Some(PathBuf::from("/sys/fs/cgroup/unified")));
        assert_eq!(cgroup2_root_in("31 24 0:27 / /x rw - cgroup cgroup rw"), None);
    }
}
