//! Requests on NETLINK_ROUTE sockets (sendto/sendmsg): the bytes are copied (bounded by
//! `NETLINK_LEN`) and decoded in userspace, where RTM_DELROUTE, RTM_DELRULE,
//! RTM_DELADDR, RTM_DELLINK and link changes (down, rp_filter via IFLA_INET_CONF) are
//! picked out. These are requests; whether the kernel carried them out is not known here.
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
    // Most rtnetlink traffic is dumps (RTM_GET*: type % 4 == 2) that change nothing;
    // skip a buffer that holds a single such message without copying it.
    if let Ok(hdr) = user_read::<[u32; 2]>(src) {
        let msg_len = hdr[0] as u64;
        let msg_type = (hdr[1] & 0xffff) as u16;
        if msg_type >= 16 && msg_type % 4 == 2 && msg_len >= len {
            return Ok(());
        }
    }
    let Some(mut entry) = EVENTS.reserve::<Netlink>(0) else {
        account(kind::NETLINK, false);
        return Ok(());
    };
    let r = unsafe { &mut *entry.as_mut_ptr() };
    kernel::fill_header(&mut r.header, kind::NETLINK, core::mem::size_of::<Netlink>());
    r.syscall = nr as u32;
    r.fd = fd as i32;
    r.len = len;
    r.flags = if more { flags::MORE_IOVECS } else { 0 };
    match kernel::read_user_bounded(&mut r.data, src, len) {
        Some(n) => r.captured = n,
        None => {
            r.captured = 0;
            r.flags |= flags::VALUE_UNREADABLE;
        }
    }
    entry.submit(0);
    account(kind::NETLINK, true);
    Ok(())
}
