//! The incidents of docs/DESIGN.md, reproduced with the real components wherever this
//! machine can run them (systemd-sysctl, systemd-networkd, runc, containerd), each in a
//! sandbox of its own: a network namespace, a private mount namespace, cgroups under a
//! unique prefix. Every scenario sets up, makes the change, hands each step to the
//! caller right after it happened, and cleans up (RAII guards: also when the caller
//! panics in a step). The tests assert on what `tracer` printed at each step; a demo can
//! print the steps and tail at the same time.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::*;

/// One change a scenario just made.
#[derive(Debug, Clone, Default)]
pub struct Step {
    /// `scenario/step`, e.g. `rp_filter/udev-prefix`.
    pub id: &'static str,
    /// What happened, for people.
    pub text: String,
    /// The finding tracer should print for it, or `None` for none.
    pub expect: Option<&'static str>,
    /// The actor tracer should name.
    pub actor: Option<&'static str>,
    /// Network namespace (inode) the change happened in.
    pub netns: Option<u64>,
    /// The process that made the change, when the scenario knows its (global) pid.
    pub pid: Option<u32>,
    /// Interfaces the change concerns.
    pub devs: Vec<String>,
    /// Cgroup (path from the hierarchy root) the change concerns.
    pub cgroup: Option<String>,
    /// Other facts, e.g. the pod uid.
    pub extra: Vec<(&'static str, String)>,
    /// When the change was made (right before the step is handed over).
    pub at: Option<Instant>,
}

pub type Observer<'a> = &'a mut dyn FnMut(&Step);

/// A file under `tests/scenarios/`.
pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios").join(rel)
}

/// Fails with an install hint unless `path` exists.
pub fn require_exe(path: &str, package: &str) -> String {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: this scenario runs the real component (`apt-get install {package}`)"
    );
    path.to_string()
}

fn read_rp(ns: &NetNsGuard, dev: &str) -> String {
    run_out("ip", &["netns", "exec", &ns.name, "cat", &format!("/proc/sys/net/ipv4/conf/{dev}/rp_filter")])
        .trim()
        .to_string()
}

// ---------------------------------------------------------------------------------------
// 1. rp_filter on Cilium's interfaces, by the real systemd-sysctl.

pub const SYSTEMD_SYSCTL: &str = "/lib/systemd/systemd-sysctl";

/// Runs the real systemd-sysctl in the netns and a private mount namespace with `args`
/// (config file paths, `--prefix=`); returns its pid (the shell execs it).
fn systemd_sysctl(ns: &NetNsGuard, args: &[&str]) -> u32 {
    let mut a = vec![
        "netns",
        "exec",
        ns.name.as_str(),
        "unshare",
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        r#"echo $$; exec "$0" "$@""#,
        SYSTEMD_SYSCTL,
    ];
    a.extend_from_slice(args);
    let out = run_out("ip", &a);
    out.lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pid from systemd-sysctl run: {out}"))
}

/// The netns of the rp_filter scenarios: `cilium_host`/`cilium_net`, an `lxc…` veth
/// (its pod end `pod-eth0`) and a non-Cilium `eth1`; rp_filter 0 everywhere.
struct RpNetns {
    ns: NetNsGuard,
    cilium: Vec<String>,
    netns: Option<u64>,
    defaults: String,
    override_conf: String,
}

fn rp_netns() -> RpNetns {
    require_exe(SYSTEMD_SYSCTL, "systemd");
    let defaults = fixture("rp_filter/50-default.conf");
    let defaults = defaults.to_str().unwrap();
    let override_conf = fixture("rp_filter/99-zzz-override_cilium.conf");
    let override_conf = override_conf.to_str().unwrap();

    let ns = NetNsGuard::new("rpf");
    let lxc = format!("lxc{:08x}", std::process::id().wrapping_mul(2654435761));
    ns.ip(&["link", "add", "cilium_host", "type", "veth", "peer", "name", "cilium_net"]);
    ns.ip(&["link", "add", &lxc, "type", "veth", "peer", "name", "pod-eth0"]);
    ns.ip(&["link", "add", "eth1", "type", "veth", "peer", "name", "eth1p"]);
    let cilium: Vec<String> = vec!["cilium_host".into(), "cilium_net".into(), lxc.clone()];
    let netns = Some(ns.inode());
    for d in &cilium {
        assert_eq!(read_rp(&ns, d), "0", "a new netns starts with rp_filter 0 on {d}");
    }
    RpNetns { ns, cilium, netns, defaults: defaults.to_string(), override_conf: override_conf.to_string() }
}

