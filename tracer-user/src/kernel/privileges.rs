//! Which of the capabilities the hooks need this process has (from /proc/self/status).
//!
//! Tracing programs need CAP_BPF + CAP_PERFMON (or CAP_SYS_ADMIN) since 5.8; attaching
//! the cgroup/sysctl program needs CAP_NET_ADMIN (kernel/bpf/syscall.c:
//! bpf_prog_attach_check_attach_type -> cgroup programs are "net admin" programs);
//! reading other processes' /proc/<pid>/exe needs CAP_SYS_PTRACE.

/// Capability numbers (include/uapi/linux/capability.h).
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Privileges {
    pub bpf: bool,
    pub perfmon: bool,
    pub net_admin: bool,
    pub sys_admin: bool,
    pub sys_ptrace: bool,
}

impl Privileges {
    pub fn current() -> Self {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        Self::from_status(&status)
    }

    pub fn from_status(status: &str) -> Self {
        let eff = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0);
        let has = |c: u32| eff & (1u64 << c) != 0;
        let sys_admin = has(CAP_SYS_ADMIN);
        Privileges {
            bpf: has(CAP_BPF) || sys_admin,
            perfmon: has(CAP_PERFMON) || sys_admin,
            net_admin: has(CAP_NET_ADMIN) || sys_admin,
            sys_admin,
            sys_ptrace: has(CAP_SYS_PTRACE),
        }
    }

    /// `None` when tracing programs can be loaded; otherwise what to do.
    pub fn missing_for_tracing(&self) -> Option<String> {
        if self.bpf && self.perfmon {
            return None;
        }
        Some(format!(
            "tracer needs CAP_BPF and CAP_PERFMON to load its programs (CAP_SYS_ADMIN also works), \
             and CAP_NET_ADMIN for the sysctl hook. This process has: {}. \
             Run it as root (`sudo tracer ...`, or `cargo xtask run -- ...`), or grant the capabilities \
             (Kubernetes: securityContext.capabilities.add: [BPF, PERFMON, NET_ADMIN, SYS_PTRACE, SYS_ADMIN]; deploy/README.md says what each is for).",
            self.summary()
        ))
    }

    pub fn summary(&self) -> String {
        let yn = |b: bool| if b { "yes" } else { "no" };
        format!(
            "CAP_BPF {}, CAP_PERFMON {}, CAP_NET_ADMIN {}, CAP_SYS_ADMIN {}, CAP_SYS_PTRACE {}",
            yn(self.bpf),
            yn(self.perfmon),
            yn(self.net_admin),
            yn(self.sys_admin),
            yn(self.sys_ptrace)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_has_everything() {
        let p = Privileges::from_status("Name:\tx\nCapEff:\t000001ffffffffff\n");
        assert!(p.missing_for_tracing().is_none());
        assert!(p.net_admin && p.sys_ptrace);
    }

    #[test]
    fn unprivileged_message_names_each_capability() {
        let p = Privileges::from_status("CapEff:\t0000000000000000\n");
        let msg = p.missing_for_tracing().unwrap();
        assert!(
            msg.contains("CAP_BPF no") && msg.contains("CAP_PERFMON no") && msg.contains("CAP_NET_ADMIN no"),
            "{msg}"
        );
    }

    #[test]
    fn bpf_and_perfmon_without_sys_admin_is_enough() {
        let p = Privileges::from_status(&format!("CapEff:\t{:016x}\n", (1u64 << 39) | (1u64 << 38)));
        assert!(p.missing_for_tracing().is_none());
        assert!(!p.net_admin);
    }
}
