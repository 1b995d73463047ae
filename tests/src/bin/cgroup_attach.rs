//! `tracer-cgroup-attach`: the tests' stand-in for cilium-agent's socket load balancer.
//! The tests copy it to a directory as `cilium-agent` (and as `containerd-shim-runc-v2`,
//! its parent in a pod) so that tracer names it by executable, as it would the real agent.
//!
//! It loads minimal programs (`r0 = 1; exit`: allow everything) of the socket-address and
//! socket types with raw `bpf()` calls (include/uapi/linux/bpf.h), attaches them with
//! BPF_PROG_ATTACH or BPF_LINK_CREATE at the cgroup2 root *it sees*, prints one JSON line
//! saying what it did, and waits on stdin: `detach` detaches everything (BPF_PROG_DETACH,
//! BPF_LINK_DETACH), end of input exits (links go with the process; a BPF_PROG_ATTACH
//! stays until detached or its cgroup is removed, which the tests' guards do).
//!
//! ```text
//! cilium-agent --join /sys/fs/cgroup/tt-x/agent --cgroupns private \
//!     --attach prog:10:cil_sock4_connect,link:11:cil_sock6_connect
//! cilium-agent --cgroupns host --root /sys/fs/cgroup --attach link:10:cil_sock4_connect
//! ```
//! `--cgroupns private` joins the cgroup first, then unshares its cgroup and mount
//! namespaces and mounts cgroup2 on a directory of its own (in its own mount namespace
//! only): the root it sees is the cgroup it joined, as for an agent in a container with a
//! private cgroup namespace.

use std::ffi::CString;
use std::io::BufRead;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

const BPF_PROG_LOAD: i64 = 5;
const BPF_PROG_ATTACH: i64 = 8;
const BPF_PROG_DETACH: i64 = 9;
const BPF_OBJ_GET_INFO_BY_FD: i64 = 15;
const BPF_LINK_CREATE: i64 = 28;
const BPF_LINK_DETACH: i64 = 34;
const BPF_F_ALLOW_MULTI: u32 = 2;

fn bpf(cmd: i64, attr: &mut [u8; 128]) -> Result<i64, String> {
    // SAFETY: a zeroed 128-byte `union bpf_attr`, valid for the call.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len() as u32) };
    if r < 0 {
        Err(std::io::Error::last_os_error().to_string())
    } else {
        Ok(r)
    }
}

fn put32(a: &mut [u8; 128], off: usize, v: u32) {
    a[off..off + 4].copy_from_slice(&v.to_ne_bytes());
}
fn put64(a: &mut [u8; 128], off: usize, v: u64) {
    a[off..off + 8].copy_from_slice(&v.to_ne_bytes());
}

fn fd(r: i64) -> OwnedFd {
    // SAFETY: a new fd the kernel returned.
    unsafe { OwnedFd::from_raw_fd(r as i32) }
}

/// `BPF_PROG_TYPE_CGROUP_SOCK` for the socket hooks, `CGROUP_SOCK_ADDR` for the rest.
fn prog_type(attach_type: u32) -> u32 {
    match attach_type {
        2 | 12 | 13 | 34 => 9,
        _ => 18,
    }
}

/// Loads `r0 = 1; exit` for `attach_type`, named `name` (the kernel keeps 15 bytes).
fn load(attach_type: u32, name: &str) -> Result<OwnedFd, String> {
    // BPF_ALU64|BPF_MOV|BPF_K r0 = 1; BPF_JMP|BPF_EXIT.
    let insns: [u8; 16] = [0xb7, 0, 0, 0, 1, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0];
    let license = b"GPL\0";
    let mut log = vec![0u8; 4096];
    let mut a = [0u8; 128];
    put32(&mut a, 0, prog_type(attach_type));
    put32(&mut a, 4, 2);
    put64(&mut a, 8, insns.as_ptr() as u64);
    put64(&mut a, 16, license.as_ptr() as u64);
    put32(&mut a, 24, 1); // log_level
    put32(&mut a, 28, log.len() as u32);
    put64(&mut a, 32, log.as_mut_ptr() as u64);
    let n = name.len().min(15);
    a[48..48 + n].copy_from_slice(&name.as_bytes()[..n]);
    put32(&mut a, 68, attach_type); // expected_attach_type
    bpf(BPF_PROG_LOAD, &mut a).map(fd).map_err(|e| {
        format!("BPF_PROG_LOAD {name}: {e}: {}", String::from_utf8_lossy(&log).trim_matches('\0'))
    })
}

/// `id` of a program or link (`struct bpf_prog_info` / `bpf_link_info`: at 4).
fn id_of(f: &OwnedFd) -> u32 {
    let mut info = [0u8; 64];
    let mut a = [0u8; 128];
    put32(&mut a, 0, f.as_raw_fd() as u32);
    put32(&mut a, 4, info.len() as u32);
    put64(&mut a, 8, info.as_mut_ptr() as u64);
    match bpf(BPF_OBJ_GET_INFO_BY_FD, &mut a) {
        Ok(_) => u32::from_ne_bytes(info[4..8].try_into().unwrap()),
        Err(_) => 0,
    }
}

struct Attached {
    via: String,
    attach_type: u32,
    prog: OwnedFd,
    link: Option<OwnedFd>,
}

