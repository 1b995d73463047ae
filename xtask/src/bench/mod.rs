//! `cargo xtask bench`: the tax on every unrelated write() (DESIGN.md, performance budget).
//!
//! A child process (`cargo xtask bench-writer N`, so that the timing loop is not
//! inside anything traced specially) times N one-byte writes to /dev/null under
//! each setup: nothing attached, the floor (`tracer bench-floor`: empty programs
//! on the same syscall hooks), `tracer tail --json`, and bpftrace doing the same
//! filter. Setups are interleaved in rounds and compared by their medians.
//!
//! Everything the bench starts is ended by its pid, and every program a setup
//! loaded is checked to be gone before the next one starts.

use std::{
    fs,
    io::{BufRead as _, BufReader},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{mpsc, Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use crate::util::{self, tracer_bin};

mod audit;
mod footprint;
mod replay;
mod storm;
mod syscalls;
mod vm_counts;

#[derive(clap::Args)]
pub struct Options {
    /// One round of 100k writes: a smoke run, not a measurement.
    #[arg(long)]
    quick: bool,
    /// Rounds; each round runs every setup once, in a rotating order [default: 5, --quick: 1].
    #[arg(long)]
    rounds: Option<u32>,
    /// Timed writes per setup and round [default: 1000000, --quick: 100000].
    #[arg(long)]
    writes: Option<u64>,
    /// Leave bpftrace out.
    #[arg(long)]
    no_bpftrace: bool,
    /// Leave `strace -f` out.
    #[arg(long)]
    no_strace: bool,
    /// Also measure the audit subsystem with two rules (a write syscall rule and a
    /// directory watch on /sys/fs/cgroup): installs auditd with apt if missing, starts
    /// `auditd -n`, and removes the rules and stops that daemon afterwards.
    #[arg(long)]
    with_auditd: bool,
    /// Sections to run, comma-separated [default: all]
    #[arg(long, value_delimiter = ',', value_enum, value_name = "SECTIONS")]
    only: Vec<Section>,
    /// Seconds the footprint section leaves the tracer idle [default: 10, --quick: 2].
    #[arg(long, value_name = "SECS")]
    idle: Option<u64>,
    /// Events in the generated replay recording [default: 1000000, --quick: 20000].
    #[arg(long, value_name = "N")]
    replay_events: Option<u64>,
    /// Bench this tracer binary instead of building target/release/tracer.
    #[arg(long, value_name = "PATH")]
    pub tracer: Option<PathBuf>,
}

/// The parts of the suite.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum Section {
    /// The tax on unrelated write() calls, side by side with the alternatives.
    Tax,
    /// Start-up time, RSS and idle CPU of `tracer tail`.
    Footprint,
    /// `tracer replay` over a generated recording.
    Replay,
    /// A storm of cgroup writes: writes made against events captured, lost, CPU per event.
    Storm,
    /// The tax on unrelated read(), getppid() and write() calls and on a whole workload
    /// (find, tar): none, the floor and the tracer side by side.
    Syscalls,
    /// Both hook modes on Debian's 6.12 in a VM (this machine refuses the kernel-function
    /// mode): BPF program runs per unrelated syscall, counted, and the storm. Not in the
    /// default set (it boots qemu: minutes); `--only vm`.
    Vm,
}

/// A syscall the bench child times in a loop.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum Call {
    Write,
    Read,
    Getppid,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Setup {
    None,
    Floor,
    Tracer,
    Bpftrace,
    Strace,
    AuditSyscall,
    AuditWatch,
}

impl Setup {
    fn name(self) -> &'static str {
        match self {
            Setup::None => "none",
            Setup::Floor => "floor (empty prog)",
            Setup::Tracer => "tracer tail --json",
            Setup::Bpftrace => "bpftrace",
            Setup::Strace => "strace -f",
            Setup::AuditSyscall => "auditd -S write",
            Setup::AuditWatch => "auditd -w (watch)",
        }
    }

    /// Ours: the bench fails when these cannot be measured.
    fn ours(self) -> bool {
        matches!(self, Setup::None | Setup::Floor | Setup::Tracer)
    }
}

/// strace stops the writer twice per write: a fraction of the writes is enough.
const STRACE_DIVISOR: u64 = 20;

