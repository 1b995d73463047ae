//! `tracer record` on the real kernel, then `tracer replay` over what it wrote (issue 4).
//!
//! Every test makes cgroup writes of its own (`cgroup.max.descendants` of a test cgroup,
//! one distinct value per write, so each event can be checked off) while the real
//! recorder runs, then stops it the way an on-call engineer or a node would: SIGTERM,
//! SIGKILL in the middle of a burst, a full disk, an unwritable path. Run as root, one
//! test at a time (`cargo xtask test` does).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tracer_tests::*;

/// The cgroup file every test writes: present in every non-root cgroup v2, no controller
/// needed, and harmless (a limit on descendants of a cgroup that has none).
const FILE: &str = "cgroup.max.descendants";

/// A running `tracer record`; SIGKILLed and reaped on drop if still running.
struct Recorder {
    child: Child,
    stderr: Arc<Mutex<String>>,
    ready: Receiver<()>,
}

impl Recorder {
    /// `tracer record <args>`; returns once the tracer says its hooks are attached and it
    /// is recording.
    fn start(args: &[&str]) -> Recorder {
        let mut r = Recorder::spawn(Command::new(tracer_bin()).arg("record").args(args));
        r.wait_ready();
        r
    }

    fn spawn(cmd: &mut Command) -> Recorder {
        require_root();
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tracer record");
        let err = child.stderr.take().unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, ready) = mpsc::channel();
        let buf = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                eprintln!("[record] {line}");
                if line.contains("recording to") {
                    let _ = tx.send(());
                }
                let mut b = buf.lock().unwrap();
                b.push_str(&line);
                b.push('\n');
            }
        });
        Recorder { child, stderr, ready }
    }

    fn wait_ready(&mut self) {
        if self.ready.recv_timeout(Duration::from_secs(60)).is_err() {
            let status = self.child.try_wait().ok().flatten();
            panic!(
                "tracer record did not start recording within 60 s (status {status:?}); stderr:\n{}",
                self.stderr()
            );
        }
        // The file is created right after that message; give it the header.
        std::thread::sleep(Duration::from_millis(100));
    }

    fn signal(&self, sig: i32) {
        // SAFETY: our own child, by pid.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Waits for exit (at most `timeout`); returns the exit code (-signal when killed).
    fn wait(&mut self, timeout: Duration) -> i32 {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                // Let the stderr thread catch up.
                std::thread::sleep(Duration::from_millis(50));
                use std::os::unix::process::ExitStatusExt;
                return st.code().unwrap_or_else(|| -st.signal().unwrap_or(0));
            }
            assert!(
                Instant::now() < deadline,
                "tracer record still running after {timeout:?}; stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.signal(libc::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

/// A test cgroup and its `cgroup.max.descendants` file.
struct Target {
    cg: CgroupGuard,
    file: PathBuf,
}

impl Target {
    fn new(what: &str) -> Target {
        let cg = CgroupGuard::new(&cgroup2_root(), &unique(what));
        let file = cg.path.join(FILE);
        Target { cg, file }
    }

    /// Writes value `v` (one write() syscall).
    fn write(&self, v: u64) {
        std::fs::write(&self.file, format!("{v}\n"))
            .unwrap_or_else(|e| panic!("write {}: {e}", self.file.display()));
    }
}

/// Parsed lines of a recording: the complete ones (ending in a newline), and the bytes
/// after the last newline (a line cut short by SIGKILL), if any.
struct Lines {
    complete: Vec<Value>,
    partial: Option<Vec<u8>>,
    bytes: u64,
}

fn read_lines(path: &Path) -> Lines {
    let mut raw = Vec::new();
    std::fs::File::open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
        .read_to_end(&mut raw)
        .unwrap();
    let bytes = raw.len() as u64;
    let cut = raw.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let partial = (cut < raw.len()).then(|| raw[cut..].to_vec());
    let complete = raw[..cut]
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_slice(l).unwrap_or_else(|e| {
                panic!(
                    "{}:{}: a complete line is not JSON ({e}): {}",
                    path.display(),
                    i + 1,
                    String::from_utf8_lossy(l)
                )
            })
        })
        .collect();
    Lines { complete, partial, bytes }
}

