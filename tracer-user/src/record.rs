//! `tracer record -o FILE`: schema-v1 JSON lines to a file (or stdout with `-`), for the
//! postmortem.
//!
//! Guarantees, in order of importance:
//! - **Whole lines only.** Each line is built in memory and reaches the file through one
//!   buffer; when a write fails (disk full, I/O error) the file is cut back to its last
//!   complete line, so everything captured before the failure stays readable by
//!   `tracer replay`. (A pipe on stdout cannot be cut back: the error says so.)
//! - **Nothing lost on SIGINT/SIGTERM or `--duration`.** The source is asked to stop, its
//!   buffered records are drained and written, then the final stats line; then the file
//!   is flushed and fsync'ed. A second signal stops the draining early, still closing
//!   the file cleanly.
//! - **Durable soon.** The buffer is flushed every [`WriterOptions::flush_lines`] lines,
//!   every [`WriterOptions::flush_interval`] (200 ms), and on every finding.
//! - **Bounded disk use** with `--rotate-size`: `FILE` is the newest part, `FILE.1` the
//!   one before, ... up to `--max-files` parts; the oldest is deleted. Every part starts
//!   with the header line, so each one can be replayed on its own.
//!
//! The file is created with mode 0600 (events name processes, paths and values from the
//! whole node), is opened with `O_NOFOLLOW`, and an existing file at the path is
//! truncated, not appended to.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use thiserror::Error;

use crate::filter::{Filter, FilterArgs};
use crate::schema::{HeaderLine, Line};

/// Where `record` gets its lines: the live pipeline (`live::Session`), or a fake in tests.
pub trait LineSource {
    /// The header line: first line of the recording and of every rotated part.
    fn header(&self) -> &HeaderLine;
    /// Next event, finding or stats line; `None` once [`stop`](LineSource::stop) has
    /// finished draining. Must be cancel-safe (like `mpsc::Receiver::recv`): it is polled
    /// in a `select!` with signals and timers, and a cancelled call must not lose a line.
    #[allow(async_fn_in_trait)]
    async fn next(&mut self) -> Option<Line>;
    /// Begin shutdown: stop reading new records, drain what is buffered, then a final
    /// stats line, then `None`.
    fn stop(&mut self);
}

/// Arguments of `tracer record`.
#[derive(clap::Args, Clone, Debug)]
pub struct RecordArgs {
    /// File to write (`-` for stdout). An existing file is truncated.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: PathBuf,

    /// Stop after this long (e.g. `90s`, `10m`, `1h30m`), draining what is buffered.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Start a new part when the file would exceed this size (e.g. `100M`, `1G`; K/M/G
    /// are powers of 1024). Parts: FILE (newest), FILE.1, FILE.2, ...
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub rotate_size: Option<u64>,

    /// With --rotate-size: keep at most this many parts, FILE included; the oldest is
    /// deleted.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_files: u32,

    #[command(flatten)]
    pub filter: FilterArgs,
    // The live pipeline's options (hooks, ring buffer size, ...) are flattened here by
    // main.rs / live.rs: `#[command(flatten)] pub live: live::LiveArgs`.
}

/// How the writer batches and rotates.
#[derive(Clone, Debug)]
pub struct WriterOptions {
    /// Start a new part when the current one would exceed this many bytes.
    pub rotate_size: Option<u64>,
    /// Parts kept, the current one included (at least 1).
    pub max_files: u32,
    /// Flush after this many buffered lines.
    pub flush_lines: usize,
    /// Flush when the oldest buffered line is this old (checked on each write and by
    /// [`RecordWriter::flush_if_due`]).
    pub flush_interval: Duration,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            rotate_size: None,
            max_files: 10,
            flush_lines: 256,
            flush_interval: Duration::from_millis(200),
        }
    }
}

