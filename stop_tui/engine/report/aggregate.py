"""Runs into groups: the self-improvement curve over runs with 95 % intervals (the paper's
figure, arXiv 2310.02304 section 5) and the count of runs that gained at least GAIN over T=0
(the paper's "3 of 25 GPT-3.5 runs")."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from stop_tui.engine.report.model import CurvePoint, Group, Interval, RunRow
from stop_tui.engine.stats import mean_ci

GAIN = 0.03


def interval(values: Sequence[float], bounds: tuple[float, float] = (0.0, 1.0)) -> Interval:
    """Mean and 95 % interval over runs, clipped to `bounds` (scores: [0, 1]; spend: (0, inf))."""
    m, ci = mean_ci(list(values), bounds)
    return Interval(m, ci[0] if ci else None, ci[1] if ci else None, len(values))


def curve(runs: Sequence[RunRow]) -> tuple[CurvePoint, ...]:
    """One point per t = 0..max over runs, each over the runs scored at t."""
    top = max((len(r.val) for r in runs), default=0)
    points = []
    for t in range(top):
        vals = [r.val[t] for r in runs if t < len(r.val) and r.val[t] is not None]
        tests = [r.test[t] for r in runs if t < len(r.test) and r.test[t] is not None]
        points.append(CurvePoint(t, interval(vals), interval(tests)))
    return tuple(points)


def group_key(meta: dict) -> tuple[str, str, str | None]:
    """The group a session's runs belong to, from its meta: (task, model, preset)."""
    return (str(meta.get("task") or "?"), str(meta.get("model") or "?"), (meta.get("settings") or {}).get("preset"))


def groups(keyed: Iterable[tuple[tuple[str, str, str | None], RunRow]]) -> list[Group]:
    """(group key, run) pairs into groups, sorted by (task, model, preset): the order `report`
    and the TUI's compare screen list them in."""
    runs: dict[tuple[str, str, str | None], list[RunRow]] = {}
    for key, row in keyed:
        runs.setdefault(key, []).append(row)
    ordered = sorted(runs.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or ""))
    return [group(task, model, preset, rows) for (task, model, preset), rows in ordered]


def group(task: str, model: str, preset: str | None, runs: Sequence[RunRow],
          gain_threshold: float = GAIN) -> Group:
    gained = sum(1 for r in runs if r.gain is not None and r.gain >= gain_threshold - 1e-12)
    return Group(task=task, model=model, preset=preset, runs=tuple(runs), curve=curve(runs),
                 gained=gained, gain_threshold=gain_threshold)
