//! The programs whose exec is an event (`exec`, with the command line): the ones that ask
//! systemd, networkd, udev or the kernel's sysctls to act. They are the causes a finding
//! names (correlator/cause.rs): `systemctl restart systemd-networkd` run by a package's
//! maintainer script talks to PID 1 over its private socket (`/run/systemd/private`),
//! which no bus monitor sees, so its exec is how the request is known. Every other exec
//! only updates the process table: a node execs far too often to report them all.

/// Executable basenames (and comms) of the request tools.
const TOOLS: &[&str] = &[
    // systemd's clients: units, properties, daemon-reload and -reexec.
    "systemctl",
    "systemd-run",
    "busctl",
    // Debian's wrappers around them in maintainer scripts (deb-systemd-invoke calls
    // systemctl; invoke-rc.d and service call it or the init script).
    "deb-systemd-invoke",
    "invoke-rc.d",
    "service",
    // networkd's client: reload, reconfigure.
    "networkctl",
    // sysctls and udev (which runs systemd-sysctl for new interfaces).
    "sysctl",
    "udevadm",
];

/// Whether an exec of this program is an event.
pub fn is_request_tool(exe: &str, comm: &str) -> bool {
    let base = exe.rsplit('/').next().unwrap_or(exe);
    // udevadm is also systemd-udevd (a symlink since systemd 247): the daemon is no request.
    if base == "udevadm" && comm == "systemd-udevd" {
        return false;
    }
    TOOLS.contains(&base) || (base.is_empty() && TOOLS.contains(&comm))
}

/// Most bytes of a command line kept (the kernel program reads at most 256).
const MAX_CMDLINE: usize = 256;

/// The command line: argv joined by spaces, ` …` when the kernel could not read it all.
pub fn cmdline(args: &[String], truncated: bool) -> String {
    let mut s = args.join(" ");
    if s.len() > MAX_CMDLINE {
        let mut cut = MAX_CMDLINE;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    if truncated {
        s.push_str(" …");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_tools_and_the_daemon_behind_udevadm() {
        assert!(is_request_tool("/usr/bin/systemctl", "systemctl"));
        assert!(is_request_tool("/usr/bin/networkctl", "networkctl"));
        assert!(is_request_tool("/usr/bin/udevadm", "udevadm"));
        assert!(!is_request_tool("/usr/bin/udevadm", "systemd-udevd"));
        assert!(!is_request_tool("/usr/bin/ls", "ls"));
        assert!(!is_request_tool("/usr/bin/systemctl-helper", "x"));
    }

    #[test]
    fn command_line_is_bounded_and_says_when_cut() {
        let args: Vec<String> = ["systemctl", "restart", "systemd-networkd"].map(String::from).into();
        assert_eq!(cmdline(&args, false), "systemctl restart systemd-networkd");
        assert_eq!(cmdline(&args, true), "systemctl restart systemd-networkd …");
        let long = vec!["é".repeat(200)];
        assert!(cmdline(&long, false).len() <= MAX_CMDLINE);
    }
}