/// Why recording failed. Every message names the file.
#[derive(Debug, Error)]
pub enum RecordError {
    /// The file could not be created or opened.
    #[error("cannot create recording {path}: {source}")]
    Create { path: String, source: io::Error },
    /// A write failed (disk full, I/O error, closed pipe). `kept_lines` complete lines are
    /// in the current part; the part was cut back to its last complete line when
    /// `cut_back` is true.
    #[error(
        "writing recording {path} failed: {source}. The {kept_lines} lines written to it before the failure are complete and readable with `tracer replay`{}{}",
        if *.cut_back { " (the file was cut back to its last complete line)" } else { "" },
        if .dropped_lines > &0 { format!("; {} buffered lines were not written", .dropped_lines) } else { String::new() }
    )]
    Write {
        path: String,
        source: io::Error,
        kept_lines: u64,
        dropped_lines: u64,
        cut_back: bool,
    },
    /// A write failed and cutting the file back failed too: it may end with a partial
    /// line, which `tracer replay` reports and skips.
    #[error(
        "writing recording {path} failed: {source}, and cutting it back to its last complete line failed: {truncate_error}. The {kept_lines} lines before the failure are readable with `tracer replay`; the last line may be partial and will be reported as such"
    )]
    WriteNotCut {
        path: String,
        source: io::Error,
        truncate_error: io::Error,
        kept_lines: u64,
    },
    /// Starting a new part failed.
    #[error("rotating recording {path} failed: {source}. The parts written so far are complete and readable")]
    Rotate { path: String, source: io::Error },
    /// fsync at close failed: the data may not be on disk.
    #[error("syncing recording {path} to disk failed: {source}")]
    Sync { path: String, source: io::Error },
    /// The writer failed earlier and was not written to since.
    #[error("recording {path} stopped after an earlier write error")]
    Failed { path: String },
}

/// What a recording holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordSummary {
    /// Where it went (`-` for stdout).
    pub path: String,
    /// Lines written, the header of each part included.
    pub lines: u64,
    pub events: u64,
    pub findings: u64,
    pub stats: u64,
    /// Parts started (1 without rotation).
    pub parts: u64,
    /// Bytes written over all parts.
    pub bytes: u64,
}

/// Where bytes go: a file (which can be cut back after a failed write) or a stream.
pub trait Sink: Send {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize>;
    /// Cut the output back to `len` bytes. `Ok(false)` when the sink cannot (a pipe).
    fn truncate(&mut self, len: u64) -> io::Result<bool>;
    fn sync(&mut self) -> io::Result<()>;
}

impl Sink for File {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Write::write(self, buf)
    }
    fn truncate(&mut self, len: u64) -> io::Result<bool> {
        self.set_len(len)?;
        self.seek(SeekFrom::Start(len))?;
        Ok(true)
    }
    fn sync(&mut self) -> io::Result<()> {
        self.sync_all()
    }
}

/// stdout: written directly (no `Stdout` line buffering), never cut back.
struct StdoutSink(io::Stdout);

impl Sink for StdoutSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut lock = self.0.lock();
        let n = lock.write(buf)?;
        lock.flush()?;
        Ok(n)
    }
    fn truncate(&mut self, _len: u64) -> io::Result<bool> {
        Ok(false)
    }
    fn sync(&mut self) -> io::Result<()> {
        self.0.lock().flush()
    }
}

/// The writer behind `tracer record`.
pub struct RecordWriter {
    /// `None` for stdout or a test sink: no rotation.
    path: Option<PathBuf>,
    display: String,
    opts: WriterOptions,
    header: Vec<u8>,
    sink: Box<dyn Sink>,
    buf: Vec<u8>,
    /// Lines in `buf`.
    buf_lines: u64,
    /// When the oldest line in `buf` was added.
    buf_since: Option<Instant>,
    /// Bytes of the current part on the sink; always a whole number of lines.
    part_len: u64,
    /// Complete lines of the current part on the sink.
    part_lines: u64,
    line: Vec<u8>,
    failed: bool,
    summary: RecordSummary,
}

impl RecordWriter {
    /// Create `path` (`-`: stdout) and write the header line.
    pub fn create(
        path: &Path,
        header: &HeaderLine,
        opts: WriterOptions,
    ) -> Result<Self, RecordError> {
        if path == Path::new("-") {
            let mut opts = opts;
            opts.rotate_size = None;
            return Self::with_sink("-".into(), Box::new(StdoutSink(io::stdout())), header, opts);
        }
        let display = path.display().to_string();
        let file = open_part(path).map_err(|source| RecordError::Create {
            path: display.clone(),
            source,
        })?;
        let mut w = Self::with_sink(display, Box::new(file), header, opts)?;
        w.path = Some(path.to_path_buf());
        Ok(w)
    }

