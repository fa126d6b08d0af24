"""Blocks outbound network connections in every Python process that has this folder on ``PYTHONPATH``
(subprocesses such as wandb's service inherit it). Loopback and Unix sockets stay allowed. Each blocked
attempt is appended to ``$FM_BIO_NETGUARD_LOG`` and raises ``OSError``, so a test can assert that a job
never tried to reach the network."""

from __future__ import annotations

import ipaddress
import os
import socket

_LOG = os.environ.get("FM_BIO_NETGUARD_LOG")
_connect, _connect_ex = socket.socket.connect, socket.socket.connect_ex


def _is_local(sock: socket.socket, address) -> bool:
    if sock.family == getattr(socket, "AF_UNIX", None):
        return True
    host = address[0] if isinstance(address, tuple) else str(address)
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False  # a name: resolving and reaching it is outbound


def _blocked(address) -> OSError:
    if _LOG:
        with open(_LOG, "a") as f:
            f.write(f"{os.getpid()} {address!r}\n")
    return OSError(f"network blocked by tests/netguard: connect to {address!r}")


def _guarded_connect(self, address):
    if not _is_local(self, address):
        raise _blocked(address)
    return _connect(self, address)


def _guarded_connect_ex(self, address):
    if not _is_local(self, address):
        raise _blocked(address)
    return _connect_ex(self, address)


socket.socket.connect = _guarded_connect
socket.socket.connect_ex = _guarded_connect_ex
