"""The host side of a sandbox's network allow-list: an HTTP CONNECT proxy on a unix socket.

A sandbox with a network allow-list still has an empty network namespace: its only way out is
a unix socket bind-mounted into it, behind which this proxy runs in the runtime. The proxy
reads one ``CONNECT host:port`` request, admits it only when the host name is on the
profile's list (``_hosts.py``), resolves the name itself (the sandbox has no DNS), connects,
answers ``200`` and relays bytes both ways. Anything else gets an HTTP error and is logged:
plain ``GET http://...`` requests (a proxy that forwarded them would need to parse every
request; tunnelled clients need no more than CONNECT), names not on the list, names that
resolve to the host's own or link-local addresses.

Inside, a small bridge in ``_inside.py`` listens on ``127.0.0.1:3128`` and carries each
connection to this socket, so ordinary clients reach it through ``HTTPS_PROXY``.

Why threads, not the event loop: the proxy lives exactly as long as one sandbox, which may be
started in one task and closed in another (warm workers, MCP servers), and an anyio task
group must be left by the task that entered it. A thread per connection is simple, and the
connections are few.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from pathlib import Path

from tether.sandbox._hosts import address_allowed, matching_entry
from tether.sandbox._inside import relay

logger = logging.getLogger("tether.sandbox")

_HEAD_LIMIT = 8192
_HEAD_SECONDS = 10.0
_CONNECT_SECONDS = 10.0


class NetworkProxy:
    """One sandbox's CONNECT proxy, listening on ``directory/proxy.sock`` until ``close``."""

    def __init__(self, allowed: tuple[str, ...], directory: Path, *, uid: int | None) -> None:
        self.allowed = allowed
        self.path = directory / "proxy.sock"
        self.refused: list[str] = []
        """Every refused request (``host:port`` or the request line), newest last."""
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(self.path))
        if uid is not None:
            # Only the sandbox's uid may connect (and nobody else can see the directory).
            os.chown(self.path, uid, uid)
        os.chmod(self.path, 0o600)
        self._listener.listen(64)
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, name="tether-sandbox-proxy",
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop accepting and cut every open connection."""
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self._listener.close()
        self._thread.join(timeout=5)
        with self._lock:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            self._open.clear()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            self._track(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.add(sock)

    def _forget(self, *socks: socket.socket) -> None:
        with self._lock:
            for sock in socks:
                self._open.discard(sock)
                sock.close()

    def _serve(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        try:
            head, rest = _read_head(client)
            upstream = self._open_tunnel(client, head)
            if upstream is None:
                return
            self._track(upstream)
            client.settimeout(None)
            if rest:
                upstream.sendall(rest)
            back = threading.Thread(target=relay, args=(upstream, client), daemon=True)
            back.start()
            relay(client, upstream)
            back.join()
        except OSError:
            pass
        finally:
            self._forget(client, *([upstream] if upstream is not None else []))

    def _open_tunnel(self, client: socket.socket, head: bytes) -> socket.socket | None:
        """Check the request and connect; None when it was refused (and answered)."""
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = line.split()
        if len(parts) != 3 or parts[0] != "CONNECT" or not parts[2].startswith("HTTP/1."):
            self._refuse(client, 405, line[:200], "this proxy only tunnels: send "
                         "CONNECT host:port (use https, or a client's tunnel option)")
            return None
        host, _, port_text = parts[1].rpartition(":")
        if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
            self._refuse(client, 400, line[:200], "CONNECT needs host:port")
            return None
        entry = matching_entry(host, self.allowed)
        if entry is None:
            self._refuse(client, 403, parts[1], f"{host} is not in this sandbox "
                         "profile's network allow-list")
            return None
        try:
            found = socket.getaddrinfo(host.strip("[]"), int(port_text),
                                       type=socket.SOCK_STREAM)
        except OSError:
            self._refuse(client, 502, parts[1], f"cannot resolve {host}")
            return None
        addresses = [info for info in found if address_allowed(str(info[4][0]), entry)]
        if not addresses:
            self._refuse(client, 403, parts[1], f"{host} resolves only to addresses a "
                         "sandbox may not reach (loopback, link-local); list the "
                         "address itself to allow it")
            return None
        for family, kind, proto, _, address in addresses:
            upstream = socket.socket(family, kind, proto)
            upstream.settimeout(_CONNECT_SECONDS)
            try:
                upstream.connect(address)
            except OSError:
                upstream.close()
                continue
            upstream.settimeout(None)
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            return upstream
        self._refuse(client, 502, parts[1], f"cannot connect to {parts[1]}")
        return None

    def _refuse(self, client: socket.socket, status: int, what: str, why: str) -> None:
        self.refused.append(what)
        logger.warning("sandbox network proxy refused %s: %s", what, why)
        body = f"{why}\n".encode()
        with contextlib.suppress(OSError):
            client.sendall(f"HTTP/1.1 {status} Refused\r\nContent-Type: text/plain\r\n"
                           f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                           .encode() + body)


def _read_head(client: socket.socket) -> tuple[bytes, bytes]:
    """The request head and whatever the client sent after it."""
    client.settimeout(_HEAD_SECONDS)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = client.recv(4096)
        if not chunk or len(data) > _HEAD_LIMIT:
            raise OSError("no complete request head")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest

