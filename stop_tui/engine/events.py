"""Engine events: the one stream that feeds the session store, the headless printer and the TUI.

An event is immutable: a kind, the node path of the work it concerns and a JSON-able payload.
Program texts never travel inside events: payloads name them by content hash (see store.py).

Node paths name every piece of work, e.g. ``it2/c3/r1/lm2``:
``itN`` iteration N (``it0`` scores the seed improver), ``cK`` the K-th candidate improver the
iteration's improver asked û about, ``check`` the engine's re-score of what the improver
returned, ``rJ`` one improver run inside a meta-utility, ``lmI`` one LM call, ``sI`` one
downstream solution scored inside a run, ``final`` the run's returned solution.

Each kind has one schema below: a frozen dataclass whose fields are the payload's keys (a Python
keyword gets a trailing underscore and is stored under the plain key, ``from_`` -> ``"from"``).
Build every event with ``event(payload, path)``; read a stored one's typed payload with
``Event.payload``; ``validate(event)`` lists how a stored event differs from its schema.

A field is one of three sorts:
- required (no default): always written; an old row that lacks it still decodes (to None);
- optional (a default): always written now, absent in sessions older than the key;
- sparse (``sparse(default)``): written only when its value is not the default (``error``,
  ``replayed``...), so readers that test ``"key" in data`` read what they always did.
Decoding tolerates keys a schema does not know (an older or newer version wrote them);
``validate`` reports them.
"""

from __future__ import annotations

import dataclasses
import functools
import keyword
import re
import time
import types
import typing
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar, NewType, Union

# Session level
SESSION_STARTED = "session_started"
SESSION_FINISHED = "session_finished"
PAUSED = "paused"
RESUMED = "resumed"
ERROR = "error"
LM_CHANGED = "lm_changed"
# Iterations
ITERATION_STARTED = "iteration_started"
ITERATION_ACCEPTED = "iteration_accepted"
ITERATION_REJECTED = "iteration_rejected"
# Candidates and runs (improvers)
CANDIDATE_PROPOSED = "candidate_proposed"
CANDIDATE_SCORED = "candidate_scored"
RUN_STARTED = "run_started"
RUN_FINISHED = "run_finished"
SCORING_CANCELLED = "scoring_cancelled"
# Downstream solutions
SOLUTION_SCORED = "solution_scored"
# LM traffic
LM_REQUEST = "lm_request"
LM_REPLY = "lm_reply"
LM_PART = "lm_part"
LM_RETRY = "lm_retry"
BUDGET = "budget"
SANDBOX = "sandbox"
FLAG = "flag"
# Transfer sessions (stop-tui transfer)
TRANSFER_STARTED = "transfer_started"
TRANSFER_SCORED = "transfer_scored"
TRANSFER_FINISHED = "transfer_finished"

Hash = NewType("Hash", str)  # a text's content hash in the session store (store.content_hash)
HASH = re.compile(r"[0-9a-f]{16}")
SCHEMAS: dict[str, type[Payload]] = {}  # kind -> its schema


def sparse(default: Any = None) -> Any:
    """A key written only when its value is not `default` (absent from the log otherwise)."""
    return field(default=default, metadata={"sparse": True})


def _key(name: str) -> str:
    return name[:-1] if name.endswith("_") and keyword.iskeyword(name[:-1]) else name


class Payload:
    """The typed payload of one event kind (subclasses are frozen, keyword-only dataclasses,
    registered in SCHEMAS under their KIND)."""

    KIND: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        assert cls.KIND not in SCHEMAS, cls.KIND
        SCHEMAS[cls.KIND] = cls

    def to_data(self) -> dict[str, Any]:
        """The payload as the JSON dict stored in the event (sparse keys left out at default)."""
        data: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if f.metadata.get("sparse") and value == f.default:
                continue
            data[_key(f.name)] = _jsonable(value)
        return data

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Payload:
        """Decode a stored dict: missing keys take their default (a required one: None);
        keys the schema does not know are ignored."""
        values: dict[str, Any] = {}
        for name, key, required in _decoding(cls):
            if key in data:
                values[name] = data[key]
            elif required:
                values[name] = None
        return cls(**values)