/// Incident 2 of DESIGN.md, first half: systemd's 50-default.conf applied by the real
/// systemd-sysctl to Cilium interfaces that were never set explicitly. systemd-sysctl
/// writes `default` = 2 only: it reads each interface the glob matches and skips the
/// write when the value is already 2, which it is, because the kernel copied `default`
/// (net/ipv4/devinet.c, `devinet_copy_dflt_conf`). No write names an interface.
/// Step `rp_filter/never-set`.
pub fn rp_filter_never_set(obs: Observer) {
    let RpNetns { ns, cilium, netns, defaults, .. } = rp_netns();
    let defaults = defaults.as_str();
    let pid = systemd_sysctl(&ns, &[defaults]);
    let at = Some(Instant::now());
    for d in &cilium {
        assert_eq!(
            read_rp(&ns, d),
            "2",
            "systemd-sysctl's default = 2 did not reach {d}: the incident did not reproduce"
        );
    }
    obs(&Step {
        id: "rp_filter/never-set",
        text: format!(
            "systemd-sysctl applied 50-default.conf: default = 2, copied by the kernel to {} (never set explicitly)",
            cilium.join(", ")
        ),
        expect: Some("rp-filter-on-cilium"),
        actor: Some("systemd-sysctl"),
        netns,
        pid: Some(pid),
        devs: cilium.clone(),
        at,
        ..Default::default()
    });
}

/// Incident 2 of DESIGN.md with systemd's own 50-default.conf lines, after Cilium set 0
/// on its interfaces. Steps:
/// - `rp_filter/after-0`: systemd-sysctl's glob writes 2 on each of them;
/// - `rp_filter/udev-prefix`: `systemd-sysctl --prefix=/net/ipv4/conf/<lxc>` as udev's
///   99-systemd.rules runs it for a new interface;
/// - `rp_filter/cilium-override`: Cilium's sysctl.d override applied by systemd-sysctl
///   writes 0 back: the fix, no finding.
pub fn rp_filter(obs: Observer) {
    let RpNetns { ns, cilium, netns, defaults, override_conf } = rp_netns();
    let (defaults, override_conf) = (defaults.as_str(), override_conf.as_str());
    let lxc = cilium[2].clone();
    // Cilium sets 0 on its interfaces (explicitly: the kernel stops copying `default`).
    let script: String =
        cilium.iter().map(|d| format!("echo 0 > /proc/sys/net/ipv4/conf/{d}/rp_filter;")).collect();
    ns.sh(&script);
    let pid = systemd_sysctl(&ns, &[defaults]);
    let at = Some(Instant::now());
    for d in &cilium {
        assert_eq!(read_rp(&ns, d), "2", "systemd-sysctl's glob did not set {d}");
    }
    obs(&Step {
        id: "rp_filter/after-0",
        text: format!(
            "systemd-sysctl applied 50-default.conf again: its glob wrote 2 on {}",
            cilium.join(", ")
        ),
        expect: Some("rp-filter-on-cilium"),
        actor: Some("systemd-sysctl"),
        netns,
        pid: Some(pid),
        devs: cilium.clone(),
        at,
        ..Default::default()
    });

    ns.sh(&format!("echo 0 > /proc/sys/net/ipv4/conf/{lxc}/rp_filter"));
    let prefix = format!("--prefix=/net/ipv4/conf/{lxc}");
    let pid = systemd_sysctl(&ns, &[&prefix, defaults]);
    let at = Some(Instant::now());
    assert_eq!(read_rp(&ns, &lxc), "2");
    obs(&Step {
        id: "rp_filter/udev-prefix",
        text: format!("systemd-sysctl {prefix} 50-default.conf (udev's 99-systemd.rules for a new interface) set 2 on {lxc}"),
        expect: Some("rp-filter-on-cilium"),
        actor: Some("systemd-sysctl"),
        netns,
        pid: Some(pid),
        devs: vec![lxc.clone()],
        at,
        ..Default::default()
    });

    let pid = systemd_sysctl(&ns, &[override_conf]);
    let at = Some(Instant::now());
    for d in &cilium {
        assert_eq!(read_rp(&ns, d), "0", "Cilium's override did not set {d} back to 0");
    }
    obs(&Step {
        id: "rp_filter/cilium-override",
        text: format!(
            "systemd-sysctl applied Cilium's 99-zzz-override_cilium.conf: 0 on {}",
            cilium.join(", ")
        ),
        expect: None,
        actor: Some("systemd-sysctl"),
        netns,
        pid: Some(pid),
        devs: cilium.clone(),
        at,
        ..Default::default()
    });
}

