//! The recording writer and loop, against a fake line source.
use super::*;
use crate::cli::record_args::*;
use crate::stream::filter::{Filter, FilterArgs};
use crate::stream::schema::{Event, Finding, HeaderLine, HookStatus, Kind, Line, Severity, Stats, Timestamp};
use crate::stream::writer::*;
use std::collections::VecDeque;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

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
            state: crate::stream::schema::HookState::Attached,
            error: None,
        }],
        hook_modes: Vec::new(),
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
        controller: Some("cpuset".into()),
        cgroup: Some("/kubepods.slice".into()),
        ..Finding::new(
            "kubepods-controller-removed",
            Severity::Critical,
            Timestamp(1_700_000_000_000_000_000 + seq as i64 * 1_000_000),
            "systemd",
            "cpuset removed".into(),
            vec![seq],
        )
        .with_remediation("SystemdCgroup = true")
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
    std::fs::read_to_string(p).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
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
    assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
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
    let opts =
        WriterOptions { flush_lines: 3, flush_interval: Duration::from_secs(3600), ..Default::default() };
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
    let hdr = serde_json::to_vec(&Line::Header(header("n"))).unwrap().len() as u64 + 1;
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
        assert_eq!(lines[0], Line::Header(header("n")), "each part starts with the header");
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
    let opts = WriterOptions { rotate_size: Some(1), max_files: 1, flush_lines: 1, ..Default::default() };
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
    let hdr = serde_json::to_vec(&Line::Header(header("n"))).unwrap().len() + 1;
    let one = serde_json::to_vec(&event(1)).unwrap().len() + 1;
    for (room, kept) in [(hdr + 2 * one + 37, 3), (hdr + 2 * one, 3), (hdr + 5, 1), (hdr - 3, 0)] {
        let data = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = FullDisk { data: data.clone(), room, can_truncate: true };
        let opts = WriterOptions { flush_lines: 2, ..Default::default() };
        let w = RecordWriter::with_sink("/var/log/rec.jsonl".into(), Box::new(sink), &header("n"), opts);
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
        let lines: Vec<Line> =
            std::str::from_utf8(&data).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let want = [Line::Header(header("n")), event(1), event(2)];
        assert_eq!(lines, want[..kept], "room {room}");
        assert!(msg.contains(&format!("The {kept} lines")), "{msg}");
        // Writer refuses further lines.
        assert!(matches!(w.write_line(&event(99)), Err(RecordError::Failed { .. })));
    }
}

#[test]
fn failed_write_on_a_pipe_says_it_could_not_cut() {
    let data = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let hdr = serde_json::to_vec(&Line::Header(header("n"))).unwrap().len() + 1;
    let sink = FullDisk { data: data.clone(), room: hdr + 10, can_truncate: false };
    let mut w =
        RecordWriter::with_sink("-".into(), Box::new(sink), &header("n"), WriterOptions::default()).unwrap();
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
    assert_eq!(&lines[1..6], &[event(1), finding(1), event(2), event(3), event(4)]);
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
    let filter = Filter::new(&FilterArgs { actors: vec!["systemd".into()], ..Default::default() });
    record_loop(w, &filter, src, Some(Duration::from_millis(30)), rx).await.unwrap();
    let lines = read_lines(&p);
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert_eq!(&lines[1..3], &[event(1), event(3)]);
}
