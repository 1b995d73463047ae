//! Helpers for the end-to-end tests: start the real `tracer` binary, make changes on the
//! real kernel inside cgroups and network namespaces the test creates, and read the
//! JSON lines that come out.
//!
//! Rules (docs/DESIGN.md): run as root; create only what you remove (RAII guards that
//! clean up on drop, also when the test fails); end only processes you started; a test
//! that cannot run fails and says why, never skips.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The cgroup v2 mount of this machine (hybrid layout) or the unified root.
pub fn cgroup2_root() -> PathBuf {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    for line in info.lines() {
        if let Some((pre, post)) = line.split_once(" - ") {
            let f: Vec<&str> = pre.split(' ').collect();
            if post.starts_with("cgroup2 ") && f.len() > 4 && f[3] == "/" {
                return PathBuf::from(f[4]);
            }
        }
    }
    panic!("no cgroup2 mount on this machine: the kernel tests need one");
}

/// A cgroup v1 hierarchy mount with this controller, if the machine has one.
pub fn cgroup1_mount(controller: &str) -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    for line in info.lines() {
        let (pre, post) = line.split_once(" - ")?;
        let f: Vec<&str> = pre.split(' ').collect();
        if post.starts_with("cgroup ") && f.len() > 4 && f[3] == "/" {
            let opts = post.rsplit(' ').next().unwrap_or("");
            if opts.split(',').any(|o| o == controller) {
                return Some(PathBuf::from(f[4]));
            }
        }
    }
    None
}

/// Fails the test with a clear reason unless running as root.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        panic!("kernel tests need root (they load eBPF programs and create cgroups and netns); run `cargo xtask test`");
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name unique to this test run: `tracer-test-<pid>-<n>-<what>`.
pub fn unique(what: &str) -> String {
    format!("tt{}-{}-{what}", std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst))
}

/// The tracer binary under test.
pub fn tracer_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TRACER_BIN") {
        return PathBuf::from(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/tracer");
    assert!(p.exists(), "{} not built: run `cargo xtask test` (or set TRACER_BIN)", p.display());
    p
}

/// A running `tracer` with its stdout parsed as JSON lines.
pub struct Tracer {
    child: Child,
    lines: Receiver<String>,
    pub seen: Vec<Value>,
    pub header: Value,
}

impl Tracer {
    /// Starts `tracer <args>` (add `--json` yourself) and waits for its header line,
    /// which it prints once every hook is attached.
    pub fn start(args: &[&str]) -> Tracer {
        let mut cmd = Command::new(tracer_bin());
        cmd.args(args);
        Tracer::spawn(cmd)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Reads lines until one satisfies `pred`; panics after `timeout` showing what came.
    pub fn wait_for(&mut self, what: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(v) = self.seen.iter().find(|v| pred(v)) {
            return v.clone();
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let v: Value =
                        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                    self.seen.push(v.clone());
                    if pred(&v) {
                        return v;
                    }
                }
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                    let shown: Vec<String> = self.seen.iter().rev().take(40).map(|v| v.to_string()).collect();
                    panic!(
                        "no line matching {what} within {timeout:?}; last {} lines (newest first):\n{}",
                        shown.len(),
                        shown.join("\n")
                    );
                }
            }
        }
    }

    /// Reads every line that comes within `d` (into `seen`).
    pub fn read_for(&mut self, d: Duration) {
        let deadline = Instant::now() + d;
        while let Ok(line) = self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            self.seen.push(v);
        }
    }

    /// Waits for an event of `kind` matching `pred`.
    pub fn wait_event(&mut self, kind: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait_for(&format!("an event of kind {kind}"), Duration::from_secs(10), |v| {
            v["type"] == "event" && v["kind"] == kind && pred(v)
        })
    }

    /// SIGTERM, then every remaining line until exit; returns the exit status code.
    pub fn stop(&mut self) -> i32 {
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while let Ok(line) = self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                self.seen.push(v);
            }
        }
        let status = self.child.wait().expect("wait tracer");
        status.code().unwrap_or(-1)
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: our own child.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGKILL) };
            let _ = self.child.wait();
        }
    }
}

/// Runs a command to completion and returns its pid; panics with its output on failure.
pub fn run(cmd: &str, args: &[&str]) -> u32 {
    let child = Command::new(cmd)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    pid
}

/// `sh -c script`, returning the shell's pid (the shell is the process that writes).
pub fn sh(script: &str) -> u32 {
    run("sh", &["-c", script])
}

/// A cgroup directory of the test's own; removed (children first) on drop.
pub struct CgroupGuard {
    pub path: PathBuf,
    /// Path from the hierarchy root, as events report it.
    pub rel: String,
}

impl CgroupGuard {
    pub fn new(root: &Path, name: &str) -> CgroupGuard {
        let path = root.join(name);
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        CgroupGuard { path, rel: format!("/{name}") }
    }
}

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        remove_cgroup_tree(&self.path);
    }
}