/// The values of our writes among `lines` (events on our cgroup's file), in file order.
fn our_values(lines: &[Value], t: &Target) -> Vec<u64> {
    lines
        .iter()
        .filter(|v| {
            v["type"] == "event"
                && v["kind"] == "cgroup_write"
                && v["cgroup"] == t.cg.rel.as_str()
                && v["file"] == FILE
        })
        .map(|v| {
            v["value"]
                .as_str()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or_else(|| panic!("event without our numeric value: {v}"))
        })
        .collect()
}

/// `tracer replay ARGS`: (exit code, stdout lines as JSON, stderr).
fn replay(args: &[&str]) -> (i32, Vec<Value>, String) {
    let out = Command::new(tracer_bin())
        .arg("replay")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run tracer replay");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "tracer replay panicked:\n{stderr}");
    let code = out.status.code().unwrap_or(-1);
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("replay --json printed a non-JSON line ({e}): {l}"))
        })
        .collect();
    (code, lines, stderr)
}

/// A small xorshift generator, seeded from the clock; the seed is printed so that a
/// failing run can be repeated with `RECORDING_SEED=<seed>`.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::env::var("RECORDING_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
        });
        eprintln!("RECORDING_SEED={seed}");
        Rng(seed)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn tmp_path(dir: &TempDir, name: &str) -> String {
    dir.path.join(name).to_str().unwrap().to_string()
}

/// SIGTERM after N writes: every write is in the file, in order, followed by a final
/// stats line; the file is mode 0600 and `replay --strict` reads all of it.
#[test]
fn sigterm_keeps_every_event_and_a_final_stats_line() {
    const N: u64 = 2000;
    let t = Target::new("rec-term");
    let dir = TempDir::new("rec-term");
    let out = tmp_path(&dir, "rec.jsonl");
    let mut r = Recorder::start(&["-o", &out, "--cgroup", &t.cg.rel]);
    let started = Instant::now();
    for v in 0..N {
        t.write(v);
    }
    let wrote = started.elapsed();
    // Right after the last write: whatever is still in the ring buffer or the writer's
    // buffer must be drained, not dropped.
    let stop = Instant::now();
    r.signal(libc::SIGTERM);
    let code = r.wait(Duration::from_secs(20));
    let stopped = stop.elapsed();
    assert_eq!(code, 0, "tracer record exit code; stderr:\n{}", r.stderr());

    let l = read_lines(Path::new(&out));
    assert!(l.partial.is_none(), "the file ends with a partial line after SIGTERM");
    assert_eq!(l.complete[0]["type"], "header", "first line: {}", l.complete[0]);
    let last = l.complete.last().unwrap();
    assert_eq!(last["type"], "stats", "last line must be the final stats: {last}");
    assert_eq!(last["lost"], 0, "events lost: {last}");
    let got = our_values(&l.complete, &t);
    let want: Vec<u64> = (0..N).collect();
    let missing: Vec<u64> = want.iter().copied().filter(|v| !got.contains(v)).collect();
    assert!(
        missing.is_empty(),
        "{} of {N} writes missing, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert_eq!(got, want, "events out of order or duplicated");
    let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "recording mode {mode:o}");
    eprintln!(
        "sigterm: {N} writes in {wrote:?}, {} recorded, {} lines, {} bytes; stopped {stopped:?} after SIGTERM",
        got.len(),
        l.complete.len(),
        l.bytes
    );

    let (code, lines, stderr) = replay(&["--strict", "--json", &out]);
    assert_eq!(code, 0, "replay --strict failed:\n{stderr}");
    assert_eq!(our_values(&lines, &t), want, "replay did not read back every event");
    assert!(stderr.contains("bad lines: 0"), "replay summary: {stderr}");
}

