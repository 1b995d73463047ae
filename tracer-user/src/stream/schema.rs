//! Event schema v1: the JSON lines printed by `tail --json`, written by `record` and read
//! by `replay` (docs/DESIGN.md, "Event schema v1"). One object per line, tagged by
//! `"type"`. Required fields are always present; optional ones are omitted when unknown.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: u32 = 1;

/// One line of the stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Line {
    Header(HeaderLine),
    Event(Box<Event>),
    Finding(Finding),
    Stats(Stats),
}

/// Wall-clock time in nanoseconds since the Unix epoch, written as RFC 3339 with ns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn now() -> Self {
        Timestamp(Utc::now().timestamp_nanos_opt().unwrap_or(0))
    }
    pub fn to_rfc3339(self) -> String {
        DateTime::<Utc>::from_timestamp_nanos(self.0).to_rfc3339_opts(SecondsFormat::Nanos, true)
    }
    pub fn parse(s: &str) -> Option<Self> {
        DateTime::parse_from_rfc3339(s).ok().and_then(|t| t.timestamp_nanos_opt()).map(Timestamp)
    }
    /// `HH:MM:SS.mmm` for the human timeline.
    pub fn clock(self) -> String {
        DateTime::<Utc>::from_timestamp_nanos(self.0).format("%H:%M:%S%.3f").to_string()
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Timestamp {
    /// The RFC 3339 form into `buf` without allocating: the `YYYY-MM-DDTHH:MM:SS` part is
    /// formatted once per second per thread (a storm has thousands of events a second).
    /// `None` for years chrono writes differently (outside 0..=9999).
    fn format_fast(self, buf: &mut [u8; 30]) -> Option<&str> {
        use std::cell::Cell;
        thread_local! {
            static PREFIX: Cell<(i64, [u8; 19])> = const { Cell::new((i64::MIN, [0; 19])) };
        }
        let secs = self.0.div_euclid(1_000_000_000);
        let nanos = self.0.rem_euclid(1_000_000_000) as u32;
        let (cached, mut prefix) = PREFIX.get();
        if cached != secs {
            let s = DateTime::<Utc>::from_timestamp(secs, 0)?.format("%Y-%m-%dT%H:%M:%S").to_string();
            if s.len() != 19 {
                return None;
            }
            prefix.copy_from_slice(s.as_bytes());
            PREFIX.set((secs, prefix));
        }
        buf[..19].copy_from_slice(&prefix);
        buf[19] = b'.';
        let mut n = nanos;
        for i in (20..29).rev() {
            buf[i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
        buf[29] = b'Z';
        std::str::from_utf8(&buf[..]).ok()
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 30];
        match self.format_fast(&mut buf) {
            Some(text) => s.serialize_str(text),
            None => s.serialize_str(&self.to_rfc3339()),
        }
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Timestamp::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("not an RFC 3339 time: {s:?}")))
    }
}

/// What changed. The strings are the schema's `kind` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    #[default]
    CgroupWrite,
    CgroupMkdir,
    CgroupRmdir,
    SysctlWrite,
    RouteDelete,
    RuleDelete,
    AddrDelete,
    LinkDelete,
    LinkSet,
    Signal,
    CgroupBpfAttach,
    CgroupBpfDetach,
    Exec,
    DbusCall,
}

