"""The one reader of a session's event log: what the log says happened, and the text for each event.

`History(events)` (or `History.read(store)`) folds the log once, with the events a resume
superseded skipped (see resume.py): the improver held after each iteration, the accepted
improver's meta-utility series (the paper's û of I_t, arXiv 2310.02304, section 3), the LM
totals, the session's state. `History.add(event)` folds one more event, so a live reader (the
TUI following a run) keeps one History up to date; a RESUMED event that supersedes a partial
iteration then takes that iteration's partial events back out, and the result equals a
History read afresh from the log.

`describe(event)` is the one text for an event: a terminal line (the headless printer, the
transfer command's progress) or, with `log=True`, the TUI log's text; `level(event)` is how
the log colours it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from stop_tui.engine import events as ev
from stop_tui.engine.resume import BOUNDARY_KINDS, is_superseded, superseded_ranges
from stop_tui.engine.store import SessionStore, SessionUnreadable

LM_KEYS = ("calls", "requests", "retries", "completions", "failed", "prompt_tokens",
           "completion_tokens", "reasoning_tokens", "cost_usd")
# An iteration's LM use, summed over its LM_REPLY events (cost_usd None once a reply has no price).
USAGE_KEYS = ("calls", "requests", "completions", "prompt_tokens", "completion_tokens", "cost_usd")
_ITERATION_PATH = re.compile(r"it(\d+)")


@dataclass(frozen=True)
class Iteration:
    """One iteration's verdict (t=0 scores the seed improver)."""

    iteration: int
    accepted: bool
    candidate_val: float | None  # what the improver returned, re-scored (val, test)
    candidate_test: float | None
    reason: str | None  # why it was rejected
    improver: str | None  # hash of the improver held after this iteration
    val: float | None  # the held improver's meta-utility (val, test) after this iteration
    test: float | None


@dataclass
class _Tally:
    """The counters that a superseded partial iteration can have touched."""

    lm: dict[str, Any] = field(default_factory=lambda: dict.fromkeys(LM_KEYS, 0))
    peak_concurrency: int = 0
    replayed_calls: int = 0
    resumes: int = 0
    candidates_scored: int = 0
    candidates_failed: int = 0
    state: str = "new"  # new | running | paused | finished
    paused_reason: str | None = None
    usage: dict[int, dict[str, Any]] = field(default_factory=dict)  # per iteration
    candidate_scores: list[tuple[int, float]] = field(default_factory=list)

    def copy(self) -> _Tally:
        return replace(self, lm=dict(self.lm), usage={t: dict(u) for t, u in self.usage.items()},
                       candidate_scores=list(self.candidate_scores))


# The kinds that touch a _Tally (the rest need not be kept for a rewind).
_COUNTED = frozenset({ev.BUDGET, ev.LM_REPLY, ev.RESUMED, ev.CANDIDATE_SCORED, ev.ITERATION_STARTED,
                      ev.PAUSED, ev.SESSION_FINISHED})


def iteration_of(path: str) -> int | None:
    """The iteration a node path belongs to (None for session-level and transfer paths)."""
    m = _ITERATION_PATH.fullmatch(path.split("/", 1)[0])
    return int(m.group(1)) if m else None