    /// Write to any sink (no rotation). `name` is used in messages.
    pub fn with_sink(
        name: String,
        sink: Box<dyn Sink>,
        header: &HeaderLine,
        opts: WriterOptions,
    ) -> Result<Self, RecordError> {
        let mut header_json =
            serde_json::to_vec(&Line::Header(header.clone())).expect("header serializes");
        header_json.push(b'\n');
        let mut w = RecordWriter {
            path: None,
            summary: RecordSummary {
                path: name.clone(),
                parts: 1,
                ..Default::default()
            },
            display: name,
            opts,
            header: header_json,
            sink,
            buf: Vec::with_capacity(64 * 1024),
            buf_lines: 0,
            buf_since: None,
            part_len: 0,
            part_lines: 0,
            line: Vec::with_capacity(1024),
            failed: false,
        };
        w.write_header()?;
        Ok(w)
    }

    fn write_header(&mut self) -> Result<(), RecordError> {
        let h = std::mem::take(&mut self.header);
        self.buf.extend_from_slice(&h);
        self.header = h;
        self.buf_lines += 1;
        self.summary.lines += 1;
        self.flush()
    }

    /// Append one line (events, findings, stats; a header line from the source is
    /// ignored: each part gets the writer's own). Flushes on findings and when due.
    pub fn write_line(&mut self, line: &Line) -> Result<(), RecordError> {
        if self.failed {
            return Err(RecordError::Failed {
                path: self.display.clone(),
            });
        }
        match line {
            Line::Header(_) => return Ok(()),
            Line::Event(_) => self.summary.events += 1,
            Line::Finding(_) => self.summary.findings += 1,
            Line::Stats(_) => self.summary.stats += 1,
        }
        self.line.clear();
        serde_json::to_writer(&mut self.line, line).expect("schema types serialize");
        self.line.push(b'\n');
        if let (Some(limit), Some(_)) = (self.opts.rotate_size, &self.path) {
            let size = self.part_len + self.buf.len() as u64 + self.line.len() as u64;
            // A part always holds at least one line after its header, however long.
            if size > limit && self.part_lines + self.buf_lines > 1 {
                self.rotate()?;
            }
        }
        self.buf.extend_from_slice(&self.line);
        self.buf_lines += 1;
        self.summary.lines += 1;
        self.buf_since.get_or_insert_with(Instant::now);
        if matches!(line, Line::Finding(_)) || self.buf_lines as usize >= self.opts.flush_lines {
            self.flush()
        } else {
            self.flush_if_due()
        }
    }

    /// Flush when the oldest buffered line is older than the flush interval.
    pub fn flush_if_due(&mut self) -> Result<(), RecordError> {
        match self.buf_since {
            Some(t) if t.elapsed() >= self.opts.flush_interval => self.flush(),
            _ => Ok(()),
        }
    }

