"""Scoring a downstream solution with its task's executed utility (trusted side).

The task's evaluate.py draws the instances and computes the score here; the candidate only
ever sees an instance's inputs, inside the sandbox. A failing candidate is a score (with a
reason), never an exception; so is a failing evaluate.py (it is trusted, but it is user code
and can be buggy).

One evaluation:
- The candidate is loaded into a sandbox at its first `run` and stays loaded across instances.
  A run that kills it (a timeout, a crash) gets a fresh sandbox at the next `run`. A program
  that fails to load (a syntax error, an exception in its top-level code, no entry function,
  top-level code over the load limit) fails once: every later `run` of the evaluation answers
  the same failure at once, with `Outcome.load_failed` set, so that evaluate.py can score a
  load failure apart from a run failure (the released code did: LPN gives 0 for one, 1e-6
  for the other).
- evaluate.py runs in its own thread, bounded by the task's `evaluation_time_limit`. Past it
  the evaluation is abandoned with a score of 0 and the reason: the sandbox is killed (a call
  in flight returns at once), every later `run` raises, and an `EvaluationExpired` exception is
  raised asynchronously in the thread, which ends Python code that never calls `run` (a
  `while True` loop). Code blocked inside one C call (a sleep, a read) is left to finish in its
  daemon thread; it holds no sandbox, and the exception fires when the call returns. A child
  process per evaluation would also stop that, at the price of a process start and a second
  IPC hop per instance (bench/sandbox_pool.py: a warm sandbox evaluation of LPN costs a few
  in-process ones) and of fork-with-threads hazards in the engine; the thread plus the
  sandbox kill ends every hang we know a buggy evaluate.py to produce (tests/test_user_tasks.py)
  and leaves only a sleeping thread behind for a call blocked in C.
- SystemExit and every other exception from evaluate.py are its error (score 0, the reason).
- What evaluate.py prints goes to stderr, never to stdout, where commands write results
  (`score --json`, `run --json`); the candidate's own output never leaves its sandbox.
"""

from __future__ import annotations

import ctypes
import math
import numbers
import threading
import time
from dataclasses import dataclass
from typing import Any

from stop_tui.engine import candidate_rng
from stop_tui.engine.candidate_rng import CandidateRng
from stop_tui.engine.errors import Cancelled
from stop_tui.engine.evaluation_output import output_to_stderr
from stop_tui.engine.sandbox import trace
from stop_tui.engine.sandbox.process import CancelFlag, Limits, Outcome, Sandbox
from stop_tui.engine.tasks import Task

UNWIND_GRACE = 1.0  # seconds an expired evaluate.py gets to unwind before it is abandoned


class EvaluationExpired(BaseException):
    """Raised inside evaluate.py once its evaluation is over its time limit. A BaseException,
    so that an evaluate.py catching Exception around `run` cannot swallow it."""


@dataclass(frozen=True)
class Score:
    score: float
    error: str | None = None
    seconds: float = 0.0


class _Candidate:
    """The program under evaluation as evaluate.py's `run` reaches it (see the module text)."""

    def __init__(self, task: Task, source: str, limits: Limits, cancel: CancelFlag | None,
                 generators: CandidateRng) -> None:
        self._task, self._source, self._limits, self._cancel = task, source, limits, cancel
        self._generators = generators
        self._lock = threading.Lock()
        self._box: Sandbox | None = None
        self._loaded = False  # it loaded once in this evaluation
        self._load_failure: Outcome | None = None
        self._over = False  # closed or expired: `run` refuses

    def run(self, *args: object, time_limit: float, rng: tuple | None = None) -> Outcome:
        begun = time.monotonic_ns()
        rng = self._generators.generators(rng)  # keyed by the secret, unless rng=reference
        recorder = trace.active()
        if recorder is not None:
            recorder.add("call: RNG derivation in the engine (keyed by the secret)",
                         time.monotonic_ns() - begun)
        with self._lock:
            if self._over:
                raise EvaluationExpired()
            if self._load_failure is not None:
                return self._load_failure
            box = self._box
            fresh = box is None or not box.alive()
            if fresh:
                if box is not None:
                    box.close()
                box = self._box = Sandbox(self._source, self._task.entry, limits=self._limits,
                                          cancel=self._cancel)
        if fresh:
            box.start()
            with self._lock:
                if self._over:
                    raise EvaluationExpired()
                if box.load_error is not None:
                    # Reported once and kept: loading again would fail again (and a slow top
                    # level would cost its load limit per instance). A program that loaded
                    # before in this evaluation did load: its reload failing is a run failure.
                    self._load_failure = Outcome(error=box.load_error, load_failed=not self._loaded)
                    return self._load_failure
                self._loaded = True
        return box.call(args, time_limit, rng=rng)

    def expire(self) -> None:
        """Past the deadline: refuse every later `run` and end a call in flight."""
        with self._lock:
            self._over = True
            box = self._box
        if box is not None:
            box.kill()

    def close(self) -> None:
        with self._lock:
            self._over = True
            box, self._box = self._box, None
        if box is not None:
            box.close()


