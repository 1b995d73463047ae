//! Prometheus metrics for the cluster-scale path (`tracer tail --metrics-addr`).
//!
//! Fed from the schema-v1 lines the consumer sees (so they agree with the JSON a log
//! pipeline ships) and served by a tiny hand-written HTTP/1.1 server: `GET /metrics`
//! answers with the OpenMetrics text exposition, anything else with 404. Nodes beyond
//! one are served by the cluster's Prometheus scraping every DaemonSet pod.
//!
//! | metric | type | from |
//! |---|---|---|
//! | `tracer_events_total{kind}` | counter | every `event` line |
//! | `tracer_findings_total{id}` | counter | every `finding` line |
//! | `tracer_hook_records_total{hook}` | counter | `stats.hooks[hook].seen` |
//! | `tracer_lost_records_total{hook}` | counter | `stats.hooks[hook].lost` |
//! | `tracer_decode_errors_total` | counter | `stats.decode_errors` |
//! | `tracer_process_table_entries` | gauge | `stats.processes` |
//! | `tracer_hook_attached{hook}` | gauge (1/0) | the `header` line |
//! | `tracer_hook_kfunc{family}` | gauge (1/0) | the `header` line: 1 on kernel functions, 0 on syscall tracepoints |
//!
//! The kernel counters arrive cumulative in each `stats` line. They are exposed as real
//! counters (so `rate()` and `increase()` work) by adding the difference to the last
//! value seen for that hook; a value lower than the last one (a new session feeding
//! the same `Metrics`) counts as a reset and adds the new value whole.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::{text::encode, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::stream::schema::{Line, Stats};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HookLabel {
    hook: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FamilyLabel {
    family: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IdLabel {
    id: String,
}

/// The tracer's metrics; share it as `Arc<Metrics>` between the consumer and [`serve`].
pub struct Metrics {
    registry: Registry,
    events: Family<KindLabel, Counter>,
    findings: Family<IdLabel, Counter>,
    hook_records: Family<HookLabel, Counter>,
    lost_records: Family<HookLabel, Counter>,
    decode_errors: Counter,
    processes: Gauge,
    attached: Family<HookLabel, Gauge>,
    kfunc: Family<FamilyLabel, Gauge>,
    last: Mutex<LastStats>,
}

/// The last cumulative counters seen, to turn each `stats` line into increments.
#[derive(Default)]
struct LastStats {
    /// (seen, lost) by hook.
    hooks: HashMap<String, (u64, u64)>,
    decode_errors: u64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let events = Family::<KindLabel, Counter>::default();
        let findings = Family::<IdLabel, Counter>::default();
        let hook_records = Family::<HookLabel, Counter>::default();
        let lost_records = Family::<HookLabel, Counter>::default();
        let decode_errors = Counter::default();
        let processes = Gauge::default();
        let attached = Family::<HookLabel, Gauge>::default();
        let kfunc = Family::<FamilyLabel, Gauge>::default();
        // The registry appends `_total` to counter names.
        registry.register("tracer_events", "Events emitted, by kind", events.clone());
        registry.register("tracer_findings", "Findings (known incident patterns), by id", findings.clone());
        registry.register(
            "tracer_hook_records",
            "Records the kernel programs produced, by hook (cumulative kernel counters)",
            hook_records.clone(),
        );
        registry.register(
            "tracer_lost_records",
            "Records the kernel could not hand over (ring buffer full), by hook",
            lost_records.clone(),
        );
        registry.register(
            "tracer_decode_errors",
            "Records or netlink messages that could not be decoded",
            decode_errors.clone(),
        );
        registry.register(
            "tracer_process_table_entries",
            "Entries in the process table (live processes and recently exited ones)",
            processes.clone(),
        );
        registry.register(
            "tracer_hook_attached",
            "1 when the hook is attached, 0 when it could not be",
            attached.clone(),
        );
        registry.register(
            "tracer_hook_kfunc",
            "1 when the hook family runs on kernel functions (no tax on unrelated syscalls), 0 on syscall tracepoints",
            kfunc.clone(),
        );
        Metrics {
            registry,
            events,
            findings,
            hook_records,
            lost_records,
            decode_errors,
            processes,
            attached,
            kfunc,
            last: Mutex::new(LastStats::default()),
        }
    }

    /// Counts one line of the stream. Call it for every line, before any filtering.
    pub fn observe(&self, line: &Line) {
        match line {
            Line::Header(h) => {
                for hook in &h.hooks {
                    let up = i64::from(hook.state == crate::stream::schema::HookState::Attached);
                    self.attached.get_or_create(&HookLabel { hook: hook.name.clone() }).set(up);
                }
                for m in &h.hook_modes {
                    let on = i64::from(m.mode == "kfunc");
                    self.kfunc.get_or_create(&FamilyLabel { family: m.family.clone() }).set(on);
                }
            }
            Line::Event(ev) => {
                self.events.get_or_create(&KindLabel { kind: ev.kind.as_str().to_string() }).inc();
            }
            Line::Finding(f) => {
                self.findings.get_or_create(&IdLabel { id: f.id.clone() }).inc();
            }
            Line::Stats(s) => self.observe_stats(s),
        }
    }

    fn observe_stats(&self, s: &Stats) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        for (hook, counts) in &s.hooks {
            let label = HookLabel { hook: hook.clone() };
            let prev = last.hooks.entry(hook.clone()).or_insert((0, 0));
            self.hook_records.get_or_create(&label).inc_by(delta(prev.0, counts.seen));
            let lost = self.lost_records.get_or_create(&label);
            lost.inc_by(delta(prev.1, counts.lost));
            *prev = (counts.seen, counts.lost);
        }
        self.decode_errors.inc_by(delta(last.decode_errors, s.decode_errors));
        last.decode_errors = s.decode_errors;
        self.processes.set(i64::try_from(s.processes).unwrap_or(i64::MAX));
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// The Prometheus text format 0.0.4, for a scraper that does not ask for
    /// OpenMetrics (`curl`, `promtool check metrics`, older Prometheus).
    pub fn render_text(&self) -> String {
        openmetrics_to_text(&self.render())
    }
}

