//! The live pipeline: ring buffer -> decode -> process table -> events -> correlator,
//! delivered as schema-v1 lines to whoever consumes the session (`tail`, `record`).
//!
//! Three threads, each handing the next its work in bounded batches:
//! - `tracer-ring` owns the loaded programs and empties the ring buffer when the kernel
//!   says it is readable: it only copies the records out, in chunks ([`Chunk`]), so the
//!   ring buffer is emptied at the rate of a memcpy whatever the rest is doing;
//! - `tracer-pipeline` turns records into lines (decode, process table, events,
//!   correlator) and ticks;
//! - the consumer (the caller's thread) serializes and writes them.
//!
//! Several threads on a busy node get several times the CPU share of one: a storm of
//! cgroup writes competes with the writers for the cores, and the tracer must keep up to
//! lose nothing. The chunks in flight (up to [`CHUNKS_IN_FLIGHT`] x [`CHUNK_BYTES`], on
//! the heap only while a storm lasts) absorb what the kernel's ring buffer would
//! otherwise have to: the ring buffer can stay small, and its pages are mapped twice and
//! all counted in the tracer's RSS. A pipeline that falls behind for longer stops the
//! ring thread (memory stays bounded) and the ring buffer fills; what it cannot take is
//! counted as lost, never silent.
//!
//! A cgroup write arrives as two records, the write at syscall entry and its result at
//! exit; they are joined here by thread id. A result that never comes (the record was
//! lost, the thread died) leaves the event without a result after [`RESULT_WAIT`];
//! the event itself is never dropped.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aya::maps::{MapData, PerCpuArray, RingBuf};
use tokio::sync::mpsc;
use tracer_common::counter;

use crate::correlator::{Correlator, Ticker, TICK};
use crate::kernel::loader::{self, LoadError, LoadOptions, Loaded};
use crate::pipeline::decode::{self, Record};
use crate::pipeline::enrich::EventBuilder;
use crate::pipeline::netstate::Confirmer;
use crate::pipeline::process::ProcessTable;
use crate::stream::schema::{Event, HeaderLine, HookCounts, Line, Stats, Timestamp, SCHEMA_VERSION};

/// How long a cgroup write waits for its result record before it is emitted without.
pub const RESULT_WAIT: Duration = Duration::from_secs(2);
/// Nice value of the tracer's threads (the reader, and the consumer that starts the
/// session), like auditd's `priority_boost`: in a storm that saturates the cores the
/// writers then slow down instead of the ring buffer overflowing. Needs CAP_SYS_NICE;
/// without it the threads keep their priority (logged). `TRACER_NICE=<n>` overrides it
/// (for benchmarks; 0 leaves the priority alone).
pub const NICE: i32 = -10;

/// Lowers the calling thread's nice value to `NICE` (never raises it).
fn boost_priority() {
    let nice = std::env::var("TRACER_NICE").ok().and_then(|v| v.parse().ok()).unwrap_or(NICE);
    // SAFETY: plain syscalls on the calling thread.
    unsafe {
        let tid = libc::gettid();
        *libc::__errno_location() = 0;
        let cur = libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t);
        if *libc::__errno_location() == 0 && cur <= nice {
            return;
        }
        if libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) != 0 {
            tracing::debug!("cannot set nice {nice}: {}", std::io::Error::last_os_error());
        }
    }
}

/// A drain of at least this many records means a storm: the reader then pauses for
/// `STORM_PAUSE` before it polls again, so it reads in large batches (at 300k records/s
/// a pause of 2 ms is 600 records, 400 KB of the ring buffer).
const STORM_RECORDS: usize = 64;
/// Correlator ticks per housekeeping round (about a second).
const HOUSEKEEPING_TICKS: u64 = 4;
const STORM_PAUSE: Duration = Duration::from_millis(2);

/// How long the reader thread waits for the runtime's first listing of pods.
const FIRST_LISTING_WAIT: Duration = Duration::from_secs(1);

/// Bytes of records per chunk handed from the ring thread to the pipeline thread.
const CHUNK_BYTES: usize = 256 << 10;
/// Chunks in flight: up to 16 MiB of records (about 50,000 cgroup writes) waiting for
/// the pipeline, on the heap only while a storm lasts.
const CHUNKS_IN_FLIGHT: usize = 64;

/// Lines per batch handed to the consumer.
const BATCH: usize = 256;
/// Batches in flight between the reader and the consumer.
const BATCHES_IN_FLIGHT: usize = 32;

