//! rtnetlink sockets of the tracer's own: dumps (links, addresses, routes, rules) and
//! the multicast groups that announce every change to them.
//!
//! A socket is bound to the network namespace of the thread that opened it and stays
//! there (netlink_create in net/netlink/af_netlink.c takes the creator's `net`), so
//! one opened on a [`super::netns::run_in`] helper thread watches that namespace from
//! any thread afterwards. It also keeps the namespace alive while open: the caller
//! closes it when nothing else refers to the namespace any more.
//!
//! Only the framing is here; what the messages mean is `pipeline::rtobject`'s.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

// include/uapi/linux/netlink.h
// https://github.com/torvalds/linux/blob/master/include/uapi/linux/netlink.h
const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x01;
const NLM_F_DUMP: u16 = 0x300;
/// Set on a dump's messages when the table changed while it was dumped.
const NLM_F_DUMP_INTR: u16 = 0x10;
const SOL_NETLINK: libc::c_int = 270;
const NETLINK_ADD_MEMBERSHIP: libc::c_int = 1;

/// `enum rtnetlink_groups` (include/uapi/linux/rtnetlink.h): the groups that announce
/// links, IPv4/IPv6 addresses, routes and rules.
pub const GROUPS: &[u32] = &[
    1,  // RTNLGRP_LINK
    5,  // RTNLGRP_IPV4_IFADDR
    7,  // RTNLGRP_IPV4_ROUTE
    8,  // RTNLGRP_IPV4_RULE
    9,  // RTNLGRP_IPV6_IFADDR
    11, // RTNLGRP_IPV6_ROUTE
    19, // RTNLGRP_IPV6_RULE
];

/// Receive buffer asked for a monitor socket (SO_RCVBUFFORCE, as root): a route storm
/// of some ten thousand changes fits before the kernel drops notifications.
const MONITOR_RCVBUF: libc::c_int = 8 << 20;
/// A dump that does not finish within this is given up.
const DUMP_TIMEOUT: Duration = Duration::from_secs(2);
/// Dumps retried when the kernel says the table changed under them.
const DUMP_RETRIES: usize = 3;

/// One netlink message: its header fields and the body after the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub msg_type: u16,
    pub flags: u16,
    /// The sender's port: 0 for a change the kernel made on its own.
    pub portid: u32,
    pub body: Vec<u8>,
}

/// Why notifications could not be read.
#[derive(Debug)]
pub enum RecvError {
    /// The socket's buffer overflowed (ENOBUFS): some notifications are lost and the
    /// state must be dumped again.
    Overrun,
    Io(io::Error),
}

#[derive(Debug)]
pub struct Socket {
    fd: OwnedFd,
    seq: u32,
}

impl Socket {
    /// A dump socket in the calling thread's namespace (blocking, no groups).
    pub fn dumper() -> io::Result<Socket> {
        let s = Socket::new(0)?;
        let tv = libc::timeval { tv_sec: DUMP_TIMEOUT.as_secs() as _, tv_usec: 0 };
        setsockopt(&s.fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv)?;
        Ok(s)
    }

    /// A monitor socket in the calling thread's namespace: non-blocking, subscribed to
    /// [`GROUPS`].
    pub fn monitor() -> io::Result<Socket> {
        let s = Socket::new(libc::SOCK_NONBLOCK)?;
        // `TRACER_RTNL_RCVBUF=<bytes>` overrides the size: the tests make it tiny to
        // see an overrun resynced.
        let size = std::env::var("TRACER_RTNL_RCVBUF")
            .ok()
            .and_then(|v| v.parse::<libc::c_int>().ok())
            .unwrap_or(MONITOR_RCVBUF);
        // Best effort: without CAP_NET_ADMIN SO_RCVBUFFORCE fails and the default
        // (net.core.rmem_default) stays; an overrun is then detected and resynced.
        if setsockopt(&s.fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &size).is_err() {
            let _ = setsockopt(&s.fd, libc::SOL_SOCKET, libc::SO_RCVBUF, &size);
        }
        for g in GROUPS {
            setsockopt(&s.fd, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, g)?;
        }
        Ok(s)
    }

