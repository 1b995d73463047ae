//! Footprint of `tracer tail --json`: start-up time (launch to the header line,
//! which the tracer prints once every hook is attached), RSS (VmRSS, RssAnon,
//! peak VmHWM from /proc/<pid>/status) and CPU (utime+stime of all its threads,
//! from /proc/<pid>/stat) over an idle window.

use std::{fs, path::Path, process::Command, thread, time::Duration};

use anyhow::{Context as _, Result};

use super::{median, Running, Setup};

pub struct Footprint {
    /// Launch to header line, one per launch.
    pub startups_ms: Vec<f64>,
    pub hooks_attached: usize,
    pub hooks_total: usize,
    pub idle_s: f64,
    pub idle_cpu_ms: f64,
    /// Processes forked on the node during the idle window (each one is work for
    /// the tracer's process table: fork, exec, exit events).
    pub idle_forks: u64,
    pub rss_kib: u64,
    pub rss_anon_kib: u64,
    pub hwm_kib: u64,
}

pub fn run(tracer: &Path, launches: u32, idle: Duration) -> Result<Footprint> {
    let mut startups_ms = Vec::new();
    let mut last = None;
    for i in 0..launches.max(1) {
        let mut cmd = Command::new(tracer);
        cmd.args(["tail", "--json"]);
        let r = Running::start(Setup::Tracer, cmd, true, 1)?;
        let ms = r.startup.map_or(f64::NAN, |d| d.as_secs_f64() * 1e3);
        eprintln!("xtask: bench: footprint: launch {} to header line: {ms:.0} ms", i + 1);
        startups_ms.push(ms);
        if i + 1 < launches {
            r.stop()?;
        } else {
            last = Some(r);
        }
    }
    let r = last.expect("at least one launch");
    let header = r.first_line.clone().unwrap_or_default();
    let hooks_attached = header.matches(r#""state":"attached""#).count();
    let hooks_total = header.matches(r#""state":"#).count();
    let pid = r.child.id();

    // Settle after start-up (BTF, process table scan), then the idle window.
    thread::sleep(Duration::from_secs(1));
    let before = cpu_ticks(pid)?;
    let forks_before = forks();
    eprintln!("xtask: bench: footprint: idle for {} s", idle.as_secs());
    thread::sleep(idle);
    let after = cpu_ticks(pid)?;
    let idle_forks = forks().saturating_sub(forks_before);
    let status = fs::read_to_string(format!("/proc/{pid}/status")).context("reading the tracer's status")?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    // SAFETY: sysconf has no memory preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let f = Footprint {
        startups_ms,
        hooks_attached,
        hooks_total,
        idle_s: idle.as_secs_f64(),
        idle_cpu_ms: (after - before) as f64 * 1e3 / hz,
        idle_forks,
        rss_kib: field("VmRSS:"),
        rss_anon_kib: field("RssAnon:"),
        hwm_kib: field("VmHWM:"),
    };
    r.stop()?;
    Ok(f)
}

/// Processes forked since boot (`processes` in /proc/stat).
fn forks() -> u64 {
    fs::read_to_string("/proc/stat")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("processes "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// utime + stime, in clock ticks, of the whole process (all threads).
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).context("reading the tracer's stat")?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').context("malformed stat")? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime 15.
    let utime: u64 = f.get(11).and_then(|v| v.parse().ok()).context("no utime in stat")?;
    let stime: u64 = f.get(12).and_then(|v| v.parse().ok()).context("no stime in stat")?;
    Ok(utime + stime)
}

pub fn print_table(f: &Footprint) {
    let mib = |k: u64| k as f64 / 1024.0;
    let min = f.startups_ms.iter().copied().fold(f64::INFINITY, f64::min);
    println!();
    println!("footprint: tracer tail --json");
    println!(
        "  start-up, launch to header line (all hooks attached): median {:.0} ms, min {min:.0} ms over {} launch(es); hooks attached {}/{}",
        median(&f.startups_ms).unwrap_or(f64::NAN),
        f.startups_ms.len(),
        f.hooks_attached,
        f.hooks_total
    );
    println!(
        "  idle {:.0} s: CPU {:.0} ms ({:.3}% of one core); meanwhile {} process(es) forked on the node",
        f.idle_s,
        f.idle_cpu_ms,
        f.idle_cpu_ms / (f.idle_s * 10.0),
        f.idle_forks
    );
    println!(
        "  RSS {:.1} MiB (anon {:.1} MiB), peak RSS (VmHWM) {:.1} MiB",
        mib(f.rss_kib),
        mib(f.rss_anon_kib),
        mib(f.hwm_kib)
    );
}