/// OpenMetrics -> Prometheus text format 0.0.4
/// (https://prometheus.io/docs/instrumenting/exposition_formats/): a counter's HELP and
/// TYPE name its `_total` series, as 0.0.4 names the family by its samples; `# UNIT`,
/// the `_created` samples and `# EOF` do not exist there.
fn openmetrics_to_text(om: &str) -> String {
    let counters: std::collections::HashSet<&str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(om.len());
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = line
            .strip_prefix("# HELP ")
            .map(|r| ("# HELP ", r))
            .or_else(|| line.strip_prefix("# TYPE ").map(|r| ("# TYPE ", r)));
        if let Some((kind, rest)) = meta {
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            if counters.contains(name) {
                out.push_str(&format!("{kind}{name}_total {tail}\n"));
                continue;
            }
        } else if counters.iter().any(|c| {
            line.strip_prefix(*c)
                .and_then(|r| r.strip_prefix("_created"))
                .is_some_and(|r| r.starts_with(['{', ' ']))
        }) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// What a cumulative counter grew by since `prev`; a drop means it restarted from 0.
fn delta(prev: u64, now: u64) -> u64 {
    if now >= prev {
        now - prev
    } else {
        now
    }
}

/// Binds the metrics listener (separate from [`serve`] so a bad `--metrics-addr` fails
/// the command at start, not in a background task).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// `--metrics-addr`: binds (a taken port fails the command now) and serves in the
/// background; `None` without an address.
pub async fn start(addr: Option<SocketAddr>) -> Result<Option<Arc<Metrics>>, std::io::Error> {
    let Some(addr) = addr else { return Ok(None) };
    let listener = bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on --metrics-addr {addr}: {e}")))?;
    let m = Arc::new(Metrics::new());
    tokio::spawn(serve(listener, m.clone()));
    Ok(Some(m))
}

/// Answers `GET /metrics` on `listener` until the runtime shuts down.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let m = metrics.clone();
                tokio::spawn(async move {
                    // A scraper that stalls is dropped; Prometheus' own timeout is 10 s.
                    let _ = tokio::time::timeout(Duration::from_secs(10), handle(stream, &m)).await;
                });
            }
            Err(e) => {
                // EMFILE and the like: back off instead of spinning.
                tracing::warn!("metrics: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Largest request head accepted; a scrape request is a few hundred bytes.
const MAX_REQUEST: usize = 8192;

async fn handle(mut stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && !buf.windows(2).any(|w| w == b"\n\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_REQUEST {
            return respond(&mut stream, "431 Request Header Fields Too Large", "text/plain", b"", false)
                .await;
        }
    }
    let head = String::from_utf8_lossy(&buf);
    let mut first = head.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (first.next().unwrap_or(""), first.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let head_only = method == "HEAD";
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => {
            // Prometheus asks for OpenMetrics first in its Accept header; anything else
            // gets the classic text format.
            let openmetrics = head.lines().any(|l| {
                l.split_once(':').is_some_and(|(k, v)| {
                    k.eq_ignore_ascii_case("accept") && v.contains("application/openmetrics-text")
                })
            });
            let (body, content_type) = if openmetrics {
                (metrics.render(), "application/openmetrics-text; version=1.0.0; charset=utf-8")
            } else {
                (metrics.render_text(), "text/plain; version=0.0.4; charset=utf-8")
            };
            respond(&mut stream, "200 OK", content_type, body.as_bytes(), head_only).await
        }
        ("GET" | "HEAD", _) => {
            respond(
                &mut stream,
                "404 Not Found",
                "text/plain",
                b"tracer: metrics are at /metrics\n",
                head_only,
            )
            .await
        }
        _ => respond(&mut stream, "405 Method Not Allowed", "text/plain", b"", false).await,
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: &str,
    ctype: &str,
    body: &[u8],
    head_only: bool,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    if !head_only {
        stream.write_all(body).await?;
    }
    stream.shutdown().await
}

/// A [`LineSource`](crate::session::record::LineSource) that counts every line it hands on, so
/// `record` can serve the same metrics as `tail`:
/// `run_record(args, Observed::new(session, metrics))`.
pub struct Observed<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S: crate::session::record::LineSource> Observed<S> {
    /// Counts the header (which hooks are attached) at once.
    pub fn new(inner: S, metrics: Arc<Metrics>) -> Self {
        metrics.observe(&Line::Header(inner.header().clone()));
        Observed { inner, metrics }
    }
}

impl<S: crate::session::record::LineSource> crate::session::record::LineSource for Observed<S> {
    fn header(&self) -> &crate::stream::schema::HeaderLine {
        self.inner.header()
    }
    // Cancel-safe when the inner source is: the line is observed only once taken.
    async fn next(&mut self) -> Option<Line> {
        let line = self.inner.next().await?;
        self.metrics.observe(&line);
        Some(line)
    }
    fn stop(&mut self) {
        self.inner.stop()
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_classic_text_format_names_counters_by_their_samples() {
        let m = Metrics::new();
        m.observe(&Line::Finding(crate::stream::schema::Finding::new(
            "cilium-rule-deleted",
            crate::stream::schema::Severity::Critical,
            crate::stream::schema::Timestamp(0),
            "ip",
            String::new(),
            vec![1],
        )));
        let t = m.render_text();
        assert!(t.contains("# HELP tracer_findings_total Findings"), "{t}");
        assert!(t.contains("# TYPE tracer_findings_total counter"), "{t}");
        assert!(t.contains("tracer_findings_total{id=\"cilium-rule-deleted\"} 1"), "{t}");
        assert!(t.contains("# TYPE tracer_process_table_entries gauge"), "{t}");
        assert!(!t.contains("# EOF") && !t.contains("_created"), "{t}");
        // Every sample's name has a HELP and a TYPE line of the same name.
        for l in t.lines().filter(|l| !l.starts_with('#')) {
            let name = l.split(['{', ' ']).next().unwrap();
            assert!(t.contains(&format!("# TYPE {name} ")), "{name}: {t}");
        }
    }
    use super::*;
    use crate::stream::schema::{Event, Finding, HookCounts, Kind, Severity, Timestamp};

    fn stats(seen: u64, lost: u64, processes: u64) -> Line {
        let mut hooks = std::collections::BTreeMap::new();
        hooks.insert("cgroup_write".to_string(), HookCounts { seen, lost });
        Line::Stats(Stats { events: seen, lost, hooks, processes, ..Default::default() })
    }

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines().find_map(|l| {
            l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')).and_then(|v| v.trim().parse().ok())
        })
    }

    #[test]
    fn cumulative_stats_become_counters() {
        let m = Metrics::new();
        m.observe(&stats(10, 1, 50));
        m.observe(&stats(25, 3, 42));
        let t = m.render();
        assert_eq!(value(&t, r#"tracer_hook_records_total{hook="cgroup_write"}"#), Some(25.0), "{t}");
        assert_eq!(value(&t, r#"tracer_lost_records_total{hook="cgroup_write"}"#), Some(3.0), "{t}");
        assert_eq!(value(&t, "tracer_process_table_entries"), Some(42.0), "{t}");
        // A new session starting from zero: counted as a reset, never a decrease.
        m.observe(&stats(4, 0, 7));
        let t = m.render();
        assert_eq!(value(&t, r#"tracer_hook_records_total{hook="cgroup_write"}"#), Some(29.0), "{t}");
    }

    #[test]
    fn events_and_findings_by_label() {
        let m = Metrics::new();
        for kind in [Kind::CgroupWrite, Kind::CgroupWrite, Kind::SysctlWrite] {
            m.observe(&Line::Event(Box::new(Event { kind, ..Default::default() })));
        }
        m.observe(&Line::Finding(Finding::new(
            "rp-filter-on-cilium",
            Severity::Critical,
            Timestamp(0),
            "systemd-sysctl",
            String::new(),
            vec![1],
        )));
        let t = m.render();
        assert_eq!(value(&t, r#"tracer_events_total{kind="cgroup_write"}"#), Some(2.0), "{t}");
        assert_eq!(value(&t, r#"tracer_events_total{kind="sysctl_write"}"#), Some(1.0), "{t}");
        assert_eq!(value(&t, r#"tracer_findings_total{id="rp-filter-on-cilium"}"#), Some(1.0), "{t}");
        assert!(t.contains("# TYPE tracer_events counter"), "{t}");
        assert!(t.trim_end().ends_with("# EOF"), "{t}");
    }

    #[tokio::test]
    async fn serves_metrics_over_http() {
        let m = Arc::new(Metrics::new());
        m.observe(&stats(1, 0, 3));
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, m));
        for (path, status) in [("/metrics", "200"), ("/nope", "404")] {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
            let mut resp = String::new();
            s.read_to_string(&mut resp).await.unwrap();
            assert!(resp.starts_with(&format!("HTTP/1.1 {status}")), "{resp}");
            if status == "200" {
                assert!(resp.contains("tracer_process_table_entries 3"), "{resp}");
            }
        }
    }
}
