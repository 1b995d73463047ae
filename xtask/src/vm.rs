//! `cargo xtask vm`: the suite on real nodes. Boots Debian's cloud kernels (6.1 and 6.12)
//! under qemu with a bookworm rootfs whose PID 1 is the real systemd 252 on pure cgroup
//! v2 (`cgroup_no_v1=all`), runs `tracer check`, the hooks tests and the incident tests
//! with the real components inside (a oneshot unit at boot, `tests/vm/guest.sh`), and
//! fails with their output when a step fails.
//!
//! What is slow is cached in [`cache_dir`] (outside the clone, so a later CI run on the
//! same machine reuses it; a fresh machine builds it anew): the rootfs as an uncompressed
//! newc cpio (debootstrap, about a minute), and each kernel with its modules. The test
//! payload (tracer, the test binaries, the scripts) is a third cpio made every run; the
//! kernel unpacks the three, concatenated, as its initramfs (`rdinit=/sbin/init`).
//!
//! The facts this relies on (checked on these machines, 2026-12): KVM does not work
//! inside this guest (`failed to set MSR 0x10a`), TCG does; the cloud kernels build veth
//! as a module; a `lib/` entry in a later cpio would replace the merged-/usr `lib ->
//! usr/lib` symlink and the boot panics, so modules go under `usr/lib/modules`.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use crate::util::{self, run};

/// The rootfs's packages beyond minbase: systemd as PID 1 with udev and D-Bus, the
/// components the incident tests run for real, and what the tests call.
const ROOTFS_PACKAGES: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "dbus",
    "udev",
    "iproute2",
    "runc",
    "containerd",
    "kmod",
    "procps",
    "python3",
    "busybox-static",
];
/// Bumped when the rootfs's customisation changes (part of the cache key).
const ROOTFS_REVISION: u32 = 1;
const SUITE: &str = "bookworm";

/// A kernel series and how its newest cloud image package is named in the archive.
struct Series {
    name: &'static str,
    /// `apt-cache search --names-only` pattern.
    pattern: &'static str,
}

const SERIES: &[Series] = &[
    Series { name: "6.1", pattern: r"^linux-image-6\.1\.0-[0-9]+-cloud-amd64$" },
    Series { name: "6.12", pattern: r"^linux-image-6\.12\.[0-9]+\+deb12-cloud-amd64$" },
];

#[derive(clap::Args)]
pub struct Options {
    /// Kernel series to boot (repeatable or comma-separated): 6.1, 6.12.
    #[arg(long = "kernel", value_delimiter = ',', default_values_t = ["6.1".to_string(), "6.12".to_string()])]
    pub kernels: Vec<String>,
    /// Only these steps (repeatable or comma-separated): check, hooks, incidents,
    /// socket_lb (each in both hook modes), or one mode's: hooks_kfunc, incidents_kfunc,
    /// socket_lb_kfunc.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Arguments for the test binaries, after `--` (a name filter, `--nocapture`).
    #[arg(last = true)]
    pub test_args: Vec<String>,
    /// Give up on a VM after this many seconds.
    #[arg(long, default_value_t = 1500)]
    pub timeout: u64,
    /// Print the whole serial console, boot messages included (always saved to
    /// target/vm/<kernel>/serial.log).
    #[arg(long)]
    pub verbose: bool,
}

/// One step the guest runs: a name, and the command line (in the guest).
struct Step {
    name: String,
    command: String,
}

/// The outcome of one VM.
struct VmRun {
    kernel: String,
    secs: f64,
    steps: Vec<(String, i32, u64)>,
    done: bool,
    boot: Option<String>,
}

/// Where the rootfs and kernels are cached: `$TRACER_VM_CACHE`, else `/var/cache/tracer-vm`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("TRACER_VM_CACHE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/tracer-vm"))
}