impl Kind {
    /// Kinds that come from userspace sources, not from a kernel record (the system
    /// bus monitor, node/bus.rs).
    pub const FROM_USERSPACE: [Kind; 1] = [Kind::DbusCall];
    pub const ALL: [Kind; 14] = [
        Kind::CgroupWrite,
        Kind::CgroupMkdir,
        Kind::CgroupRmdir,
        Kind::SysctlWrite,
        Kind::RouteDelete,
        Kind::RuleDelete,
        Kind::AddrDelete,
        Kind::LinkDelete,
        Kind::LinkSet,
        Kind::Signal,
        Kind::CgroupBpfAttach,
        Kind::CgroupBpfDetach,
        Kind::Exec,
        Kind::DbusCall,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::CgroupWrite => "cgroup_write",
            Kind::CgroupMkdir => "cgroup_mkdir",
            Kind::CgroupRmdir => "cgroup_rmdir",
            Kind::SysctlWrite => "sysctl_write",
            Kind::RouteDelete => "route_delete",
            Kind::RuleDelete => "rule_delete",
            Kind::AddrDelete => "addr_delete",
            Kind::LinkDelete => "link_delete",
            Kind::LinkSet => "link_set",
            Kind::Signal => "signal",
            Kind::CgroupBpfAttach => "cgroup_bpf_attach",
            Kind::CgroupBpfDetach => "cgroup_bpf_detach",
            Kind::Exec => "exec",
            Kind::DbusCall => "dbus_call",
        }
    }
    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One change on the node. Common fields first, then the kind-specific ones (all
/// optional, present when the kind has them).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    pub time: Timestamp,
    pub kind: Kind,
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    /// Who made the change (DESIGN.md: systemd, kubelet, runc, ... or the process name).
    pub actor: String,
    pub ppid: u32,
    pub parent_comm: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    /// Actors/comms up the process tree, nearest first.
    #[serde(default)]
    pub ancestry: Vec<String>,
    /// On whose behalf, when the actor is a helper of another component (runc for
    /// containerd, systemd-sysctl for systemd-udevd).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
    #[serde(default)]
    pub uid: u32,
    /// Start time of the process (boot-based ns): with `pid` the process key.
    #[serde(default)]
    pub start_ns: u64,
    /// cgroup v2 id of the actor.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub actor_cgroup_id: u64,
    /// Node the event came from (set by replay when merging several recordings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,

    // cgroup_write, cgroup_mkdir, cgroup_rmdir
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// `v2`, or the v1 controller list (`cpu,cpuacct`, `name=systemd`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hierarchy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Bytes written (lossy UTF-8) for cgroup_write, new value for sysctl_write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub value_truncated: bool,
    /// The cgroup path had more components than the kernel program walks: `cgroup` is
    /// its tail, not the whole path.
    #[serde(default, skip_serializing_if = "is_false")]
    pub path_truncated: bool,
    /// The write or netlink request came in several iovecs and only the first was read
    /// (a cgroup `writev`, a netlink `sendmsg`): the value or the later requests of the
    /// batch are not seen.
    #[serde(default, skip_serializing_if = "is_false")]
    pub more_iovecs: bool,
    /// A cgroup write's result: bytes written or negative errno. A route, rule, address
    /// or link request's: 0 (applied) or negative errno (refused), present only when it
    /// was seen in the kernel's handler (the kernel-function mode, `hook_modes` in the
    /// header); a request seen at the syscall has none, and `confirmed` says instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<i64>,
    /// For writes to `cgroup.subtree_control`: enabled controllers before and after,
    /// read in the kernel at syscall entry and exit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controllers_before: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controllers_after: Option<Vec<String>>,
    /// For writes to `cgroup.subtree_control` that removed a controller: what lived
    /// below the cgroup when tracer looked, just after the write (pipeline/below.rs).
    /// Absent in recordings made before it, and when the cgroup tree could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub below: Option<Box<Below>>,

    // sysctl_write
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<u32>,
    /// Interfaces present in `netns` when the change was made; listed for sysctl writes
    /// to `all` and `default`, which reach interfaces without naming them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interfaces: Option<Vec<String>>,

    // route_delete, rule_delete, addr_delete, link_delete, link_set
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifindex: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fwmark: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rp_filter: Option<u32>,
    /// link_set: the request sets the link down (`Some(false)`) or up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub up: Option<bool>,
    /// The netlink message type as the kernel names it (`RTM_DELROUTE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// Delete requests: whether the kernel carried it out, from its own rtnetlink
    /// notifications: `true` when the matching `RTM_DEL*` came (or the object is gone
    /// from a fresh dump), `false` when nothing was removed within the confirmation
    /// window (the kernel refused it: no such object, no permission). Absent when the
    /// namespace's state is not known (it could not be entered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmed: Option<bool>,
    // The rarely present fields below are boxed (8 bytes instead of 24 when absent): an
    // Event must stay within glibc's per-thread cache of small blocks (1032 bytes),
    // or every event's allocation takes malloc's slow path (measured: +30% tracer CPU
    // per cgroup write at 1144 bytes). `event_fits_the_malloc_thread_cache` holds it.
    /// The object the kernel removed, as `ip route`/`ip rule`/`ip addr`/`ip link` prints
    /// it (`9: from all fwmark 0x200/0xf00 lookup 2004`); the fields above then describe
    /// it, not the request (which may have named only a priority).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<Box<String>>,
    /// Address and link removals (and a link set down): the IPv4 routes the kernel
    /// flushed with it, which it announces with no notification at all
    /// (fib_disable_ip/fib_sync_down_addr then fib_flush in net/ipv4/fib_frontend.c),
    /// as `ip route` lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flushed_routes: Option<Box<Vec<String>>>,
    /// Rules: the `from` selector; routes: the source prefix (`from`), when not all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src: Option<Box<String>>,
    /// Routes and addresses: `global`, `link`, `host`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<Box<String>>,
    /// Routes: `unicast`, `local`, `blackhole`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_type: Option<Box<String>>,
    /// Routes: the preferred source address (`src` in `ip route`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefsrc: Option<Box<String>>,
    /// Rules: `lookup`, `goto`, `blackhole`, `unreachable`, `prohibit`, `nop`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<Box<String>>,
    /// Rules: the `iif` and `oif` selectors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iif: Option<Box<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oif: Option<Box<String>>,
    /// The name `ip netns` gives `netns` (a bind mount under /run/netns), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns_name: Option<Box<String>>,

    // Any event about a kubepods or container cgroup (`cgroup`, or a signal's
    // `target_cgroup`): the pod it belongs to (pipeline/pods.rs). `pod_uid` comes from
    // the path; `pod` and `container` from the container runtime over CRI, when it
    // listed them.
    /// `namespace/name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<Box<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Box<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<Box<String>>,

    // exec: a program that asks systemd, networkd, udev or the kernel to act
    // (pipeline/requests.rs), with `exe` and its command line.
    /// argv joined by spaces, at most 256 bytes of it (` …` ends a cut one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<Box<String>>,

    // dbus_call: a method call to systemd or networkd on the system bus (node/bus.rs);
    // `pid` and the attribution are the caller's, when the bus could name it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call: Option<Box<BusCall>>,

    // signal
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signo: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_comm: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_cgroup: Option<String>,

    // cgroup_bpf_attach, cgroup_bpf_detach (the target is `cgroup`, `cgroup_id`; the
    // command is `request`, e.g. `BPF_LINK_CREATE`)
    /// libbpf's name of the attach type: `cgroup_inet4_connect`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach_type: Option<String>,
    /// `allow_multi`, `allow_override`, `replace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach_flags: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prog_id: Option<u32>,
    /// The program's name as the kernel keeps it (15 bytes of its function name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prog_name: Option<String>,
    /// `cgroup_sock_addr`, `cgroup_sock`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prog_type: Option<String>,
    /// The BPF link made (BPF_LINK_CREATE) or detached, or holding a program found at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_id: Option<u32>,
    /// The root of the caller's cgroup namespace, host-absolute: `/` when it shares the
    /// host's, the cgroup its own cgroup2 mount shows as `/` otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroupns_root: Option<String>,
    /// Not a call seen live: the attachment was already there when tracer started
    /// (listed from the kernel); the actor is a process holding the program, if any.
    #[serde(default, skip_serializing_if = "is_false")]
    pub found_at_start: bool,
}