// ---------------------------------------------------------------------------------------
// 4. kubepods controller removal, with stand-ins for kubelet and systemd.

/// Restores the cgroup2 root's `cgroup.subtree_control` to what it was.
struct SubtreeControlGuard {
    file: PathBuf,
    before: Vec<String>,
}

impl SubtreeControlGuard {
    fn enable(root: &Path, controller: &str) -> SubtreeControlGuard {
        let file = root.join("cgroup.subtree_control");
        let before: Vec<String> = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("read {}: {e}", file.display()))
            .split_whitespace()
            .map(str::to_string)
            .collect();
        if !before.iter().any(|c| c == controller) {
            std::fs::write(&file, format!("+{controller}"))
                .unwrap_or_else(|e| panic!("enable {controller} in {}: {e}", file.display()));
        }
        SubtreeControlGuard { file, before }
    }
}

impl Drop for SubtreeControlGuard {
    fn drop(&mut self) {
        let now: Vec<String> = std::fs::read_to_string(&self.file)
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect();
        let off: Vec<String> =
            now.iter().filter(|c| !self.before.contains(c)).map(|c| format!("-{c}")).collect();
        let on: Vec<String> =
            self.before.iter().filter(|c| !now.contains(c)).map(|c| format!("+{c}")).collect();
        for v in off.iter().chain(on.iter()) {
            if let Err(e) = std::fs::write(&self.file, v) {
                eprintln!("warning: could not restore {} ({v}): {e}", self.file.display());
            }
        }
    }
}

/// A copy of the shell named like the component it stands in for, so that exe and comm
/// say `kubelet` or `systemd`.
fn stand_in(dir: &TempDir, name: &str) -> PathBuf {
    let p = dir.path.join(name);
    std::fs::copy("/bin/dash", &p).unwrap_or_else(|e| panic!("copy /bin/dash to {}: {e}", p.display()));
    p
}

/// Runs `script` with the stand-in `exe` (`exe -c script`), returns its stdout.
fn stand_in_run(exe: &Path, script: &str) -> String {
    run_out(exe.to_str().unwrap(), &["-c", script])
}

/// The controller that cgroup v2 has free on this machine (the v1 hierarchies hold the
/// others; they are never rebound). The detector handles `cpuset` the same way: kubelet
/// requires cpu, cpuset, memory, hugetlb and pids alike (correlator/kubepods.rs `REQUIRED`).
pub const KUBEPODS_CONTROLLER: &str = "hugetlb";

