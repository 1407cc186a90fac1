"""HTTP/1.1 on a raw socket, for what no client library will send: bad framing, a trickle."""

from __future__ import annotations

import re
import select
import socket
import time
from dataclasses import dataclass

_STATUS_LINE = re.compile(rb"^HTTP/1\.[01] (\d{3})", re.MULTILINE)


@dataclass
class Exchange:
    """What came back on one connection: the bytes, and whether the server closed it."""

    received: bytes
    closed: bool

    @property
    def statuses(self) -> list[int]:
        """The status of each response, in order."""
        return [int(status) for status in _STATUS_LINE.findall(self.received)]

    @property
    def last_body(self) -> bytes:
        """The body of the last response (after its blank line)."""
        return self.received.rpartition(b"\r\n\r\n")[2]


def exchange(port: int, data: bytes, *, timeout: float = 10.0) -> Exchange:
    """Send ``data`` at once; read until the server closes the connection or ``timeout``."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        return _read_until_closed(sock, time.monotonic() + timeout)


def trickle(
    port: int, head: bytes, body: bytes, *, interval: float, timeout: float = 10.0
) -> Exchange:
    """Send ``head`` then ``body`` one byte each ``interval`` seconds, until the server answers;
    then read until it closes the connection or ``timeout``."""
    deadline = time.monotonic() + timeout
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head)
        for byte in body:
            readable, _, _ = select.select([sock], [], [], interval)
            if readable or time.monotonic() > deadline:
                break
            try:
                sock.sendall(bytes([byte]))
            except OSError:  # the server closed the connection under the write
                break
        return _read_until_closed(sock, deadline)


def _read_until_closed(sock: socket.socket, deadline: float) -> Exchange:
    received = b""
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            return Exchange(received, closed=True)
        if not chunk:
            return Exchange(received, closed=True)
        received += chunk
    return Exchange(received, closed=False)
