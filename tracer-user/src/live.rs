//! The live pipeline: ring buffer -> decode -> process table -> events -> correlator,
//! delivered as schema-v1 lines to whoever consumes the session (`tail`, `record`).
//!
//! One tokio task owns the loaded programs and reads the ring buffer when the kernel
//! says it is readable; it never blocks on the consumer (lines go through an unbounded
//! channel), so a slow terminal costs memory, not kernel records.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use aya::maps::{MapData, PerCpuArray, RingBuf};
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, watch};
use tracer_common::{counter, kind};

use crate::correlator::Correlator;
use crate::decode::{self, Record};
use crate::events::EventBuilder;
use crate::loader::{self, LoadError, LoadOptions, Loaded};
use crate::process::ProcessTable;
use crate::schema::{HeaderLine, HookCounts, Line, Stats, Timestamp, SCHEMA_VERSION};

/// Options of a live session.
#[derive(Debug, Clone)]
pub struct LiveOptions {
    pub load: LoadOptions,
    /// How often a `stats` line is emitted (also whenever records were lost).
    pub stats_every: Duration,
    /// Where the process table is seeded from.
    pub proc_root: PathBuf,
}

impl Default for LiveOptions {
    fn default() -> Self {
        LiveOptions { load: LoadOptions::default(), stats_every: Duration::from_secs(10), proc_root: PathBuf::from("/proc") }
    }
}

/// A running capture.
pub struct Session {
    header: HeaderLine,
    rx: mpsc::UnboundedReceiver<Line>,
    stop: watch::Sender<bool>,
}

/// Counter slot names, in `tracer_common::counter` order.
fn slot_name(slot: u32) -> Option<&'static str> {
    Some(match slot {
        s if s == counter::of_kind(kind::CGROUP_WRITE) => "cgroup_write",
        s if s == counter::of_kind(kind::CGROUP_MKDIR) => "cgroup_mkdir",
        s if s == counter::of_kind(kind::CGROUP_RMDIR) => "cgroup_rmdir",
        s if s == counter::of_kind(kind::SYSCTL_WRITE) => "sysctl_write",
        s if s == counter::of_kind(kind::NETLINK) => "netlink",
        s if s == counter::of_kind(kind::SIGNAL) => "signal",
        s if s == counter::of_kind(kind::PROC_EXEC) => "proc_exec",
        s if s == counter::of_kind(kind::PROC_FORK) => "proc_fork",
        s if s == counter::of_kind(kind::PROC_EXIT) => "proc_exit",
        counter::PENDING_FULL => "cgroup_write_pending_full",
        _ => return None,
    })
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
        // After attaching, so that nothing opened in between is missed.
        match crate::openers::seed(&mut loaded.ebpf, &opts.proc_root) {
            Ok(n) => tracing::debug!("{n} processes already hold cgroupfs files"),
            Err(e) => tracing::warn!("cannot seed the cgroupfs openers: {e}; writes through fds opened before start may be missed"),
        }
        let header = HeaderLine {
            schema: SCHEMA_VERSION,
            tracer_version: env!("CARGO_PKG_VERSION").to_string(),
            hostname: hostname(),
            kernel: kernel_release(),
            started_at: Timestamp::now(),
            hooks: loaded.hooks.clone(),
        };
        let ring = loaded
            .ebpf
            .take_map("EVENTS")
            .ok_or_else(|| LoadError::Object("map EVENTS missing".into()))
            .and_then(|m| RingBuf::try_from(m).map_err(|e| LoadError::Object(e.to_string())))?;
        let seen = take_counter(&mut loaded, "SEEN")?;
        let lost = take_counter(&mut loaded, "LOST")?;
        // SAFETY: the ring buffer owns its fd and keeps it open as long as the AsyncFd
        // holds it; nothing else closes it.
        let ring = unsafe { AsyncFd::register(ring) }.map_err(|e| LoadError::Object(format!("ring buffer fd: {e}")))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let (stop, stop_rx) = watch::channel(false);
        let mut table = ProcessTable::new();
        table.seed_from_proc(&opts.proc_root);
        let builder = EventBuilder::new(loaded.controllers.clone(), loaded.cgroup2_root.clone());
        let pipeline = Pipeline {
            builder,
            table,
            correlator: Correlator::new(),
            seq: 0,
            decode_errors: 0,
            tx,
        };
        let stats_every = opts.stats_every;
        tokio::spawn(run(loaded, ring, seen, lost, pipeline, stop_rx, stats_every));
        Ok(Session { header, rx, stop })
    }

    pub fn header(&self) -> &HeaderLine {
        &self.header
    }

    /// The next line; `None` once the session has stopped and everything was delivered.
    pub async fn next(&mut self) -> Option<Line> {
        self.rx.recv().await
    }

    /// A line if one is ready now, without waiting (to batch output between flushes).
    pub fn try_next(&mut self) -> Option<Line> {
        self.rx.try_recv().ok()
    }

    /// Begins shutdown: what the kernel already produced is read and delivered, then a
    /// final `stats` line, then the programs are detached and `next` returns `None`.
    pub fn stop(&mut self) {
        let _ = self.stop.send(true);
    }
}

