"""How fast an HTTP client may ask and how long it waits after a failure.

``TokenBucket`` spaces requests to a steady rate (a burst of ``burst`` allowed),
shared safely between threads; ``Backoff`` gives the wait before a retry —
exponential, with jitter drawn from a seeded generator (so a run's waits repeat),
and never shorter than what the server asked for in ``Retry-After`` (seconds or an
HTTP date), capped at ``max_wait``. Clocks and sleeps are parameters, so tests check
the arithmetic without waiting. This module sends nothing.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

__all__ = ["Backoff", "TokenBucket", "parse_retry_after"]

Clock = Callable[[], float]
Sleep = Callable[[float], None]


class TokenBucket:
    """At most ``rate`` acquisitions per second on average, ``burst`` at once."""

    def __init__(
        self,
        rate: float,
        *,
        burst: float = 1.0,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"a rate must be > 0 and a burst >= 1 (got {rate}, {burst})")
        self.rate, self.burst = rate, burst
        self._clock, self._sleep = clock, sleep
        self._tokens = burst
        self._stamp = clock()
        self._lock = threading.Lock()

    def _reserve(self) -> float:
        """Take one token (possibly going into debt); the wait until it is really ours."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= 1.0
            return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def acquire(self) -> float:
        """Wait for a token; returns the seconds waited."""
        wait = self._reserve()
        if wait > 0:
            self._sleep(wait)
        return wait


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP date), or None."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class Backoff:
    """Waits before retries: ``base * 2**(n-1) * (1 + jitter)``, at least ``Retry-After``."""

    def __init__(self, *, base: float = 0.5, max_wait: float = 60.0, seed: int = 0) -> None:
        self.base, self.max_wait = base, max_wait
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def wait(self, failures: int, retry_after: float | None = None) -> float:
        """Seconds to wait after the ``failures``-th failure of one query (1-based)."""
        with self._lock:
            jitter = self._rng.random()
        backoff = self.base * 2.0 ** max(0, failures - 1) * (1.0 + jitter)
        floor = 0.0 if retry_after is None else retry_after
        return min(self.max_wait, max(backoff, floor))