    /// Write the buffer out. On failure the part is cut back to its last complete line
    /// and the writer refuses further lines.
    pub fn flush(&mut self) -> Result<(), RecordError> {
        if self.failed {
            return Err(RecordError::Failed {
                path: self.display.clone(),
            });
        }
        if self.buf.is_empty() {
            return Ok(());
        }
        let mut written = 0;
        let mut error = None;
        while written < self.buf.len() {
            match self.sink.write(&self.buf[written..]) {
                Ok(0) => {
                    error = Some(io::Error::from(io::ErrorKind::WriteZero));
                    break;
                }
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        let Some(source) = error else {
            self.part_len += self.buf.len() as u64;
            self.part_lines += self.buf_lines;
            self.summary.bytes += self.buf.len() as u64;
            self.buf.clear();
            self.buf_lines = 0;
            self.buf_since = None;
            return Ok(());
        };
        self.failed = true;
        let whole = self.buf[..written]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let kept_in_buf = self.buf[..whole].iter().filter(|&&b| b == b'\n').count() as u64;
        let kept_lines = self.part_lines + kept_in_buf;
        let dropped_lines = self.buf_lines - kept_in_buf;
        self.summary.bytes += whole as u64;
        self.summary.lines -= dropped_lines;
        let mut cut_back = false;
        if whole < written {
            match self.sink.truncate(self.part_len + whole as u64) {
                Ok(done) => cut_back = done,
                Err(truncate_error) => {
                    return Err(RecordError::WriteNotCut {
                        path: self.display.clone(),
                        source,
                        truncate_error,
                        kept_lines,
                    });
                }
            }
        }
        self.buf.clear();
        Err(RecordError::Write {
            path: self.display.clone(),
            source,
            kept_lines,
            dropped_lines,
            cut_back,
        })
    }

    /// Close the current part and start a new one: FILE -> FILE.1 -> FILE.2 ..., the
    /// oldest beyond `max_files` deleted.
    fn rotate(&mut self) -> Result<(), RecordError> {
        self.flush()?;
        let path = self.path.clone().expect("rotation needs a file");
        let rot_err = |source| RecordError::Rotate {
            path: path.display().to_string(),
            source,
        };
        self.sink.sync().map_err(rot_err)?;
        let max = self.opts.max_files.max(1);
        let part = |i: u32| -> PathBuf {
            let mut s = path.clone().into_os_string();
            s.push(format!(".{i}"));
            PathBuf::from(s)
        };
        if max == 1 {
            remove_if_exists(&path).map_err(rot_err)?;
        } else {
            // rename() replaces the target, which drops the oldest part.
            for i in (1..max - 1).rev() {
                rename_if_exists(&part(i), &part(i + 1)).map_err(rot_err)?;
            }
            rename_if_exists(&path, &part(1)).map_err(rot_err)?;
        }
        let file = open_part(&path).map_err(rot_err)?;
        self.sink = Box::new(file);
        self.part_len = 0;
        self.part_lines = 0;
        self.summary.parts += 1;
        self.write_header()
    }

    /// Flush, fsync and close.
    pub fn close(mut self) -> Result<RecordSummary, RecordError> {
        self.flush()?;
        self.sink.sync().map_err(|source| RecordError::Sync {
            path: self.display.clone(),
            source,
        })?;
        Ok(self.summary)
    }

    pub fn summary(&self) -> &RecordSummary {
        &self.summary
    }
}

fn open_part(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    // `mode` only applies to a new file; an existing one keeps its mode otherwise.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(file)
}

fn rename_if_exists(from: &Path, to: &Path) -> io::Result<()> {
    match std::fs::rename(from, to) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

fn remove_if_exists(p: &Path) -> io::Result<()> {
    match std::fs::remove_file(p) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

/// `90s`, `10m`, `1h30m`, `500ms`, `2d`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!(
                "invalid duration {s:?}: expected a number at {rest:?} (examples: 30s, 10m, 1h30m)"
            ));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("invalid duration {s:?}: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let d = match unit {
            "ms" => Duration::from_millis(n),
            "s" | "sec" | "secs" => Duration::from_secs(n),
            "m" | "min" | "mins" => Duration::from_secs(n.saturating_mul(60)),
            "h" | "hr" | "hours" => Duration::from_secs(n.saturating_mul(3600)),
            "d" | "days" => Duration::from_secs(n.saturating_mul(86400)),
            _ => {
                return Err(format!(
                    "invalid duration {s:?}: unknown unit {unit:?} (use ms, s, m, h, d)"
                ))
            }
        };
        total = total.saturating_add(d);
    }
    if total.is_zero() {
        return Err(format!("invalid duration {s:?}: must be more than zero"));
    }
    Ok(total)
}

/// `100M`, `1G`, `512K`, `4096`; K/M/G/T are powers of 1024 (`MB`, `MiB` accepted).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    if digits == 0 {
        return Err(format!("invalid size {s:?} (examples: 100M, 1G)"));
    }
    let n: u64 = t[..digits]
        .parse()
        .map_err(|_| format!("invalid size {s:?}: too large"))?;
    let shift = match t[digits..].trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        u => {
            return Err(format!(
                "invalid size {s:?}: unknown unit {u:?} (use K, M, G)"
            ))
        }
    };
    let v = n
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("invalid size {s:?}: too large"))?;
    if v < 4096 {
        return Err(format!("rotate size {s:?} is too small (at least 4K)"));
    }
    Ok(v)
}

/// Why the recording loop should stop reading new records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    Signal,
    Duration,
}

