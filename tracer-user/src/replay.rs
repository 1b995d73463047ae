//! `tracer replay FILE...`: read recordings back, re-run the correlator over their events
//! and print the timeline with the findings inline, then a summary.
//!
//! - Input: schema-v1 JSON lines as `record` writes them, plain, gzip or zstd (detected
//!   by magic bytes), from files or stdin (`-`, or no file).
//! - Several files merge into one timeline ordered by time: rotated parts of one
//!   recording, or recordings of several nodes. When the files come from more than one
//!   host, each event, finding and stats line is tagged with its host (from its file's
//!   header) and each host gets its own correlator: a change on one node never completes
//!   a pattern started on another.
//! - The findings stored in the recordings are skipped: the correlator of this build
//!   decides (that is the point of replaying an old recording after a detector fix).
//! - Bad input (a truncated last line, a corrupt line, an unknown schema version, a file
//!   that is not a recording, an empty file) is reported with file and line number,
//!   counted and skipped; `--strict` stops at the first one with an error.
//!
//! The reading itself is [`RecordingReader`], shared with tests, the fuzzer and benches.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};

use crate::filter::{Filter, FilterArgs};
use crate::output::{clean, Format, Printer};
use crate::schema::{Event, Finding, HeaderLine, Line, Stats, Timestamp, SCHEMA_VERSION};

/// Longest line accepted; longer ones are skipped as bad (protects memory against a
/// file without newlines).
pub const MAX_LINE: usize = 4 << 20;

/// Why a line (or a whole file) was skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadReason {
    /// The file has no lines at all.
    Empty,
    /// The first line is not a schema line: not JSON, or JSON of another shape. The rest
    /// of the file is skipped.
    NotARecording(String),
    /// A header with a schema version this build cannot read. The rest of the file
    /// (until another header) is skipped.
    UnknownSchema(String),
    /// The last line has no newline and does not parse: the recording was cut short.
    Truncated { bytes: usize, error: String },
    /// The line does not parse as a schema-v1 line.
    Invalid(String),
    /// The line is longer than [`MAX_LINE`].
    TooLong,
    /// Reading or decompressing failed; the rest of the file is skipped.
    Io(String),
}

impl fmt::Display for BadReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadReason::Empty => write!(f, "empty file, not a recording"),
            BadReason::NotARecording(e) => write!(f, "not a tracer recording ({e}); file skipped"),
            BadReason::UnknownSchema(v) => {
                write!(f, "schema version {v}, this build reads version {SCHEMA_VERSION}; skipped until the next header")
            }
            BadReason::Truncated { bytes, error } => {
                write!(f, "truncated last line ({bytes} bytes, no newline; the recording was cut short): {error}")
            }
            BadReason::Invalid(e) => write!(f, "corrupt line: {e}"),
            BadReason::TooLong => write!(f, "line longer than {} MiB", MAX_LINE >> 20),
            BadReason::Io(e) => write!(f, "read error: {e}; rest of the file skipped"),
        }
    }
}

/// A line that could not be used: where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    pub file: String,
    /// 1-based; 0 when the problem is the whole file (empty).
    pub line_no: u64,
    pub reason: BadReason,
}

impl fmt::Display for BadLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line_no == 0 {
            write!(f, "{}: {}", self.file, self.reason)
        } else {
            write!(f, "{}:{}: {}", self.file, self.line_no, self.reason)
        }
    }
}

impl std::error::Error for BadLine {}

/// Reads one recording: an iterator of schema lines or [`BadLine`]s. Never panics on any
/// input; stops after a fatal problem (not a recording, unreadable compressed stream).
pub struct RecordingReader {
    name: String,
    inner: Box<dyn BufRead>,
    buf: Vec<u8>,
    line_no: u64,
    /// Lines seen (blank ones included), to tell an empty file.
    nonblank: u64,
    header: Option<HeaderLine>,
    /// After an unknown schema header: skip until the next header.
    skipping: bool,
    done: bool,
}

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

impl RecordingReader {
    /// Open a file; `-` is stdin.
    pub fn open(path: &Path) -> io::Result<Self> {
        if path == Path::new("-") {
            return Self::new("<stdin>", io::stdin());
        }
        let f = File::open(path)?;
        Self::new(&path.display().to_string(), f)
    }

