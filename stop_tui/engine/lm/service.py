"""The engine's LM service: the paper's `LanguageModel` handles, budgets, accounting, records.

Every use is counted when the engine accepts the call, before any request goes out; a call
past a handle's budget raises, whatever the improver does. Each call is recorded as an
LM_REQUEST / LM_REPLY pair with tokens, latency and cost, then a BUDGET event with the
session's totals.
"""

from __future__ import annotations

import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

from stop_tui.engine import events as ev
from stop_tui.engine.errors import BudgetExceeded
from stop_tui.engine.gate import CALL, Gate
from stop_tui.engine.lm.base import Backend, Completions
from stop_tui.engine.lm.prices import cost as price_cost


@dataclass
class Usage:
    calls: int = 0
    requests: int = 0
    completions: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


class LMService:
    def __init__(self, backend: Backend, *, max_tokens: int, seed: int, emit: Callable[[ev.Event], object],
                 put_text: Callable[[str], str], gate: Gate | None = None) -> None:
        self.backend = backend
        self.max_tokens = max_tokens
        self.seed = seed
        self._emit = emit
        self._put_text = put_text
        self.gate = gate or Gate()
        self.usage = Usage(cost_usd=0.0 if price_cost(backend.price_key, 0, 0) is not None else None)
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="lm-call")

    def handle(self, path: str, budget: int, max_responses_per_call: int) -> LanguageModel:
        return LanguageModel(self, path, budget, max_responses_per_call)

    def _seed_for(self, path: str, index: int) -> int:
        return zlib.crc32(f"{self.seed}/{path}/{index}".encode()) & 0x7FFFFFFF

    def call(self, path: str, use: int, system: str, messages: list[str], temperature: float) -> list[str]:
        """One accepted use: ask the backend for every message, record it all, return texts."""
        self.gate.passage(CALL)
        temperature = min(max(float(temperature), 0.0), 2.0)
        groups = Counter(messages)
        system_hash = self._put_text(system)
        self._emit(ev.Event(ev.LM_REQUEST, path, {
            "use": use, "system": system_hash, "prompts": [self._put_text(m) for m in messages],
            "n": len(messages), "distinct": len(groups), "temperature": temperature,
            "max_tokens": self.max_tokens, "model": self.backend.model}))
        started = time.monotonic()
        futures = {
            message: self._pool.submit(self.backend.complete, system, message, n=count,
                                       temperature=temperature, max_tokens=self.max_tokens,
                                       seed=self._seed_for(path, k))
            for k, (message, count) in enumerate(groups.items())
        }
        answers: dict[str, Completions] = {m: f.result() for m, f in futures.items()}
        latency = time.monotonic() - started
        cursor = Counter()
        replies: list[str] = []
        for message in messages:
            text = answers[message].texts[cursor[message]]
            cursor[message] += 1
            replies.append(text if isinstance(text, str) else "")
        prompt_tokens = sum(a.prompt_tokens for a in answers.values())
        completion_tokens = sum(a.completion_tokens for a in answers.values())
        requests = sum(a.requests for a in answers.values())
        dollars = price_cost(self.backend.price_key, prompt_tokens, completion_tokens)
        errors = [a.error for a in answers.values() if a.error]
        failed = sum(1 for a in answers.values() for t in a.texts if t is None)
        with self._lock:
            u = self.usage
            u.calls += 1
            u.requests += requests
            u.completions += len(messages) - failed
            u.prompt_tokens += prompt_tokens
            u.completion_tokens += completion_tokens
            if u.cost_usd is not None and dollars is not None:
                u.cost_usd += dollars
            totals = u.to_dict()
        reply = {"use": use, "replies": [self._put_text(r) for r in replies],
                 "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                 "requests": requests, "failed": failed, "latency": round(latency, 4),
                 "cost_usd": dollars}
        if errors:
            reply["error"] = "; ".join(errors)[:1000]
        self._emit(ev.Event(ev.LM_REPLY, path, reply))
        self._emit(ev.Event(ev.BUDGET, path, totals))
        return replies

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class LanguageModel:
    """The paper's `language_model` (PAPER.md section 2), engine side. Sandboxed improvers reach
    it through proxies; each `prompt` / `batch_prompt` is ONE use however many samples."""

    def __init__(self, service: LMService, path: str, budget: int, max_responses_per_call: int) -> None:
        self._service = service
        self.path = path
        self.budget = budget
        self.max_responses_per_call = max_responses_per_call
        self._uses = 0
        self._lock = threading.Lock()

    @property
    def uses(self) -> int:
        return self._uses

    def _accept(self) -> int:
        with self._lock:
            self._uses += 1
            use = self._uses
        if use > self.budget:
            raise BudgetExceeded()
        return use

    def batch_prompt(self, expertise: str, message_batch: list[str], temperature: float = 0.7) -> list[str]:
        if not isinstance(expertise, str):
            raise TypeError("expertise must be a string")
        message_batch = list(message_batch)
        if not message_batch:
            return []
        if not all(isinstance(m, str) for m in message_batch):
            raise TypeError("every message must be a string")
        if len(message_batch) > self.max_responses_per_call:
            raise ValueError(f"at most {self.max_responses_per_call} messages per call "
                             f"(got {len(message_batch)})")
        use = self._accept()
        return self._service.call(f"{self.path}/lm{use}", use, expertise, message_batch, temperature)

    def prompt(self, expertise: str, message: str, n_responses: int = 1, temperature: float = 0.7) -> list[str]:
        if not isinstance(message, str) or not isinstance(expertise, str):
            raise TypeError("expertise and message must be strings")
        n_responses = int(n_responses)
        if not 1 <= n_responses <= self.max_responses_per_call:
            raise ValueError(f"n_responses must be between 1 and {self.max_responses_per_call}")
        use = self._accept()
        return self._service.call(f"{self.path}/lm{use}", use, expertise, [message] * n_responses, temperature)
