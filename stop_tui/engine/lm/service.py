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
record lacks is requested (a request that failed when it was recorded is asked again on resume).

Three guards stop spending that nobody granted or that cannot give a score:
- every parameter an improver passes is checked before the use is counted (`check_temperature`,
  `check_count`, `check_text`): NaN, infinities, non-numbers, and prompt texts holding lone
  surrogates (which no request can carry) are an exception to the improver;
- a prompt estimated past `max_prompt_tokens` or the model's context (`backend.context_tokens`)
  is refused before it is sent: a recorded failed call, one use, an exception (`PromptTooLong`);
- a server that fails is not a score: when FAILURE_STREAK calls in a row get no completion, or
  the first call to a network server fails (it never answered), the run pauses like at a cap
  (`ServerFailing`): the iteration in flight is abandoned, not scored, and a resume redoes it.
"""

from __future__ import annotations

import math
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
from stop_tui.engine.lm.caps import Caps, SharedBudget, call_worst_case, estimate_tokens
from stop_tui.engine.lm.prices import cost as price_cost
from stop_tui.engine.lm.record import Book, RecordedCall, aggregate_parts, content_key
from stop_tui.engine.lm.retry import RetryPolicy, with_retries

DEFAULT_CONCURRENCY = 8
FAILURE_STREAK = 3  # calls in a row with no completion that pause the run
MAX_TEMPERATURE = 2.0
SWITCH_SERVER = "add --base-url URL / --model NAME"  # how `run --resume` moves to another server
STORED_REFUSED_CHARS = 4000  # of a refused prompt, what the record keeps (the head)


@dataclass
class _Call:
    """What the requests of one call share."""

    path: str
    use: int
    system: str
    temperature: float
    peak: list[int]  # the most requests in flight (session-wide) while this call's were
    known: dict[str, str]  # reply texts by hash


class LMStop(Cancelled):
    """The LM service stopped the run: it pauses, and what was in flight is not a result."""

    message: str
    drain_timeout: float | None = 10.0  # how long the calls still in flight may take to be recorded

    def pause_data(self, resume: str, switch: str = SWITCH_SERVER) -> dict:
        """The PAUSED event's data (its "reason" is the one `paused:` line a command prints);
        `resume` is the command that continues the session, `switch` how that command moves
        to another server (a failing server's line says it)."""
        raise NotImplementedError


class CapReached(LMStop):
    """A session cap refused an LM call: the run pauses (see caps.py). The calls in flight are
    paid for: the run waits for them all."""

    drain_timeout = None

    def __init__(self, option: str, message: str, resume: str | None = None) -> None:
        super().__init__(message)
        self.option = option
        self.message = message
        self.resume = resume  # the command that continues (a shared budget's), else the session's

    def pause_data(self, resume: str, switch: str = "") -> dict:
        return {"cap": self.option,
                "reason": f"{self.message}. Raise it and resume: {self.resume or resume} {self.option} <higher>"}


class ServerFailing(LMStop):
    """LM requests keep failing after their retries: the run pauses (nothing is scored from a
    server that does not answer). `hint`: the backend's advice (`failure_hint`), if any."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def pause_data(self, resume: str, switch: str = SWITCH_SERVER) -> dict:
        hint = f" {self.hint.rstrip('.')}." if self.hint else ""
        return {"lm_failed": True,
                "reason": f"{self.message.rstrip('. ')}; nothing was scored from it.{hint} When it answers, "
                          f"resume: {resume} ({switch} to use another)"}


class PromptTooLong(ValueError):
    """A prompt past the prompt-size guard: refused before sending (the improver sees this)."""


def check_temperature(value: object) -> float:
    """An improver's temperature: a finite number, clamped to [0, 2]; anything else raises."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"temperature must be a number, not {type(value).__name__}")
    t = float(value)
    if not math.isfinite(t):
        raise ValueError(f"temperature must be a finite number, not {t}")
    return min(max(t, 0.0), MAX_TEMPERATURE)


def check_text(value: object, what: str) -> str:
    """An improver's prompt text (`what`: "expertise", "message", "message 2"): a str that can
    be sent. A lone surrogate (a valid str that no encoding takes, e.g. "\\ud800") cannot be
    put in a request: it is refused, not replaced, so that what is sent is what was asked."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string, not {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{what} holds a lone surrogate (U+{ord(value[exc.start]):04X} at character "
                         f"{exc.start + 1}), which no request can carry: nothing was sent") from None
    return value


def check_count(value: object, most: int) -> int:
    """An improver's n_responses: a whole number from 1 to `most`."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"n_responses must be a whole number, not {type(value).__name__}")
    if not 1 <= value <= most:
        raise ValueError(f"n_responses must be between 1 and {most} (got {value})")
    return value


@dataclass
class Usage:
    calls: int = 0
    requests: int = 0  # server requests sent, failed attempts included
    retries: int = 0  # failed attempts that were retried
    completions: int = 0  # completions with text
    failed: int = 0  # completions that could not be obtained (or were malformed)
    prompt_tokens: int = 0  # as billed by the server (answered requests only)
    completion_tokens: int = 0  # reasoning tokens included (billed as output)
    reasoning_tokens: int = 0  # of completion_tokens, where the server reports them
    cost_usd: float | None = 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        if not d["reasoning_tokens"]:
            del d["reasoning_tokens"]  # most models have none: the log stays as it was
        return d

    @classmethod
    def from_dict(cls, d: dict, priced: bool) -> Usage:
        u = cls(cost_usd=0.0 if priced else None)
        for key in ("calls", "requests", "retries", "completions", "failed", "prompt_tokens",
                    "completion_tokens", "reasoning_tokens"):
            setattr(u, key, int(d.get(key, 0) or 0))
        if priced and isinstance(d.get("cost_usd"), int | float):
            u.cost_usd = float(d["cost_usd"])
        return u


class LMService:
    def __init__(self, backend: Backend, *, max_tokens: int, seed: int, emit: Callable[[ev.Event], object],
                 put_text: Callable[[str], str], gate: Gate | None = None,
                 max_concurrency: int = DEFAULT_CONCURRENCY, caps: Caps | None = None,
                 policy: RetryPolicy | None = None, max_prompt_tokens: int | None = None,
                 shared: SharedBudget | None = None) -> None:
        self.backend = backend
        self.max_tokens = max_tokens
        self.seed = seed
        self._emit = emit
        self._put_text = put_text
        self.gate = gate or Gate()
        self.caps = caps or Caps()
        self.shared = shared  # dollars shared with other runs (a sweep's --max-cost), after `caps`
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
        self.max_prompt_tokens = max_prompt_tokens
        self.stop: LMStop | None = None  # set when a cap or a failing server paused the run
        # Told what the backend learns about its server (base.LEARNED_KEYS: n honoured or not,
        # a fixed temperature, max_completion_tokens), each fact once, as session meta entries:
        # the session saves them, so a resumed run does not ask again.
        self.on_learn: Callable[[dict], object] | None = None
        self._told = self._learned()
        self._learn_lock = threading.Lock()
        self._server_ok = False  # has the server given one completion to this process?
        self._streak = 0  # calls in a row that got no completion
        self._waiting: dict[int, tuple[str, float]] = {}  # request token -> (path, since)
        self._tokens = 0
        self._pending: set[threading.Event] = set()  # requests being waited for
        self._abandoned = False  # closed: nobody waits for requests still out
        self._rng = random.Random(seed)
        self._group_pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="lm-group")
        self._request_pool = ThreadPoolExecutor(max_workers=64, thread_name_prefix="lm-request")

    def warm(self) -> None:
        """Let the backend get ready for its first request in the background (the openai
        backend imports its client library, most of a second) while the caller starts the
        sandbox; contacts nothing. Backends without `warm` have nothing to prepare."""
        warm = getattr(self.backend, "warm", None)
        if warm is not None:
            warm()

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
            self._tell_learned()  # also when the call failed or paused the run
            with self._idle:
                self._active -= 1
                self._idle.notify_all()

    def _learned(self) -> dict:
        learned = getattr(self.backend, "learned", None)
        return dict(learned()) if learned is not None else {}

    def _tell_learned(self) -> None:
        """Tell `on_learn` what the backend learned since it was last told."""
        with self._learn_lock:
            new = {k: v for k, v in self._learned().items() if self._told.get(k) != v}
            if not new:
                return
            self._told.update(new)
            if self.on_learn is not None:
                self.on_learn(new)

    def prompt_limit(self) -> tuple[int, str] | None:
        """(the most prompt tokens one request may carry, where that limit comes from)."""
        limits = []
        if self.max_prompt_tokens:
            limits.append((int(self.max_prompt_tokens), "--max-prompt-tokens"))
        context = getattr(self.backend, "context_tokens", None)
        if isinstance(context, int) and context > 0:
            limits.append((context, f"the model's context of {context:,} tokens"))
        return min(limits) if limits else None

    def _call(self, path: str, use: int, system: str, messages: list[str], temperature: float) -> list[str]:
        temperature = check_temperature(temperature)
        check_text(system, "expertise")
        for k, m in enumerate(messages, 1):
            check_text(m, f"message {k}")
        limit = self.prompt_limit()
        if limit is not None:
            biggest = max(messages, key=len)
            estimate = estimate_tokens(system) + estimate_tokens(biggest)
            if estimate > limit[0]:
                self._refuse(path, use, system, messages, temperature, PromptTooLong(
                    f"prompt too long: about {estimate:,} tokens (estimated from "
                    f"{len(system) + len(biggest):,} characters), over the limit of {limit[0]:,} "
                    f"({limit[1]}); nothing was sent"))
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
                # Our own record's failed requests are asked again (the server may work now);
                # another session's record is replayed as it was, failures included.
                failed = not any(part.get("replies") or [None])
                if g < len(groups) and not (failed and book is self.own_book):
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
            self._emit(ev.event(ev.LMRequest(
                use=use, system=system_hash, prompts=prompt_hashes, n=len(messages),
                distinct=len(groups), temperature=temperature, max_tokens=self.max_tokens,
                model=self.backend.model), path))
            started = time.monotonic()
            peak = [0]
            known: dict[str, str] = {}
            fresh_parts: list[dict] = []
            for (g, offset), part in sorted(parts.items()):  # the record, written again
                parts[(g, offset)] = self._copy_part(part, use, book, known)
                self._emit(ev.event(ev.LMPart.from_data(parts[(g, offset)]), path))
            if missing:
                call = _Call(path, use, system, temperature, peak, known)
                fresh = list(self._group_pool.map(
                    lambda m: self._fill(call, groups[m[0]][0], m[0], m[1], m[2]), missing))
                for got in fresh:
                    parts.update(got)
                    fresh_parts += got.values()
            latency = time.monotonic() - started
        except BaseException:
            if worst is not None:
                self._release(worst)
                self._settle(worst, worst["cost_usd"])  # what it cost is not known: the most
            raise
        # The reservation is released in the same step that adds the call's real spend.
        replies = self._reply(path, use, groups, messages, parts, known, latency, peak[0], replayed, worst)
        if fresh_parts:
            self._judge(fresh_parts)
        return replies

    def _judge(self, fresh: list[dict]) -> None:
        """After a call that asked the server: pause the run when the server keeps failing."""
        if self.source_book is not None:
            return  # replay: a request the record lacks fails by design, no server is involved
        answered = any(r is not None for part in fresh for r in part.get("replies", []))
        with self._lock:
            if answered:
                self._server_ok, self._streak = True, 0
                return
            self._streak += 1
            # A network server that never answered is a wrong URL, model or key, or a server that
            # is down: pause at once. (A local worker that crashed is restarted: a streak.)
            network = getattr(self.backend, "base_url", None) is not None
            if (self._server_ok or not network) and self._streak < FAILURE_STREAK:
                return
            if self.stop is None:
                errors = [p["error"] for p in fresh if p.get("error")]
                what = errors[-1] if errors else "no completion"
                where = self.describe_server()
                if self._server_ok:
                    message = f"{where} failed {self._streak} calls in a row: {what}"
                else:
                    message = f"{where} gave no valid reply: {what}"
                self.stop = ServerFailing(message, getattr(self.backend, "failure_hint", None))
            stop = self.stop
        self.gate.cancel()  # stop the other branches too; the engine writes PAUSED
        raise stop

    def describe_server(self) -> str:
        url = getattr(self.backend, "base_url", None)
        model = self.backend.model
        return f"the LM server at {url} (model {model})" if url else f"the LM backend {model}"

    def _refuse(self, path: str, use: int, system: str, messages: list[str], temperature: float,
                error: PromptTooLong) -> None:
        """Record a call refused before sending (counted, failed, nothing sent) and raise."""
        def head(text: str) -> str:
            if len(text) <= STORED_REFUSED_CHARS:
                return text
            return text[:STORED_REFUSED_CHARS] + f"\n[... {len(text):,} characters in all, not sent]"

        system_hash = self._put_text(head(system))
        prompts = [self._put_text(head(m)) for m in messages]
        empty = self._put_text("")
        self._order.acquire()
        try:
            with self._lock:
                u = self.usage
                u.calls += 1
                u.failed += len(messages)
                snapshot = u.to_dict()
            self._emit(ev.event(ev.LMRequest(
                use=use, system=system_hash, prompts=prompts, n=len(messages),
                distinct=len(set(messages)), temperature=temperature, max_tokens=self.max_tokens,
                model=self.backend.model, refused=str(error)), path))
            self._emit(ev.event(ev.LMReply(
                use=use, replies=[empty] * len(messages), prompt_tokens=0, completion_tokens=0,
                requests=0, retries=0, failed=len(messages), latency=0.0, concurrency=0,
                cost_usd=0.0 if self.priced else None, error=str(error), refused=True), path))
            self._emit(ev.event(ev.Budget(**snapshot), path))
        finally:
            self._order.release()
        raise error

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
            else:
                self.stop = CapReached(*refusal)
        if refusal is None and self.shared is not None:
            line = self.shared.reserve(worst["cost_usd"])  # outside the lock: it may be remote
            if line is not None:
                with self._lock:
                    self._release(worst, locked=True)
                    self.stop = self.stop or CapReached("--max-cost", line, self.shared.resume)
                refusal = line
        if refusal is None:
            return
        self.gate.cancel()  # stop the other branches too; the engine writes PAUSED
        raise self.stop

    def _settle(self, worst: dict, spent_usd: float | None) -> None:
        """Tell the shared budget (if any) that a call it granted ended, costing `spent_usd`."""
        if self.shared is not None:
            self.shared.settle(worst["cost_usd"], spent_usd or 0.0)

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
                    self._tokens += 1
                    token = self._tokens
                    self._waiting[token] = (path, time.monotonic())
                try:
                    # A backend with only `complete` (the older protocol) answers all n itself.
                    ask = getattr(self.backend, "request", None) or self.backend.complete
                    return self._send(lambda: ask(call.system, message, n=n, temperature=call.temperature,
                                                  max_tokens=self.max_tokens, seed=base_seed + offset))
                finally:
                    with self._lock:
                        self._inflight -= 1
                        self._waiting.pop(token, None)

        def on_retry(made: int, exc: LMRequestError, wait: float) -> None:
            self._emit(ev.event(ev.LMRetry(
                use=use, group=g, offset=offset, attempt=made, status=exc.status,
                error=str(exc)[:300], wait=round(wait, 3)), path))

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
        part = ev.event(ev.LMPart(
            use=use, group=g, offset=offset, seed=base_seed + offset, replies=hashes,
            finish_reasons=list(result.finish_reasons[:n]), prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens, requests=made,
            latency=round(time.monotonic() - started, 4),
            reasoning_tokens=getattr(result, "reasoning_tokens", 0) or 0,
            error=result.error or None, usage_missing=bool(result.usage_missing)), path)
        self._emit(part)
        return part.data

    def _send(self, request: Callable[[], Completions]) -> Completions:
        """One request, made in a thread of its own so that a request that never returns cannot
        keep the engine (or the interpreter's exit) waiting: `close` abandons it."""
        done = threading.Event()
        box: dict = {}

        def run() -> None:
            try:
                box["value"] = request()
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
                box["error"] = exc
            finally:
                done.set()

        with self._lock:
            if self._abandoned:
                raise Cancelled()
            self._pending.add(done)
        try:
            threading.Thread(target=run, daemon=True, name="lm-send").start()
            done.wait()
        finally:
            with self._lock:
                self._pending.discard(done)
        if "error" in box:
            raise box["error"]
        if "value" not in box:
            raise Cancelled()  # abandoned by close()
        return box["value"]

    def waiting(self) -> list[tuple[str, str, float]]:
        """Requests waiting for the server now: (call path, server URL or model, seconds),
        longest first (the progress lines and the TUI show them)."""
        now = time.monotonic()
        target = getattr(self.backend, "base_url", None) or self.backend.model
        with self._lock:
            rows = [(path, target, now - since) for path, since in self._waiting.values()]
        return sorted(rows, key=lambda row: -row[2])

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
            u.reasoning_tokens += totals["reasoning_tokens"]
            if u.cost_usd is not None and dollars is not None:
                u.cost_usd += dollars
            if worst is not None:
                self._release(worst, locked=True)
            snapshot = u.to_dict()
        reply = ev.LMReply(use=use, replies=[self._put_text(r) for r in replies],
                           prompt_tokens=totals["prompt_tokens"],
                           completion_tokens=totals["completion_tokens"],
                           reasoning_tokens=totals["reasoning_tokens"], requests=totals["requests"],
                           retries=totals["retries"], failed=failed, latency=round(latency, 4),
                           concurrency=peak, cost_usd=dollars,
                           error="; ".join(errors)[:1000] if errors else None, replayed=replayed)
        try:
            self._emit(ev.event(reply, path))
            self._emit(ev.event(ev.Budget(**snapshot), path))
        finally:
            self._order.release()
            if worst is not None:
                self._settle(worst, dollars)
        return replies

    def close(self) -> None:
        """Stop: requests still out are abandoned (their threads wait no longer)."""
        with self._lock:
            self._abandoned = True
            pending = list(self._pending)
        for done in pending:
            done.set()
        self._group_pool.shutdown(wait=False, cancel_futures=True)
        self._request_pool.shutdown(wait=False, cancel_futures=True)


