use super::*;
use crate::cli::replay_args::parse_time;
use crate::correlator::Correlate;
use crate::session::record::tests::{event, finding, header, FakeSource, TempDir};
use crate::session::record::{record_loop, LineSource};
use crate::stream::filter::FilterArgs;
use crate::stream::reader::*;
use crate::stream::schema::{Event, Finding, Line, Timestamp};
use crate::stream::schema::{Kind, Severity};
use crate::stream::writer::{RecordWriter, WriterOptions};
use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/recordings").join(name)
}

fn read_all(name: &str) -> (Vec<Line>, Vec<BadLine>) {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for item in RecordingReader::open(&fixture(name)).unwrap() {
        match item {
            Ok(l) => good.push(l),
            Err(b) => bad.push(b),
        }
    }
    (good, bad)
}

fn mem_reader(name: &str, bytes: Vec<u8>) -> RecordingReader {
    RecordingReader::new(name, io::Cursor::new(bytes)).unwrap()
}

/// Finds `kubepods-controller-removed` on every write of `-cpuset`; logs the hosts of
/// the events each instance sees.
struct Scripted {
    id: usize,
    log: Log,
}

impl Correlate for Scripted {
    fn observe(&mut self, e: &Event) -> Vec<Finding> {
        self.log.borrow_mut().push((self.id, e.host.clone(), e.seq));
        if e.kind == Kind::CgroupWrite && e.value.as_deref().is_some_and(|v| v.starts_with("-cpuset")) {
            let Line::Finding(mut f) = finding(e.seq) else { unreachable!() };
            f.time = e.time;
            f.summary = format!("cpuset removed from {}", e.cgroup.as_deref().unwrap_or("?"));
            return vec![f];
        }
        Vec::new()
    }
    fn tick(&mut self, _: Timestamp) -> Vec<Finding> {
        Vec::new()
    }
    fn finish(&mut self) -> Vec<Finding> {
        Vec::new()
    }
}

type Log = Rc<RefCell<Vec<(usize, Option<String>, u64)>>>;

fn replay(args: &ReplayArgs, readers: Vec<RecordingReader>) -> (anyhow::Result<ReplaySummary>, String, Log) {
    let log: Log = Rc::default();
    let count = RefCell::new(0);
    let l2 = log.clone();
    let make = move || -> Box<dyn Correlate> {
        let id = *count.borrow();
        *count.borrow_mut() += 1;
        Box::new(Scripted { id, log: l2.clone() })
    };
    let mut out = Vec::new();
    let r = replay_readers(args, readers, &mut out, false, &make);
    (r, String::from_utf8(out).unwrap(), log)
}

fn open(names: &[&str]) -> Vec<RecordingReader> {
    names.iter().map(|n| RecordingReader::open(&fixture(n)).unwrap()).collect()
}

#[test]
fn good_recording_reads_completely() {
    let (good, bad) = read_all("good.jsonl");
    assert!(bad.is_empty(), "{bad:?}");
    assert_eq!(good.len(), 8);
    assert!(matches!(&good[0], Line::Header(h) if h.hostname == "node-a" && h.schema == 1));
    assert_eq!(good.iter().filter(|l| matches!(l, Line::Event(_))).count(), 4);
    assert!(matches!(&good[2], Line::Finding(f) if f.severity == Severity::Critical));
}

#[test]
fn truncated_last_line() {
    let (good, bad) = read_all("truncated.jsonl");
    assert_eq!(good.len(), 4);
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].line_no, 5);
    assert!(matches!(bad[0].reason, BadReason::Truncated { bytes: 57, .. }), "{:?}", bad[0]);
    let msg = bad[0].to_string();
    assert!(msg.contains("truncated.jsonl:5: truncated last line"), "{msg}");
}

#[test]
fn corrupt_lines_are_skipped_with_line_numbers() {
    let (good, bad) = read_all("corrupt.jsonl");
    assert_eq!(good.len(), 8);
    assert_eq!(bad.iter().map(|b| b.line_no).collect::<Vec<_>>(), vec![3, 5]);
    assert!(bad.iter().all(|b| matches!(b.reason, BadReason::Invalid(_))), "{bad:?}");
    assert!(bad[0].to_string().contains("corrupt.jsonl:3: corrupt line"), "{}", bad[0]);
}

#[test]
fn unknown_schema_skips_the_file() {
    let (good, bad) = read_all("schema2.jsonl");
    assert!(good.is_empty(), "{good:?}");
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].line_no, 1);
    assert_eq!(bad[0].reason, BadReason::UnknownSchema("2".into()));
    assert!(bad[0].to_string().contains("schema version 2, this build reads version 1"), "{}", bad[0]);
}

