//! Kernel struct field offsets from the running kernel's BTF.
//!
//! aya's Rust programs get no CO-RE relocations, and bindings generated from one
//! kernel's BTF carry that kernel's offsets. So every offset the programs use is looked
//! up here, at load time, in `/sys/kernel/btf/vmlinux`, and handed to them as the global
//! `OFFSETS` (docs/DESIGN.md, "No kernel layout is compiled in"). Fields renamed across
//! kernel versions are handled in this one table (`kernfs_node.parent` became
//! `__parent` in 6.15).

use std::collections::HashMap;
use std::path::Path;

use btf_rs::{Btf, Type};
use thiserror::Error;
use tracer_common::Offsets;

/// Where the kernel exposes its own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, Error)]
pub enum OffsetError {
    /// The BTF file is missing or unreadable.
    #[error("cannot read kernel BTF at {path}. tracer needs a kernel built with CONFIG_DEBUG_INFO_BTF=y (5.8+); check that {path} exists")]
    NoBtf {
        path: String,
        #[source]
        source: btf_rs::Error,
    },
    /// The kernel has no such struct.
    #[error("kernel BTF has no `struct {structure}` (needed for {purpose}); this kernel is not supported")]
    MissingStruct { structure: &'static str, purpose: &'static str },
    /// The struct has none of the field names tracer knows.
    #[error("kernel BTF: `struct {structure}` has no field `{field}` (needed for {purpose}); this kernel renamed or removed it, tracer must learn the new name")]
    MissingField { structure: &'static str, field: String, purpose: &'static str },
    /// The field exists but with another size than the programs read.
    #[error("kernel BTF: `struct {structure}.{field}` is {got} bytes, tracer reads {want}")]
    WrongWidth { structure: &'static str, field: String, got: usize, want: usize },
}

/// One offset to resolve: a struct, the field path (alternative names for renamed
/// fields, `a.b` for nested members), and the width the programs read.
struct Spec {
    structure: &'static str,
    fields: &'static [&'static str],
    width: usize,
    purpose: &'static str,
    set: fn(&mut Offsets, u32),
}

macro_rules! spec {
    ($s:literal, [$($f:literal),+], $w:expr, $purpose:literal, $field:ident) => {
        Spec {
            structure: $s,
            fields: &[$($f),+],
            width: $w,
            purpose: $purpose,
            set: |o, v| o.$field = v,
        }
    };
}

const PTR: usize = 8;

