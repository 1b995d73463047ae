//! Replay throughput: `tracer replay FILE --json` and the human timeline over a
//! generated recording of a busy node (schema-v1 JSON lines: a header, then events).
//!
//! The generator is deterministic (fixed seed), so every run replays the same
//! file; it is written once under `<target>/bench/` and reused (never committed).
//! The mix is what a Kubernetes node produces: kubelet and runc (for containerd)
//! writing cgroup files under kubepods slices, pod slices and container scopes made
//! and removed, cilium-agent setting rp_filter on its lxc interfaces and deleting
//! pod routes and links, kubelet and the shims signalling containers; a handful of
//! incident patterns (systemd-sysctl setting rp_filter=2 on all, systemd-networkd
//! deleting a cilium_host route, systemd removing a controller from kubepods) so
//! the correlator's detectors have work to do.

use std::{
    fs,
    io::{BufWriter, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{bail, Context as _, Result};

use crate::util;

/// Bumped when the generator changes, so that a stale file is not reused.
const GENERATOR_VERSION: u32 = 1;

pub struct ReplayResult {
    pub format: &'static str,
    pub events: u64,
    pub bytes: u64,
    pub wall_s: f64,
    pub cpu_s: f64,
    pub max_rss_kib: u64,
    pub summary: String,
}

/// Generates (or reuses) the recording and replays it in both formats.
pub fn run(tracer: &Path, events: u64) -> Result<Vec<ReplayResult>> {
    let path = recording(events)?;
    let bytes = fs::metadata(&path)?.len();
    let mut out = Vec::new();
    for (format, args) in [("--json", &["--json"][..]), ("human", &["--color", "never"][..])] {
        let mut cmd = Command::new(tracer);
        cmd.arg("replay").args(args).arg(&path);
        let (wall_s, cpu_s, max_rss_kib, stderr) = time_child(&mut cmd)?;
        let summary = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_owned();
        eprintln!("xtask: bench: replay {format}: {events} events in {wall_s:.2} s");
        out.push(ReplayResult { format, events, bytes, wall_s, cpu_s, max_rss_kib, summary });
    }
    Ok(out)
}

pub fn print_table(results: &[ReplayResult]) {
    let Some(first) = results.first() else { return };
    println!();
    println!(
        "replay: {} events ({:.0} MiB of schema-v1 JSON lines), stdout to /dev/null",
        first.events,
        first.bytes as f64 / (1024.0 * 1024.0)
    );
    println!(
        "{:<22} {:>10} {:>14} {:>10} {:>16} {:>12}",
        "format", "wall s", "events/s", "CPU s", "events/CPU s", "peak RSS MiB"
    );
    for r in results {
        println!(
            "{:<22} {:>10.2} {:>14.0} {:>10.2} {:>16.0} {:>12.1}",
            format!("replay {}", r.format),
            r.wall_s,
            r.events as f64 / r.wall_s.max(1e-9),
            r.cpu_s,
            r.events as f64 / r.cpu_s.max(1e-9),
            r.max_rss_kib as f64 / 1024.0
        );
    }
    for r in results {
        if !r.summary.is_empty() {
            println!("  {} stderr: {}", r.format, r.summary);
        }
    }
}

/// Runs `cmd` with stdout to /dev/null; wall time, user+sys CPU and peak RSS
/// (from wait4's rusage of that one child) and its stderr.
fn time_child(cmd: &mut Command) -> Result<(f64, f64, u64, String)> {
    let errfile = util::target_dir().join("bench").join("replay.stderr");
    let err = fs::File::create(&errfile)?;
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(err);
    let start = Instant::now();
    let child = cmd.spawn().with_context(|| format!("starting `{}`", util::describe(cmd)))?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: zeroed rusage is a valid value; wait4 fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our unreaped child; status and ru are valid pointers. The
    // Child handle is never waited on afterwards (dropping it does not reap).
    let r = loop {
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        break r;
    };
    let wall = start.elapsed().as_secs_f64();
    drop(child);
    if r != pid {
        bail!("wait4 on `{}`: {}", util::describe(cmd), std::io::Error::last_os_error());
    }
    let stderr = fs::read_to_string(&errfile).unwrap_or_default();
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        bail!("`{}` failed (wait status {status}): {}", util::describe(cmd), stderr.trim());
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok((wall, tv(ru.ru_utime) + tv(ru.ru_stime), ru.ru_maxrss as u64, stderr))
}

/// The generated recording for `events` events, written if missing.
pub fn recording(events: u64) -> Result<PathBuf> {
    let dir = util::target_dir().join("bench");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("replay-v{GENERATOR_VERSION}-{events}.jsonl"));
    if path.exists() {
        eprintln!("xtask: bench: reusing {}", path.display());
        return Ok(path);
    }
    let tmp = path.with_extension("jsonl.tmp");
    let start = Instant::now();
    let mut w = BufWriter::with_capacity(1 << 20, fs::File::create(&tmp)?);
    generate(&mut w, events)?;
    w.flush()?;
    drop(w);
    fs::rename(&tmp, &path)?;
    eprintln!(
        "xtask: bench: generated {} ({events} events) in {:.1} s",
        path.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(path)
}

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn pick<'a>(&mut self, v: &[&'a str]) -> &'a str {
        v[self.below(v.len() as u64) as usize]
    }
}