/// Incident 1 of DESIGN.md with stand-ins: a `kubelet` builds a kubepods tree in cgroup
/// v2 under a unique prefix (`/<prefix>/kubepods.slice/kubepods-burstable.slice/
/// kubepods-burstable-pod<uid>.slice`), enables the controller down to the QoS slice and
/// starts a process in the pod; a `systemd` started by the same parent writes
/// `-<controller>` on the burstable slice; kubelet SIGKILLs the pod's process, removes the
/// pod cgroup and writes `+<controller>` back. Steps:
/// - `kubepods/removed` (the finding, actor systemd, right away);
/// - `kubepods/aftermath` (kill, rmdir and restore done: the window's follow-up finding
///   comes when the window closes, at the latest when tracer stops).
pub fn kubepods(obs: Observer) {
    let ctl = KUBEPODS_CONTROLLER;
    let root = cgroup2_root();
    let available = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
    assert!(
        available.split_whitespace().any(|c| c == ctl),
        "cgroup v2 at {} has no {ctl} controller (has: {available}); the kubepods scenario needs one it may enable",
        root.display()
    );
    let bin = TempDir::new("standins");
    let kubelet = stand_in(&bin, "kubelet");
    let systemd = stand_in(&bin, "systemd");

    // Restored last (declared first): the prefix must be gone before the root's
    // subtree_control can drop the controller again.
    let _root_ctl = SubtreeControlGuard::enable(&root, ctl);
    let prefix = CgroupGuard::new(&root, &unique("kp"));
    let uid = "8a3e1d2c-5b7f-4c9a-9e0d-1f2a3b4c5d6e";
    let qos_rel = format!("{}/kubepods.slice/kubepods-burstable.slice", prefix.rel);
    let pod_rel = format!("{qos_rel}/kubepods-burstable-pod{}.slice", uid.replace('-', "_"));
    let abs = |rel: &str| root.join(rel.trim_start_matches('/'));
    let (qos, pod) = (abs(&qos_rel), abs(&pod_rel));

    // kubelet: the tree, the controller down to the QoS slice, a "container" in the pod.
    let script = format!(
        "set -e; mkdir -p {pod}; \
         for c in {p} {p}/kubepods.slice {qos}; do echo +{ctl} > $c/cgroup.subtree_control; done; \
         sleep 600 </dev/null >/dev/null 2>&1 & echo $! > {pod}/cgroup.procs; echo $!",
        pod = pod.display(),
        p = prefix.path.display(),
        qos = qos.display(),
    );
    let victim: u32 = stand_in_run(&kubelet, &script).trim().parse().expect("pid of the pod's process");
    // The pod's process is ours: make sure it ends whatever happens next.
    // It is killed on drop only while it is still in this scenario's cgroup: once it is
    // gone its pid may belong to someone else's process.
    struct Kill(u32, String);
    impl Drop for Kill {
        fn drop(&mut self) {
            let ours = std::fs::read_to_string(format!("/proc/{}/cgroup", self.0))
                .is_ok_and(|c| c.contains(&self.1));
            if ours {
                // SAFETY: a process this scenario started, still in its own cgroup.
                unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
            }
        }
    }
    let _victim = Kill(victim, prefix.rel.clone());
    let controllers = std::fs::read_to_string(pod.join("cgroup.controllers")).unwrap();
    assert!(controllers.contains(ctl), "kubelet's pod cgroup has no {ctl}: {controllers}");

    // systemd realizes the slice and rewrites its subtree_control without the controller.
    let sd_script = format!("echo -{ctl} > {}/cgroup.subtree_control; echo $$", qos.display());
    let sd_pid: u32 = stand_in_run(&systemd, &sd_script).trim().parse().unwrap();
    let at = Some(Instant::now());
    let controllers = std::fs::read_to_string(pod.join("cgroup.controllers")).unwrap();
    assert!(!controllers.contains(ctl), "{ctl} still in the pod's controllers: {controllers}");
    obs(&Step {
        id: "kubepods/removed",
        text: format!("systemd wrote -{ctl} to cgroup.subtree_control of {qos_rel}"),
        expect: Some("kubepods-controller-removed"),
        actor: Some("systemd"),
        pid: Some(sd_pid),
        cgroup: Some(qos_rel.clone()),
        extra: vec![("controller", ctl.into()), ("pod_uid", uid.into()), ("pod", pod_rel.clone())],
        at,
        ..Default::default()
    });

    // kubelet: Validate() fails, the pod is killed and its cgroup removed; the controller
    // is written back.
    let script = format!(
        "kill -KILL {victim}; while kill -0 {victim} 2>/dev/null; do sleep 0.05; done; \
         for i in $(seq 100); do rmdir {pod} 2>/dev/null && break; sleep 0.05; done; \
         echo +{ctl} > {qos}/cgroup.subtree_control",
        pod = pod.display(),
        qos = qos.display(),
    );
    // The victim is a child of the first kubelet (gone): it is reaped by the subreaper or
    // init; `kill -0` succeeds on a zombie, so wait on its cgroup instead.
    let script = script.replace(
        &format!("while kill -0 {victim} 2>/dev/null; do sleep 0.05; done; "),
        &format!("while [ -s {}/cgroup.procs ]; do sleep 0.05; done; ", pod.display()),
    );
    stand_in_run(&kubelet, &script);
    assert!(!pod.exists(), "kubelet could not remove the pod cgroup");
    obs(&Step {
        id: "kubepods/aftermath",
        text: format!("kubelet killed the pod's process, removed {pod_rel} and wrote +{ctl} back"),
        expect: Some("kubepods-controller-removed"),
        actor: Some("systemd"),
        pid: Some(sd_pid),
        cgroup: Some(qos_rel.clone()),
        extra: vec![
            ("controller", ctl.into()),
            ("pod_uid", uid.into()),
            ("pod", pod_rel.clone()),
            ("victim", victim.to_string()),
        ],
        at: Some(Instant::now()),
        ..Default::default()
    });
    drop(prefix);
}

