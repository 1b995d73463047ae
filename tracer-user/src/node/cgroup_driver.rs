//! Which cgroup driver kubelet and the container runtime are configured with, read from
//! their own files before anything goes wrong. A disagreement is the cause behind the
//! kubepods incident (DESIGN.md, incident 1): with kubelet on `systemd` and the runtime
//! on `cgroupfs`, container cgroups land outside the slices systemd manages, and
//! systemd rewrites the kubepods slices' `cgroup.subtree_control`.
//!
//! Read, under the node's root (`--host-root`, `/` on the node itself):
//! - kubelet: its command line (`--cgroup-driver`, `--config`,
//!   `--container-runtime-endpoint`; flags override the file), then its configuration
//!   file (`/var/lib/kubelet/config.yaml` unless `--config` says otherwise:
//!   `cgroupDriver`, `containerRuntimeEndpoint`). The KubeletConfiguration default is
//!   `cgroupfs` (k8s.io/kubelet/config/v1beta1, `CgroupDriver`).
//! - containerd: `/etc/containerd/config.toml` and the files its `imports` name:
//!   `SystemdCgroup` in the options of the default runtime (`runc` unless
//!   `default_runtime_name` says otherwise), config versions 2 and 3; `false`
//!   (cgroupfs) when unset.
//! - CRI-O: `/etc/crio/crio.conf` then `/etc/crio/crio.conf.d/*.conf` in order:
//!   `cgroup_manager` under `[crio.runtime]`; `systemd` when unset.
//!
//! And the runtime's own answer over CRI (`RuntimeConfig`, KEP-4033: containerd 2.0+,
//! CRI-O 1.28+), which outranks its file ([`DriverReport::apply_runtime`], node/cri.rs).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::correlator::cgroup_driver::ID;
use crate::correlator::kubepods::REMEDIATION;
use crate::stream::schema::{Finding, Severity, Timestamp};

/// A cgroup driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    Systemd,
    Cgroupfs,
}

impl Driver {
    fn parse(s: &str) -> Option<Driver> {
        match s.trim().trim_matches(|c| c == '"' || c == '\'') {
            "systemd" => Some(Driver::Systemd),
            "cgroupfs" => Some(Driver::Cgroupfs),
            _ => None,
        }
    }
}

impl fmt::Display for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Driver::Systemd => "systemd",
            Driver::Cgroupfs => "cgroupfs",
        })
    }
}

/// One component's driver and where it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// `kubelet`, `containerd`, `cri-o`.
    pub component: &'static str,
    pub driver: Driver,
    /// The file and key, the flag, or the default that decided it.
    pub from: String,
}

/// What was found on the node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DriverReport {
    pub kubelet: Option<Setting>,
    /// The runtime kubelet talks to, when its endpoint says which; else every runtime
    /// configured on the node.
    pub runtimes: Vec<Setting>,
    /// Every file read.
    pub files: Vec<String>,
    /// Files that could not be parsed, and why.
    pub problems: Vec<String>,
    /// The CRI endpoint kubelet is configured with, if it says.
    pub kubelet_endpoint: Option<String>,
}

/// The kubelet configuration file when no `--config` is given (kubeadm's path).
const KUBELET_CONFIG: &str = "/var/lib/kubelet/config.yaml";
const CONTAINERD_CONFIG: &str = "/etc/containerd/config.toml";
const CRIO_CONFIG: &str = "/etc/crio/crio.conf";
const CRIO_CONFIG_DIR: &str = "/etc/crio/crio.conf.d";

