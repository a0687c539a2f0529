"""Baselines: what a user gets without self-improvement, at the same LM budget.

Each baseline is an improver program (below), run exactly like STOP's improvers: in the
sandbox, through the engine's meta-utility (`Engine.score_candidate`), with the preset's LM
budget per run (calls x samples) and utility budget. Its score per run is the downstream score
of the solution it returns; `settings.meta_runs` runs are made.

- best-of-n: spend the whole LM budget on independent samples of the seed improver's prompt
  (n = calls x samples per call), score them, keep the best;
- cot: one chain-of-thought attempt (one call, one sample; no utility use);
- greedy: the greedy iterative improver: each call improves the best solution so far, a
  candidate replaces it only when it scores higher.
All three ask with the seed improver's own words (tasks/meta/seed.py: its expertise line and
improvement request), so they differ from it only in how they spend the budget.

Results go to <session>/baselines/<method>.json as {"method", "task", "scores", "mean",
"ci95", ...} (test split, val beside it); the TUI draws them as reference lines in its Scores
pane. Into a STOP session's folder, or a new session folder of their own. The engine's events
(LM calls, runs) are recorded in <folder>/baselines/<method>/session.db (a new folder: in the
new session's own), never in the STOP session's own log.
"""

from __future__ import annotations

import ast
import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stop_tui.engine import candidate_rng
from stop_tui.engine import events as ev
from stop_tui.engine.errors import Cancelled, UserError
from stop_tui.engine.lock import SessionLock, acquire
from stop_tui.engine.settings import Settings
from stop_tui.engine.stats import mean_ci
from stop_tui.engine.store import SessionStore, session_folder
from stop_tui.engine.tasks import META, downstream_names, load_task

KIND = "baseline"
METHODS = ("best-of-n", "cot", "greedy")


def _seed_prompt() -> str:
    """EXPERTISE and request(initial_solution, utility, extra=""), the seed improver's own
    expertise line and improvement request (its `expertise` and `message`), as program text."""
    source = load_task(META).seed
    values = {node.targets[0].id: ast.get_source_segment(source, node.value)
              for node in ast.walk(ast.parse(source))
              if isinstance(node, ast.Assign) and len(node.targets) == 1
              and isinstance(node.targets[0], ast.Name) and node.targets[0].id in ("expertise", "message")}
    if len(values) != 2:
        raise RuntimeError("tasks/meta/seed.py: the baselines need its `expertise` and `message`")
    return f'''
EXPERTISE = {values["expertise"]}


def request(initial_solution, utility, extra=""):
    return {values["message"]} + extra
'''


_BEST_OF_N = '''
def improve_algorithm(initial_solution, utility, language_model):
    """Best of n: every LM call of the budget samples the same improvement request; the best
    scoring of all the programs returned wins."""
    message = request(initial_solution, utility)
    candidates = []
    for _ in range(language_model.budget):
        replies = language_model.batch_prompt(
            EXPERTISE, [message] * language_model.max_responses_per_call, temperature=0.7)
        candidates += [code for code in extract_code(replies) if code]
    best, best_score = None, None
    for code in candidates[:utility.budget]:
        score = utility(code)
        if best_score is None or score > best_score:
            best, best_score = code, score
    return best
'''

_COT = '''
def improve_algorithm(initial_solution, utility, language_model):
    """One chain-of-thought attempt: reason step by step, then write the program once."""
    message = request(initial_solution, utility, extra="""

Think step by step before you write any code: what does the score function reward, where
does the current solution lose points, which idea fixes that? Then write the complete
improved solution in one ```python block.""")
    replies = language_model.prompt(EXPERTISE, message, n_responses=1, temperature=0.7)
    return extract_code(replies)[0]
'''

_GREEDY = '''
def improve_algorithm(initial_solution, utility, language_model):
    """Greedy iterative improvement: each LM call asks to improve the best program so far; a
    candidate replaces it only when it scores strictly higher."""
    best, best_score = initial_solution, utility(initial_solution)
    for _ in range(language_model.budget):
        n = min(language_model.max_responses_per_call, utility.budget - utility.uses)
        if n <= 0:
            break
        replies = language_model.batch_prompt(EXPERTISE, [request(best, utility)] * n, temperature=0.7)
        for code in extract_code(replies):
            if not code:
                continue
            score = utility(code)
            if score > best_score:
                best, best_score = code, score
    return best
'''


@functools.cache
def programs() -> dict[str, str]:
    """Each method's improver program: the seed improver's prompt (read once), then the method."""
    head = "from helpers import extract_code\n" + _seed_prompt() + "\n"
    return {"best-of-n": head + _BEST_OF_N, "cot": head + _COT, "greedy": head + _GREEDY}


# The paper's LPN baselines (arXiv 2310.02304; GPT-4): mean and +- half-width.
PAPER = {("lpn", "cot"): (0.577, 0.030), ("lpn", "greedy"): (0.642, 0.009)}