// ---------------------------------------------------------------------------------------
// 2. systemd-networkd deletes Cilium's routing policy rules and routes.

pub const SYSTEMD_NETWORKD: &str = "/lib/systemd/systemd-networkd";

/// How the networkd scenario is configured.
#[derive(Debug, Clone, Copy)]
pub struct Networkd {
    /// `ManageForeignRoutes=` and `ManageForeignRoutingPolicyRules=` (networkd.conf
    /// [Network]); `no` is the fix.
    pub manage_foreign: bool,
    /// Also a catch-all `.network` (`Name=*`, as some distributions ship) so that networkd
    /// manages `cilium_host` too, besides the uplink.
    pub catch_all: bool,
}

/// The global pid of the process running `exe` in network namespace `netns`.
fn pid_in_netns(exe: &str, netns: u64) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(link) = std::fs::read_link(format!("/proc/{pid}/exe")) else {
            continue;
        };
        // /lib is often a symlink to usr/lib: compare the resolved paths.
        if std::fs::canonicalize(exe).ok().as_deref() != Some(link.as_path()) {
            continue;
        }
        if std::fs::metadata(format!("/proc/{pid}/ns/net")).ok().map(|m| m.ino()) == Some(netns) {
            return Some(pid);
        }
    }
    None
}

/// A shell script in the netns, a private mount namespace and a private pid namespace
/// (`--kill-child`: when the scenario kills it, everything it started dies with it),
/// talked to line by line over stdin/stdout.
struct Sandbox {
    child: ChildGuard,
    out: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
}

impl Sandbox {
    /// In `ns`, or in this netns when `None` (`ip netns exec` mounts a fresh /sys, which
    /// hides the cgroup mounts a runtime needs).
    fn start(ns: Option<&NetNsGuard>, script: &str) -> Sandbox {
        use std::process::{Command, Stdio};
        let mut cmd = match ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &ns.name, "unshare"]);
                c
            }
            None => Command::new("unshare"),
        };
        let mut child = cmd
            .args(["-m", "--propagation", "private", "--pid", "--fork"])
            .args(["--kill-child", "--mount-proc", "sh", "-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn ip netns exec unshare");
        let out = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
        Sandbox { child: ChildGuard(child), out }
    }

    /// Reads lines until one starts with `word`; panics if the script ends first.
    fn expect(&mut self, word: &str) -> String {
        for line in self.out.by_ref() {
            let line = line.unwrap_or_default();
            if line.starts_with(word) {
                return line;
            }
            eprintln!("sandbox: {line}");
        }
        let status = self.child.0.try_wait().ok().flatten();
        panic!("sandbox script ended before printing {word} (status {status:?})");
    }

    fn say(&mut self, line: &str) {
        use std::io::Write;
        let stdin = self.child.0.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").expect("write to sandbox");
        stdin.flush().unwrap();
    }
}

fn ip_out(ns: &NetNsGuard, args: &[&str]) -> String {
    let mut a = vec!["-n", ns.name.as_str()];
    a.extend_from_slice(args);
    run_out("ip", &a)
}

/// Cilium's rules as `ip rule` prints them.
const CILIUM_RULES: &[(&str, &str)] = &[
    ("9", "9:\tfrom all fwmark 0x200/0xf00 lookup 2004"),
    ("10", "10:\tfrom all fwmark 0xa00/0xf00 lookup 2005"),
    ("100", "100:\tfrom all lookup local"),
];