/// What lived below a cgroup whose `cgroup.subtree_control` lost a controller: the
/// cgroups that lost it with it. Every cgroup below loses it, since the kernel refuses
/// the removal while a child still enables it (`EBUSY`, cgroup_subtree_control_write
/// in kernel/cgroup/cgroup.c).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Below {
    /// Pod cgroups below the cgroup, at any depth.
    pub pods: u32,
    /// Of those, the pods that run: a process in the pod's cgroup or below it, or in a
    /// container cgroup outside kubepods that names the pod (the driver mismatch).
    pub running: u32,
    /// Their uids, at most [`Below::MAX_LISTED`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub running_pods: Vec<String>,
    /// A process in the cgroup or below it (its `cgroup.events` `populated`).
    pub populated: bool,
    /// The walk stopped at its bound: the counts are a lower bound.
    #[serde(default, skip_serializing_if = "is_false")]
    pub partial: bool,
}

impl Below {
    pub const MAX_LISTED: usize = 64;
}

/// A D-Bus method call to systemd or networkd.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BusCall {
    /// `org.freedesktop.systemd1`, `org.freedesktop.network1`.
    pub destination: String,
    pub interface: String,
    /// `SetUnitProperties`, `StartTransientUnit`, `RestartUnit`, `Reload`, ...
    pub member: String,
    pub path: String,
    /// The unit (systemd) or link (networkd) it is about, when it names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// The arguments that matter: properties as `Name=value`, a mode, a signal; at most
    /// [`BusCall::MAX_ARGS`], each at most [`BusCall::MAX_ARG_LEN`] bytes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// The caller's unique bus name (`:1.42`).
    pub sender: String,
}

impl BusCall {
    pub const MAX_ARGS: usize = 16;
    pub const MAX_ARG_LEN: usize = 128;