    /// Read from any byte stream; `name` is used in messages. Detects gzip and zstd.
    pub fn new<R: Read + 'static>(name: &str, r: R) -> io::Result<Self> {
        let mut raw = BufReader::with_capacity(256 << 10, r);
        // fill_buf may return fewer bytes than the magic on a pipe; good enough to tell
        // the formats apart, since a short read this early means a tiny input.
        let head = raw.fill_buf()?;
        let inner: Box<dyn BufRead> = if head.starts_with(GZIP_MAGIC) {
            Box::new(BufReader::with_capacity(
                256 << 10,
                flate2::bufread::MultiGzDecoder::new(raw),
            ))
        } else if head.starts_with(ZSTD_MAGIC) {
            Box::new(BufReader::with_capacity(
                256 << 10,
                zstd::stream::read::Decoder::with_buffer(raw)?,
            ))
        } else {
            Box::new(raw)
        };
        Ok(Self::from_bufread(name, inner))
    }

    /// Read an uncompressed stream.
    pub fn from_bufread(name: &str, inner: Box<dyn BufRead>) -> Self {
        RecordingReader {
            name: name.to_string(),
            inner,
            buf: Vec::with_capacity(4096),
            line_no: 0,
            nonblank: 0,
            header: None,
            skipping: false,
            done: false,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The last header line read.
    pub fn header(&self) -> Option<&HeaderLine> {
        self.header.as_ref()
    }

    /// Lines read so far.
    pub fn line_no(&self) -> u64 {
        self.line_no
    }

    fn bad(&self, reason: BadReason) -> BadLine {
        BadLine {
            file: self.name.clone(),
            line_no: self.line_no,
            reason,
        }
    }

    fn fatal(&mut self, reason: BadReason) -> Option<Result<Line, BadLine>> {
        self.done = true;
        Some(Err(self.bad(reason)))
    }
}

impl Iterator for RecordingReader {
    type Item = Result<Line, BadLine>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.done {
                return None;
            }
            self.buf.clear();
            let read = (&mut self.inner)
                .take(MAX_LINE as u64 + 1)
                .read_until(b'\n', &mut self.buf);
            let n = match read {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.line_no += 1;
                    return self.fatal(BadReason::Io(e.to_string()));
                }
            };
            if n == 0 {
                self.done = true;
                if self.nonblank == 0 {
                    self.line_no = 0;
                    return Some(Err(self.bad(BadReason::Empty)));
                }
                return None;
            }
            self.line_no += 1;
            let newline = self.buf.last() == Some(&b'\n');
            if !newline && self.buf.len() > MAX_LINE {
                // Skip the rest of this line.
                if let Err(e) = self.inner.skip_until(b'\n') {
                    return self.fatal(BadReason::Io(e.to_string()));
                }
                self.nonblank += 1;
                return Some(Err(self.bad(BadReason::TooLong)));
            }
            let text = trim_ascii(&self.buf);
            if text.is_empty() {
                continue;
            }
            self.nonblank += 1;
            let first = self.nonblank == 1;
            let parsed = parse_line(text);
            // Header lines decide whether what follows can be read at all.
            let schema_problem = match &parsed {
                Ok(Line::Header(h)) if h.schema != SCHEMA_VERSION => Some(h.schema.to_string()),
                Ok(_) => None,
                Err(_) => unknown_schema_header(text),
            };
            if let Some(v) = schema_problem {
                self.skipping = true;
                return Some(Err(self.bad(BadReason::UnknownSchema(v))));
            }
            match parsed {
                Ok(Line::Header(h)) => {
                    self.skipping = false;
                    self.header = Some(h.clone());
                    return Some(Ok(Line::Header(h)));
                }
                Ok(_) if self.skipping => continue,
                Ok(line) => return Some(Ok(line)),
                Err(_) if self.skipping => continue,
                Err(e) => {
                    let error = e.to_string();
                    if !newline {
                        return Some(Err(self.bad(BadReason::Truncated {
                            bytes: self.buf.len(),
                            error,
                        })));
                    }
                    if first {
                        return self
                            .fatal(BadReason::NotARecording(format!("first line: {error}")));
                    }
                    return Some(Err(self.bad(BadReason::Invalid(error))));
                }
            }
        }
    }
}

fn trim_ascii(b: &[u8]) -> &[u8] {
    b.trim_ascii()
}

