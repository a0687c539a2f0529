"""What the TUI knows about a session, rebuilt from its event log alone (no Textual here).

`SessionModel.ingest(event)` folds one engine event into a lineage of nodes (iterations ->
candidate improvers -> meta-utility runs -> downstream solutions), score series, budget
totals and the LM exchanges. One thread owns a SessionModel (the feeder, tui/feeder.py);
`snapshot()` hands out an immutable `Snapshot` of it, with a version per part (tree, lm,
scores, budget, header, log) and what changed since the previous snapshot, so each pane
redraws only when its part changed. A live session, a resumed one and a finished one go
through the same code.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from stop_tui.engine import events as ev
from stop_tui.engine.candidate_rng import reference_on
from stop_tui.engine.history import USAGE_KEYS, History, describe, iteration_of, level

ITERATION, CANDIDATE, RUN, SOLUTION = "iteration", "candidate", "run", "solution"
PENDING, RUNNING, SCORED, FAILED, ACCEPTED, REJECTED, CANCELLED = (
    "pending", "running", "scored", "failed", "accepted", "rejected", "cancelled")

_ITER = re.compile(r"^it(\d+)$")
_LM = re.compile(r"^lm(\d+)$")


def node_kind(path: str) -> str | None:
    """The tree kind of a node path, or None for paths that are not tree nodes (LM calls)."""
    if not path:
        return None
    last = path.rsplit("/", 1)[-1]
    depth = path.count("/")
    if depth == 0:
        return ITERATION if _ITER.match(last) else None
    if _LM.match(last):
        return None
    if depth == 1:
        return CANDIDATE
    if depth == 2 and last.startswith("r"):
        return RUN
    if depth == 3 and (last == "final" or last.startswith("s")):
        return SOLUTION
    return None


@dataclass(frozen=True)
class Node:
    path: str
    kind: str
    status: str = PENDING
    score: float | None = None
    test: float | None = None
    source: str | None = None  # content hash of the node's program
    parent_source: str | None = None  # what the diff compares against
    output: str | None = None  # a run's returned solution
    role: str = ""
    error: str | None = None
    flags: tuple[dict[str, Any], ...] = ()
    children: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class LMCall:
    path: str
    request: dict[str, Any] = field(default_factory=dict)
    reply: dict[str, Any] | None = None
    t: float = 0.0


@dataclass(frozen=True)
class Usage:
    calls: int = 0
    requests: int = 0
    completions: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = 0.0


@dataclass(frozen=True)
class LogLine:
    t: float
    kind: str
    path: str
    text: str
    level: str = "info"  # info | good | bad | warn | dim


PARTS = ("tree", "lm", "scores", "budget", "header", "log")


@dataclass(frozen=True)
class Changes:
    """What changed between two snapshots: tree nodes added (in order), changed and reset
    (children dropped), and the new log lines. `full`: redraw everything from the snapshot
    (while the log is first read, and once it has been)."""

    added: tuple[str, ...] = ()
    changed: frozenset[str] = frozenset()
    reset: tuple[str, ...] = ()
    log: tuple[LogLine, ...] = ()
    full: bool = False


class SessionQueries:
    """What the panes ask of a session, over the attributes a SessionModel and a Snapshot share."""

    nodes: Mapping[str, Node]
    accepted: Mapping[int, tuple[float | None, float | None, str | None]]
    verdicts: Mapping[int, tuple[bool, str | None]]
    calls_by_owner: Mapping[str, tuple[str, ...]]
    reply_times: Iterable[tuple[float, int, int]]

    def iterations_done(self) -> int:
        return max((t for t in self.verdicts if t > 0), default=0)

    def accepted_path(self) -> str | None:
        """The node holding the currently accepted improver."""
        if not self.accepted:
            return None
        t = max(self.accepted)
        improver = self.accepted[t][2]
        for k in range(t, -1, -1):
            ok = self.verdicts.get(k, (False, None))[0]
            if ok and self.accepted.get(k, (None, None, None))[2] == improver:
                node = self.nodes.get(f"it{k}/check")
                return node.path if node else f"it{k}"
        return None

    def exchange_for(self, path: str, extracted: dict[str, str | None] | None = None) -> list[str]:
        """LM call paths that produced the node at `path` (most specific first)."""
        node = self.nodes.get(path)
        if node is None:
            return []
        if node.kind in (ITERATION, RUN):
            return list(self.calls_by_owner.get(path, ()))
        return list(self.calls_by_owner.get(ev.parent_path(path), ()))

    def in_flight(self) -> list[str]:
        """LM calls asked but not answered yet (while the engine runs), oldest first."""
        return list(self.flying)

    def rate(self) -> tuple[float, float]:
        """(LM calls per minute, tokens per second) over the recent replies."""
        times = list(self.reply_times)
        if len(times) < 2:
            return 0.0, 0.0
        span = times[-1][0] - times[0][0]
        if span <= 0:
            return 0.0, 0.0
        calls = sum(c for _, c, _ in times[1:])
        tokens = sum(tk for _, _, tk in times[1:])
        return calls * 60.0 / span, tokens / span


@dataclass(frozen=True)
class Snapshot(SessionQueries):
    """The session as the panes draw it at one moment; never changed once made (the feeder
    thread makes a new one). `versions[part]` grows whenever that part changed."""

    number: int
    loading: bool  # the log is still being read for the first time
    versions: Mapping[str, int]
    changes: Changes
    session_id: str
    task: str
    model: str
    settings: Mapping[str, Any]
    rng_reference: bool
    fixed_temperature: bool
    nodes: Mapping[str, Node]
    roots: tuple[str, ...]
    current_iteration: int | None
    lm_calls: Mapping[str, LMCall]
    calls_by_owner: Mapping[str, tuple[str, ...]]
    flying: tuple[str, ...]
    accepted: Mapping[int, tuple[float | None, float | None, str | None]]
    verdicts: Mapping[int, tuple[bool, str | None]]
    candidate_scores: tuple[tuple[int, float], ...]
    totals: Usage
    iteration_usage: Mapping[int, Usage]
    peak_concurrency: int
    reply_times: tuple[tuple[float, int, int], ...]
    state: str
    pause_reason: str | None
    sandbox_missing: tuple[str, ...]
    flags: int
    errors: int
    log: tuple[LogLine, ...]
    t0: float | None
    last_seq: int
    events: int


def _frozen(d: dict) -> Mapping:
    return MappingProxyType(dict(d))


class SessionModel(SessionQueries):
    """The session folded from its events; owned by one thread at a time (see module doc)."""

    def __init__(self, meta: dict[str, Any] | None = None, session_id: str = "") -> None:
        meta = meta or {}
        self.session_id = session_id
        self.task: str = meta.get("task", "?")
        self.model: str = meta.get("model", "?")
        self.settings: dict[str, Any] = dict(meta.get("settings", {}))
        self.rng_reference = reference_on(meta)  # --set rng=reference: the header says so
        self.fixed_temperature = False  # the model refuses custom temperatures (meta, set by the LM layer)
        self.nodes: dict[str, Node] = {}
        self.roots: list[str] = []
        self.lm_calls: dict[str, LMCall] = {}
        self.calls_by_owner: dict[str, tuple[str, ...]] = {}
        self.flying: dict[str, None] = {}  # LM calls asked, not answered (an ordered set)
        # Verdicts, held improvers, LM totals and per-iteration use, candidate scores: the one
        # reader of the log (engine/history.py) folds them; the snapshot reads them from it.
        self.history = History(session_id=session_id)
        self.reply_times: deque[tuple[float, int, int]] = deque(maxlen=64)  # (t, calls, tokens)
        self.current_iteration: int | None = None
        self.state = "new"  # new | running | paused | finished
        self.pause_reason: str | None = None
        self.sandbox_missing: list[str] = []
        self.flags = 0
        self.errors = 0
        self.t0: float | None = None
        self.last_seq = 0
        self.events = 0
        # change tracking, drained by snapshot() / take_changes()
        self.added: list[str] = []
        self.changed: set[str] = set()
        self.reset: list[str] = []
        self.log: deque[LogLine] = deque(maxlen=5000)
        self.new_log: list[LogLine] = []
        self.dirty: set[str] = set(PARTS)  # parts changed since the last snapshot
        self._versions = dict.fromkeys(PARTS, 0)
        self._parts: dict[str, dict[str, Any]] = {}
        self.apply_meta(meta)
        for t in range(int(self.settings.get("iterations", 0) or 0) + 1):
            self._ensure(f"it{t}")

    def apply_meta(self, meta: dict[str, Any]) -> None:
        """What the session's meta says beyond its log (learned about the LM while running)."""
        fixed = bool(meta.get("lm_fixed_temperature"))
        if fixed != self.fixed_temperature:
            self.fixed_temperature = fixed
            self.dirty.add("header")

    # -- change tracking ----------------------------------------------------------------
    def take_changes(self) -> tuple[list[str], set[str], list[str], list[LogLine]]:
        out = (self.added, self.changed, self.reset, self.new_log)
        self.added, self.changed, self.reset, self.new_log = [], set(), [], []
        return out

    def has_changes(self) -> bool:
        return bool(self.dirty)

    # What the snapshot's scores and budget parts hold, read live from the History.
    accepted = property(lambda self: self._freeze("scores")["accepted"])
    verdicts = property(lambda self: self._freeze("scores")["verdicts"])
    candidate_scores = property(lambda self: self._freeze("scores")["candidate_scores"])
    totals = property(lambda self: self._freeze("budget")["totals"])
    iteration_usage = property(lambda self: self._freeze("budget")["iteration_usage"])
    peak_concurrency = property(lambda self: self.history.peak_concurrency)

    def _freeze(self, part: str) -> dict[str, Any]:
        if part == "tree":
            return {"nodes": _frozen(self.nodes), "roots": tuple(self.roots),
                    "current_iteration": self.current_iteration}
        if part == "lm":
            return {"lm_calls": _frozen(self.lm_calls), "calls_by_owner": _frozen(self.calls_by_owner),
                    "flying": tuple(self.flying)}
        if part == "scores":
            rows = self.history.iterations
            return {"accepted": _frozen({r.iteration: (r.val, r.test, r.improver) for r in rows}),
                    "verdicts": _frozen({r.iteration: (r.accepted, r.reason) for r in rows}),
                    "candidate_scores": tuple(self.history.candidate_scores)}
        if part == "budget":
            lm = self.history.lm_totals
            return {"totals": Usage(**{key: lm.get(key, 0) for key in USAGE_KEYS if key != "cost_usd"},
                                    cost_usd=lm.get("cost_usd")),
                    "iteration_usage": _frozen({t: Usage(**u) for t, u in self.history.lm_by_iteration.items()}),
                    "peak_concurrency": self.history.peak_concurrency, "reply_times": tuple(self.reply_times)}
        if part == "header":
            return {"task": self.task, "model": self.model, "settings": _frozen(self.settings),
                    "rng_reference": self.rng_reference, "fixed_temperature": self.fixed_temperature,
                    "state": self.state, "pause_reason": self.pause_reason,
                    "sandbox_missing": tuple(self.sandbox_missing), "flags": self.flags, "errors": self.errors}
        return {"log": tuple(self.log)}

    def snapshot(self, number: int = 0, *, loading: bool = False, full: bool = False) -> Snapshot:
        """An immutable picture of the session now, with the changes since the previous one;
        parts that did not change are shared with the previous snapshot, not copied."""
        for part in PARTS:
            if part in self.dirty or part not in self._parts:
                self._parts[part] = self._freeze(part)
                self._versions[part] += 1
        self.dirty = set()
        added, changed, reset, new_log = self.take_changes()
        fields: dict[str, Any] = {}
        for part in PARTS:
            fields.update(self._parts[part])
        return Snapshot(number=number, loading=loading, versions=MappingProxyType(dict(self._versions)),
                        changes=Changes(tuple(added), frozenset(changed), tuple(reset), tuple(new_log), full),
                        session_id=self.session_id, t0=self.t0, last_seq=self.last_seq, events=self.events,
                        **fields)

    # -- nodes ----------------------------------------------------------------------------
    def _put(self, path: str, **values: Any) -> Node:
        """Replace the node at `path` by a copy with `values` (nodes are never changed in place:
        a snapshot keeps the ones it was made with)."""
        node = self.nodes[path] = replace(self.nodes[path], **values)
        self.changed.add(path)
        self.dirty.add("tree")
        return node

    def _ensure(self, path: str) -> Node | None:
        node = self.nodes.get(path)
        if node is not None:
            return node
        kind = node_kind(path)
        if kind is None:
            return None
        parent = ev.parent_path(path)
        if parent:
            up = self._ensure(parent)
            if up is None:
                return None
            self._put(parent, children=up.children + (path,))
        else:
            self._insert_root(path)
        node = self.nodes[path] = Node(path, kind)
        self.added.append(path)
        self.dirty.add("tree")
        return node

    def _insert_root(self, path: str) -> None:
        t = iteration_of(path) or 0
        k = len(self.roots)
        while k > 0 and (iteration_of(self.roots[k - 1]) or 0) > t:
            k -= 1
        self.roots.insert(k, path)

    def _drop_children(self, node: Node) -> None:
        stack = list(node.children)
        while stack:
            path = stack.pop()
            child = self.nodes.pop(path, None)
            if child:
                stack.extend(child.children)
        self._put(node.path, children=())
        self.reset.append(node.path)

    def _restart_iteration(self, t: int) -> None:
        """A resume re-executes iteration t: forget its partial work (it is written again)."""
        node = self.nodes.get(f"it{t}")
        if node is not None:
            if node.children:
                self._drop_children(node)
            self._put(node.path, status=PENDING, score=None, test=None, error=None)
        prefix = f"it{t}/"
        for path in [p for p in self.lm_calls if p.startswith(prefix)]:
            del self.lm_calls[path]
            self.flying.pop(path, None)
        for owner in [p for p in self.calls_by_owner if p == f"it{t}" or p.startswith(prefix)]:
            del self.calls_by_owner[owner]
        self.dirty.update(("lm", "scores", "budget", "header"))

    def _lm_call(self, path: str, t: float, **values: Any) -> LMCall:
        call = self.lm_calls.get(path)
        if call is None:
            call = LMCall(path, t=t)
            owner = ev.parent_path(path)
            self.calls_by_owner[owner] = self.calls_by_owner.get(owner, ()) + (path,)
        call = self.lm_calls[path] = replace(call, **values)
        self.dirty.add("lm")
        return call

    def owner_node(self, path: str) -> Node | None:
        """The nearest tree node at or above `path`."""
        while path:
            if path in self.nodes:
                return self.nodes[path]
            if node_kind(path) is not None:
                return self._ensure(path)
            path = ev.parent_path(path)
        return None

    # -- ingestion ------------------------------------------------------------------------
    def ingest_all(self, events) -> None:
        for event in events:
            self.ingest(event)

    def ingest(self, e: ev.Event) -> None:  # noqa: C901 - one branch per event kind
        if e.seq and e.seq <= self.last_seq:
            return
        self.last_seq = max(self.last_seq, e.seq)
        self.history.add(e)
        self.events += 1
        if self.t0 is None:
            self.t0 = e.t
        p, d, k, path = e.payload, e.data, e.kind, e.path
        if k == ev.SESSION_STARTED:
            self.task = p.task or self.task
            self.model = p.model or self.model
            if p.settings:
                self.settings = dict(p.settings)
                for t in range(int(self.settings.get("iterations", 0) or 0) + 1):
                    self._ensure(f"it{t}")
            self.dirty.update(("header", "budget"))
        elif k == ev.ITERATION_STARTED:
            t = p.iteration if isinstance(p.iteration, int) else iteration_of(path) or 0
            node = self._ensure(path)
            if node is not None:
                if node.children:
                    self._drop_children(node)
                self._put(path, status=RUNNING, source=p.improver, score=None, test=None,
                          parent_source=self.history.held_improver(t - 1) if t > 0 else None)
            self.current_iteration = t
            self.state = "running"
            self.dirty.update(("tree", "budget", "header"))
        elif k in (ev.ITERATION_ACCEPTED, ev.ITERATION_REJECTED):
            t = p.iteration if isinstance(p.iteration, int) else iteration_of(path) or 0
            node = self._ensure(path)
            ok = k == ev.ITERATION_ACCEPTED
            self.dirty.update(("scores", "header"))
            if node is not None:
                node = self._put(path, status=ACCEPTED if ok else REJECTED, score=p.val, test=p.test,
                                 error=None if ok else p.reason)
                if ok:
                    for child in node.children:
                        c = self.nodes.get(child)
                        if c and c.source and c.source == p.improver:
                            self._put(child, status=ACCEPTED)
        elif k == ev.CANDIDATE_PROPOSED:
            if self._ensure(path) is not None:
                self._put(path, status=RUNNING, role=p.role or "", source=p.source,
                          parent_source=p.parent)
        elif k == ev.CANDIDATE_SCORED:
            node = self._ensure(path)
            score = p.score
            if node is not None:
                status = node.status if node.status == ACCEPTED else (
                    FAILED if p.error and not score else SCORED)
                self._put(path, score=score, test=p.test, error=p.error, status=status)
            if p.role == "candidate" and isinstance(score, int | float):
                self.dirty.add("scores")
        elif k == ev.RUN_STARTED:
            if self._ensure(path) is not None:
                self._put(path, status=RUNNING, source=p.improver)
        elif k == ev.RUN_FINISHED:
            if self._ensure(path) is not None:
                self._put(path, score=p.val, test=p.test, error=p.error,
                          output=p.solution, status=FAILED if p.error else SCORED)
        elif k == ev.SCORING_CANCELLED:  # ended unscored: no score, not a failure
            if self._ensure(path) is not None:
                self._put(path, status=CANCELLED, score=None, test=None, error=p.reason)
        elif k == ev.SOLUTION_SCORED:
            if self._ensure(path) is not None:
                if p.split == "test":
                    self._put(path, test=p.score)
                else:
                    self._put(path, score=p.score, source=p.source, error=p.error,
                              status=FAILED if p.error and not p.score else SCORED)
        elif k == ev.LM_REQUEST:
            self._lm_call(path, e.t, request=d)
            self.flying[path] = None
            self.dirty.add("header")
        elif k == ev.LM_REPLY:
            self._lm_call(path, e.t, reply=d)
            if self.flying.pop(path, "") is None:
                self.dirty.add("header")
            tokens = int(p.prompt_tokens or 0) + int(p.completion_tokens or 0)
            self.reply_times.append((e.t, 1, tokens))
            self.dirty.add("budget")
        elif k == ev.BUDGET:
            self.dirty.add("budget")
        elif k == ev.SANDBOX:
            self.sandbox_missing = list(p.missing or [])
            self.dirty.add("header")
        elif k == ev.FLAG:
            node = self.owner_node(path)
            if node is not None:
                self._put(node.path, flags=self.nodes[node.path].flags + (d,))
            self.flags += 1
            self.dirty.add("header")
        elif k == ev.PAUSED:
            self.state = "paused"
            self.pause_reason = p.reason
            self.dirty.add("header")
        elif k == ev.RESUMED:
            self.state = "running"
            self.dirty.add("header")
            t = p.iteration
            if p.superseded_from is not None and isinstance(t, int):
                self._restart_iteration(t)
        elif k == ev.SESSION_FINISHED:
            self.state = "finished"
            self.dirty.add("header")
        elif k == ev.ERROR:
            self.errors += 1
            self.dirty.add("header")
        text = describe(e, log=True)  # the one text for an event (engine/history.py)
        if text is not None:
            line = LogLine(e.t, k, path, text, level(e))
            self.log.append(line)
            self.new_log.append(line)
            self.dirty.add("log")