impl DriverReport {
    /// Reads the node's configuration under `host_root`, and the command lines of the
    /// processes under `proc_root`.
    pub fn read(host_root: &Path, proc_root: &Path) -> DriverReport {
        let mut r = DriverReport::default();
        // One walk of /proc for the three components.
        let procs = process_args(proc_root, &["kubelet", "containerd", "crio"]);
        let kubelet_args = procs.get("kubelet");
        let flag = |name: &str| kubelet_args.as_ref().and_then(|a| flag_value(a, name));
        let config = flag("--config").unwrap_or_else(|| KUBELET_CONFIG.to_string());
        let mut endpoint = flag("--container-runtime-endpoint");
        let mut kubelet = None;
        if let Some(text) = r.read_file(host_root, &config) {
            let driver = yaml_top_level(&text, "cgroupDriver");
            endpoint = endpoint.or_else(|| yaml_top_level(&text, "containerRuntimeEndpoint"));
            kubelet = Some(match driver.as_deref().and_then(Driver::parse) {
                Some(d) => {
                    Setting { component: "kubelet", driver: d, from: format!("{config}: cgroupDriver") }
                }
                None => Setting {
                    component: "kubelet",
                    driver: Driver::Cgroupfs,
                    from: format!("{config} sets no cgroupDriver: the KubeletConfiguration default"),
                },
            });
        }
        if let Some(d) = flag("--cgroup-driver").as_deref().and_then(Driver::parse) {
            kubelet =
                Some(Setting { component: "kubelet", driver: d, from: "kubelet --cgroup-driver".into() });
        } else if kubelet.is_none() && kubelet_args.is_some() {
            kubelet = Some(Setting {
                component: "kubelet",
                driver: Driver::Cgroupfs,
                from: "kubelet runs with no --cgroup-driver and no configuration file: the default".into(),
            });
        }
        r.kubelet = kubelet;

        let containerd = r.containerd(host_root, procs.contains_key("containerd"));
        let crio = r.crio(host_root, procs.contains_key("crio"));
        r.kubelet_endpoint = endpoint.clone();
        let wanted = endpoint.as_deref().map(|e| if e.contains("crio") { "cri-o" } else { "containerd" });
        r.runtimes = [containerd, crio]
            .into_iter()
            .flatten()
            .filter(|s| wanted.is_none_or(|w| w == s.component))
            .collect();
        r
    }

    /// The runtime's own answer over CRI (`RuntimeConfig`, KEP-4033) replaces what its
    /// configuration file said: it is the driver the runtime runs with.
    pub fn apply_runtime(&mut self, answer: Option<Setting>) {
        let Some(s) = answer else { return };
        match self.runtimes.iter_mut().find(|r| r.component == s.component) {
            Some(r) => *r = s,
            None => self.runtimes.push(s),
        }
    }

    /// The runtime whose driver differs from kubelet's, with kubelet's.
    pub fn mismatch(&self) -> Option<(&Setting, &Setting)> {
        let k = self.kubelet.as_ref()?;
        self.runtimes.iter().find(|r| r.driver != k.driver).map(|r| (k, r))
    }

    fn read_file(&mut self, host_root: &Path, path: &str) -> Option<String> {
        let full = under(host_root, path);
        let text = std::fs::read_to_string(&full).ok()?;
        self.files.push(full.display().to_string());
        Some(text)
    }

    fn toml(&mut self, host_root: &Path, path: &str) -> Option<toml::Table> {
        let text = self.read_file(host_root, path)?;
        match text.parse::<toml::Table>() {
            Ok(t) => Some(t),
            Err(e) => {
                self.problems.push(format!("{}: {}", under(host_root, path).display(), e.message()));
                None
            }
        }
    }

