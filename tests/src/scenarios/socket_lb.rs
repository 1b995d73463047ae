//! Incident 4: Cilium's socket load balancer attached inside a private cgroup namespace.
//!
//! The stand-in agent (`tracer-cgroup-attach`, copied as `cilium-agent` and run by a
//! `containerd-shim-runc-v2` as in a pod) loads real socket-address programs and attaches
//! them with BPF_PROG_ATTACH and BPF_LINK_CREATE at the cgroup2 root it sees: in a private
//! cgroup namespace with a cgroup2 mount of its own that root is its own cgroup (the
//! incident); in the host's it is the host root (correct, no finding). The programs allow
//! everything (`r0 = 1`), so even at the host root nothing on the machine changes; links
//! go with the agent, program attaches are detached by the agent or by the guards.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::Value;

use super::{Observer, Step};
use crate::*;

/// `BPF_CGROUP_INET4_CONNECT`, `INET6_CONNECT`, `UDP4_SENDMSG`, `INET4_POST_BIND`.
pub const CONNECT4: u32 = 10;
pub const CONNECT6: u32 = 11;
pub const SENDMSG4: u32 = 14;
pub const POST_BIND4: u32 = 12;

/// The stand-in agent: its pid, what it attached, and its stdin to detach.
pub struct Agent {
    shim: ChildGuard,
    stdin: Option<std::process::ChildStdin>,
    out: BufReader<std::process::ChildStdout>,
    /// The agent's own pid (the shim's child).
    pub pid: u32,
    /// `{"via", "attach_type", "prog_id", "link_id"}` per program.
    pub attached: Vec<Value>,
    /// The cgroup2 directory it attached at, as the test sees it (host root attaches
    /// are detached by the guard if the agent did not).
    host_target: Option<std::path::PathBuf>,
    detached: bool,
    _bin: TempDir,
}

/// The agent binary next to the tracer under test (cargo builds it into the same
/// directory; the VM payload carries it beside the tracer).
fn agent_bin() -> std::path::PathBuf {
    let p = tracer_bin().with_file_name("tracer-cgroup-attach");
    assert!(p.exists(), "{} not built: run `cargo xtask test` (it builds the tests' helpers)", p.display());
    p
}