/// The process that makes an event: pid, comm, actor, parent, ancestry, exe.
struct Proc {
    pid: u32,
    comm: &'static str,
    actor: &'static str,
    ppid: u32,
    parent_comm: &'static str,
    ancestry: &'static str,
    exe: &'static str,
    on_behalf_of: Option<&'static str>,
}

const SYSTEMD: Proc = Proc {
    pid: 1,
    comm: "systemd",
    actor: "systemd",
    ppid: 0,
    parent_comm: "",
    ancestry: "[]",
    exe: "/usr/lib/systemd/systemd",
    on_behalf_of: None,
};
const KUBELET: Proc = Proc {
    pid: 912,
    comm: "kubelet",
    actor: "kubelet",
    ppid: 1,
    parent_comm: "systemd",
    ancestry: r#"["systemd"]"#,
    exe: "/usr/bin/kubelet",
    on_behalf_of: None,
};
const CILIUM: Proc = Proc {
    pid: 2231,
    comm: "cilium-agent",
    actor: "cilium-agent",
    ppid: 2190,
    parent_comm: "containerd-shim",
    ancestry: r#"["containerd-shim","systemd"]"#,
    exe: "/usr/bin/cilium-agent",
    on_behalf_of: None,
};
const SYSCTL: Proc = Proc {
    pid: 0, // per event
    comm: "systemd-sysctl",
    actor: "systemd-sysctl",
    ppid: 1,
    parent_comm: "systemd",
    ancestry: r#"["systemd"]"#,
    exe: "/usr/lib/systemd/systemd-sysctl",
    on_behalf_of: Some("systemd-udevd"),
};
const NETWORKD: Proc = Proc {
    pid: 611,
    comm: "systemd-network",
    actor: "systemd-networkd",
    ppid: 1,
    parent_comm: "systemd",
    ancestry: r#"["systemd"]"#,
    exe: "/usr/lib/systemd/systemd-networkd",
    on_behalf_of: None,
};

const QOS: [&str; 3] = ["burstable", "besteffort", "guaranteed"];
const POD_FILES: [&str; 6] = ["cpu.max", "cpu.weight", "memory.max", "memory.min", "pids.max", "cpuset.cpus"];
const CTR_FILES: [&str; 5] = ["cgroup.procs", "memory.max", "cpu.max", "pids.max", "memory.swap.max"];
const SIGNALS: [(&str, i32); 3] = [("SIGTERM", 15), ("SIGKILL", 9), ("SIGINT", 2)];
const TARGETS: [&str; 8] = ["nginx", "java", "envoy", "python3", "node", "redis-server", "postgres", "pause"];

fn pod_slice(rng: &mut Rng, pod: u64) -> String {
    let qos = QOS[(pod % 3) as usize];
    let _ = rng;
    if qos == "guaranteed" {
        format!("/kubepods.slice/kubepods-pod{pod:08x}_1a2b_4c3d_8e9f_{pod:012x}.slice")
    } else {
        format!(
            "/kubepods.slice/kubepods-{qos}.slice/kubepods-{qos}-pod{pod:08x}_1a2b_4c3d_8e9f_{pod:012x}.slice"
        )
    }
}