/// Removes a cgroup directory tree the test created, deepest first.
pub fn remove_cgroup_tree(path: &Path) {
    if let Ok(rd) = std::fs::read_dir(path) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    for _ in 0..50 {
        match std::fs::remove_dir(path) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    eprintln!("warning: could not remove test cgroup {}", path.display());
}

/// A network namespace of the test's own (`ip netns add`); deleted on drop.
pub struct NetNsGuard {
    pub name: String,
}

impl NetNsGuard {
    pub fn new(what: &str) -> NetNsGuard {
        let name = unique(what);
        run("ip", &["netns", "add", &name]);
        NetNsGuard { name }
    }

    /// Runs `ip -n <ns> args...`; returns the pid of `ip`.
    pub fn ip(&self, args: &[&str]) -> u32 {
        let mut a = vec!["-n", self.name.as_str()];
        a.extend_from_slice(args);
        run("ip", &a)
    }

    /// Runs `sh -c script` inside the namespace; returns the pid of `ip netns exec`
    /// which execs the shell (same pid).
    pub fn sh(&self, script: &str) -> u32 {
        run("ip", &["netns", "exec", &self.name, "sh", "-c", script])
    }

    /// Network namespace inode number.
    pub fn inode(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(format!("/run/netns/{}", self.name)).expect("netns file").ino()
    }
}

impl Drop for NetNsGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// Runs a command to completion and returns its stdout; panics with its output on failure.
pub fn run_out(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Removes a cgroup prefix (`/<prefix>`) from every hierarchy on drop: a runtime
/// creates a container's cgroup path in each.
pub struct CgroupPrefixGuard(pub String);

impl Drop for CgroupPrefixGuard {
    fn drop(&mut self) {
        for m in cgroup_mounts() {
            let p = m.join(&self.0);
            if p.exists() {
                remove_cgroup_tree(&p);
            }
        }
    }
}

/// A directory of the test's own under the system temp dir; removed on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(what: &str) -> TempDir {
        let path = std::env::temp_dir().join(unique(what));
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        TempDir { path }
    }

    /// Writes `text` to `rel` under the directory (parents created) and returns its path.
    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.path.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, text).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A process the test started; SIGKILLed (by pid) and reaped on drop if still running.
pub struct ChildGuard(pub Child);

impl ChildGuard {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            // SAFETY: our own child, by pid.
            unsafe { libc::kill(self.0.id() as i32, libc::SIGKILL) };
        }
        let _ = self.0.wait();
    }
}

/// Every cgroup mount of this machine (v1 hierarchies and cgroup2), mount points only.
pub fn cgroup_mounts() -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let mut out = Vec::new();
    for line in info.lines() {
        if let Some((pre, post)) = line.split_once(" - ") {
            let f: Vec<&str> = pre.split(' ').collect();
            if (post.starts_with("cgroup ") || post.starts_with("cgroup2 ")) && f.len() > 4 && f[3] == "/" {
                let p = PathBuf::from(f[4]);
                if !out.contains(&p) {
                    out.push(p);
                }
            }
        }
    }
    out
}

pub mod cri;
pub mod scenarios;

impl Tracer {
    /// Like [`Tracer::start`], for a command that runs the tracer inside something else
    /// (`unshare ... tracer tail --json`): `cmd`'s stdout must be the tracer's.
    pub fn spawn(mut cmd: Command) -> Tracer {
        require_root();
        let mut child =
            cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("spawn tracer command");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut t = Tracer { child, lines: rx, seen: Vec::new(), header: Value::Null };
        let first = t.lines.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| {
            let status = t.child.try_wait().ok().flatten();
            panic!("tracer printed no header line within 60 s (exit status: {status:?})")
        });
        let v: Value =
            serde_json::from_str(&first).unwrap_or_else(|e| panic!("header is not JSON ({e}): {first}"));
        assert_eq!(v["type"], "header", "first line must be the header: {first}");
        t.header = v;
        t
    }
}

/// Child pids of `pid` (from /proc/<pid>/task/*/children).
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in rd.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(s.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
            }
        }
    }
    out
}

/// The first descendant of `pid` (or `pid` itself) whose comm is `comm`, waiting up to
/// `timeout` for it to appear.
pub fn find_descendant(pid: u32, comm: &str, timeout: Duration) -> Option<u32> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut stack = vec![pid];
        while let Some(p) = stack.pop() {
            if std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == comm) {
                return Some(p);
            }
            stack.extend(children_of(p));
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A loopback port nobody listens on now.
pub fn free_loopback_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One HTTP GET on loopback; returns (status code, body). HTTP/1.0, so that a server
/// (Prometheus' Go server) answers without chunked encoding and closes.
pub fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let status = resp.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}

/// The value of one series (`name{labels}` exactly as exposed) in a Prometheus text body.
pub fn metric_value(body: &str, series: &str) -> Option<f64> {
    body.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|r| r.strip_prefix(' '))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
    })
}

/// The findings with `id` that `tracer replay --json` gives for what `t` printed (the
/// same schema-v1 lines `record` writes): replay re-runs the correlator on the events.
pub fn replayed_findings(t: &Tracer, id: &str) -> Vec<Value> {
    let dir = TempDir::new("replay");
    let mut text = format!("{}\n", t.header);
    for v in &t.seen {
        text.push_str(&format!("{v}\n"));
    }
    let file = dir.write("recording.jsonl", &text);
    let out = run_out(tracer_bin().to_str().unwrap(), &["replay", "--json", file.to_str().unwrap()]);
    out.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["type"] == "finding" && v["id"] == id)
        .collect()
}

/// Runs `program args` (output discarded) every `every` until it succeeds; false when it
/// has not within `within`. For daemons that answer once they are up.
pub fn succeeds_within(program: &str, args: &[&str], within: Duration, every: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        let ok = Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(every);
    }
}
