//! How to show lines: schema-v1 JSON (one object per line) or the human timeline.
//!
//! The human format puts time and actor first, in aligned columns, then a description
//! that depends on the kind, then who exactly did it:
//!
//! ```text
//! 12:00:01.250 systemd          cgroup_write /kubepods.slice cgroup.subtree_control <- "-cpuset" = 7  pid=1 comm=systemd [/usr/lib/systemd/systemd]
//! 12:00:01.251 systemd          FINDING kubepods-controller-removed [critical]: cpuset removed from /kubepods.slice
//!   evidence: seq 3
//!   fix: set SystemdCgroup = true ...
//! ```
//!
//! Strings in events come from untrusted processes (comm, written bytes, paths): in human
//! mode control characters and bidi overrides are stripped so a value cannot move the
//! cursor, recolor the terminal or fake a line. JSON escapes them already.
//!
//! Write errors are returned as they are: a closed pipe is `io::ErrorKind::BrokenPipe`
//! (Rust ignores SIGPIPE), which callers treat as a clean exit.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{self, Write};

use crate::stream::schema::{Event, Finding, HeaderLine, Kind, Line, Severity, Stats, Timestamp};

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Human { color: bool },
    Json,
}

const ACTOR_WIDTH: usize = 16;
/// Longest kind name (`cgroup_write`, `sysctl_write`, ...).
const KIND_WIDTH: usize = 12;

const RED_BOLD: &str = "\x1b[1;31m";
const YELLOW: &str = "\x1b[33m";
const RESET: &str = "\x1b[0m";

/// Prints lines to `out`, one `write_all` per printed line (a finding with its evidence
/// and fix is one write), so concurrent readers never see half a line.
pub struct Printer<W: Write> {
    out: W,
    format: Format,
    /// Human mode: fold runs of no-op `subtree_control` writes (see [`Fold`]).
    fold: bool,
    pending: Option<Fold>,
    buf: Vec<u8>,
    /// Human mode: the last `(lost, decode_errors)` reported, per host, so periodic
    /// (cumulative) stats only print when something new was lost.
    reported: HashMap<Option<String>, (u64, u64)>,
    /// The last stats line seen, for the final summary.
    last_stats: HashMap<Option<String>, Stats>,
}

impl<W: Write> Printer<W> {
    pub fn new(out: W, format: Format) -> Self {
        Printer {
            out,
            format,
            fold: true,
            pending: None,
            buf: Vec::with_capacity(1024),
            reported: HashMap::new(),
            last_stats: HashMap::new(),
        }
    }

    pub fn format(&self) -> Format {
        self.format
    }

    pub fn get_ref(&self) -> &W {
        &self.out
    }

    pub fn into_inner(self) -> W {
        self.out
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Human mode: print every no-op `subtree_control` write instead of folding a run of
    /// them into one line (`--unfold`).
    pub fn unfold(mut self) -> Self {
        self.fold = false;
        self
    }

    /// Prints a pending fold whose last write is at least `idle` old (live: called
    /// periodically, so a burst's fold line comes out once the burst is over).
    pub fn flush_idle(&mut self, idle: std::time::Duration) -> io::Result<()> {
        let due =
            self.pending.as_ref().is_some_and(|f| Timestamp::now().0 - f.last.0 >= idle.as_nanos() as i64);
        if due {
            self.print_fold()?;
        }
        self.out.flush()
    }

    fn print_fold(&mut self) -> io::Result<()> {
        let Some(f) = self.pending.take() else { return Ok(()) };
        let mut s = String::new();
        f.human(&mut s);
        self.out.write_all(s.as_bytes())
    }

    /// Print one line (JSON: always exactly one line; human: zero or more lines).
    pub fn print(&mut self, line: &Line) -> io::Result<()> {
        self.buf.clear();
        match self.format {
            Format::Json => {
                // Serializing our own types into memory cannot fail short of a bug; keep
                // it as an io error rather than a panic.
                serde_json::to_writer(&mut self.buf, line).map_err(io::Error::other)?;
                self.buf.push(b'\n');
                if let Line::Stats(s) = line {
                    self.last_stats.insert(s.host.clone(), s.clone());
                }
            }
            Format::Human { color } => {
                if let Line::Event(e) = line {
                    if self.fold && Fold::applies(e) {
                        match &mut self.pending {
                            Some(f) if f.pid == e.pid && f.host == e.host => f.add(e),
                            _ => {
                                self.print_fold()?;
                                self.pending = Some(Fold::new(e));
                            }
                        }
                        return Ok(());
                    }
                }
                self.print_fold()?;
                let mut s = String::with_capacity(256);
                match line {
                    Line::Header(h) => human_header(&mut s, h),
                    Line::Event(e) => human_event(&mut s, e),
                    Line::Finding(f) => human_finding(&mut s, f, color),
                    Line::Stats(st) => self.human_stats(&mut s, st),
                }
                self.buf.extend_from_slice(s.as_bytes());
            }
        }
        if self.buf.is_empty() {
            return Ok(());
        }
        self.out.write_all(&self.buf)
    }

    /// End of the stream. Human mode prints a one-line summary from the last stats seen
    /// (per host); both modes flush.
    pub fn finish(&mut self) -> io::Result<()> {
        self.print_fold()?;
        if let Format::Human { .. } = self.format {
            let mut hosts: Vec<_> = self.last_stats.iter().collect();
            hosts.sort_by(|a, b| a.0.cmp(b.0));
            let mut s = String::new();
            for (host, st) in hosts {
                s.push_str("== ");
                if let Some(h) = host {
                    let _ = write!(s, "{}: ", clean(h));
                }
                let _ =
                    write!(s, "{} events, {} lost, {} decode errors", st.events, st.lost, st.decode_errors);
                s.push('\n');
            }
            self.out.write_all(s.as_bytes())?;
        }
        self.out.flush()
    }

    fn human_stats(&mut self, s: &mut String, st: &Stats) {
        self.last_stats.insert(st.host.clone(), st.clone());
        let prev = self.reported.get(&st.host).copied().unwrap_or((0, 0));
        let lost = st.lost.saturating_sub(prev.0);
        let bad = st.decode_errors.saturating_sub(prev.1);
        if lost == 0 && bad == 0 {
            return;
        }
        self.reported.insert(st.host.clone(), (st.lost.max(prev.0), st.decode_errors.max(prev.1)));
        let _ = write!(s, "{} !! ", st.time.clock());
        if let Some(h) = &st.host {
            let _ = write!(s, "{}: ", clean(h));
        }
        let mut parts = Vec::new();
        if lost > 0 {
            let mut p = format!("{lost} events lost (ring buffer full)");
            let per_hook: Vec<String> = st
                .hooks
                .iter()
                .filter(|(_, c)| c.lost > 0)
                .map(|(name, c)| format!("{} {}", clean(name), c.lost))
                .collect();
            if !per_hook.is_empty() {
                let _ = write!(p, " [total by hook: {}]", per_hook.join(", "));
            }
            parts.push(p);
        }
        if bad > 0 {
            parts.push(format!("{bad} records could not be decoded"));
        }
        let _ =
            writeln!(s, "{}; totals: {} lost, {} undecodable", parts.join(", "), st.lost, st.decode_errors);
    }
}

/// A run of one process's `cgroup.subtree_control` writes that changed nothing: the
/// kernel's masks before and after are equal, or the write failed. systemd writes each
/// controller on its own into every cgroup it realizes (`-cpu`, `-cpuset`, `-io`, ...,
/// into the empty `subtree_control` of a slice it just created): hundreds of lines per
/// `daemon-reload` that would bury the one write that removed something. A write that
/// enabled or removed a controller always prints on its own line.
struct Fold {
    host: Option<String>,
    pid: u32,
    actor: String,
    first: Timestamp,
    last: Timestamp,
    writes: u64,
    failed: u64,
    cgroups: std::collections::BTreeSet<String>,
}

impl Fold {
    fn applies(e: &Event) -> bool {
        if e.kind != Kind::CgroupWrite || e.file.as_deref() != Some("cgroup.subtree_control") {
            return false;
        }
        if e.result.is_some_and(|r| r < 0) {
            return true;
        }
        matches!((&e.controllers_before, &e.controllers_after), (Some(b), Some(a)) if b == a)
    }