@functools.cache
def _decoding(cls: type) -> tuple[tuple[str, str, bool], ...]:
    """(field name, stored key, required) per field of a schema (a log decodes many events)."""
    return tuple((f.name, _key(f.name),
                  f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
                 for f in dataclasses.fields(cls))


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value




# -- session level --------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class SessionStarted(Payload):
    KIND: ClassVar[str] = SESSION_STARTED
    task: str  # a task name, a task folder, or "grid,mqa" (a transfer's tasks)
    model: str
    settings: dict[str, Any]
    resumed: bool = False
    kind: str | None = sparse()  # a session that is not a STOP run: "transfer", "baseline"
    method: str | None = sparse()  # a baseline's method


@dataclass(frozen=True, kw_only=True)
class SessionFinished(Payload):
    KIND: ClassVar[str] = SESSION_FINISHED
    iterations_completed: int
    reason: str


@dataclass(frozen=True, kw_only=True)
class Paused(Payload):
    KIND: ClassVar[str] = PAUSED
    reason: str  # the one `paused:` line a command prints
    cap: str | None = sparse()  # the cap that paused it: "--max-cost" | "--max-tokens" | "--max-calls"
    lm_failed: bool = sparse(False)  # the LM server kept failing (lm/service.py)


@dataclass(frozen=True, kw_only=True)
class Resumed(Payload):
    """A run continued (see engine/resume.py): `iteration` is the one it continues with;
    `superseded_from` the first seq of an unfinished iteration's events, which this event
    supersedes (it is re-executed, `recorded_calls` of its LM calls answered from the record).
    A transfer's resume writes only `kind`."""

    KIND: ClassVar[str] = RESUMED
    iteration: int | None = sparse()
    superseded_from: int | None = None
    recorded_calls: int | None = sparse()
    kind: str | None = sparse()


@dataclass(frozen=True, kw_only=True)
class Error(Payload):
    KIND: ClassVar[str] = ERROR
    message: str


@dataclass(frozen=True, kw_only=True)
class LMChanged(Payload):
    """Resumed with another model or server: each side is {model, base_url, replay_of}."""

    KIND: ClassVar[str] = LM_CHANGED
    from_: dict[str, str | None]
    to: dict[str, str | None]


# -- iterations -----------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class IterationStarted(Payload):
    KIND: ClassVar[str] = ITERATION_STARTED
    iteration: int
    improver: Hash  # the improver that runs (the one held after iteration - 1)


@dataclass(frozen=True, kw_only=True)
class IterationAccepted(Payload):
    KIND: ClassVar[str] = ITERATION_ACCEPTED
    iteration: int
    improver: Hash  # the improver held from now on
    val: float
    test: float | None
    rule: str | None = None  # the acceptance rule (settings.acceptance)


@dataclass(frozen=True, kw_only=True)
class IterationRejected(Payload):
    KIND: ClassVar[str] = ITERATION_REJECTED
    iteration: int
    kept: Hash  # the improver still held
    reason: str
    val: float | None
    test: float | None
    rule: str | None = None


# -- candidates and runs --------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class CandidateProposed(Payload):
    KIND: ClassVar[str] = CANDIDATE_PROPOSED
    role: str  # "seed" | "candidate" | "check" | "baseline:METHOD"
    source: Hash | None  # None: no program
    parent: Hash | None


@dataclass(frozen=True, kw_only=True)
class CandidateScored(Payload):
    KIND: ClassVar[str] = CANDIDATE_SCORED
    role: str
    score: float
    test: float | None = sparse()  # only when scored on test too
    error: str | None = sparse()  # the first failed run's error
    failed_runs: int | None = sparse()


@dataclass(frozen=True, kw_only=True)
class RunStarted(Payload):
    KIND: ClassVar[str] = RUN_STARTED
    improver: Hash


@dataclass(frozen=True, kw_only=True)
class RunFinished(Payload):
    KIND: ClassVar[str] = RUN_FINISHED
    solution: Hash | None
    val: float | None = None
    test: float | None = None
    error: str | None
    seconds: float
    lm_uses: int | None = None
    utility_uses: int | None = None


@dataclass(frozen=True, kw_only=True)
class ScoringCancelled(Payload):
    """The improver run (RUN_STARTED) or candidate (CANDIDATE_PROPOSED) at this path ended
    unscored: the improver run that asked for its scoring ended first. Not a score (readers
    count it as neither scored nor failed); a stop of the engine (quit, cap) records nothing."""

    KIND: ClassVar[str] = SCORING_CANCELLED
    reason: str


@dataclass(frozen=True, kw_only=True)
class SolutionScored(Payload):
    KIND: ClassVar[str] = SOLUTION_SCORED
    source: Hash | None
    split: str  # "val" | "test"
    score: float
    seconds: float
    error: str | None = sparse()


# -- LM traffic -----------------------------------------------------------------------------
# One call (one `prompt` / `batch_prompt` use) is LM_REQUEST, an LM_PART per server request
# that got an answer (group = index of the distinct message, offset = first sample; a failed or
# malformed one has replies [null] and error), LM_REPLY, then BUDGET (session totals).
# See lm/service.py and lm/record.py (replay keys); resume.py for superseded events.

@dataclass(frozen=True, kw_only=True)
class LMRequest(Payload):
    KIND: ClassVar[str] = LM_REQUEST
    use: int
    system: Hash
    prompts: list[Hash]
    n: int
    distinct: int | None = None
    temperature: float
    max_tokens: int
    model: str | None = None
    refused: str | None = sparse()  # refused before sending (prompt too long): why


@dataclass(frozen=True, kw_only=True)
class LMReply(Payload):
    KIND: ClassVar[str] = LM_REPLY
    use: int
    replies: list[Hash]  # "" (its hash) for a failed completion
    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int = sparse(0)  # of completion_tokens, where the server reports them
    requests: int  # server requests sent, failed attempts included
    retries: int = 0
    failed: int = 0  # completions that could not be obtained
    latency: float
    concurrency: int = 0  # the most requests in flight (session-wide) while this call's were
    cost_usd: float | None  # None: the model has no known price
    error: str | None = sparse()
    replayed: bool = sparse(False)  # answered from another session's record
    refused: bool = sparse(False)  # refused before sending


@dataclass(frozen=True, kw_only=True)
class LMPart(Payload):
    KIND: ClassVar[str] = LM_PART
    use: int
    group: int
    offset: int
    seed: int
    replies: list[Hash | None]
    finish_reasons: list[str | None]
    prompt_tokens: int
    completion_tokens: int
    requests: int  # attempts made
    latency: float
    reasoning_tokens: int = sparse(0)
    error: str | None = sparse()
    usage_missing: bool = sparse(False)


@dataclass(frozen=True, kw_only=True)
class LMRetry(Payload):
    """One failed attempt that will be retried."""

    KIND: ClassVar[str] = LM_RETRY
    use: int
    group: int
    offset: int
    attempt: int
    status: int | None
    error: str
    wait: float


@dataclass(frozen=True, kw_only=True)
class Budget(Payload):
    """The session's LM totals after a call (lm/service.py Usage)."""

    KIND: ClassVar[str] = BUDGET
    calls: int
    requests: int
    retries: int = 0
    completions: int
    failed: int = 0
    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int = sparse(0)
    cost_usd: float | None


@dataclass(frozen=True, kw_only=True)
class Sandbox(Payload):
    """Which protections this machine's sandbox has (names: sandbox/protections.py), per session."""

    KIND: ClassVar[str] = SANDBOX
    mode: str | None = None  # None: no sandbox mode could start (see `error`)
    protections: dict[str, bool]
    missing: list[str] = field(default_factory=list)
    fallbacks: list[str] = field(default_factory=list)  # why stronger modes could not start
    notes: list[str] | None = sparse()
    error: str | None = sparse()


@dataclass(frozen=True, kw_only=True)
class Flag(Payload):
    """A static safety finding (engine/safety.py KINDS), at the candidate's path."""

    KIND: ClassVar[str] = FLAG
    kind: str
    detail: str
    line: int | None = None
    omitted: int = sparse(0)  # > 0: this finding stands for that many more of its kind
    role: str | None = None  # "improver" | "solution"


# -- transfer sessions ----------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class TransferStarted(Payload):
    KIND: ClassVar[str] = TRANSFER_STARTED
    task: str
    who: str  # "seed_solution" | "seed_improver" | "improver"
    run: int


@dataclass(frozen=True, kw_only=True)
class TransferScored(Payload):
    KIND: ClassVar[str] = TRANSFER_SCORED
    task: str
    who: str
    run: int
    val: float
    test: float | None
    run_vals: list[float] | None = sparse()  # per improver run (not for seed_solution)
    run_tests: list[float] | None = sparse()
    errors: list[str] | None = sparse()


@dataclass(frozen=True, kw_only=True)
class TransferFinished(Payload):
    KIND: ClassVar[str] = TRANSFER_FINISHED
    rows: list[dict[str, Any]]


# -- the envelope ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Event:
    kind: str
    path: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    t: float = field(default_factory=time.time)
    seq: int = 0  # assigned by the store when the event is committed

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "t": self.t, "kind": self.kind, "path": self.path, "data": self.data}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Event:
        return cls(kind=d["kind"], path=d.get("path", ""), data=d.get("data", {}),
                   t=d.get("t", 0.0), seq=d.get("seq", 0))

    @cached_property
    def payload(self) -> Any:
        """The typed payload (decoded from `data` once); None for a kind without a schema."""
        schema = SCHEMAS.get(self.kind)
        if schema is None:
            return None
        return schema.from_data(self.data if isinstance(self.data, dict) else {})


