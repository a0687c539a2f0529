"""The engine's LM service: the paper's `LanguageModel` handles, budgets, caps, accounting, records.

Every use is counted when the engine accepts the call, before any request goes out; a call
past a handle's budget raises, whatever the improver does. A call's distinct messages are its
*groups*; a group of k identical messages is one request with n = k where the server honours
`n`, otherwise k concurrent single requests (all bounded by `max_concurrency`). Each request
that got an answer is recorded as an LM_PART event; the call as LM_REQUEST ... LM_REPLY, then a
BUDGET event with the session's totals. Failed attempts that will be retried are LM_RETRY
events; a request that fails for good (or a malformed reply) is a failed completion.

Calls found in a `Book` (the session's own record when resuming, another session's for
`replay:`) are answered from it: their recorded parts are written again, and only what the
record lacks is requested.
"""

from __future__ import annotations

import random
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

from stop_tui.engine import events as ev
from stop_tui.engine.errors import BudgetExceeded, Cancelled
from stop_tui.engine.gate import CALL, Gate
from stop_tui.engine.lm.base import Backend, Completions, LMRequestError
from stop_tui.engine.lm.caps import Caps, call_worst_case
from stop_tui.engine.lm.prices import cost as price_cost
from stop_tui.engine.lm.record import Book, RecordedCall, aggregate_parts, content_key
from stop_tui.engine.lm.retry import RetryPolicy, with_retries

DEFAULT_CONCURRENCY = 8


@dataclass
class _Call:
    """What the requests of one call share."""

    path: str
    use: int
    system: str
    temperature: float
    peak: list[int]  # the most requests in flight (session-wide) while this call's were
    known: dict[str, str]  # reply texts by hash


