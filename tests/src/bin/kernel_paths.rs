//! `tracer-kernel-paths`: changes made through the paths the syscall hooks cannot see,
//! which the kernel-function mode must (the tests compare the two modes on them):
//!
//! - `io-uring-write FILE VALUE`: one IORING_OP_WRITE of VALUE to FILE through a fresh
//!   io_uring (include/uapi/linux/io_uring.h), no write(2) at all;
//! - `sendmmsg-delroute PREFIX...`: one RTM_DELROUTE per IPv4 prefix of the main table,
//!   all in a single sendmmsg(2), then the kernel's acks printed as `PREFIX ERRNO`.
//!
//! Exits non-zero with the reason when the kernel refuses the set-up itself.
use std::ffi::CString;
use std::net::Ipv4Addr;

fn die(msg: String) -> ! {
    eprintln!("tracer-kernel-paths: {msg}");
    std::process::exit(1)
}

fn os_err(what: &str) -> ! {
    die(format!("{what}: {}", std::io::Error::last_os_error()))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("io-uring-write") if args.len() == 3 => io_uring_write(&args[1], args[2].as_bytes()),
        Some("sendmmsg-delroute") if args.len() >= 2 => sendmmsg_delroute(&args[1..]),
        _ => die("usage: tracer-kernel-paths io-uring-write FILE VALUE | sendmmsg-delroute PREFIX...".into()),
    }
}

fn get_u32(base: *const u8, off: u32) -> u32 {
    // SAFETY: `base` is a ring mapping at least `off + 4` bytes long (offsets from the kernel).
    unsafe { std::ptr::read_volatile(base.add(off as usize).cast::<u32>()) }
}

fn map(fd: i32, len: usize, offset: i64) -> *mut u8 {
    // SAFETY: a shared mapping of the io_uring fd at the offset the ABI gives.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_POPULATE,
            fd,
            offset,
        )
    };
    if p == libc::MAP_FAILED {
        os_err("mmap of the io_uring rings");
    }
    p.cast()
}

fn io_uring_write(path: &str, value: &[u8]) {
    let c = CString::new(path).unwrap_or_else(|_| die("path has a NUL".into()));
    // SAFETY: plain open(2).
    let file = unsafe { libc::open(c.as_ptr(), libc::O_WRONLY) };
    if file < 0 {
        os_err(&format!("open {path}"));
    }
    // struct io_uring_params: 10 u32, then io_sqring_offsets (40 bytes) at 40 and
    // io_cqring_offsets (40 bytes) at 80.
    let mut params = [0u8; 120];
    // SAFETY: io_uring_setup(2) fills `params`.
    let ring = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4u32, params.as_mut_ptr()) } as i32;
    if ring < 0 {
        os_err("io_uring_setup (is io_uring disabled? /proc/sys/kernel/io_uring_disabled)");
    }
    let p = params.as_ptr();
    let (sq_entries, cq_entries) = (get_u32(p, 0), get_u32(p, 4));
    let (sq_head, sq_tail, sq_mask, sq_array) =
        (get_u32(p, 40), get_u32(p, 44), get_u32(p, 48), get_u32(p, 64));
    let _ = sq_head;
    let (cq_head, cq_mask, cq_cqes) = (get_u32(p, 80), get_u32(p, 88), get_u32(p, 100));
    let sq = map(ring, (sq_array + sq_entries * 4) as usize, 0);
    let cq = map(ring, (cq_cqes + cq_entries * 16) as usize, 0x800_0000);
    let sqes = map(ring, (sq_entries * 64) as usize, 0x1000_0000);
    // SAFETY: all within the mappings just made; the kernel reads the SQE after the
    // tail is published and writes the CQE before io_uring_enter returns.
    unsafe {
        let tail = get_u32(sq, sq_tail);
        let index = tail & get_u32(sq, sq_mask);
        let sqe = sqes.add(index as usize * 64);
        std::ptr::write_bytes(sqe, 0, 64);
        *sqe = 23; // IORING_OP_WRITE
        sqe.add(4).cast::<i32>().write_unaligned(file);
        sqe.add(16).cast::<u64>().write_unaligned(value.as_ptr() as u64);
        sqe.add(24).cast::<u32>().write_unaligned(value.len() as u32);
        sq.add(sq_array as usize + index as usize * 4).cast::<u32>().write_volatile(index);
        std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
        sq.add(sq_tail as usize).cast::<u32>().write_volatile(tail.wrapping_add(1));
        let n = libc::syscall(
            libc::SYS_io_uring_enter,
            ring,
            1u32,
            1u32,
            1u32, /* GETEVENTS */
            0usize,
            0usize,
        );
        if n < 0 {
            os_err("io_uring_enter");
        }
        std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
        let head = get_u32(cq, cq_head);
        let cqe = cq.add(cq_cqes as usize + (head & get_u32(cq, cq_mask)) as usize * 16);
        let res = cqe.add(8).cast::<i32>().read_unaligned();
        println!("{res}");
        if res < 0 {
            die(format!("the write through io_uring failed: {}", std::io::Error::from_raw_os_error(-res)));
        }
    }
}

