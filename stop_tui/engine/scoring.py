"""Scoring a downstream solution with its task's executed utility (trusted side).

The task's evaluate.py draws the instances and computes the score here; the candidate only
ever sees an instance's inputs, inside the sandbox. A failing candidate is a score (with a
reason), never an exception.
"""

from __future__ import annotations

import numbers
import time
from dataclasses import dataclass

from stop_tui.engine import candidate_rng
from stop_tui.engine.candidate_rng import CandidateRng
from stop_tui.engine.errors import Cancelled
from stop_tui.engine.sandbox.process import CancelFlag, Limits, Outcome, Sandbox
from stop_tui.engine.tasks import Task


@dataclass(frozen=True)
class Score:
    score: float
    error: str | None = None
    seconds: float = 0.0


def _clamp(value: object) -> float:
    try:
        score = float(value)
    except (TypeError, ValueError):
        return 0.0
    if score != score:  # NaN
        return 0.0
    return min(max(score, 0.0), 1.0)


def score_solution(task: Task, source: str | None, split: str = "val", *,
                   limits: Limits = Limits(), cancel: CancelFlag | None = None,
                   settings: dict | None = None, rng: CandidateRng | None = None) -> Score:
    """u(source) in `split` mode. Empty or missing source scores 0. `settings` override the
    task's task.toml [settings] (passed to evaluate() when it takes a third argument); the
    engine's own (candidate_rng.ENGINE_SETTINGS: `rng`) are read here, never passed on.
    `rng`: a session's candidate generators (default: candidate_rng.outside_session())."""
    started = time.monotonic()
    if not source or not source.strip():
        return Score(0.0, "no solution (empty program)")
    if split not in task.splits:
        raise ValueError(f"task {task.name} has no split {split!r}")
    merged = {**task.settings, **(settings or {})}
    given = rng or candidate_rng.outside_session()
    candidate = CandidateRng(candidate_rng.check_mode(merged.get(candidate_rng.SETTING, given.mode)),
                             given.secret)
    task_settings = {k: v for k, v in merged.items() if k not in candidate_rng.ENGINE_SETTINGS}
    holder: dict[str, Sandbox] = {}

    def run(*args: object, time_limit: float, rng: tuple | None = None) -> Outcome:
        # The candidate's generators: keyed by the secret, unless the reference is asked for.
        rng = candidate.generators(rng)
        box = holder.get("box")
        if box is None or not box.alive():
            if box is not None:
                box.close()
            box = holder["box"] = Sandbox(source, task.entry, limits=limits, cancel=cancel)
            box.start()
        return box.call(args, time_limit, rng=rng)

    try:
        if task.takes_settings:
            result = task.evaluator.evaluate(run, split, task_settings)
        else:
            result = task.evaluator.evaluate(run, split)
    except Cancelled:
        raise
    except Exception as exc:  # a bug in the task's evaluate.py (a user task): a score, with the reason
        return Score(0.0, f"evaluate.py raised {type(exc).__name__}: {exc}"[:500],
                     time.monotonic() - started)
    finally:
        if "box" in holder:
            holder["box"].close()
    if isinstance(result, tuple) and len(result) == 2:
        value, error = result
    else:
        value, error = result, None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return Score(0.0, f"evaluate.py returned {type(result).__name__}, not (score, error)",
                     time.monotonic() - started)
    return Score(_clamp(value), None if error is None else str(error)[:1000], time.monotonic() - started)