class LanguageModel:
    """The paper's `language_model` (README, "The method"), engine side. Sandboxed improvers
    reach it through proxies; each `prompt` / `batch_prompt` is ONE use however many samples."""

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
        if not isinstance(message_batch, list | tuple):
            raise TypeError(f"message_batch must be a list of strings, not {type(message_batch).__name__}")
        message_batch = list(message_batch)
        temperature = check_temperature(temperature)  # before the use is counted
        if not message_batch:
            return []
        if not all(isinstance(m, str) for m in message_batch):
            raise TypeError("every message must be a string")
        check_text(expertise, "expertise")
        for k, m in enumerate(message_batch, 1):
            check_text(m, f"message {k}")
        if len(message_batch) > self.max_responses_per_call:
            raise ValueError(f"at most {self.max_responses_per_call} messages per call "
                             f"(got {len(message_batch)})")
        use = self._accept()
        return self._service.call(f"{self.path}/lm{use}", use, expertise, message_batch, temperature)

    def prompt(self, expertise: str, message: str, n_responses: int = 1, temperature: float = 0.7) -> list[str]:
        if not isinstance(message, str) or not isinstance(expertise, str):
            raise TypeError("expertise and message must be strings")
        check_text(expertise, "expertise")
        check_text(message, "message")
        n_responses = check_count(n_responses, self.max_responses_per_call)
        temperature = check_temperature(temperature)  # before the use is counted
        use = self._accept()
        return self._service.call(f"{self.path}/lm{use}", use, expertise, [message] * n_responses, temperature)