/// Options of a live session.
#[derive(Debug, Clone)]
pub struct LiveOptions {
    pub load: LoadOptions,
    /// How often a `stats` line is emitted (also whenever records were lost).
    pub stats_every: Duration,
    /// Where the process table is seeded from.
    pub proc_root: PathBuf,
    /// The node's filesystem, where kubelet's and the runtime's configuration is read.
    pub host_root: PathBuf,
    /// `--cri-endpoint`: the runtime's socket (`none`: not asked); default: found.
    pub cri_endpoint: Option<String>,
    /// The system bus to watch (`--dbus-socket`); `None`: not watched.
    pub dbus_socket: Option<PathBuf>,
}

impl Default for LiveOptions {
    fn default() -> Self {
        LiveOptions {
            load: LoadOptions::default(),
            stats_every: Duration::from_secs(10),
            proc_root: PathBuf::from("/proc"),
            host_root: PathBuf::from("/"),
            cri_endpoint: None,
            dbus_socket: None,
        }
    }
}

/// A running capture.
pub struct Session {
    header: HeaderLine,
    rx: mpsc::Receiver<Vec<Line>>,
    /// The batch being handed out.
    queued: VecDeque<Line>,
    stop: Arc<StopFd>,
}

/// An eventfd the reader thread polls next to the ring buffer: written once to stop.
struct StopFd(OwnedFd);

impl StopFd {
    fn new() -> std::io::Result<StopFd> {
        // SAFETY: plain syscall; the fd is owned from here on.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor we own.
        Ok(StopFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }
    fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64 to our eventfd.
        unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }
}

/// Counter slot names (`tracer_common::counter::name`, from the one kind table).
fn slot_name(slot: u32) -> Option<&'static str> {
    counter::name(slot)
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_default()
}

pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).unwrap_or_default()
}

impl Session {
    /// Loads and attaches the hooks and starts reading. Must run inside a tokio runtime.
    pub async fn start(opts: &LiveOptions) -> Result<Session, LoadError> {
        let mut loaded = loader::load(&opts.load)?;
        // The syscall mode only looks at writes of processes known to hold a cgroupfs
        // file. After attaching, so that nothing opened in between is missed.
        if !loaded.on_kfunc(tracer_common::family::CGROUP_WRITE) {
            match crate::kernel::openers::seed(&mut loaded.ebpf, &opts.proc_root) {
                Ok(n) => tracing::debug!("{n} processes already hold cgroupfs files"),
                Err(e) => tracing::warn!(
                    "cannot seed the cgroupfs openers: {e}; writes through fds opened before start may be missed"
                ),
            }
        }
        let header = HeaderLine {
            schema: SCHEMA_VERSION,
            tracer_version: env!("CARGO_PKG_VERSION").to_string(),
            hostname: hostname(),
            kernel: kernel_release(),
            started_at: Timestamp::now(),
            hooks: loaded.hooks.clone(),
            hook_modes: loaded.modes.clone(),
        };
        let ring =
            loaded.ebpf.take_map("EVENTS").ok_or(LoadError::Map { name: "EVENTS", source: None }).and_then(
                |m| RingBuf::try_from(m).map_err(|e| LoadError::Map { name: "EVENTS", source: Some(e) }),
            )?;
        let seen = take_counter(&mut loaded, "SEEN")?;
        let lost = take_counter(&mut loaded, "LOST")?;
        let (tx, rx) = mpsc::channel(BATCHES_IN_FLIGHT);
        let stop = Arc::new(
            StopFd::new().map_err(|source| LoadError::Resource { what: "the stop eventfd", source })?,
        );
        let mut table = ProcessTable::new();
        table.seed_from_proc(&opts.proc_root);
        let builder = EventBuilder::new(loaded.controllers.clone(), loaded.cgroup2_root.clone());
        let mut pipeline = Pipeline::new(builder, table, tx);
        // Listed on the reader thread once it runs (after attaching: an attach made from
        // then on is seen live, and may also be listed), so the header is not delayed by
        // a walk of a large cgroup tree.
        pipeline.scan_at_start = loaded.cgroup2_root.clone().map(|root| (root, opts.proc_root.clone()));
        pipeline.below = loaded.cgroup2_root.clone().map(crate::pipeline::below::Looker::new);
        // The host's network state, and that of the namespaces named under /run/netns,
        // before the header says tracer is watching: a deletion made right after it is
        // then judged against the state before it (a few rtnetlink dumps, milliseconds).
        if let Some(own) = crate::kernel::netns::own() {
            pipeline.confirm.net.watch(own, std::process::id());
        }
        pipeline.confirm.net.housekeeping();
        // The node's configuration, before any change: a cgroup-driver disagreement is
        // the first line after the header.
        // The container runtime, over CRI: its own word on its cgroup driver now, the
        // pods and containers it runs on a thread of its own (pipeline/pods.rs).
        let crate::node::NodeReport { drivers, socket, runtime } = crate::node::NodeReport::read(
            &opts.host_root,
            &opts.proc_root,
            opts.cri_endpoint.as_deref(),
            false,
        );
        for p in &drivers.problems {
            tracing::warn!("cannot read {p}");
        }
        match &socket {
            Ok(path) => {
                if let Some(p) = &runtime.problem {
                    tracing::warn!("{p}; events name pods by uid only until the runtime answers");
                }
                match crate::pipeline::pods::Pods::start(path.clone()) {
                    Ok(pods) => pipeline.pods = pods,
                    Err(e) => {
                        tracing::warn!("cannot start the CRI thread: {e}; events name pods by uid only")
                    }
                }
            }
            Err(why) if opts.cri_endpoint.is_some() => tracing::warn!("{why}"),
            Err(why) => {
                tracing::warn!("{why}: events name pods by uid only (--cri-endpoint sets the socket)")
            }
        }
        pipeline.config_findings =
            crate::node::cgroup_driver::finding(&drivers, Timestamp::now()).into_iter().collect();
        // Requests to systemd and networkd on the system bus: the causes findings name.
        if let Some(bus_socket) = &opts.dbus_socket {
            match crate::node::bus::Monitor::start(bus_socket) {
                Ok(m) => pipeline.bus = Some(m),
                Err(e) => tracing::warn!(
                    "{e}: requests to systemd and networkd over D-Bus are not seen, findings name no such cause \
                     (--dbus-socket sets the socket)"
                ),
            }
        }
        let stats_every = opts.stats_every;
        let (chunks_tx, chunks_rx) = std::sync::mpsc::sync_channel(CHUNKS_IN_FLIGHT);
        boost_priority();
        let stop_ring = stop.clone();
        std::thread::Builder::new()
            .name("tracer-ring".into())
            .spawn(move || {
                boost_priority();
                drain(loaded, ring, stop_ring, chunks_tx)
            })
            .map_err(|source| LoadError::Resource { what: "the ring-buffer thread", source })?;
        let stop_pipeline = stop.clone();
        std::thread::Builder::new()
            .name("tracer-pipeline".into())
            .spawn(move || {
                boost_priority();
                run(chunks_rx, seen, lost, pipeline, stop_pipeline, stats_every)
            })
            .map_err(|source| LoadError::Resource { what: "the pipeline thread", source })?;
        Ok(Session { header, rx, queued: VecDeque::new(), stop })
    }

