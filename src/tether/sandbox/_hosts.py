"""The network allow-list: which host names a profile admits, and which addresses they may
resolve to.

An entry is a host name (``api.example.com``), a wildcard for every name under a domain
(``*.example.com``: ``a.example.com`` and ``a.b.example.com``, not ``example.com`` itself), or
an IP address. Names compare case-insensitively and without a trailing dot.

A name on the list may still resolve somewhere the operator did not mean: a loopback address
(services on the runtime's own machine), a link-local one (cloud metadata endpoints), or an
unspecified or multicast one. Those are refused unless the entry itself names such a place
(the address, or ``localhost``), so allowing ``*.example.com`` never opens the host's own
ports to a sandbox.
"""

from __future__ import annotations

import ipaddress
import re

_LABEL = r"(?!-)[a-z0-9_-]{1,63}(?<!-)"
_NAME = re.compile(rf"{_LABEL}(\.{_LABEL})*")


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None


def normalize_host(host: str) -> str:
    """Lower case, no trailing dot, no brackets around an IPv6 address."""
    return host.strip().lower().rstrip(".").strip("[]")


def check_host_pattern(entry: str) -> str:
    """An allow-list entry, normalized; ``ValueError`` says what an entry may be."""
    pattern = normalize_host(entry)
    if _ip(pattern) is not None:
        return pattern
    name = pattern.removeprefix("*.")
    if "*" in name or not _NAME.fullmatch(name) or len(name) > 253:
        raise ValueError(f"not a host name for the network allow-list: {entry!r} (write "
                         "'api.example.com', '*.example.com' or an IP address; no scheme, "
                         "port or path)")
    return pattern


def matching_entry(host: str, allowed: tuple[str, ...]) -> str | None:
    """The allow-list entry that admits ``host``, or None."""
    host = normalize_host(host)
    for entry in allowed:
        if entry.startswith("*."):
            if host.endswith(entry[1:]):
                return entry
        elif host == entry:
            return entry
    return None


def address_allowed(address: str, entry: str) -> bool:
    """Whether a connection admitted by ``entry`` may go to ``address`` (see the module
    docstring: the host's own and link-local addresses only when the entry names them)."""
    ip = _ip(address)
    if ip is None:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if _ip(entry) is not None or entry == "localhost":
        return True
    return not (ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_multicast
                or ip.is_reserved)