/// `tracer record`: write everything `source` yields through the filter until it ends,
/// stopping it on SIGINT/SIGTERM or after `--duration`, then fsync.
///
/// `signals` must be installed before the capture starts ([`Signals::install`]): a
/// SIGTERM that arrives while the hooks attach then ends the recording cleanly instead
/// of killing the process.
pub async fn run_record<S: LineSource>(
    args: RecordArgs,
    source: S,
    signals: Signals,
) -> anyhow::Result<RecordSummary> {
    let opts = WriterOptions {
        rotate_size: args.rotate_size,
        max_files: args.max_files,
        ..Default::default()
    };
    let writer = RecordWriter::create(&args.output, source.header(), opts)?;
    let summary = record_loop(
        writer,
        &Filter::new(&args.filter),
        source,
        args.duration,
        signals,
    )
    .await?;
    Ok(summary)
}

/// A stop trigger that can fire more than once (a second signal ends the draining).
pub trait StopTrigger {
    #[allow(async_fn_in_trait)]
    async fn fired(&mut self);
}

/// SIGINT or SIGTERM.
pub struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the SIGINT and SIGTERM handlers (inside a tokio runtime).
    pub fn install() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
        })
    }
}

impl StopTrigger for Signals {
    async fn fired(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
    }
}

/// A trigger fed by a channel (tests, or callers with their own signal handling).
impl StopTrigger for tokio::sync::mpsc::Receiver<()> {
    async fn fired(&mut self) {
        if self.recv().await.is_none() {
            std::future::pending::<()>().await
        }
    }
}

