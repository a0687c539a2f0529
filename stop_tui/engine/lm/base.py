"""What every LM backend provides: n completions of one (system, user) exchange."""

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


class Backend(Protocol):
    """A source of completions. Implementations must be safe to call from several threads."""

    model: str  # what the session records as its model
    price_key: str  # key into the price table (local models cost $0)

    def complete(self, system: str, user: str, *, n: int, temperature: float, max_tokens: int,
                 seed: int | None = None) -> Completions: ...

    def close(self) -> None: ...