#[test]
fn unknown_schema_of_another_shape() {
    let text = b"{\"type\":\"header\",\"schema\":3,\"whatever\":true}\n{\"type\":\"event\"}\n".to_vec();
    let items: Vec<_> = mem_reader("x", text).collect();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].as_ref().unwrap_err().reason, BadReason::UnknownSchema("3".into()));
}

#[test]
fn not_json_is_one_error_for_the_file() {
    let (good, bad) = read_all("not-json.txt");
    assert!(good.is_empty());
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].line_no, 1);
    assert!(matches!(bad[0].reason, BadReason::NotARecording(_)));
    assert!(bad[0].to_string().contains("not-json.txt:1: not a tracer recording"), "{}", bad[0]);
}

#[test]
fn empty_file() {
    let (good, bad) = read_all("empty.jsonl");
    assert!(good.is_empty());
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].reason, BadReason::Empty);
    assert!(bad[0].to_string().ends_with("empty.jsonl: empty file, not a recording"), "{}", bad[0]);
    let blank: Vec<_> = mem_reader("blank", b"\n\n  \n".to_vec()).collect();
    assert_eq!(blank.len(), 1);
    assert_eq!(blank[0].as_ref().unwrap_err().reason, BadReason::Empty);
}

#[test]
fn overlong_line_is_skipped() {
    let mut text = std::fs::read(fixture("good.jsonl")).unwrap();
    let first_nl = text.iter().position(|&b| b == b'\n').unwrap() + 1;
    let mut long = vec![b'{'; MAX_LINE + 10];
    long.push(b'\n');
    text.splice(first_nl..first_nl, long);
    let items: Vec<_> = mem_reader("long", text).collect();
    assert_eq!(items.len(), 9);
    assert_eq!(items[1].as_ref().unwrap_err().reason, BadReason::TooLong);
    assert_eq!(items[1].as_ref().unwrap_err().line_no, 2);
    assert!(matches!(items[2], Ok(Line::Event(_))));
}

#[test]
fn crlf_and_blank_lines_are_fine() {
    let text = std::fs::read_to_string(fixture("good.jsonl")).unwrap().replace('\n', "\r\n\n");
    let items: Vec<_> = mem_reader("crlf", text.into_bytes()).collect();
    assert_eq!(items.len(), 8);
    assert!(items.iter().all(|i| i.is_ok()));
}

#[test]
fn gzip_and_zstd_read_like_plain() {
    let plain = std::fs::read(fixture("good.jsonl")).unwrap();
    let want: Vec<Line> = mem_reader("p", plain.clone()).map(|r| r.unwrap()).collect();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&plain).unwrap();
    let gz = gz.finish().unwrap();
    assert_eq!(mem_reader("gz", gz.clone()).map(|r| r.unwrap()).collect::<Vec<_>>(), want);
    // Concatenated gzip members (gzip -c part >> all.gz) read as one stream.
    let mut two = gz.clone();
    two.extend_from_slice(&gz);
    assert_eq!(mem_reader("gz2", two).filter(|r| r.is_ok()).count(), 2 * want.len());
    let zs = zstd::encode_all(&plain[..], 3).unwrap();
    assert_eq!(mem_reader("zst", zs.clone()).map(|r| r.unwrap()).collect::<Vec<_>>(), want);
    // A cut compressed stream: the lines before the cut, then one read error.
    let cut = mem_reader("cut.zst", zs[..zs.len() / 2].to_vec()).collect::<Vec<_>>();
    assert!(
        matches!(
            cut.last(),
            Some(Err(BadLine { reason: BadReason::Io(_) | BadReason::Truncated { .. }, .. }))
        ),
        "{cut:?}"
    );
}

#[test]
fn arbitrary_bytes_never_panic() {
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let good = std::fs::read(fixture("good.jsonl")).unwrap();
    for round in 0..300 {
        let mut bytes = good.clone();
        for _ in 0..(round % 20 + 1) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let i = (x as usize) % bytes.len();
            bytes[i] = (x >> 32) as u8;
        }
        if round % 3 == 0 {
            bytes.truncate((x as usize) % bytes.len());
        }
        for item in mem_reader("fuzz", bytes) {
            let _ = item.map_err(|b| b.to_string());
        }
    }
}