/// Parse one schema line. `record` and `tail --json` write `"type"` first, so the common
/// lines go straight to their struct instead of through serde's buffered, internally
/// tagged enum path (several times faster); anything else takes the general path.
pub fn parse_line(text: &[u8]) -> Result<Line, serde_json::Error> {
    if text.starts_with(br#"{"type":"event","#) {
        return serde_json::from_slice::<Event>(text).map(|e| Line::Event(Box::new(e)));
    }
    if text.starts_with(br#"{"type":"stats","#) {
        return serde_json::from_slice::<Stats>(text).map(Line::Stats);
    }
    if text.starts_with(br#"{"type":"finding","#) {
        return serde_json::from_slice::<Finding>(text).map(Line::Finding);
    }
    serde_json::from_slice::<Line>(text)
}

/// For a line that failed to parse: is it a header of another schema version? Then the
/// message should say that, not "missing field".
fn unknown_schema_header(text: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "type")]
        ty: String,
        schema: Option<serde_json::Value>,
    }
    let p: Probe = serde_json::from_slice(text).ok()?;
    if p.ty != "header" {
        return None;
    }
    match p.schema {
        Some(serde_json::Value::Number(n)) if n.as_u64() == Some(SCHEMA_VERSION as u64) => None,
        Some(v) => Some(v.to_string()),
        None => Some("(missing)".into()),
    }
}

/// What replay needs from the correlator (`correlator::Correlator`), behind a trait so
/// replay can be tested with a scripted one and keeps compiling while the real one
/// changes.
pub trait Correlate {
    fn observe(&mut self, e: &Event) -> Vec<Finding>;
    /// Time passes: findings whose window closed (e.g. "not re-added within 10 s").
    fn tick(&mut self, now: Timestamp) -> Vec<Finding>;
    /// End of input.
    fn finish(&mut self) -> Vec<Finding>;
}

/// The correlator replay uses by default.
pub fn default_correlator() -> Box<dyn Correlate> {
    Box::new(crate::correlator::Correlator::new())
}

impl Correlate for crate::correlator::Correlator {
    fn observe(&mut self, e: &Event) -> Vec<Finding> {
        crate::correlator::Correlator::observe(self, e)
    }
    fn tick(&mut self, now: Timestamp) -> Vec<Finding> {
        crate::correlator::Correlator::tick(self, now)
    }
    fn finish(&mut self) -> Vec<Finding> {
        crate::correlator::Correlator::finish(self)
    }
}

/// Finds nothing (replay with `--no-correlate`-like behaviour in tests and benches).
pub struct NoCorrelator;

impl Correlate for NoCorrelator {
    fn observe(&mut self, _: &Event) -> Vec<Finding> {
        Vec::new()
    }
    fn tick(&mut self, _: Timestamp) -> Vec<Finding> {
        Vec::new()
    }
    fn finish(&mut self) -> Vec<Finding> {
        Vec::new()
    }
}

const TICK_NS: i64 = 1_000_000_000;

/// When to color the human output.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ColorChoice {
    #[default]
    Auto,
    Always,
    Never,
}

/// Arguments of `tracer replay`.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ReplayArgs {
    /// Recordings (plain, gzip or zstd), merged into one timeline by time; `-` or none
    /// reads stdin.
    #[arg(value_name = "FILE")]
    pub files: Vec<PathBuf>,

    /// Print schema-v1 JSON lines instead of the human timeline (summary on stderr).
    #[arg(long)]
    pub json: bool,

    /// Stop at the first bad line with an error, instead of skipping and counting it.
    #[arg(long)]
    pub strict: bool,

    /// Show only lines at or after this time (RFC 3339, e.g. 2024-05-01T12:00:00Z). The
    /// correlator still sees everything before it.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub since: Option<Timestamp>,

    /// Show only lines at or before this time (RFC 3339).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub until: Option<Timestamp>,

    /// Color the human output.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,

    #[command(flatten)]
    pub filter: FilterArgs,
}

/// clap value parser for `--since`/`--until`.
pub fn parse_time(s: &str) -> Result<Timestamp, String> {
    Timestamp::parse(s.trim())
        .ok_or_else(|| format!("invalid time {s:?}: use RFC 3339, e.g. 2024-05-01T12:00:00Z"))
}