const BPFTRACE_PROG: &str = "tracepoint:raw_syscalls:sys_enter /args->id == 1/ { @[comm] = count(); }";
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The hidden `bench-writer N [--call C]` subcommand: prints the mean ns per call.
pub fn writer(writes: u64, call: Call) -> Result<()> {
    let null = fs::OpenOptions::new().write(true).open("/dev/null").context("opening /dev/null")?;
    let zero = fs::File::open("/dev/zero").context("opening /dev/zero")?;
    let (wfd, rfd) = (null.as_raw_fd(), zero.as_raw_fd());
    let mut byte = [b'x'];
    let mut write = || {
        // SAFETY: the fds are open for the whole loop and the buffer is 1 valid byte.
        let n = unsafe {
            match call {
                Call::Write => libc::write(wfd, byte.as_ptr().cast(), 1),
                Call::Read => libc::read(rfd, byte.as_mut_ptr().cast(), 1),
                Call::Getppid => libc::getppid() as isize,
            }
        };
        debug_assert!(n >= 0);
    };
    // Warm up caches and the branch predictors.
    for _ in 0..(writes / 10).clamp(1_000, 100_000) {
        write();
    }
    let start = Instant::now();
    for _ in 0..writes {
        write();
    }
    let ns = start.elapsed().as_nanos() as f64 / writes.max(1) as f64;
    println!("{ns:.2}");
    Ok(())
}

pub fn run(opts: &Options) -> Result<()> {
    let tracer = opts.tracer.clone().unwrap_or_else(|| tracer_bin("release"));
    let want = |s: Section| (opts.only.is_empty() && s != Section::Vm) || opts.only.contains(&s);
    print_machine();
    warn_foreign_hooks();
    let mut errors = Vec::new();
    if want(Section::Tax) {
        if let Err(e) = write_tax(opts, &tracer) {
            eprintln!("xtask: bench: write tax: {e:#}");
            errors.push(format!("write tax: {e:#}"));
        }
    }
    if want(Section::Footprint) {
        let idle = Duration::from_secs(opts.idle.unwrap_or(if opts.quick { 2 } else { 10 }));
        let launches = if opts.quick { 1 } else { 5 };
        match footprint::run(&tracer, launches, idle) {
            Ok(f) => footprint::print_table(&f),
            Err(e) => {
                eprintln!("xtask: bench: footprint: {e:#}");
                errors.push(format!("footprint: {e:#}"));
            }
        }
    }
    if want(Section::Replay) {
        let events = opts.replay_events.unwrap_or(if opts.quick { 20_000 } else { 1_000_000 });
        match replay::run(&tracer, events) {
            Ok(r) => replay::print_table(&r),
            Err(e) => {
                eprintln!("xtask: bench: replay: {e:#}");
                errors.push(format!("replay: {e:#}"));
            }
        }
    }
    if want(Section::Syscalls) {
        if let Err(e) = syscalls::run(opts, &tracer) {
            eprintln!("xtask: bench: syscall tax: {e:#}");
            errors.push(format!("syscall tax: {e:#}"));
        }
    }
    if want(Section::Storm) {
        match storm::run(&tracer, opts.quick) {
            Ok(s) => storm::print_table(&s),
            Err(e) => {
                eprintln!("xtask: bench: storm: {e:#}");
                errors.push(format!("storm: {e:#}"));
            }
        }
    }
    if want(Section::Vm) {
        if let Err(e) = vm_counts::run() {
            eprintln!("xtask: bench: vm: {e:#}");
            errors.push(format!("vm: {e:#}"));
        }
    }
    if !errors.is_empty() {
        bail!("bench: {}", errors.join("; "));
    }
    Ok(())
}

/// The machine the numbers come from.
fn print_machine() {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name").and_then(|v| v.split_once(':')).map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "?".to_owned());
    let cpus = thread::available_parallelism().map_or(0, |n| n.get());
    let mem_kib: u64 = fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "machine: {cpus} CPU(s), {model}, {:.1} GiB, kernel {}; load average at start {}",
        mem_kib as f64 / (1024.0 * 1024.0),
        kernel.trim(),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
}

/// Programs that other processes hold attached to hooks tax every setup alike
/// (another tracer, a test run): say so, since the numbers include them.
fn warn_foreign_hooks() {
    let me = std::process::id();
    let Ok(dir) = fs::read_dir("/proc") else {
        return;
    };
    let mut foreign = Vec::new();
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let n = attached_hooks(pid);
        if n > 0 {
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            foreign.push(format!("{} (pid {pid}, {n} hook(s))", comm.trim()));
        }
    }
    if !foreign.is_empty() {
        println!("note: programs attached by other processes tax every setup alike: {}", foreign.join(", "));
    }
}

