"""Running one improver (LM-written) in the sandbox, with proxies back into the engine."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from stop_tui.engine.errors import Cancelled
from stop_tui.engine.lm.service import LanguageModel
from stop_tui.engine.sandbox.process import CancelFlag, Limits, Outcome, Sandbox

ENTRY = "improve_algorithm"
WALL_FACTOR = 10.0  # default wall-clock cap of an improver run: this many times its own-time limit
RPC_DRAIN_SECONDS = 120.0  # how long an ended run's LM calls in flight may take to be recorded


class RunCancel:
    """Set when an improver run ends; it reads as set as soon as its parent (the engine's
    cancel, or the utility of the run that asked for this one) is, so a stop reaches every
    level at once."""

    def __init__(self, parent: CancelFlag | None = None) -> None:
        self._own = threading.Event()
        self._parent = parent

    def set(self) -> None:
        self._own.set()

    def is_set(self) -> bool:
        return self._own.is_set() or (self._parent is not None and self._parent.is_set())


class Utility:
    """The engine side of an improver's `utility` (the paper's interface, README "The method"):
    a budget, a use count, the displayed source, and a scoring function the improver cannot see
    into.

    `cancel` is set when the improver run it serves ends (or `parent` is): scorings still in
    flight (which the score function runs with it as their cancel) stop, and no new use is
    accepted. `foresee` is told the LM's replies as they reach the improver (a downstream
    run's scorings ahead: scores_ahead.py)."""

    def __init__(self, text: str, budget: int, score: Callable[[str, int], float], *,
                 parent: CancelFlag | None = None,
                 foresee: Callable[[list[Any]], None] | None = None) -> None:
        self.str = text
        self.budget = budget
        self.uses = 0
        self.cancel = RunCancel(parent)
        self._score = score
        self._foresee = foresee
        self._lock = threading.Lock()

    def foresee(self, replies: list[Any]) -> None:
        """The LM's replies reached the improver: what it may score next (scores_ahead.py)."""
        if self._foresee is not None and isinstance(replies, list):
            self._foresee(replies)

    def __call__(self, source: str | None) -> float:
        if self.cancel.is_set():
            raise Cancelled()
        with self._lock:
            if self.uses >= self.budget:
                return 0.0
            if not source:
                return 0.0
            self.uses += 1
            use = self.uses
        return self._score(source, use)


def run_improver(source: str, initial_solution: str, utility: Utility, lm: LanguageModel, *,
                 limits: Limits, time_limit: float, seed: int,
                 cancel: CancelFlag | None = None, wall_limit: float | None = None) -> Outcome:
    """improve_algorithm(initial_solution, utility, language_model) in a sandbox. The value of a
    successful outcome is the returned program (a str, or None when it returned None).

    `time_limit` counts the improver's own time; `wall_limit` (default WALL_FACTOR times it)
    counts everything, waits on the LM and the utility included. When the run ends, what it
    started ends with it: its process is killed, no new call is served, scorings it left in
    flight (in threads) are cancelled (their sandboxes killed, nothing recorded), and LM calls
    already sent are waited for (their answers are paid for and recorded) before this returns."""
    ended = threading.Event()

    def rpc(method: str, params: dict[str, Any]) -> Any:
        if ended.is_set():
            raise Cancelled()
        if method == "lm.batch_prompt":
            messages = params.get("messages")
            if not isinstance(messages, list):
                raise TypeError("message_batch must be a list of strings")
            replies = lm.batch_prompt(params.get("expertise"), messages, params.get("temperature", 0.7))
            utility.foresee(replies)
            return replies
        if method == "lm.prompt":
            replies = lm.prompt(params.get("expertise"), params.get("message"),
                                params.get("n_responses", 1), params.get("temperature", 0.7))
            utility.foresee(replies)
            return replies
        if method == "utility":
            solution = params.get("solution")
            if solution is not None and not isinstance(solution, str):
                raise TypeError("utility takes a program as a string")
            return utility(solution)
        if method == "utility.uses":
            return utility.uses
        raise ValueError(f"unknown call {method!r}")

    spec = {"initial_solution": initial_solution, "utility_str": utility.str,
            "utility_budget": utility.budget, "lm_budget": lm.budget,
            "max_responses_per_call": lm.max_responses_per_call}
    if wall_limit is None:
        wall_limit = WALL_FACTOR * time_limit
    try:
        with Sandbox(source, ENTRY, limits=limits, rpc=rpc, cancel=cancel) as box:
            if box.load_error is not None:
                return Outcome(error=box.load_error)
            try:
                outcome = box.improve(spec, time_limit, wall_limit=wall_limit, seed=seed)
            finally:
                ended.set()
                utility.cancel.set()
                box.kill()
                stopped = cancel is not None and cancel.is_set()  # a quit does not wait
                box.wait_rpcs(0.0 if stopped else RPC_DRAIN_SECONDS)
    finally:
        ended.set()
        utility.cancel.set()
    if cancel is not None and cancel.is_set():
        # Stopped (quit, or a session cap refused an LM call): whatever the improver made of
        # its refused calls is not a result. Nothing is recorded; a resume re-executes it.
        raise Cancelled()
    if outcome.error is None and outcome.value is not None and not isinstance(outcome.value, str):
        return Outcome(error=f"improve_algorithm returned a {type(outcome.value).__name__}, "
                             "not a program", seconds=outcome.seconds)
    return outcome