class History:
    def __init__(self, events: Iterable[ev.Event] = (), session_id: str = "") -> None:
        self.session_id = session_id
        self.superseded: list[tuple[int, int]] = []  # [from, to) seq ranges a resume re-executed
        self.last_seq = 0
        self._tally = _Tally()
        self._checkpoint = _Tally()  # the tally at the last iteration boundary
        self._since: list[ev.Event] = []  # events added since that boundary
        self._verdicts: dict[int, tuple[bool, dict[str, Any]]] = {}
        self._rows: list[Iteration] | None = None
        events = list(events)
        ranges = superseded_ranges(events)
        for event in events:
            if not is_superseded(event, ranges):
                self.add(event)
        self.superseded = ranges

    @classmethod
    def read(cls, store: SessionStore) -> History:
        return cls(store.events(), store.id)

    # -- folding ----------------------------------------------------------------------------
    def add(self, event: ev.Event) -> None:
        """Fold one more event (one already folded, by seq, is ignored)."""
        if event.seq and event.seq <= self.last_seq:
            return
        self.last_seq = max(self.last_seq, event.seq)
        d = event.data
        if event.kind == ev.RESUMED and d.get("superseded_from") is not None:
            start = int(d["superseded_from"])
            self.superseded.append((start, event.seq))
            self._tally = self._checkpoint.copy()
            self._since = [e for e in self._since if not (e.path and e.seq >= start)]
            for e in self._since:
                self._count(e)
        self._count(event)
        if event.kind in BOUNDARY_KINDS:
            self._verdict(event)
            self._checkpoint, self._since = self._tally.copy(), []
        elif event.kind in _COUNTED:
            self._since.append(event)

    def _count(self, event: ev.Event) -> None:
        d, tally = event.data, self._tally
        if event.kind == ev.BUDGET:
            tally.lm = {key: d.get(key, 0) for key in LM_KEYS}
        elif event.kind == ev.LM_REPLY:
            tally.peak_concurrency = max(tally.peak_concurrency, int(d.get("concurrency", 0) or 0))
            tally.replayed_calls += bool(d.get("replayed"))
            t = iteration_of(event.path)
            if t is not None:
                _add_reply(tally.usage.setdefault(t, dict.fromkeys(USAGE_KEYS, 0)), d)
        elif event.kind == ev.RESUMED:
            tally.resumes += 1
            tally.state, tally.paused_reason = "running", None
        elif event.kind == ev.CANDIDATE_SCORED and d.get("role") == "candidate":
            tally.candidates_scored += 1
            tally.candidates_failed += bool(d.get("error")) and d.get("score", 0) == 0
            score = d.get("score")
            if isinstance(score, int | float):
                tally.candidate_scores.append((iteration_of(event.path) or 0, float(score)))
        elif event.kind == ev.ITERATION_STARTED:
            tally.state = "running"
        elif event.kind == ev.PAUSED:
            tally.state, tally.paused_reason = "paused", d.get("reason")
        elif event.kind == ev.SESSION_FINISHED:
            tally.state = "finished"

    def _verdict(self, event: ev.Event) -> None:
        d = event.data
        if not isinstance(d.get("iteration"), int):
            raise SessionUnreadable(self.session_id, f"event {event.seq} ({event.kind}) has no iteration number")
        self._verdicts[d["iteration"]] = (event.kind == ev.ITERATION_ACCEPTED, d)
        self._rows = None

    # -- iterations ---------------------------------------------------------------------------
    @property
    def iterations(self) -> list[Iteration]:
        """One row per iteration with a verdict, in iteration order (the last verdict of each)."""
        if self._rows is None:
            rows: list[Iteration] = []
            held: str | None = None
            current: tuple[float | None, float | None] = (None, None)
            for t in sorted(self._verdicts):
                accepted, d = self._verdicts[t]
                if accepted:
                    held, current = d.get("improver"), (d.get("val"), d.get("test"))
                else:
                    held = d.get("kept") or held
                rows.append(Iteration(t, accepted, d.get("val"), d.get("test"), d.get("reason"),
                                      held, *current))
            self._rows = rows
        return self._rows

    def _row(self, t: int) -> Iteration | None:
        return next((row for row in self.iterations if row.iteration == t), None)

    @property
    def seed(self) -> Iteration | None:
        """Iteration 0: the seed improver's score (None until it is scored)."""
        return self._row(0)

    @property
    def seed_scored(self) -> bool:
        return 0 in self._verdicts

    @property
    def iterations_done(self) -> int:
        """The last completed iteration t >= 1 (0: none yet)."""
        return max((t for t in self._verdicts if t > 0), default=0)

    @property
    def latest(self) -> Iteration | None:
        """The last iteration with a verdict (the seed's when only it is scored)."""
        rows = self.iterations
        return rows[-1] if rows else None

    def held_improver(self, t: int | None = None) -> str | None:
        """Hash of the improver held after iteration t (0: the seed; None: the latest), or
        None when iteration t has no verdict."""
        row = self.latest if t is None else self._row(t)
        return row.improver if row else None

    @property
    def best(self) -> Iteration | None:
        """The first iteration after which the held improver's val meta-utility was highest."""
        scored = [row for row in self.iterations if row.val is not None]
        return max(scored, key=lambda row: row.val) if scored else None

    @property
    def seed_meta_utility(self) -> float | None:
        return self.seed.candidate_val if self.seed else None

    @property
    def seed_meta_utility_test(self) -> float | None:
        return self.seed.candidate_test if self.seed else None

    @property
    def meta_utility(self) -> list[float | None]:
        """The held improver's val meta-utility after each iteration t >= 1."""
        return [row.val for row in self.iterations if row.iteration > 0]

    @property
    def meta_utility_test(self) -> list[float | None]:
        return [row.test for row in self.iterations if row.iteration > 0]

    @property
    def best_meta_utility(self) -> float | None:
        scored = [v for v in [self.seed_meta_utility, *self.meta_utility] if v is not None]
        return max(scored) if scored else None

    # -- the session ------------------------------------------------------------------------
    @property
    def lm_totals(self) -> dict[str, Any]:
        """The session's LM totals (LM_KEYS), as of the last BUDGET event."""
        return dict(self._tally.lm)

    @property
    def lm_by_iteration(self) -> dict[int, dict[str, Any]]:
        """Each iteration's LM use (USAGE_KEYS), summed over its replies."""
        return {t: dict(u) for t, u in self._tally.usage.items()}

    @property
    def candidate_scores(self) -> list[tuple[int, float]]:
        """(iteration, û) of every candidate improver scored, in log order."""
        return list(self._tally.candidate_scores)

    @property
    def state(self) -> str:
        return self._tally.state

    @property
    def paused_reason(self) -> str | None:
        return self._tally.paused_reason

    @property
    def resumes(self) -> int:
        return self._tally.resumes

    @property
    def peak_concurrency(self) -> int:
        """The most LM requests in flight at once (over the session's replies)."""
        return self._tally.peak_concurrency

    @property
    def replayed_calls(self) -> int:
        return self._tally.replayed_calls

    @property
    def candidates_scored(self) -> int:
        return self._tally.candidates_scored

    @property
    def candidates_failed(self) -> int:
        return self._tally.candidates_failed


