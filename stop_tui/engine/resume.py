"""Resuming a session from its event log, and what the log means after a resume.

A run stopped at any point (quit, cap, `kill -9`) leaves the events of its unfinished
iteration in the log. Resuming re-executes that iteration from its start: node paths and
sandbox seeds derive from the session seed, downstream scoring is seeded, and every LM call
already answered is answered again from the record (nothing is re-sent), so the re-execution
writes the same events again. The partial events are then *superseded*: the RESUMED event
that starts the re-execution says so with `superseded_from` (a seq), and every node event
(non-empty path) with `superseded_from <= seq < RESUMED.seq` is to be ignored by readers
(summaries, the TUI, exports). Session-level events (empty path: SESSION_STARTED, PAUSED,
RESUMED, SANDBOX) are kept. `effective` applies this, and history.History reads the log
through it; with it, a resumed session reads exactly like an uninterrupted one (apart from
timestamps and timings).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from stop_tui.engine import events as ev

# Fields that measure wall-clock time or load: they differ between runs of the same session.
TIMING_FIELDS = frozenset({"latency", "seconds", "concurrency", "replayed"})
BOUNDARY_KINDS = (ev.ITERATION_ACCEPTED, ev.ITERATION_REJECTED)


def superseded_ranges(events: Iterable[ev.Event]) -> list[tuple[int, int]]:
    return [(int(e.payload.superseded_from), e.seq) for e in events
            if e.kind == ev.RESUMED and e.payload.superseded_from is not None]


def is_superseded(event: ev.Event, ranges: list[tuple[int, int]]) -> bool:
    return bool(event.path) and any(lo <= event.seq < hi for lo, hi in ranges)


def effective(events: Iterable[ev.Event]) -> list[ev.Event]:
    """The events that count: superseded ones dropped."""
    events = list(events)
    ranges = superseded_ranges(events)
    if not ranges:
        return events
    return [e for e in events if not is_superseded(e, ranges)]


@dataclass(frozen=True)
class Interrupted:
    iteration: int
    superseded_from: int  # seq of the first event of the unfinished iteration
    totals: dict | None  # session LM totals when it started (the last kept BUDGET before it)
    recorded_calls: int  # LM calls it had answered


def last_totals(kept: list[ev.Event], before: int | None = None) -> dict | None:
    """The session's LM totals as the last BUDGET event among `kept` (effective events) before
    seq `before` (None: the end) stored them: what a resume restores."""
    totals = None
    for e in kept:
        if before is not None and e.seq >= before:
            break
        if e.kind == ev.BUDGET:
            totals = e.data
    return totals


def find_interrupted(events: list[ev.Event]) -> Interrupted | None:
    """The unfinished iteration at the end of the log, if any."""
    kept = effective(events)
    boundary = 0
    for e in kept:
        if e.kind in BOUNDARY_KINDS:
            boundary = e.seq
    partial = [e for e in events if e.seq > boundary and e.path]
    if not partial:
        return None
    first = partial[0]
    head = first.path.split("/", 1)[0]
    iteration = int(head[2:]) if head.startswith("it") and head[2:].isdigit() else 0
    totals = last_totals(kept, before=first.seq)
    ranges = superseded_ranges(events)
    calls = sum(1 for e in partial if e.kind == ev.LM_REPLY and not is_superseded(e, ranges))
    return Interrupted(iteration, first.seq, totals, calls)


def comparable(events: Iterable[ev.Event], *, budgets: str = "all") -> list[tuple[str, str, str]]:
    """A session's effective node events as sorted (kind, path, data) triples, without
    timestamps, seqs, timing fields and retry records: two runs of the same session compare
    equal.
    `budgets="final"` keeps only the last BUDGET event (its running totals depend on the
    order in which concurrent calls finish)."""
    # LM_RETRY events are transport history (which attempts failed), like timings.
    kept = [e for e in effective(events) if e.path and e.kind != ev.LM_RETRY]
    final = None
    if budgets == "final":
        budget_events = [e for e in kept if e.kind == ev.BUDGET]
        kept = [e for e in kept if e.kind != ev.BUDGET]
        final = budget_events[-1] if budget_events else None
    out = []
    if final is not None:  # which call finished last is a matter of timing: no path
        data = {k: v for k, v in final.data.items() if k not in TIMING_FIELDS}
        if isinstance(data.get("cost_usd"), float):
            data["cost_usd"] = round(data["cost_usd"], 9)
        out.append((ev.BUDGET, "", json.dumps(data, sort_keys=True)))
    for e in kept:
        data = {k: v for k, v in e.data.items() if k not in TIMING_FIELDS}
        if isinstance(data.get("cost_usd"), float):
            data["cost_usd"] = round(data["cost_usd"], 9)
        out.append((e.kind, e.path, json.dumps(data, sort_keys=True)))
    return sorted(out)