fn sendmmsg_delroute(prefixes: &[String]) {
    const RTM_DELROUTE: u16 = 25;
    const NLM_F_REQUEST_ACK: u16 = 1 | 4;
    let mut msgs: Vec<Vec<u8>> = Vec::new();
    for (seq, p) in prefixes.iter().enumerate() {
        let (addr, len) = p.split_once('/').unwrap_or_else(|| die(format!("{p}: not an IPv4 prefix")));
        let addr: Ipv4Addr = addr.parse().unwrap_or_else(|_| die(format!("{p}: not an IPv4 prefix")));
        let len: u8 = len.parse().unwrap_or_else(|_| die(format!("{p}: not an IPv4 prefix")));
        let mut m = Vec::with_capacity(36);
        m.extend_from_slice(&36u32.to_ne_bytes());
        m.extend_from_slice(&RTM_DELROUTE.to_ne_bytes());
        m.extend_from_slice(&NLM_F_REQUEST_ACK.to_ne_bytes());
        m.extend_from_slice(&(seq as u32 + 1).to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        // struct rtmsg as `ip route del` sends it: AF_INET, dst_len, main table, scope
        // RT_SCOPE_NOWHERE, no protocol or type (iproute2 ip/iproute.c).
        m.extend_from_slice(&[libc::AF_INET as u8, len, 0, 0, 254, 0, 255, 0]);
        m.extend_from_slice(&0u32.to_ne_bytes());
        // RTA_DST
        m.extend_from_slice(&8u16.to_ne_bytes());
        m.extend_from_slice(&1u16.to_ne_bytes());
        m.extend_from_slice(&addr.octets());
        msgs.push(m);
    }
    // SAFETY: plain socket(2).
    let fd =
        unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
    if fd < 0 {
        os_err("netlink socket");
    }
    let mut iovs: Vec<libc::iovec> =
        msgs.iter().map(|m| libc::iovec { iov_base: m.as_ptr() as *mut _, iov_len: m.len() }).collect();
    // SAFETY: zeroed C structs, then filled.
    let mut hdrs: Vec<libc::mmsghdr> = iovs
        .iter_mut()
        .map(|iov| {
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
            h
        })
        .collect();
    // SAFETY: `hdrs` points at live iovecs and buffers.
    let sent = unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), hdrs.len() as u32, 0) };
    if sent != hdrs.len() as i32 {
        os_err(&format!("sendmmsg sent {sent} of {}", hdrs.len()));
    }
    let mut acks = 0;
    let mut buf = [0u8; 8192];
    while acks < prefixes.len() {
        // SAFETY: recv into our buffer.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            os_err("recv of the acks");
        }
        let mut off = 0usize;
        while off + 20 <= n as usize {
            let len = u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap()) as usize;
            let seq = u32::from_ne_bytes(buf[off + 8..off + 12].try_into().unwrap()) as usize;
            let err = i32::from_ne_bytes(buf[off + 16..off + 20].try_into().unwrap());
            if seq >= 1 && seq <= prefixes.len() {
                println!("{} {err}", prefixes[seq - 1]);
                acks += 1;
            }
            off += len.max(20).next_multiple_of(4);
        }
    }
}