class BaselinePaused(Cancelled):
    """The LM service paused the baseline (a failing server, a cap): `reason` is its line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Parent:
    """The STOP session a baseline is run for (its folder gets the results)."""

    folder: Path
    meta: dict[str, Any]


def parent_session(sessions_dir: Path, session: str) -> Parent:
    store = SessionStore(session_folder(sessions_dir, session), readonly=True)
    try:
        store.verify()
        return Parent(store.folder, store.meta())
    finally:
        store.close()


def check_task(task_name: str, parent: Parent | None, given: str | None) -> None:
    """A baseline's task is a downstream one, and a session's own (`given`: --task as given)."""
    task = load_task(task_name)
    if task.kind != "solution":
        raise UserError(f"{task_name} is not a downstream task (tasks: {', '.join(downstream_names())})")
    if parent is not None and task.folder != load_task(parent.meta["task"]).folder:
        task_of = parent.meta["task"]
        raise UserError(f"session {parent.folder.name} is a {task_of} session: its baselines are "
                        f"on {task_of} (leave out --task {given}, or leave out --session)")


@dataclass
class Baseline:
    store: SessionStore  # the baseline's own log
    folder: Path  # where baselines/ and its results go: the parent session's, or its own
    target: Path  # the results file
    task_name: str
    method: str
    settings: Settings
    backend: Any
    lock: SessionLock

    def run(self, echo: Callable[[str], None] | None = None, again: str = "stop-tui baseline") -> dict[str, Any]:
        """Run the baseline improver `settings.meta_runs` times, write the results file and
        return it. When the LM service pauses it, the PAUSED event is written and BaselinePaused
        raised; `again` is the command that runs the baseline again (its line says it)."""
        try:
            result = self._score(echo, again)
            result.update({"model": self.backend.model, "preset": self.settings.preset,
                           "session": self.folder.name, "events": str(self.store.folder)})
            self.target.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.target.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(result, indent=2) + "\n")
            tmp.replace(self.target)
            return result
        finally:
            self.lock.release()

    def _score(self, echo: Callable[[str], None] | None, again: str) -> dict[str, Any]:
        from stop_tui.engine.session import wire_session

        store, method, task_name, settings = self.store, self.method, self.task_name, self.settings
        session = wire_session(store, settings, task_name, self.backend)
        try:
            if echo:
                echo(f"baseline {method} on {task_name}: {settings.meta_runs} run(s)")
            try:
                result = session.engine.score_candidate(programs()[method], f"baseline-{method}", None,
                                                        f"baseline:{method}", with_test=True)
            except Cancelled:
                reason = session.engine.pause_if_stopped(again, switch="change --base-url URL / --model NAME")
                if reason is None:
                    raise
                raise BaselinePaused(reason) from None
            store.append(ev.event(ev.SessionFinished(iterations_completed=0, reason="done")))
        finally:
            session.close()
        vals = [val for val, _ in result.runs]
        tests = [test or 0.0 for _, test in result.runs]
        mean, ci = mean_ci(tests)
        val_mean, val_ci = mean_ci(vals)
        out: dict[str, Any] = {"method": method, "task": task_name, "scores": tests, "mean": mean,
                               "ci95": ci, "split": "test", "val_scores": vals, "val_mean": val_mean,
                               "val_ci95": val_ci, "runs": len(tests), "errors": result.errors[:5]}
        paper = PAPER.get((task_name, method))
        if paper:
            out["paper"] = {"mean": paper[0], "plus_minus": paper[1]}
        return out


def start(sessions_dir: Path, method: str, task_name: str, settings: Settings, backend,
          base_url: str | None, parent: Parent | None = None,
          parent_lock: SessionLock | None = None) -> Baseline:
    """The baseline's log, created and locked. Into a parent session's folder, the caller holds
    its lock (`parent_lock`, taken before the backend starts): nobody may run the session while
    its baseline is written into it."""
    parent_meta = parent.meta if parent is not None else {}
    lock = parent_lock
    meta = {"kind": KIND, "task": task_name, "method": method, "model": backend.model,
            "settings": settings.to_dict(), "base_url": base_url,
            # a session's baseline: its candidates' generators, so the scores compare
            **({"task_settings": parent_meta["task_settings"]} if parent_meta.get("task_settings") else {}),
            **candidate_rng.session_meta(settings.seed, parent_meta if parent is not None else None)}
    if parent is not None:
        # A second baseline of a method keeps the first: its log is <method>-2 (SessionStore.create
        # never reuses a folder), its results <method>-2.json beside <method>.json.
        store = SessionStore.create(parent.folder / "baselines", meta, name=method)
        folder, name = parent.folder, store.folder.name
    else:
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        store = SessionStore.create(sessions_dir, meta, name=f"{stamp}-baseline-{method}")
        folder, name = store.folder, method
        lock = acquire(folder)
    assert lock is not None, "a parent session's baseline needs its lock"
    store.append(ev.event(ev.SessionStarted(task=task_name, model=backend.model, settings=settings.to_dict(),
                                            resumed=False, kind=KIND, method=method)))
    return Baseline(store, folder, folder / "baselines" / f"{name}.json", task_name, method, settings,
                    backend, lock)