#[test]
fn replay_skips_recorded_findings_and_reruns_correlator() {
    let args = ReplayArgs::default();
    let (r, out, _) = replay(&args, open(&["good.jsonl"]));
    let s = r.unwrap();
    assert_eq!(s.events, 4);
    assert_eq!(s.recorded_findings, 1);
    assert_eq!(s.findings.len(), 1);
    assert_eq!(s.findings[0].evidence, vec![1]);
    assert_eq!((s.lost, s.decode_errors), (5, 1));
    assert_eq!(s.actors[0], ("kubelet".to_string(), 2));
    assert_eq!(s.hosts, vec!["node-a".to_string()]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "tracer 0.1.0 on node-a (6.18.0): 1/2 hooks attached");
    assert_eq!(lines[1], "  hook sysctl not loaded: EPERM");
    assert!(
        lines[2].starts_with(
            "12:00:01.000 systemd          cgroup_write /kubepods.slice/kubepods-burstable.slice"
        ),
        "{}",
        lines[2]
    );
    assert!(lines[3].contains("FINDING kubepods-controller-removed [critical]: cpuset removed from /kubepods.slice/kubepods-burstable.slice"), "{}", lines[3]);
    assert_eq!(lines[4], "  evidence: seq 1");
    assert!(
        lines[6].starts_with("12:00:03.500 kubelet          signal       SIGKILL -> 4321 (nginx)"),
        "{}",
        lines[6]
    );
    assert!(lines[7].starts_with("12:00:05.000 !! 3 events lost"), "{}", lines[7]);
    assert!(
        out.contains("== replay summary\n1 file(s), 1 host(s) (node-a): 4 events (4 shown), 1 findings\n"),
        "{out}"
    );
    assert!(out.contains("lost events: 5 (ring buffer full); undecodable records: 1\n"), "{out}");
    assert!(out.contains("bad lines: 0\n"), "{out}");
}

#[test]
fn replay_json_is_schema_lines_without_old_findings() {
    let args = ReplayArgs { json: true, ..Default::default() };
    let (r, out, _) = replay(&args, open(&["good.jsonl"]));
    r.unwrap();
    let lines: Vec<Line> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    // header, 4 events, 1 new finding, 2 stats.
    assert_eq!(lines.len(), 8);
    assert!(matches!(&lines[0], Line::Header(_)));
    assert!(matches!(&lines[2], Line::Finding(f) if f.summary.starts_with("cpuset removed from")));
}

#[test]
fn bad_inputs_are_counted_and_reported_or_strict_fails() {
    let names = ["truncated.jsonl", "corrupt.jsonl", "schema2.jsonl", "not-json.txt", "empty.jsonl"];
    let (r, out, _) = replay(&ReplayArgs::default(), open(&names));
    let s = r.unwrap();
    assert_eq!(s.bad_lines, 6, "{:?}", s.bad);
    assert!(out.contains("bad lines: 6 (skipped)"), "{out}");
    assert!(out.contains("truncated.jsonl:5: truncated last line"), "{out}");
    assert!(out.contains("schema2.jsonl:1: schema version 2"), "{out}");
    // truncated.jsonl and corrupt.jsonl are both node-a (same session): merged.
    assert_eq!(s.hosts, vec!["node-a".to_string()]);

    for name in names {
        let args = ReplayArgs { strict: true, ..Default::default() };
        let (r, _, _) = replay(&args, open(&[name]));
        let err = r.unwrap_err().to_string();
        assert!(err.contains(name) && err.contains("(--strict)"), "{err}");
    }
    let (r, _, _) = replay(&ReplayArgs { strict: true, ..Default::default() }, open(&["good.jsonl"]));
    r.unwrap();
}

#[test]
fn merge_orders_by_time_and_tags_hosts() {
    let args = ReplayArgs { json: true, ..Default::default() };
    let (r, out, log) = replay(&args, open(&["good.jsonl", "node-b.jsonl"]));
    let s = r.unwrap();
    assert_eq!(s.hosts, vec!["node-a".to_string(), "node-b".to_string()]);
    let lines: Vec<Line> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let times: Vec<Timestamp> = lines.iter().map(line_time).collect();
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(times, sorted, "timeline is ordered");
    let events: Vec<(String, u64)> = lines
        .iter()
        .filter_map(|l| match l {
            Line::Event(e) => Some((e.host.clone().unwrap(), e.seq)),
            _ => None,
        })
        .collect();
    let want: Vec<(String, u64)> =
        [("node-a", 1), ("node-b", 1), ("node-a", 2), ("node-a", 3), ("node-b", 2), ("node-a", 4)]
            .iter()
            .map(|(h, s)| (h.to_string(), *s))
            .collect();
    assert_eq!(events, want);
    // Same time (12:00:06): file order decides, node-a's first.
    // One correlator per host, each sees only its host's events.
    let log = log.borrow();
    for (id, host, _) in log.iter() {
        let same: Vec<_> = log.iter().filter(|(i, _, _)| i == id).map(|(_, h, _)| h.clone()).collect();
        assert!(same.iter().all(|h| h == host));
    }
    assert_eq!(log.iter().map(|(i, _, _)| *i).max(), Some(1));
    // The finding is tagged with its host.
    assert!(lines.iter().any(|l| matches!(l, Line::Finding(f) if f.host.as_deref() == Some("node-a"))));
    // Stats from both sessions: node-a ends at lost 5, node-b at 0.
    assert_eq!(s.lost, 5);
    assert_eq!(lines.iter().filter(|l| matches!(l, Line::Header(_))).count(), 2);
}

