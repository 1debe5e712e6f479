"""Loaded by every Python process the offline test starts (this folder leads PYTHONPATH): a connection or a
name lookup beyond loopback is refused, as on a machine without a network, and written down (one JSON line
per attempt in $KESTREL_NETGUARD_LOG, with the process and the address) for the test to read."""

import ipaddress
import json
import os
import socket

LOG = os.environ.get("KESTREL_NETGUARD_LOG", "")
LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", ""}


def _local(host: object) -> bool:
    if not isinstance(host, str):
        return True  # bytes paths of AF_UNIX sockets and the like
    if host.lower() in LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def _refuse(kind: str, address: object) -> None:
    with open(LOG, "a", encoding="utf-8") as log:
        log.write(json.dumps({"pid": os.getpid(), "kind": kind, "address": repr(address)}) + "\n")


_connect, _connect_ex, _getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo


def connect(self, address):  # type: ignore[no-untyped-def]
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _local(address[0]):
        _refuse("connect", address)
        raise ConnectionRefusedError(111, f"netguard: no network beyond loopback ({address[0]})")
    return _connect(self, address)


def connect_ex(self, address):  # type: ignore[no-untyped-def]
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _local(address[0]):
        _refuse("connect", address)
        return 111
    return _connect_ex(self, address)


def getaddrinfo(host, *args, **kwargs):  # type: ignore[no-untyped-def]
    if not _local(host.decode() if isinstance(host, bytes) else host):
        _refuse("lookup", host)
        raise socket.gaierror(socket.EAI_NONAME, f"netguard: no name service beyond loopback ({host})")
    return _getaddrinfo(host, *args, **kwargs)


if LOG:
    socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = connect, connect_ex, getaddrinfo
