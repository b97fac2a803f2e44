"""The few rtnetlink requests user networks need, over a plain socket (no ``ip`` runs).

A netlink socket belongs to the network namespace its process was in when it was
made, so the caller makes it where the change goes (after ``setns``).  Every request
asks for an acknowledgement, and a refusal becomes an ``OSError`` with the kernel's
errno.  Layouts are the kernel's ``linux/netlink.h``, ``linux/rtnetlink.h``,
``linux/if_link.h`` and ``linux/veth.h``.
"""

from __future__ import annotations

import errno
import os
import socket
import struct

NETLINK_ROUTE = 0
NLMSG_ERROR = 2
RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_NEWADDR = 20
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLA_F_NESTED = 0x8000

IFLA_ADDRESS = 1
IFLA_IFNAME = 3
IFLA_MTU = 4
IFLA_MASTER = 10
IFLA_LINKINFO = 18
IFLA_NET_NS_FD = 28
IFLA_INFO_KIND = 1
IFLA_INFO_DATA = 2
VETH_INFO_PEER = 1
IFA_ADDRESS = 1
IFA_LOCAL = 2
IFF_UP = 0x1

_IFINFO = struct.Struct("=BxHiII")   # family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBI")    # family, prefixlen, flags, scope, index
_HDR = struct.Struct("=IHHII")       # len, type, flags, seq, pid


def _attr(kind: int, payload: bytes) -> bytes:
    data = struct.pack("=HH", 4 + len(payload), kind) + payload
    return data + b"\0" * (-len(data) % 4)


def _str(kind: int, text: str) -> bytes:
    return _attr(kind, text.encode() + b"\0")


def _u32(kind: int, value: int) -> bytes:
    return _attr(kind, struct.pack("=I", value))


def _mac(text: str) -> bytes:
    return bytes(int(x, 16) for x in text.split(":"))


class Route:
    """A NETLINK_ROUTE socket in the current network namespace."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                  NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def request(self, kind: int, flags: int, body: bytes) -> None:
        self.seq += 1
        msg = _HDR.pack(_HDR.size + len(body), kind, NLM_F_REQUEST | NLM_F_ACK | flags,
                        self.seq, 0) + body
        self.sock.send(msg)
        while True:
            data = self.sock.recv(65536)
            off = 0
            while off + _HDR.size <= len(data):
                length, mtype, _flags, seq, _pid = _HDR.unpack_from(data, off)
                if mtype == NLMSG_ERROR and seq == self.seq:
                    code = -struct.unpack_from("=i", data, off + _HDR.size)[0]
                    if code:
                        raise OSError(code, os.strerror(code))
                    return
                off += max(length + (-length % 4), _HDR.size)

    # -- the requests ---------------------------------------------------------------------

    def add_veth(self, name: str, peer: str, peer_netns_fd: int, *, mtu: int,
                 mac: str = "") -> None:
        """``name`` here, its peer ``peer`` in the namespace of ``peer_netns_fd``."""
        peer_info = _IFINFO.pack(0, 0, 0, 0, 0) + _str(IFLA_IFNAME, peer) + \
            _u32(IFLA_MTU, mtu) + _u32(IFLA_NET_NS_FD, peer_netns_fd)
        info = _str(IFLA_INFO_KIND, "veth") + _attr(
            IFLA_INFO_DATA | NLA_F_NESTED, _attr(VETH_INFO_PEER, peer_info))
        attrs = _str(IFLA_IFNAME, name) + _u32(IFLA_MTU, mtu) + \
            (_attr(IFLA_ADDRESS, _mac(mac)) if mac else b"") + \
            _attr(IFLA_LINKINFO | NLA_F_NESTED, info)
        self.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL,
                     _IFINFO.pack(0, 0, 0, 0, 0) + attrs)

    def add_bridge(self, name: str, *, mtu: int) -> None:
        info = _str(IFLA_INFO_KIND, "bridge")
        attrs = _str(IFLA_IFNAME, name) + _u32(IFLA_MTU, mtu) + \
            _attr(IFLA_LINKINFO | NLA_F_NESTED, info)
        self.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL,
                     _IFINFO.pack(0, 0, 0, 0, 0) + attrs)

    def add_address(self, name: str, address: str, prefix: int) -> None:
        packed = socket.inet_aton(address)
        body = _IFADDR.pack(socket.AF_INET, prefix, 0, 0, socket.if_nametoindex(name)) + \
            _attr(IFA_LOCAL, packed) + _attr(IFA_ADDRESS, packed)
        self.request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body)

    def set_up(self, name: str, master: str = "") -> None:
        """Bring ``name`` up (enslaved to the bridge ``master`` when given)."""
        attrs = _u32(IFLA_MASTER, socket.if_nametoindex(master)) if master else b""
        self.request(RTM_NEWLINK, 0, _IFINFO.pack(0, 0, socket.if_nametoindex(name), IFF_UP,
                                                 IFF_UP) + attrs)

    def delete(self, name: str) -> None:
        try:
            index = socket.if_nametoindex(name)
        except OSError:
            return  # gone already
        try:
            self.request(RTM_DELLINK, 0, _IFINFO.pack(0, 0, index, 0, 0))
        except OSError as e:
            if e.errno != errno.ENODEV:
                raise
