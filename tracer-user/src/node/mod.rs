//! What the node's components are configured to do and what they run, read from their
//! own files (under `--host-root`), command lines and sockets, before anything happens:
//! the cgroup driver of kubelet and of the container runtime ([`cgroup_driver`]), and
//! the pods and containers the runtime knows over CRI ([`cri`]).
pub mod cgroup_driver;
pub mod cri;

/// An error and its causes on one line (`a: b: c`), each cause once.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        cur = c.source();
    }
    msg
}