impl Agent {
    /// Starts `containerd-shim-runc-v2` -> `cilium-agent <args>` and waits for its report.
    pub fn start(args: &[&str], host_target: Option<&std::path::Path>) -> Agent {
        let bin = TempDir::new("cilium-bin");
        for name in ["cilium-agent", "containerd-shim-runc-v2"] {
            std::fs::copy(agent_bin(), bin.path.join(name)).expect("copy the agent stand-in");
        }
        let mut child = Command::new(bin.path.join("containerd-shim-runc-v2"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the agent stand-in");
        let stdin = child.stdin.take();
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let shim = ChildGuard(child);
        let mut line = String::new();
        out.read_line(&mut line).expect("the agent's report");
        let v: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("the agent stand-in failed ({e}): {line:?}; its stderr says why"));
        Agent {
            shim,
            stdin,
            out,
            pid: v["pid"].as_u64().expect("pid") as u32,
            attached: v["attached"].as_array().cloned().unwrap_or_default(),
            host_target: host_target.map(|p| p.to_path_buf()),
            detached: false,
            _bin: bin,
        }
    }

    /// Ids of the programs attached, in attach order.
    pub fn prog_ids(&self) -> Vec<u64> {
        self.attached.iter().filter_map(|a| a["prog_id"].as_u64()).collect()
    }

    /// Asks the agent to detach everything and waits until it has.
    pub fn detach(&mut self) {
        let stdin = self.stdin.as_mut().expect("stdin");
        writeln!(stdin, "detach").expect("write to the agent");
        stdin.flush().unwrap();
        let mut line = String::new();
        self.out.read_line(&mut line).expect("the agent's detach report");
        assert!(line.contains("detached"), "the agent could not detach: {line:?}");
        self.detached = true;
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // Program attaches at the host root outlive the agent: detach them here if the
        // agent did not (a test that failed half-way).
        if !self.detached {
            if let Some(root) = &self.host_target {
                for a in &self.attached {
                    if a["via"] == "prog" {
                        detach_by_id(
                            root,
                            a["attach_type"].as_u64().unwrap() as u32,
                            a["prog_id"].as_u64().unwrap() as u32,
                        );
                    }
                }
            }
        }
        self.stdin = None; // end of input: the agent exits
                           // SAFETY: the agent is our own (the shim we started runs it), killed by pid.
        unsafe { libc::kill(self.pid as i32, libc::SIGKILL) };
        let _ = &self.shim;
    }
}

/// BPF_PROG_DETACH of program `id` from the cgroup directory `dir`.
fn detach_by_id(dir: &std::path::Path, attach_type: u32, id: u32) {
    use std::os::fd::AsRawFd;
    let Ok(d) = std::fs::File::open(dir) else { return };
    let mut a = [0u8; 128];
    a[..4].copy_from_slice(&id.to_ne_bytes());
    // SAFETY: BPF_PROG_GET_FD_BY_ID (13) with a zeroed 128-byte attr.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, 13i64, a.as_mut_ptr(), 128u32) };
    if fd < 0 {
        return;
    }
    let mut a = [0u8; 128];
    a[..4].copy_from_slice(&(d.as_raw_fd() as u32).to_ne_bytes());
    a[4..8].copy_from_slice(&(fd as u32).to_ne_bytes());
    a[8..12].copy_from_slice(&attach_type.to_ne_bytes());
    // SAFETY: BPF_PROG_DETACH (9), as above; then our own fd is closed.
    unsafe {
        libc::syscall(libc::SYS_bpf, 9i64, a.as_mut_ptr(), 128u32);
        libc::close(fd as i32);
    }
}

/// The agent in a private cgroup namespace attaches at its own cgroup (finding), detaches;
/// the agent in the host's cgroup namespace attaches at the host root (no finding),
/// detaches.
pub fn cilium_socket_lb(obs: Observer) {
    require_root();
    let root = cgroup2_root();
    let top = CgroupGuard::new(&root, &unique("socketlb"));
    let pod = CgroupGuard::new(&top.path, "cilium-pod");

    let attach = format!("prog:{CONNECT4}:cil_sock4_connect,link:{CONNECT6}:cil_sock6_connect,link:{SENDMSG4}:cil_sock4_sendmsg,prog:{POST_BIND4}:cil_sock4_post_bind");
    let mut agent = Agent::start(
        &["--join", pod.path.to_str().unwrap(), "--cgroupns", "private", "--attach", &attach],
        None,
    );
    let nested = format!("{}/cilium-pod", top.rel);
    obs(&Step {
        id: "socket_lb/nested",
        text: format!(
            "cilium-agent in a private cgroup namespace attached its socket LB at its own root, {nested}"
        ),
        expect: Some("cilium-socket-lb-nested-cgroup"),
        actor: Some("cilium-agent"),
        pid: Some(agent.pid),
        cgroup: Some(nested.clone()),
        extra: vec![("prog_ids", agent.prog_ids().iter().map(u64::to_string).collect::<Vec<_>>().join(","))],
        at: Some(Instant::now()),
        ..Default::default()
    });
    agent.detach();
    obs(&Step {
        id: "socket_lb/nested-detached",
        text: format!("cilium-agent detached its programs from {nested}"),
        pid: Some(agent.pid),
        cgroup: Some(nested.clone()),
        at: Some(Instant::now()),
        ..Default::default()
    });
    drop(agent);

    let host_pod = CgroupGuard::new(&top.path, "cilium-pod-hostns");
    let attach = format!("prog:{CONNECT4}:cil_sock4_connect,link:{CONNECT6}:cil_sock6_connect");
    let mut agent = Agent::start(
        &[
            "--join",
            host_pod.path.to_str().unwrap(),
            "--cgroupns",
            "host",
            "--root",
            root.to_str().unwrap(),
            "--attach",
            &attach,
        ],
        Some(&root),
    );
    obs(&Step {
        id: "socket_lb/host-root",
        text: "cilium-agent in the host's cgroup namespace attached its socket LB at the host's cgroup2 root"
            .into(),
        expect: None,
        actor: Some("cilium-agent"),
        pid: Some(agent.pid),
        cgroup: Some("/".into()),
        extra: vec![("prog_ids", agent.prog_ids().iter().map(u64::to_string).collect::<Vec<_>>().join(","))],
        at: Some(Instant::now()),
        ..Default::default()
    });
    agent.detach();
    drop(agent);
    drop(host_pod);
    drop(pod);
}

/// The agent attaches at its own cgroup from a private cgroup namespace *before* tracer
/// starts: the step is handed over with the agent still holding its programs, for the
/// caller to start tracer then.
pub fn cilium_socket_lb_before_start(obs: Observer) {
    require_root();
    let root = cgroup2_root();
    let top = CgroupGuard::new(&root, &unique("socketlb-before"));
    let pod = CgroupGuard::new(&top.path, "cilium-pod");
    let attach = format!("prog:{CONNECT4}:cil_sock4_connect,link:{SENDMSG4}:cil_sock4_sendmsg");
    let mut agent = Agent::start(
        &["--join", pod.path.to_str().unwrap(), "--cgroupns", "private", "--attach", &attach],
        None,
    );
    let nested = format!("{}/cilium-pod", top.rel);
    obs(&Step {
        id: "socket_lb/before-start",
        text: format!("cilium-agent attached its socket LB at {nested} before tracer started"),
        expect: Some("cilium-socket-lb-nested-cgroup"),
        actor: Some("cilium-agent"),
        pid: Some(agent.pid),
        cgroup: Some(nested),
        extra: vec![("prog_ids", agent.prog_ids().iter().map(u64::to_string).collect::<Vec<_>>().join(","))],
        at: Some(Instant::now()),
        ..Default::default()
    });
    agent.detach();
    drop(agent);
    drop(pod);
}