    /// `running`: a containerd process was found.
    fn containerd(&mut self, host_root: &Path, running: bool) -> Option<Setting> {
        let Some(main) = self.toml(host_root, CONTAINERD_CONFIG) else {
            return running.then(|| Setting {
                component: "containerd",
                driver: Driver::Cgroupfs,
                from: format!("containerd runs with no {CONTAINERD_CONFIG}: SystemdCgroup defaults to false"),
            });
        };
        // `imports` are merged over the main file, in order (containerd's
        // config.LoadConfig): the last SystemdCgroup found wins.
        let mut tables = vec![(CONTAINERD_CONFIG.to_string(), main.clone())];
        for pattern in main.get("imports").and_then(|v| v.as_array()).into_iter().flatten() {
            for file in expand(host_root, pattern.as_str().unwrap_or_default()) {
                if let Some(t) = self.toml(host_root, &file) {
                    tables.push((file, t));
                }
            }
        }
        let runtime = tables
            .iter()
            .rev()
            .find_map(|(_, t)| {
                find_key(t, "default_runtime_name").and_then(|v| v.as_str().map(str::to_string))
            })
            .unwrap_or_else(|| "runc".into());
        let found = tables
            .iter()
            .rev()
            .find_map(|(file, t)| find_systemd_cgroup(t, &runtime).map(|v| (file.clone(), v)));
        Some(match found {
            Some((file, v)) => Setting {
                component: "containerd",
                driver: if v { Driver::Systemd } else { Driver::Cgroupfs },
                from: format!("{file}: SystemdCgroup = {v} (runtime {runtime})"),
            },
            None => Setting {
                component: "containerd",
                driver: Driver::Cgroupfs,
                from: format!(
                    "{CONTAINERD_CONFIG} sets no SystemdCgroup for runtime {runtime}: false by default"
                ),
            },
        })
    }

    /// `running`: a CRI-O process was found.
    fn crio(&mut self, host_root: &Path, running: bool) -> Option<Setting> {
        let mut files = vec![CRIO_CONFIG.to_string()];
        if let Ok(rd) = std::fs::read_dir(under(host_root, CRIO_CONFIG_DIR)) {
            let mut drop_ins: Vec<String> = rd
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".conf"))
                .map(|n| format!("{CRIO_CONFIG_DIR}/{n}"))
                .collect();
            drop_ins.sort();
            files.extend(drop_ins);
        }
        let mut seen = false;
        let mut found = None;
        for f in files {
            let Some(t) = self.toml(host_root, &f) else { continue };
            seen = true;
            let v = t.get("crio").and_then(|c| c.get("runtime")).and_then(|r| r.get("cgroup_manager"));
            if let Some(d) = v.and_then(|v| v.as_str()).and_then(Driver::parse) {
                found = Some(Setting { component: "cri-o", driver: d, from: format!("{f}: cgroup_manager") });
            }
        }
        if !seen && !running {
            return None;
        }
        Some(found.unwrap_or(Setting {
            component: "cri-o",
            driver: Driver::Systemd,
            from: "CRI-O sets no cgroup_manager: systemd by default".into(),
        }))
    }
}

/// The `config` finding for a disagreement: `cgroup-driver-mismatch`, naming both
/// settings and where they were read, at `time` (the start of the session).
pub fn finding(report: &DriverReport, time: Timestamp) -> Option<Finding> {
    let (k, rt) = report.mismatch()?;
    let mut f = Finding::new(
        ID,
        Severity::Warning,
        time,
        "config",
        format!(
            "kubelet uses the {} cgroup driver ({}) but {} uses {} ({}): container cgroups will land outside the \
             slices systemd manages, and systemd will rewrite the kubepods slices' controllers",
            k.driver, k.from, rt.component, rt.driver, rt.from
        ),
        Vec::new(),
    );
    f.remediation = REMEDIATION.to_string();
    let d = &mut f.details;
    d.insert("kubelet_driver".into(), k.driver.to_string().into());
    d.insert("kubelet_from".into(), k.from.clone().into());
    d.insert("runtime".into(), rt.component.into());
    d.insert("runtime_driver".into(), rt.driver.to_string().into());
    d.insert("runtime_from".into(), rt.from.clone().into());
    d.insert("files".into(), report.files.clone().into());
    Some(f)
}