pub fn run_vm(opts: &Options) -> Result<i32> {
    if !util::is_root() {
        bail!("`cargo xtask vm` must run as root: debootstrap builds the rootfs as root");
    }
    for k in &opts.kernels {
        if !SERIES.iter().any(|s| s.name == k) {
            bail!(
                "unknown kernel series {k:?}: use {}",
                SERIES.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
            );
        }
    }
    host_packages()?;
    let cache = cache_dir();
    fs::create_dir_all(&cache).with_context(|| format!("creating the VM cache {}", cache.display()))?;

    crate::build("release")?;
    let binaries = test_binaries()?;
    let rootfs = rootfs(&cache)?;
    let accel = accel();
    eprintln!("xtask: vm: accelerator {accel}");

    let mut runs = Vec::new();
    for series in SERIES.iter().filter(|s| opts.kernels.iter().any(|k| k == s.name)) {
        let kernel = kernel(&cache, series)?;
        let dir = util::target_dir().join("vm").join(series.name);
        fs::create_dir_all(&dir)?;
        let steps = steps(opts);
        let payload = payload(&dir, &binaries, &steps)?;
        let initrd = dir.join("initrd.cpio");
        concat(&[&rootfs, &kernel.modules, &payload], &initrd)?;
        runs.push(boot(series.name, &kernel.vmlinuz, &initrd, &dir, accel, opts)?);
    }

    let mut failed = false;
    eprintln!("\n== VM suite");
    for r in &runs {
        eprintln!(
            "{:<5} {:>6.0} s  {}",
            r.kernel,
            r.secs,
            r.boot.as_deref().unwrap_or("(no boot line: the guest never started the suite)")
        );
        for (name, rc, secs) in &r.steps {
            eprintln!("        {:<16} {:<4} {secs:>4} s", name, if *rc == 0 { "ok" } else { "FAIL" });
            failed |= *rc != 0;
        }
        for s in steps(opts) {
            if !r.steps.iter().any(|(n, _, _)| *n == s.name) {
                eprintln!("        {:<10} MISSING (no result from the guest)", s.name);
                failed = true;
            }
        }
        if !r.done {
            eprintln!("        the guest did not finish (see target/vm/{}/serial.log)", r.kernel);
            failed = true;
        }
    }
    if failed {
        eprintln!("xtask: vm: FAILED");
        return Ok(1);
    }
    eprintln!("xtask: vm: ok");
    Ok(0)
}

/// The guest's steps. The hooks, incident and socket-LB tests run twice, once per hook
/// mode (`TRACER_HOOK_MODE`, which the tracer reads as `--hook-mode`): Debian's kernels
/// load BPF trampolines, so both modes can run here. `--only hooks` selects both runs of
/// the hooks tests, `--only hooks_kfunc` one.
fn steps(opts: &Options) -> Vec<Step> {
    let args = opts.test_args.iter().map(|a| shell_quote(a)).collect::<Vec<_>>().join(" ");
    let mut all = vec![Step { name: "check".into(), command: "/opt/tracer/bin/tracer check".into() }];
    for mode in ["syscall", "kfunc"] {
        let suffix = if mode == "syscall" { String::new() } else { format!("_{mode}") };
        let env = format!("TRACER_HOOK_MODE={mode}");
        all.push(Step {
            name: format!("hooks{suffix}"),
            command: format!("{env} /opt/tracer/bin/hooks --color never --test-threads=1 {args}"),
        });
        all.push(Step {
            name: format!("incidents{suffix}"),
            command: format!(
                "{env} /opt/tracer/bin/vm_incidents --color never --ignored --test-threads=1 {args}"
            ),
        });
        // Incident 4's stand-in agent tests of incidents.rs on the VM's kernel (the test
        // arguments do not apply: the filter selects them among the host's incident tests).
        all.push(Step {
            name: format!("socket_lb{suffix}"),
            command: format!(
                "{env} /opt/tracer/bin/incidents --color never --test-threads=1 cilium_socket_lb"
            ),
        });
    }
    all.into_iter()
        .filter(|s| {
            opts.only.is_empty()
                || opts.only.iter().any(|o| s.name == *o || s.name.strip_prefix(o.as_str()) == Some("_kfunc"))
        })
        .collect()
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// qemu, debootstrap, cpio and depmod (for the kernels' modules) on the host.
fn host_packages() -> Result<()> {
    let missing: Vec<&str> = [
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("debootstrap", "debootstrap"),
        ("cpio", "cpio"),
        ("depmod", "kmod"),
    ]
    .iter()
    .filter(|(bin, _)| util::which(bin).is_none() && !Path::new("/usr/sbin").join(bin).exists())
    .map(|(_, pkg)| *pkg)
    .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: vm: installing {}", missing.join(" "));
    crate::bootstrap::apt_install(&missing)
}

/// The test binaries of crate tracer-tests the guest runs, by target name.
fn test_binaries() -> Result<BTreeMap<String, PathBuf>> {
    let mut cmd = util::cargo(None);
    cmd.args(["test", "--release", "-p", "tracer-tests", "--no-run", "--message-format=json"]);
    cmd.args(["--test", "hooks", "--test", "vm_incidents", "--test", "incidents"]);
    cmd.stderr(Stdio::inherit());
    let out = cmd.output().context("building the test binaries")?;
    if !out.status.success() {
        bail!("building the test binaries failed ({})", out.status);
    }
    let mut bins = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if v["reason"] != "compiler-artifact" {
            continue;
        }
        // The tests' helper binaries (cargo builds them for the integration tests) go
        // beside the tracer, where the tests look for them.
        let helper = (v["target"]["name"] == "tracer-cgroup-attach"
            || v["target"]["name"] == "tracer-kernel-paths")
            && v["profile"]["test"] == false;
        if v["profile"]["test"] != true && !helper {
            continue;
        }
        if let (Some(name), Some(exe)) = (v["target"]["name"].as_str(), v["executable"].as_str()) {
            bins.insert(name.to_string(), PathBuf::from(exe));
        }
    }
    for want in ["hooks", "vm_incidents", "incidents", "tracer-cgroup-attach", "tracer-kernel-paths"] {
        if !bins.contains_key(want) {
            bail!("cargo built no test binary {want}");
        }
    }
    Ok(bins)
}

