//! Incident 3: the real systemd-networkd deletes Cilium's routing policy rules and routes.

use std::time::Instant;

use super::*;

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
pub(super) struct Sandbox {
    pub(super) child: ChildGuard,
    out: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
}

impl Sandbox {
    /// In `ns`, or in this netns when `None` (`ip netns exec` mounts a fresh /sys, which
    /// hides the cgroup mounts a runtime needs).
    pub(super) fn start(ns: Option<&NetNsGuard>, script: &str) -> Sandbox {
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
    pub(super) fn expect(&mut self, word: &str) -> String {
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

    pub(super) fn say(&mut self, line: &str) {
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
