"""Per-token rate limiting: a token bucket per caller, answered with 429 and Retry-After."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from provisioner.errors import RateLimited

# Buckets idle this long are full again anyway, so they can be forgotten.
FORGET_AFTER_SECONDS = 300.0


class RateLimiter:
    """Allows `rate` requests per second per key, with bursts up to `burst`."""

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._rate, self._burst, self._clock = rate, burst, clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def check(self, key: str) -> None:
        """Spend one request of `key`'s budget, or raise RateLimited."""
        if self._rate <= 0:
            return
        now = self._clock()
        tokens, last = self._buckets.get(key, (float(self._burst), now))
        tokens = min(float(self._burst), tokens + (now - last) * self._rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            wait = math.ceil((1.0 - tokens) / self._rate)
            raise RateLimited(
                f"too many requests; slow down to {self._rate:g} per second", retry_after=wait
            )
        self._buckets[key] = (tokens - 1.0, now)
        if len(self._buckets) > 10_000:
            self._forget(now)

    def _forget(self, now: float) -> None:
        """Drop buckets nobody used for a while, so memory stays bounded."""
        stale = [k for k, (_t, last) in self._buckets.items() if now - last > FORGET_AFTER_SECONDS]
        for key in stale:
            del self._buckets[key]
