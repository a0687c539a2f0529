"""Retrying failed LM requests: exponential backoff with full jitter, honouring Retry-After.

The engine retries (the `openai` client's own retries are off) so that every attempt is
counted, logged as an LM_RETRY event and interruptible by a quit.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from stop_tui.engine.errors import Cancelled
from stop_tui.engine.lm.base import LMRequestError

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 6  # total attempts per request, the first included
    base: float = 0.5  # seconds; the n-th retry waits up to base * 2**(n-1)
    cap: float = 30.0  # longest wait we choose ourselves
    max_retry_after: float = 120.0  # a longer Retry-After is honoured up to this

    def delay(self, retry: int, retry_after: float | None, rng: random.Random) -> float:
        """Seconds to wait before retry number `retry` (1-based)."""
        if retry_after is not None and retry_after >= 0:
            # The server said when: wait that long, plus a little jitter so that many waiting
            # requests do not come back at the same instant.
            return min(retry_after, self.max_retry_after) + rng.uniform(0, min(0.25, self.base))
        return rng.uniform(0, min(self.cap, self.base * 2 ** (retry - 1)))


def with_retries(attempt: Callable[[], T], policy: RetryPolicy, *,
                 on_retry: Callable[[int, LMRequestError, float], None] | None = None,
                 cancel: threading.Event | None = None,
                 rng: random.Random | None = None) -> tuple[T, int]:
    """Call `attempt` until it succeeds or fails for good; returns (value, attempts made).
    Raises the last LMRequestError when it is not retryable or the attempts are used up."""
    rng = rng or random.Random()
    cancel = cancel or threading.Event()
    made = 0
    while True:
        # No cancel check before the first attempt: a call that passed the gate and the caps is
        # sent (and recorded) even if the run is stopping; only its retries are abandoned. That
        # makes "a cap of N calls lets exactly N through" hold whatever the thread timing.
        made += 1
        try:
            return attempt(), made
        except LMRequestError as exc:
            exc.attempts = made  # type: ignore[attr-defined]
            if not exc.retryable or made >= policy.attempts:
                raise
            wait = policy.delay(made, exc.retry_after, rng)
            if on_retry is not None:
                on_retry(made, exc, wait)
            if cancel.wait(wait):
                raise Cancelled() from None
