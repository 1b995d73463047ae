//! What a replay found, and how it is printed after the timeline.

use std::fmt;
use std::io::{self, Write};

use crate::stream::output::{clean, Format, Printer};
use crate::stream::reader::BadLine;
use crate::stream::schema::{Finding, Line};

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
    /// Inputs that were not tracer recordings at all (empty, or no header first).
    pub not_recordings: Vec<String>,
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
                format!(" ({})", self.hosts.iter().map(|h| clean(h)).collect::<Vec<_>>().join(", "))
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
                let _ = writeln!(s, "  ... and {} more", self.bad_lines - self.bad.len() as u64);
            }
        } else {
            let _ = writeln!(s, "bad lines: 0");
        }
        w.write_all(s.as_bytes())
    }
}