fn die(msg: impl std::fmt::Display) -> ! {
    eprintln!("tracer-cgroup-attach: {msg}");
    std::process::exit(2);
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

/// As `containerd-shim-runc-v2`: run the `cilium-agent` beside this file with the same
/// arguments, the way a shim runs a pod's container process.
fn shim(args: &[String]) -> ! {
    let me = std::env::current_exe().unwrap_or_else(|e| die(e));
    let agent = me.with_file_name("cilium-agent");
    let status = std::process::Command::new(agent).args(args).status().unwrap_or_else(|e| die(e));
    std::process::exit(status.code().unwrap_or(1));
}

fn private_root(join: &Path) -> PathBuf {
    std::fs::write(join.join("cgroup.procs"), std::process::id().to_string())
        .unwrap_or_else(|e| die(format!("joining {}: {e}", join.display())));
    // SAFETY: plain syscalls on this single-threaded process.
    unsafe {
        if libc::unshare(libc::CLONE_NEWCGROUP | libc::CLONE_NEWNS) != 0 {
            die(format!("unshare: {}", std::io::Error::last_os_error()));
        }
        // Only this new mount namespace's copies become private: the machine's mounts
        // are left as they are.
        let root = CString::new("/").unwrap();
        if libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            die(format!("making / private in the new mount namespace: {}", std::io::Error::last_os_error()));
        }
    }
    // Beside this binary: the tests' temporary directory, removed with it.
    let me = std::env::current_exe().unwrap_or_else(|e| die(e));
    let dir = me.with_file_name(format!("cgroup2-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| die(e));
    let (src, fstype, target) = (
        CString::new("none").unwrap(),
        CString::new("cgroup2").unwrap(),
        CString::new(dir.to_str().unwrap()).unwrap(),
    );
    // SAFETY: valid C strings.
    if unsafe { libc::mount(src.as_ptr(), target.as_ptr(), fstype.as_ptr(), 0, std::ptr::null()) } != 0 {
        die(format!("mounting cgroup2 on {}: {}", dir.display(), std::io::Error::last_os_error()));
    }
    dir
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let argv0 = std::env::args().next().unwrap_or_default();
    if Path::new(&argv0).file_name().is_some_and(|n| n.to_string_lossy().starts_with("containerd-shim")) {
        shim(&args);
    }
    // Never outlive the test (or the shim) that started it.
    // SAFETY: prctl with an integer argument.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    let private = arg(&args, "--cgroupns").as_deref() == Some("private");
    let root = if private {
        private_root(Path::new(&arg(&args, "--join").unwrap_or_else(|| die("--join DIR is needed"))))
    } else {
        if let Some(j) = arg(&args, "--join") {
            std::fs::write(Path::new(&j).join("cgroup.procs"), std::process::id().to_string())
                .unwrap_or_else(|e| die(format!("joining {j}: {e}")));
        }
        PathBuf::from(
            arg(&args, "--root").unwrap_or_else(|| die("--root DIR is needed with --cgroupns host")),
        )
    };
    let dir = std::fs::File::open(&root).unwrap_or_else(|e| die(format!("{}: {e}", root.display())));
    let mut attached = Vec::new();
    for spec in arg(&args, "--attach").unwrap_or_else(|| die("--attach is needed")).split(',') {
        let mut it = spec.splitn(3, ':');
        let (via, t, name) = (it.next().unwrap_or(""), it.next().unwrap_or(""), it.next().unwrap_or("prog"));
        let t: u32 = t.parse().unwrap_or_else(|_| die(format!("bad attach type in {spec}")));
        let prog = load(t, name).unwrap_or_else(|e| die(e));
        let mut a = [0u8; 128];
        let link = match via {
            "prog" => {
                put32(&mut a, 0, dir.as_raw_fd() as u32);
                put32(&mut a, 4, prog.as_raw_fd() as u32);
                put32(&mut a, 8, t);
                put32(&mut a, 12, BPF_F_ALLOW_MULTI);
                bpf(BPF_PROG_ATTACH, &mut a).unwrap_or_else(|e| die(format!("BPF_PROG_ATTACH {spec}: {e}")));
                None
            }
            "link" => {
                put32(&mut a, 0, prog.as_raw_fd() as u32);
                put32(&mut a, 4, dir.as_raw_fd() as u32);
                put32(&mut a, 8, t);
                Some(fd(bpf(BPF_LINK_CREATE, &mut a)
                    .unwrap_or_else(|e| die(format!("BPF_LINK_CREATE {spec}: {e}")))))
            }
            other => die(format!("unknown attach method {other} (prog or link)")),
        };
        attached.push(Attached { via: via.to_string(), attach_type: t, prog, link });
    }
    let list: Vec<serde_json::Value> = attached
        .iter()
        .map(|a| {
            serde_json::json!({
                "via": a.via,
                "attach_type": a.attach_type,
                "prog_id": id_of(&a.prog),
                "link_id": a.link.as_ref().map(id_of),
            })
        })
        .collect();
    println!("{}", serde_json::json!({ "pid": std::process::id(), "root": root, "attached": list }));
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        if line.trim() == "detach" {
            for a in &attached {
                let mut attr = [0u8; 128];
                let r = match &a.link {
                    Some(l) => {
                        put32(&mut attr, 0, l.as_raw_fd() as u32);
                        bpf(BPF_LINK_DETACH, &mut attr)
                    }
                    None => {
                        put32(&mut attr, 0, dir.as_raw_fd() as u32);
                        put32(&mut attr, 4, a.prog.as_raw_fd() as u32);
                        put32(&mut attr, 8, a.attach_type);
                        bpf(BPF_PROG_DETACH, &mut attr)
                    }
                };
                if let Err(e) = r {
                    die(format!("detaching {} {}: {e}", a.via, a.attach_type));
                }
            }
            println!("{}", serde_json::json!({ "detached": attached.len() }));
        }
    }
    if private {
        let target = CString::new(root.to_str().unwrap()).unwrap();
        drop(dir);
        // SAFETY: a valid C string; the mount is this namespace's own.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        let _ = std::fs::remove_dir(&root);
    }
}