fn write_tax(opts: &Options, tracer: &Path) -> Result<()> {
    let rounds = opts.rounds.unwrap_or(if opts.quick { 1 } else { 5 }).max(1);
    let writes = opts.writes.unwrap_or(if opts.quick { 100_000 } else { 1_000_000 }).max(1);
    let mut setups = vec![Setup::None, Setup::Floor, Setup::Tracer];
    let mut notes = Vec::new();
    if opts.no_bpftrace {
        notes.push("bpftrace: left out (--no-bpftrace)".to_owned());
    } else if util::which("bpftrace").is_none() {
        notes.push("bpftrace: not installed (apt-get install bpftrace), left out".to_owned());
    } else {
        setups.push(Setup::Bpftrace);
    }
    if opts.no_strace {
        notes.push("strace: left out (--no-strace)".to_owned());
    } else if util::which("strace").is_none() {
        notes.push("strace: not installed (apt-get install strace), left out".to_owned());
    } else {
        setups.push(Setup::Strace);
    }
    let audit = if opts.with_auditd {
        match audit::Audit::prepare() {
            Ok(a) => {
                setups.push(Setup::AuditSyscall);
                setups.push(Setup::AuditWatch);
                Some(a)
            }
            Err(e) => {
                notes.push(format!("auditd: cannot run here, left out: {e:#}"));
                None
            }
        }
    } else {
        notes.push("auditd: left out (pass --with-auditd to install and measure it)".to_owned());
        None
    };

    eprintln!("xtask: bench: write tax: {rounds} round(s) x {writes} writes per setup");
    let mut samples: Vec<(Setup, Vec<f64>)> = setups.iter().map(|&s| (s, Vec::new())).collect();
    let mut failed: Vec<(Setup, String)> = Vec::new();
    for round in 0..rounds {
        let n = setups.len();
        for i in 0..n {
            let setup = setups[(i + round as usize) % n];
            if failed.iter().any(|(s, _)| *s == setup) {
                continue;
            }
            match measure(setup, tracer, writes, audit.as_ref()) {
                Ok(ns) => {
                    eprintln!("xtask: bench: round {} {:<20} {ns:>8.1} ns/write", round + 1, setup.name());
                    samples.iter_mut().find(|(s, _)| *s == setup).unwrap().1.push(ns);
                }
                Err(e) => {
                    eprintln!("xtask: bench: {}: {e:#}", setup.name());
                    failed.push((setup, format!("{e:#}")));
                }
            }
        }
    }
    let findings = audit.as_ref().map(|a| a.findings.clone()).unwrap_or_default();
    // Rules deleted, audit put back as it was, our auditd stopped.
    drop(audit);

    print_table(&samples, rounds, writes);
    if setups.contains(&Setup::Strace) {
        println!(
            "strace: `strace -f -e trace=write -o /dev/null` runs the writer, with {} writes per round \
             (ptrace stops it at every syscall entry and exit); it taxes only the processes it traces",
            (writes / STRACE_DIVISOR).max(10_000)
        );
    }
    for f in &findings {
        println!("audit: {f}");
    }
    if !findings.is_empty() {
        println!(
            "audit: once audit has been enabled, every process forked afterwards carries an audit \
             context until reboot (the kernel's audit_ever_enabled), a small slow-path cost on each \
             of its syscalls even with audit off again"
        );
    }
    for note in &notes {
        println!("note: {note}");
    }
    for (setup, why) in &failed {
        println!("could not measure {}: {why}", setup.name());
    }
    // The alternatives are comparisons; the tracer and the floor are ours and must work.
    let ours: Vec<&str> = failed.iter().filter(|(s, _)| s.ours()).map(|(s, _)| s.name()).collect();
    if !ours.is_empty() {
        bail!("could not measure: {}", ours.join(", "));
    }
    Ok(())
}

fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len().is_multiple_of(2) { (v[m - 1] + v[m]) / 2.0 } else { v[m] })
}

fn min(v: &[f64]) -> Option<f64> {
    v.iter().copied().reduce(f64::min)
}

