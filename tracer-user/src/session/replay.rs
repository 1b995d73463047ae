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
use std::io::{self, Write};
use std::path::PathBuf;

use anyhow::{bail, Context as _};

pub use crate::cli::replay_args::ReplayArgs;
use crate::correlator::default_correlator;
use crate::correlator::{Correlate, Ticker};
use crate::stream::filter::Filter;
use crate::stream::output::{Format, Printer};
use crate::stream::reader::{BadReason, RecordingReader};
use crate::stream::schema::{Finding, Line, Timestamp};
pub use summary::{ReplaySummary, MAX_BAD_KEPT};

mod summary;

/// `tracer replay`: human timeline and summary to `out`, or JSON lines to `out` and the
/// summary to stderr. A closed `out` comes back as an `io::Error` of kind `BrokenPipe`
/// (inside the anyhow error).
pub fn run_replay<W: Write>(args: &ReplayArgs, out: W) -> anyhow::Result<ReplaySummary> {
    let color = args.human.color.enabled();
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
                    if matches!(bad.reason, BadReason::Empty | BadReason::NotARecording(_)) {
                        self.summary.not_recordings.push(bad.file.clone());
                    }
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
                            self.sessions.push(Session { host: h.hostname.clone(), ..Default::default() });
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
    let paths: Vec<PathBuf> = if stdin_only { vec![PathBuf::from("-")] } else { args.files.clone() };
    for p in &paths {
        let r = RecordingReader::open(p).with_context(|| format!("cannot read recording {}", p.display()))?;
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
    let format = if args.json { Format::Json } else { Format::Human { color } };
    let mut printer = Printer::new(io::BufWriter::with_capacity(256 << 10, out), format);
    printer = args.human.apply(printer);
    let mut summary =
        ReplaySummary { files: readers.iter().map(|r| r.name().to_string()).collect(), ..Default::default() };
    let in_range = |t: Timestamp| args.since.is_none_or(|s| t >= s) && args.until.is_none_or(|u| t <= u);

    let inputs = readers
        .into_iter()
        .map(|reader| Input { reader, pending: None, session: usize::MAX, host: None })
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
    let mut correlators: HashMap<String, (Box<dyn Correlate>, Ticker)> = HashMap::new();
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
                let (corr, ticker) =
                    correlators.entry(key.clone()).or_insert_with(|| (new_correlator(), Ticker::default()));
                // Close the windows that ended, every tick of event time, as the live
                // session does with the wall clock.
                new_findings.extend(ticker.advance(corr.as_mut(), e.time));
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
            // A finding from no event (the node's configuration read at the start of
            // the live session: `cgroup-driver-mismatch` by `config`) cannot be made
            // again from the events: it is shown as recorded.
            Line::Finding(f) if f.evidence.is_empty() => {
                m.summary.recorded_findings += 1;
                let key = f.host.clone().or(host).unwrap_or_default();
                new_findings.push(f.clone());
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
        emit_findings(&mut printer, &mut new_findings, multi_host, &key, &filter, &in_range, m.summary)?;
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
