//! Requests on NETLINK_ROUTE sockets: the bytes are copied (bounded by `NETLINK_LEN`)
//! and decoded in userspace, where RTM_DELROUTE, RTM_DELRULE, RTM_DELADDR, RTM_DELLINK
//! and link changes (down, rp_filter via IFLA_INET_CONF) are picked out. Seen in one of
//! two places (the hook mode):
//! - kernel functions: each message at the exit of `rtnetlink_rcv_msg` (`kfunc.rs`),
//!   with the kernel's answer, however it was sent (sendmmsg, every iovec);
//! - syscalls: the first iovec of a sendto/sendmsg at `sys_enter`: a request, which the
//!   kernel may still refuse.
use aya_ebpf::helpers::generated::bpf_probe_read_user;
use tracer_common::{flags, kind, sysno, Netlink, AF_NETLINK, NETLINK_ROUTE, SOCKFS_MAGIC};

use crate::kernel::{self, off, read, read_ptr};
use crate::maps::{account, EVENTS};

#[inline(always)]
pub fn is_send(nr: u64) -> bool {
    nr == sysno::SENDTO || nr == sysno::SENDMSG
}

#[inline(always)]
fn user_read<T: Copy + Default>(addr: u64) -> Result<T, i64> {
    let mut v = T::default();
    let r = unsafe {
        bpf_probe_read_user(
            (&mut v as *mut T).cast(),
            core::mem::size_of::<T>() as u32,
            addr as *const core::ffi::c_void,
        )
    };
    if r == 0 {
        Ok(v)
    } else {
        Err(r)
    }
}

/// Most rtnetlink traffic is dumps and gets (RTM_GET*: type % 4 == 2, include/uapi/
/// linux/rtnetlink.h) that change nothing. `hdr`: nlmsg_len, then nlmsg_type | flags << 16.
#[inline(always)]
fn is_query(hdr: [u32; 2]) -> bool {
    let msg_type = (hdr[1] & 0xffff) as u16;
    msg_type >= 16 && msg_type % 4 == 2
}

/// One message at the exit of `rtnetlink_rcv_msg`: `nlh` in kernel memory, `result`
/// what the handler returned.
#[inline(always)]
pub fn kfunc_message(nlh: *const u8, result: i32) -> Result<(), i64> {
    let hdr = kernel::read::<[u32; 2]>(nlh, 0)?;
    if is_query(hdr) {
        return Ok(());
    }
    let len = hdr[0] as u64;
    send(0, -1, len, flags::KFUNC, result, |data| kernel::read_kernel_bounded(data, nlh, len));
    Ok(())
}

/// Sends one record: the request's `len` bytes, as many as `copy` puts in `data` (`None`:
/// unreadable), with the rest of the fields as given. `syscall` 0 and `fd` -1 when seen
/// in the kernel function.
#[inline(always)]
fn send(
    syscall: u32,
    fd: i32,
    len: u64,
    record_flags: u32,
    result: i32,
    copy: impl FnOnce(&mut [u8; tracer_common::NETLINK_LEN]) -> Option<u32>,
) {
    let Some(mut entry) = EVENTS.reserve::<Netlink>(0) else {
        account(kind::NETLINK, false);
        return;
    };
    // SAFETY: the reserved entry is ours until submitted.
    let r = unsafe { &mut *entry.as_mut_ptr() };
    kernel::fill_header(&mut r.header, kind::NETLINK, core::mem::size_of::<Netlink>());
    r.syscall = syscall;
    r.fd = fd;
    r.len = len;
    r.flags = record_flags;
    r.result = result;
    r._pad = 0;
    match copy(&mut r.data) {
        Some(n) => r.captured = n,
        None => {
            r.captured = 0;
            r.flags |= flags::VALUE_UNREADABLE;
        }
    }
    entry.submit(0);
    account(kind::NETLINK, true);
}

pub fn enter(regs: *const u8, nr: u64) -> Result<(), i64> {
    let fd = read::<u64>(regs, off!(regs_di))?;
    let file = kernel::file_of_fd(fd)?;
    let (magic, _inode) = kernel::file_magic(file)?;
    if magic != SOCKFS_MAGIC {
        return Ok(());
    }
    let socket = read_ptr(file, off!(file_private_data))?;
    let sk = read_ptr(socket, off!(socket_sk))?;
    let family = read::<u16>(sk, off!(sock_family))?;
    let protocol = read::<u16>(sk, off!(sock_protocol))?;
    if family != AF_NETLINK || protocol != NETLINK_ROUTE {
        return Ok(());
    }
    let arg1 = read::<u64>(regs, off!(regs_si))?;
    let mut more = false;
    let (src, len) = if nr == sysno::SENDTO {
        (arg1, read::<u64>(regs, off!(regs_dx))?)
    } else {
        // struct user_msghdr (uapi, include/linux/socket.h): msg_iov at 16, msg_iovlen at 24.
        let iov_ptr = user_read::<u64>(arg1 + 16)?;
        let iovlen = user_read::<u64>(arg1 + 24)?;
        more = iovlen > 1;
        // struct iovec: base at 0, len at 8.
        (user_read::<u64>(iov_ptr)?, user_read::<u64>(iov_ptr + 8)?)
    };
    // Skip a buffer that holds a single query without copying it.
    if let Ok(hdr) = user_read::<[u32; 2]>(src) {
        if is_query(hdr) && hdr[0] as u64 >= len {
            return Ok(());
        }
    }
    let more = if more { flags::MORE_IOVECS } else { 0 };
    send(nr as u32, fd as i32, len, more, 0, |data| kernel::read_user_bounded(data, src, len));
    Ok(())
}