/// What a replay found.
#[derive(Debug, Default, Clone)]
pub struct ReplaySummary {
    /// Inputs read.
    pub files: Vec<String>,
    /// Distinct hosts, from the headers.
    pub hosts: Vec<String>,
    /// Events read, and shown after filters.
    pub events: u64,
    pub events_shown: u64,
    /// Findings of this run's correlator that passed the filters.
    pub findings: Vec<Finding>,
    /// Findings stored in the recordings (skipped, recomputed).
    pub recorded_findings: u64,
    /// Actors by number of changes, most first.
    pub actors: Vec<(String, u64)>,
    /// Records lost and undecodable, from the last stats line of each recording session.
    pub lost: u64,
    pub decode_errors: u64,
    /// All bad lines, and the first [`MAX_BAD_KEPT`] of them.
    pub bad_lines: u64,
    pub bad: Vec<BadLine>,
}

/// Bad lines listed in the summary (all are counted).
pub const MAX_BAD_KEPT: usize = 20;

impl ReplaySummary {
    /// The human summary printed after the timeline.
    pub fn write_human<W: Write>(&self, w: &mut W, color: bool) -> io::Result<()> {
        let mut s = String::new();
        use fmt::Write as _;
        let _ = writeln!(s, "== replay summary");
        let _ = writeln!(
            s,
            "{} file(s), {} host(s){}: {} events ({} shown), {} findings",
            self.files.len(),
            self.hosts.len(),
            if self.hosts.is_empty() {
                String::new()
            } else {
                format!(
                    " ({})",
                    self.hosts
                        .iter()
                        .map(|h| clean(h))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
            self.events,
            self.events_shown,
            self.findings.len()
        );
        if !self.findings.is_empty() {
            let _ = writeln!(s, "findings:");
            let mut p = Printer::new(Vec::new(), Format::Human { color });
            for f in &self.findings {
                p.print(&Line::Finding(f.clone()))?;
            }
            s.push_str(&String::from_utf8_lossy(&p.into_inner()));
        }
        if !self.actors.is_empty() {
            let _ = writeln!(s, "actors by changes:");
            for (a, n) in &self.actors {
                let _ = writeln!(s, "  {:<16} {n:>8}", clean(a));
            }
        }
        let _ = writeln!(
            s,
            "lost events: {} (ring buffer full); undecodable records: {}",
            self.lost, self.decode_errors
        );
        if self.bad_lines > 0 {
            let _ = writeln!(s, "bad lines: {} (skipped)", self.bad_lines);
            for b in &self.bad {
                let _ = writeln!(s, "  {}", clean(&b.to_string()));
            }
            if self.bad_lines > self.bad.len() as u64 {
                let _ = writeln!(
                    s,
                    "  ... and {} more",
                    self.bad_lines - self.bad.len() as u64
                );
            }
        } else {
            let _ = writeln!(s, "bad lines: 0");
        }
        w.write_all(s.as_bytes())
    }
}

/// `tracer replay`: human timeline and summary to `out`, or JSON lines to `out` and the
/// summary to stderr. A closed `out` comes back as an `io::Error` of kind `BrokenPipe`
/// (inside the anyhow error).
pub fn run_replay<W: Write>(args: &ReplayArgs, out: W) -> anyhow::Result<ReplaySummary> {
    let color = match args.color {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
    };
    let summary = replay_with(args, out, color, &default_correlator)?;
    if args.json {
        summary.write_human(&mut io::stderr().lock(), false)?;
    }
    Ok(summary)
}

/// One input in the merge.
struct Input {
    reader: RecordingReader,
    /// The next good line, waiting for its turn.
    pending: Option<Line>,
    /// Session (hostname, started_at) of the last header read.
    session: usize,
    host: Option<String>,
}

#[derive(Default)]
struct Session {
    host: String,
    lost: u64,
    decode_errors: u64,
}

struct Merge<'a> {
    inputs: Vec<Input>,
    sessions: Vec<Session>,
    session_index: HashMap<(String, Timestamp), usize>,
    strict: bool,
    summary: &'a mut ReplaySummary,
}

impl Merge<'_> {
    /// Read the input's next good line into `pending`, handling bad lines on the way.
    fn advance(&mut self, i: usize) -> anyhow::Result<()> {
        loop {
            match self.inputs[i].reader.next() {
                None => {
                    self.inputs[i].pending = None;
                    return Ok(());
                }
                Some(Err(bad)) => {
                    if self.strict {
                        bail!("{bad} (--strict)");
                    }
                    self.summary.bad_lines += 1;
                    if self.summary.bad.len() < MAX_BAD_KEPT {
                        self.summary.bad.push(bad);
                    }
                }
                Some(Ok(line)) => {
                    if let Line::Header(h) = &line {
                        let key = (h.hostname.clone(), h.started_at);
                        let next = self.sessions.len();
                        let idx = *self.session_index.entry(key).or_insert(next);
                        if idx == next {
                            self.sessions.push(Session {
                                host: h.hostname.clone(),
                                ..Default::default()
                            });
                        }
                        self.inputs[i].session = idx;
                        self.inputs[i].host = Some(h.hostname.clone());
                    }
                    self.inputs[i].pending = Some(line);
                    return Ok(());
                }
            }
        }
    }
}

