//! The recording writer: schema-v1 JSON lines to a file (or stdout with `-`), for the
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

use thiserror::Error;

use crate::stream::schema::{HeaderLine, Line};

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
    Write { path: String, source: io::Error, kept_lines: u64, dropped_lines: u64, cut_back: bool },
    /// A write failed and cutting the file back failed too: it may end with a partial
    /// line, which `tracer replay` reports and skips.
    #[error(
        "writing recording {path} failed: {source}, and cutting it back to its last complete line failed: {truncate_error}. The {kept_lines} lines before the failure are readable with `tracer replay`; the last line may be partial and will be reported as such"
    )]
    WriteNotCut { path: String, source: io::Error, truncate_error: io::Error, kept_lines: u64 },
    /// Starting a new part failed.
    #[error(
        "rotating recording {path} failed: {source}. The parts written so far are complete and readable"
    )]
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
    pub(crate) opts: WriterOptions,
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
    pub fn create(path: &Path, header: &HeaderLine, opts: WriterOptions) -> Result<Self, RecordError> {
        if path == Path::new("-") {
            let mut opts = opts;
            opts.rotate_size = None;
            return Self::with_sink("-".into(), Box::new(StdoutSink(io::stdout())), header, opts);
        }
        let display = path.display().to_string();
        let file = open_part(path).map_err(|source| RecordError::Create { path: display.clone(), source })?;
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
        let mut header_json = serde_json::to_vec(&Line::Header(header.clone())).expect("header serializes");
        header_json.push(b'\n');
        let mut w = RecordWriter {
            path: None,
            summary: RecordSummary { path: name.clone(), parts: 1, ..Default::default() },
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
            return Err(RecordError::Failed { path: self.display.clone() });
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
            return Err(RecordError::Failed { path: self.display.clone() });
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
        let whole = self.buf[..written].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
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
        Err(RecordError::Write { path: self.display.clone(), source, kept_lines, dropped_lines, cut_back })
    }

    /// Close the current part and start a new one: FILE -> FILE.1 -> FILE.2 ..., the
    /// oldest beyond `max_files` deleted.
    fn rotate(&mut self) -> Result<(), RecordError> {
        self.flush()?;
        let path = self.path.clone().expect("rotation needs a file");
        let rot_err = |source| RecordError::Rotate { path: path.display().to_string(), source };
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
        self.sink.sync().map_err(|source| RecordError::Sync { path: self.display.clone(), source })?;
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