/// The recording loop, with the stop trigger passed in (signals in `run_record`).
pub async fn record_loop<S: LineSource, T: StopTrigger>(
    mut writer: RecordWriter,
    filter: &Filter,
    mut source: S,
    duration: Option<Duration>,
    mut stop: T,
) -> anyhow::Result<RecordSummary> {
    let deadline = tokio::time::sleep(duration.unwrap_or(Duration::MAX / 4));
    tokio::pin!(deadline);
    let mut tick = tokio::time::interval(writer.opts.flush_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stopping: Option<StopReason> = None;
    loop {
        tokio::select! {
            line = source.next() => {
                let Some(line) = line else { break };
                if filter.matches(&line) {
                    if let Err(e) = writer.write_line(&line) {
                        source.stop();
                        return Err(e.into());
                    }
                }
            }
            _ = stop.fired() => {
                if stopping.is_some() {
                    tracing::warn!("second stop signal: not waiting for the rest of the buffered events");
                    break;
                }
                stopping = Some(StopReason::Signal);
                source.stop();
            }
            _ = &mut deadline, if duration.is_some() && stopping.is_none() => {
                stopping = Some(StopReason::Duration);
                source.stop();
            }
            _ = tick.tick() => writer.flush_if_due()?,
        }
    }
    Ok(writer.close()?)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::schema::{Event, Finding, HookStatus, Kind, Severity, Stats, Timestamp};
    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A directory under the system temp dir, removed on drop.
    pub(crate) struct TempDir(pub PathBuf);
    impl TempDir {
        pub(crate) fn new(tag: &str) -> Self {
            static N: AtomicU32 = AtomicU32::new(0);
            let p = std::env::temp_dir().join(format!(
                "tracer-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    pub(crate) fn header(host: &str) -> HeaderLine {
        HeaderLine {
            schema: 1,
            tracer_version: "0.1.0".into(),
            hostname: host.into(),
            kernel: "6.18.0".into(),
            started_at: Timestamp(1_700_000_000_000_000_000),
            hooks: vec![HookStatus {
                name: "cgroup_write".into(),
                state: "attached".into(),
                error: None,
            }],
        }
    }

    pub(crate) fn event(seq: u64) -> Line {
        Line::Event(Box::new(Event {
            seq,
            time: Timestamp(1_700_000_000_000_000_000 + seq as i64 * 1_000_000),
            kind: Kind::CgroupWrite,
            pid: 1,
            tid: 1,
            comm: "systemd".into(),
            actor: "systemd".into(),
            cgroup: Some("/kubepods.slice/kubepods-burstable.slice".into()),
            hierarchy: Some("v2".into()),
            file: Some("cgroup.subtree_control".into()),
            value: Some(format!("-cpuset {seq} \u{1b}\"\n")),
            result: Some(8),
            ..Default::default()
        }))
    }

    pub(crate) fn finding(seq: u64) -> Line {
        Line::Finding(Finding {
            id: "kubepods-controller-removed".into(),
            severity: Severity::Critical,
            time: Timestamp(1_700_000_000_000_000_000 + seq as i64 * 1_000_000),
            actor: "systemd".into(),
            summary: "cpuset removed".into(),
            evidence: vec![seq],
            remediation: "SystemdCgroup = true".into(),
            controller: Some("cpuset".into()),
            cgroup: Some("/kubepods.slice".into()),
            dev: None,
            value: None,
            details: Default::default(),
            host: None,
        })
    }

    /// Yields `live` lines, then waits forever until stopped; after stop yields
    /// `buffered`, a final stats line, then None.
    pub(crate) struct FakeSource {
        pub header: HeaderLine,
        pub live: VecDeque<Line>,
        pub buffered: VecDeque<Line>,
        pub stopped: bool,
        pub final_stats_sent: bool,
    }

    impl FakeSource {
        pub(crate) fn new(live: Vec<Line>, buffered: Vec<Line>) -> Self {
            FakeSource {
                header: header("node-a"),
                live: live.into(),
                buffered: buffered.into(),
                stopped: false,
                final_stats_sent: false,
            }
        }
    }

    impl LineSource for FakeSource {
        fn header(&self) -> &HeaderLine {
            &self.header
        }
        async fn next(&mut self) -> Option<Line> {
            if !self.stopped {
                if let Some(l) = self.live.pop_front() {
                    return Some(l);
                }
                return std::future::pending().await;
            }
            if let Some(l) = self.live.pop_front().or_else(|| self.buffered.pop_front()) {
                return Some(l);
            }
            if !self.final_stats_sent {
                self.final_stats_sent = true;
                return Some(Line::Stats(Stats {
                    time: Timestamp(1_800_000_000_000_000_000),
                    events: 7,
                    lost: 0,
                    ..Default::default()
                }));
            }
            None
        }
        fn stop(&mut self) {
            self.stopped = true;
        }
    }

    fn read_lines(p: &Path) -> Vec<Line> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert!(parse_duration("10x").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("0s").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("100M"), Ok(100 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("8192"), Ok(8192));
        assert!(parse_size("12").unwrap_err().contains("too small"));
        assert!(parse_size("1Q").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("99999999999999999G").is_err());
    }

    #[test]
    fn file_is_0600_and_starts_with_header() {
        let dir = TempDir::new("rec-mode");
        let p = dir.0.join("rec.jsonl");
        std::fs::write(&p, "old contents that must go\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut w = RecordWriter::create(&p, &header("n"), WriterOptions::default()).unwrap();
        w.write_line(&event(1)).unwrap();
        let s = w.close().unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(read_lines(&p), vec![Line::Header(header("n")), event(1)]);
        assert_eq!((s.lines, s.events, s.parts), (2, 1, 1));
    }

    #[test]
    fn unwritable_path_names_it() {
        let err = RecordWriter::create(
            Path::new("/nonexistent-dir/x/rec.jsonl"),
            &header("n"),
            WriterOptions::default(),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("/nonexistent-dir/x/rec.jsonl"), "{err}");
    }

    #[test]
    fn symlink_is_not_followed() {
        let dir = TempDir::new("rec-link");
        let target = dir.0.join("target");
        std::fs::write(&target, "keep\n").unwrap();
        let link = dir.0.join("rec.jsonl");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(RecordWriter::create(&link, &header("n"), WriterOptions::default()).is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep\n");
    }

    #[test]
    fn flushes_on_findings_and_by_count() {
        let dir = TempDir::new("rec-flush");
        let p = dir.0.join("rec.jsonl");
        let opts = WriterOptions {
            flush_lines: 3,
            flush_interval: Duration::from_secs(3600),
            ..Default::default()
        };
        let mut w = RecordWriter::create(&p, &header("n"), opts).unwrap();
        let count = || std::fs::read_to_string(&p).unwrap().lines().count();
        assert_eq!(count(), 1, "header is flushed at once");
        w.write_line(&event(1)).unwrap();
        assert_eq!(count(), 1);
        w.write_line(&finding(1)).unwrap();
        assert_eq!(count(), 3, "a finding flushes");
        w.write_line(&event(2)).unwrap();
        w.write_line(&event(3)).unwrap();
        assert_eq!(count(), 3);
        w.write_line(&event(4)).unwrap();
        assert_eq!(count(), 6, "flush after 3 lines");
        w.close().unwrap();
    }

    #[test]
    fn rotation_keeps_max_files_each_with_header() {
        let dir = TempDir::new("rec-rotate");
        let p = dir.0.join("rec.jsonl");
        let one = serde_json::to_vec(&event(1000)).unwrap().len() as u64 + 1;
        let hdr = serde_json::to_vec(&Line::Header(header("n")))
            .unwrap()
            .len() as u64
            + 1;
        // Room for the header and 3 events per part.
        let opts = WriterOptions {
            rotate_size: Some(hdr + 3 * one + 2),
            max_files: 3,
            flush_lines: 2,
            ..Default::default()
        };
        let mut w = RecordWriter::create(&p, &header("n"), opts).unwrap();
        for seq in 1000..1011 {
            w.write_line(&event(seq)).unwrap();
        }
        let s = w.close().unwrap();
        // 11 events: parts of 3, 3, 3, 2; only the newest 3 parts are kept.
        assert_eq!(s.parts, 4);
        let part = |name: &str| read_lines(&dir.0.join(name));
        let seqs = |lines: &[Line]| -> Vec<u64> {
            assert_eq!(
                lines[0],
                Line::Header(header("n")),
                "each part starts with the header"
            );
            lines[1..]
                .iter()
                .map(|l| match l {
                    Line::Event(e) => e.seq,
                    _ => panic!(),
                })
                .collect()
        };
        assert_eq!(seqs(&part("rec.jsonl")), vec![1009, 1010]);
        assert_eq!(seqs(&part("rec.jsonl.1")), vec![1006, 1007, 1008]);
        assert_eq!(seqs(&part("rec.jsonl.2")), vec![1003, 1004, 1005]);
        assert!(!dir.0.join("rec.jsonl.3").exists());
        for name in ["rec.jsonl", "rec.jsonl.1", "rec.jsonl.2"] {
            assert!(std::fs::metadata(dir.0.join(name)).unwrap().len() <= hdr + 3 * one + 2);
        }
    }

    #[test]
    fn rotation_with_one_file_restarts_it() {
        let dir = TempDir::new("rec-rotate1");
        let p = dir.0.join("r");
        let opts = WriterOptions {
            rotate_size: Some(1),
            max_files: 1,
            flush_lines: 1,
            ..Default::default()
        };
        let mut w = RecordWriter::create(&p, &header("n"), opts).unwrap();
        for seq in 1..=3 {
            w.write_line(&event(seq)).unwrap();
        }
        w.close().unwrap();
        assert_eq!(read_lines(&p), vec![Line::Header(header("n")), event(3)]);
        assert!(!dir.0.join("r.1").exists());
    }

    /// Accepts `room` bytes, then fails like a full disk; truncation is observable.
    struct FullDisk {
        data: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
        room: usize,
        can_truncate: bool,
    }
    impl Sink for FullDisk {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let mut d = self.data.lock().unwrap();
            let left = self.room.saturating_sub(d.len());
            if left == 0 {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            // Short writes, like a filesystem that fills up mid-buffer.
            let n = buf.len().min(left).min(100);
            d.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn truncate(&mut self, len: u64) -> io::Result<bool> {
            if !self.can_truncate {
                return Ok(false);
            }
            self.data.lock().unwrap().truncate(len as usize);
            Ok(true)
        }
        fn sync(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn failed_write_cuts_back_to_last_complete_line() {
        let hdr = serde_json::to_vec(&Line::Header(header("n")))
            .unwrap()
            .len()
            + 1;
        let one = serde_json::to_vec(&event(1)).unwrap().len() + 1;
        for (room, kept) in [
            (hdr + 2 * one + 37, 3),
            (hdr + 2 * one, 3),
            (hdr + 5, 1),
            (hdr - 3, 0),
        ] {
            let data = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let sink = FullDisk {
                data: data.clone(),
                room,
                can_truncate: true,
            };
            let opts = WriterOptions {
                flush_lines: 2,
                ..Default::default()
            };
            let w = RecordWriter::with_sink(
                "/var/log/rec.jsonl".into(),
                Box::new(sink),
                &header("n"),
                opts,
            );
            let mut w = match w {
                Ok(w) => w,
                Err(e) => {
                    // Not even the header fit: nothing partial remains.
                    assert_eq!(kept, 0);
                    assert!(data.lock().unwrap().is_empty());
                    assert!(e.to_string().contains("/var/log/rec.jsonl"));
                    continue;
                }
            };
            let mut err = None;
            for seq in 1..=10 {
                if let Err(e) = w.write_line(&event(seq)) {
                    err = Some(e);
                    break;
                }
            }
            let err = err.expect("disk fills up");
            let msg = err.to_string();
            assert!(msg.contains("/var/log/rec.jsonl"), "{msg}");
            assert!(msg.contains("No space left on device"), "{msg}");
            assert!(msg.contains("complete and readable"), "{msg}");
            let data = data.lock().unwrap();
            assert!(data.ends_with(b"\n"));
            let lines: Vec<Line> = std::str::from_utf8(&data)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            let want = [Line::Header(header("n")), event(1), event(2)];
            assert_eq!(lines, want[..kept], "room {room}");
            assert!(msg.contains(&format!("The {kept} lines")), "{msg}");
            // Writer refuses further lines.
            assert!(matches!(
                w.write_line(&event(99)),
                Err(RecordError::Failed { .. })
            ));
        }
    }

    #[test]
    fn failed_write_on_a_pipe_says_it_could_not_cut() {
        let data = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let hdr = serde_json::to_vec(&Line::Header(header("n")))
            .unwrap()
            .len()
            + 1;
        let sink = FullDisk {
            data: data.clone(),
            room: hdr + 10,
            can_truncate: false,
        };
        let mut w = RecordWriter::with_sink(
            "-".into(),
            Box::new(sink),
            &header("n"),
            WriterOptions::default(),
        )
        .unwrap();
        let msg = w.write_line(&finding(1)).unwrap_err().to_string();
        assert!(!msg.contains("cut back"), "{msg}");
        match w.write_line(&event(1)) {
            Err(RecordError::Failed { .. }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn stop_drains_buffered_lines_and_final_stats() {
        let dir = TempDir::new("rec-loop");
        let p = dir.0.join("rec.jsonl");
        let live = vec![event(1), finding(1), event(2)];
        let buffered = vec![event(3), event(4)];
        let src = FakeSource::new(live, buffered);
        let w = RecordWriter::create(&p, src.header(), WriterOptions::default()).unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let filter = Filter::all();
        let (s, ()) = tokio::join!(record_loop(w, &filter, src, None, rx), async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            tx.send(()).await.unwrap();
        });
        let s = s.unwrap();
        let lines = read_lines(&p);
        assert_eq!(lines.len(), 7);
        assert_eq!(
            &lines[1..6],
            &[event(1), finding(1), event(2), event(3), event(4)]
        );
        assert!(matches!(lines[6], Line::Stats(_)));
        assert_eq!((s.events, s.findings, s.stats), (4, 1, 1));
    }

    #[tokio::test]
    async fn duration_stops_and_filter_applies() {
        let dir = TempDir::new("rec-dur");
        let p = dir.0.join("rec.jsonl");
        let mut other = event(2);
        if let Line::Event(e) = &mut other {
            e.actor = "kubelet".into();
        }
        let src = FakeSource::new(vec![event(1), other], vec![event(3)]);
        let w = RecordWriter::create(&p, src.header(), WriterOptions::default()).unwrap();
        let (_tx, rx) = tokio::sync::mpsc::channel::<()>(1);
        let filter = Filter::new(&FilterArgs {
            actors: vec!["systemd".into()],
            ..Default::default()
        });
        record_loop(w, &filter, src, Some(Duration::from_millis(30)), rx)
            .await
            .unwrap();
        let lines = read_lines(&p);
        assert_eq!(lines.len(), 4, "{lines:?}");
        assert_eq!(&lines[1..3], &[event(1), event(3)]);
    }
}