fn print_table(samples: &[(Setup, Vec<f64>)], rounds: u32, writes: u64) {
    let get = |s: Setup, f: fn(&[f64]) -> Option<f64>| {
        samples.iter().find(|(x, _)| *x == s).and_then(|(_, v)| f(v))
    };
    let (none_med, none_min) = (get(Setup::None, median), get(Setup::None, min));
    let floor_med = none_med.zip(get(Setup::Floor, median)).map(|(n, f)| f - n);
    let floor_min = none_min.zip(get(Setup::Floor, min)).map(|(n, f)| f - n);
    println!();
    println!(
        "write() tax: 1-byte writes to /dev/null, {rounds} round(s) x {writes} writes, setups interleaved; \
         added = ns/write - none's; x floor = added / the floor's added"
    );
    println!(
        "{:<20} {:>10} {:>10} {:>12} {:>12} {:>12} {:>12}",
        "setup", "median ns", "min ns", "added (med)", "added (min)", "x floor med", "x floor min"
    );
    let ratio = |a: Option<f64>, f: Option<f64>, setup: Setup| match (a, f) {
        (Some(a), Some(f)) if setup != Setup::None && f > 0.0 => format!("{:.2}x", a / f),
        _ => "-".to_owned(),
    };
    let signed = |a: Option<f64>| a.map_or("-".to_owned(), |a| format!("{a:+.1}"));
    for (setup, v) in samples {
        let (Some(m), Some(lo)) = (median(v), min(v)) else {
            println!("{:<20} {:>10}", setup.name(), "n/a");
            continue;
        };
        let added_med = none_med.map(|n| m - n);
        let added_min = none_min.map(|n| lo - n);
        println!(
            "{:<20} {:>10.1} {:>10.1} {:>12} {:>12} {:>12} {:>12}",
            setup.name(),
            m,
            lo,
            signed(added_med),
            signed(added_min),
            ratio(added_med, floor_med, *setup),
            ratio(added_min, floor_min, *setup)
        );
    }
    if floor_med.is_some_and(|f| f <= 0.0) || floor_min.is_some_and(|f| f <= 0.0) {
        println!("note: the floor measured no added cost in a column (noise is larger than the hook); its ratios omitted");
    }
}

impl Call {
    fn name(self) -> &'static str {
        match self {
            Call::Write => "write",
            Call::Read => "read",
            Call::Getppid => "getppid",
        }
    }
}

/// Starts the floor or the tracer (`None` for the setups that run nothing alongside).
fn start_ours(setup: Setup, tracer: &Path) -> Result<Option<Running>> {
    Ok(match setup {
        Setup::Floor => {
            let mut cmd = Command::new(tracer);
            cmd.arg("bench-floor");
            Some(Running::start(setup, cmd, false, 2)?)
        }
        Setup::Tracer => {
            let mut cmd = Command::new(tracer);
            cmd.args(["tail", "--json"]);
            // Its first stdout line is the schema header, printed once attached.
            Some(Running::start(setup, cmd, true, 1)?)
        }
        _ => None,
    })
}

/// Starts the setup (the floor or the tracer; nothing for none), runs `f` under it, and
/// stops the setup.
fn under<T>(setup: Setup, tracer: &Path, f: impl FnOnce() -> Result<T>) -> Result<T> {
    if !matches!(setup, Setup::None | Setup::Floor | Setup::Tracer) {
        bail!("{} is not a setup of this section", setup.name());
    }
    let running = start_ours(setup, tracer)?;
    let result = f();
    if let Some(r) = running {
        r.stop()?;
    }
    result
}

