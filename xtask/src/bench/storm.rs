//! `cargo xtask bench` storm section: two writer threads hammer a cgroup file of the
//! bench's own as fast as they can, with and without `tracer tail --json` writing to a
//! file. Reports writes made, events captured, records lost (from the final `stats`
//! line), the tracer's CPU per event (utime+stime from /proc/<pid>/stat) and its peak
//! RSS. The claim is that captured == made and lost == 0 at the rate two writers reach
//! on this machine.
//!
//! Then it looks for the rate where loss begins by pushing harder: more writer threads
//! (each takes a CPU share from the tracer), and the tracer at its normal priority
//! (`TRACER_NICE=0`; by default the tracer runs at nice -10, like auditd's
//! priority_boost). The first setup that loses gives the rate.
//!
//! Everything it creates it removes: one cgroup `<cgroup2 root>/xtask-storm.<pid>`, a
//! temporary output file, the tracer (ended by its pid with SIGINT).
//!
//! Used by the bench driver (`bench/mod.rs`): `storm::run(&tracer, quick)` ->
//! `Result<storm::Storm>`, then `storm::print_table(&s)`.

use std::{
    fs,
    io::{BufRead as _, BufReader},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

/// A harder storm setup: its label, the number of writers, the environment of the
/// tracer, and its extra arguments.
type Setup<'a> = (&'a str, usize, &'a [(&'a str, &'a str)], &'a [&'a str]);

use anyhow::{bail, Context as _, Result};

/// One storm run.
#[derive(Debug, Clone)]
pub struct Run {
    pub setup: String,
    pub threads: usize,
    pub secs: f64,
    /// Writes the writer threads completed.
    pub made: u64,
    /// `cgroup_write` events for the bench's cgroup in the tracer's output.
    pub captured: Option<u64>,
    /// `lost` of the final stats line (all hooks).
    pub lost: Option<u64>,
    /// Tracer CPU (user+system) during the storm and its drain, in seconds.
    pub cpu_secs: Option<f64>,
    /// Tracer peak RSS (VmHWM) in KiB.
    pub hwm_kib: Option<u64>,
}

impl Run {
    pub fn rate(&self) -> f64 {
        self.made as f64 / self.secs
    }
    pub fn us_per_event(&self) -> Option<f64> {
        match (self.cpu_secs, self.captured) {
            (Some(c), Some(n)) if n > 0 => Some(c * 1e6 / n as f64),
            _ => None,
        }
    }
    pub fn lossless(&self) -> bool {
        self.lost == Some(0) && self.captured == Some(self.made)
    }
}

/// The storm section's results.
#[derive(Debug, Clone)]
pub struct Storm {
    pub runs: Vec<Run>,
}

/// Runs the storm: no tracer, the tracer (the claim), then harder setups until one loses.
pub fn run(tracer: &Path, quick: bool) -> Result<Storm> {
    let secs = if quick { 2.0 } else { 5.0 };
    let root = cgroup2_root()
        .context("no cgroup2 hierarchy mounted at its root (looked in /proc/self/mountinfo)")?;
    let cg = CgroupGuard::new(&root.join(format!("xtask-storm.{}", std::process::id())))?;
    let file = cg.0.join("cgroup.max.depth");
    let rel = format!("/{}", cg.0.strip_prefix(&root).unwrap_or(&cg.0).display());
    let mut runs = Vec::new();

    let made = writers(&file, 2, secs, None)?;
    runs.push(Run {
        setup: "no tracer".into(),
        threads: 2,
        secs,
        made,
        captured: None,
        lost: None,
        cpu_secs: None,
        hwm_kib: None,
    });
    runs.push(traced(tracer, &file, &rel, secs, &("tracer tail --json > file", 2, &[], &[]), None)?);
    if !runs[1].lossless() {
        eprintln!("xtask: bench: storm: the tracer lost events at the rate two writers reach");
    }
    // Harder: more writers, then the tracer without its priority boost.
    let harder: &[Setup] = if quick {
        &[("tracer, nice 0", 2, &[("TRACER_NICE", "0")], &[])]
    } else {
        &[
            ("tracer", 4, &[], &[]),
            ("tracer", 8, &[], &[]),
            ("tracer", 16, &[], &[]),
            ("tracer, nice 0", 2, &[("TRACER_NICE", "0")], &[]),
            ("tracer, nice 0", 4, &[("TRACER_NICE", "0")], &[]),
        ]
    };
    for setup in harder {
        runs.push(traced(tracer, &file, &rel, secs, setup, None)?);
    }
    if quick {
        return Ok(Storm { runs });
    }
    // Then ring buffers of every size, which size the default (`--ringbuf-mib`): the
    // smallest that loses nothing. Above the rate the tracer's CPU keeps up with, every
    // size loses (the ring buffer only delays it); below, what a ring buffer absorbs is
    // the jitter of the tracer's scheduling. So: 4 writers paced at 60% of the tracer's
    // capacity (the most events a run above captured per second at its priority),
    // competing with it for the cores.
    let capacity = runs
        .iter()
        .filter(|r| !r.setup.contains("nice 0"))
        .filter_map(|r| r.captured.map(|c| c as f64 / r.secs))
        .reduce(f64::max)
        .unwrap_or(100_000.0);
    let pace = (capacity * 0.6 / 1000.0).round() * 1000.0;
    let labels: Vec<(String, String)> = [16u32, 4, 2, 1]
        .iter()
        .map(|mib| (format!("tracer, ring {mib} MiB, {:.0}k/s", pace / 1000.0), mib.to_string()))
        .collect();
    for (label, mib) in &labels {
        let args = ["--ringbuf-mib", mib.as_str()];
        runs.push(traced(tracer, &file, &rel, secs, &(label.as_str(), 4, &[], &args), Some(pace))?);
    }
    Ok(Storm { runs })
}

pub fn print_table(s: &Storm) {
    println!();
    println!("cgroup write storm (writers write \"5\\n\" to cgroup.max.depth of the bench's own cgroup)");
    println!(
        "{:<28} {:>7} {:>11} {:>11} {:>11} {:>8} {:>10} {:>9}",
        "setup", "writers", "writes/s", "made", "captured", "lost", "us/event", "RSS MiB"
    );
    let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
    for r in &s.runs {
        println!(
            "{:<28} {:>7} {:>11.0} {:>11} {:>11} {:>8} {:>10} {:>9}",
            r.setup,
            r.threads,
            r.rate(),
            r.made,
            opt(r.captured),
            opt(r.lost),
            r.us_per_event().map(|u| format!("{u:.2}")).unwrap_or_else(|| "-".into()),
            r.hwm_kib.map(|k| format!("{:.0}", k as f64 / 1024.0)).unwrap_or_else(|| "-".into()),
        );
    }
    for r in s.runs.iter().filter(|r| r.setup.contains("ring ")) {
        let verdict = if r.lossless() { "lossless" } else { "LOST records" };
        println!("{}: {verdict} at {:.0} writes/s from {} writers", r.setup, r.rate(), r.threads);
    }
    for (label, nice0) in [("tracer (nice -10)", false), ("tracer at nice 0", true)] {
        let traced: Vec<&Run> = s
            .runs
            .iter()
            .filter(|r| {
                r.captured.is_some() && !r.setup.contains("ring ") && r.setup.contains("nice 0") == nice0
            })
            .collect();
        let best_lossless = traced.iter().filter(|r| r.lossless()).map(|r| r.rate()).reduce(f64::max);
        let first_loss = traced.iter().filter(|r| !r.lossless()).map(|r| r.rate()).reduce(f64::min);
        match (best_lossless, first_loss) {
            (Some(ok), Some(bad)) => {
                println!("{label}: lossless up to {ok:.0} writes/s; loss begins by {bad:.0} writes/s")
            }
            (Some(ok), None) => println!("{label}: lossless up to {ok:.0} writes/s (no run lost anything)"),
            (None, Some(bad)) => println!("{label}: lost events at every rate tried, from {bad:.0} writes/s"),
            (None, None) => {}
        }
    }
}

/// Writes "5\n" to `file` from `threads` threads for `secs`, as fast as they can or at
/// `pace` writes/s in all; returns the writes made.
fn writers(file: &Path, threads: usize, secs: f64, pace: Option<f64>) -> Result<u64> {
    let file = Arc::new(file.to_path_buf());
    let start = Instant::now() + Duration::from_millis(50);
    let end = start + Duration::from_secs_f64(secs);
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let file = file.clone();
            thread::spawn(move || -> Result<u64> {
                let f = fs::OpenOptions::new()
                    .write(true)
                    .open(&*file)
                    .with_context(|| format!("open {}", file.display()))?;
                let fd = f.as_raw_fd();
                while Instant::now() < start {}
                let mut n = 0u64;
                loop {
                    for _ in 0..64 {
                        // SAFETY: fd stays open for the loop; the buffer is 2 valid bytes.
                        let r = unsafe { libc::write(fd, b"5\n".as_ptr().cast(), 2) };
                        if r != 2 {
                            bail!("write to {}: {}", file.display(), std::io::Error::last_os_error());
                        }
                        n += 1;
                    }
                    let now = Instant::now();
                    if now >= end {
                        return Ok(n);
                    }
                    if let Some(pace) = pace {
                        // Ahead of the pace: wait until this thread's share is due.
                        let due = start + Duration::from_secs_f64(n as f64 * threads as f64 / pace);
                        if due > now {
                            thread::sleep(due - now);
                        }
                    }
                }
            })
        })
        .collect();
    let mut total = 0;
    for h in handles {
        total += h.join().map_err(|_| anyhow::anyhow!("writer thread panicked"))??;
    }
    Ok(total)
}

