//! `tracer-demo` (`cargo xtask demo`): the incidents of docs/DESIGN.md, reproduced with
//! the real components (`tracer_tests::scenarios`), played one after the other while
//! `tracer tail` runs, so that a person without a Kubernetes cluster sees each change
//! happen and the finding appear. Every scenario runs in a sandbox of its own (network
//! namespace, private mount namespace, cgroups under a unique prefix) and cleans up.
//!
//! ```text
//! tracer-demo [--only NAME[,NAME...]]... [--list] [--color auto|always|never] [--pause SECS]
//! ```
//!
//! The tracer is `TRACER_BIN`, or `../target/release/tracer` next to this crate. Its
//! stdout is this program's stdout (the live lines); the banners go to the same stream.
//! Exit status: 0 when every scenario played, 1 when one could not be set up (the
//! reason is printed and the others still play), 2 on a usage error.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use tracer_tests::scenarios::{self, Networkd, Step};

struct Scenario {
    name: &'static str,
    /// What is about to happen.
    what: &'static str,
    /// The real component that makes the change.
    component: &'static str,
    /// The finding to expect.
    expect: &'static str,
    run: fn(scenarios::Observer),
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "rp_filter_never_set",
        what: "systemd's 50-default.conf is applied in a netns with Cilium's interfaces \
               (cilium_host, cilium_net, lxc…) that were never set explicitly: it writes only \
               net.ipv4.conf.default.rp_filter = 2, and the kernel copies it to them",
        component: "the real systemd-sysctl",
        expect: "rp-filter-on-cilium (critical, actor systemd-sysctl) naming the interfaces \
                 `default` reached",
        run: scenarios::rp_filter_never_set,
    },
    Scenario {
        name: "rp_filter",
        what: "Cilium set rp_filter 0 on its interfaces; 50-default.conf is applied again (its \
               glob writes 2 on each), then for one lxc interface as udev's 99-systemd.rules \
               does (--prefix), then Cilium's sysctl.d override writes 0 back",
        component: "the real systemd-sysctl",
        expect: "rp-filter-on-cilium for the glob and for the udev run; nothing for Cilium's \
                 override (the fix)",
        run: scenarios::rp_filter,
    },
    Scenario {
        name: "networkd",
        what: "systemd-networkd (ManageForeignRoutes and ManageForeignRoutingPolicyRules at \
               their default, yes; a catch-all .network) manages a netns holding Cilium's \
               rules 9, 10, 100 and routes via cilium_host and in tables 2004/2005; \
               `networkctl reconfigure` removes what it did not create",
        component: "the real systemd-networkd",
        expect: "cilium-rule-deleted and cilium-route-deleted (critical, actor \
                 systemd-networkd)",
        run: |obs| scenarios::networkd(Networkd { manage_foreign: true, catch_all: true }, obs),
    },
    Scenario {
        name: "networkd_fixed",
        what: "the same reconfigure with the fix: ManageForeignRoutes=no and \
               ManageForeignRoutingPolicyRules=no in networkd.conf",
        component: "the real systemd-networkd",
        expect: "no finding: Cilium's rules and routes stay",
        run: |obs| scenarios::networkd(Networkd { manage_foreign: false, catch_all: false }, obs),
    },
    Scenario {
        name: "runc",
        what: "a busybox container runs under a unique cgroup prefix: the runtime creates its \
               cgroups, writes its limits and removes them",
        component: "the real runc",
        expect: "no finding; every cgroup event attributed to runc",
        run: scenarios::runc,
    },
    Scenario {
        name: "containerd",
        what: "`ctr run` asks a private containerd for a busybox container: containerd starts \
               its shim, the shim runs runc",
        component: "the real containerd, containerd-shim-runc-v2 and runc",
        expect: "no finding; cgroup events by runc acting for containerd, the shim in the \
                 ancestry",
        run: scenarios::containerd,
    },
    Scenario {
        name: "kubepods",
        what: "a kubepods tree in cgroup v2: kubelet enables a controller, systemd removes it \
               from the burstable QoS slice, kubelet kills the pod, removes its cgroup and \
               writes the controller back (hugetlb here, the one cgroup v2 has free; cpuset \
               takes the same path)",
        component: "stand-ins named and parented like kubelet and systemd (no kubelet or \
                    systemd-as-init runs here)",
        expect: "kubepods-controller-removed (critical, actor systemd) at once; its follow-up \
                 naming the killed pod when the window closes (here, when the tracer stops)",
        run: scenarios::kubepods,
    },
    Scenario {
        name: "socket_lb",
        what: "cilium-agent (run by a containerd-shim, as in a pod) in a private cgroup \
               namespace mounts cgroup2 itself and attaches its socket load balancer \
               (connect4/6, sendmsg4, post_bind4; BPF_PROG_ATTACH and BPF_LINK_CREATE) at the \
               root it sees, its own cgroup; then detaches; then the same agent in the host's \
               cgroup namespace attaches at the host's cgroup2 root",
        component: "the kernel's cgroup BPF attach, with a stand-in named and parented like \
                    cilium-agent loading real socket-address programs (they allow everything)",
        expect: "cilium-socket-lb-nested-cgroup (critical, actor cilium-agent) for the nested \
                 attach; events and no finding for the detaches and the host-root attach",
        run: scenarios::cilium_socket_lb,
    },
];