/// The Debian mirror of this machine's apt sources (debootstrap needs one).
fn mirror() -> String {
    let mut text = fs::read_to_string("/etc/apt/sources.list.d/debian.sources").unwrap_or_default();
    text.push_str(&fs::read_to_string("/etc/apt/sources.list").unwrap_or_default());
    for line in text.lines() {
        let line = line.trim();
        if let Some(uris) = line.strip_prefix("URIs:") {
            if let Some(u) = uris.split_whitespace().find(|u| !u.contains("security")) {
                return u.to_string();
            }
        }
        if let Some(rest) = line.strip_prefix("deb ") {
            if let Some(u) = rest.split_whitespace().find(|w| w.starts_with("http")) {
                if !u.contains("security") {
                    return u.to_string();
                }
            }
        }
    }
    "http://deb.debian.org/debian".into()
}

/// The rootfs cpio, built once per package list and revision.
fn rootfs(cache: &Path) -> Result<PathBuf> {
    let key = format!("{SUITE}-r{ROOTFS_REVISION}-{:08x}", fnv(&ROOTFS_PACKAGES.join(",")));
    let cpio = cache.join(format!("rootfs-{key}.cpio"));
    if cpio.exists() {
        eprintln!("xtask: vm: rootfs {} (cached)", cpio.display());
        return Ok(cpio);
    }
    let dir = cache.join(format!("rootfs-{key}.d"));
    let _ = fs::remove_dir_all(&dir);
    let t0 = Instant::now();
    eprintln!("xtask: vm: debootstrap {SUITE} into {} (about a minute)", dir.display());
    run(Command::new("debootstrap")
        .arg("--variant=minbase")
        .arg(format!("--include={}", ROOTFS_PACKAGES.join(",")))
        .arg(SUITE)
        .arg(&dir)
        .arg(mirror()))
    .context("debootstrap failed (see its output above)")?;
    customize(&dir)?;
    let tmp = cpio.with_extension("cpio.tmp");
    make_cpio(&dir, &tmp)?;
    fs::rename(&tmp, &cpio)?;
    fs::remove_dir_all(&dir)?;
    eprintln!(
        "xtask: vm: rootfs built in {:.0} s: {} ({} MiB)",
        t0.elapsed().as_secs_f64(),
        cpio.display(),
        fs::metadata(&cpio)?.len() >> 20
    );
    Ok(cpio)
}