/// Starts the setup, runs the writer under it, and stops the setup.
fn measure(setup: Setup, tracer: &Path, writes: u64, audit: Option<&audit::Audit>) -> Result<f64> {
    let running = match setup {
        Setup::None | Setup::Strace | Setup::AuditSyscall | Setup::AuditWatch => None,
        Setup::Floor | Setup::Tracer => start_ours(setup, tracer)?,
        Setup::Bpftrace => {
            // tracefs is not mounted on these machines and bpftrace reads the
            // tracepoint format from it: mount it in a private mount namespace
            // that only bpftrace sees (unshare -m makes propagation private).
            let script = format!(
                "mountpoint -q /sys/kernel/tracing || mount -t tracefs none /sys/kernel/tracing \
                 || exit 97; exec bpftrace -e '{BPFTRACE_PROG}'"
            );
            let mut cmd = Command::new("unshare");
            cmd.args(["-m", "--propagation", "private", "sh", "-c", &script]);
            Some(Running::start(setup, cmd, false, 1)?)
        }
    };
    let result = match setup {
        Setup::Strace => run_writer(
            (writes / STRACE_DIVISOR).max(10_000),
            Some(&["strace", "-f", "-e", "trace=write", "-o", "/dev/null", "--"]),
        ),
        Setup::AuditSyscall | Setup::AuditWatch => {
            let audit = audit.context("audit not prepared")?;
            let rule =
                if setup == Setup::AuditSyscall { audit::Rule::SyscallWrite } else { audit::Rule::WatchDir };
            audit.begin(rule)?;
            let r = run_writer(writes, None);
            audit.end()?;
            r
        }
        _ => run_writer(writes, None),
    };
    if let Some(r) = running {
        eprintln!(
            "xtask: bench: {} held {} program(s): ids {:?}",
            setup.name(),
            r.prog_ids.len(),
            r.prog_ids
        );
        r.stop()?;
    }
    result
}

/// Runs the timed writer, under `wrapper` (a command prefix) if given.
fn run_writer(writes: u64, wrapper: Option<&[&str]>) -> Result<f64> {
    run_call(writes, Call::Write, wrapper)
}