struct Opts {
    only: Vec<String>,
    list: bool,
    color: String,
    pause: Duration,
}

const USAGE: &str =
    "usage: tracer-demo [--only NAME[,NAME...]]... [--list] [--color auto|always|never] [--pause SECS]";

fn parse_args() -> Result<Opts, String> {
    let mut o = Opts { only: Vec::new(), list: false, color: "auto".into(), pause: Duration::from_secs(1) };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (a.clone(), None),
        };
        let mut value =
            |what: &str| inline.clone().or_else(|| args.next()).ok_or_else(|| format!("{flag} needs {what}"));
        match flag.as_str() {
            "--only" => {
                for n in value("a scenario name")?.split(',').filter(|n| !n.is_empty()) {
                    let n = n.replace('-', "_");
                    if !SCENARIOS.iter().any(|s| s.name == n) {
                        return Err(format!("no scenario {n:?} (--list shows them)"));
                    }
                    o.only.push(n);
                }
            }
            "--list" => o.list = true,
            "--color" => {
                o.color = value("auto, always or never")?;
                if !["auto", "always", "never"].contains(&o.color.as_str()) {
                    return Err(format!("--color {}: auto, always or never", o.color));
                }
            }
            "--pause" => {
                let v = value("seconds")?;
                let s: f64 = v.parse().map_err(|_| format!("--pause {v}: seconds"))?;
                o.pause = Duration::from_secs_f64(s.clamp(0.0, 60.0));
            }
            "-h" | "--help" => {
                println!("{USAGE}\n\nPlays the incidents of docs/DESIGN.md with the real components while `tracer tail` runs.\nScenarios (--list for details): {}", names());
                std::process::exit(0);
            }
            _ => return Err(format!("unknown argument {a:?}")),
        }
    }
    Ok(o)
}

fn names() -> String {
    SCENARIOS.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
}

/// Banner styling: bold cyan for scenarios, dim for steps, red for failures.
struct Style {
    color: bool,
}

impl Style {
    fn paint(&self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
}

/// Set by SIGINT/SIGTERM: finish the scenario under way (so it cleans up), play no more.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// The last panic message (a scenario that could not be set up says why in a panic).
static PANIC: Mutex<Option<String>> = Mutex::new(None);

fn tracer_bin() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("TRACER_BIN") {
        return Ok(PathBuf::from(p));
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/tracer");
    if p.exists() {
        Ok(p)
    } else {
        Err(format!("{} not built: run `cargo xtask demo` (or set TRACER_BIN)", p.display()))
    }
}

fn main() -> ExitCode {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("tracer-demo: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let chosen: Vec<&Scenario> =
        SCENARIOS.iter().filter(|s| opts.only.is_empty() || opts.only.iter().any(|n| n == s.name)).collect();
    if opts.list {
        for s in &chosen {
            println!("{}\n  {}.\n  By {}.\n  Expect: {}.\n", s.name, s.what, s.component, s.expect);
        }
        return ExitCode::SUCCESS;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("tracer-demo: needs root (it loads eBPF programs and creates network namespaces and cgroups); run `cargo xtask demo`");
        return ExitCode::FAILURE;
    }
    let bin = match tracer_bin() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("tracer-demo: {e}");
            return ExitCode::FAILURE;
        }
    };
    let color = match opts.color.as_str() {
        "always" => true,
        "never" => false,
        // SAFETY: isatty on our own stdout.
        _ => unsafe { libc::isatty(1) == 1 },
    };
    let st = Style { color };

