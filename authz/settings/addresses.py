"""Listen addresses: `host:port` and `[v6]:port` as the settings spell them."""

from __future__ import annotations

__all__ = ["split_host_port"]


def split_host_port(address: str) -> tuple[str, int]:
    """(host, port) of `host:port` or `[v6]:port`; raises ValueError when malformed."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"not host:port: {address!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"IPv6 hosts need brackets: {address!r}")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port out of range: {address!r}")
    return host, port