def event(payload: Payload, path: str = "", t: float | None = None) -> Event:
    """The one way to build an event: its kind and data come from the typed payload."""
    return Event(payload.KIND, path, payload.to_data(), time.time() if t is None else t)


def parent_path(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else ""


# -- validation -----------------------------------------------------------------------------

def validate(e: Event) -> list[str]:
    """How a stored event differs from its kind's schema: missing required keys, keys the
    schema does not know, values of the wrong type ([] when it matches)."""
    schema = SCHEMAS.get(e.kind)
    if schema is None:
        return [f"{e.kind}: no schema for this kind"]
    if not isinstance(e.data, dict):
        return [f"{e.kind}: data is {type(e.data).__name__}, not a dict"]
    hints = _hints(schema)
    problems = []
    known = set()
    for f in dataclasses.fields(schema):
        key = _key(f.name)
        known.add(key)
        if key not in e.data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                problems.append(f"{e.kind}: missing key {key!r}")
            continue
        wrong = _mismatch(e.data[key], hints[f.name])
        if wrong:
            problems.append(f"{e.kind}.{key}: {wrong}")
    problems += [f"{e.kind}: unexpected key {key!r}" for key in e.data if key not in known]
    return problems


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(schema: type) -> dict[str, Any]:
    if schema not in _HINTS:
        _HINTS[schema] = typing.get_type_hints(schema)
    return _HINTS[schema]


def _mismatch(value: Any, tp: Any) -> str | None:
    """Why `value` (decoded JSON) is not of type `tp`; None when it is."""
    if tp is Any:
        return None
    if tp is Hash:
        return None if isinstance(value, str) and HASH.fullmatch(value) else f"{value!r} is not a text hash"
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        options = typing.get_args(tp)
        if any(_mismatch(value, option) is None for option in options):
            return None
        return f"{_short(value)} is not {' | '.join(_name(o) for o in options)}"
    if tp is type(None):
        return None if value is None else f"{_short(value)} is not None"
    if tp is bool:
        return None if isinstance(value, bool) else f"{_short(value)} is not a bool"
    if tp is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else f"{_short(value)} is not an int"
    if tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return None if ok else f"{_short(value)} is not a number"
    if tp is str:
        return None if isinstance(value, str) else f"{_short(value)} is not a str"
    if origin is list:
        if not isinstance(value, list):
            return f"{_short(value)} is not a list"
        (item,) = typing.get_args(tp)
        for i, v in enumerate(value):
            wrong = _mismatch(v, item)
            if wrong:
                return f"[{i}]: {wrong}"
        return None
    if origin is dict:
        if not isinstance(value, dict):
            return f"{_short(value)} is not a dict"
        _, item = typing.get_args(tp)
        for k, v in value.items():
            wrong = _mismatch(v, item)
            if wrong:
                return f"[{k!r}]: {wrong}"
        return None
    raise TypeError(f"events.validate cannot check the type {tp!r}")


def _name(tp: Any) -> str:
    return "None" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
