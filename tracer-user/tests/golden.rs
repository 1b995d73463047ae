//! Golden traces (issue 3): recordings made by the real tracer on a real kernel while an
//! incident scenario played (`cargo xtask golden`, see tests/tests/golden_record.rs),
//! replayed through `tracer_user::session::replay` with this build's correlator. The findings
//! must be exactly those of `testdata/golden/<scenario>.expected.json`, which are written
//! by hand from the incidents of docs/DESIGN.md: which finding, by whom, on what, and
//! which events are its evidence.
//!
//! Expectation format (`*.expected.json`):
//! ```json
//! { "about": "...", "findings": [ {
//!     "id": "rp-filter-on-cilium", "severity": "critical", "actor": "systemd-sysctl",
//!     "fields": { "dev": "cilium_host", "value": "2" },
//!     "details": { "interfaces": ["cilium_host"] },
//!     "evidence": [ { "kind": "sysctl_write", "name": "net.ipv4.conf.cilium_host.rp_filter" } ]
//! } ] }
//! ```
//! Strings match with `*` as a wildcard (the recordings carry per-run names: a unique
//! cgroup prefix, an `lxc<hex>` interface). `fields` and `details` must match the
//! finding's; `evidence` lists event matchers: every evidence event must match one of
//! them and every matcher must match one evidence event. Findings match one to one: no
//! expected finding missing, no finding unexpected.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use tracer_user::correlator::default_correlator;
use tracer_user::session::replay::{self, ReplayArgs};
use tracer_user::stream::reader::RecordingReader;
use tracer_user::stream::schema::Line;

/// `testdata/golden`, or `GOLDEN_DIR` (a fresh recording to check against the same
/// expectations before replacing the committed one).
fn golden_dir() -> PathBuf {
    std::env::var_os("GOLDEN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/golden"))
}

/// `*` matches any run of characters.
fn glob(pat: &str, s: &str) -> bool {
    let parts: Vec<&str> = pat.split('*').collect();
    if parts.len() == 1 {
        return pat == s;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !s.starts_with(first) || s.len() < first.len() + last.len() || !s.ends_with(last) {
        return false;
    }
    let mut rest = &s[first.len()..s.len() - last.len()];
    for p in &parts[1..parts.len() - 1] {
        match rest.find(p) {
            Some(i) => rest = &rest[i + p.len()..],
            None => return false,
        }
    }
    true
}

/// Does `got` match the expectation `want`? Objects: every expected key matches (others
/// may exist); arrays: same length, matched one to one in any order; strings: glob.
fn matches(want: &Value, got: &Value) -> bool {
    match (want, got) {
        (Value::String(w), Value::String(g)) => glob(w, g),
        (Value::Object(w), Value::Object(g)) => {
            w.iter().all(|(k, v)| g.get(k).is_some_and(|gv| matches(v, gv)))
        }
        (Value::Array(w), Value::Array(g)) => {
            if w.len() != g.len() {
                return false;
            }
            let mut used = vec![false; g.len()];
            w.iter().all(|wv| {
                if let Some(i) = (0..g.len()).find(|&i| !used[i] && matches(wv, &g[i])) {
                    used[i] = true;
                    true
                } else {
                    false
                }
            })
        }
        (w, g) => w == g,
    }
}

struct Replayed {
    events: Vec<Value>,
    findings: Vec<Value>,
}

/// Replays one golden file through the library: the reader, then the correlator.
fn replay_golden(name: &str) -> Replayed {
    let path = golden_dir().join(format!("{name}.jsonl"));
    // Every line must read back: a golden file with a bad line is a broken fixture.
    let mut events = Vec::new();
    for l in RecordingReader::open(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display())) {
        match l {
            Ok(Line::Event(e)) => events.push(serde_json::to_value(&*e).unwrap()),
            Ok(_) => {}
            Err(bad) => panic!("{bad}"),
        }
    }
    let args = ReplayArgs { files: vec![path.clone()], json: true, strict: true, ..Default::default() };
    let summary = replay::replay_with(&args, std::io::sink(), false, &default_correlator)
        .unwrap_or_else(|e| panic!("replay {}: {e:#}", path.display()));
    assert_eq!(summary.bad_lines, 0);
    assert_eq!(summary.events as usize, events.len());
    let findings = summary.findings.iter().map(|f| serde_json::to_value(f).unwrap()).collect();
    Replayed { events, findings }
}