    // Ctrl-C lets the scenario under way finish and clean up; the tracer runs in a
    // process group of its own so that the terminal's Ctrl-C does not stop it early.
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| info.payload().downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".into());
        let at = info.location().map(|l| format!(" ({}:{})", l.file(), l.line())).unwrap_or_default();
        *PANIC.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!("{msg}{at}"));
    }));

    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(&bin);
    if !color {
        // Its log lines on stderr too (tracing honours NO_COLOR).
        cmd.env("NO_COLOR", "1");
    }
    let mut tracer = match cmd
        .args(["tail", "--color", &opts.color])
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tracer-demo: cannot start {}: {e}", bin.display());
            return ExitCode::FAILURE;
        }
    };
    // What the scenarios and the components they run print on stderr (sandbox chatter,
    // "hello from the container") goes to a log, shown only when a scenario fails; the
    // tracer's own stderr still reaches ours.
    let log_path = std::env::temp_dir().join(format!("tracer-demo-{}.log", std::process::id()));
    let log = match std::fs::File::create(&log_path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("tracer-demo: cannot create {}: {e}", log_path.display());
            return ExitCode::FAILURE;
        }
    };
    // SAFETY: duplicating our own stderr; the new fd is owned by `our_stderr`.
    let our_stderr = unsafe {
        use std::os::fd::FromRawFd;
        std::fs::File::from_raw_fd(libc::dup(2))
    };
    let quiet = |on: bool| {
        use std::os::fd::AsRawFd;
        let _ = std::io::stderr().flush();
        let fd = if on { log.as_raw_fd() } else { our_stderr.as_raw_fd() };
        // SAFETY: both fds are open for the whole run; dup2 onto stderr.
        unsafe { libc::dup2(fd, 2) };
    };

    // The tracer's stderr: its readiness line, then anything it warns about, passed on.
    let (ready_tx, ready_rx) = mpsc::channel();
    let stderr = tracer.stderr.take().unwrap();
    let mut to_user = our_stderr.try_clone().expect("dup stderr");
    let forward = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = writeln!(to_user, "{line}");
            if line.contains("hooks attached") {
                let _ = ready_tx.send(());
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match ready_rx.recv_timeout(Duration::from_millis(100)) {
            Ok(()) => break,
            Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {
                if let Ok(Some(status)) = tracer.try_wait() {
                    eprintln!("tracer-demo: the tracer exited before attaching its hooks ({status})");
                    return ExitCode::FAILURE;
                }
            }
            _ => {
                let status = tracer.try_wait().ok().flatten();
                eprintln!("tracer-demo: the tracer did not report its hooks within 60 s (status {status:?})");
                // SAFETY: our own child.
                unsafe { libc::kill(tracer.id() as i32, libc::SIGKILL) };
                let _ = tracer.wait();
                return ExitCode::FAILURE;
            }
        }
    }
    std::thread::sleep(opts.pause);

    let mut failed: Vec<(&str, String)> = Vec::new();
    let n = chosen.len();
    for (i, s) in chosen.iter().enumerate() {
        if STOP.load(Ordering::SeqCst) {
            println!("{}", st.paint("33", "── interrupted: no more scenarios"));
            break;
        }
        println!();
        println!("{}", st.paint("1;36", &format!("━━ [{}/{n}] {}: {}", i + 1, s.name, s.what)));
        println!("{}", st.paint("36", &format!("   by {}", s.component)));
        println!("{}", st.paint("36", &format!("   expect: {}", s.expect)));
        let _ = std::io::stdout().flush();
        std::thread::sleep(opts.pause / 2);
        *PANIC.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let mut observe = |step: &Step| {
            let first = step.text.lines().next().unwrap_or("");
            let expect = step.expect.unwrap_or("no finding");
            println!("{}", st.paint("2", &format!("   ↳ {}: {first} (expect: {expect})", step.id)));
            let _ = std::io::stdout().flush();
            // Let the tracer print this step's lines before the next step's.
            std::thread::sleep(Duration::from_millis(600));
        };
        let run = s.run;
        quiet(true);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&mut observe)));
        quiet(false);
        if let Err(payload) = r {
            let why = PANIC
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "it panicked".into());
            println!(
                "{}",
                st.paint(
                    "1;31",
                    &format!("   ✗ {} could not be played (cleaned up; continuing): {why}", s.name)
                )
            );
            failed.push((s.name, why));
        }
        let _ = std::io::stdout().flush();
        std::thread::sleep(opts.pause);
    }

    // SIGINT: the tracer drains, closes its windows and prints its summary.
    println!();
    println!("{}", st.paint("1;36", "━━ stopping the tracer (SIGINT): its summary follows"));
    let _ = std::io::stdout().flush();
    // SAFETY: our own child, by pid.
    unsafe { libc::kill(tracer.id() as i32, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        match tracer.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                eprintln!("tracer-demo: the tracer did not stop within 20 s of SIGINT; killing it");
                // SAFETY: our own child, by pid.
                unsafe { libc::kill(tracer.id() as i32, libc::SIGKILL) };
                let _ = tracer.wait();
                break None;
            }
        }
    };
    let _ = forward.join();
    let mut code = 0;
    if status.is_none_or(|s| !s.success()) {
        eprintln!("tracer-demo: the tracer ended with {status:?}");
        code = 1;
    }
    if failed.is_empty() {
        let _ = std::fs::remove_file(&log_path);
    } else {
        eprintln!("tracer-demo: {} of {n} scenarios could not be played:", failed.len());
        for (name, why) in &failed {
            eprintln!("  {name}: {why}");
        }
        eprintln!("tracer-demo: what they printed is in {}", log_path.display());
        code = 1;
    }
    ExitCode::from(code)
}
