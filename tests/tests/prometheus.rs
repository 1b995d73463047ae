//! The metrics as a real Prometheus reads them: Debian's `prometheus` scrapes
//! `tracer tail --metrics-addr` on loopback every second, and its HTTP API must give the
//! events by kind, the findings and the lost-records series; `promtool check metrics`
//! must accept the exposition; every metric the Grafana dashboard in `deploy/grafana/`
//! queries must be one the binary exports.
//!
//! Everything stays on loopback; the finding comes from a Cilium rule deleted in a
//! network namespace of the test's own.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tracer_tests::*;

/// Percent-encodes a PromQL query for a URL.
fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `/api/v1/query` results, as (labels, value).
fn query(prom: &str, q: &str) -> Vec<(Value, f64)> {
    let Ok((200, body)) = http_get(prom, &format!("/api/v1/query?query={}", encode(q))) else {
        return Vec::new();
    };
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    v["data"]["result"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|s| Some((s["metric"].clone(), s["value"][1].as_str()?.parse::<f64>().ok()?)))
                .collect()
        })
        .unwrap_or_default()
}

/// Polls `q` until `ok` holds for its results (Prometheus scrapes every second).
fn query_until(prom: &str, q: &str, ok: impl Fn(&[(Value, f64)]) -> bool) -> Vec<(Value, f64)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = query(prom, q);
        if ok(&r) {
            eprintln!("{q}: {r:?}");
            return r;
        }
        assert!(Instant::now() < deadline, "Prometheus never answered {q} as expected; last: {r:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The metric names a text exposition carries (series lines, not comments).
fn exposed_names(body: &str) -> BTreeSet<String> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next().map(str::to_string))
        .collect()
}

/// Every `tracer_*` metric name the dashboard's queries use.
fn dashboard_metrics() -> BTreeSet<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/tracer-dashboard.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let dash: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    for p in dash["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().into_iter().flatten() {
            exprs.push(t["expr"].as_str().expect("expr").to_string());
        }
    }
    for v in dash["templating"]["list"].as_array().into_iter().flatten() {
        if let Some(q) = v["definition"].as_str() {
            exprs.push(q.to_string());
        }
    }
    let mut names = BTreeSet::new();
    for e in exprs {
        let mut rest = e.as_str();
        while let Some(i) = rest.find("tracer_") {
            let tail = &rest[i..];
            let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
            names.insert(tail[..end].to_string());
            rest = &tail[end..];
        }
    }
    names
}

#[test]
fn a_real_prometheus_reads_events_findings_and_lost_records() {
    require_root();
    for tool in ["prometheus", "promtool"] {
        assert!(
            Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success()),
            "{tool} is missing: `cargo xtask bootstrap --apt` installs Debian's prometheus"
        );
    }
    let addr = format!("127.0.0.1:{}", free_loopback_port());
    let mut t = Tracer::start(&["tail", "--json", "--metrics-addr", &addr, "--stats-every", "1"]);

    // A finding: Cilium's rule 9 deleted in a namespace of ours.
    let ns = NetNsGuard::new("prom");
    ns.ip(&["rule", "add", "pref", "9", "fwmark", "0x200/0xf00", "lookup", "2004"]);
    ns.ip(&["rule", "del", "pref", "9"]);
    t.wait_for("cilium-rule-deleted", Duration::from_secs(5), |v| {
        v["type"] == "finding" && v["id"] == "cilium-rule-deleted"
    });

    // The per-hook counters come with the first stats line (every second here).
    t.wait_for("a stats line", Duration::from_secs(5), |v| v["type"] == "stats");

    // The exposition passes promtool's lint.
    let (status, body) = http_get(&addr, "/metrics").expect("GET /metrics");
    assert_eq!(status, 200, "{body}");
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- exposition ---\n{body}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The dashboard queries only what the binary exports.
    let exported = exposed_names(&body);
    let wanted = dashboard_metrics();
    assert!(wanted.len() >= 5, "the dashboard queries {wanted:?}");
    let missing: Vec<&String> = wanted.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics the binary does not export: {missing:?}; exported: {exported:?}"
    );

    // Debian's Prometheus scraping the tracer each second.
    let dir = TempDir::new("prometheus");
    let config = dir.write(
        "prometheus.yml",
        &format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: tracer\n    \
             static_configs:\n      - targets: ['{addr}']\n"
        ),
    );
    let prom = format!("127.0.0.1:{}", free_loopback_port());
    let data = dir.path.join("data");
    let _prometheus = ChildGuard(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address={prom}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus"),
    );
    query_until(&prom, r#"up{job="tracer"}"#, |r| r.iter().any(|(_, v)| *v == 1.0));
    let kinds = query_until(&prom, "tracer_events_total", |r| {
        r.iter().any(|(m, v)| m["kind"] == "rule_delete" && *v >= 1.0)
    });
    assert!(kinds.iter().all(|(m, _)| m["kind"].is_string()), "every events series has a kind: {kinds:?}");
    query_until(&prom, r#"tracer_findings_total{id="cilium-rule-deleted"}"#, |r| {
        r.iter().any(|(_, v)| *v >= 1.0)
    });
    let lost = query_until(&prom, "tracer_lost_records_total", |r| !r.is_empty());
    assert!(lost.iter().all(|(m, v)| m["hook"].is_string() && *v == 0.0), "nothing lost: {lost:?}");
    // The dashboard's expressions evaluate on this Prometheus (no syntax or name error).
    let sum =
        query_until(&prom, r#"sum(increase(tracer_findings_total{instance=~".*"}[1h]))"#, |r| !r.is_empty());
    assert!(sum[0].1 >= 0.0);
    assert_eq!(t.stop(), 0);
}
