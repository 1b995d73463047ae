//! The audit subsystem as a write-tax alternative (`--with-auditd`).
//!
//! Installs `auditd` with apt when `auditctl` is missing, starts `auditd -n` (our
//! child, unless one already runs), and per measurement enables audit and loads
//! one rule with the key `tracer-bench`; afterwards the rules of that key are
//! deleted, `enabled` is put back as it was, and the daemon we started is
//! stopped by its pid.
//!
//! What the two rules really watch (checked at start with a real cgroup write and
//! reported; the rules name the cgroup2 mount, `/sys/fs/cgroup` or
//! `/sys/fs/cgroup/unified` on a hybrid host): `-S write -F dir=/sys/fs/cgroup` asks
//! for a record at the exit of every write(2) whose collected paths lie under the directory; write(2) on an
//! already-open fd collects no path, so it never matches, but every syscall of
//! every process forked while audit is on pays for the audit context and every
//! write(2) for the rule's evaluation. `-w /sys/fs/cgroup -p w` is a directory
//! watch: it matches the syscalls that *open* files there for writing (and
//! metadata changes), not the write(2) calls that change a value. Neither can
//! show the bytes written, the cgroup or the actor's ancestry.

use std::{
    fs,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use crate::util;

pub const KEY: &str = "tracer-bench";
const LOG: &str = "/var/log/audit/audit.log";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Rule {
    /// `-a always,exit -F arch=b64 -S write -F dir=/sys/fs/cgroup`
    SyscallWrite,
    /// `-w /sys/fs/cgroup -p w`
    WatchDir,
}

impl Rule {
    /// The auditctl arguments for a rule on the cgroup2 mount `dir`.
    pub fn args(self, dir: &str) -> Vec<String> {
        let v: Vec<&str> = match self {
            Rule::SyscallWrite => vec!["-a", "always,exit", "-F", "arch=b64", "-S", "write", "-F"],
            Rule::WatchDir => vec!["-w", dir, "-p", "w", "-k", KEY],
        };
        let mut v: Vec<String> = v.into_iter().map(str::to_owned).collect();
        if self == Rule::SyscallWrite {
            v.extend([format!("dir={dir}"), "-k".to_owned(), KEY.to_owned()]);
        }
        v
    }
}

/// The cgroup2 mount point (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on a
/// hybrid host), from /proc/self/mountinfo.
fn cgroup2_mount() -> Option<String> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        (post.split_whitespace().next()? == "cgroup2")
            .then(|| pre.split_whitespace().nth(4).map(str::to_owned))?
    })
}

pub struct Audit {
    /// The cgroup2 mount the rules watch.
    pub dir: String,
    daemon: Option<Child>,
    prior_enabled: u32,
    /// What a real cgroup write produced under each rule.
    pub findings: Vec<String>,
}

fn auditctl(args: &[&str]) -> Result<String> {
    let out =
        Command::new("auditctl").args(args).stdin(Stdio::null()).output().context("running auditctl")?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        bail!("`auditctl {}` failed ({}): {}", args.join(" "), out.status, text.trim());
    }
    Ok(text)
}

fn status_field(status: &str, name: &str) -> Option<u32> {
    status.lines().find_map(|l| l.strip_prefix(name)?.split_whitespace().next()?.parse().ok())
}

impl Audit {
    /// Installs auditd if needed, checks the audit subsystem answers, starts the
    /// daemon and checks what each rule records for a real cgroup write.
    pub fn prepare() -> Result<Audit> {
        if util::which("auditctl").is_none() || util::which("auditd").is_none() {
            eprintln!("xtask: bench: installing auditd (apt-get install auditd)");
            let install = |update: bool| -> bool {
                if update {
                    let _ = Command::new("apt-get").args(["update", "-q"]).stdout(Stdio::null()).status();
                }
                Command::new("apt-get")
                    .args(["install", "-y", "-q", "--no-install-recommends", "auditd"])
                    .env("DEBIAN_FRONTEND", "noninteractive")
                    .stdout(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            };
            if !install(false) && !install(true) {
                bail!("apt-get install auditd failed");
            }
        }
        let status = auditctl(&["-s"]).context(
            "the audit subsystem does not answer (a kernel without CONFIG_AUDIT, or a container \
             without CAP_AUDIT_CONTROL in the initial user and pid namespaces)",
        )?;
        let prior_enabled = status_field(&status, "enabled").unwrap_or(0);
        if prior_enabled == 2 {
            bail!("audit rules are locked (enabled 2) until reboot: cannot add the bench's rules");
        }
        let running = status_field(&status, "pid").unwrap_or(0);
        let dir = cgroup2_mount().context("no cgroup2 mount for the rules to watch")?;
        let mut audit = Audit { dir, daemon: None, prior_enabled, findings: Vec::new() };
        if running != 0 {
            eprintln!("xtask: bench: auditd already runs (pid {running}); using it, leaving it running");
        } else {
            fs::create_dir_all("/var/log/audit").ok();
            let child = Command::new("auditd")
                .arg("-n")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting auditd -n")?;
            let pid = child.id();
            audit.daemon = Some(child);
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let s = auditctl(&["-s"])?;
                if status_field(&s, "pid") == Some(pid) {
                    break;
                }
                if let Some(Ok(Some(st))) = audit.daemon.as_mut().map(|c| c.try_wait()) {
                    bail!("auditd -n exited at start ({st})");
                }
                if Instant::now() > deadline {
                    bail!("auditd (pid {pid}) did not register with the kernel in 10 s");
                }
                thread::sleep(Duration::from_millis(100));
            }
            eprintln!("xtask: bench: started auditd -n (pid {pid})");
        }
        // Audit stays off except while an audit setup is measured.
        auditctl(&["-e", "0"])?;
        for rule in [Rule::SyscallWrite, Rule::WatchDir] {
            let seen = audit.what_it_records(rule).unwrap_or_else(|e| format!("check failed: {e:#}"));
            audit.findings.push(format!("{}: {seen}", audit.shown(rule)));
        }
        Ok(audit)
    }