/// Rotated parts of one recording (same header) form one session: one header printed,
/// one correlator, no host tags, lost counted once.
#[test]
fn rotated_parts_merge_as_one_recording() {
    let text = std::fs::read_to_string(fixture("good.jsonl")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let part1 = format!("{}\n{}\n", lines[0], lines[1..5].join("\n")); // header + first 4
    let part2 = format!("{}\n{}\n", lines[0], lines[5..].join("\n")); // header + rest
    let readers =
        vec![mem_reader("rec.jsonl", part2.into_bytes()), mem_reader("rec.jsonl.1", part1.into_bytes())];
    let (r, out, log) = replay(&ReplayArgs { json: true, ..Default::default() }, readers);
    let s = r.unwrap();
    assert_eq!((s.events, s.lost, s.decode_errors), (4, 5, 1));
    let out: Vec<Line> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(out.iter().filter(|l| matches!(l, Line::Header(_))).count(), 1);
    let seqs: Vec<u64> =
        out.iter().filter_map(|l| if let Line::Event(e) = l { Some(e.seq) } else { None }).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4]);
    assert!(out.iter().all(|l| !matches!(l, Line::Event(e) if e.host.is_some())));
    assert!(log.borrow().iter().all(|(id, _, _)| *id == 0));
}

#[test]
fn since_until_and_filters_limit_what_is_shown() {
    let args = ReplayArgs {
        json: true,
        since: Some(parse_time("2024-05-01T12:00:03Z").unwrap()),
        until: Some(parse_time("2024-05-01T12:00:06Z").unwrap()),
        ..Default::default()
    };
    let (r, out, log) = replay(&args, open(&["good.jsonl"]));
    let s = r.unwrap();
    assert_eq!((s.events, s.events_shown), (4, 2));
    // The correlator saw every event; the finding at 12:00:01 is outside the range.
    assert_eq!(log.borrow().len(), 4);
    assert!(s.findings.is_empty());
    let lines: Vec<Line> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.iter().filter(|l| matches!(l, Line::Event(_))).count(), 2);

    let args = ReplayArgs {
        json: true,
        filter: FilterArgs { findings_only: true, ..Default::default() },
        ..Default::default()
    };
    let (r, out, _) = replay(&args, open(&["good.jsonl"]));
    assert_eq!(r.unwrap().findings.len(), 1);
    assert!(!out.contains(r#""type":"event""#));
    assert!(parse_time("yesterday").unwrap_err().contains("RFC 3339"));
}

#[tokio::test]
async fn record_then_replay_round_trips_exactly() {
    let dir = TempDir::new("roundtrip");
    let p = dir.0.join("rec.jsonl");
    let live: Vec<Line> = (1..=50).map(|i| if i % 10 == 0 { finding(i) } else { event(i) }).collect();
    let src = FakeSource::new(live.clone(), vec![event(51)]);
    let hdr = src.header().clone();
    let w = RecordWriter::create(&p, &hdr, WriterOptions::default()).unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let filter = Filter::all();
    let (s, ()) = tokio::join!(record_loop(w, &filter, src, None, rx), async move {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        tx.send(()).await.unwrap();
    });
    s.unwrap();
    let got: Vec<Line> = RecordingReader::open(&p).unwrap().map(|r| r.unwrap()).collect();
    let mut want = vec![Line::Header(hdr)];
    want.extend(live);
    want.push(event(51));
    assert_eq!(&got[..want.len()], &want[..]);
    assert!(matches!(got.last(), Some(Line::Stats(_))));
    assert_eq!(got.len(), want.len() + 1);
    let _ = header("x");
}

#[test]
fn missing_file_is_an_error_naming_it() {
    let args = ReplayArgs { files: vec![PathBuf::from("/nonexistent/rec.jsonl")], ..Default::default() };
    let err = replay_with(&args, Vec::new(), false, &default_correlator).unwrap_err();
    assert!(format!("{err:#}").contains("/nonexistent/rec.jsonl"), "{err:#}");
}

/// The real correlator over the fixture: systemd's `-cpuset` on a QoS slice is the
/// incident (detector details may change; the id and the evidence may not).
#[test]
fn real_correlator_finds_the_cpuset_removal() {
    let args = ReplayArgs { files: vec![fixture("good.jsonl")], json: true, ..Default::default() };
    let s = replay_with(&args, Vec::new(), false, &default_correlator).unwrap();
    assert!(
        s.findings.iter().any(|f| f.id == "kubepods-controller-removed" && f.evidence.contains(&1)),
        "{:#?}",
        s.findings
    );
}