/// Everything the programs read. Kept in the order of `tracer_common::Offsets`.
const SPECS: &[Spec] = &[
    spec!("task_struct", ["pid"], 4, "thread id", task_pid),
    spec!("task_struct", ["tgid"], 4, "process id", task_tgid),
    spec!("task_struct", ["real_parent"], PTR, "parent process", task_real_parent),
    spec!("task_struct", ["group_leader"], PTR, "process start time", task_group_leader),
    spec!("task_struct", ["comm"], 16, "process name", task_comm),
    spec!(
        "task_struct",
        ["start_boottime", "real_start_time"],
        8,
        "process key (pid, start time)",
        task_start_boottime
    ),
    spec!("task_struct", ["nsproxy"], PTR, "network namespace", task_nsproxy),
    spec!("task_struct", ["files"], PTR, "fd -> file", task_files),
    spec!("task_struct", ["cgroups"], PTR, "signal target cgroup", task_cgroups),
    spec!("task_struct", ["exit_code"], 4, "exit code", task_exit_code),
    spec!("nsproxy", ["net_ns"], PTR, "network namespace", nsproxy_net_ns),
    spec!("net", ["ns.inum"], 4, "network namespace inode", net_ns_inum),
    spec!("files_struct", ["fdt"], PTR, "fd -> file", files_fdt),
    spec!("fdtable", ["max_fds"], 4, "fd -> file", fdtable_max_fds),
    spec!("fdtable", ["fd"], PTR, "fd -> file", fdtable_fd),
    spec!("file", ["f_inode"], PTR, "file -> inode", file_inode),
    spec!("file", ["private_data"], PTR, "file -> socket", file_private_data),
    spec!("inode", ["i_sb"], PTR, "filesystem magic", inode_sb),
    spec!("inode", ["i_private"], PTR, "cgroupfs kernfs node", inode_private),
    spec!("super_block", ["s_magic"], 8, "filesystem magic", sb_magic),
    spec!("kernfs_node", ["__parent", "parent"], PTR, "cgroup path", kn_parent),
    spec!("kernfs_node", ["name"], PTR, "cgroup path", kn_name),
    spec!("kernfs_node", ["id"], 8, "cgroup id", kn_id),
    spec!("kernfs_node", ["priv"], PTR, "kernfs node -> cgroup", kn_priv),
    spec!("cgroup", ["kn"], PTR, "cgroup id", cgroup_kn),
    spec!("cgroup", ["root"], PTR, "cgroup hierarchy", cgroup_root),
    spec!("cgroup", ["subtree_control"], 2, "controllers enabled", cgroup_subtree_control),
    spec!("cgroup", ["level"], 4, "cgroup level", cgroup_level),
    spec!("cgroup_root", ["hierarchy_id"], 4, "cgroup hierarchy", cgroup_root_hierarchy_id),
    spec!("css_set", ["dfl_cgrp"], PTR, "signal target cgroup", css_set_dfl_cgrp),
    spec!("socket", ["sk"], PTR, "netlink socket", socket_sk),
    spec!("sock", ["__sk_common.skc_family"], 2, "socket family", sock_family),
    spec!("sock", ["sk_protocol"], 2, "socket protocol", sock_protocol),
    spec!("pt_regs", ["di"], 8, "syscall arguments", regs_di),
    spec!("pt_regs", ["si"], 8, "syscall arguments", regs_si),
    spec!("pt_regs", ["dx"], 8, "syscall arguments", regs_dx),
    spec!("pt_regs", ["r10"], 8, "syscall arguments", regs_r10),
    spec!("pt_regs", ["orig_ax"], 8, "syscall number", regs_orig_ax),
    spec!("linux_binprm", ["filename"], PTR, "executable path", binprm_filename),
    spec!("task_struct", ["mm"], PTR, "command line", task_mm),
    spec!("mm_struct", ["arg_start"], 8, "command line", mm_arg_start),
    spec!("mm_struct", ["arg_end"], 8, "command line", mm_arg_end),
    spec!("nsproxy", ["cgroup_ns"], PTR, "attacher's cgroup namespace", nsproxy_cgroup_ns),
    spec!("cgroup_namespace", ["root_cset"], PTR, "attacher's cgroup namespace", cgroup_ns_root_cset),
    spec!("file", ["f_path.dentry"], PTR, "bpf fd kind", file_dentry),
    spec!("dentry", ["d_name.name"], PTR, "bpf fd kind", dentry_name),
    spec!("bpf_prog", ["type"], 4, "attached program type", prog_type),
    spec!("bpf_prog", ["aux"], PTR, "attached program", prog_aux),
    spec!("bpf_prog_aux", ["id"], 4, "attached program id", prog_aux_id),
    spec!("bpf_prog_aux", ["name"], 16, "attached program name", prog_aux_name),
    spec!("bpf_link", ["id"], 4, "cgroup link id", link_id),
    spec!("bpf_link", ["type"], 4, "cgroup link type", link_type),
    spec!("bpf_link", ["prog"], PTR, "detached program", link_prog),
    spec!("bpf_cgroup_link", ["cgroup"], PTR, "detached link's cgroup", cgroup_link_cgroup),
    spec!(
        "bpf_cgroup_link",
        ["type", "link.attach_type"],
        4,
        "detached link's attach type",
        cgroup_link_attach_type
    ),
    spec!("kernfs_open_file", ["kn"], PTR, "cgroup file written (kernel-function mode)", kof_kn),
];

/// Number of offsets resolved (shown by `tracer check`).
pub fn count() -> usize {
    SPECS.len()
}

/// Resolves every offset from the running kernel's BTF.
pub fn from_running_kernel() -> Result<Offsets, OffsetError> {
    from_file(Path::new(VMLINUX_BTF))
}

pub fn from_file(path: &Path) -> Result<Offsets, OffsetError> {
    resolve(&open(path)?)
}

/// Opens a BTF file: mapped where the kernel allows it, else read and parsed whole.
///
/// Mapping reads only the types looked up: parsing all of vmlinux's (btf-rs's `Cache`
/// backend) took 213 ms of a 315 ms start-up and left 26 MiB of heap behind (issue 12's
/// measurements). `/sys/kernel/btf/vmlinux` can be mapped since Linux 6.16 (kernel/bpf/
/// sysfs_btf.c, `btf_sysfs_vmlinux_mmap`); on older kernels the map fails and the file
/// is parsed as before.
pub fn open(path: &Path) -> Result<Btf, OffsetError> {
    match Btf::from_file_with_backend(path, btf_rs::Backend::Mmap) {
        Ok(btf) => Ok(btf),
        Err(e) => {
            tracing::debug!("cannot map {}: {e}; reading it whole", path.display());
            Btf::from_file(path)
                .map_err(|source| OffsetError::NoBtf { path: path.display().to_string(), source })
        }
    }
}