/// `path` (absolute on the node) under `root`.
fn under(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

/// An `imports` entry: a file, or a `dir/*.toml` pattern (the only glob used in
/// practice), sorted.
fn expand(root: &Path, pattern: &str) -> Vec<String> {
    match pattern.rsplit_once("/*") {
        Some((dir, suffix)) => {
            let Ok(rd) = std::fs::read_dir(under(root, dir)) else { return Vec::new() };
            let mut out: Vec<String> = rd
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(suffix))
                .map(|n| format!("{dir}/{n}"))
                .collect();
            out.sort();
            out
        }
        None => vec![pattern.to_string()],
    }
}

/// The first value of `key` anywhere in the table tree.
fn find_key<'a>(t: &'a toml::Table, key: &str) -> Option<&'a toml::Value> {
    if let Some(v) = t.get(key) {
        return Some(v);
    }
    t.values().filter_map(|v| v.as_table()).find_map(|sub| find_key(sub, key))
}

/// `SystemdCgroup` under `...runtimes.<runtime>.options` (the CRI plugin's table is
/// `plugins."io.containerd.grpc.v1.cri".containerd` in config version 2 and
/// `plugins."io.containerd.cri.v1.runtime".containerd` in version 3).
fn find_systemd_cgroup(t: &toml::Table, runtime: &str) -> Option<bool> {
    if let Some(opts) = t
        .get("runtimes")
        .and_then(|r| r.get(runtime))
        .and_then(|r| r.get("options"))
        .and_then(|o| o.get("SystemdCgroup"))
    {
        return opts.as_bool();
    }
    t.values().filter_map(|v| v.as_table()).find_map(|sub| find_systemd_cgroup(sub, runtime))
}

/// A top-level `key: value` of a YAML document (kubelet's configuration is flat at the
/// keys read here), without quotes and comments.
fn yaml_top_level(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        let v = rest.split(" #").next().unwrap_or("").trim().trim_matches(|c| c == '"' || c == '\'');
        (!v.is_empty()).then(|| v.to_string())
    })
}

/// `--name=value` or `--name value` in a command line.
fn flag_value(args: &[String], name: &str) -> Option<String> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if let Some(v) = a.strip_prefix(name).and_then(|r| r.strip_prefix('=')) {
            return Some(v.to_string());
        }
        if a == name {
            return it.next().cloned();
        }
    }
    None
}