/// Incident 3 of DESIGN.md with the real systemd-networkd (v248+ removes foreign rules
/// and routes when it configures a link). In the netns: an uplink veth `nd0` that
/// networkd manages (`10-uplink.network`), `cilium_host`/`cilium_net` with Cilium's
/// rules (9: fwmark 0x200/0xf00 lookup 2004, 10: fwmark 0xa00/0xf00 lookup 2005, the
/// local rule moved to 100) and routes (via `cilium_host` in main and table 2005,
/// `local default dev lo` in table 2004, `proto boot` as before Cilium 1.14). networkd
/// runs with a private /run, a private dbus-daemon (for `networkctl`), its own
/// /etc/systemd/network and networkd.conf, and /sys read-only: networkd then treats udev
/// as absent (systemd `udev_available()`) and links as initialized, instead of waiting
/// for a udevd that does not run here. Step `networkd/reconfigure`: `networkctl
/// reconfigure nd0`.
///
/// networkd 252 drops foreign routes only on the links it manages (`link_drop_foreign_routes`)
/// and routes with no link, but foreign rules of the whole namespace
/// (`manager_drop_foreign_routing_policy_rules`): with the uplink alone, Cilium's rules
/// go and its routes via `cilium_host` stay; with `catch_all`, networkd manages
/// `cilium_host` too and removes its routes and its address.
pub fn networkd(cfg: Networkd, obs: Observer) {
    require_exe(SYSTEMD_NETWORKD, "systemd");
    require_exe("/usr/bin/networkctl", "systemd");
    require_exe("/usr/bin/dbus-daemon", "dbus");
    let ns = NetNsGuard::new("nd");
    let netns = ns.inode();
    for args in [
        &["link", "set", "lo", "up"][..],
        &["link", "add", "nd0", "type", "veth", "peer", "name", "nd0p"],
        &["link", "set", "nd0p", "up"],
        &["link", "add", "cilium_host", "type", "veth", "peer", "name", "cilium_net"],
        &["addr", "add", "10.0.0.1/32", "dev", "cilium_host"],
        &["link", "set", "cilium_host", "up"],
        &["link", "set", "cilium_net", "up"],
        &["route", "add", "10.1.0.0/24", "via", "10.0.0.1", "dev", "cilium_host", "src", "10.0.0.1"],
        &["route", "add", "local", "0.0.0.0/0", "dev", "lo", "table", "2004"],
        &["route", "add", "default", "via", "10.0.0.1", "dev", "cilium_host", "table", "2005"],
        &["rule", "add", "fwmark", "0x200/0xf00", "lookup", "2004", "priority", "9"],
        &["rule", "add", "fwmark", "0xa00/0xf00", "lookup", "2005", "priority", "10"],
        &["rule", "add", "lookup", "local", "priority", "100"],
        &["rule", "del", "priority", "0"],
    ] {
        ns.ip(args);
    }

    let dir = TempDir::new("networkd");
    dir.write(
        "network/10-uplink.network",
        "[Match]\nName=nd0\n\n[Network]\nAddress=10.77.0.1/24\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n",
    );
    if cfg.catch_all {
        dir.write(
            "network/zz-default.network",
            "[Match]\nName=*\nType=!loopback\n\n[Network]\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n",
        );
    }
    let yn = if cfg.manage_foreign { "yes" } else { "no" };
    dir.write(
        "networkd.conf",
        &format!("[Network]\nManageForeignRoutes={yn}\nManageForeignRoutingPolicyRules={yn}\n"),
    );
    let d = dir.path.display();
    let links = if cfg.catch_all { "nd0 cilium_host" } else { "nd0" };
    let script = format!(
        r#"set -e
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /run/systemd/netif /run/dbus
chown systemd-network:systemd-network /run/systemd/netif
mount --bind {d}/network /etc/systemd/network
mount --bind {d}/networkd.conf /etc/systemd/networkd.conf
mount -o remount,bind,ro /sys
dbus-daemon --system --fork
{SYSTEMD_NETWORKD} >{d}/networkd.log 2>&1 &
for i in $(seq 100); do networkctl list 2>/dev/null | grep -Eq ' nd0 .*(configuring|configured)' && break; sleep 0.1; done
networkctl list
echo READY
read cmd
networkctl reconfigure {links}
echo DONE
read cmd
kill $(cat /run/dbus/pid) $! || true
wait || true
echo BYE
"#
    );
    let mut sb = Sandbox::start(Some(&ns), &script);
    sb.expect("READY");
    let pid = pid_in_netns(SYSTEMD_NETWORKD, netns).expect("systemd-networkd is not running in the netns");
    let rules = ip_out(&ns, &["rule"]);
    for (_, r) in CILIUM_RULES {
        assert!(rules.contains(r), "Cilium's rule {r:?} is gone before the reconfigure:\n{rules}");
    }
    sb.say("reconfigure");
    sb.expect("DONE");
    let at = Some(Instant::now());
    // Wait for what networkd does (or, with the fix, for nothing to happen).
    let deadline =
        Instant::now() + std::time::Duration::from_millis(if cfg.manage_foreign { 2000 } else { 500 });
    let mut rules = ip_out(&ns, &["rule"]);
    while cfg.manage_foreign
        && CILIUM_RULES.iter().any(|(_, r)| rules.contains(r))
        && Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
        rules = ip_out(&ns, &["rule"]);
    }
    if !cfg.manage_foreign {
        std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
        rules = ip_out(&ns, &["rule"]);
    }
    let mut routes = ip_out(&ns, &["-4", "route", "show", "table", "all"]);
    // With the catch-all, cilium_host's routes go a few ms after the rules.
    while cfg.catch_all && routes.contains("dev cilium_host") && Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
        routes = ip_out(&ns, &["-4", "route", "show", "table", "all"]);
    }
    let gone: Vec<String> =
        CILIUM_RULES.iter().filter(|(_, r)| !rules.contains(r)).map(|(p, _)| p.to_string()).collect();
    if cfg.manage_foreign {
        assert_eq!(gone.len(), CILIUM_RULES.len(), "networkd left Cilium's rules:\n{rules}");
    } else {
        assert!(gone.is_empty(), "networkd removed rules {gone:?} with ManageForeignRoutingPolicyRules=no");
    }
    let mut text = format!(
        "systemd-networkd (ManageForeignRoutes={yn}, ManageForeignRoutingPolicyRules={yn}{}) on `networkctl reconfigure {links}` removed rules {gone:?}; routes left:\n{routes}",
        if cfg.catch_all { ", catch-all .network" } else { "" }
    );
    if let Ok(log) = std::fs::read_to_string(dir.path.join("networkd.log")) {
        text.push_str(
            &log.lines()
                .filter(|l| l.contains("foreign") || l.contains("Removing"))
                .collect::<Vec<_>>()
                .join("\n"),
        );
    }
    obs(&Step {
        id: "networkd/reconfigure",
        text,
        expect: cfg.manage_foreign.then_some("cilium-rule-deleted"),
        actor: Some("systemd-networkd"),
        netns: Some(netns),
        pid: Some(pid),
        devs: vec!["cilium_host".into()],
        extra: vec![("rules_removed", gone.join(",")), ("routes_left", routes)],
        at,
        ..Default::default()
    });
    sb.say("quit");
    sb.expect("BYE");
}

