//! deploy/: the manifests say what deploy/README.md says, and ask the binary for flags it
//! has. Parsed and checked field by field (no cluster needed, no root needed).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_norway::Value;
use tracer_tests::tracer_bin;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn read(name: &str) -> String {
    let p = deploy().join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Every YAML document of a file.
fn docs(name: &str) -> Vec<Value> {
    let text = read(name);
    text.split("\n---")
        .map(|d| serde_norway::from_str::<Value>(d).unwrap_or_else(|e| panic!("{name}: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

/// The pod spec of each manifest: DaemonSet template, Pod, or the sidecar's patch.
fn pod_specs() -> Vec<(&'static str, Value)> {
    let mut out = Vec::new();
    for d in docs("daemonset.yaml") {
        if d["kind"] == "DaemonSet" {
            assert_eq!(d["apiVersion"], "apps/v1");
            out.push(("daemonset.yaml", d["spec"]["template"]["spec"].clone()));
        }
    }
    for d in docs("debug-pod.yaml") {
        assert_eq!(d["kind"], "Pod");
        assert_eq!(d["apiVersion"], "v1");
        out.push(("debug-pod.yaml", d["spec"].clone()));
    }
    for d in docs("sidecar.yaml") {
        out.push(("sidecar.yaml", d["spec"].clone()));
    }
    assert_eq!(
        out.len(),
        3,
        "one pod spec per manifest: {:?}",
        out.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );
    out
}

fn tracer_container<'a>(name: &str, spec: &'a Value) -> &'a Value {
    spec["containers"]
        .as_sequence()
        .and_then(|cs| cs.iter().find(|c| c["name"] == "tracer"))
        .unwrap_or_else(|| panic!("{name}: no container named tracer"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| s.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// The capabilities the README's table names (`| `CAP_BPF` | ...`), without `CAP_`.
fn readme_caps() -> BTreeSet<String> {
    let readme = read("README.md");
    let caps: BTreeSet<String> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `CAP_"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_string)
        .collect();
    assert!(caps.len() >= 3, "deploy/README.md has no capability table");
    caps
}

#[test]
fn capabilities_are_the_ones_the_readme_explains() {
    let want = readme_caps();
    for (name, spec) in pod_specs() {
        let sc = &tracer_container(name, &spec)["securityContext"];
        let add: BTreeSet<String> = strings(&sc["capabilities"]["add"]).into_iter().collect();
        assert_eq!(add, want, "{name}: capabilities.add vs deploy/README.md");
        assert_eq!(strings(&sc["capabilities"]["drop"]), vec!["ALL".to_string()], "{name}: drop ALL first");
        assert_ne!(sc["privileged"], Value::Bool(true), "{name}: must not be privileged");
        assert_eq!(sc["runAsUser"].as_u64(), Some(0), "{name}: capabilities are effective for uid 0 only");
        // The API server rejects allowPrivilegeEscalation: false with SYS_ADMIN added.
        if add.contains("SYS_ADMIN") {
            assert_ne!(sc["allowPrivilegeEscalation"], Value::Bool(false), "{name}");
        }
        assert_eq!(sc["readOnlyRootFilesystem"], Value::Bool(true), "{name}");
    }
}

#[test]
fn host_pid_without_host_network() {
    for (name, spec) in pod_specs() {
        assert_eq!(spec["hostPID"], Value::Bool(true), "{name}: hostPID is needed to see the actors");
        assert_ne!(
            spec["hostNetwork"],
            Value::Bool(true),
            "{name}: hostNetwork is not needed (deploy/README.md says why)"
        );
        let grace = spec["terminationGracePeriodSeconds"].as_u64().unwrap_or(30);
        assert!(grace >= 15, "{name}: tracer needs up to 10 s after SIGTERM, grace is {grace}");
    }
}

#[test]
fn host_mounts_are_read_only_and_documented() {
    let readme = read("README.md");
    for (name, spec) in pod_specs() {
        let c = tracer_container(name, &spec);
        let volumes = spec["volumes"].as_sequence().unwrap_or_else(|| panic!("{name}: no volumes"));
        let mounts = c["volumeMounts"].as_sequence().unwrap_or_else(|| panic!("{name}: no volumeMounts"));
        let mut host_paths = BTreeSet::new();
        for m in mounts {
            assert_eq!(
                m["readOnly"],
                Value::Bool(true),
                "{name}: mount {:?} must be read-only",
                m["mountPath"]
            );
            let vol = volumes
                .iter()
                .find(|v| v["name"] == m["name"])
                .unwrap_or_else(|| panic!("{name}: no volume for mount {:?}", m["name"]));
            let host = vol["hostPath"]["path"]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: {:?} is not a hostPath", vol["name"]));
            let at = m["mountPath"].as_str().unwrap();
            assert!(
                readme.contains(&format!("| `{host}` | `{at}` |")),
                "{name}: host mount {host} at {at} is not in deploy/README.md's table"
            );
            host_paths.insert(host.to_string());
        }
        let want: BTreeSet<String> =
            ["/sys/kernel/btf", "/sys/fs/cgroup"].iter().map(|s| s.to_string()).collect();
        assert_eq!(host_paths, want, "{name}: host mounts");
    }
}

#[test]
fn args_are_flags_the_binary_accepts() {
    let bin = tracer_bin();
    let help = Command::new(&bin).args(["tail", "--help"]).output().expect("run tracer tail --help");
    assert!(help.status.success(), "tracer tail --help failed");
    let help = String::from_utf8_lossy(&help.stdout);
    for (name, spec) in pod_specs() {
        let c = tracer_container(name, &spec);
        let args = strings(&c["args"]);
        assert_eq!(args.first().map(String::as_str), Some("tail"), "{name}: args {args:?}");
        for flag in args.iter().filter(|a| a.starts_with("--")) {
            let flag = flag.split('=').next().unwrap();
            assert!(help.contains(flag), "{name}: {flag} is not a flag of `tracer tail`:\n{help}");
        }
        // clap parses (and validates the values of) everything before --help.
        let out = Command::new(&bin).args(&args).arg("--help").output().unwrap();
        assert!(
            out.status.success(),
            "{name}: `tracer {}` is rejected: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        // The metrics port, when served, is declared.
        if let Some(i) = args.iter().position(|a| a == "--metrics-addr") {
            let port: u64 = args[i + 1].rsplit(':').next().unwrap().parse().unwrap();
            let ports: Vec<u64> = c["ports"]
                .as_sequence()
                .map(|p| p.iter().filter_map(|p| p["containerPort"].as_u64()).collect())
                .unwrap_or_default();
            assert!(
                ports.contains(&port),
                "{name}: --metrics-addr port {port} not in containerPorts {ports:?}"
            );
        }
    }
}

#[test]
fn daemonset_is_scraped_where_it_serves() {
    let ds = docs("daemonset.yaml").into_iter().find(|d| d["kind"] == "DaemonSet").unwrap();
    let tpl = &ds["spec"]["template"];
    assert_eq!(
        ds["spec"]["selector"]["matchLabels"], tpl["metadata"]["labels"],
        "selector must match the template"
    );
    let ann = &tpl["metadata"]["annotations"];
    let args = strings(&tracer_container("daemonset.yaml", &tpl["spec"])["args"]);
    assert!(args.iter().any(|a| a == "--json"), "the log pipeline needs JSON lines: {args:?}");
    let addr = args.iter().skip_while(|a| *a != "--metrics-addr").nth(1).expect("--metrics-addr");
    assert_eq!(ann["prometheus.io/port"].as_str(), addr.rsplit(':').next(), "scrape port");
    assert_eq!(ann["prometheus.io/path"], "/metrics");
    assert!(addr.starts_with("0.0.0.0:"), "bind all pod addresses for the scraper: {addr}");
}

#[test]
fn dockerfile_builds_with_xtask_and_ships_the_binary_alone() {
    let df = read("Dockerfile");
    let froms: Vec<&str> = df.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(froms.len(), 2, "multi-stage: {froms:?}");
    assert!(df.contains("cargo xtask build"), "the builder must use cargo xtask build");
    assert!(df.contains("COPY --from=build /out/tracer /usr/local/bin/tracer"));
    assert!(df.contains(r#"ENTRYPOINT ["/usr/local/bin/tracer"]"#));
    let ignore = read("Dockerfile.dockerignore");
    assert!(ignore.lines().any(|l| l.trim() == "target/"), "the build context must skip target/");
    // The images the manifests run are one and the same.
    let images: BTreeSet<String> = pod_specs()
        .iter()
        .map(|(n, s)| tracer_container(n, s)["image"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(images.len(), 1, "{images:?}");
}
