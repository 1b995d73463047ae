//! Reading recordings back: schema-v1 JSON lines as `record` writes them, plain, gzip or
//! zstd (detected by magic bytes), with bad input (a truncated last line, a corrupt
//! line, an unknown schema version, a file that is not a recording) reported by file and
//! line number. Shared by replay, tests, the fuzzer and the benches.

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use crate::stream::schema::{Event, Finding, HeaderLine, Line, Stats, SCHEMA_VERSION};

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
                write!(
                    f,
                    "truncated last line ({bytes} bytes, no newline; the recording was cut short): {error}"
                )
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
            Box::new(BufReader::with_capacity(256 << 10, flate2::bufread::MultiGzDecoder::new(raw)))
        } else if head.starts_with(ZSTD_MAGIC) {
            Box::new(BufReader::with_capacity(256 << 10, zstd::stream::read::Decoder::with_buffer(raw)?))
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
        BadLine { file: self.name.clone(), line_no: self.line_no, reason }
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
            let read = (&mut self.inner).take(MAX_LINE as u64 + 1).read_until(b'\n', &mut self.buf);
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
                        return Some(Err(self.bad(BadReason::Truncated { bytes: self.buf.len(), error })));
                    }
                    if first {
                        return self.fatal(BadReason::NotARecording(format!("first line: {error}")));
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