/// One storm with `tracer tail --json --stats-every 1 > file` running.
fn traced(tracer: &Path, file: &Path, rel: &str, secs: f64, setup: &Setup, pace: Option<f64>) -> Result<Run> {
    let &(setup, threads, env, args) = setup;
    let out_path = std::env::temp_dir().join(format!("xtask-storm.{}.jsonl", std::process::id()));
    let out = fs::File::create(&out_path).with_context(|| format!("create {}", out_path.display()))?;
    let _rm = RemoveOnDrop(out_path.clone());
    let mut cmd = Command::new(tracer);
    cmd.args(["tail", "--json", "--stats-every", "1"]).args(args).stdout(out).stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().with_context(|| format!("start {}", tracer.display()))?;
    let pid = child.id();
    let result = (|| -> Result<Run> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if fs::read_to_string(&out_path).map(|s| s.contains("\"type\":\"header\"")).unwrap_or(false) {
                break;
            }
            if let Some(st) = child.try_wait()? {
                bail!("tracer exited before its header: {st}");
            }
            if Instant::now() > deadline {
                bail!("tracer printed no header within 60 s");
            }
            thread::sleep(Duration::from_millis(50));
        }
        thread::sleep(Duration::from_millis(500));
        let cpu0 = cpu_secs(pid)?;
        let made = writers(file, threads, secs, pace)?;
        // Let the tracer drain what the kernel handed over.
        thread::sleep(Duration::from_secs(1));
        let cpu1 = cpu_secs(pid)?;
        let hwm = fs::read_to_string(format!("/proc/{pid}/status")).ok().and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        });
        Ok(Run {
            setup: setup.into(),
            threads,
            secs,
            made,
            captured: None,
            lost: None,
            cpu_secs: Some(cpu1 - cpu0),
            hwm_kib: hwm,
        })
    })();
    // SAFETY: signals the child we started, by its pid.
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    let _ = child.wait();
    let mut run = result?;
    let (captured, lost) = scan(&out_path, rel)?;
    run.captured = Some(captured);
    run.lost = lost;
    Ok(run)
}

