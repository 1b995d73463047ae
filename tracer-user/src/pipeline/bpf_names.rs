//! Names of BPF attach types and program types, as libbpf names them and `bpftool
//! cgroup tree` (v7) prints them, from the uapi enums (include/uapi/linux/bpf.h:
//! `enum bpf_attach_type`, `enum bpf_prog_type`). Events carry the names, so a recording
//! reads the same on any machine.

/// `enum bpf_attach_type` values tracer names, with libbpf's names
/// (tools/lib/bpf/libbpf.c: `attach_type_name`); the cgroup ones only.
const ATTACH_TYPES: &[(u32, &str)] = &[
    (0, "cgroup_inet_ingress"),
    (1, "cgroup_inet_egress"),
    (2, "cgroup_inet_sock_create"),
    (3, "cgroup_sock_ops"),
    (6, "cgroup_device"),
    (8, "cgroup_inet4_bind"),
    (9, "cgroup_inet6_bind"),
    (10, "cgroup_inet4_connect"),
    (11, "cgroup_inet6_connect"),
    (12, "cgroup_inet4_post_bind"),
    (13, "cgroup_inet6_post_bind"),
    (14, "cgroup_udp4_sendmsg"),
    (15, "cgroup_udp6_sendmsg"),
    (18, "cgroup_sysctl"),
    (19, "cgroup_udp4_recvmsg"),
    (20, "cgroup_udp6_recvmsg"),
    (21, "cgroup_getsockopt"),
    (22, "cgroup_setsockopt"),
    (29, "cgroup_inet4_getpeername"),
    (30, "cgroup_inet6_getpeername"),
    (31, "cgroup_inet4_getsockname"),
    (32, "cgroup_inet6_getsockname"),
    (34, "cgroup_inet_sock_release"),
    (43, "lsm_cgroup"),
    (49, "cgroup_unix_connect"),
    (50, "cgroup_unix_sendmsg"),
    (51, "cgroup_unix_recvmsg"),
    (52, "cgroup_unix_getpeername"),
    (53, "cgroup_unix_getsockname"),
];

/// The attach types of the socket-address and socket program types, Cilium's socket
/// load balancer's among them (one list: `tracer_common::SOCKET_ATTACH_TYPES`).
pub use tracer_common::SOCKET_ATTACH_TYPES as SOCKET_LB;

/// The program types of those attach points.
pub const SOCKET_PROG_TYPES: &[&str] = &["cgroup_sock_addr", "cgroup_sock"];

/// libbpf's name of an attach type (`cgroup_inet4_connect`), or `attach_type_<n>`.
pub fn attach_type_name(t: u32) -> String {
    match ATTACH_TYPES.iter().find(|(n, _)| *n == t) {
        Some((_, name)) => (*name).to_string(),
        None => format!("attach_type_{t}"),
    }
}

/// The number of an attach type name (as [`attach_type_name`] gives it).
pub fn attach_type_number(name: &str) -> Option<u32> {
    if let Some(n) = name.strip_prefix("attach_type_") {
        return n.parse().ok();
    }
    ATTACH_TYPES.iter().find(|(_, n)| *n == name).map(|(t, _)| *t)
}

/// Whether an attach type (by name) is one of the socket load balancer's, or the
/// program is of a socket type (`prog_type`, when known, decides).
pub fn is_socket_lb(attach_type: &str, prog_type: Option<&str>) -> bool {
    match prog_type.filter(|t| !t.starts_with("prog_type_") && *t != "unspec") {
        Some(t) => SOCKET_PROG_TYPES.contains(&t),
        None => attach_type_number(attach_type).is_some_and(|t| SOCKET_LB.contains(&t)),
    }
}

/// `enum bpf_prog_type` names (lower case, without `BPF_PROG_TYPE_`).
const PROG_TYPES: &[&str] = &[
    "unspec",
    "socket_filter",
    "kprobe",
    "sched_cls",
    "sched_act",
    "tracepoint",
    "xdp",
    "perf_event",
    "cgroup_skb",
    "cgroup_sock",
    "lwt_in",
    "lwt_out",
    "lwt_xmit",
    "sock_ops",
    "sk_skb",
    "cgroup_device",
    "sk_msg",
    "raw_tracepoint",
    "cgroup_sock_addr",
    "lwt_seg6local",
    "lirc_mode2",
    "sk_reuseport",
    "flow_dissector",
    "cgroup_sysctl",
    "raw_tracepoint_writable",
    "cgroup_sockopt",
    "tracing",
    "struct_ops",
    "ext",
    "lsm",
    "sk_lookup",
    "syscall",
    "netfilter",
];

/// The name of a program type (`cgroup_sock_addr`), or `prog_type_<n>`.
pub fn prog_type_name(t: u32) -> String {
    match PROG_TYPES.get(t as usize) {
        Some(name) => (*name).to_string(),
        None => format!("prog_type_{t}"),
    }
}

/// `BPF_F_ALLOW_OVERRIDE`, `BPF_F_ALLOW_MULTI`, `BPF_F_REPLACE` (include/uapi/linux/bpf.h).
pub fn attach_flag_names(flags: u32) -> Vec<String> {
    let mut out = Vec::new();
    for (bit, name) in [(1, "allow_override"), (2, "allow_multi"), (4, "replace")] {
        if flags & bit != 0 {
            out.push(name.to_string());
        }
    }
    let rest = flags & !7;
    if rest != 0 {
        out.push(format!("{rest:#x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknowns_keep_their_number() {
        for (t, _) in ATTACH_TYPES {
            assert_eq!(attach_type_number(&attach_type_name(*t)), Some(*t));
        }
        assert_eq!(attach_type_name(10), "cgroup_inet4_connect");
        assert_eq!(attach_type_name(99), "attach_type_99");
        assert_eq!(attach_type_number("attach_type_99"), Some(99));
        assert_eq!(prog_type_name(18), "cgroup_sock_addr");
        assert_eq!(prog_type_name(9), "cgroup_sock");
        assert_eq!(prog_type_name(500), "prog_type_500");
        assert_eq!(attach_flag_names(2), vec!["allow_multi"]);
        assert_eq!(attach_flag_names(0x12), vec!["allow_multi", "0x10"]);
    }

    #[test]
    fn socket_lb_types_are_cilium_s_and_no_others() {
        let lb =
            ["cgroup_inet4_connect", "cgroup_inet6_connect", "cgroup_udp4_sendmsg", "cgroup_udp6_recvmsg"];
        for t in lb.into_iter().chain([
            "cgroup_inet4_getpeername",
            "cgroup_inet6_post_bind",
            "cgroup_inet_sock_release",
        ]) {
            assert!(is_socket_lb(t, None), "{t}");
            assert!(is_socket_lb(t, Some("cgroup_sock_addr")), "{t}");
        }
        for t in
            ["cgroup_inet_ingress", "cgroup_device", "cgroup_sysctl", "cgroup_sock_ops", "attach_type_99"]
        {
            assert!(!is_socket_lb(t, None), "{t}");
        }
        // The program type decides when known; an unknown one falls back to the attach type.
        assert!(is_socket_lb("attach_type_99", Some("cgroup_sock_addr")));
        assert!(!is_socket_lb("cgroup_inet_ingress", Some("cgroup_skb")));
        assert!(is_socket_lb("cgroup_inet4_connect", Some("prog_type_4294967295")));
    }
}