    fn new(e: &Event) -> Fold {
        let mut f = Fold {
            host: e.host.clone(),
            pid: e.pid,
            actor: e.actor.clone(),
            first: e.time,
            last: e.time,
            writes: 0,
            failed: 0,
            cgroups: Default::default(),
        };
        f.add(e);
        f
    }

    fn add(&mut self, e: &Event) {
        self.last = e.time;
        self.writes += 1;
        self.failed += u64::from(e.result.is_some_and(|r| r < 0));
        if self.cgroups.len() < 10_000 {
            self.cgroups.insert(e.cgroup.clone().unwrap_or_default());
        }
    }

    fn human(&self, s: &mut String) {
        let _ = write!(
            s,
            "{} {:<ACTOR_WIDTH$} {:<KIND_WIDTH$} ",
            self.first.clock(),
            clean(&self.actor),
            "cgroup_write"
        );
        if self.writes == 1 {
            s.push_str("1 write to cgroup.subtree_control that changed nothing");
        } else {
            let _ = write!(
                s,
                "{} writes to cgroup.subtree_control of {} cgroup(s) that changed nothing",
                self.writes,
                self.cgroups.len()
            );
        }
        if self.failed > 0 {
            let _ = write!(s, " ({} refused by the kernel)", self.failed);
        }
        let _ = writeln!(s, "  pid={} [folded: --unfold shows each]", self.pid);
    }
}

/// Remove control characters (C0, DEL, C1) and Unicode bidi controls from an untrusted
/// string before it reaches a terminal.
pub fn clean(s: &str) -> std::borrow::Cow<'_, str> {
    fn bad(c: char) -> bool {
        c.is_control()
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    }
    if s.chars().any(bad) {
        std::borrow::Cow::Owned(s.chars().filter(|&c| !bad(c)).collect())
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

fn human_header(s: &mut String, h: &HeaderLine) {
    let attached = h.hooks.iter().filter(|k| k.state == crate::stream::schema::HookState::Attached).count();
    let _ = writeln!(
        s,
        "tracer {} on {} ({}): {}/{} hooks attached",
        clean(&h.tracer_version),
        clean(&h.hostname),
        clean(&h.kernel),
        attached,
        h.hooks.len()
    );
    for k in h.hooks.iter().filter(|k| k.state != crate::stream::schema::HookState::Attached) {
        let _ = writeln!(
            s,
            "  hook {} {}: {}",
            clean(&k.name),
            k.state.as_str(),
            clean(k.error.as_deref().unwrap_or("no error given"))
        );
    }
    // Which families run on kernel functions and which on the syscall tracepoints; the
    // reason once when they share it.
    let shared = crate::stream::schema::FamilyMode::shared_why(&h.hook_modes);
    if !h.hook_modes.is_empty() {
        let modes: Vec<String> = h
            .hook_modes
            .iter()
            .map(|m| {
                let why = if shared.is_some() { String::new() } else { format!(" ({})", clean(&m.why)) };
                format!("{} on {}{why}", clean(&m.family), clean(&m.at))
            })
            .collect();
        let _ = writeln!(s, "  hooks: {}", modes.join("; "));
        if let Some(why) = shared {
            let _ = writeln!(s, "  hook mode: {}", clean(why));
        }
    }
}

fn human_event(s: &mut String, e: &Event) {
    let _ = write!(
        s,
        "{} {:<aw$} {:<kw$} ",
        e.time.clock(),
        clean(&e.actor),
        e.kind.as_str(),
        aw = ACTOR_WIDTH,
        kw = KIND_WIDTH
    );
    describe(s, e);
    push_pod(
        s,
        e.pod.as_deref().map(String::as_str),
        e.container.as_deref().map(String::as_str),
        e.pod_uid.as_deref().map(String::as_str),
    );
    // What the kernel program could not read, said where it matters.
    if e.path_truncated {
        s.push_str(" [path truncated: only its last components]");
    }
    if e.more_iovecs {
        s.push_str(" [first iovec only: more were sent]");
    }
    let _ = write!(s, "  pid={} comm={}", e.pid, clean(&e.comm));
    if let Some(exe) = &e.exe {
        let _ = write!(s, " [{}]", clean(exe));
    }
    if let Some(b) = &e.on_behalf_of {
        let _ = write!(s, " (for {})", clean(b));
    }
    if let Some(h) = &e.host {
        let _ = write!(s, " host={}", clean(h));
    }
    s.push('\n');
}

/// The kind-specific part of an event line.
fn describe(s: &mut String, e: &Event) {
    match e.kind {
        Kind::CgroupWrite => {
            let _ = write!(
                s,
                "{} {} <- \"{}",
                opt(&e.cgroup),
                opt(&e.file),
                e.value.as_deref().map(clean).unwrap_or_default()
            );
            if e.value_truncated {
                s.push_str("...");
            }
            s.push('"');
            if let Some(r) = e.result {
                s.push_str(" = ");
                push_result(s, r);
            }
            if let (Some(b), Some(a)) = (&e.controllers_before, &e.controllers_after) {
                let removed: Vec<&str> = b.iter().filter(|c| !a.contains(c)).map(|c| c.as_str()).collect();
                let added: Vec<&str> = a.iter().filter(|c| !b.contains(c)).map(|c| c.as_str()).collect();
                if !removed.is_empty() || !added.is_empty() {
                    s.push_str(" (controllers");
                    for c in removed {
                        let _ = write!(s, " -{}", clean(c));
                    }
                    for c in added {
                        let _ = write!(s, " +{}", clean(c));
                    }
                    s.push(')');
                }
            }
            push_v1_hierarchy(s, e);
        }
        Kind::CgroupMkdir | Kind::CgroupRmdir => {
            s.push_str(&opt(&e.cgroup));
            push_v1_hierarchy(s, e);
        }
        Kind::SysctlWrite => {
            let old =
                e.old_value.as_deref().map(|v| clean(v.trim()).into_owned()).unwrap_or_else(|| "?".into());
            let new = e.value.as_deref().map(|v| clean(v.trim()).into_owned()).unwrap_or_else(|| "?".into());
            let _ = write!(s, "{} {} -> {}", opt(&e.name), old, new);
            push_netns(s, e);
        }
        Kind::RouteDelete | Kind::RuleDelete | Kind::AddrDelete | Kind::LinkDelete if e.object.is_some() => {
            // The object the kernel removed, as `ip` prints it.
            s.push_str(&clean(e.object.as_deref().map(String::as_str).unwrap_or_default()));
            push_netns(s, e);
            push_outcome(s, e);
        }
        Kind::RouteDelete => {
            s.push_str(e.dst.as_deref().map(clean).as_deref().unwrap_or("default"));
            if let Some(g) = &e.gateway {
                let _ = write!(s, " via {}", clean(g));
            }
            if let Some(t) = e.table {
                let _ = write!(s, " table {t}");
            }
            push_dev(s, e);
            if let Some(p) = &e.protocol {
                let _ = write!(s, " proto {}", clean(p));
            }
            push_netns(s, e);
            push_outcome(s, e);
        }
        Kind::RuleDelete => {
            let mut parts = Vec::new();
            if let Some(p) = e.priority {
                parts.push(format!("prio {p}"));
            }
            if let Some(m) = &e.fwmark {
                parts.push(format!("fwmark {}", clean(m)));
            }
            if let Some(d) = &e.dst {
                parts.push(format!("to {}", clean(d)));
            }
            if let Some(t) = e.table {
                parts.push(format!("table {t}"));
            }
            s.push_str(&parts.join(" "));
            push_netns(s, e);
            push_outcome(s, e);
        }
        Kind::AddrDelete => {
            s.push_str(&opt(&e.dst));
            push_dev(s, e);
            push_netns(s, e);
            push_outcome(s, e);
        }
        Kind::LinkDelete => {
            push_dev_first(s, e);
            push_netns(s, e);
            push_outcome(s, e);
        }
        Kind::LinkSet => {
            push_dev_first(s, e);
            match e.up {
                Some(true) => s.push_str(" up"),
                Some(false) => s.push_str(" down"),
                None => {}
            }
            if let Some(r) = e.rp_filter {
                let _ = write!(s, " rp_filter {r}");
            }
            push_netns(s, e);
            push_outcome(s, e);
        }
        Kind::Exec => {
            // `systemctl restart systemd-networkd`
            match &e.cmdline {
                Some(c) => s.push_str(&clean(c)),
                None => s.push_str(&opt(&e.exe)),
            }
        }
        Kind::DbusCall => {
            // `org.freedesktop.systemd1 SetUnitProperties(kubepods-besteffort.slice, CPUWeight=2) from :1.42`
            match &e.call {
                Some(c) => {
                    let _ = write!(
                        s,
                        "{} {} from {}",
                        clean(&c.destination),
                        clean(&c.describe()),
                        clean(&c.sender)
                    );
                }
                None => s.push('?'),
            }
        }
        Kind::Signal => {
            match (&e.signal, e.signo) {
                (Some(name), _) => s.push_str(&clean(name)),
                (None, Some(n)) => {
                    let _ = write!(s, "signal {n}");
                }
                (None, None) => s.push_str("signal ?"),
            }
            match e.target_pid {
                Some(p) => {
                    let _ = write!(s, " -> {p}");
                }
                None => s.push_str(" -> ?"),
            }
            if let Some(c) = &e.target_comm {
                let _ = write!(s, " ({})", clean(c));
            }
            if let Some(c) = &e.target_cgroup {
                let _ = write!(s, " {}", clean(c));
            }
        }
        Kind::CgroupBpfAttach | Kind::CgroupBpfDetach => {
            // `cgroup_inet4_connect cil_sock4_connect (prog 42, cgroup_sock_addr)
            //  on /a/b [BPF_LINK_CREATE link 7, allow_multi] cgroupns /a = 0`
            let _ = write!(s, "{} ", opt(&e.attach_type));
            match (&e.prog_name, e.prog_id) {
                (Some(n), Some(id)) if !n.is_empty() => {
                    let _ = write!(s, "{} (prog {id}", clean(n));
                }
                (_, Some(id)) => {
                    let _ = write!(s, "(prog {id}");
                }
                _ => s.push_str("(prog ?"),
            }
            if let Some(t) = &e.prog_type {
                let _ = write!(s, ", {}", clean(t));
            }
            let _ = write!(s, ") on {}", opt(&e.cgroup));
            let mut how = Vec::new();
            if e.found_at_start {
                how.push("found at start".to_string());
            }
            if let Some(r) = &e.request {
                how.push(clean(r).into_owned());
            }
            if let Some(l) = e.link_id {
                how.push(format!("link {l}"));
            }
            for f in e.attach_flags.iter().flatten() {
                how.push(clean(f).into_owned());
            }
            if !how.is_empty() {
                let _ = write!(s, " [{}]", how.join(", "));
            }
            if let Some(root) = &e.cgroupns_root {
                if root != "/" {
                    let _ = write!(s, " cgroupns {}", clean(root));
                }
            }
            if let Some(r) = e.result {
                s.push_str(" = ");
                // BPF_LINK_CREATE returns the new link's fd.
                if r >= 0 && e.request.as_deref() == Some("BPF_LINK_CREATE") {
                    s.push_str("fd ");
                }
                push_result(s, r);
            }
        }
    }
}

fn opt(v: &Option<String>) -> std::borrow::Cow<'_, str> {
    v.as_deref().map(clean).unwrap_or(std::borrow::Cow::Borrowed("?"))
}

fn push_v1_hierarchy(s: &mut String, e: &Event) {
    if let Some(h) = &e.hierarchy {
        if h != "v2" {
            let _ = write!(s, " (v1 {})", clean(h));
        }
    }
}

fn push_netns(s: &mut String, e: &Event) {
    match (e.netns, &e.netns_name) {
        (Some(n), Some(name)) => {
            let _ = write!(s, " (netns {n} {})", clean(name));
        }
        (Some(n), None) => {
            let _ = write!(s, " (netns {n})");
        }
        _ => {}
    }
}

/// What the kernel did with a network delete: `confirmed` (its notification came),
/// `NOT APPLIED` (nothing was removed), and the IPv4 routes it flushed silently.
fn push_outcome(s: &mut String, e: &Event) {
    match e.confirmed {
        Some(true) => s.push_str(" confirmed"),
        Some(false) => s.push_str(" NOT APPLIED (the kernel removed nothing)"),
        None => {}
    }
    if let Some(routes) = e.flushed_routes.as_ref().filter(|r| !r.is_empty()) {
        let list: Vec<String> = routes.iter().map(|r| clean(r).into_owned()).collect();
        let _ = write!(
            s,
            "; flushed {} IPv4 route{}: {}",
            routes.len(),
            if routes.len() == 1 { "" } else { "s" },
            list.join("; ")
        );
    }
}

fn push_dev(s: &mut String, e: &Event) {
    if let Some(d) = &e.dev {
        let _ = write!(s, " dev {}", clean(d));
    } else if let Some(i) = e.ifindex {
        let _ = write!(s, " ifindex {i}");
    }
}

/// `dev X` (or `ifindex N`) at the start of the description, no leading space.
fn push_dev_first(s: &mut String, e: &Event) {
    let start = s.len();
    push_dev(s, e);
    if s.len() > start {
        s.remove(start);
    } else {
        s.push_str("dev ?");
    }
}

fn push_result(s: &mut String, r: i64) {
    if r >= 0 {
        let _ = write!(s, "{r}");
    } else {
        match errno_name(-r) {
            Some(n) => s.push_str(n),
            None => {
                let _ = write!(s, "errno {}", -r);
            }
        }
    }
}

/// Names of the errnos a cgroup or sysctl write can plausibly return.
pub fn errno_name(e: i64) -> Option<&'static str> {
    Some(match e {
        1 => "EPERM",
        2 => "ENOENT",
        3 => "ESRCH",
        4 => "EINTR",
        5 => "EIO",
        7 => "E2BIG",
        9 => "EBADF",
        11 => "EAGAIN",
        12 => "ENOMEM",
        13 => "EACCES",
        14 => "EFAULT",
        16 => "EBUSY",
        17 => "EEXIST",
        19 => "ENODEV",
        20 => "ENOTDIR",
        21 => "EISDIR",
        22 => "EINVAL",
        24 => "EMFILE",
        27 => "EFBIG",
        28 => "ENOSPC",
        30 => "EROFS",
        34 => "ERANGE",
        95 => "EOPNOTSUPP",
        _ => return None,
    })
}

