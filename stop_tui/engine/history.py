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
    """What a session's log says: `History(events)` skips superseded events; `add(event)` folds
    live ones (superseded ones included: the RESUMED that supersedes them takes them out)."""

    def __init__(self, events: Iterable[ev.Event] = (), session_id: str = "") -> None:
        self.session_id = session_id
        self.superseded: list[tuple[int, int]] = []  # [from, to) seq ranges a resume re-executed
        self.last_seq = 0
        self._tally = _Tally()
        self._checkpoint = _Tally()  # the tally at the last iteration boundary
        self._since: list[ev.Event] = []  # events added since that boundary
        self._verdicts: dict[int, ev.IterationAccepted | ev.IterationRejected] = {}
        self._rows: list[Iteration] | None = None
        events = list(events)
        ranges = superseded_ranges(events)
        for event in events:
            if not (ranges and is_superseded(event, ranges)):
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
        if event.kind == ev.RESUMED and event.payload.superseded_from is not None:
            start = int(event.payload.superseded_from)
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
        kind, tally = event.kind, self._tally
        if kind == ev.BUDGET:
            # The stored totals as they are: a key an older session did not write reads 0 (its
            # payload would say None, which is also what an unpriced model's cost_usd is).
            tally.lm = {key: event.data.get(key, 0) for key in LM_KEYS}
        elif kind == ev.LM_REPLY:
            p = event.payload
            tally.peak_concurrency = max(tally.peak_concurrency, int(p.concurrency or 0))
            tally.replayed_calls += bool(p.replayed)
            t = iteration_of(event.path)
            if t is not None:
                _add_reply(tally.usage.setdefault(t, dict.fromkeys(USAGE_KEYS, 0)), p)
        elif kind == ev.RESUMED:
            tally.resumes += 1
            tally.state, tally.paused_reason = "running", None
        elif kind == ev.CANDIDATE_SCORED and event.payload.role == "candidate":
            p = event.payload
            tally.candidates_scored += 1
            tally.candidates_failed += bool(p.error) and (p.score or 0) == 0
            if isinstance(p.score, int | float):
                tally.candidate_scores.append((iteration_of(event.path) or 0, float(p.score)))
        elif kind == ev.ITERATION_STARTED:
            tally.state = "running"
        elif kind == ev.PAUSED:
            tally.state, tally.paused_reason = "paused", event.payload.reason
        elif event.kind == ev.SESSION_FINISHED:
            tally.state = "finished"

    def _verdict(self, event: ev.Event) -> None:
        p = event.payload
        if not isinstance(p.iteration, int):
            raise SessionUnreadable(self.session_id, f"event {event.seq} ({event.kind}) has no iteration number")
        self._verdicts[p.iteration] = p
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
                p = self._verdicts[t]
                accepted = isinstance(p, ev.IterationAccepted)
                if accepted:
                    held, current = p.improver, (p.val, p.test)
                else:
                    held = p.kept or held
                rows.append(Iteration(t, accepted, p.val, p.test, None if accepted else p.reason,
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


def _add_reply(usage: dict[str, Any], p: ev.LMReply) -> None:
    usage["calls"] += 1
    usage["requests"] += int(p.requests or 0)
    usage["completions"] += len(p.replies or []) - int(p.failed or 0)
    usage["prompt_tokens"] += int(p.prompt_tokens or 0)
    usage["completion_tokens"] += int(p.completion_tokens or 0)
    cost = p.cost_usd
    usage["cost_usd"] = None if cost is None or usage["cost_usd"] is None else usage["cost_usd"] + cost


# -- text ------------------------------------------------------------------------------------

# Shown on a terminal too (the rest only in the TUI's log, which has room for every event).
_TERMINAL = frozenset({
    ev.SESSION_STARTED, ev.ITERATION_STARTED, ev.CANDIDATE_SCORED, ev.ITERATION_ACCEPTED,
    ev.ITERATION_REJECTED, ev.LM_REPLY, ev.SCORING_CANCELLED, ev.LM_RETRY, ev.RESUMED, ev.PAUSED,
    ev.SESSION_FINISHED, ev.ERROR, ev.LM_CHANGED})


def _num(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) and not isinstance(value, bool) else "-"


def _error(error: object, width: int = 80) -> str:
    return f" ({str(error)[:width]})" if error else ""


def _lm_end(side: object) -> str:
    side = side if isinstance(side, dict) else {}
    where = f" at {side['base_url']}" if side.get("base_url") else ""
    return f"{side.get('model')}{where}"


def _text(event: ev.Event) -> str | None:  # noqa: C901 - one branch per event kind
    k, p = event.kind, event.payload
    if p is None:  # a kind without a schema (a newer version wrote it)
        return k.replace("_", " ")
    if k == ev.SESSION_STARTED:
        return f"session {'resumed' if p.resumed else 'started'}: {p.task} on {p.model}"
    if k == ev.ITERATION_STARTED:
        return f"iteration {p.iteration} started" + (" (scoring the seed improver)" if p.iteration == 0 else "")
    if k == ev.ITERATION_ACCEPTED:
        test = f" test {_num(p.test)}" if p.test is not None else ""
        return f"iteration {p.iteration}: accepted, meta-utility val {_num(p.val)}{test}"
    if k == ev.ITERATION_REJECTED:
        return f"iteration {p.iteration}: kept the previous improver ({p.reason})"
    if k == ev.CANDIDATE_PROPOSED:
        return f"{p.role or 'candidate'} improver proposed" + ("" if p.source else " (no program)")
    if k == ev.CANDIDATE_SCORED:
        test = f", test {_num(p.test)}" if p.test is not None else ""
        return f"{p.role or 'candidate'} improver scored {_num(p.score)}{test}{_error(p.error)}"
    if k == ev.RUN_STARTED:
        return "improver run started"
    if k == ev.RUN_FINISHED:
        if p.error:
            return f"improver run failed: {str(p.error)[:100]}"
        return f"improver run finished: val {_num(p.val)}"
    if k == ev.SCORING_CANCELLED:
        return str(p.reason or "cancelled")
    if k == ev.SOLUTION_SCORED:
        return f"solution {p.split} {_num(p.score)}{_error(p.error)}"
    if k == ev.LM_REQUEST:
        return f"LM call: {p.n or 1} prompt(s), T={p.temperature}"
    if k == ev.LM_REPLY:
        took = f", {p.latency:.1f} s" if isinstance(p.latency, int | float) else ""
        return (f"LM reply: {p.prompt_tokens or 0} in / {p.completion_tokens or 0} out tokens"
                f"{took}{_error(p.error)}")
    if k == ev.LM_RETRY:
        wait = p.wait if isinstance(p.wait, int | float) else 0
        return f"LM request failed ({str(p.error or '')[:80]}), retry in {wait:.1f} s"
    if k == ev.LM_CHANGED:
        return f"LM changed: {_lm_end(p.from_)} -> {_lm_end(p.to)}"
    if k == ev.SANDBOX:
        on = [name for name, v in (p.protections or {}).items() if v]
        missing = list(p.missing or [])
        return "sandbox: " + (", ".join(on) or "no protections") + (
            "; MISSING: " + ", ".join(missing) if missing else "")
    if k == ev.FLAG:
        line = f" line {p.line}" if p.line else ""
        return f"FLAG {p.kind or '?'}{line}: {p.detail or ''}"
    if k == ev.RESUMED:
        if p.superseded_from is not None:
            return (f"resumed: re-running iteration {p.iteration}, {p.recorded_calls or 0} "
                    "LM call(s) answered from the record")
        return f"resumed at iteration {p.iteration}" if p.iteration is not None else "resumed"
    if k == ev.PAUSED:
        return f"paused: {p.reason}"
    if k == ev.SESSION_FINISHED:
        return f"session finished after {p.iterations_completed} iteration(s)"
    if k == ev.ERROR:
        return f"error: {p.message}"
    if k == ev.TRANSFER_STARTED:
        return f"{p.task}: {p.who} run {p.run} started"
    if k == ev.TRANSFER_SCORED:
        return f"{p.task}: {p.who} run {p.run} scored test {_num(p.test)}, val {_num(p.val)}"
    if k == ev.TRANSFER_FINISHED:
        return f"transfer finished: {len(p.rows or [])} task(s)"
    return None  # BUDGET, LM_PART: totals and transport detail (the panes show them)


def describe(event: ev.Event, *, log: bool = False) -> str | None:
    """The one text for an event. By default a terminal line (headless `run`, `transfer`): only
    the events worth a line there (None for the rest), a node's path in front (an iteration's
    is in its words). `log=True`: the TUI log's text, for every event the log shows (it has a
    column for the path)."""
    text = _text(event)
    if log or text is None:
        return text
    if event.kind not in _TERMINAL and not (event.kind == ev.RUN_FINISHED and event.payload.error):
        return None
    if event.path and not _ITERATION_PATH.fullmatch(event.path):
        return f"{event.path}: {text}"
    return text


def level(event: ev.Event) -> str:
    """How the TUI log shows an event: info | good | bad | warn | dim."""
    k, p = event.kind, event.payload
    if k in (ev.ITERATION_ACCEPTED, ev.SESSION_FINISHED):
        return "good"
    if k in (ev.ITERATION_REJECTED, ev.FLAG, ev.PAUSED, ev.LM_RETRY):
        return "warn"
    if k == ev.SANDBOX:
        return "warn" if p.missing else "info"
    if k == ev.ERROR:
        return "bad"
    if k == ev.CANDIDATE_SCORED:
        return "bad" if p.error and not p.score else "info"
    if k in (ev.RUN_FINISHED, ev.LM_REPLY):
        return "bad" if p.error else "dim"
    if k in (ev.SESSION_STARTED, ev.ITERATION_STARTED, ev.CANDIDATE_PROPOSED, ev.RESUMED, ev.LM_CHANGED):
        return "info"
    return "dim"
