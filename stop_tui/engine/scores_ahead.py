"""One downstream improver run's scorings: kept, and started ahead on idle cores (issue 13:
scoring while nothing waits on it).

When an LM reply reaches a downstream improver, the programs in it (as engine/extract.py, the
improvers' `helpers.extract_code`, reads them) are what it will most likely score next,
one after the other. While cores are idle (cores.evaluating_if_idle, checked as each starts)
they are scored at once, before the improver asks; its utility then waits for the scoring in
progress instead of starting another. Every scoring of the run is kept by (program, split): the
improver asking again, and the run's final val (the program it returns is one it scored), get
the kept Score instead of a second evaluation of the same program, which would say the same (a
program's generators are fixed per session: candidate_rng); its recorded `seconds` are 0.

Nothing is recorded ahead: the log gets each scoring when it is asked for, in the same order,
with the same scores and static checks as without this. A program scored ahead and never asked
for costs only time on a core that was idle; what is still running when the run ends is
stopped (`close`). Downstream only: a candidate improver's û costs LM calls, never spent on a
guess.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace

from stop_tui.engine.cores import evaluating, evaluating_if_idle
from stop_tui.engine.errors import Cancelled
from stop_tui.engine.extract import extract_code
from stop_tui.engine.improver import RunCancel
from stop_tui.engine.sandbox.process import CancelFlag
from stop_tui.engine.scoring import Score

Scorer = Callable[[str, str, CancelFlag | None], Score]  # (program, split, cancel) -> its Score
POLL = 0.05  # seconds between looks at a waiting utility's cancel


class ScoresAhead:
    """`score(program, split, cancel)` evaluates (the engine's score_solution); `parent`: the
    run's cancel (scorings ahead stop with it). Ahead is val only: the utility's split. (Each
    foreseen program's test too, for a run whose final gets both, was measured slower: the
    programs not returned take the cores the one returned needs.)"""

    def __init__(self, score: Scorer, parent: CancelFlag | None) -> None:
        self._score = score
        self._cancel = RunCancel(parent)
        self._lock = threading.Lock()
        self._kept: dict[tuple[str, str], Future[Score | None]] = {}  # None: score it when asked
        self._handed: set[tuple[str, str]] = set()  # scorings given to an asker
        self._pool: ThreadPoolExecutor | None = None

    def foresee(self, replies: Iterable[object]) -> None:
        """An LM reply reached the improver: score its programs ahead while cores are idle."""
        programs = list(dict.fromkeys(p for p in (extract_code(r) if isinstance(r, str) else None
                                                  for r in replies) if p and p.strip()))
        with self._lock:
            if self._cancel.is_set():
                return
            for key in ((p, "val") for p in programs):
                if key not in self._kept:
                    if self._pool is None:
                        self._pool = ThreadPoolExecutor(max_workers=len(os.sched_getaffinity(0)),
                                                        thread_name_prefix="score-ahead")
                    self._kept[key] = self._pool.submit(self._ahead, *key)

    def _ahead(self, program: str, split: str) -> Score | None:
        with evaluating_if_idle() as idle:
            if not idle or self._cancel.is_set():
                return None
            try:
                return self._score(program, split, self._cancel)
            except Exception:  # noqa: BLE001 - Cancelled included: asked for, it is scored then
                return None

    def score(self, program: str, split: str, cancel: CancelFlag | None) -> Score:
        """`program`'s Score in `split`: kept, or the scoring ahead waited for, or scored now.
        Raises Cancelled when `cancel` is set while it waits."""
        key = (program, split)
        while True:
            with self._lock:
                future = self._kept.get(key)
                # Not started yet (cancel() succeeds), or ahead found no idle core: score it here.
                if future is None or future.cancel() or (future.done() and future.result() is None):
                    own: Future[Score | None] = Future()
                    own.set_running_or_notify_cancel()
                    self._kept[key] = own
                    break
            got = _wait(future, cancel)
            if got is not None:
                return self._given(key, got)
        try:
            with evaluating():
                result = self._score(program, split, cancel)
        except BaseException:
            own.set_result(None)  # whoever asks next scores it
            raise
        own.set_result(result)
        return self._given(key, result)

    def _given(self, key: tuple[str, str], score: Score) -> Score:
        """A Score given again took no time (its `seconds`, as recorded, are 0)."""
        with self._lock:
            again = key in self._handed
            self._handed.add(key)
        return replace(score, seconds=0.0) if again else score

    def close(self) -> None:
        """The run has ended: stop what is scored ahead (nothing waits for it any more)."""
        with self._lock:
            self._cancel.set()
            pool = self._pool
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


def _wait(future: Future[Score | None], cancel: CancelFlag | None) -> Score | None:
    while True:
        try:
            return future.result(timeout=POLL)
        except TimeoutError:
            if cancel is not None and cancel.is_set():
                raise Cancelled() from None
