"""The network allow-list: an empty network namespace plus the host's CONNECT proxy, which
admits only the profile's host names. Loopback only: the test's own HTTP server stands in for
an allowed API."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pydantic
import pytest

from tether.errors import ConfigError
from tether.sandbox import PROXY_PORT, Profile, Sandbox, sandbox_config
from tether.sandbox._hosts import address_allowed, check_host_pattern, matching_entry

from .sandbox_support import report, run_python

pytestmark = pytest.mark.anyio


class _Handler(http.server.BaseHTTPRequestHandler):
    seen: list[str]

    def do_GET(self) -> None:
        self.seen.append(self.path)
        body = b"hello from the host"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def api() -> Iterator[tuple[int, list[str]]]:
    """An HTTP server on 127.0.0.1: its port, and the paths it was asked for."""
    seen: list[str] = []
    handler = type("Handler", (_Handler,), {"seen": seen})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


THROUGH_PROXY = """
import socket
from urllib.parse import urlsplit
def through_proxy(host, port, path):
    proxy = urlsplit(os.environ["HTTPS_PROXY"])
    with socket.create_connection((proxy.hostname, proxy.port), timeout=5) as s:
        s.sendall(f"CONNECT {host}:{port} HTTP/1.1\\r\\nHost: {host}:{port}\\r\\n\\r\\n".encode())
        answer = s.recv(65536)
        status = answer.split(b"\\r\\n")[0].decode()
        if not status.startswith("HTTP/1.1 200"):
            return status
        s.sendall(f"GET {path} HTTP/1.1\\r\\nHost: {host}\\r\\nConnection: close\\r\\n\\r\\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        return data.split(b"\\r\\n\\r\\n", 1)[1].decode()
"""


async def test_an_allowed_host_is_reached_through_the_proxy(
        sandbox: Sandbox, api: tuple[int, list[str]]) -> None:
    port, seen = api
    result = await run_python(sandbox, THROUGH_PROXY + f"""
print(json.dumps({{"body": through_proxy("localhost", {port}, "/allowed"),
                  "proxy": os.environ["HTTPS_PROXY"]}}))""", network=("localhost",))
    assert report(result) == {"body": "hello from the host",
                              "proxy": f"http://127.0.0.1:{PROXY_PORT}"}
    assert seen == ["/allowed"]


async def test_a_host_not_on_the_list_is_refused(sandbox: Sandbox,
                                                 api: tuple[int, list[str]]) -> None:
    port, seen = api
    result = await run_python(sandbox, THROUGH_PROXY + f"""
print(json.dumps({{"other": through_proxy("example.com", {port}, "/"),
                  "suffix": through_proxy("evil-localhost", {port}, "/"),
                  "address": through_proxy("127.0.0.1", {port}, "/")}}))""",
                              network=("localhost", "*.example.org"))
    assert report(result) == {"other": "HTTP/1.1 403 Refused", "suffix": "HTTP/1.1 403 Refused",
                              "address": "HTTP/1.1 403 Refused"}
    assert seen == []


async def test_dns_udp_and_direct_connections_fail(
        sandbox: Sandbox, loopback_listeners: dict[str, object]) -> None:
    tcp, udp = loopback_listeners["tcp_port"], loopback_listeners["udp_port"]
    result = await run_python(sandbox, f"""
import socket
def direct(): socket.create_connection(("127.0.0.1", {tcp}), timeout=1)
def udp(): socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("127.0.0.1", {udp}))
def dns(): socket.getaddrinfo("localhost", 80)
def outside(): socket.create_connection(("192.0.2.1", 80), timeout=1)
def v6(): socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
def listen(): socket.create_server(("127.0.0.1", 8080))
print(json.dumps({{"direct": attempt(direct), "udp": attempt(udp), "dns": attempt(dns),
                  "outside": attempt(outside), "v6": attempt(v6), "listen": attempt(listen)}}))
""", network=("localhost",))
    got = report(result)
    assert got["direct"] == got["udp"] == got["outside"] == got["v6"] == "EACCES"
    assert got["listen"] == "EACCES"
    assert got["dns"] != "ok"


async def test_plain_http_requests_to_the_proxy_are_refused(
        sandbox: Sandbox, api: tuple[int, list[str]]) -> None:
    port, seen = api
    result = await run_python(sandbox, f"""
import socket
with socket.create_connection(("127.0.0.1", {PROXY_PORT}), timeout=5) as s:
    s.sendall(b"GET http://localhost:{port}/ HTTP/1.1\\r\\nHost: localhost\\r\\n\\r\\n")
    print(json.dumps({{"status": s.recv(4096).split(b"\\r\\n")[0].decode()}}))""",
                              network=("localhost",))
    assert report(result) == {"status": "HTTP/1.1 405 Refused"}
    assert seen == []


def test_host_patterns_match_exactly_or_by_suffix() -> None:
    allowed = tuple(check_host_pattern(e) for e in ("API.example.com.", "*.example.org"))
    assert allowed == ("api.example.com", "*.example.org")
    assert matching_entry("api.example.com", allowed) == "api.example.com"
    assert matching_entry("API.EXAMPLE.COM.", allowed) == "api.example.com"
    assert matching_entry("x.api.example.com", allowed) is None
    assert matching_entry("a.b.example.org", allowed) == "*.example.org"
    assert matching_entry("example.org", allowed) is None
    assert matching_entry("badexample.org", allowed) is None


def test_names_may_not_resolve_to_the_hosts_own_addresses() -> None:
    assert address_allowed("93.184.215.14", "api.example.com")
    assert address_allowed("10.1.2.3", "api.internal")  # private networks are the operator's
    unspecified = "0.0.0.0"  # noqa: S104  (an address to refuse, not one to bind)
    for address in ("127.0.0.1", "::1", "169.254.169.254", unspecified, "::ffff:127.0.0.1"):
        assert not address_allowed(address, "*.example.com")
    assert address_allowed("127.0.0.1", "localhost")
    assert address_allowed("169.254.169.254", "169.254.169.254")


@pytest.mark.parametrize("entry", ["https://api.example.com", "api.example.com:443", "*",
                                   "a*.example.com", "exa mple.com", ""])
def test_bad_allow_list_entries_are_refused(entry: str) -> None:
    with pytest.raises(ConfigError, match="network allow-list"):
        sandbox_config({"profiles": {"web": {"network": [entry]}}})


def test_an_empty_allow_list_means_no_network() -> None:
    assert Profile.model_validate({"network": []}).network == "none"
    with pytest.raises(pydantic.ValidationError):
        Profile.model_validate({"network": "everything"})