/// What a node needs beyond debootstrap: a name, no login prompts in the way, nothing
/// that reaches for the network, less disk.
fn customize(dir: &Path) -> Result<()> {
    fs::write(dir.join("etc/hostname"), "tracer-vm\n")?;
    fs::write(dir.join("etc/hosts"), "127.0.0.1 localhost tracer-vm\n::1 localhost\n")?;
    fs::write(dir.join("etc/fstab"), "# initramfs root: nothing to mount\n")?;
    // machine-id: systemd makes a transient one at boot when the file is empty.
    fs::write(dir.join("etc/machine-id"), "")?;
    let mask = dir.join("etc/systemd/system");
    fs::create_dir_all(&mask)?;
    for unit in [
        "apt-daily.timer",
        "apt-daily-upgrade.timer",
        "dpkg-db-backup.timer",
        "e2scrub_all.timer",
        "fstrim.timer",
        "getty@tty1.service",
        "serial-getty@ttyS0.service",
        "systemd-timesyncd.service",
        "containerd.service",
    ] {
        let link = mask.join(unit);
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink("/dev/null", &link)?;
    }
    for d in [
        "usr/share/doc",
        "usr/share/man",
        "usr/share/locale",
        "usr/share/info",
        "var/cache/apt",
        "var/lib/apt/lists",
    ] {
        let p = dir.join(d);
        if p.exists() {
            fs::remove_dir_all(&p)?;
            fs::create_dir_all(&p)?;
        }
    }
    Ok(())
}

struct Kernel {
    vmlinuz: PathBuf,
    modules: PathBuf,
}

/// The newest cloud kernel of a series from the archive, with its modules as a cpio.
fn kernel(cache: &Path, series: &Series) -> Result<Kernel> {
    let newest = newest_package(series.pattern);
    let pkg = match newest {
        Some(p) => p,
        None => {
            // Offline or the archive moved on: use the newest one cached for the series.
            let cached = cached_kernels(cache, series.name);
            match cached.last() {
                Some(p) => {
                    eprintln!(
                        "xtask: vm: no {} kernel in the package lists; using the cached {p}",
                        series.name
                    );
                    p.clone()
                }
                None => bail!(
                    "no linux-image package for the {} series in the package lists (run `apt-get update`; \
                     `apt-cache search --names-only '{}'` lists none)",
                    series.name,
                    series.pattern
                ),
            }
        }
    };
    let dir = cache.join("kernels").join(&pkg);
    let k = Kernel { vmlinuz: dir.join("vmlinuz"), modules: dir.join("modules.cpio") };
    if k.vmlinuz.exists() && k.modules.exists() {
        eprintln!("xtask: vm: kernel {pkg} (cached)");
        return Ok(k);
    }
    eprintln!("xtask: vm: fetching {pkg}");
    let work = cache.join("kernels").join(format!("{pkg}.tmp"));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work)?;
    run(Command::new("apt-get").arg("download").arg(&pkg).current_dir(&work))
        .with_context(|| format!("apt-get download {pkg}"))?;
    let deb = fs::read_dir(&work)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .context("apt-get download left no .deb")?;
    let x = work.join("x");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&x))?;
    let boot = fs::read_dir(x.join("boot"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-")))
        .context("the kernel package has no boot/vmlinuz-*")?;
    let version = boot.file_name().unwrap().to_string_lossy().trim_start_matches("vmlinuz-").to_string();
    // Modules: depmod'ed under lib/modules (where depmod -b looks), packed under
    // usr/lib/modules (merged /usr: a `lib/` cpio entry would replace the symlink).
    let stage = work.join("stage");
    let src = ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|d| x.join(d).join(&version))
        .find(|p| p.exists())
        .context("the kernel package has no modules directory")?;
    fs::create_dir_all(stage.join("lib/modules"))?;
    run(Command::new("cp").arg("-a").arg(&src).arg(stage.join("lib/modules")))?;
    run(Command::new("depmod").arg("-b").arg(&stage).arg(&version))?;
    fs::create_dir_all(stage.join("usr/lib"))?;
    fs::rename(stage.join("lib/modules"), stage.join("usr/lib/modules"))?;
    fs::remove_dir(stage.join("lib"))?;
    fs::create_dir_all(&dir)?;
    make_cpio(&stage, &k.modules)?;
    fs::copy(&boot, &k.vmlinuz)?;
    fs::remove_dir_all(&work)?;
    Ok(k)
}

fn newest_package(pattern: &str) -> Option<String> {
    let out = util::output(Command::new("apt-cache").args(["search", "--names-only", pattern]))?;
    let mut names: Vec<String> = out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| !n.ends_with("-dbg") && !n.contains("unsigned"))
        .map(str::to_string)
        .collect();
    names.sort_by_key(|n| version_key(n));
    names.pop()
}

/// `linux-image-6.1.0-57-cloud-amd64` -> [6, 1, 0, 57]: numbers compared as numbers.
fn version_key(name: &str) -> Vec<u64> {
    name.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect()
}

