"""Refuse network connections: cxr-bench never fetches anything at run time.

`no_network()` patches socket connects (and DNS lookups) so any attempt raises `NetworkAttempt`
naming the destination; used by tests and by `train` when `offline_guard` is on.
Connections to local sockets (AF_UNIX, e.g. multiprocessing, joblib) stay allowed.
"""
from __future__ import annotations

import contextlib
import socket
from typing import Iterator


class NetworkAttempt(RuntimeError):
    pass


@contextlib.contextmanager
def no_network(record: list | None = None) -> Iterator[list]:
    attempts: list = record if record is not None else []
    original_connect = socket.socket.connect
    original_connect_ex = socket.socket.connect_ex
    original_getaddrinfo = socket.getaddrinfo
    original_create_connection = socket.create_connection

    def _refuse(kind: str, target) -> None:
        attempts.append((kind, target))
        raise NetworkAttempt(f"network access attempted at run time ({kind} {target!r}); cxr-bench runs offline")

    def guarded_connect(sock, address):
        if sock.family == socket.AF_UNIX:
            return original_connect(sock, address)
        _refuse("connect", address)

    def guarded_connect_ex(sock, address):
        if sock.family == socket.AF_UNIX:
            return original_connect_ex(sock, address)
        _refuse("connect", address)

    def guarded_getaddrinfo(host, *args, **kwargs):
        _refuse("getaddrinfo", host)

    def guarded_create_connection(address, *args, **kwargs):
        _refuse("create_connection", address)

    socket.socket.connect = guarded_connect
    socket.socket.connect_ex = guarded_connect_ex
    socket.getaddrinfo = guarded_getaddrinfo
    socket.create_connection = guarded_create_connection
    try:
        yield attempts
    finally:
        socket.socket.connect = original_connect
        socket.socket.connect_ex = original_connect_ex
        socket.getaddrinfo = original_getaddrinfo
        socket.create_connection = original_create_connection
