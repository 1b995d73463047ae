#!/usr/bin/env python3
"""Sends rtnetlink requests the way iproute2 does not, for the hook tests:
1. sendto() of ONE buffer holding TWO RTM_DELROUTE requests (a batch), table 2005;
2. sendmsg() of RTM_SETLINK setting rp_filter=2 through IFLA_AF_SPEC/AF_INET/
   IFLA_INET_CONF (include/uapi/linux/if_link.h, ip.h), which the sysctl path never sees.
Usage: rtnl.py DEV   (run inside the test's own network namespace)."""
import socket, struct, sys

NETLINK_ROUTE = 0
RTM_DELROUTE, RTM_SETLINK = 25, 19
NLM_F_REQUEST, NLM_F_ACK = 1, 4
RTA_DST, RTA_OIF, RTA_TABLE = 1, 4, 15
IFLA_AF_SPEC, IFLA_INET_CONF = 26, 1
IPV4_DEVCONF_RP_FILTER = 8
NLA_F_NESTED = 1 << 15

def attr(t, payload):
    n = 4 + len(payload)
    return struct.pack("=HH", n, t) + payload + b"\0" * ((4 - n % 4) % 4)

def msg(t, seq, body):
    return struct.pack("=IHHII", 16 + len(body), t, NLM_F_REQUEST | NLM_F_ACK, seq, 0) + body

def delroute(seq, dst, oif, table):
    rtm = struct.pack("=BBBBBBBBI", socket.AF_INET, 24, 0, 0, 0, 0, 255, 0, 0)
    return msg(RTM_DELROUTE, seq, rtm + attr(RTA_DST, socket.inet_aton(dst))
               + attr(RTA_OIF, struct.pack("=I", oif)) + attr(RTA_TABLE, struct.pack("=I", table)))

def set_rp_filter(seq, index, value):
    ifi = struct.pack("=BxHiII", socket.AF_UNSPEC, 0, index, 0, 0)
    conf = attr(IPV4_DEVCONF_RP_FILTER, struct.pack("=I", value))
    inet = attr(IFLA_INET_CONF | NLA_F_NESTED, conf)
    spec = attr(socket.AF_INET | NLA_F_NESTED, inet)
    return msg(RTM_SETLINK, seq, ifi + attr(IFLA_AF_SPEC | NLA_F_NESTED, spec))

def acks(s, n):
    errors = []
    for _ in range(n):
        data = s.recv(65536)
        t = struct.unpack_from("=H", data, 4)[0]
        if t == 2:  # NLMSG_ERROR
            err = struct.unpack_from("=i", data, 16)[0]
            if err != 0:
                errors.append(err)
    return errors

dev = sys.argv[1]
index = socket.if_nametoindex(dev)
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
s.bind((0, 0))
batch = delroute(1, "10.210.0.0", index, 2005) + delroute(2, "10.211.0.0", index, 2005)
s.sendto(batch, (0, 0))
errs = acks(s, 2)
s.sendmsg([set_rp_filter(3, index, 2)], [], 0, (0, 0))
errs += acks(s, 1)
if errs:
    sys.exit(f"kernel refused a request: errno {errs}")
with open(f"/proc/sys/net/ipv4/conf/{dev}/rp_filter") as f:
    got = f.read().strip()
if got != "2":
    sys.exit(f"rp_filter of {dev} is {got}, expected 2")