/// ` pod=ns/name container=c`, or ` pod_uid=U` when the runtime did not name it.
fn push_pod(s: &mut String, pod: Option<&str>, container: Option<&str>, uid: Option<&str>) {
    match (pod, uid) {
        (Some(p), _) => {
            let _ = write!(s, "  pod={}", clean(p));
            if let Some(c) = container {
                let _ = write!(s, " container={}", clean(c));
            }
        }
        (None, Some(u)) => {
            let _ = write!(s, "  pod_uid={}", clean(u));
        }
        (None, None) => {}
    }
}

fn human_finding(s: &mut String, f: &Finding, color: bool) {
    let (on, off) = match (color, f.severity) {
        (true, Severity::Critical) => (RED_BOLD, RESET),
        (true, Severity::Warning) => (YELLOW, RESET),
        _ => ("", ""),
    };
    let _ = write!(
        s,
        "{on}{} {:<aw$} FINDING {} [{}]: {}{off}",
        f.time.clock(),
        clean(&f.actor),
        clean(&f.id),
        f.severity.as_str(),
        clean(&f.summary),
        aw = ACTOR_WIDTH
    );
    push_pod(
        s,
        f.pod.as_deref().map(String::as_str),
        f.container.as_deref().map(String::as_str),
        f.pod_uid.as_deref().map(String::as_str),
    );
    if let Some(h) = &f.host {
        let _ = write!(s, " host={}", clean(h));
    }
    s.push('\n');
    s.push_str("  evidence: seq");
    if f.evidence.is_empty() {
        s.push_str(" (none)");
    }
    for (i, seq) in f.evidence.iter().enumerate() {
        let _ = write!(s, "{}{seq}", if i == 0 { " " } else { ", " });
    }
    s.push('\n');
    if !f.details.is_empty() {
        s.push_str("  details:");
        for (k, v) in &f.details {
            let v = match v {
                serde_json::Value::String(x) => x.clone(),
                other => other.to_string(),
            };
            let _ = write!(s, " {}={}", clean(k), clean(&v));
        }
        s.push('\n');
    }
    let _ = writeln!(s, "  fix: {}", clean(&f.remediation));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::schema::{HookCounts, HookStatus, Timestamp};

    // 2023-11-14T22:13:20.123456789Z
    const T: Timestamp = Timestamp(1_700_000_000_123_456_789);

    /// Each line as it renders on its own (`--unfold`).
    fn human(lines: &[Line]) -> String {
        let mut p = Printer::new(Vec::new(), Format::Human { color: false }).unfold();
        for l in lines {
            p.print(l).unwrap();
        }
        String::from_utf8(p.into_inner()).unwrap()
    }

    /// A realize burst of systemd's: no-op writes fold into one line with a count, the
    /// removal stands on its own line, another process's writes start their own fold.
    #[test]
    fn noop_subtree_control_writes_fold_into_one_line() {
        let w = |pid: u32, cg: &str, v: &str, before: &str, after: &str, r: i64| {
            let mut e = base(Kind::CgroupWrite, if pid == 1 { "systemd" } else { "kubelet" }, pid);
            e.cgroup = Some(cg.into());
            e.file = Some("cgroup.subtree_control".into());
            e.value = Some(v.into());
            e.result = Some(r);
            let l = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
            e.controllers_before = Some(l(before));
            e.controllers_after = Some(l(after));
            Line::Event(Box::new(e))
        };
        let lines = vec![
            w(1, "/a.slice", "-cpu", "", "", 4),
            w(1, "/b.slice", "-cpuset", "", "", 7),
            w(1, "/kubepods.slice", "-memory", "cpu memory", "cpu memory", -16),
            w(1, "/kubepods.slice", "-cpu", "cpu memory", "memory", 4),
            w(1, "/c.slice", "-pids", "", "", 5),
            w(4242, "/kubepods.slice", "+cpu", "cpu memory", "cpu memory", 4),
        ];
        let mut p = Printer::new(Vec::new(), Format::Human { color: false });
        for l in &lines {
            p.print(l).unwrap();
        }
        p.finish().unwrap();
        let out = String::from_utf8(p.into_inner()).unwrap();
        let got: Vec<&str> = out.lines().collect();
        assert_eq!(got.len(), 4, "{out}");
        assert!(got[0].ends_with("systemd          cgroup_write 3 writes to cgroup.subtree_control of 3 cgroup(s) that changed nothing (1 refused by the kernel)  pid=1 [folded: --unfold shows each]"), "{out}");
        assert!(got[1].contains("(controllers -cpu)"), "{out}");
        assert!(got[2].contains("1 write to cgroup.subtree_control that changed nothing  pid=1"), "{out}");
        assert!(got[3].contains("kubelet") && got[3].contains("1 write to"), "{out}");
        // --unfold: every write on its own line.
        assert_eq!(human(&lines).lines().count(), 6);
    }

    fn base(kind: Kind, actor: &str, pid: u32) -> Event {
        Event {
            seq: 1,
            time: T,
            kind,
            pid,
            tid: pid,
            comm: actor.into(),
            actor: actor.into(),
            ..Default::default()
        }
    }

    fn one(e: Event) -> String {
        human(&[Line::Event(Box::new(e))])
    }

    #[test]
    fn cgroup_write_golden() {
        let mut e = base(Kind::CgroupWrite, "systemd", 1);
        e.exe = Some("/usr/lib/systemd/systemd".into());
        e.cgroup = Some("/kubepods.slice/kubepods-burstable.slice".into());
        e.hierarchy = Some("v2".into());
        e.file = Some("cgroup.subtree_control".into());
        e.value = Some("-cpuset\n".into());
        e.result = Some(7);
        assert_eq!(
            one(e.clone()),
            "22:13:20.123 systemd          cgroup_write /kubepods.slice/kubepods-burstable.slice cgroup.subtree_control <- \"-cpuset\" = 7  pid=1 comm=systemd [/usr/lib/systemd/systemd]\n"
        );
        e.result = Some(-16);
        e.controllers_before = Some(vec!["cpu".into(), "cpuset".into()]);
        e.controllers_after = Some(vec!["cpu".into()]);
        e.hierarchy = Some("cpu,cpuacct".into());
        assert_eq!(
            one(e),
            "22:13:20.123 systemd          cgroup_write /kubepods.slice/kubepods-burstable.slice cgroup.subtree_control <- \"-cpuset\" = EBUSY (controllers -cpuset) (v1 cpu,cpuacct)  pid=1 comm=systemd [/usr/lib/systemd/systemd]\n"
        );
    }

    #[test]
    fn what_the_kernel_could_not_read_is_said() {
        let mut e = base(Kind::CgroupWrite, "runc", 7);
        e.cgroup = Some("/a/b".into());
        e.file = Some("cpu.max".into());
        e.value = Some("max".into());
        e.value_truncated = true;
        e.more_iovecs = true;
        e.path_truncated = true;
        let line = one(e);
        assert!(line.contains("<- \"max...\""), "{line}");
        assert!(
            line.contains("[path truncated: only its last components] [first iovec only: more were sent]"),
            "{line}"
        );
    }

    #[test]
    fn mkdir_with_on_behalf_of() {
        let mut e = base(Kind::CgroupMkdir, "runc", 4242);
        e.comm = "runc:[2:INIT]".into();
        e.cgroup = Some("/system.slice/kubepods-besteffort-pod1.slice:cri-containerd:abc".into());
        e.on_behalf_of = Some("containerd".into());
        assert_eq!(
            one(e),
            "22:13:20.123 runc             cgroup_mkdir /system.slice/kubepods-besteffort-pod1.slice:cri-containerd:abc  pid=4242 comm=runc:[2:INIT] (for containerd)\n"
        );
    }

    #[test]
    fn sysctl_golden() {
        let mut e = base(Kind::SysctlWrite, "systemd-sysctl", 900);
        e.comm = "systemd-sysctl".into();
        e.name = Some("net.ipv4.conf.lxc1.rp_filter".into());
        e.old_value = Some("0\n".into());
        e.value = Some("2\n".into());
        e.netns = Some(4026531840);
        e.on_behalf_of = Some("systemd-udevd".into());
        assert_eq!(
            one(e),
            "22:13:20.123 systemd-sysctl   sysctl_write net.ipv4.conf.lxc1.rp_filter 0 -> 2 (netns 4026531840)  pid=900 comm=systemd-sysctl (for systemd-udevd)\n"
        );
    }

    #[test]
    fn cgroup_bpf_golden() {
        let mut e = base(Kind::CgroupBpfAttach, "cilium-agent", 4242);
        e.comm = "cilium-agent".into();
        e.cgroup = Some("/system.slice/docker-1.scope".into());
        e.cgroupns_root = Some("/system.slice/docker-1.scope".into());
        e.request = Some("BPF_LINK_CREATE".into());
        e.attach_type = Some("cgroup_inet4_connect".into());
        e.attach_flags = Some(vec![]);
        e.prog_id = Some(42);
        e.prog_name = Some("cil_sock4_conne".into());
        e.prog_type = Some("cgroup_sock_addr".into());
        e.link_id = Some(7);
        e.result = Some(5);
        assert_eq!(
            one(e.clone()),
            "22:13:20.123 cilium-agent     cgroup_bpf_attach cgroup_inet4_connect cil_sock4_conne (prog 42, cgroup_sock_addr) on /system.slice/docker-1.scope [BPF_LINK_CREATE, link 7] cgroupns /system.slice/docker-1.scope = fd 5  pid=4242 comm=cilium-agent\n"
        );
        // Found at start: no call, no result; at the host root no cgroupns note.
        let mut f = base(Kind::CgroupBpfAttach, "cilium-agent", 4242);
        f.comm = "cilium-agent".into();
        f.cgroup = Some("/".into());
        f.attach_type = Some("cgroup_udp4_sendmsg".into());
        f.attach_flags = Some(vec!["allow_multi".into()]);
        f.prog_id = Some(43);
        f.found_at_start = true;
        assert_eq!(
            one(f),
            "22:13:20.123 cilium-agent     cgroup_bpf_attach cgroup_udp4_sendmsg (prog 43) on / [found at start, allow_multi]  pid=4242 comm=cilium-agent\n"
        );
        let mut d = e;
        d.kind = Kind::CgroupBpfDetach;
        d.request = Some("BPF_PROG_DETACH".into());
        d.link_id = None;
        d.result = Some(-2);
        assert!(one(d).contains("[BPF_PROG_DETACH] cgroupns /system.slice/docker-1.scope = ENOENT"));
    }

    #[test]
    fn route_and_rule_golden() {
        let mut e = base(Kind::RouteDelete, "systemd-networkd", 77);
        e.comm = "systemd-network".into();
        e.dst = Some("10.0.0.0/24".into());
        e.table = Some(2004);
        e.dev = Some("cilium_host".into());
        e.protocol = Some("kernel".into());
        assert_eq!(
            one(e),
            "22:13:20.123 systemd-networkd route_delete 10.0.0.0/24 table 2004 dev cilium_host proto kernel  pid=77 comm=systemd-network\n"
        );
        let mut r = base(Kind::RuleDelete, "systemd-networkd", 77);
        r.comm = "systemd-network".into();
        r.priority = Some(9);
        r.fwmark = Some("0x200/0xf00".into());
        r.table = Some(2004);
        assert_eq!(
            one(r),
            "22:13:20.123 systemd-networkd rule_delete  prio 9 fwmark 0x200/0xf00 table 2004  pid=77 comm=systemd-network\n"
        );
    }

    /// What the kernel answered: the object it removed as `ip` prints it, `confirmed`;
    /// a refused request as the request with `NOT APPLIED`; the routes a removal flushed.
    #[test]
    fn confirmed_refused_and_flushed_golden() {
        let mut r = base(Kind::RuleDelete, "systemd-networkd", 77);
        r.comm = "systemd-network".into();
        r.priority = Some(10);
        r.table = Some(2005);
        r.netns = Some(4026532177);
        r.netns_name = Some(Box::new("pod1".into()));
        r.object = Some(Box::new("10: from all fwmark 0xa00/0xf00 lookup 2005".into()));
        r.confirmed = Some(true);
        assert_eq!(
            one(r),
            "22:13:20.123 systemd-networkd rule_delete  10: from all fwmark 0xa00/0xf00 lookup 2005 (netns 4026532177 pod1) confirmed  pid=77 comm=systemd-network\n"
        );
        let mut e = base(Kind::RouteDelete, "ip", 5);
        e.dst = Some("10.55.0.0/24".into());
        e.table = Some(2004);
        e.confirmed = Some(false);
        assert_eq!(
            one(e),
            "22:13:20.123 ip               route_delete 10.55.0.0/24 table 2004 NOT APPLIED (the kernel removed nothing)  pid=5 comm=ip\n"
        );
        let mut a = base(Kind::AddrDelete, "ip", 5);
        a.object = Some(Box::new("inet 10.99.0.1/24 scope global dev d0".into()));
        a.confirmed = Some(true);
        a.flushed_routes = Some(Box::new(vec![
            "10.98.0.0/24 via 10.99.0.2 dev d0".into(),
            "10.97.0.0/16 dev d0 table 2004".into(),
        ]));
        assert_eq!(
            one(a),
            "22:13:20.123 ip               addr_delete  inet 10.99.0.1/24 scope global dev d0 confirmed; flushed 2 IPv4 routes: 10.98.0.0/24 via 10.99.0.2 dev d0; 10.97.0.0/16 dev d0 table 2004  pid=5 comm=ip\n"
        );
    }

    #[test]
    fn link_and_addr_golden() {
        let mut l = base(Kind::LinkSet, "ip", 5);
        l.dev = Some("cilium_net".into());
        l.up = Some(false);
        l.rp_filter = Some(2);
        assert_eq!(
            one(l),
            "22:13:20.123 ip               link_set     dev cilium_net down rp_filter 2  pid=5 comm=ip\n"
        );
        let mut a = base(Kind::AddrDelete, "ip", 5);
        a.dst = Some("10.1.0.1/32".into());
        a.ifindex = Some(3);
        assert_eq!(
            one(a),
            "22:13:20.123 ip               addr_delete  10.1.0.1/32 ifindex 3  pid=5 comm=ip\n"
        );
    }

    #[test]
    fn signal_golden() {
        let mut e = base(Kind::Signal, "kubelet", 300);
        e.signal = Some("SIGKILL".into());
        e.target_pid = Some(1234);
        e.target_comm = Some("nginx".into());
        e.target_cgroup = Some("/kubepods.slice/kubepods-pod1.slice".into());
        assert_eq!(one(e), "22:13:20.123 kubelet          signal       SIGKILL -> 1234 (nginx) /kubepods.slice/kubepods-pod1.slice  pid=300 comm=kubelet\n");
    }

    #[test]
    fn exec_and_dbus_call_golden() {
        let mut e = base(Kind::Exec, "systemctl", 706);
        e.exe = Some("/usr/bin/systemctl".into());
        e.cmdline = Some(Box::new("systemctl restart systemd-networkd.service".into()));
        assert_eq!(one(e), "22:13:20.123 systemctl        exec         systemctl restart systemd-networkd.service  pid=706 comm=systemctl [/usr/bin/systemctl]\n");
        let mut c = base(Kind::DbusCall, "busctl", 334);
        c.on_behalf_of = Some("kubelet".into());
        c.call = Some(Box::new(crate::stream::schema::BusCall {
            destination: "org.freedesktop.systemd1".into(),
            interface: "org.freedesktop.systemd1.Manager".into(),
            member: "SetUnitProperties".into(),
            path: "/org/freedesktop/systemd1".into(),
            unit: Some("kubepods-besteffort.slice".into()),
            args: vec!["CPUWeight=2".into()],
            sender: ":1.42".into(),
        }));
        assert_eq!(one(c), "22:13:20.123 busctl           dbus_call    org.freedesktop.systemd1 SetUnitProperties(kubepods-besteffort.slice, CPUWeight=2) from :1.42  pid=334 comm=busctl (for kubelet)\n");
    }

    #[test]
    fn pod_identity_golden() {
        let mut e = base(Kind::Signal, "containerd-shim", 300);
        e.signal = Some("SIGKILL".into());
        e.target_pid = Some(1234);
        e.target_comm = Some("sleep".into());
        e.target_cgroup = Some("/kubepods/besteffort/podU/c1".into());
        e.pod_uid = Some(Box::new("U".into()));
        assert_eq!(
            one(e.clone()),
            "22:13:20.123 containerd-shim  signal       SIGKILL -> 1234 (sleep) /kubepods/besteffort/podU/c1  pod_uid=U  pid=300 comm=containerd-shim\n",
            "the runtime did not name it: the uid"
        );
        e.pod = Some(Box::new("shop/cart-0".into()));
        e.container = Some(Box::new("cart".into()));
        assert_eq!(
            one(e),
            "22:13:20.123 containerd-shim  signal       SIGKILL -> 1234 (sleep) /kubepods/besteffort/podU/c1  pod=shop/cart-0 container=cart  pid=300 comm=containerd-shim\n"
        );
    }

    #[test]
    fn control_characters_are_stripped() {
        let mut e = base(Kind::CgroupWrite, "evil\x1b[2J", 6);
        e.comm = "a\rb\u{202e}c".into();
        e.cgroup = Some("/x\ny".into());
        e.file = Some("f".into());
        e.value = Some("\x1b]0;title\x07v".into());
        let out = one(e);
        assert_eq!(
            out,
            "22:13:20.123 evil[2J          cgroup_write /xy f <- \"]0;titlev\"  pid=6 comm=abc\n"
        );
        assert_eq!(out.matches('\n').count(), 1);
    }

    fn finding() -> Finding {
        Finding {
            controller: Some("cpuset".into()),
            cgroup: Some("/kubepods.slice".into()),
            ..Finding::new(
                "kubepods-controller-removed",
                Severity::Critical,
                T,
                "systemd",
                "cpuset removed from /kubepods.slice".into(),
                vec![3, 7],
            )
            .with_remediation("SystemdCgroup = true in containerd, cgroupDriver: systemd in kubelet")
        }
    }

    #[test]
    fn finding_golden_plain_and_color() {
        let f = finding();
        assert_eq!(
            human(&[Line::Finding(f.clone())]),
            "22:13:20.123 systemd          FINDING kubepods-controller-removed [critical]: cpuset removed from /kubepods.slice\n  evidence: seq 3, 7\n  fix: SystemdCgroup = true in containerd, cgroupDriver: systemd in kubelet\n"
        );
        let mut p = Printer::new(Vec::new(), Format::Human { color: true });
        p.print(&Line::Finding(f.clone())).unwrap();
        let out = String::from_utf8(p.into_inner()).unwrap();
        assert!(out.starts_with("\x1b[1;31m22:13:20.123 systemd"), "{out:?}");
        assert!(out.contains("/kubepods.slice\x1b[0m\n"), "{out:?}");
        let mut w = f;
        w.severity = Severity::Warning;
        let mut p = Printer::new(Vec::new(), Format::Human { color: true });
        p.print(&Line::Finding(w)).unwrap();
        assert!(String::from_utf8(p.into_inner()).unwrap().starts_with("\x1b[33m"));
    }

    #[test]
    fn header_golden() {
        let h = HeaderLine {
            schema: 1,
            tracer_version: "0.1.0".into(),
            hostname: "node-a".into(),
            kernel: "6.18.0".into(),
            started_at: T,
            hooks: vec![
                HookStatus {
                    name: "cgroup_write".into(),
                    state: crate::stream::schema::HookState::Attached,
                    error: None,
                },
                HookStatus {
                    name: "sysctl".into(),
                    state: crate::stream::schema::HookState::NotLoaded,
                    error: Some("EPERM".into()),
                },
            ],
            hook_modes: vec![crate::stream::schema::FamilyMode {
                family: "cgroup_write".into(),
                mode: "syscall".into(),
                at: "sys_enter/sys_exit".into(),
                why: "--hook-mode syscall".into(),
            }],
        };
        assert_eq!(
            human(&[Line::Header(h)]),
            "tracer 0.1.0 on node-a (6.18.0): 1/2 hooks attached\n  hook sysctl not loaded: EPERM\n  \
             hooks: cgroup_write on sys_enter/sys_exit\n  hook mode: --hook-mode syscall\n"
        );
    }

    #[test]
    fn stats_print_only_new_losses_and_final_summary() {
        let mut st = Stats { time: T, events: 100, ..Default::default() };
        let mut p = Printer::new(Vec::new(), Format::Human { color: false });
        p.print(&Line::Stats(st.clone())).unwrap();
        assert!(p.get_ref().is_empty());
        st.lost = 12;
        st.hooks.insert("cgroup_write".into(), HookCounts { seen: 100, lost: 12 });
        p.print(&Line::Stats(st.clone())).unwrap();
        // Same cumulative counts again: nothing new.
        p.print(&Line::Stats(st.clone())).unwrap();
        st.decode_errors = 1;
        st.events = 150;
        p.print(&Line::Stats(st.clone())).unwrap();
        p.finish().unwrap();
        let out = String::from_utf8(p.into_inner()).unwrap();
        assert_eq!(
            out,
            "22:13:20.123 !! 12 events lost (ring buffer full) [total by hook: cgroup_write 12]; totals: 12 lost, 0 undecodable\n\
             22:13:20.123 !! 1 records could not be decoded; totals: 12 lost, 1 undecodable\n\
             == 150 events, 12 lost, 1 decode errors\n"
        );
    }

    #[test]
    fn json_is_one_line_per_line() {
        let mut p = Printer::new(Vec::new(), Format::Json);
        let mut e = base(Kind::CgroupWrite, "systemd", 1);
        e.value = Some("a\nb".into());
        p.print(&Line::Event(Box::new(e.clone()))).unwrap();
        p.print(&Line::Finding(finding())).unwrap();
        p.finish().unwrap();
        let out = String::from_utf8(p.into_inner()).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(serde_json::from_str::<Line>(lines[0]).unwrap(), Line::Event(Box::new(e)));
        assert_eq!(serde_json::from_str::<Line>(lines[1]).unwrap(), Line::Finding(finding()));
    }

    #[test]
    fn broken_pipe_is_reported_as_such() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::from(io::ErrorKind::BrokenPipe))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        for format in [Format::Json, Format::Human { color: false }] {
            let mut p = Printer::new(Closed, format);
            let err = p.print(&Line::Event(Box::new(base(Kind::Signal, "x", 1)))).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
        }
    }
}

/// When to color the human output.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ColorChoice {
    #[default]
    Auto,
    Always,
    Never,
}

impl ColorChoice {
    /// Whether to colour: `auto` colours a terminal unless `NO_COLOR` is set
    /// (https://no-color.org).
    pub fn enabled(self) -> bool {
        use std::io::IsTerminal as _;
        match self {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        }
    }
}
