"""What every LM backend provides.

`request` is exactly one server request (one attempt, no retries: the engine retries, so that
every attempt is counted and logged); it may return fewer than n texts when the server ignores
`n`. `complete` is the convenience form: n completions of one exchange, however many requests
that takes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Completions:
    """The answer to one logical request for n samples (possibly several HTTP requests)."""

    texts: list[str | None]  # None: a failed or empty completion
    prompt_tokens: int = 0
    completion_tokens: int = 0
    requests: int = 1  # server requests it took
    finish_reasons: list[str | None] = field(default_factory=list)
    error: str | None = None  # set when some completions could not be obtained
    usage_missing: bool = False  # the server sent no usage: tokens are unknown (counted as 0)
    reasoning_tokens: int = 0  # of completion_tokens, where the server reports them


class LMRequestError(Exception):
    """One request that got no usable answer. `retryable`: 429, 5xx, timeouts, dropped
    connections; `retry_after`: the server's Retry-After in seconds, if it sent one."""

    def __init__(self, message: str, *, retryable: bool, status: int | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after


# What a backend learns about its server and a session keeps in its meta, so that a resumed run
# does not ask again (backends that learn something have `learned()` -> these entries and
# `recall(meta)`); all forgotten when the session moves to another model or server.
LEARNED_KEYS = (
    "lm_honours_n",  # bool: one request with n returns n choices (llama.cpp's server: False)
    "lm_fixed_temperature",  # True: the model refuses custom temperatures (reasoning models)
    "lm_max_completion_tokens",  # True: the server refuses max_tokens (newer OpenAI models)
)


class Backend(Protocol):
    """A source of completions. Implementations must be safe to call from several threads."""

    model: str  # what the session records as its model
    price_key: str  # key into the price table (local models cost $0)
    honours_n: bool | None  # does one request with n return n choices? None: not known yet

    def request(self, system: str, user: str, *, n: int, temperature: float, max_tokens: int,
                seed: int | None = None) -> Completions:
        """One server request (raises LMRequestError); texts may be fewer than n."""
        ...

    def complete(self, system: str, user: str, *, n: int, temperature: float, max_tokens: int,
                 seed: int | None = None) -> Completions: ...

    def close(self) -> None: ...
