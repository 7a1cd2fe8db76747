"""uid/gid to name, cached: the NSS lookups behind them can be slow (LDAP, SSSD)."""

from __future__ import annotations

import grp
import pwd
import time
from collections import OrderedDict
from typing import Callable

DEFAULT_TTL = 600.0
DEFAULT_ENTRIES = 4096


class _NameCache:
    def __init__(self, lookup: Callable[[int], str], ttl: float, max_entries: int) -> None:
        self._lookup = lookup
        self._ttl = ttl
        self._max = max_entries
        self._cache: OrderedDict[int, tuple[float, str | None]] = OrderedDict()

    def name(self, ident: int, now: float | None = None) -> str | None:
        now = time.monotonic() if now is None else now
        hit = self._cache.get(ident)
        if hit is not None and now - hit[0] < self._ttl:
            return hit[1]
        try:
            name: str | None = self._lookup(ident)
        except (KeyError, OverflowError):
            name = None  # no such user: the caller falls back to the numeric id
        self._cache[ident] = (now, name)
        self._cache.move_to_end(ident)
        if len(self._cache) > self._max:
            self._cache.popitem(last=False)
        return name


class UserNames:
    """``user(uid)`` and ``group(gid)`` names, ``None`` when nothing resolves."""

    def __init__(self, ttl: float = DEFAULT_TTL, max_entries: int = DEFAULT_ENTRIES) -> None:
        self._users = _NameCache(lambda uid: pwd.getpwuid(uid).pw_name, ttl, max_entries)
        self._groups = _NameCache(lambda gid: grp.getgrgid(gid).gr_name, ttl, max_entries)

    def user(self, uid: int) -> str | None:
        return self._users.name(uid)

    def group(self, gid: int) -> str | None:
        return self._groups.name(gid)