fn line_time(l: &Line) -> Timestamp {
    match l {
        Line::Header(h) => h.started_at,
        Line::Event(e) => e.time,
        Line::Finding(f) => f.time,
        Line::Stats(s) => s.time,
    }
}

/// The replay, with the output color and the correlator factory chosen by the caller.
pub fn replay_with<W: Write>(
    args: &ReplayArgs,
    out: W,
    color: bool,
    new_correlator: &dyn Fn() -> Box<dyn Correlate>,
) -> anyhow::Result<ReplaySummary> {
    let mut readers = Vec::new();
    let stdin_only = args.files.is_empty();
    let paths: Vec<PathBuf> = if stdin_only {
        vec![PathBuf::from("-")]
    } else {
        args.files.clone()
    };
    for p in &paths {
        let r = RecordingReader::open(p)
            .with_context(|| format!("cannot read recording {}", p.display()))?;
        readers.push(r);
    }
    replay_readers(args, readers, out, color, new_correlator)
}

/// The replay over readers already opened (tests and benches use in-memory ones).
pub fn replay_readers<W: Write>(
    args: &ReplayArgs,
    readers: Vec<RecordingReader>,
    out: W,
    color: bool,
    new_correlator: &dyn Fn() -> Box<dyn Correlate>,
) -> anyhow::Result<ReplaySummary> {
    let filter = Filter::new(&args.filter);
    let format = if args.json {
        Format::Json
    } else {
        Format::Human { color }
    };
    let mut printer = Printer::new(io::BufWriter::with_capacity(256 << 10, out), format);
    let mut summary = ReplaySummary {
        files: readers.iter().map(|r| r.name().to_string()).collect(),
        ..Default::default()
    };
    let in_range =
        |t: Timestamp| args.since.is_none_or(|s| t >= s) && args.until.is_none_or(|u| t <= u);

    let inputs = readers
        .into_iter()
        .map(|reader| Input {
            reader,
            pending: None,
            session: usize::MAX,
            host: None,
        })
        .collect();
    let mut m = Merge {
        inputs,
        sessions: Vec::new(),
        session_index: HashMap::new(),
        strict: args.strict,
        summary: &mut summary,
    };
    // Prime every input: its header (first line) tells the host before any event.
    for i in 0..m.inputs.len() {
        m.advance(i)?;
    }
    let mut hosts: Vec<String> = m.sessions.iter().map(|s| s.host.clone()).collect();
    hosts.sort();
    hosts.dedup();
    let mut multi_host = hosts.len() > 1;

    let mut heap: BinaryHeap<Reverse<(Timestamp, usize)>> = BinaryHeap::new();
    for (i, input) in m.inputs.iter().enumerate() {
        if let Some(l) = &input.pending {
            heap.push(Reverse((line_time(l), i)));
        }
    }
    let mut correlators: HashMap<String, (Box<dyn Correlate>, Timestamp)> = HashMap::new();
    let mut printed_headers: Vec<(String, Timestamp)> = Vec::new();
    let mut actors: HashMap<String, u64> = HashMap::new();
    let mut new_findings: Vec<Finding> = Vec::new();

    while let Some(Reverse((_, i))) = heap.pop() {
        let Some(mut line) = m.inputs[i].pending.take() else {
            continue;
        };
        let host = m.inputs[i].host.clone();
        let session = m.inputs[i].session;
        match &mut line {
            Line::Header(h) => {
                if !hosts.contains(&h.hostname) {
                    hosts.push(h.hostname.clone());
                    hosts.sort();
                    multi_host = hosts.len() > 1;
                }
                let key = (h.hostname.clone(), h.started_at);
                if !printed_headers.contains(&key) {
                    printed_headers.push(key);
                    printer.print(&line)?;
                }
            }
            Line::Event(e) => {
                m.summary.events += 1;
                if multi_host && e.host.is_none() {
                    e.host = host.clone();
                }
                let key = e.host.clone().or(host).unwrap_or_default();
                let (corr, last_tick) = correlators
                    .entry(key.clone())
                    .or_insert_with(|| (new_correlator(), Timestamp(i64::MIN)));
                // Close the windows that ended, about once a second of event time, as
                // the live pipeline does.
                if e.time.0.saturating_sub(last_tick.0) >= TICK_NS {
                    new_findings.extend(corr.tick(e.time));
                    *last_tick = e.time;
                }
                let observed = corr.observe(e);
                // Windows that closed before this event print before it.
                emit_findings(
                    &mut printer,
                    &mut new_findings,
                    multi_host,
                    &key,
                    &filter,
                    &in_range,
                    m.summary,
                )?;
                new_findings.extend(observed);
                let shown = in_range(e.time) && filter.matches_event(e);
                // Then the event, then the findings it completes.
                if shown {
                    m.summary.events_shown += 1;
                    match actors.get_mut(e.actor.as_str()) {
                        Some(n) => *n += 1,
                        None => {
                            actors.insert(e.actor.clone(), 1);
                        }
                    }
                    printer.print(&line)?;
                }
                emit_findings(
                    &mut printer,
                    &mut new_findings,
                    multi_host,
                    &key,
                    &filter,
                    &in_range,
                    m.summary,
                )?;
            }
            Line::Finding(_) => m.summary.recorded_findings += 1,
            Line::Stats(st) => {
                if let Some(s) = m.sessions.get_mut(session) {
                    s.lost = s.lost.max(st.lost);
                    s.decode_errors = s.decode_errors.max(st.decode_errors);
                } else {
                    // No header: each stats line stands alone (cumulative within a file).
                    m.summary.lost = m.summary.lost.max(st.lost);
                    m.summary.decode_errors = m.summary.decode_errors.max(st.decode_errors);
                }
                if multi_host && st.host.is_none() {
                    st.host = host.clone();
                }
                if in_range(st.time) {
                    printer.print(&line)?;
                }
            }
        }
        m.advance(i)?;
        if let Some(l) = &m.inputs[i].pending {
            heap.push(Reverse((line_time(l), i)));
        }
    }
    let mut keys: Vec<String> = correlators.keys().cloned().collect();
    keys.sort();
    for key in keys {
        if let Some((c, _)) = correlators.get_mut(&key) {
            new_findings.extend(c.finish());
        }
        emit_findings(
            &mut printer,
            &mut new_findings,
            multi_host,
            &key,
            &filter,
            &in_range,
            m.summary,
        )?;
    }
    printer.finish()?;
    let sessions = std::mem::take(&mut m.sessions);
    drop(m);
    summary.lost += sessions.iter().map(|s| s.lost).sum::<u64>();
    summary.decode_errors += sessions.iter().map(|s| s.decode_errors).sum::<u64>();
    summary.hosts = hosts;
    let mut actors: Vec<(String, u64)> = actors.into_iter().collect();
    actors.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    summary.actors = actors;

    if !args.json {
        let mut w = printer.into_inner();
        summary.write_human(&mut w, color)?;
        w.flush()?;
    } else {
        printer.into_inner().flush()?;
    }
    Ok(summary)
}

fn emit_findings<W: Write>(
    printer: &mut Printer<W>,
    findings: &mut Vec<Finding>,
    multi_host: bool,
    host: &str,
    filter: &Filter,
    in_range: &dyn Fn(Timestamp) -> bool,
    summary: &mut ReplaySummary,
) -> io::Result<()> {
    for mut f in findings.drain(..) {
        if multi_host && f.host.is_none() {
            f.host = Some(host.to_string());
        }
        if !in_range(f.time) || !filter.matches_finding(&f) {
            continue;
        }
        let line = Line::Finding(f);
        printer.print(&line)?;
        if let Line::Finding(f) = line {
            summary.findings.push(f);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