/// The command line of the first process whose executable is named after each of
/// `names`, by name; one walk of `proc_root`, ended once all are found.
fn process_args(proc_root: &Path, names: &[&'static str]) -> HashMap<&'static str, Vec<String>> {
    let mut found = HashMap::new();
    let Ok(dir) = std::fs::read_dir(proc_root) else { return found };
    for entry in dir.flatten() {
        if found.len() == names.len() {
            break;
        }
        let file = entry.file_name();
        if !file.to_str().is_some_and(|s| s.bytes().all(|b| b.is_ascii_digit())) {
            continue;
        }
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let args: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let exe = std::fs::read_link(entry.path().join("exe")).ok();
        let base = exe
            .as_deref()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .or_else(|| args.first().map(|a| a.rsplit('/').next().unwrap_or(a).to_string()));
        if let Some(name) = names.iter().find(|n| base.as_deref() == Some(**n) && !found.contains_key(**n)) {
            found.insert(*name, args);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(files: &[(&str, &str)]) -> PathBuf {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let root = std::env::temp_dir().join(format!("tracer-driver-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for (path, text) in files {
            let p = under(&root, path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        root
    }

    /// No process of these names runs in an empty proc root.
    fn no_procs() -> PathBuf {
        let p = std::env::temp_dir().join(format!("tracer-driver-proc-{}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    const CONTAINERD_V2_CGROUPFS: &str = r#"version = 2
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
    SystemdCgroup = false
"#;

    #[test]
    fn kubelet_systemd_beside_containerd_cgroupfs_is_a_mismatch_naming_both_files() {
        let root = node(&[
            ("/var/lib/kubelet/config.yaml", "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\ncgroupDriver: systemd # kubeadm\n"),
            ("/etc/containerd/config.toml", CONTAINERD_V2_CGROUPFS),
        ]);
        let r = DriverReport::read(&root, &no_procs());
        let (k, rt) = r.mismatch().expect("a mismatch");
        assert_eq!((k.driver, rt.driver, rt.component), (Driver::Systemd, Driver::Cgroupfs, "containerd"));
        assert!(k.from.contains("/var/lib/kubelet/config.yaml"), "{k:?}");
        assert!(rt.from.contains("SystemdCgroup = false (runtime runc)"), "{rt:?}");
        assert_eq!(r.files.len(), 2, "{:?}", r.files);
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn agreeing_drivers_v3_configs_imports_and_defaults() {
        // containerd 2.x (config version 3), SystemdCgroup in an imported drop-in.
        let root = node(&[
            ("/var/lib/kubelet/config.yaml", "cgroupDriver: \"systemd\"\n"),
            ("/etc/containerd/config.toml", "version = 3\nimports = [\"/etc/containerd/conf.d/*.toml\"]\n"),
            (
                "/etc/containerd/conf.d/10-cgroup.toml",
                "[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]\nSystemdCgroup = true\n",
            ),
        ]);
        let r = DriverReport::read(&root, &no_procs());
        assert_eq!(r.mismatch(), None, "{r:?}");
        assert_eq!(r.runtimes[0].driver, Driver::Systemd, "{r:?}");
        std::fs::remove_dir_all(root).unwrap();
        // No cgroupDriver and no SystemdCgroup: both default to cgroupfs; no mismatch.
        let root = node(&[
            ("/var/lib/kubelet/config.yaml", "kind: KubeletConfiguration\n"),
            ("/etc/containerd/config.toml", "version = 2\n"),
        ]);
        let r = DriverReport::read(&root, &no_procs());
        assert_eq!(r.mismatch(), None, "{r:?}");
        assert_eq!(r.kubelet.as_ref().unwrap().driver, Driver::Cgroupfs);
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn crio_defaults_to_systemd_and_the_endpoint_picks_the_runtime() {
        let root = node(&[
            (
                "/var/lib/kubelet/config.yaml",
                "cgroupDriver: cgroupfs\ncontainerRuntimeEndpoint: unix:///var/run/crio/crio.sock\n",
            ),
            ("/etc/crio/crio.conf", "[crio.runtime]\nconmon = \"/usr/bin/conmon\"\n"),
            ("/etc/containerd/config.toml", CONTAINERD_V2_CGROUPFS),
        ]);
        let r = DriverReport::read(&root, &no_procs());
        assert_eq!(r.runtimes.len(), 1, "kubelet talks to CRI-O only: {r:?}");
        let (_, rt) = r.mismatch().expect("kubelet cgroupfs vs CRI-O's default systemd");
        assert_eq!((rt.component, rt.driver), ("cri-o", Driver::Systemd));
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn nothing_configured_is_no_report_and_a_broken_file_is_a_problem() {
        let root = node(&[("/etc/containerd/config.toml", "version = [\n")]);
        let r = DriverReport::read(&root, &no_procs());
        assert_eq!((r.kubelet.as_ref(), r.mismatch()), (None, None));
        assert_eq!(r.problems.len(), 1, "{r:?}");
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn flags() {
        let a: Vec<String> =
            ["kubelet", "--config=/etc/k.yaml", "--cgroup-driver", "systemd"].map(String::from).into();
        assert_eq!(flag_value(&a, "--config").as_deref(), Some("/etc/k.yaml"));
        assert_eq!(flag_value(&a, "--cgroup-driver").as_deref(), Some("systemd"));
        assert_eq!(flag_value(&a, "--container-runtime-endpoint"), None);
        assert_eq!(
            yaml_top_level("a: 1\n  cgroupDriver: x\ncgroupDriver: 'systemd'\n", "cgroupDriver").as_deref(),
            Some("systemd")
        );
    }
}