/// SIGKILL at three random points of a burst of writes (before the first flush, in the
/// middle, near the end): every complete line of the file is read back by `replay`, at
/// most one bad line is reported (the cut last one, with file:line), nothing panics, and
/// what was recorded is a gap-free prefix of what was written.
#[test]
fn sigkill_during_a_burst_loses_at_most_the_cut_last_line() {
    const N: u64 = 20_000;
    let mut rng = Rng::new();
    // Points in the burst, as a fraction of its (measured) length.
    let points = [rng.below(5), 20 + rng.below(50), 70 + rng.below(40)];
    let t = Target::new("rec-kill");
    let dir = TempDir::new("rec-kill");
    for (round, pct) in points.iter().enumerate() {
        let out = tmp_path(&dir, &format!("rec{round}.jsonl"));
        let mut r = Recorder::start(&["-o", &out, "--cgroup", &t.cg.rel]);
        let file = t.file.clone();
        let base = (round as u64 + 1) * 1_000_000;
        let burst = Instant::now();
        let writer = std::thread::spawn(move || {
            for v in 0..N {
                std::fs::write(&file, format!("{}\n", base + v)).expect("write");
            }
            burst.elapsed()
        });
        // The burst of 20k writes takes a few hundred ms here; the first point is before
        // the writer's first flush (200 ms / 256 lines), the others inside or after it.
        let delay = Duration::from_millis(*pct * 4);
        std::thread::sleep(delay);
        r.signal(libc::SIGKILL);
        let code = r.wait(Duration::from_secs(10));
        let took = writer.join().unwrap();
        assert_eq!(code, -libc::SIGKILL, "tracer record exit; stderr:\n{}", r.stderr());

        let l = read_lines(Path::new(&out));
        let got = our_values(&l.complete, &t);
        let got_rel: Vec<u64> = got.iter().map(|v| v - base).collect();
        let prefix: Vec<u64> = (0..got.len() as u64).collect();
        assert_eq!(got_rel, prefix, "round {round}: recorded events are not a gap-free prefix of the writes");
        eprintln!(
            "sigkill round {round}: killed {delay:?} into a burst of {N} writes ({took:?}); {} events, {} complete lines, {} bytes, partial tail {:?} bytes",
            got.len(),
            l.complete.len(),
            l.bytes,
            l.partial.as_ref().map(|p| p.len())
        );

        if l.complete.is_empty() && l.partial.is_none() {
            // Killed before the header reached the disk: an empty file, which replay
            // reports as no recording (non-zero exit, the file named).
            let (code, _, stderr) = replay(&["--json", &out]);
            assert_ne!(code, 0, "{stderr}");
            assert!(stderr.contains(&format!("{out} is not a tracer recording")), "{stderr}");
            continue;
        }
        let (code, lines, stderr) = replay(&["--json", &out]);
        assert_eq!(code, 0, "round {round}: replay failed:\n{stderr}");
        assert_eq!(
            our_values(&lines, &t),
            got,
            "round {round}: replay did not read back every complete line"
        );
        match &l.partial {
            None => assert!(stderr.contains("bad lines: 0"), "round {round}: {stderr}"),
            Some(_) => {
                let where_ = format!("{out}:{}:", l.complete.len() + 1);
                assert!(stderr.contains("bad lines: 1"), "round {round}: {stderr}");
                assert!(
                    stderr.contains(&where_),
                    "round {round}: the cut line is not reported at {where_}: {stderr}"
                );
            }
        }
        // --strict stops at the cut line (and only there).
        let (code, _, stderr) = replay(&["--strict", "--json", &out]);
        assert_eq!(code != 0, l.partial.is_some(), "round {round}: replay --strict: {stderr}");

        // The recorder flushes whole lines, so a SIGKILL rarely cuts one; a crash of the
        // node (or a copy taken while it writes) does. Cut this real recording at a
        // random byte after its header and check the same promises on it.
        let raw = std::fs::read(&out).unwrap();
        let header_end = raw.iter().position(|&b| b == b'\n').map_or(raw.len(), |i| i + 1);
        if raw.len() > header_end + 1 {
            let at = header_end + rng.below((raw.len() - header_end) as u64) as usize;
            let cut_path = tmp_path(&dir, &format!("rec{round}-cut.jsonl"));
            std::fs::write(&cut_path, &raw[..at]).unwrap();
            let c = read_lines(Path::new(&cut_path));
            let want = our_values(&c.complete, &t);
            let (code, lines, stderr) = replay(&["--json", &cut_path]);
            assert_eq!(code, 0, "round {round}, cut at byte {at}: {stderr}");
            assert_eq!(
                our_values(&lines, &t),
                want,
                "round {round}, cut at byte {at}: not every complete line read back"
            );
            if c.partial.is_some() {
                let where_ = format!("{cut_path}:{}: truncated last line", c.complete.len() + 1);
                assert!(
                    stderr.contains("bad lines: 1") && stderr.contains(&where_),
                    "round {round}, cut at byte {at}: want {where_}:\n{stderr}"
                );
            } else {
                assert!(stderr.contains("bad lines: 0"), "round {round}, cut at byte {at}: {stderr}");
            }
            eprintln!(
                "sigkill round {round}: copy cut at byte {at} of {}: {} events read back, cut line reported",
                raw.len(),
                want.len()
            );
        }
    }
}