/// Runs the timed loop of `call` in a child, under `wrapper` if given: ns per call.
fn run_call(writes: u64, call: Call, wrapper: Option<&[&str]>) -> Result<f64> {
    let exe = std::env::current_exe().context("finding the xtask binary")?;
    let mut cmd = match wrapper {
        Some([prog, args @ ..]) => {
            let mut c = Command::new(prog);
            c.args(args).arg(exe);
            c
        }
        _ => Command::new(exe),
    };
    let out = cmd
        .args(["bench-writer", &writes.to_string(), "--call", call.name()])
        .stdin(Stdio::null())
        .output()
        .context("starting the bench writer")?;
    if !out.status.success() {
        bail!("bench writer failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    let s = String::from_utf8_lossy(&out.stdout);
    s.trim().parse().with_context(|| format!("bench writer printed {s:?}"))
}

/// A setup process the bench started; stopped (by pid) when dropped.
struct Running {
    setup: Setup,
    child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
    prog_ids: Vec<u32>,
    /// Spawn to first stdout line, when one was waited for.
    startup: Option<Duration>,
    first_line: Option<String>,
}

impl Running {
    /// Spawns `cmd` and waits until it has at least `min_attached` programs
    /// attached to hooks (asked of the kernel with BPF_TASK_FD_QUERY on its fds)
    /// and, with `want_line`, has printed its first stdout line.
    fn start(setup: Setup, mut cmd: Command, want_line: bool, min_attached: usize) -> Result<Self> {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let spawned = Instant::now();
        let mut child = cmd.spawn().with_context(|| format!("could not start `{}`", util::describe(&cmd)))?;
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (line_tx, line_rx) = mpsc::channel();
        // Drain both pipes for the whole run so that the setup never blocks on them.
        let out = child.stdout.take().expect("piped");
        thread::spawn(move || {
            let mut out = BufReader::new(out);
            let mut first = String::new();
            if out.read_line(&mut first).is_ok_and(|n| n > 0) {
                let _ = line_tx.send((Instant::now(), first));
            }
            let _ = std::io::copy(&mut out, &mut std::io::sink());
        });
        let err = child.stderr.take().expect("piped");
        let tail = stderr.clone();
        thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut t = tail.lock().unwrap();
                t.push(line);
                let extra = t.len().saturating_sub(20);
                t.drain(..extra);
            }
        });
        let mut running =
            Running { setup, child, stderr, prog_ids: Vec::new(), startup: None, first_line: None };

        let deadline = Instant::now() + READY_TIMEOUT;
        let mut got_line = !want_line;
        loop {
            if let Some(status) = running.child.try_wait()? {
                // Let the stderr reader catch up before quoting it.
                thread::sleep(Duration::from_millis(100));
                bail!("exited before it was ready ({status}){}", running.stderr_tail());
            }
            if !got_line {
                if let Ok((at, line)) = line_rx.try_recv() {
                    running.startup = Some(at - spawned);
                    running.first_line = Some(line);
                    got_line = true;
                }
            }
            let pid = running.child.id();
            if got_line && attached_hooks(pid) >= min_attached {
                // Let the remaining attachments of a multi-hook setup land.
                thread::sleep(Duration::from_millis(300));
                running.prog_ids = prog_ids(pid);
                return Ok(running);
            }
            if Instant::now() > deadline {
                bail!(
                    "not ready after {}s (stdout line: {got_line}, attached hooks: {}){}",
                    READY_TIMEOUT.as_secs(),
                    attached_hooks(pid),
                    running.stderr_tail()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn stderr_tail(&self) -> String {
        let t = self.stderr.lock().unwrap();
        if t.is_empty() {
            String::new()
        } else {
            format!("; stderr:\n  {}", t.join("\n  "))
        }
    }

    /// SIGTERM by pid, SIGKILL after 10 s; then checks that its programs are gone.
    fn stop(mut self) -> Result<()> {
        self.terminate();
        let ids = std::mem::take(&mut self.prog_ids);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left: Vec<u32> = ids.iter().copied().filter(|&id| prog_exists(id)).collect();
            if left.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} exited but its programs {left:?} are still loaded (pinned?): \
                     inspect with `bpftool prog show id <id>`",
                    self.setup.name()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn terminate(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill has no memory preconditions; pid is our child, not yet reaped.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        eprintln!("xtask: bench: {} ignored SIGTERM for 10 s; killing pid {pid}", self.setup.name());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// The fds of a process, as (fd number, link target).
fn fds(pid: u32) -> Vec<(String, String)> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let e = e.ok()?;
        let target = fs::read_link(e.path()).ok()?;
        Some((e.file_name().to_string_lossy().into_owned(), target.to_string_lossy().into_owned()))
    })
    .collect()
}

/// How many of the process's fds attach a program to a hook (tracepoint, raw
/// tracepoint, kprobe...), per the kernel's BPF_TASK_FD_QUERY.
fn attached_hooks(pid: u32) -> usize {
    fds(pid)
        .into_iter()
        .filter(|(_, t)| t == "anon_inode:[perf_event]" || t == "anon_inode:bpf_link")
        .filter_map(|(fd, _)| fd.parse::<u32>().ok())
        .filter(|&fd| task_fd_query(pid, fd))
        .count()
}

/// Program ids the process holds (program fds and links), from /proc fdinfo.
fn prog_ids(pid: u32) -> Vec<u32> {
    let mut ids: Vec<u32> = fds(pid)
        .into_iter()
        .filter(|(_, t)| t.starts_with("anon_inode:bpf"))
        .filter_map(|(fd, _)| fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).ok())
        .flat_map(|info| {
            info.lines()
                .filter_map(|l| l.strip_prefix("prog_id:").and_then(|v| v.trim().parse().ok()))
                .collect::<Vec<u32>>()
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_TASK_FD_QUERY: libc::c_long = 20;

fn sys_bpf<T>(cmd: libc::c_long, attr: &mut T) -> libc::c_long {
    // SAFETY: attr is a valid, initialized bpf_attr prefix for cmd, and its size is passed.
    unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>()) }
}

/// Whether `fd` of `pid` attaches a program (include/uapi/linux/bpf.h, task_fd_query).
fn task_fd_query(pid: u32, fd: u32) -> bool {
    #[repr(C)]
    #[derive(Default)]
    struct TaskFdQuery {
        pid: u32,
        fd: u32,
        flags: u32,
        buf_len: u32,
        buf: u64,
        prog_id: u32,
        fd_type: u32,
        probe_offset: u64,
        probe_addr: u64,
    }
    let mut attr = TaskFdQuery { pid, fd, ..Default::default() };
    sys_bpf(BPF_TASK_FD_QUERY, &mut attr) == 0 && attr.prog_id != 0
}

/// Whether a program with this id is still loaded.
fn prog_exists(id: u32) -> bool {
    #[repr(C)]
    struct GetFdById {
        prog_id: u32,
        next_id: u32,
        open_flags: u32,
    }
    let mut attr = GetFdById { prog_id: id, next_id: 0, open_flags: 0 };
    let fd = sys_bpf(BPF_PROG_GET_FD_BY_ID, &mut attr);
    if fd >= 0 {
        // SAFETY: the kernel just gave us this fd.
        unsafe { libc::close(fd as libc::c_int) };
        return true;
    }
    // ENOENT: gone. Anything else (e.g. EPERM) means we cannot tell; do not claim a leak.
    false
}
