"""Caches of formatted text, keyed by the raw values of events: the outputs' hot paths are lookups.

Formatting a field (an address, a port, a process's JSON) costs several times a dict lookup, and
the same few values come back in session after session.
"""

from __future__ import annotations

from typing import Callable

from .abi import address_text

CACHE_LIMIT = 8192  # entries per Formatted cache, unless told otherwise


class Formatted(dict):
    """key -> make(key), made once: formatting a field costs several times a lookup. Cleared when
    full (limit entries), so that it stays bounded."""

    def __init__(self, make: Callable, limit: int | None = None) -> None:
        super().__init__()
        self.make = make
        self.limit = CACHE_LIMIT if limit is None else limit

    def __missing__(self, key):
        if len(self) >= self.limit:
            self.clear()
        value = self[key] = self.make(key)
        return value


def address_caches(make: Callable[[str], object] = str) -> tuple[Formatted, Formatted]:
    """Raw address (16 bytes) -> make(its text), for IPv4 and for IPv6: one cache per family,
    since 0.0.0.0 and :: are the same bytes. The outputs read events with these, not Sessions."""
    return (Formatted(lambda raw: make(address_text(4, raw))),
            Formatted(lambda raw: make(address_text(6, raw))))


def port_cache(make: Callable[[int], object] = str) -> Formatted:
    """Port -> make(port), never cleared: only 65,536 ports exist."""
    return Formatted(make, limit=1 << 16)