/// Rotation with a small `--rotate-size`: every part starts with a header, parts are
/// ordered newest (FILE) to oldest (FILE.n), and replaying them together, given in any
/// order, yields every event once, in time order.
#[test]
fn rotated_parts_merge_into_one_timeline() {
    const N: u64 = 1500;
    let t = Target::new("rec-rot");
    let dir = TempDir::new("rec-rot");
    let out = tmp_path(&dir, "rec.jsonl");
    let mut r =
        Recorder::start(&["-o", &out, "--cgroup", &t.cg.rel, "--rotate-size", "64K", "--max-files", "100"]);
    for v in 0..N {
        t.write(v);
    }
    r.signal(libc::SIGTERM);
    assert_eq!(r.wait(Duration::from_secs(20)), 0, "stderr:\n{}", r.stderr());

    let mut parts = vec![PathBuf::from(&out)];
    for i in 1.. {
        let p = PathBuf::from(format!("{out}.{i}"));
        if !p.exists() {
            break;
        }
        parts.push(p);
    }
    assert!(parts.len() >= 3, "expected several parts of 64K, got {}", parts.len());
    // Oldest part first.
    parts.reverse();
    let mut all = Vec::new();
    let mut last_time = String::new();
    for p in &parts {
        let l = read_lines(p);
        assert!(l.partial.is_none(), "{} ends with a partial line", p.display());
        assert_eq!(l.complete[0]["type"], "header", "{} does not start with a header", p.display());
        assert!(l.bytes <= 64 * 1024, "{} is {} bytes, over --rotate-size", p.display(), l.bytes);
        for v in our_values(&l.complete, &t) {
            all.push(v);
        }
        for e in l.complete.iter().filter(|v| v["type"] == "event") {
            let time = e["time"].as_str().unwrap().to_string();
            assert!(
                time >= last_time,
                "{}: event at {time} before one of an older part ({last_time})",
                p.display()
            );
            last_time = time;
        }
    }
    assert_eq!(all, (0..N).collect::<Vec<_>>(), "parts, oldest first, do not hold every write in order");

    // Replay with the parts given newest first (as a shell glob would not sort them).
    let mut args: Vec<String> = vec!["--strict".into(), "--json".into()];
    args.extend(parts.iter().rev().map(|p| p.to_str().unwrap().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, lines, stderr) = replay(&args);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(our_values(&lines, &t), (0..N).collect::<Vec<_>>(), "merged replay");
    let headers = lines.iter().filter(|v| v["type"] == "header").count();
    assert_eq!(headers, 1, "one recording session, one header in the merged output");
    eprintln!("rotation: {N} writes in {} parts of at most 64K", parts.len());
}

/// `--max-files` bounds the parts kept: the oldest are deleted, the newest are whole.
#[test]
fn rotation_keeps_at_most_max_files() {
    const N: u64 = 1500;
    let t = Target::new("rec-max");
    let dir = TempDir::new("rec-max");
    let out = tmp_path(&dir, "rec.jsonl");
    let mut r =
        Recorder::start(&["-o", &out, "--cgroup", &t.cg.rel, "--rotate-size", "32K", "--max-files", "3"]);
    for v in 0..N {
        t.write(v);
    }
    r.signal(libc::SIGTERM);
    assert_eq!(r.wait(Duration::from_secs(20)), 0, "stderr:\n{}", r.stderr());
    let names: BTreeSet<String> = std::fs::read_dir(&dir.path)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let want: BTreeSet<String> =
        ["rec.jsonl", "rec.jsonl.1", "rec.jsonl.2"].iter().map(|s| s.to_string()).collect();
    assert_eq!(names, want, "parts kept with --max-files 3");
    // The newest parts hold the last writes, ending with the last one.
    let mut vals = Vec::new();
    for p in ["rec.jsonl.2", "rec.jsonl.1", "rec.jsonl"] {
        vals.extend(our_values(&read_lines(&dir.path.join(p)).complete, &t));
    }
    assert_eq!(vals.last(), Some(&(N - 1)));
    let first = vals[0];
    assert_eq!(vals, (first..N).collect::<Vec<_>>(), "kept parts are not the newest, contiguous");
}

/// The recording is created mode 0600, also over an existing world-readable file (events
/// name processes, paths and values from the whole node).
#[test]
fn recording_is_mode_0600_even_over_an_existing_file() {
    let dir = TempDir::new("rec-mode");
    let out = dir.write("rec.jsonl", "old contents\n");
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut r = Recorder::start(&["-o", out.to_str().unwrap(), "--duration", "1s", "--kind", "cgroup_mkdir"]);
    assert_eq!(r.wait(Duration::from_secs(20)), 0, "stderr:\n{}", r.stderr());
    let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "mode {mode:o}");
    let l = read_lines(&out);
    assert_eq!(l.complete[0]["type"], "header", "the old contents were not truncated");
    assert_eq!(l.complete.last().unwrap()["type"], "stats");
}