fn container_scope(pod_slice: &str, ctr: u64) -> String {
    format!("{pod_slice}/cri-containerd-{ctr:016x}{:016x}{ctr:016x}{:016x}.scope", ctr ^ 0xa5a5, ctr ^ 0x5a5a)
}

/// JSON string escaping for the few characters generated values contain.
fn js(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// RFC 3339 with ns, UTC, from ns since 2026-11-24T00:00:00Z (days are enough).
fn time(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let (d, s) = (secs / 86_400, secs % 86_400);
    format!(
        "2026-11-{:02}T{:02}:{:02}:{:02}.{:09}Z",
        24 + d,
        s / 3600,
        s / 60 % 60,
        s % 60,
        ns % 1_000_000_000
    )
}

fn generate(w: &mut impl std::io::Write, events: u64) -> Result<()> {
    writeln!(
        w,
        r#"{{"type":"header","schema":1,"tracer_version":"0.1.0","hostname":"bench-node-1","kernel":"6.18.44","started_at":"{}","hooks":[{{"name":"cgroup_write","state":"attached"}},{{"name":"cgroup_mkdir","state":"attached"}},{{"name":"cgroup_rmdir","state":"attached"}},{{"name":"sysctl","state":"attached"}},{{"name":"rtnetlink","state":"attached"}},{{"name":"signal","state":"attached"}}]}}"#,
        time(0)
    )?;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut t: u64 = 1_000_000_000;
    let mut next_pid: u32 = 30_000;
    for seq in 1..=events {
        // ~300 events/s of event time on average, bursty: a million events span ~1 h.
        t += if rng.below(10) == 0 { rng.below(30_000_000) } else { rng.below(1_500_000) };
        let pod = rng.below(400);
        let slice = pod_slice(&mut rng, pod);
        let ctr = pod * 4 + rng.below(3);
        let lxc = format!("lxc{:012x}", pod.wrapping_mul(0x9e37_79b9) & 0xffff_ffff_ffff);
        let roll = rng.below(10_000);
        let (p, body): (Proc, String) = if seq % 250_000 == 0 {
            // The incident patterns, rarely.
            match (seq / 250_000) % 3 {
                0 => (
                    Proc { pid: next_pid, ..SYSCTL },
                    r#""kind":"sysctl_write","name":"net.ipv4.conf.all.rp_filter","old_value":"0","value":"2","netns":4026531840"#
                        .to_owned(),
                ),
                1 => (
                    NETWORKD,
                    r#""kind":"route_delete","netns":4026531840,"family":"inet","dst":"10.0.0.0/24","table":2005,"protocol":"kernel","dev":"cilium_host","ifindex":4,"request":"RTM_DELROUTE""#
                        .to_owned(),
                ),
                _ => (
                    SYSTEMD,
                    r#""kind":"cgroup_write","cgroup":"/kubepods.slice","hierarchy":"v2","file":"cgroup.subtree_control","value":"-cpuset\n","result":8,"controllers_before":["cpuset","cpu","io","memory","pids"],"controllers_after":["cpu","io","memory","pids"]"#
                        .to_owned(),
                ),
            }
        } else if roll < 3_000 {
            let file = rng.pick(&POD_FILES);
            let value = match file {
                "cpu.max" => format!("{} 100000", 10_000 * (1 + rng.below(40))),
                "cpu.weight" => (1 + rng.below(10_000)).to_string(),
                "cpuset.cpus" => "0-1".to_owned(),
                "pids.max" => "max".to_owned(),
                _ => (256u64 << 20 << rng.below(5)).to_string(),
            };
            let len = value.len();
            (
                KUBELET,
                format!(
                    r#""kind":"cgroup_write","cgroup":{},"hierarchy":"v2","cgroup_id":{},"file":"{file}","value":{},"result":{len}"#,
                    js(&slice),
                    10_000 + pod,
                    js(&value)
                ),
            )
        } else if roll < 5_500 {
            let file = rng.pick(&CTR_FILES);
            let value = if file == "cgroup.procs" {
                (40_000 + rng.below(20_000)).to_string()
            } else {
                "max".to_owned()
            };
            let len = value.len();
            let runc = Proc {
                pid: next_pid,
                comm: "runc",
                actor: "runc",
                ppid: 3_000 + pod as u32,
                parent_comm: "containerd-shim",
                ancestry: r#"["containerd-shim","containerd","systemd"]"#,
                exe: "/usr/bin/runc",
                on_behalf_of: Some("containerd"),
            };
            next_pid += 1;
            (
                runc,
                format!(
                    r#""kind":"cgroup_write","cgroup":{},"hierarchy":"v2","cgroup_id":{},"file":"{file}","value":{},"result":{len}"#,
                    js(&container_scope(&slice, ctr)),
                    100_000 + ctr,
                    js(&value)
                ),
            )
        } else if roll < 6_500 {
            let kind = if rng.below(2) == 0 { "cgroup_mkdir" } else { "cgroup_rmdir" };
            let (p, cg) = if rng.below(3) == 0 {
                (KUBELET, slice.clone())
            } else {
                (SYSTEMD, container_scope(&slice, ctr))
            };
            (
                p,
                format!(
                    r#""kind":"{kind}","cgroup":{},"hierarchy":"v2","cgroup_id":{}"#,
                    js(&cg),
                    100_000 + ctr
                ),
            )
        } else if roll < 7_800 {
            let old = if rng.below(20) == 0 { "1" } else { "0" };
            (
                CILIUM,
                format!(
                    r#""kind":"sysctl_write","name":"net.ipv4.conf.{lxc}.rp_filter","old_value":"{old}","value":"0","netns":4026531840"#
                ),
            )
        } else if roll < 8_800 {
            let (family, dst) = if rng.below(4) == 0 {
                ("inet6", format!("fd00::{:x}/128", 0x100 + pod))
            } else {
                ("inet", format!("10.0.{}.{}/32", pod / 200, pod % 200 + 20))
            };
            (
                CILIUM,
                format!(
                    r#""kind":"route_delete","netns":4026531840,"family":"{family}","dst":"{dst}","table":254,"protocol":"boot","dev":"{lxc}","ifindex":{},"request":"RTM_DELROUTE""#,
                    100 + pod
                ),
            )
        } else if roll < 9_200 {
            (
                CILIUM,
                format!(
                    r#""kind":"link_delete","netns":4026531840,"dev":"{lxc}","ifindex":{},"request":"RTM_DELLINK""#,
                    100 + pod
                ),
            )
        } else {
            let (sig, no) = SIGNALS[rng.below(3) as usize];
            let sender = if rng.below(2) == 0 {
                KUBELET
            } else {
                Proc {
                    pid: 3_000 + pod as u32,
                    comm: "containerd-shim",
                    actor: "containerd-shim",
                    ppid: 1,
                    parent_comm: "systemd",
                    ancestry: r#"["systemd"]"#,
                    exe: "/usr/bin/containerd-shim-runc-v2",
                    on_behalf_of: None,
                }
            };
            (
                sender,
                format!(
                    r#""kind":"signal","signal":"{sig}","signo":{no},"target_pid":{},"target_comm":"{}","target_cgroup":{}"#,
                    40_000 + rng.below(20_000),
                    rng.pick(&TARGETS),
                    js(&container_scope(&slice, ctr))
                ),
            )
        };
        let pid = if p.pid == 0 { next_pid } else { p.pid };
        if p.pid == next_pid || p.pid == 0 {
            next_pid += 1;
        }
        write!(
            w,
            r#"{{"type":"event","seq":{seq},"time":"{}","pid":{pid},"tid":{pid},"comm":"{}","actor":"{}","ppid":{},"parent_comm":"{}","exe":"{}","ancestry":{},"uid":0,"start_ns":{}"#,
            time(t),
            p.comm,
            p.actor,
            p.ppid,
            p.parent_comm,
            p.exe,
            p.ancestry,
            1_000_000 + u64::from(pid) * 1_000
        )?;
        if let Some(o) = p.on_behalf_of {
            write!(w, r#","on_behalf_of":"{o}""#)?;
        }
        writeln!(w, ",{body}}}")?;
        if seq % 100_000 == 0 {
            writeln!(
                w,
                r#"{{"type":"stats","time":"{}","events":{seq},"lost":0,"decode_errors":0,"hooks":{{}},"processes":{}}}"#,
                time(t),
                600 + rng.below(100)
            )?;
        }
    }
    Ok(())
}