    /// `SetUnitProperties(kubepods-burstable.slice, CPUWeight=7)`.
    pub fn describe(&self) -> String {
        let mut parts: Vec<&str> = Vec::new();
        if let Some(u) = &self.unit {
            parts.push(u);
        }
        parts.extend(self.args.iter().map(String::as_str));
        format!("{}({})", self.member, parts.join(", "))
    }
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}
fn is_false(v: &bool) -> bool {
    !*v
}

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// A known incident pattern, with the events that show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// `kubepods-controller-removed`, `cgroup-driver-mismatch`, `rp-filter-on-cilium`,
    /// `cilium-route-deleted`, `cilium-rule-deleted`, `cilium-socket-lb-nested-cgroup`.
    pub id: String,
    pub severity: Severity,
    pub time: Timestamp,
    pub actor: String,
    pub summary: String,
    /// `seq` of the events behind it.
    pub evidence: Vec<u64>,
    pub remediation: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The pod the finding's `cgroup` belongs to (`namespace/name`), as its events named
    /// it (boxed: `Line` stays small, most findings have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<Box<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Box<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<Box<String>>,
    /// Anything else a detector wants to show (interfaces affected, pods killed, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<String, serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

impl Finding {
    /// A finding with the required fields; the optional ones (`controller`, `cgroup`,
    /// `dev`, `value`, `details`, `host`) empty, for the detector to fill.
    pub fn new(
        id: &str,
        severity: Severity,
        time: Timestamp,
        actor: &str,
        summary: String,
        evidence: Vec<u64>,
    ) -> Self {
        Finding {
            id: id.to_string(),
            severity,
            time,
            actor: actor.to_string(),
            summary,
            evidence,
            remediation: String::new(),
            controller: None,
            cgroup: None,
            dev: None,
            value: None,
            pod: None,
            container: None,
            pod_uid: None,
            details: Default::default(),
            host: None,
        }
    }

    /// The fix, as the on-call engineer reads it.
    pub fn with_remediation(mut self, remediation: &str) -> Self {
        self.remediation = remediation.to_string();
        self
    }
}

/// State of one kernel hook at start-up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HookStatus {
    pub name: String,
    pub state: HookState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Where a hook got to at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HookState {
    #[serde(rename = "attached")]
    Attached,
    /// The kernel refused the program (the verifier, a missing type, no privilege).
    /// (`failed` is how hand-written and early recordings say it.)
    #[serde(rename = "not loaded", alias = "failed")]
    NotLoaded,
    /// Loaded, but the attach point refused it (no such tracepoint, no cgroup2 root).
    #[serde(rename = "not attached")]
    NotAttached,
}

impl HookState {
    /// As in the JSON (`attached`, `not loaded`, `not attached`).
    pub fn as_str(self) -> &'static str {
        match self {
            HookState::Attached => "attached",
            HookState::NotLoaded => "not loaded",
            HookState::NotAttached => "not attached",
        }
    }
}

impl std::fmt::Display for HookState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// First line of every stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeaderLine {
    pub schema: u32,
    pub tracer_version: String,
    pub hostname: String,
    pub kernel: String,
    pub started_at: Timestamp,
    pub hooks: Vec<HookStatus>,
    /// Where each hook family that has two runs (kernel functions or syscall
    /// tracepoints), and why. Absent in recordings made before the modes existed (they
    /// ran on syscall tracepoints).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hook_modes: Vec<FamilyMode>,
}

impl HeaderLine {
    /// The hook modes in a few words, for the start-up line: `on kernel functions`, `on
    /// syscall tracepoints (why)`, or family by family when they differ.
    pub fn mode_summary(&self) -> String {
        let Some(first) = self.hook_modes.first() else { return String::new() };
        let same = FamilyMode::shared_why(&self.hook_modes).is_some()
            && self.hook_modes.iter().all(|m| m.mode == first.mode);
        if same {
            match first.mode.as_str() {
                "kfunc" => "on kernel functions".into(),
                _ => format!("on syscall tracepoints ({})", first.why),
            }
        } else {
            let each: Vec<String> =
                self.hook_modes.iter().map(|m| format!("{} {}", m.family, m.mode)).collect();
            each.join(", ")
        }
    }
}

/// The mode one hook family runs in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FamilyMode {
    /// `cgroup_write`, `netlink` (route/rule/addr/link requests) or `cgroup_bpf`.
    pub family: String,
    /// `kfunc` (fentry/fexit on a kernel function: nothing runs on unrelated syscalls)
    /// or `syscall` (the `sys_enter`/`sys_exit` tracepoints).
    pub mode: String,
    /// Where it is attached: `fentry/fexit cgroup_file_write`, `sys_enter/sys_exit`.
    pub at: String,
    /// Why this mode: the choice asked for, or the kernel's reason for refusing the other.
    pub why: String,
}