    pub fn header(&self) -> &HeaderLine {
        &self.header
    }

    /// The next line; `None` once the session has stopped and everything was delivered.
    pub async fn next(&mut self) -> Option<Line> {
        loop {
            if let Some(line) = self.queued.pop_front() {
                return Some(line);
            }
            // Cancel-safe: a receive either takes a batch (kept in `queued`) or nothing.
            self.queued = self.rx.recv().await?.into();
        }
    }

    /// A line if one is ready now, without waiting (to batch output between flushes).
    pub fn try_next(&mut self) -> Option<Line> {
        loop {
            if let Some(line) = self.queued.pop_front() {
                return Some(line);
            }
            self.queued = self.rx.try_recv().ok()?.into();
        }
    }

    /// Begins shutdown: what the kernel already produced is read and delivered, then a
    /// final `stats` line, then the programs are detached and `next` returns `None`.
    pub fn stop(&mut self) {
        self.stop.signal();
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.stop.signal();
    }
}

fn take_counter(loaded: &mut Loaded, name: &'static str) -> Result<PerCpuArray<MapData, u64>, LoadError> {
    loaded
        .ebpf
        .take_map(name)
        .ok_or(LoadError::Map { name, source: None })
        .and_then(|m| PerCpuArray::try_from(m).map_err(|e| LoadError::Map { name, source: Some(e) }))
}

/// Record -> lines, with all the state that takes.
struct Pipeline {
    builder: EventBuilder,
    table: ProcessTable,
    correlator: Correlator,
    seq: u64,
    decode_errors: u64,
    /// Cgroup writes waiting for their result, by thread id.
    writes: HashMap<u32, Box<Event>>,
    /// Lines not yet handed to the consumer.
    out: Vec<Line>,
    tx: mpsc::Sender<Vec<Line>>,
    /// The consumer is gone.
    closed: bool,
    /// Ticks so far (housekeeping runs every [`HOUSEKEEPING_TICKS`]).
    ticks: u64,
    ticker: Ticker,
    /// (cgroup2 root, procfs) to list the cgroup programs already attached from, at the
    /// start of the reader thread; they are the first events.
    scan_at_start: Option<(PathBuf, PathBuf)>,
    /// Route, rule, address and link deletions waiting for the kernel's answer, and
    /// the network state they are judged against.
    confirm: Confirmer,
    /// Findings from the node's configuration, the first lines after the header.
    config_findings: Vec<crate::stream::schema::Finding>,
    /// Pod identity of the events about kubepods and container cgroups.
    pods: crate::pipeline::pods::Pods,
    /// What lived below a cgroup that lost a controller (none without a cgroup2 mount).
    below: Option<crate::pipeline::below::Looker>,
    /// Requests to systemd and networkd on the system bus (none when not watched).
    bus: Option<crate::node::bus::Monitor>,
    /// Calls the bus monitor handed over.
    bus_seen: u64,
}