/// Events of `cgroup` in the output, and `lost` of its last stats line.
fn scan(path: &Path, cgroup: &str) -> Result<(u64, Option<u64>)> {
    let want = format!("\"cgroup\":\"{cgroup}\"");
    let mut captured = 0;
    let mut lost = None;
    for line in BufReader::new(fs::File::open(path)?).lines() {
        let line = line?;
        if line.starts_with("{\"type\":\"event\"") {
            if line.contains("\"kind\":\"cgroup_write\"") && line.contains(&want) {
                captured += 1;
            }
        } else if line.starts_with("{\"type\":\"stats\"") {
            // The first "lost" of a stats line is the total (per-hook ones follow).
            lost = line
                .split("\"lost\":")
                .nth(1)
                .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok());
        }
    }
    Ok((captured, lost))
}

fn cpu_secs(pid: u32) -> Result<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are the 12th and 13th after the comm.
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok(ticks as f64 / hz)
}

fn cgroup2_root() -> Option<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        let f: Vec<&str> = pre.split(' ').collect();
        (post.starts_with("cgroup2 ") && f.len() >= 5 && f[3] == "/").then(|| PathBuf::from(f[4]))
    })
}

struct CgroupGuard(PathBuf);

impl CgroupGuard {
    fn new(path: &Path) -> Result<Self> {
        fs::create_dir(path).with_context(|| format!("mkdir {}", path.display()))?;
        Ok(CgroupGuard(path.to_path_buf()))
    }
}

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.0);
    }
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}