def _raise_in(thread: threading.Thread, exc: type[BaseException]) -> None:
    if thread.ident is not None:
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(exc))


def _call_evaluate(task: Task, run: Any, split: str, settings: dict) -> Any:
    """`settings`: the task's, with the command's overrides (the engine's own taken out)."""
    if task.takes_settings:
        return task.evaluator.evaluate(run, split, settings)
    return task.evaluator.evaluate(run, split)


def _failure(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return f"evaluate.py called sys.exit({exc.code!r})"
    return f"evaluate.py raised {type(exc).__name__}: {exc}"[:500]


def _checked(result: Any) -> tuple[float, str | None]:
    """(score in [0, 1], error) from what evaluate.py returned; a score of 0 and what was wrong
    when it is not (a real number, None or a reason)."""
    if isinstance(result, tuple):
        if len(result) != 2:
            return 0.0, f"evaluate.py returned a tuple of {len(result)}, not (score, error)"
        value, error = result
    else:
        value, error = result, None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return 0.0, (f"evaluate.py returned a {type(value).__name__} score ({value!r:.40}), "
                     "not a number; it must return (score, error)")
    score = float(value)
    if math.isnan(score):
        return 0.0, "evaluate.py returned a NaN score"
    if math.isinf(score):
        return 0.0, f"evaluate.py returned an infinite score ({score})"
    return min(max(score, 0.0), 1.0), None if error is None else str(error)[:1000]


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
    generators = CandidateRng(candidate_rng.check_mode(merged.get(candidate_rng.SETTING, given.mode)),
                              given.secret)
    task_settings = {k: v for k, v in merged.items() if k not in candidate_rng.ENGINE_SETTINGS}
    candidate = _Candidate(task, source, limits, cancel, generators)
    outcome: dict[str, Any] = {}
    done = threading.Event()

    def evaluate() -> None:
        # EvaluationExpired is injected once, at any bytecode: also while the outcome is being
        # recorded or the candidate closed. Both steps absorb it (closing is idempotent).
        try:
            try:
                with output_to_stderr():
                    outcome["result"] = _call_evaluate(task, candidate.run, split, task_settings)
            except BaseException as exc:  # SystemExit included: it is evaluate.py's error
                outcome["exc"] = exc
        except EvaluationExpired:
            pass
        finally:
            while True:
                try:
                    candidate.close()
                    done.set()
                    break
                except EvaluationExpired:
                    continue

    thread = threading.Thread(target=evaluate, daemon=True, name=f"evaluate-{task.name}")
    thread.start()
    limit = task.evaluation_time_limit
    while not done.wait(0.05):
        if cancel is not None and cancel.is_set() or time.monotonic() - started > limit:
            candidate.expire()
            if not done.is_set():
                _raise_in(thread, EvaluationExpired)
            done.wait(UNWIND_GRACE)
            candidate.close()
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            return Score(0.0, f"evaluate.py did not finish within the evaluation time limit of "
                              f"{limit:g} s (task.toml evaluation_time_limit); abandoned",
                         time.monotonic() - started)
    seconds = time.monotonic() - started
    exc = outcome.get("exc")
    if isinstance(exc, Cancelled):
        raise exc
    if exc is not None:
        return Score(0.0, _failure(exc), seconds)
    score, error = _checked(outcome.get("result"))
    return Score(score, error, seconds)