impl FamilyMode {
    /// The reason every family gives, when they all give the same one (said once).
    pub fn shared_why(modes: &[FamilyMode]) -> Option<&str> {
        let first = modes.first()?;
        modes.iter().all(|m| m.why == first.why).then_some(first.why.as_str())
    }
}

/// Per-hook counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HookCounts {
    /// Records the kernel produced for this hook.
    pub seen: u64,
    /// Records the kernel could not hand over (ring buffer full).
    pub lost: u64,
}

/// Counters, emitted periodically and at the end.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub time: Timestamp,
    /// Events emitted so far.
    pub events: u64,
    /// Records lost so far, all causes.
    pub lost: u64,
    /// Records that could not be decoded (malformed, truncated).
    #[serde(default)]
    pub decode_errors: u64,
    #[serde(default)]
    pub hooks: BTreeMap<String, HookCounts>,
    /// Entries in the process table (live processes and recently exited ones).
    #[serde(default)]
    pub processes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// A routing table as `ip` names it (`lookup local`, `table main`): the reserved ids
/// 255, 254 and 253 by name (include/uapi/linux/rtnetlink.h, `enum rt_class_t`), every
/// other by number.
pub fn table_name(t: u32) -> String {
    match t {
        255 => "local".into(),
        254 => "main".into(),
        253 => "default".into(),
        t => t.to_string(),
    }
}

#[cfg(test)]
mod tests {

    /// glibc's tcache serves blocks up to 1032 bytes (MAX_TCACHE_SIZE on 64-bit); a
    /// `Box<Event>` bigger than that is allocated on malloc's slow path for every event.
    #[test]
    fn event_fits_the_malloc_thread_cache() {
        assert!(std::mem::size_of::<Event>() <= 1032, "Event is {} bytes", std::mem::size_of::<Event>());
    }
    /// Every event kind comes from exactly one record kind of tracer-common's table.
    #[test]
    fn kinds_match_the_record_kind_table() {
        for k in Kind::ALL.into_iter().filter(|k| !Kind::FROM_USERSPACE.contains(k)) {
            let from: Vec<&str> = tracer_common::kinds::KINDS
                .iter()
                .filter(|r| r.events.contains(&k.as_str()))
                .map(|r| r.name)
                .collect();
            assert_eq!(from.len(), 1, "{} is made by {from:?}", k.as_str());
        }
        let listed: usize = tracer_common::kinds::KINDS.iter().map(|r| r.events.len()).sum();
        assert_eq!(
            listed + Kind::FROM_USERSPACE.len(),
            Kind::ALL.len(),
            "the table names an event kind the schema lacks"
        );
    }

    use super::*;

    #[test]
    fn event_round_trips_with_type_tag() {
        let ev = Event {
            seq: 7,
            time: Timestamp(1_700_000_000_123_456_789),
            kind: Kind::CgroupWrite,
            pid: 1,
            tid: 1,
            comm: "systemd".into(),
            actor: "systemd".into(),
            cgroup: Some("/kubepods.slice".into()),
            file: Some("cgroup.subtree_control".into()),
            value: Some("-cpuset".into()),
            result: Some(7),
            ..Default::default()
        };
        let line = serde_json::to_string(&Line::Event(Box::new(ev.clone()))).unwrap();
        assert!(
            line.starts_with(
                r#"{"type":"event","seq":7,"time":"2023-11-14T22:13:20.123456789Z","kind":"cgroup_write""#
            ),
            "{line}"
        );
        let back: Line = serde_json::from_str(&line).unwrap();
        assert_eq!(back, Line::Event(Box::new(ev)));
    }

    #[test]
    fn fast_time_format_matches_chrono() {
        for t in [
            0i64,
            1,
            999_999_999,
            1_700_000_000_123_456_789,
            1_700_000_000_000_000_000,
            -1,
            -1_500_000_001,
            i64::MAX,
            i64::MIN,
        ] {
            let ts = Timestamp(t);
            let mut buf = [0u8; 30];
            assert_eq!(ts.format_fast(&mut buf).map(str::to_string), Some(ts.to_rfc3339()), "{t}");
            assert_eq!(serde_json::to_string(&ts).unwrap(), format!("\"{}\"", ts.to_rfc3339()));
        }
    }

    #[test]
    fn bad_time_is_an_error_not_a_panic() {
        let err = serde_json::from_str::<Line>(r#"{"type":"stats","time":"yesterday","events":1,"lost":0}"#)
            .unwrap_err();
        assert!(err.to_string().contains("RFC 3339"), "{err}");
    }
}