fn expected(name: &str) -> Value {
    let path = golden_dir().join(format!("{name}.expected.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Why `finding` does not match `want`, or `None` when it does.
fn mismatch(want: &Value, f: &Value, events: &[Value]) -> Option<String> {
    for k in ["id", "severity", "actor"] {
        if let Some(w) = want.get(k) {
            if !matches(w, &f[k]) {
                return Some(format!("{k}: want {w}, got {}", f[k]));
            }
        }
    }
    if let Some(Value::Object(fields)) = want.get("fields") {
        for (k, w) in fields {
            if !matches(w, &f[k]) {
                return Some(format!("{k}: want {w}, got {}", f[k]));
            }
        }
    }
    if let Some(w) = want.get("details") {
        if !matches(w, &f["details"]) {
            return Some(format!("details: want {w}, got {}", f["details"]));
        }
    }
    let seqs: Vec<u64> =
        f["evidence"].as_array().map(|a| a.iter().filter_map(Value::as_u64).collect()).unwrap_or_default();
    if seqs.is_empty() {
        return Some("no evidence".into());
    }
    let evs: Vec<&Value> = seqs
        .iter()
        .map(|s| events.iter().find(|e| e["seq"].as_u64() == Some(*s)))
        .collect::<Option<Vec<_>>>()
        .unwrap_or_default();
    if evs.len() != seqs.len() {
        return Some(format!("evidence {seqs:?} names events not in the recording"));
    }
    if let Some(Value::Array(matchers)) = want.get("evidence") {
        for e in &evs {
            if !matchers.iter().any(|m| matches(m, e)) {
                return Some(format!("evidence event matches no expected evidence: {e}"));
            }
        }
        for m in matchers {
            if !evs.iter().any(|e| matches(m, e)) {
                return Some(format!("no evidence event matches {m}"));
            }
        }
    }
    None
}

fn check(name: &str) {
    let want = expected(name);
    let got = replay_golden(name);
    let wants =
        want["findings"].as_array().unwrap_or_else(|| panic!("{name}.expected.json has no findings list"));
    let mut used = vec![false; got.findings.len()];
    let mut problems = Vec::new();
    for (wi, w) in wants.iter().enumerate() {
        let hit = (0..got.findings.len())
            .find(|&i| !used[i] && mismatch(w, &got.findings[i], &got.events).is_none());
        match hit {
            Some(i) => used[i] = true,
            None => {
                let why: Vec<String> = got
                    .findings
                    .iter()
                    .filter(|f| f["id"] == w["id"])
                    .map(|f| format!("    {} -> {}", mismatch(w, f, &got.events).unwrap_or_default(), f))
                    .collect();
                problems.push(format!(
                    "expected finding #{wi} missing: {w}\n  same-id findings and why they differ:\n{}",
                    if why.is_empty() { "    (none)".to_string() } else { why.join("\n") }
                ));
            }
        }
    }
    for (i, f) in got.findings.iter().enumerate() {
        if !used[i] {
            problems.push(format!("unexpected finding: {f}"));
        }
    }
    assert!(
        problems.is_empty(),
        "{name}: {} event(s) replayed, findings differ from {name}.expected.json:\n{}",
        got.events.len(),
        problems.join("\n")
    );
}

/// Every golden recording has its expectation and the other way round; at least one
/// scenario is a negative one (the legitimate owner's change: no finding).
#[test]
fn every_golden_trace_has_expectations() {
    let mut traces = Vec::new();
    let mut expects = Vec::new();
    for e in std::fs::read_dir(golden_dir()).expect("testdata/golden") {
        let n = e.unwrap().file_name().to_string_lossy().into_owned();
        if let Some(s) = n.strip_suffix(".expected.json") {
            expects.push(s.to_string());
        } else if let Some(s) = n.strip_suffix(".jsonl") {
            traces.push(s.to_string());
        }
    }
    traces.sort();
    expects.sort();
    assert_eq!(traces, expects, "golden traces and expectations must pair up");
    assert!(traces.len() >= 5, "golden traces: {traces:?}");
    let negatives = expects.iter().filter(|n| expected(n)["findings"] == json!([])).count();
    assert!(negatives >= 1, "no negative golden scenario");
    for n in &traces {
        let size = std::fs::metadata(golden_dir().join(format!("{n}.jsonl"))).unwrap().len();
        assert!(size < 64 * 1024, "{n}.jsonl is {size} bytes: keep golden traces small");
    }
}

#[test]
fn glob_matches() {
    assert!(glob("lxc*", "lxc1a2b3c4d"));
    assert!(glob("/*/kubepods.slice/*", "/tt1-2-kp/kubepods.slice/kubepods-burstable.slice"));
    assert!(!glob("/*/kubepods.slice", "/tt1-2-kp/kubepods.slice/x"));
    assert!(glob("a*b*c", "axxbyyc"));
    assert!(!glob("a*b*c", "axxc"));
    assert!(matches(&json!(["a*", "b"]), &json!(["b", "ax"])));
    assert!(!matches(&json!(["a*"]), &json!(["ax", "b"])));
}

macro_rules! golden {
    ($($(#[$m:meta])* $name:ident),* $(,)?) => {
        $( $(#[$m])* #[test] fn $name() { check(stringify!($name)); } )*
    };
}

golden! {
    rp_filter,
    rp_filter_never_set,
    kubepods,
    kubepods_legit,
    driver_mismatch,
    runc,
    networkd_rules,
    networkd_catch_all,
    networkd_fixed,
}