/// Unwritable paths: a read-only filesystem (a read-only tmpfs in a private mount
/// namespace), /proc, a missing directory. Each is a clear error naming the path and a
/// non-zero exit, not a panic.
#[test]
fn unwritable_path_is_a_clear_error() {
    let dir = TempDir::new("rec-ro");
    let ro = dir.path.join("ro");
    std::fs::create_dir(&ro).unwrap();
    let ro_file = format!("{}/x.jsonl", ro.display());
    let missing = format!("{}/no-such-dir/x.jsonl", dir.path.display());
    let proc_file = "/proc/tracer-recording-test.jsonl".to_string();
    let script = format!(
        "mount -t tmpfs -o ro,size=16k none {} && exec \"$0\" record -o {ro_file} --duration 5s",
        ro.display()
    );
    let cases: Vec<(&str, Command, &str)> = vec![
        (
            "read-only",
            {
                let mut c = Command::new("unshare");
                c.args(["-m", "--propagation", "private", "sh", "-c", &script]).arg(tracer_bin());
                c
            },
            ro_file.as_str(),
        ),
        (
            "proc",
            {
                let mut c = Command::new(tracer_bin());
                c.args(["record", "-o", &proc_file, "--duration", "5s"]);
                c
            },
            proc_file.as_str(),
        ),
        (
            "missing dir",
            {
                let mut c = Command::new(tracer_bin());
                c.args(["record", "-o", &missing, "--duration", "5s"]);
                c
            },
            missing.as_str(),
        ),
    ];
    for (what, mut cmd, path) in cases {
        let started = Instant::now();
        let mut r = Recorder::spawn(&mut cmd);
        let code = r.wait(Duration::from_secs(30));
        let err = r.stderr();
        eprintln!("{what}: exit {code} after {:?}", started.elapsed());
        assert!(code > 0, "{what}: exit code {code}; stderr:\n{err}");
        assert!(!err.contains("panicked"), "{what}: {err}");
        assert!(err.contains(path), "{what}: the error does not name {path}:\n{err}");
        assert!(err.contains("error"), "{what}: {err}");
    }
    assert!(!Path::new(&proc_file).exists());
}