def _add_reply(usage: dict[str, Any], d: dict[str, Any]) -> None:
    usage["calls"] += 1
    usage["requests"] += int(d.get("requests") or 0)
    usage["completions"] += len(d.get("replies") or []) - int(d.get("failed") or 0)
    usage["prompt_tokens"] += int(d.get("prompt_tokens") or 0)
    usage["completion_tokens"] += int(d.get("completion_tokens") or 0)
    cost = d.get("cost_usd")
    usage["cost_usd"] = None if cost is None or usage["cost_usd"] is None else usage["cost_usd"] + cost


# -- text ------------------------------------------------------------------------------------

# Shown on a terminal too (the rest only in the TUI's log, which has room for every event).
_TERMINAL = frozenset({
    ev.SESSION_STARTED, ev.ITERATION_STARTED, ev.CANDIDATE_SCORED, ev.ITERATION_ACCEPTED,
    ev.ITERATION_REJECTED, ev.LM_REPLY, ev.SCORING_CANCELLED, ev.LM_RETRY, ev.RESUMED, ev.PAUSED,
    ev.SESSION_FINISHED, ev.ERROR, ev.LM_CHANGED})
_SILENT = frozenset({ev.BUDGET, ev.LM_PART})  # totals and transport detail: the panes show them


def _num(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) and not isinstance(value, bool) else "-"


def _error(d: dict[str, Any], width: int = 80) -> str:
    return f" ({str(d['error'])[:width]})" if d.get("error") else ""


def _lm_end(side: object) -> str:
    side = side if isinstance(side, dict) else {}
    where = f" at {side['base_url']}" if side.get("base_url") else ""
    return f"{side.get('model')}{where}"