fn cached_kernels(cache: &Path, series: &str) -> Vec<String> {
    let prefix = format!("linux-image-{series}.");
    let mut v: Vec<String> = fs::read_dir(cache.join("kernels"))
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with(&prefix) && !n.ends_with(".tmp"))
        .collect();
    v.sort_by_key(|n| version_key(n));
    v
}

/// The tracer, the test binaries, the guest script and unit, and the workspace files
/// the tests read at their compiled-in paths, as a cpio.
fn payload(dir: &Path, bins: &BTreeMap<String, PathBuf>, steps: &[Step]) -> Result<PathBuf> {
    let stage = dir.join("payload");
    let _ = fs::remove_dir_all(&stage);
    let bin = stage.join("opt/tracer/bin");
    fs::create_dir_all(&bin)?;
    fs::copy(util::tracer_bin("release"), bin.join("tracer"))?;
    for (name, exe) in bins {
        fs::copy(exe, bin.join(name))?;
    }
    let root = util::workspace_root();
    fs::copy(root.join("tests/vm/guest.sh"), stage.join("opt/tracer/guest.sh"))?;
    let mut env = format!("WORKSPACE={}\nSTEPS='", shell_quote(&root.to_string_lossy()));
    for s in steps {
        env.push_str(&format!("{}|{}\n", s.name, s.command.replace('\'', r"'\''")));
    }
    env.push_str("'\n");
    fs::write(stage.join("opt/tracer/steps.env"), env)?;
    let units = stage.join("etc/systemd/system");
    fs::create_dir_all(units.join("multi-user.target.wants"))?;
    fs::copy(root.join("tests/vm/tracer-vm.service"), units.join("tracer-vm.service"))?;
    std::os::unix::fs::symlink(
        "../tracer-vm.service",
        units.join("multi-user.target.wants/tracer-vm.service"),
    )?;
    // The test files the tests read at their compiled-in path (env!("CARGO_MANIFEST_DIR")):
    // packed under /opt/tracer/ws, copied to that path by the guest once the system is up
    // (a clone under /tmp would be wiped by systemd-tmpfiles at boot).
    for d in ["tests/tests", "tests/scenarios", "tests/vm"] {
        let to = stage.join("opt/tracer/ws").join(d);
        fs::create_dir_all(to.parent().unwrap())?;
        run(Command::new("cp").arg("-a").arg(root.join(d)).arg(&to))?;
    }
    let cpio = dir.join("payload.cpio");
    make_cpio(&stage, &cpio)?;
    Ok(cpio)
}

/// `find . | cpio -o -H newc` in `dir`.
fn make_cpio(dir: &Path, out: &Path) -> Result<()> {
    let file = fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let status = Command::new("sh")
        .arg("-c")
        .arg("find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0")
        .current_dir(dir)
        .stdout(file)
        .status()
        .context("running cpio")?;
    if !status.success() {
        bail!("cpio of {} failed ({status})", dir.display());
    }
    Ok(())
}

fn concat(parts: &[&Path], out: &Path) -> Result<()> {
    let mut o = fs::File::create(out)?;
    for p in parts {
        let mut i = fs::File::open(p).with_context(|| format!("opening {}", p.display()))?;
        std::io::copy(&mut i, &mut o)?;
    }
    o.flush()?;
    Ok(())
}