    pub fn shown(&self, rule: Rule) -> String {
        format!("auditctl {}", rule.args(&self.dir).join(" "))
    }

    /// Enables audit with `rule` loaded (for one measurement).
    pub fn begin(&self, rule: Rule) -> Result<()> {
        let args = rule.args(&self.dir);
        auditctl(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
        auditctl(&["-e", "1"])?;
        Ok(())
    }

    /// Deletes the bench's rules and turns audit off again.
    pub fn end(&self) -> Result<()> {
        let r = auditctl(&["-D", "-k", KEY]);
        auditctl(&["-e", "0"])?;
        r.map(|_| ())
    }

    /// Loads `rule`, makes a cgroup of our own, opens one of its files for
    /// writing and writes to it in a child shell, and counts the records with our
    /// key by syscall.
    fn what_it_records(&self, rule: Rule) -> Result<String> {
        let before = fs::metadata(LOG).map(|m| m.len()).unwrap_or(0);
        let cg = format!("{}/tracer-bench-audit-{}", self.dir, std::process::id());
        self.begin(rule)?;
        let script = format!("mkdir {cg} && {{ echo 2 > {cg}/cgroup.max.depth; rmdir {cg}; }}");
        let st = Command::new("sh").args(["-c", &script]).status();
        self.end()?;
        let _ = fs::remove_dir(&cg);
        if !st.is_ok_and(|s| s.success()) {
            bail!("could not make and write a cgroup of our own ({cg})");
        }
        // auditd writes asynchronously.
        thread::sleep(Duration::from_millis(1500));
        let log = fs::read(LOG).with_context(|| format!("reading {LOG}"))?;
        let new = String::from_utf8_lossy(&log[(before as usize).min(log.len())..]).into_owned();
        let mut counts: Vec<(String, u32)> = Vec::new();
        for l in
            new.lines().filter(|l| l.starts_with("type=SYSCALL") && l.contains(&format!("key=\"{KEY}\"")))
        {
            let sc = l.split_whitespace().find_map(|w| w.strip_prefix("syscall=")).unwrap_or("?");
            let name = match sc {
                "1" => "write",
                "2" => "open",
                "257" => "openat",
                "83" => "mkdir",
                "84" => "rmdir",
                "258" => "mkdirat",
                other => other,
            }
            .to_owned();
            match counts.iter_mut().find(|(n, _)| *n == name) {
                Some((_, c)) => *c += 1,
                None => counts.push((name, 1)),
            }
        }
        Ok(if counts.is_empty() {
            "mkdir + open + write(\"2\") + rmdir of a cgroup: no record".to_owned()
        } else {
            format!(
                "mkdir + open + write(\"2\") + rmdir of a cgroup: records for {}",
                counts.iter().map(|(n, c)| format!("{n} x{c}")).collect::<Vec<_>>().join(", ")
            )
        })
    }
}

impl Drop for Audit {
    fn drop(&mut self) {
        let _ = auditctl(&["-D", "-k", KEY]);
        let _ = auditctl(&["-e", &self.prior_enabled.to_string()]);
        if let Some(mut child) = self.daemon.take() {
            let pid = child.id() as libc::pid_t;
            // SAFETY: kill has no memory preconditions; pid is our unreaped child.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if child.try_wait().ok().flatten().is_some() {
                    eprintln!("xtask: bench: stopped auditd (pid {pid})");
                    return;
                }
                thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