/// Disk full: recording into a 256K tmpfs (private mount namespace) with a burst of
/// events. The recorder stops with an error saying the disk is full and naming the
/// file, and what it wrote replays with `--strict`: only complete lines.
#[test]
fn disk_full_stops_with_a_clear_error_and_a_readable_file() {
    let t = Target::new("rec-full");
    let dir = TempDir::new("rec-full");
    let mnt = dir.path.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let copy = dir.path.join("copy.jsonl");
    let inner = format!("{}/x.jsonl", mnt.display());
    // The tmpfs lives and dies with the namespace; the shell copies the file out after
    // the recorder exits and passes its exit code on. --duration bounds the recorder
    // if this test dies first.
    let script = format!(
        "mount -t tmpfs -o size=256k none {mnt} || exit 99; \"$0\" record -o {inner} --cgroup {cg} --duration 60s; rc=$?; \
         cp {inner} {copy}; df -k {mnt} | tail -1 >&2; exit $rc",
        mnt = mnt.display(),
        cg = t.cg.rel,
        copy = copy.display()
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-c", &script]).arg(tracer_bin());
    let mut r = Recorder::spawn(&mut cmd);
    r.wait_ready();
    let started = Instant::now();
    let mut made = 0u64;
    while r.child.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the recorder did not fail within 30 s of writes"
        );
        for _ in 0..100 {
            t.write(made);
            made += 1;
        }
    }
    let code = r.wait(Duration::from_secs(5));
    let err = r.stderr();
    assert_ne!(code, 99, "could not mount the tmpfs:\n{err}");
    assert!(code > 0, "exit code {code}:\n{err}");
    let lower = err.to_lowercase();
    assert!(lower.contains("no space"), "the error does not say the disk is full:\n{err}");
    assert!(err.contains(&inner), "the error does not name the file:\n{err}");
    assert!(!err.contains("panicked"), "{err}");

    let l = read_lines(&copy);
    assert!(l.partial.is_none(), "the file was not cut back to its last complete line");
    assert!(l.bytes <= 256 * 1024);
    let got = our_values(&l.complete, &t);
    assert_eq!(
        got,
        (0..got.len() as u64).collect::<Vec<_>>(),
        "recorded events are not the first writes, in order"
    );
    eprintln!(
        "disk full after {:?}: {made} writes made, {} events kept, {} bytes in a 256K tmpfs",
        started.elapsed(),
        got.len(),
        l.bytes
    );
    let (code, lines, stderr) = replay(&["--strict", "--json", copy.to_str().unwrap()]);
    assert_eq!(code, 0, "replay --strict of the full disk's file:\n{stderr}");
    assert_eq!(our_values(&lines, &t), got);
}

/// A file that is not a recording at all (text, or empty) is an error the caller sees:
/// exit non-zero with the reason, not "0 events" and success. Beside a real recording it
/// is skipped, named, and the exit is still non-zero.
#[test]
fn replay_of_something_that_is_not_a_recording_fails_with_the_reason() {
    let dir = TempDir::new("notrec");
    let text = dir.write("notes.txt", "root:x:0:0:root:/root:/bin/bash\n");
    let empty = dir.write("empty.jsonl", "");
    let (code, _, stderr) = replay(&["--json", text.to_str().unwrap()]);
    assert_ne!(code, 0, "replay of a text file succeeded:\n{stderr}");
    assert!(
        stderr.contains("notes.txt is not a tracer recording") && stderr.contains("tracer record -o FILE"),
        "no reason given:\n{stderr}"
    );
    let (code, _, stderr) = replay(&["--json", empty.to_str().unwrap(), text.to_str().unwrap()]);
    assert_ne!(code, 0, "{stderr}");
    assert!(stderr.contains("none of the 2 inputs is a tracer recording"), "{stderr}");

    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tracer-user/testdata/golden/runc.jsonl");
    let (code, lines, stderr) = replay(&["--json", golden.to_str().unwrap(), text.to_str().unwrap()]);
    assert_ne!(code, 0, "{stderr}");
    assert!(lines.iter().any(|l| l["type"] == "event"), "the real recording was not replayed:\n{stderr}");
    assert!(stderr.contains("1 of 2 inputs are not tracer recordings and were skipped"), "{stderr}");
    // The real recording alone still replays with success.
    let (code, _, stderr) = replay(&["--json", golden.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
}