impl Pipeline {
    fn new(builder: EventBuilder, table: ProcessTable, tx: mpsc::Sender<Vec<Line>>) -> Pipeline {
        Pipeline {
            builder,
            table,
            correlator: Correlator::new(),
            seq: 0,
            decode_errors: 0,
            writes: HashMap::new(),
            out: Vec::with_capacity(BATCH),
            tx,
            closed: false,
            ticks: 0,
            ticker: Ticker::default(),
            scan_at_start: None,
            confirm: Confirmer::default(),
            config_findings: Vec::new(),
            pods: crate::pipeline::pods::Pods::default(),
            below: None,
            bus: None,
            bus_seen: 0,
        }
    }

    /// The attachments listed at start as `cgroup_bpf_attach` events with
    /// `found_at_start`, attributed to the process holding the program, if any.
    fn emit_found_at_start(&mut self) {
        let Some((root, proc_root)) = self.scan_at_start.take() else { return };
        let found = crate::kernel::cgroup_bpf::scan(&root, &proc_root);
        tracing::debug!("{} socket programs already attached to cgroups", found.len());
        let now = boot_ns();
        for a in found {
            let mut ev = Box::new(found_event(&a, self.builder.clock.wall(now)));
            // The holder that is a known component first (the agent, not a bpftool).
            let mut best: Option<Event> = None;
            for &pid in &a.holders {
                let task = decode::Task { ktime_ns: now, pid, tid: pid, ..Default::default() };
                let mut cand = (*ev).clone();
                cand.pid = pid;
                cand.tid = pid;
                self.table.attribute(&task, &mut cand);
                if let Some(p) = self.table.get(pid, 0) {
                    cand.comm = p.comm.clone();
                    cand.ppid = p.ppid;
                }
                let known = crate::pipeline::actor::is_principal(&cand.actor);
                if best.is_none() || known {
                    best = Some(cand);
                    if known {
                        break;
                    }
                }
            }
            if let Some(b) = best {
                *ev = b;
            }
            self.emit(ev);
        }
    }

    fn handle(&mut self, bytes: &[u8]) {
        let rec = match decode::decode(bytes) {
            Ok(r) => r,
            Err(e) => {
                self.decode_errors += 1;
                tracing::warn!("undecodable record: {e}");
                return;
            }
        };
        match &rec {
            Record::Exec { task, filename, .. } => {
                self.table.exec(task, filename);
                for mut ev in self.builder.build(&rec) {
                    self.table.attribute(task, &mut ev);
                    self.emit(Box::new(ev));
                }
                // A process in a namespace not seen yet: its state is dumped now, before
                // the process can change it.
                self.confirm.net.watch(task.netns, task.pid);
            }
            Record::Fork { task, child_pid, child_start_ns } => {
                self.table.fork(task, *child_pid, *child_start_ns)
            }
            Record::Exit { task, .. } => self.table.exit(task),
            Record::CgroupWriteResult(r) => {
                // No entry: the write record was lost (counted), or waited too long.
                if let Some(mut ev) = self.writes.remove(&r.task.tid) {
                    self.builder.complete_write(&mut ev, r.result, r.subtree_after);
                    self.emit(ev);
                }
            }
            Record::CgroupWrite(w) if w.result_follows => {
                for mut ev in self.builder.build(&rec) {
                    self.table.attribute(rec.task(), &mut ev);
                    // A write still waiting on this thread lost its result record.
                    if let Some(old) = self.writes.insert(w.task.tid, Box::new(ev)) {
                        self.emit(old);
                    }
                }
            }
            Record::Netlink(n) => {
                self.confirm.net.watch(n.task.netns, n.task.pid);
                for mut ev in self.builder.build(&rec) {
                    self.table.attribute(rec.task(), &mut ev);
                    if let Some(ev) = self.confirm.hold(Box::new(ev)) {
                        self.emit(ev);
                    }
                }
            }
            _ => {
                for mut ev in self.builder.build(&rec) {
                    self.table.attribute(rec.task(), &mut ev);
                    self.emit(Box::new(ev));
                }
            }
        }
    }

    /// Emits the held network deletions whose outcome is known (all when `all`).
    fn settle_net(&mut self, all: bool) {
        for ev in self.confirm.settle(all) {
            self.emit(ev);
        }
    }

