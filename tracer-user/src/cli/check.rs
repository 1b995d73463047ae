//! `tracer check`: can tracer run here, and which hooks attach? Loads every hook, reports,
//! detaches. Exits non-zero when nothing can run.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::kernel::loader::{self, LoadOptions, HOOKS};
use crate::kernel::privileges::Privileges;
use crate::kernel::{btf_offsets, cgroup_bpf};
use crate::node::cgroup_driver::{self, Setting};
use crate::node::cri::RuntimeReport;
use crate::pipeline::bpf_names;
use crate::session::live::kernel_release;

#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// cgroup2 mount to attach the sysctl hook to (default: found in /proc/self/mountinfo).
    #[arg(long, value_name = "DIR")]
    pub cgroup2_root: Option<PathBuf>,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Where the node's filesystem is (kubelet's and the container runtime's
    /// configuration are read under it), e.g. /host in a pod.
    #[arg(long, default_value = "/", value_name = "DIR")]
    pub host_root: PathBuf,
    #[command(flatten)]
    pub cri: crate::cli::live_args::CriArgs,
    #[command(flatten)]
    pub bus: crate::cli::live_args::BusArgs,
    #[command(flatten)]
    pub mode: crate::cli::live_args::ModeArgs,
}

fn tracefs_mounted() -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|m| m.lines().any(|l| l.contains(" - tracefs ")))
        .unwrap_or(false)
}