class CapReached(Cancelled):
    """A session cap refused an LM call: the run pauses (see caps.py)."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(message)
        self.option = option
        self.message = message


@dataclass
class Usage:
    calls: int = 0
    requests: int = 0  # server requests sent, failed attempts included
    retries: int = 0  # failed attempts that were retried
    completions: int = 0  # completions with text
    failed: int = 0  # completions that could not be obtained (or were malformed)
    prompt_tokens: int = 0  # as billed by the server (answered requests only)
    completion_tokens: int = 0
    cost_usd: float | None = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, priced: bool) -> Usage:
        u = cls(cost_usd=0.0 if priced else None)
        for key in ("calls", "requests", "retries", "completions", "failed", "prompt_tokens",
                    "completion_tokens"):
            setattr(u, key, int(d.get(key, 0) or 0))
        if priced and isinstance(d.get("cost_usd"), int | float):
            u.cost_usd = float(d["cost_usd"])
        return u


class LMService:
    def __init__(self, backend: Backend, *, max_tokens: int, seed: int, emit: Callable[[ev.Event], object],
                 put_text: Callable[[str], str], gate: Gate | None = None,
                 max_concurrency: int = DEFAULT_CONCURRENCY, caps: Caps | None = None,
                 policy: RetryPolicy | None = None) -> None:
        self.backend = backend
        self.max_tokens = max_tokens
        self.seed = seed
        self._emit = emit
        self._put_text = put_text
        self.gate = gate or Gate()
        self.caps = caps or Caps()
        self.policy = policy or RetryPolicy()
        self.priced = price_cost(backend.price_key, 0, 0) is not None
        self.usage = Usage(cost_usd=0.0 if self.priced else None)
        self.max_concurrency = max(1, int(max_concurrency))
        self._slots = threading.BoundedSemaphore(self.max_concurrency)
        self._lock = threading.Lock()
        self._order = threading.Lock()  # keeps BUDGET events in the order of the totals
        self._idle = threading.Condition(self._lock)
        self._active = 0  # calls between acceptance and their LM_REPLY
        self._inflight = 0
        self.peak_concurrency = 0
        self._reserved = {"calls": 0, "tokens": 0, "cost_usd": 0.0}
        self._occurrences: Counter = Counter()
        self.own_book: Book | None = None  # the session's own record (resume)
        self.source_book: Book | None = getattr(backend, "book", None)  # replay:SESSION
        self.stop: CapReached | None = None  # set when a cap paused the run
        # Told once when the backend learns whether the server honours n (the session saves
        # it, so a resumed run does not ask again).
        self.on_learn: Callable[[bool], object] | None = None
        self._learned = getattr(backend, "honours_n", None) is not None
        self._rng = random.Random(seed)
        self._group_pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="lm-group")
        self._request_pool = ThreadPoolExecutor(max_workers=64, thread_name_prefix="lm-request")

    # -- set-up for resume ----------------------------------------------------------------
    def restore(self, totals: dict | None, book: Book | None) -> None:
        """Continue from a log: session totals as of the last kept BUDGET event, and the
        session's own record to answer re-executed calls from."""
        with self._lock:
            self.usage = Usage.from_dict(totals or {}, self.priced)
            self._occurrences.clear()
        self.own_book = book

    def handle(self, path: str, budget: int, max_responses_per_call: int) -> LanguageModel:
        return LanguageModel(self, path, budget, max_responses_per_call)

    def _seed_for(self, path: str, index: int) -> int:
        return zlib.crc32(f"{self.seed}/{path}/{index}".encode()) & 0x7FFFFFFF

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until no call is in flight (their answers are paid for: let them be recorded
        before the run stops). False if some were still running at the timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._idle:
            while self._active:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._idle.wait(left if left is not None else 1.0)
        return True

    # -- one accepted use -----------------------------------------------------------------
    def call(self, path: str, use: int, system: str, messages: list[str], temperature: float) -> list[str]:
        """Ask for every message (or take it from the record), record it all, return texts."""
        self.gate.passage(CALL)
        if self.stop is not None:
            raise self.stop
        with self._lock:
            self._active += 1
        try:
            return self._call(path, use, system, messages, temperature)
        finally:
            with self._idle:
                self._active -= 1
                self._idle.notify_all()

    def _call(self, path: str, use: int, system: str, messages: list[str], temperature: float) -> list[str]:
        temperature = min(max(float(temperature), 0.0), 2.0)
        groups = list(Counter(messages).items())  # distinct messages, in order of appearance
        system_hash = self._put_text(system)
        prompt_hashes = [self._put_text(m) for m in messages]
        key = content_key(system_hash, prompt_hashes, temperature, self.max_tokens)
        handle = ev.parent_path(path)
        with self._lock:
            occurrence = self._occurrences[(handle, key)]
            self._occurrences[(handle, key)] += 1
        recorded, book = self._lookup((handle, key, occurrence))
        parts: dict[tuple[int, int], dict] = {}
        if recorded is not None:
            for (g, offset), part in recorded.parts.items():
                if g < len(groups):
                    parts[(g, offset)] = part
        missing = self._missing(groups, parts)
        worst = None
        if missing:
            requests = sum(1 if getattr(self.backend, "honours_n", None) else b - a for _, a, b in missing)
            worst = call_worst_case(self.backend.price_key, system, messages, len(groups),
                                    requests, self.max_tokens)
            self._admit(worst)
        replayed = recorded is not None and book is self.source_book and not missing
        try:
            self._emit(ev.Event(ev.LM_REQUEST, path, {
                "use": use, "system": system_hash, "prompts": prompt_hashes,
                "n": len(messages), "distinct": len(groups), "temperature": temperature,
                "max_tokens": self.max_tokens, "model": self.backend.model}))
            started = time.monotonic()
            peak = [0]
            known: dict[str, str] = {}
            for (g, offset), part in sorted(parts.items()):  # the record, written again
                parts[(g, offset)] = self._copy_part(part, use, book, known)
                self._emit(ev.Event(ev.LM_PART, path, parts[(g, offset)]))
            if missing:
                call = _Call(path, use, system, temperature, peak, known)
                fresh = list(self._group_pool.map(
                    lambda m: self._fill(call, groups[m[0]][0], m[0], m[1], m[2]), missing))
                for got in fresh:
                    parts.update(got)
            latency = time.monotonic() - started
        except BaseException:
            if worst is not None:
                self._release(worst)
            raise
        if not self._learned and getattr(self.backend, "honours_n", None) is not None:
            self._learned = True
            if self.on_learn is not None:
                self.on_learn(bool(self.backend.honours_n))
        # The reservation is released in the same step that adds the call's real spend.
        return self._reply(path, use, groups, messages, parts, known, latency, peak[0], replayed, worst)

    def _lookup(self, key: tuple[str, str, int]) -> tuple[RecordedCall | None, Book | None]:
        for book in (self.own_book, self.source_book):
            if book is not None:
                found = book.get(key)
                if found is not None:
                    return found, book
        return None, None

    def _copy_part(self, part: dict, use: int, book: Book, known: dict[str, str]) -> dict:
        data = dict(part)
        data["use"] = use
        replies: list[str | None] = []
        for digest in part.get("replies", []):
            text = book.text(digest) if digest is not None else None
            if text is None:
                replies.append(None)
                continue
            if book is not self.own_book:  # the text lives in another session's store
                digest = self._put_text(text)
            known[digest] = text
            replies.append(digest)
        data["replies"] = replies
        return data

    @staticmethod
    def _missing(groups: list[tuple[str, int]], parts: dict[tuple[int, int], dict]) -> list[tuple[int, int, int]]:
        """(group, start, end) sample ranges the record does not cover."""
        covered: dict[int, set[int]] = {}
        for (g, offset), part in parts.items():
            covered.setdefault(g, set()).update(range(offset, offset + len(part.get("replies", []))))
        out = []
        for g, (_, count) in enumerate(groups):
            have = covered.get(g, set())
            start = None
            for i in range(count + 1):
                gap = i < count and i not in have
                if gap and start is None:
                    start = i
                elif not gap and start is not None:
                    out.append((g, start, i))
                    start = None
        return out

    # -- caps -----------------------------------------------------------------------------
    def _admit(self, worst: dict) -> None:
        with self._lock:
            if self.stop is not None:
                raise self.stop
            refusal = self.caps.refuse(self.usage.to_dict(), self._reserved, worst) if self.caps else None
            if refusal is None:
                self._reserved["calls"] += 1
                self._reserved["tokens"] += worst["tokens"]
                self._reserved["cost_usd"] += worst["cost_usd"] or 0.0
                return
            self.stop = CapReached(*refusal)
        self.gate.cancel()  # stop the other branches too; the engine writes PAUSED
        raise self.stop

    def _release(self, worst: dict, *, locked: bool = False) -> None:
        if not locked:
            with self._lock:
                self._release(worst, locked=True)
            return
        self._reserved["calls"] -= 1
        self._reserved["tokens"] -= worst["tokens"]
        self._reserved["cost_usd"] -= worst["cost_usd"] or 0.0

    # -- requests -------------------------------------------------------------------------
    def _fill(self, call: _Call, message: str, g: int, start: int, end: int) -> dict[tuple[int, int], dict]:
        """Samples start..end-1 of group g: one request with n when the server honours n (or
        we do not know yet), single requests for whatever is still missing."""
        got: dict[tuple[int, int], dict] = {}
        base = self._seed_for(call.path, g)
        offset = start
        if getattr(self.backend, "honours_n", None) is not False or end - start == 1:
            part = self._part(call, message, g, offset, end - offset, base)
            got[(g, offset)] = part
            offset += max(len(part["replies"]), 1)
        if offset < end:
            futures = [self._request_pool.submit(self._part, call, message, g, i, 1, base)
                       for i in range(offset, end)]
            for i, future in zip(range(offset, end), futures, strict=True):
                got[(g, i)] = future.result()
        return got

    def _part(self, call: _Call, message: str, g: int, offset: int, n: int, base_seed: int) -> dict:
        """One request (with retries) for n samples; recorded as an LM_PART event."""
        started = time.monotonic()
        path, use, peak = call.path, call.use, call.peak

        def attempt() -> Completions:
            with self._slots:
                with self._lock:
                    self._inflight += 1
                    self.peak_concurrency = max(self.peak_concurrency, self._inflight)
                    peak[0] = max(peak[0], self._inflight)
                try:
                    # A backend with only `complete` (the older protocol) answers all n itself.
                    ask = getattr(self.backend, "request", None) or self.backend.complete
                    return ask(call.system, message, n=n, temperature=call.temperature,
                                                max_tokens=self.max_tokens, seed=base_seed + offset)
                finally:
                    with self._lock:
                        self._inflight -= 1

        def on_retry(made: int, exc: LMRequestError, wait: float) -> None:
            self._emit(ev.Event(ev.LM_RETRY, path, {
                "use": use, "group": g, "offset": offset, "attempt": made, "status": exc.status,
                "error": str(exc)[:300], "wait": round(wait, 3)}))

        data: dict = {"use": use, "group": g, "offset": offset, "seed": base_seed + offset}
        try:
            result, made = with_retries(attempt, self.policy, on_retry=on_retry,
                                        cancel=self.gate.cancel_event, rng=self._rng)
        except LMRequestError as exc:
            made = getattr(exc, "attempts", 1)
            result = Completions([None] * n, 0, 0, made, [None] * n, str(exc)[:300])
        texts = list(result.texts[:n])
        hashes = []
        for text in texts:
            digest = self._put_text(text) if isinstance(text, str) else None
            if digest is not None:
                call.known[digest] = text
            hashes.append(digest)
        data.update({
            "replies": hashes,
            "finish_reasons": list(result.finish_reasons[:n]),
            "prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
            "requests": made, "latency": round(time.monotonic() - started, 4)})
        if result.error:
            data["error"] = result.error
        if result.usage_missing:
            data["usage_missing"] = True
        self._emit(ev.Event(ev.LM_PART, path, data))
        return data

    def _reply(self, path: str, use: int, groups: list[tuple[str, int]], messages: list[str],
               parts: dict[tuple[int, int], dict], known: dict[str, str], latency: float, peak: int,
               replayed: bool, worst: dict | None) -> list[str]:
        per_group: dict[int, list[str | None]] = {}
        ordered = sorted(parts.items())
        for (g, _offset), part in ordered:
            per_group.setdefault(g, []).extend(part.get("replies", []))
        index = {message: g for g, (message, _) in enumerate(groups)}
        cursor: Counter = Counter()
        hashes: list[str | None] = []
        for message in messages:
            g = index[message]
            got = per_group.get(g, [])
            hashes.append(got[cursor[g]] if cursor[g] < len(got) else None)
            cursor[g] += 1
        replies = [known.get(h, "") if h is not None else "" for h in hashes]
        totals = aggregate_parts([p for _, p in ordered])
        failed = sum(1 for h in hashes if h is None)
        dollars = price_cost(self.backend.price_key, totals["prompt_tokens"], totals["completion_tokens"])
        errors = [p["error"] for _, p in ordered if p.get("error")]
        # Totals are updated and their BUDGET event appended under one lock, so the log's
        # BUDGET events are in order and the last one holds the session's totals.
        self._order.acquire()
        with self._lock:
            u = self.usage
            u.calls += 1
            u.requests += totals["requests"]
            u.retries += totals["retries"]
            u.completions += len(messages) - failed
            u.failed += failed
            u.prompt_tokens += totals["prompt_tokens"]
            u.completion_tokens += totals["completion_tokens"]
            if u.cost_usd is not None and dollars is not None:
                u.cost_usd += dollars
            if worst is not None:
                self._release(worst, locked=True)
            snapshot = u.to_dict()
        reply = {"use": use, "replies": [self._put_text(r) for r in replies],
                 "prompt_tokens": totals["prompt_tokens"],
                 "completion_tokens": totals["completion_tokens"],
                 "requests": totals["requests"], "retries": totals["retries"], "failed": failed,
                 "latency": round(latency, 4), "concurrency": peak, "cost_usd": dollars}
        if errors:
            reply["error"] = "; ".join(errors)[:1000]
        if replayed:
            reply["replayed"] = True
        try:
            self._emit(ev.Event(ev.LM_REPLY, path, reply))
            self._emit(ev.Event(ev.BUDGET, path, snapshot))
        finally:
            self._order.release()
        return replies

    def close(self) -> None:
        self._group_pool.shutdown(wait=False, cancel_futures=True)
        self._request_pool.shutdown(wait=False, cancel_futures=True)


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