    fn emit(&mut self, mut ev: Box<Event>) {
        self.seq += 1;
        ev.seq = self.seq;
        self.pods.annotate(&mut ev);
        if let Some(below) = &mut self.below {
            below.annotate(&mut ev);
        }
        let findings = self.correlator.observe(&ev);
        self.push(Line::Event(ev));
        for f in findings {
            self.push(Line::Finding(f));
        }
    }

    fn push(&mut self, line: Line) {
        self.out.push(line);
        if self.out.len() >= BATCH {
            self.flush();
        }
    }

    /// Hands the lines so far to the consumer, waiting while it is behind.
    fn flush(&mut self) {
        if self.out.is_empty() {
            return;
        }
        let batch = std::mem::replace(&mut self.out, Vec::with_capacity(BATCH));
        if self.tx.blocking_send(batch).is_err() {
            self.closed = true;
        }
    }

    /// Writes whose result has not come within `RESULT_WAIT` (all of them when `all`).
    fn expire_writes(&mut self, all: bool) {
        if self.writes.is_empty() {
            return;
        }
        let now = self.builder.clock.wall(boot_ns());
        let wait = RESULT_WAIT.as_nanos() as i64;
        let mut late: Vec<u32> = self
            .writes
            .iter()
            .filter(|(_, ev)| all || now.0 - ev.time.0 >= wait)
            .map(|(tid, _)| *tid)
            .collect();
        late.sort_by_key(|tid| self.writes[tid].time);
        for tid in late {
            if let Some(ev) = self.writes.remove(&tid) {
                self.emit(ev);
            }
        }
    }

    /// The bus monitor's calls as `dbus_call` events, attributed to the caller.
    fn take_bus_calls(&mut self) {
        let Some(bus) = &self.bus else { return };
        let calls: Vec<crate::node::bus::Request> = bus.take().collect();
        self.bus_seen += calls.len() as u64;
        for mut r in calls {
            // networkd names links by ifindex, in its network namespace: PID 1's.
            if r.call.destination == "org.freedesktop.network1" {
                if let Some(i) =
                    r.call.unit.as_deref().and_then(|u| u.strip_prefix("link ")?.parse::<u32>().ok())
                {
                    let ns = std::fs::metadata("/proc/1/ns/net")
                        .ok()
                        .map(|m| std::os::unix::fs::MetadataExt::ino(&m) as u32);
                    if let Some(name) = ns.and_then(|ns| self.builder.netns_names.name(1, ns, i)) {
                        r.call.unit = Some(format!("link {i} ({name})"));
                    }
                }
            }
            let mut ev = Event {
                time: r.time,
                kind: crate::stream::schema::Kind::DbusCall,
                call: Some(Box::new(r.call)),
                ..Default::default()
            };
            if let Some(pid) = r.pid {
                self.table.attribute_pid(pid, &mut ev);
            }
            if ev.actor.is_empty() {
                ev.actor = "unknown".into();
            }
            self.emit(Box::new(ev));
        }
    }

    fn tick(&mut self) {
        self.ticks += 1;
        self.take_bus_calls();
        self.expire_writes(false);
        // The path cache's grace is counted in seconds-long housekeeping rounds, not in
        // correlator ticks: records of a removed cgroup can trail its rmdir under load.
        if self.ticks.is_multiple_of(HOUSEKEEPING_TICKS) {
            self.builder.expire_removed();
            self.confirm.net.housekeeping();
            if self.confirm.is_empty() {
                // Keeps the notification queues short between deletions.
                self.confirm.net.sync();
            }
        }
        self.settle_net(false);
        for f in self.ticker.advance(&mut self.correlator, Timestamp::now()) {
            self.push(Line::Finding(f));
        }
    }
}

/// The event of an attachment found at start, before attribution.
fn found_event(a: &crate::kernel::cgroup_bpf::Attachment, time: Timestamp) -> Event {
    use crate::pipeline::bpf_names;
    Event {
        time,
        kind: crate::stream::schema::Kind::CgroupBpfAttach,
        cgroup: Some(a.cgroup.clone()),
        cgroup_id: Some(a.cgroup_id),
        hierarchy: Some("v2".into()),
        attach_type: Some(bpf_names::attach_type_name(a.attach_type)),
        attach_flags: Some(bpf_names::attach_flag_names(a.attach_flags)),
        prog_id: Some(a.prog_id),
        prog_name: Some(a.prog_name.clone()),
        prog_type: Some(bpf_names::prog_type_name(a.prog_type)),
        link_id: a.link_id,
        found_at_start: true,
        ..Default::default()
    }
}

fn boot_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn sum_counters(map: &PerCpuArray<MapData, u64>) -> BTreeMap<u32, u64> {
    let mut out = BTreeMap::new();
    for slot in 0..counter::SLOTS {
        if let Ok(values) = map.get(&slot, 0) {
            let total: u64 = values.iter().sum();
            if total > 0 {
                out.insert(slot, total);
            }
        }
    }
    out
}