/// Controller names indexed by subsystem id (`enum cgroup_subsys_id`), which is the bit
/// order of `cgroup::subtree_control`. The names are the cgroup v2 ones (`io`, not
/// `blkio`). Empty when the kernel has no such enum.
pub fn controllers(btf: &Btf) -> Vec<String> {
    let mut names = Vec::new();
    let Ok(types) = btf.resolve_types_by_name("cgroup_subsys_id") else { return names };
    for t in types {
        if let Type::Enum(e) = t {
            for m in &e.members {
                let Ok(name) = btf.resolve_name(m) else { continue };
                let Some(short) = name.strip_suffix("_cgrp_id") else { continue };
                let id = m.val() as usize;
                if id < 64 {
                    if names.len() <= id {
                        names.resize(id + 1, String::new());
                    }
                    names[id] = short.to_string();
                }
            }
        }
    }
    names
}

/// Names of the controllers whose bits are set in `mask`.
pub fn mask_names(controllers: &[String], mask: u16) -> Vec<String> {
    (0..16)
        .filter(|bit| mask & (1 << bit) != 0)
        .map(|bit| {
            controllers.get(bit).filter(|n| !n.is_empty()).cloned().unwrap_or_else(|| format!("ss{bit}"))
        })
        .collect()
}

pub fn from_bytes(bytes: &[u8]) -> Result<Offsets, OffsetError> {
    let btf =
        Btf::from_bytes(bytes).map_err(|source| OffsetError::NoBtf { path: "<bytes>".into(), source })?;
    resolve(&btf)
}

pub fn resolve(btf: &Btf) -> Result<Offsets, OffsetError> {
    let mut o = Offsets::default();
    let mut wanted: Vec<&str> = SPECS.iter().map(|s| s.structure).collect();
    wanted.sort_unstable();
    wanted.dedup();
    let structs = find_structs(btf, &wanted);
    for spec in SPECS {
        let st = structs
            .get(spec.structure)
            .ok_or(OffsetError::MissingStruct { structure: spec.structure, purpose: spec.purpose })?;
        let mut found = None;
        for field in spec.fields {
            if let Some(hit) = field_path(btf, st, field) {
                found = Some((field, hit));
                break;
            }
        }
        let Some((field, (offset, size))) = found else {
            return Err(OffsetError::MissingField {
                structure: spec.structure,
                field: spec.fields.join("` or `"),
                purpose: spec.purpose,
            });
        };
        if size != spec.width {
            return Err(OffsetError::WrongWidth {
                structure: spec.structure,
                field: field.to_string(),
                got: size,
                want: spec.width,
            });
        }
        (spec.set)(&mut o, offset);
    }
    o.ready = 1;
    Ok(o)
}

/// The structs named `names` (definitions with members, not forward declarations), found
/// in one pass over the BTF's type names: with the mapped backend each lookup by name is
/// a scan of all of vmlinux's (about a millisecond), and the specs name 30 structs.
fn find_structs(btf: &Btf, names: &[&str]) -> HashMap<String, btf_rs::Struct> {
    let mut found = HashMap::new();
    let alternatives: Vec<String> = names.iter().map(|n| regex::escape(n)).collect();
    let Ok(re) = regex::Regex::new(&format!("^(?:{})$", alternatives.join("|"))) else { return found };
    for id in btf.resolve_ids_by_regex(&re).unwrap_or_default() {
        let Ok(Type::Struct(s)) = btf.resolve_type_by_id(id) else { continue };
        if s.members.is_empty() {
            continue;
        }
        if let Ok(name) = btf.resolve_name(&s) {
            found.entry(name).or_insert(s);
        }
    }
    found
}

/// Byte offset and size of `a.b.c` inside `st`.
fn field_path(btf: &Btf, st: &btf_rs::Struct, path: &str) -> Option<(u32, usize)> {
    let mut offset = 0u32;
    let mut current = st.clone();
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        let (off, ty) = member(btf, &current, part)?;
        offset += off;
        if parts.peek().is_none() {
            return Some((offset, type_size(btf, &ty)?));
        }
        current = match strip(btf, ty)? {
            Type::Struct(s) | Type::Union(s) => s,
            _ => return None,
        };
    }
    None
}