    fn new(flags: libc::c_int) -> io::Result<Socket> {
        // SAFETY: plain socket(2); the fd is owned below.
        let fd = unsafe {
            libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC | flags, libc::NETLINK_ROUTE)
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a new descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: a zeroed sockaddr_nl is a valid "let the kernel pick the port" address.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Socket { fd, seq: 0 })
    }

    /// Every object of one kind: `msg_type` is an `RTM_GET*`, `header` its family
    /// header (`ifinfomsg`, `ifaddrmsg`, `rtmsg`, `fib_rule_hdr`) with the family set.
    /// Retried when the kernel marks the dump interrupted by a change.
    pub fn dump(&mut self, msg_type: u16, header: &[u8]) -> io::Result<Vec<Message>> {
        for _ in 0..DUMP_RETRIES {
            let (msgs, interrupted) = self.dump_once(msg_type, header)?;
            if !interrupted {
                return Ok(msgs);
            }
        }
        Err(io::Error::new(io::ErrorKind::Interrupted, "the table kept changing while it was dumped"))
    }

    fn dump_once(&mut self, msg_type: u16, header: &[u8]) -> io::Result<(Vec<Message>, bool)> {
        self.seq = self.seq.wrapping_add(1);
        let mut req = Vec::with_capacity(NLMSG_HDRLEN + header.len());
        req.extend(((NLMSG_HDRLEN + header.len()) as u32).to_ne_bytes());
        req.extend(msg_type.to_ne_bytes());
        req.extend((NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
        req.extend(self.seq.to_ne_bytes());
        req.extend(0u32.to_ne_bytes());
        req.extend(header);
        // SAFETY: send(2) of an owned buffer; the kernel is the default destination.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut out = Vec::new();
        let mut interrupted = false;
        let mut buf = vec![0u8; RECV_BUF];
        loop {
            let len = recv(&self.fd, &mut buf)?;
            for m in split(&buf[..len]) {
                if m.msg_type == NLMSG_DONE {
                    interrupted |= m.flags & NLM_F_DUMP_INTR != 0;
                    return Ok((out, interrupted));
                }
                if m.msg_type == NLMSG_ERROR {
                    let errno = m.body.get(..4).map(|b| i32::from_ne_bytes(b.try_into().unwrap_or([0; 4])));
                    return Err(io::Error::from_raw_os_error(-errno.unwrap_or(-libc::EIO)));
                }
                interrupted |= m.flags & NLM_F_DUMP_INTR != 0;
                out.push(m);
            }
        }
    }

    /// The notifications queued so far, appended to `out`; returns at once when none
    /// are left.
    pub fn drain(&mut self, out: &mut Vec<Message>) -> Result<(), RecvError> {
        let mut buf = vec![0u8; RECV_BUF];
        loop {
            match recv(&self.fd, &mut buf) {
                Ok(len) => out.extend(split(&buf[..len])),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => return Err(RecvError::Overrun),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(RecvError::Io(e)),
            }
        }
    }
}

/// Netlink datagrams are at most a page or two (netlink_dump's skb, 32 KiB at most);
/// a bigger buffer never truncates one.
const RECV_BUF: usize = 64 << 10;

fn recv(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: recv(2) into an owned buffer of that length.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

fn setsockopt<T>(fd: &OwnedFd, level: libc::c_int, name: libc::c_int, v: &T) -> io::Result<()> {
    // SAFETY: `v` is a valid value of the option's type for its size.
    let r = unsafe {
        libc::setsockopt(fd.as_raw_fd(), level, name, (v as *const T).cast(), std::mem::size_of::<T>() as u32)
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The messages of one datagram; a malformed header ends it (the kernel sends none).
fn split(buf: &[u8]) -> Vec<Message> {
    let mut out = Vec::new();
    let mut off = 0usize;
    while buf.len() - off >= NLMSG_HDRLEN {
        let word = |at: usize| u32::from_ne_bytes(buf[off + at..off + at + 4].try_into().unwrap_or([0; 4]));
        let len = word(0) as usize;
        if len < NLMSG_HDRLEN || len > buf.len() - off {
            break;
        }
        let ty_flags = word(4);
        out.push(Message {
            msg_type: (ty_flags & 0xffff) as u16,
            flags: (ty_flags >> 16) as u16,
            portid: word(12),
            body: buf[off + NLMSG_HDRLEN..off + len].to_vec(),
        });
        off += (len + 3) & !3;
        off = off.min(buf.len());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_in_a_link_dump() {
        let mut s = Socket::dumper().unwrap();
        // RTM_GETLINK with an empty ifinfomsg (AF_UNSPEC).
        let links = s.dump(18, &[0u8; 16]).unwrap();
        assert!(links.iter().all(|m| m.msg_type == 16), "RTM_NEWLINK replies: {links:?}");
        // ifi_index of lo is 1 in every namespace.
        assert!(links.iter().any(|m| m.body.get(4..8) == Some(&1i32.to_ne_bytes()[..])));
    }

    #[test]
    fn split_stops_at_a_bad_length() {
        let mut b = Vec::new();
        b.extend(20u32.to_ne_bytes());
        b.extend((16u32 | (2 << 16)).to_ne_bytes());
        b.extend([0u8; 8]);
        b.extend([1, 2, 3, 4]);
        b.extend(99u32.to_ne_bytes()); // runs past the end
        b.extend([0u8; 12]);
        let m = split(&b);
        assert_eq!(m.len(), 1);
        assert_eq!((m[0].msg_type, m[0].flags, m[0].body.clone()), (16, 2, vec![1, 2, 3, 4]));
    }
}