pub fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let privs = Privileges::current();
    let btf_path = Path::new(btf_offsets::VMLINUX_BTF);
    let offsets = btf_offsets::from_file(btf_path);
    let cgroup2 = args.cgroup2_root.clone().or_else(loader::find_cgroup2_root);
    let load = loader::load(&LoadOptions {
        cgroup2_root: args.cgroup2_root.clone(),
        hook_mode: args.mode.hook_mode,
        ..Default::default()
    });

    let mut hooks = Vec::new();
    let mut modes = Vec::new();
    let mut fatal = None;
    match &load {
        Ok(l) => {
            hooks = l.hooks.clone();
            modes = l.modes.clone();
        }
        Err(e) => fatal = Some(format!("{e}")),
    }
    let attached = hooks.iter().filter(|h| h.state == crate::stream::schema::HookState::Attached).count();
    let ok = load.is_ok() && attached > 0;
    drop(load); // detaches everything
    let proc_root = Path::new("/proc");
    let socket_progs = cgroup2.as_deref().map(|root| cgroup_bpf::scan(root, proc_root)).unwrap_or_default();
    let crate::node::NodeReport { drivers, runtime, .. } =
        crate::node::NodeReport::read(&args.host_root, proc_root, args.cri.cri_endpoint.as_deref(), true);
    let mismatch = cgroup_driver::finding(&drivers, crate::stream::schema::Timestamp::now());
    // BPF trampolines: whether a mode on kernel functions could run on this kernel.
    let kfunc = crate::kernel::kfunc_probe::probe();
    // The system bus: whether requests to systemd and networkd will be seen.
    let bus_socket = args.bus.socket(&args.host_root);
    let bus: Result<(), String> = match &bus_socket {
        Some(s) => crate::node::bus::Monitor::start(s).map(drop),
        None => Err("not watched (--dbus-socket none)".into()),
    };
    let setting = |s: &Setting| serde_json::json!({"component": s.component, "driver": s.driver.to_string(), "from": s.from});

    if args.json {
        let v = serde_json::json!({
            "kernel": kernel_release(),
            "btf": { "path": btf_path, "offsets": offsets.as_ref().map(|_| btf_offsets::count()).ok(), "error": offsets.as_ref().err().map(|e| e.to_string()) },
            "privileges": privs.summary(),
            "tracefs": if tracefs_mounted() { "mounted (not needed)" } else { "not mounted (not needed: raw tracepoints)" },
            "cgroup2_root": cgroup2,
            "hooks": hooks,
            "hook_modes": modes,
            "cgroup_socket_programs": socket_progs.iter().map(|a| serde_json::json!({
                "cgroup": a.cgroup,
                "attach_type": bpf_names::attach_type_name(a.attach_type),
                "prog_id": a.prog_id,
                "prog_name": a.prog_name,
                "prog_type": bpf_names::prog_type_name(a.prog_type),
                "link_id": a.link_id,
                "holders": a.holders,
            })).collect::<Vec<_>>(),
            "cri": {
                "socket": runtime.socket,
                "runtime": runtime.version.as_ref().map(|v| serde_json::json!({"name": v.name, "version": v.version, "api_version": v.api_version})),
                "pods": runtime.pods,
                "containers": runtime.containers,
                "runtime_config_cgroup_driver": runtime_config_text(&runtime),
                "problem": runtime.problem,
            },
            "kernel_functions": { "function": crate::kernel::kfunc_probe::FUNCTION, "available": kfunc.is_ok(), "reason": kfunc.as_ref().err() },
            "dbus": { "socket": bus_socket, "monitor": bus.is_ok(), "problem": bus.as_ref().err() },
            "cgroup_drivers": {
                "kubelet": drivers.kubelet.as_ref().map(setting),
                "runtimes": drivers.runtimes.iter().map(setting).collect::<Vec<_>>(),
                "files": drivers.files,
                "problems": drivers.problems,
                "mismatch": mismatch,
            },
            "error": fatal,
            "ok": ok,
        });
        println!("{v}");
    } else {
        println!("kernel      {}", kernel_release());
        match &offsets {
            Ok(_) => println!(
                "BTF         {} ({} field offsets resolved)",
                btf_path.display(),
                btf_offsets::count()
            ),
            Err(e) => println!("BTF         FAILED: {e}"),
        }
        println!("privileges  {}", privs.summary());
        println!(
            "tracefs     {}",
            if tracefs_mounted() {
                "mounted (not needed)"
            } else {
                "not mounted (not needed: tracer uses raw tracepoints)"
            }
        );
        match &cgroup2 {
            Some(p) => println!("cgroup2     {}", p.display()),
            None => println!("cgroup2     not mounted: the sysctl hook cannot attach"),
        }
        match &kfunc {
            Ok(()) => println!(
                "kfuncs      fentry on {} loads and attaches (BPF trampolines work)",
                crate::kernel::kfunc_probe::FUNCTION
            ),
            Err(e) => println!("kfuncs      {e}"),
        }
        // Which mode each family with two runs in: kernel functions cost nothing on
        // unrelated syscalls, the syscall tracepoints run on every one.
        let shared = crate::stream::schema::FamilyMode::shared_why(&modes);
        for m in &modes {
            let why = if shared.is_some() { String::new() } else { format!(" ({})", m.why) };
            println!("mode        {:<13} {:<8} {}{why}", m.family, m.mode, m.at);
        }
        if let Some(why) = shared {
            println!("            why: {why}");
        }
        if !modes.is_empty() {
            let kfunc_all = modes.iter().all(|m| m.mode == "kfunc");
            println!(
                "            {}",
                if kfunc_all {
                    "no tracer program runs on unrelated syscalls"
                } else {
                    "every syscall on the node runs sys_enter and sys_exit (about 45 ns each call; BENCHMARKS.md)"
                }
            );
        }
        println!("hooks:");
        if hooks.is_empty() {
            for h in HOOKS {
                println!("  {:<20} not loaded   ({})", h.program, h.produces);
            }
        }
        for h in &hooks {
            let produces = HOOKS.iter().find(|x| x.program == h.name).map(|x| x.produces).unwrap_or("");
            match &h.error {
                None => println!("  {:<20} attached     ({produces})", h.name),
                Some(e) => println!("  {:<20} {:<12} ({produces}): {e}", h.name, h.state),
            }
        }
        // Socket-address programs on cgroups: Cilium's socket LB belongs at the root
        // (a nested one is the `cilium-socket-lb-nested-cgroup` incident).
        if socket_progs.is_empty() {
            println!("cgroup socket programs: none attached");
        } else {
            println!("cgroup socket programs ({}):", socket_progs.len());
            for a in &socket_progs {
                let holders = if a.holders.is_empty() {
                    "no process holds it".to_string()
                } else {
                    format!(
                        "held by pid {}",
                        a.holders.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
                    )
                };
                println!(
                    "  {:<26} {} (prog {}, {}{}) on {}: {holders}",
                    bpf_names::attach_type_name(a.attach_type),
                    a.prog_name,
                    a.prog_id,
                    bpf_names::prog_type_name(a.prog_type),
                    a.link_id.map(|l| format!(", link {l}")).unwrap_or_default(),
                    a.cgroup,
                );
            }
        }
        // The runtime over CRI: pod names for the events, its own word on its driver.
        match (&runtime.version, &runtime.problem) {
            (Some(v), None) => println!(
                "CRI         {} {} (CRI {}) at {}: {} pods, {} containers; RuntimeConfig: {}",
                v.name,
                v.version,
                v.api_version,
                runtime.socket.as_deref().map(|p| p.display().to_string()).unwrap_or_default(),
                runtime.pods.unwrap_or(0),
                runtime.containers.unwrap_or(0),
                runtime_config_text(&runtime),
            ),
            (_, Some(p)) => println!("CRI         {p}: events name pods by uid only"),
            (None, None) => println!("CRI         not asked"),
        }
        match (&bus_socket, &bus) {
            (Some(s), Ok(())) => println!(
                "D-Bus       {}: monitor accepted; requests to systemd and networkd are seen",
                s.display()
            ),
            (_, Err(e)) => println!("D-Bus       {e}; findings name causes from execs only"),
            (None, Ok(())) => {}
        }
        // kubelet's and the runtime's cgroup drivers must agree (incident 1's cause).
        match &drivers.kubelet {
            Some(k) => println!("cgroup driver: kubelet {} ({})", k.driver, k.from),
            None => println!("cgroup driver: no kubelet configuration or process found"),
        }
        for r in &drivers.runtimes {
            println!("cgroup driver: {} {} ({})", r.component, r.driver, r.from);
        }
        for p in &drivers.problems {
            println!("cgroup driver: cannot read {p}");
        }
        if let Some(f) = &mismatch {
            println!("FINDING {} [{}]: {}", f.id, f.severity.as_str(), f.summary);
            println!("  fix: {}", f.remediation);
        }
        if let Some(e) = &fatal {
            println!("error: {e}");
        }
        println!(
            "{attached}/{} hooks can run{}",
            if hooks.is_empty() { HOOKS.len() } else { hooks.len() },
            if ok { "" } else { ": tracer cannot run here" }
        );
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// What the runtime said to `RuntimeConfig` (KEP-4033).
fn runtime_config_text(r: &RuntimeReport) -> String {
    match r.cgroup_driver {
        Some(Some(d)) => format!("cgroup driver {d}"),
        Some(None) => "not implemented by this runtime (KEP-4033: containerd 2.0+, CRI-O 1.28+); its configuration file is read instead".into(),
        None => "not asked".into(),
    }
}