/// A member by name, looking through anonymous structs and unions.
fn member(btf: &Btf, st: &btf_rs::Struct, name: &str) -> Option<(u32, Type)> {
    for m in &st.members {
        let mname = btf.resolve_name(m).unwrap_or_default();
        let ty = btf.resolve_chained_type(m).ok()?;
        if mname == name {
            if m.bitfield_size().is_some_and(|b| b != 0) {
                return None; // bitfields cannot be read at a byte offset
            }
            return Some((m.bit_offset() / 8, ty));
        }
        if mname.is_empty() {
            if let Some(Type::Struct(inner) | Type::Union(inner)) = strip(btf, ty) {
                if let Some((off, t)) = member(btf, &inner, name) {
                    return Some((m.bit_offset() / 8 + off, t));
                }
            }
        }
    }
    None
}

/// Follows typedefs and qualifiers to the underlying type.
fn strip(btf: &Btf, mut ty: Type) -> Option<Type> {
    for _ in 0..32 {
        match &ty {
            Type::Typedef(t) => ty = btf.resolve_chained_type(t).ok()?,
            Type::Volatile(t) | Type::Const(t) | Type::Restrict(t) => {
                ty = btf.resolve_chained_type(t).ok()?
            }
            Type::TypeTag(t) => ty = btf.resolve_chained_type(t).ok()?,
            _ => return Some(ty),
        }
    }
    None
}

fn type_size(btf: &Btf, ty: &Type) -> Option<usize> {
    Some(match strip(btf, ty.clone())? {
        Type::Int(i) => i.size(),
        Type::Ptr(_) => 8,
        Type::Struct(s) | Type::Union(s) => s.size(),
        Type::Enum(e) => e.size(),
        Type::Enum64(e) => e.size(),
        Type::Array(a) => {
            let elem = btf.resolve_chained_type(&a).ok()?;
            type_size(btf, &elem)? * a.len()
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This CI kernel's BTF (6.18.44), zstd-compressed; see testdata/README.md.
    fn kernel_btf() -> Vec<u8> {
        let z = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/btf/vmlinux-6.18.44.btf.zst"))
            .expect("testdata BTF");
        zstd::decode_all(&z[..]).expect("zstd")
    }

    #[test]
    fn resolves_known_offsets_of_the_ci_kernel() {
        let o = from_bytes(&kernel_btf()).unwrap();
        // Values read independently with `bpftool btf dump file ... format raw`
        // on the same kernel (see testdata/README.md).
        let want = include!("../../testdata/btf/expected-6.18.44.rs");
        assert_eq!(o, want);
    }

    #[test]
    fn missing_field_is_named() {
        // Rename `start_boottime` in the string section: the struct loses the field.
        let mut b = kernel_btf();
        let needle = b"start_boottime\0";
        let pos = b.windows(needle.len()).position(|w| w == needle).unwrap();
        b[pos + needle.len() - 2] = b'X';
        let err = from_bytes(&b).unwrap_err().to_string();
        assert!(err.contains("struct task_struct"), "{err}");
        assert!(err.contains("start_boottime"), "{err}");
    }

    #[test]
    fn missing_renamed_field_names_every_spelling() {
        // Rename `__parent` back to the pre-6.15 `parent` spelling... by making
        // `__parent` unfindable: the resolver must then fail, naming both spellings.
        let mut b = kernel_btf();
        let needle = b"\0__parent\0";
        let pos = b.windows(needle.len()).position(|w| w == needle).unwrap();
        b[pos + 1] = b'X';
        match from_bytes(&b) {
            Err(OffsetError::MissingField { field, .. }) => assert!(field.contains("parent"), "{field}"),
            other => panic!("expected a missing field, got {other:?}"),
        }
    }

    #[test]
    fn controller_bits_follow_the_kernel_enum() {
        let btf = Btf::from_bytes(&kernel_btf()).unwrap();
        let c = controllers(&btf);
        assert_eq!(&c[..5], &["cpuset", "cpu", "cpuacct", "io", "memory"]);
        assert_eq!(mask_names(&c, 0b1000_0000_0011), vec!["cpuset", "cpu", "pids"]);
    }

    #[test]
    fn no_btf_is_a_clear_error() {
        let err = from_file(Path::new("/nonexistent/vmlinux")).unwrap_err().to_string();
        assert!(err.contains("CONFIG_DEBUG_INFO_BTF"), "{err}");
    }
}