def _text(event: ev.Event) -> str | None:  # noqa: C901 - one branch per event kind
    d, k = event.data, event.kind
    if k == ev.SESSION_STARTED:
        return f"session {'resumed' if d.get('resumed') else 'started'}: {d.get('task')} on {d.get('model')}"
    if k == ev.ITERATION_STARTED:
        t = d.get("iteration")
        return f"iteration {t} started" + (" (scoring the seed improver)" if t == 0 else "")
    if k == ev.ITERATION_ACCEPTED:
        test = f" test {_num(d.get('test'))}" if d.get("test") is not None else ""
        return f"iteration {d.get('iteration')}: accepted, meta-utility val {_num(d.get('val'))}{test}"
    if k == ev.ITERATION_REJECTED:
        return f"iteration {d.get('iteration')}: kept the previous improver ({d.get('reason')})"
    if k == ev.CANDIDATE_PROPOSED:
        return f"{d.get('role') or 'candidate'} improver proposed" + ("" if d.get("source") else " (no program)")
    if k == ev.CANDIDATE_SCORED:
        test = f", test {_num(d.get('test'))}" if "test" in d else ""
        return f"{d.get('role') or 'candidate'} improver scored {_num(d.get('score'))}{test}{_error(d)}"
    if k == ev.RUN_STARTED:
        return "improver run started"
    if k == ev.RUN_FINISHED:
        if d.get("error"):
            return f"improver run failed: {str(d['error'])[:100]}"
        return f"improver run finished: val {_num(d.get('val'))}"
    if k == ev.SCORING_CANCELLED:
        return str(d.get("reason") or "cancelled")
    if k == ev.SOLUTION_SCORED:
        return f"solution {d.get('split')} {_num(d.get('score'))}{_error(d)}"
    if k == ev.LM_REQUEST:
        return f"LM call: {d.get('n', 1)} prompt(s), T={d.get('temperature')}"
    if k == ev.LM_REPLY:
        latency = d.get("latency")
        took = f", {latency:.1f} s" if isinstance(latency, int | float) else ""
        return (f"LM reply: {d.get('prompt_tokens', 0)} in / {d.get('completion_tokens', 0)} out tokens"
                f"{took}{_error(d)}")
    if k == ev.LM_RETRY:
        wait = d.get("wait")
        return (f"LM request failed ({str(d.get('error') or '')[:80]}), retry in "
                f"{wait if isinstance(wait, int | float) else 0:.1f} s")
    if k == ev.LM_CHANGED:
        return f"LM changed: {_lm_end(d.get('from'))} -> {_lm_end(d.get('to'))}"
    if k == ev.SANDBOX:
        on = [name for name, v in (d.get("protections") or {}).items() if v]
        missing = list(d.get("missing") or [])
        return "sandbox: " + (", ".join(on) or "no protections") + (
            "; MISSING: " + ", ".join(missing) if missing else "")
    if k == ev.FLAG:
        line = f" line {d['line']}" if d.get("line") else ""
        return f"FLAG {d.get('kind', '?')}{line}: {d.get('detail', '')}"
    if k == ev.RESUMED:
        t = d.get("iteration")
        if d.get("superseded_from") is not None:
            return (f"resumed: re-running iteration {t}, {d.get('recorded_calls', 0)} "
                    "LM call(s) answered from the record")
        return f"resumed at iteration {t}" if t is not None else "resumed"
    if k == ev.PAUSED:
        return f"paused: {d.get('reason')}"
    if k == ev.SESSION_FINISHED:
        return f"session finished after {d.get('iterations_completed')} iteration(s)"
    if k == ev.ERROR:
        return f"error: {d.get('message')}"
    if k in _SILENT:
        return None
    return k.replace("_", " ")  # a kind this reader does not know (e.g. a transfer's own)


def describe(event: ev.Event, *, log: bool = False) -> str | None:
    """The one text for an event. By default a terminal line (headless `run`, `transfer`): only
    the events worth a line there (None for the rest), a node's path in front (an iteration's
    is in its words). `log=True`: the TUI log's text, for every event the log shows (it has a
    column for the path)."""
    text = _text(event)
    if log or text is None:
        return text
    if event.kind not in _TERMINAL and not (event.kind == ev.RUN_FINISHED and event.data.get("error")):
        return None
    if event.path and not _ITERATION_PATH.fullmatch(event.path):
        return f"{event.path}: {text}"
    return text


def level(event: ev.Event) -> str:
    """How the TUI log shows an event: info | good | bad | warn | dim."""
    d, k = event.data, event.kind
    if k in (ev.ITERATION_ACCEPTED, ev.SESSION_FINISHED):
        return "good"
    if k in (ev.ITERATION_REJECTED, ev.FLAG, ev.PAUSED, ev.LM_RETRY):
        return "warn"
    if k == ev.SANDBOX:
        return "warn" if d.get("missing") else "info"
    if k == ev.ERROR:
        return "bad"
    if k == ev.CANDIDATE_SCORED:
        return "bad" if d.get("error") and not d.get("score") else "info"
    if k in (ev.RUN_FINISHED, ev.LM_REPLY):
        return "bad" if d.get("error") else "dim"
    if k in (ev.SESSION_STARTED, ev.ITERATION_STARTED, ev.CANDIDATE_PROPOSED, ev.RESUMED, ev.LM_CHANGED):
        return "info"
    return "dim"