fn stats(p: &Pipeline, seen: &PerCpuArray<MapData, u64>, lost: &PerCpuArray<MapData, u64>) -> Stats {
    let seen = sum_counters(seen);
    let lost = sum_counters(lost);
    let mut hooks = BTreeMap::new();
    for slot in 0..counter::SLOTS {
        let (s, l) = (seen.get(&slot).copied().unwrap_or(0), lost.get(&slot).copied().unwrap_or(0));
        if let Some(name) = slot_name(slot) {
            if s > 0 || l > 0 {
                hooks.insert(name.to_string(), HookCounts { seen: s, lost: l });
            }
        }
    }
    // The bus monitor's calls count like a hook's records: dropped when the reader was
    // behind is lost.
    let bus_lost = p.bus.as_ref().map_or(0, |b| b.dropped());
    if p.bus.is_some() {
        hooks.insert("dbus_monitor".to_string(), HookCounts { seen: p.bus_seen, lost: bus_lost });
    }
    Stats {
        time: Timestamp::now(),
        events: p.seq,
        lost: lost.values().sum::<u64>() + bus_lost,
        decode_errors: p.decode_errors + p.builder.netlink_errors + p.builder.path_misses,
        hooks,
        processes: p.table.len() as u64,
        host: None,
    }
}

/// Waits until the ring buffer or the stop fd is readable, or `timeout` passes.
/// Returns true when stop was signalled.
fn wait(ring: &RingBuf<MapData>, stop: &StopFd, timeout: Duration) -> bool {
    let mut fds = [
        libc::pollfd { fd: ring.as_raw_fd(), events: libc::POLLIN, revents: 0 },
        libc::pollfd { fd: stop.0.as_raw_fd(), events: libc::POLLIN, revents: 0 },
    ];
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: two valid pollfd entries.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
    n > 0 && fds[1].revents != 0
}

/// Records copied out of the ring buffer: each a native-endian u32 length, then the
/// record's bytes.
#[derive(Default)]
struct Chunk(Vec<u8>);

impl Chunk {
    fn push(&mut self, record: &[u8]) {
        self.0.extend_from_slice(&(record.len() as u32).to_ne_bytes());
        self.0.extend_from_slice(record);
    }

    fn records(&self) -> impl Iterator<Item = &[u8]> {
        let mut rest = self.0.as_slice();
        std::iter::from_fn(move || {
            let (len, tail) = rest.split_first_chunk::<4>()?;
            let len = (u32::from_ne_bytes(*len) as usize).min(tail.len());
            let (record, tail) = tail.split_at(len);
            rest = tail;
            Some(record)
        })
    }
}

/// The ring thread: copies records out of the ring buffer into chunks for the pipeline
/// thread until stop is signalled (by the session, or by the pipeline when its consumer
/// is gone); then detaches the programs, copies what the kernel already handed over,
/// and ends, which ends the pipeline thread after it.
fn drain(
    loaded: Loaded,
    mut ring: RingBuf<MapData>,
    stop: Arc<StopFd>,
    tx: std::sync::mpsc::SyncSender<Chunk>,
) {
    let empty = |ring: &mut RingBuf<MapData>| {
        let mut chunk = Chunk::default();
        let mut records = 0usize;
        let mut sent = Ok(());
        while let Some(item) = ring.next() {
            chunk.push(&item);
            records += 1;
            if chunk.0.len() >= CHUNK_BYTES {
                sent = tx.send(std::mem::take(&mut chunk));
                if sent.is_err() {
                    break;
                }
            }
        }
        if !chunk.0.is_empty() && sent.is_ok() {
            sent = tx.send(chunk);
        }
        (records, sent.is_ok())
    };
    loop {
        // Idle, nothing but the ring buffer and stop wake this thread.
        if wait(&ring, &stop, Duration::from_secs(1)) {
            break;
        }
        let (records, open) = empty(&mut ring);
        if !open {
            break;
        }
        if records >= STORM_RECORDS {
            // A storm: let records pile up for a moment instead of waking for every
            // few of them (each wakeup costs more than the records it brings).
            std::thread::sleep(STORM_PAUSE);
        }
    }
    // Detach first (dropping `loaded` detaches every program), so nothing arrives after
    // the drain; then hand over what the kernel already produced.
    drop(loaded);
    let _ = empty(&mut ring);
}