// ---------------------------------------------------------------------------------------
// 3. A container runtime creates, writes and removes container cgroups.

pub const RUNC: &str = "/usr/sbin/runc";

/// Removes a cgroup prefix from every hierarchy (a runtime creates it in each).
struct CgroupPrefixGuard(String);

impl Drop for CgroupPrefixGuard {
    fn drop(&mut self) {
        for m in cgroup_mounts() {
            let p = m.join(&self.0);
            if p.exists() {
                remove_cgroup_tree(&p);
            }
        }
    }
}

/// `runc delete --force` of a container, whatever happened.
struct RuncContainerGuard {
    state: PathBuf,
    id: String,
}

impl Drop for RuncContainerGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new(RUNC)
            .args(["--root", self.state.to_str().unwrap(), "delete", "--force", &self.id])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// A busybox rootfs in `dir/rootfs`.
fn busybox_rootfs(dir: &TempDir) -> PathBuf {
    let busybox = require_exe("/usr/bin/busybox", "busybox-static");
    let rootfs = dir.path.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    for d in ["proc", "dev", "sys", "tmp", "etc"] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    std::fs::copy(&busybox, rootfs.join("bin/busybox")).unwrap();
    for applet in ["sh", "sleep", "cat", "echo"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    rootfs
}

/// The real runc runs a busybox container whose cgroup (`linux.cgroupsPath`, cgroupfs
/// driver) is `/<prefix>/<id>`, with a pids limit and CPU shares so that runc writes
/// them; `runc run` in the foreground creates the cgroups in every hierarchy, writes the
/// limits and `cgroup.procs`, and removes them when the container exits. Step `runc/run`.
pub fn runc(obs: Observer) {
    require_exe(RUNC, "runc");
    let dir = TempDir::new("runc");
    busybox_rootfs(&dir);
    let state = dir.path.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let bundle = dir.path.to_str().unwrap();
    run_out(RUNC, &["spec", "--bundle", bundle]);
    let prefix = unique("rt");
    let _prefix = CgroupPrefixGuard(prefix.clone());
    let id = unique("ctr");
    let cgroup = format!("/{prefix}/{id}");
    let config = dir.path.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    spec["process"]["terminal"] = false.into();
    spec["process"]["args"] = serde_json::json!(["sh", "-c", "echo hello from the container; sleep 0.2"]);
    spec["root"]["readonly"] = true.into();
    spec["hostname"] = "tracer-test".into();
    spec["linux"]["cgroupsPath"] = cgroup.clone().into();
    spec["linux"]["resources"]["pids"] = serde_json::json!({ "limit": 64 });
    spec["linux"]["resources"]["cpu"] = serde_json::json!({ "shares": 512 });
    std::fs::write(&config, serde_json::to_string_pretty(&spec).unwrap()).unwrap();

    let _container = RuncContainerGuard { state: state.clone(), id: id.clone() };
    let child = std::process::Command::new(RUNC)
        .args(["--root", state.to_str().unwrap(), "run", "--bundle", bundle, &id])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn runc");
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "runc run failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("hello from the container"));
    obs(&Step {
        id: "runc/run",
        text: format!("runc ran container {id} in cgroup {cgroup} and removed it"),
        expect: None,
        actor: Some("runc"),
        pid: Some(pid),
        cgroup: Some(cgroup),
        extra: vec![("prefix", format!("/{prefix}"))],
        at: Some(Instant::now()),
        ..Default::default()
    });
}

pub const CONTAINERD: &str = "/usr/bin/containerd";

/// The real containerd (private root, state, socket and /run; no CRI plugin, no
/// registry) runs a busybox container with `ctr run --rootfs --cgroup /<prefix>/<id>`:
/// containerd starts its runc shim, the shim runs runc, runc creates, writes and removes
/// the container's cgroups. Step `containerd/run`.
pub fn containerd(obs: Observer) {
    require_exe(CONTAINERD, "containerd");
    require_exe("/usr/bin/ctr", "containerd");
    require_exe("/usr/bin/containerd-shim-runc-v2", "containerd");
    require_exe(RUNC, "runc");
    let dir = TempDir::new("containerd");
    let rootfs = busybox_rootfs(&dir);
    let prefix = unique("rt");
    let _prefix = CgroupPrefixGuard(prefix.clone());
    let id = unique("ctr");
    let cgroup = format!("/{prefix}/{id}");
    let d = dir.path.display();
    dir.write(
        "config.toml",
        &format!(
            "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{d}/containerd.sock\"\n"
        ),
    );
    let script = format!(
        r#"set -e
mount -t tmpfs -o mode=755 tmpfs /run
{CONTAINERD} --config {d}/config.toml >{d}/containerd.log 2>&1 &
for i in $(seq 100); do ctr --address {d}/containerd.sock version >/dev/null 2>&1 && break; sleep 0.1; done
echo READY
ctr --address {d}/containerd.sock run --rm --cgroup {cgroup} --rootfs {rootfs} {id} /bin/sh -c 'echo hello from the container; sleep 0.2'
echo DONE
kill $! || true
wait || true
echo BYE
"#,
        rootfs = rootfs.display()
    );
    let mut sb = Sandbox::start(None, &script);
    sb.expect("READY");
    let pid = sb.child.pid();
    sb.expect("DONE");
    obs(&Step {
        id: "containerd/run",
        text: format!("containerd + ctr ran container {id} in cgroup {cgroup} and removed it"),
        expect: None,
        actor: Some("runc"),
        pid: Some(pid),
        cgroup: Some(cgroup),
        extra: vec![("prefix", format!("/{prefix}"))],
        at: Some(Instant::now()),
        ..Default::default()
    });
    sb.expect("BYE");
}
