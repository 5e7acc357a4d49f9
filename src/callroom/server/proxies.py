"""The client's address behind trusted proxies (SPEC §9 "Client address").

A pure rule, no I/O. The TCP peer is the client unless it is one of ``TRUSTED_PROXIES``;
only then are its ``Forwarded`` (RFC 7239) or, without it, ``X-Forwarded-For`` headers
believed. Each proxy appends the address it received the request from, so the chain
reads left to right from the client to the last proxy. Walking it from the right, the
first address that is not a trusted proxy is the client: everything left of it was
written by that client and may be forged. When every address in the chain is trusted,
the left-most is the client. An entry that is not an IP address (``unknown``, an
obfuscated identifier, garbage) ends the walk: the nearest address known is kept.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# Entries of a forwarded chain looked at, right to left: a chain longer than any real
# proxy path costs nothing more to walk.
MAX_HOPS = 32


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """CIDR ranges (``10.0.0.0/8``, ``2001:db8::/32``, or a single address); ValueError
    naming the bad entry otherwise."""
    networks: list[Network] = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{value!r} is not an address or CIDR range") from None
    return tuple(networks)


def parse_address(text: str) -> Address | None:
    """An IP address from a header entry or a peer: ``1.2.3.4``, ``1.2.3.4:80``,
    ``[2001:db8::1]:80``, ``"[2001:db8::1]"``, ``2001:db8::1``; an IPv4-mapped IPv6
    address as its IPv4 address. None when it is not one."""
    text = text.strip().strip('"').strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:  # IPv4 with a port (an IPv6 address has 2+ colons)
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def forwarded_for(values: Sequence[str]) -> list[str]:
    """The ``for=`` of every element of ``Forwarded`` header lines, in order (RFC 7239 §4).

    An element without ``for=`` counts as an unknown hop."""
    chain: list[str] = []
    for value in values:
        for element in value.split(","):
            found = "unknown"
            for pair in element.split(";"):
                name, _, param = pair.partition("=")
                if name.strip().lower() == "for":
                    found = param
            chain.append(found)
    return chain


def x_forwarded_for(values: Sequence[str]) -> list[str]:
    """The entries of ``X-Forwarded-For`` header lines, in order."""
    return [entry for value in values for entry in value.split(",")]


def is_trusted(address: Address, trusted: Sequence[Network]) -> bool:
    return any(address in network for network in trusted)


def client_address(
    peer: str | None,
    trusted: Sequence[Network],
    forwarded: Sequence[str] = (),
    x_forwarded: Sequence[str] = (),
) -> str:
    """The client's address (module docstring): ``peer`` (the TCP peer's address),
    the values of the ``Forwarded`` and ``X-Forwarded-For`` header lines."""
    if peer is None:
        return "unknown"
    if not trusted and "." in peer and ":" not in peer:
        return peer  # a dotted IPv4 peer from the socket is canonical already
    nearest = parse_address(peer)
    if nearest is None:
        return peer  # a Unix socket: nothing to check it against
    if not trusted or not is_trusted(nearest, trusted):
        return str(nearest)
    # Forwarded is the standard; X-Forwarded-For only when a proxy sent no Forwarded.
    chain = forwarded_for(forwarded) if forwarded else x_forwarded_for(x_forwarded)
    for entry in reversed(chain[-MAX_HOPS:]):
        address = parse_address(entry)
        if address is None:
            break
        nearest = address
        if not is_trusted(address, trusted):
            break
    return str(nearest)