/// The pipeline thread: records to lines, ticks and stats, until the ring thread ends.
fn run(
    rx: std::sync::mpsc::Receiver<Chunk>,
    seen: PerCpuArray<MapData, u64>,
    lost: PerCpuArray<MapData, u64>,
    mut p: Pipeline,
    stop: Arc<StopFd>,
    stats_every: Duration,
) {
    use std::sync::mpsc::RecvTimeoutError;
    let mut next_tick = Instant::now() + TICK;
    let mut last_stats = Instant::now();
    let mut last_lost = 0u64;
    let mut deep = false;
    for f in std::mem::take(&mut p.config_findings) {
        p.push(Line::Finding(f));
    }
    // The pods that exist at start are named from the first event on: the runtime's
    // first listing is awaited here, after the header, while the ring thread keeps
    // what the kernel sends meanwhile.
    p.pods.wait_first(FIRST_LISTING_WAIT);
    p.emit_found_at_start();
    p.flush();
    loop {
        match rx.recv_timeout(next_tick.saturating_duration_since(Instant::now())) {
            Ok(chunk) => {
                deep |= chunk.0.len() >= CHUNK_BYTES;
                for record in chunk.records() {
                    p.handle(record);
                }
                p.flush();
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if p.closed {
            // The consumer is gone: stop the ring thread, which ends this loop.
            stop.signal();
        }
        if Instant::now() >= next_tick {
            next_tick += TICK;
            if next_tick < Instant::now() {
                next_tick = Instant::now() + TICK;
            }
            p.tick();
            // The counters are read once per housekeeping round, not per tick: 32 map
            // reads 4 times a second would be the tracer's whole idle cost.
            if p.ticks.is_multiple_of(HOUSEKEEPING_TICKS) {
                let s = stats(&p, &seen, &lost);
                if s.lost != last_lost || last_stats.elapsed() >= stats_every {
                    last_lost = s.lost;
                    last_stats = Instant::now();
                    p.push(Line::Stats(s));
                }
                if deep {
                    // A storm filled whole chunks: give their memory back to the
                    // system once it is over (glibc keeps freed heap otherwise).
                    deep = false;
                    // SAFETY: plain libc call.
                    unsafe { libc::malloc_trim(0) };
                }
            }
            p.flush();
        }
    }
    p.expire_writes(true);
    p.settle_net(true);
    for f in p.correlator.finish() {
        p.push(Line::Finding(f));
    }
    let s = stats(&p, &seen, &lost);
    p.push(Line::Stats(s));
    p.flush();
}

impl crate::session::record::LineSource for Session {
    fn header(&self) -> &HeaderLine {
        Session::header(self)
    }
    // Cancel-safe: a receive from the channel either takes a line or takes nothing.
    async fn next(&mut self) -> Option<Line> {
        Session::next(self).await
    }
    fn stop(&mut self) {
        Session::stop(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::size_of;
    use tracer_common as common;
    use tracer_common::kind;

    fn bytes_of<T: Copy>(v: &T, len: usize) -> Vec<u8> {
        // SAFETY: T is a POD record; reading its first `len` bytes is fine.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), len) }.to_vec()
    }

    fn header(k: u16, size: usize, tid: u32, ktime_ns: u64) -> common::Header {
        let mut h: common::Header = unsafe { std::mem::zeroed() };
        h.kind = k;
        h.size = size as u32;
        h.ktime_ns = ktime_ns;
        h.pid = 4242;
        h.tid = tid;
        h.start_ns = 7;
        h.comm[..5].copy_from_slice(b"storm");
        h
    }

    fn enter(tid: u32, t: u64, id: u64, path: &[&str], file: &str) -> Vec<u8> {
        let mut r: common::CgroupWriteEnter = unsafe { std::mem::zeroed() };
        for (i, c) in path.iter().enumerate() {
            r.path[i][..c.len()].copy_from_slice(c.as_bytes());
        }
        r.path_len = path.len() as u16;
        if path.is_empty() {
            r.flags = common::flags::PATH_OMITTED;
        }
        let size = if path.is_empty() {
            common::CGROUP_WRITE_ENTER_HEAD + 2
        } else {
            common::CGROUP_WRITE_ENTER_FIXED + path.len() * common::NAME_LEN
        };
        r.header = header(kind::CGROUP_WRITE_ENTER, size, tid, t);
        r.file[..file.len()].copy_from_slice(file.as_bytes());
        r.value[..2].copy_from_slice(b"5\n");
        r.value_len = 2;
        r.count = 2;
        r.magic = common::CGROUP2_SUPER_MAGIC;
        r.cgroup_id = id;
        r.subtree_before = 1;
        bytes_of(&r, size)
    }

    fn exit(tid: u32, t: u64, result: i64) -> Vec<u8> {
        let mut x: common::CgroupWriteExit = unsafe { std::mem::zeroed() };
        x.header = header(kind::CGROUP_WRITE_EXIT, size_of::<common::CgroupWriteExit>(), tid, t);
        x.result = result;
        x.subtree_after = 3;
        bytes_of(&x, size_of::<common::CgroupWriteExit>())
    }

    fn pipeline() -> (Pipeline, mpsc::Receiver<Vec<Line>>) {
        let (tx, rx) = mpsc::channel(1024);
        let p = Pipeline::new(
            EventBuilder::new(vec!["cpuset".into(), "cpu".into()], None),
            ProcessTable::new(),
            tx,
        );
        (p, rx)
    }

    fn events(p: &mut Pipeline, rx: &mut mpsc::Receiver<Vec<Line>>) -> Vec<Event> {
        p.flush();
        let mut out = Vec::new();
        while let Ok(batch) = rx.try_recv() {
            for l in batch {
                if let Line::Event(e) = l {
                    out.push(*e);
                }
            }
        }
        out
    }

    #[test]
    fn write_and_result_are_joined_by_thread() {
        let (mut p, mut rx) = pipeline();
        p.handle(&enter(10, 100, 55, &["b", "a"], "cgroup.subtree_control"));
        p.handle(&enter(11, 101, 55, &[], "cgroup.max.depth"));
        assert!(events(&mut p, &mut rx).is_empty(), "nothing before the results");
        p.handle(&exit(11, 102, -22));
        p.handle(&exit(10, 103, 2));
        let ev = events(&mut p, &mut rx);
        assert_eq!(ev.len(), 2);
        assert_eq!(
            (ev[0].tid, ev[0].result, ev[0].cgroup.as_deref()),
            (11, Some(-22), Some("/a/b")),
            "path from the cache"
        );
        assert_eq!(ev[0].controllers_after, None);
        assert_eq!((ev[1].tid, ev[1].result), (10, Some(2)));
        assert_eq!(ev[1].controllers_before, Some(vec!["cpuset".to_string()]));
        assert_eq!(ev[1].controllers_after, Some(vec!["cpuset".to_string(), "cpu".to_string()]));
        assert_eq!(ev[1].value.as_deref(), Some("5\n"));
        assert_eq!((ev[0].seq, ev[1].seq), (1, 2));
    }

    #[test]
    fn a_result_that_never_comes_leaves_the_event_without_one() {
        let (mut p, mut rx) = pipeline();
        p.handle(&enter(10, 100, 55, &["a"], "cgroup.max.depth"));
        // The same thread writes again: the first write's result record was lost.
        p.handle(&enter(10, 200, 55, &[], "cgroup.max.depth"));
        let ev = events(&mut p, &mut rx);
        assert_eq!(ev.len(), 1);
        assert_eq!((ev[0].result, ev[0].cgroup.as_deref()), (None, Some("/a")));
        // An exit with no write (its record was lost, and counted) is ignored.
        p.handle(&exit(99, 201, 2));
        assert!(events(&mut p, &mut rx).is_empty());
        // Boot time 200 ns is long past: the timeout emits it without a result.
        p.expire_writes(false);
        let ev = events(&mut p, &mut rx);
        assert_eq!(ev.len(), 1);
        assert_eq!((ev[0].result, ev[0].controllers_after.as_ref()), (None, None));
        assert_eq!(p.writes.len(), 0);
    }

    #[test]
    fn removed_cgroup_paths_are_forgotten_after_a_grace_tick() {
        let (mut p, mut rx) = pipeline();
        p.handle(&enter(10, 100, 55, &["a"], "cgroup.max.depth"));
        p.handle(&exit(10, 101, 2));
        let mut d: common::CgroupDir = unsafe { std::mem::zeroed() };
        d.header = header(kind::CGROUP_RMDIR, size_of::<common::CgroupDir>(), 1, 102);
        d.cgroup_id = 55;
        d.path[..2].copy_from_slice(b"/a");
        p.handle(&bytes_of(&d, size_of::<common::CgroupDir>()));
        p.builder.expire_removed();
        // A write that raced the rmdir still finds the path...
        p.handle(&enter(10, 103, 55, &[], "cgroup.max.depth"));
        p.handle(&exit(10, 104, -19));
        assert_eq!(events(&mut p, &mut rx).last().unwrap().cgroup.as_deref(), Some("/a"));
        // ...one after the next tick does not: it is counted, and a v2 id is still
        // found by the id -> path map (learned from the rmdir here).
        p.builder.expire_removed();
        p.handle(&enter(10, 105, 55, &[], "cgroup.max.depth"));
        p.handle(&exit(10, 106, -19));
        assert_eq!(events(&mut p, &mut rx).last().unwrap().cgroup.as_deref(), Some("/a"));
        assert_eq!(p.builder.path_misses, 1);
        p.handle(&enter(10, 107, 56, &[], "cgroup.max.depth"));
        p.handle(&exit(10, 108, -19));
        assert_eq!(events(&mut p, &mut rx).last().unwrap().cgroup.as_deref(), Some("?"));
        assert_eq!(p.builder.path_misses, 2);
    }
}