/// `kvm` when it works here (bare metal, and a probe VM starts and stays up), else
/// `tcg`; `TRACER_VM_ACCEL=kvm|tcg` overrides.
fn accel() -> &'static str {
    match std::env::var("TRACER_VM_ACCEL").as_deref() {
        Ok("kvm") => return "kvm",
        Ok("tcg") => return "tcg",
        _ => {}
    }
    if fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_err() {
        return "tcg";
    }
    // Inside a guest (nested KVM) /dev/kvm opens and a probe VM starts, but booting a
    // kernel fails later (`failed to set MSR 0x10a` with -cpu host, emulation failures or
    // hangs with other models): seen on these machines. Only trust KVM on bare metal.
    let nested = fs::read_to_string("/proc/cpuinfo").is_ok_and(|c| {
        c.lines().any(|l| l.starts_with("flags") && l.split_whitespace().any(|f| f == "hypervisor"))
    });
    if nested {
        return "tcg";
    }
    let child = Command::new("qemu-system-x86_64")
        .args(["-accel", "kvm", "-cpu", "host", "-m", "64", "-display", "none", "-nodefaults", "-no-reboot"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = child else { return "tcg" };
    std::thread::sleep(Duration::from_secs(2));
    match child.try_wait() {
        Ok(None) => {
            let _ = child.kill();
            let _ = child.wait();
            "kvm"
        }
        _ => "tcg",
    }
}

fn boot(
    kernel: &str,
    vmlinuz: &Path,
    initrd: &Path,
    dir: &Path,
    accel: &str,
    opts: &Options,
) -> Result<VmRun> {
    let cmdline =
        "console=ttyS0 panic=-1 rdinit=/sbin/init systemd.unified_cgroup_hierarchy=1 cgroup_no_v1=all \
                   quiet loglevel=3 systemd.show_status=0 net.ifnames=0";
    let cpu = if accel == "kvm" { "host" } else { "max" };
    // TCG: one host thread for both vCPUs. With a thread per vCPU (MTTCG) the kernel's
    // live text patching (the syscall tracepoint's static key, flipped when the tracer
    // attaches) races under emulation: 6.12 died with `Oops: int3` in
    // syscall_trace_enter here.
    let accel_arg = if accel == "tcg" { "tcg,thread=single".to_string() } else { accel.to_string() };
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-accel", accel_arg.as_str(), "-cpu", cpu, "-m", "3072", "-smp", "2"])
        .arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", cmdline, "-display", "none", "-serial", "stdio", "-monitor", "none", "-nodefaults"])
        .args(["-no-reboot", "-nic", "none"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    eprintln!("\n== VM {kernel}: booting {} ({accel})", vmlinuz.display());
    let t0 = Instant::now();
    let mut child = cmd.spawn().context("starting qemu-system-x86_64")?;
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).split(b'\n').map_while(|l| l.ok()) {
            let _ = tx.send(String::from_utf8_lossy(&line).trim_end_matches('\r').to_string());
        }
    });
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
            let _ = tx2.send(format!("qemu: {line}"));
        }
    });
    let mut log = fs::File::create(dir.join("serial.log"))?;
    let mut r = VmRun { kernel: kernel.into(), secs: 0.0, steps: Vec::new(), done: false, boot: None };
    let deadline = t0 + Duration::from_secs(opts.timeout);
    let mut in_step = false;
    loop {
        match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(line) => {
                writeln!(log, "{line}")?;
                let marker = line.find("@@tracer-vm ").map(|i| &line[i + "@@tracer-vm ".len()..]);
                match marker {
                    Some(m) if m.starts_with("boot ") => {
                        r.boot = Some(format!("{} (t={:.0} s)", &m[5..], t0.elapsed().as_secs_f64()));
                        eprintln!("[{kernel} {:>4.0}s] {line}", t0.elapsed().as_secs_f64());
                    }
                    Some(m) if m.starts_with("step ") => {
                        in_step = true;
                        eprintln!("[{kernel} {:>4.0}s] {line}", t0.elapsed().as_secs_f64());
                    }
                    Some(m) if m.starts_with("result ") => {
                        in_step = false;
                        let f: Vec<&str> = m.split_whitespace().collect();
                        if f.len() >= 4 {
                            let rc = f[2].parse().unwrap_or(-1);
                            r.steps.push((f[1].to_string(), rc, f[3].parse().unwrap_or(0)));
                        }
                        eprintln!("[{kernel} {:>4.0}s] {line}", t0.elapsed().as_secs_f64());
                    }
                    Some(m) if m.starts_with("done") => {
                        r.done = true;
                        eprintln!("[{kernel} {:>4.0}s] {line}", t0.elapsed().as_secs_f64());
                    }
                    _ if in_step || opts.verbose || line.starts_with("qemu: ") => {
                        println!("[{kernel}] {line}")
                    }
                    _ => {}
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if Instant::now() > deadline {
            eprintln!("xtask: vm: {kernel}: no poweroff after {} s; stopping qemu", opts.timeout);
            let _ = child.kill();
            break;
        }
    }
    let status = child.wait()?;
    r.secs = t0.elapsed().as_secs_f64();
    eprintln!("== VM {kernel}: qemu exited ({status}) after {:.0} s", r.secs);
    Ok(r)
}

/// FNV-1a, for the cache key.
fn fnv(s: &str) -> u32 {
    s.bytes().fold(0x811c9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x01000193))
}
