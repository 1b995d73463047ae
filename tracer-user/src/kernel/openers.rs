//! Seeds the kernel's `CG_OPENERS` map with processes that already hold a cgroupfs file
//! when tracer starts (tracer-ebpf/src/openers.rs says why the map exists): without
//! this, a process that opened `cgroup.subtree_control` before tracer started and writes
//! to it later would not be seen.
use aya::maps::HashMap;
use aya::Ebpf;
use tracer_common::{CGROUP2_SUPER_MAGIC, CGROUP_SUPER_MAGIC};

/// Is the file behind this path (an fd link under /proc) on cgroupfs?
fn on_cgroupfs(path: &std::path::Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else { return false };
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and out pointer. statfs follows the magic fd link to the
    // open file's filesystem.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return false;
    }
    let t = st.f_type as u64;
    t == CGROUP_SUPER_MAGIC || t == CGROUP2_SUPER_MAGIC
}

/// Pids (under `proc_root`) with at least one fd on cgroupfs.
pub fn scan(proc_root: &std::path::Path) -> Vec<u32> {
    let mut pids = Vec::new();
    let Ok(rd) = std::fs::read_dir(proc_root) else { return pids };
    for entry in rd.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else { continue };
        if fds.flatten().any(|fd| on_cgroupfs(&fd.path())) {
            pids.push(pid);
        }
    }
    pids
}

/// Marks every current holder of a cgroupfs fd in the kernel map; returns how many.
pub fn seed(ebpf: &mut Ebpf, proc_root: &std::path::Path) -> Result<usize, String> {
    let map = ebpf.map_mut("CG_OPENERS").ok_or("map CG_OPENERS missing")?;
    let mut map: HashMap<_, u32, u8> = HashMap::try_from(map).map_err(|e| e.to_string())?;
    let pids = scan(proc_root);
    for pid in &pids {
        map.insert(pid, 1, 0).map_err(|e| format!("CG_OPENERS insert: {e}"))?;
    }
    Ok(pids.len())
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_a_process_holding_a_cgroup_file() {
        let Some(root) = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
            .iter()
            .map(std::path::Path::new)
            .find(|p| p.join("cgroup.procs").exists())
        else {
            panic!("no cgroup filesystem mounted: cannot test the opener scan");
        };
        let _held = std::fs::File::open(root.join("cgroup.procs")).unwrap();
        let pids = super::scan(std::path::Path::new("/proc"));
        assert!(pids.contains(&std::process::id()), "own pid not found among {pids:?}");
    }
}