fn take_counter(loaded: &mut Loaded, name: &str) -> Result<PerCpuArray<MapData, u64>, LoadError> {
    loaded
        .ebpf
        .take_map(name)
        .ok_or_else(|| LoadError::Object(format!("map {name} missing")))
        .and_then(|m| PerCpuArray::try_from(m).map_err(|e| LoadError::Object(e.to_string())))
}

/// Record -> lines, with all the state that takes.
struct Pipeline {
    builder: EventBuilder,
    table: ProcessTable,
    correlator: Correlator,
    seq: u64,
    decode_errors: u64,
    tx: mpsc::UnboundedSender<Line>,
}

impl Pipeline {
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
            Record::Exec { task, filename, .. } => self.table.exec(task, filename),
            Record::Fork { task, child_pid, child_start_ns } => self.table.fork(task, *child_pid, *child_start_ns),
            Record::Exit { task, .. } => self.table.exit(task),
            _ => {
                for mut ev in self.builder.build(&rec) {
                    self.table.attribute(rec.task(), &mut ev);
                    self.seq += 1;
                    ev.seq = self.seq;
                    let findings = self.correlator.observe(&ev);
                    let _ = self.tx.send(Line::Event(Box::new(ev)));
                    for f in findings {
                        let _ = self.tx.send(Line::Finding(f));
                    }
                }
            }
        }
    }

    fn tick(&mut self) {
        for f in self.correlator.tick(Timestamp::now()) {
            let _ = self.tx.send(Line::Finding(f));
        }
    }
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
    Stats {
        time: Timestamp::now(),
        events: p.seq,
        lost: lost.values().sum(),
        decode_errors: p.decode_errors + p.builder.netlink_errors,
        hooks,
        processes: p.table.len() as u64,
        host: None,
    }
}

async fn run(
    loaded: Loaded,
    mut ring: AsyncFd<RingBuf<MapData>>,
    seen: PerCpuArray<MapData, u64>,
    lost: PerCpuArray<MapData, u64>,
    mut p: Pipeline,
    mut stop: watch::Receiver<bool>,
    stats_every: Duration,
) {
    // Four times a second: the correlator's windows close on ticks, and a held rp_filter
    // write (correlator/rp_filter.rs, REVERT_WINDOW_NS) must come out within a second.
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_stats = tokio::time::Instant::now();
    let mut last_lost = 0u64;
    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                match guard {
                    Ok(mut g) => {
                        let rb = g.get_inner_mut();
                        while let Some(item) = rb.next() {
                            p.handle(&item);
                        }
                        g.clear_ready();
                    }
                    Err(e) => {
                        tracing::error!("ring buffer poll failed: {e}");
                        break;
                    }
                }
            }
            _ = tick.tick() => {
                p.tick();
                let s = stats(&p, &seen, &lost);
                if s.lost != last_lost || last_stats.elapsed() >= stats_every {
                    last_lost = s.lost;
                    last_stats = tokio::time::Instant::now();
                    let _ = p.tx.send(Line::Stats(s));
                }
            }
            _ = stop.changed() => break,
        }
    }
    // Detach first (dropping `loaded` detaches every program), so nothing arrives after
    // the drain; then read what the kernel already handed over and say how it went.
    drop(loaded);
    {
        let rb = ring.get_mut();
        while let Some(item) = rb.next() {
            p.handle(&item);
        }
    }
    for f in p.correlator.finish() {
        let _ = p.tx.send(Line::Finding(f));
    }
    let s = stats(&p, &seen, &lost);
    let _ = p.tx.send(Line::Stats(s));
}

impl crate::record::LineSource for Session {
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
