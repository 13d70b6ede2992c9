"""Who may do what: bearer tokens with a scope, and a request rate per token.

Reads need a read or write token; uploads, arrivals and cancels a write token. A server whose
registry holds no live token asks for none (it refuses to start on a non-loopback address for
that reason unless `--insecure`). Tokens are checked against their hashes in the registry on
every request (a revoked token stops working at once), with a short in-memory cache so a busy
client does not cost one query per request.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from registry import Registry

CACHE_S = 2.0  # how long a token's check is reused (revocation takes effect within this)


class Denied(Exception):
    """401 (no or unknown token) or 403 (a token without the scope asked for)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Caller:
    key: str  # who the rate limit counts: a token id, else the client address
    scope: str  # read | write
    name: str


class Gate:
    def __init__(self, reg: Registry) -> None:
        self.reg = reg
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, Caller | None]] = {}
        self._open: tuple[float, bool] = (0.0, False)

    def open(self) -> bool:
        """Whether the registry has no live token (then nobody is asked for one)."""
        now = time.monotonic()
        with self._lock:
            at, value = self._open
            if now - at < CACHE_S:
                return value
        value = self.reg.tokens.active() == 0
        with self._lock:
            self._open = (now, value)
        return value

    def check(self, authorization: str | None, client: str, need: str) -> Caller:
        if self.open():
            return Caller(key=f"addr:{client}", scope="write", name="anonymous")
        if not authorization:
            raise Denied(401, "this server needs a token: send 'Authorization: Bearer TOKEN'")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Denied(401, "the Authorization header must be 'Bearer TOKEN'")
        caller = self._caller(token.strip())
        if caller is None:
            raise Denied(401, "unknown or revoked token; `continual tokens create` makes one")
        if need == "write" and caller.scope != "write":
            raise Denied(403, f"token {caller.name} is read-only; this needs a write token")
        return caller

    def _caller(self, token: str) -> Caller | None:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(token)
            if hit is not None and now - hit[0] < CACHE_S:
                return hit[1]
        found = self.reg.tokens.verify(token)
        caller = None if found is None else Caller(f"token:{found.id}", found.scope, found.name)
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[token] = (now, caller)
        return caller


class RateLimit:
    """A token bucket per caller: `rate` requests a second, bursts of twice that."""

    def __init__(self, rate: float) -> None:
        self.rate, self.burst = rate, max(1.0, 2 * rate)
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str) -> float:
        """0 if the request may go; else the seconds until it may."""
        now = time.monotonic()
        with self._lock:
            level, at = self._buckets.get(key, (self.burst, now))
            level = min(self.burst, level + (now - at) * self.rate)
            if level < 1:
                self._buckets[key] = (level, now)
                return (1 - level) / self.rate
            self._buckets[key] = (level - 1, now)
            return 0.0
