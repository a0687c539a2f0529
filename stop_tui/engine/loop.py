"""The STOP loop (arXiv 2310.02304; README, "The method"): the meta-utility û and the outer
iterations.

I_t = I_{t-1}(û, I_{t-1}, L): the current improver is run, in the sandbox, on its own source,
with û as its utility. Each û call runs the candidate improver `meta_runs` times on the
downstream task's seed solution (fresh LM and utility handles per run, concurrently) and
averages the val score of what comes back. The result is re-scored (val and test) and the
acceptance rule decides whether it becomes I_t.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass

from stop_tui.engine import candidate_rng
from stop_tui.engine import events as ev
from stop_tui.engine.cores import evaluating, free_cores
from stop_tui.engine.errors import Cancelled
from stop_tui.engine.gate import ITERATION, Gate
from stop_tui.engine.history import History
from stop_tui.engine.improver import WALL_FACTOR, Utility, run_improver
from stop_tui.engine.lm.record import Book
from stop_tui.engine.lm.service import SWITCH_SERVER, LMService
from stop_tui.engine.resume import effective, find_interrupted, last_totals
from stop_tui.engine.safety import flag_candidate
from stop_tui.engine.sandbox.process import CancelFlag, Limits
from stop_tui.engine.scores_ahead import ScoresAhead
from stop_tui.engine.scoring import Score, score_solution
from stop_tui.engine.settings import Settings
from stop_tui.engine.store import SessionStore, cli_name
from stop_tui.engine.tasks import Task


@dataclass(frozen=True)
class MetaScore:
    val: float
    test: float | None
    errors: list[str]
    runs: tuple[tuple[float, float | None], ...] = ()  # each improver run's (val, test), in run order


@dataclass
class LoopState:
    """What the event log says so far (rebuilt on resume)."""

    improver: str  # the accepted improver's source
    improver_val: float | None = None
    iterations_done: int = 0  # completed iterations t >= 1
    seed_scored: bool = False


class Engine:
    def __init__(self, store: SessionStore, settings: Settings, task: Task, meta: Task,
                 lm: LMService, gate: Gate) -> None:
        self.store, self.settings, self.task, self.meta = store, settings, task, meta
        self.lm, self.gate = lm, gate
        self.limits = Limits(settings.memory_limit_mb, settings.output_limit_kb)
        meta = store.meta()
        self.rng = candidate_rng.for_session(meta)  # the candidates' generators (secret-keyed)
        self.task_settings = {k: v for k, v in (meta.get("task_settings") or {}).items()
                              if k in task.settings or k in candidate_rng.ENGINE_SETTINGS}
        self.state = self._replay_state()

    # -- plumbing -------------------------------------------------------------------------
    def emit(self, payload: ev.Payload, path: str = "") -> None:
        self.store.append(ev.event(payload, path))

    def _seed(self, path: str) -> int:
        return zlib.crc32(f"{self.settings.seed}/{path}".encode()) & 0x7FFFFFFF

    @property
    def cancel(self) -> threading.Event:
        return self.gate.cancel_event

    def _replay_state(self) -> LoopState:
        history = History.read(self.store)
        held, latest = history.held_improver(), history.latest
        return LoopState(improver=(self.store.text(held) if held else None) or self.meta.seed,
                         improver_val=latest.val if latest else None,
                         iterations_done=history.iterations_done, seed_scored=history.seed_scored)

    # -- downstream -----------------------------------------------------------------------
    def score_downstream(self, source: str | None, path: str, split: str, *,
                         cancel: CancelFlag | None = None, kept: ScoresAhead | None = None) -> float:
        """`cancel`: the utility's of the improver run that asked (it ends with that run);
        `kept`: that run's scorings (kept and ahead: scores_ahead.py)."""
        if split == "val":  # static safety checks, once per solution, before it runs
            flag_candidate(self.store.append, source, path, "solution")
        result = self._evaluate(source, split, cancel, kept)
        self._record_score(source, path, split, result)
        return result.score

    def score_val_and_test(self, source: str | None, path: str, test_path: str | None = None, *,
                           cancel: CancelFlag | None = None,
                           kept: ScoresAhead | None = None) -> tuple[float, float]:
        """score_downstream in val (at `path`) and in test (at `test_path`, default `path`),
        recorded val first. The two evaluations are independent (each has its own sandbox):
        they run at once when two cores are idle (cores.free_cores: not on a loaded machine,
        nor in a busy meta-utility, which would gain nothing and whose time limits are
        wall-clock), else one after the other; the log reads the same either way."""
        flag_candidate(self.store.append, source, path, "solution")
        if free_cores() < 2:
            val = self._evaluate(source, "val", cancel, kept)
            self._record_score(source, path, "val", val)
            tested = self._evaluate(source, "test", cancel, kept)
            self._record_score(source, test_path or path, "test", tested)
            return val.score, tested.score
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="score-test") as pool:
            test = pool.submit(self._evaluate, source, "test", cancel, kept)
            try:
                val = self._evaluate(source, "val", cancel, kept)
            except BaseException:
                test.cancel()
                raise
            self._record_score(source, path, "val", val)
            tested = test.result()
        self._record_score(source, test_path or path, "test", tested)
        return val.score, tested.score

    def _evaluate(self, source: str | None, split: str, cancel: CancelFlag | None,
                  kept: ScoresAhead | None = None) -> Score:
        if kept is not None and source:
            return kept.score(source, split, cancel)
        with evaluating():
            return self._score(source, split, cancel)

    def _score(self, source: str | None, split: str, cancel: CancelFlag | None) -> Score:
        return score_solution(self.task, source, split, limits=self.limits, cancel=cancel or self.cancel,
                              settings=self.task_settings, rng=self.rng)

    def _record_score(self, source: str | None, path: str, split: str, result: Score) -> None:
        self.emit(ev.SolutionScored(source=self.store.put_text(source) if source else None,
                                    split=split, score=result.score, seconds=round(result.seconds, 4),
                                    error=result.error or None), path)

    # -- the meta-utility -----------------------------------------------------------------
    @contextmanager
    def _cancellation_recorded(self, path: str) -> Iterator[None]:
        """A scoring at `path` (an improver run, a candidate) stopped because the improver run
        that asked for it ended: record that it ended unscored (else it reads as running
        forever). A stop of the engine records nothing: a resume re-executes the iteration."""
        try:
            yield
        except Cancelled:
            if not self.cancel.is_set():
                self.emit(ev.ScoringCancelled(
                    reason="cancelled: the improver run that asked for this scoring ended"), path)
            raise

    def _wall_limit(self, meta_level: bool) -> float:
        """Wall-clock seconds of one improver run, waits included: a downstream run gets the
        setting (default WALL_FACTOR x its own-time limit); an iteration's improver, whose
        û uses each run downstream improvers, gets that once per use and once more."""
        s = self.settings
        downstream = s.improver_wall_limit or WALL_FACTOR * s.improver_time_limit
        return downstream * (1 + s.meta_utility_budget) if meta_level else downstream

    def _improver_run(self, improver: str, path: str, with_test: bool,
                      cancel: CancelFlag | None = None) -> tuple[float, float | None, str | None]:
        s = self.settings
        cancel = cancel or self.cancel
        self.emit(ev.RunStarted(improver=self.store.put_text(improver)), path)
        kept = ScoresAhead(self._score, cancel)
        utility = Utility(self.task.displayed, s.utility_budget,
                          lambda src, k: self.score_downstream(src, f"{path}/s{k}", "val",
                                                               cancel=utility.cancel, kept=kept),
                          parent=cancel, foresee=kept.foresee)
        lm = self.lm.handle(path, s.lm_budget, s.max_responses_per_call)
        with self._cancellation_recorded(path), closing(kept):
            out = run_improver(improver, self.task.seed, utility, lm, limits=self.limits,
                               time_limit=s.improver_time_limit, seed=self._seed(path), cancel=cancel,
                               wall_limit=self._wall_limit(False))
            if self.cancel.is_set():
                # The run was stopped (quit, a cap, a failing LM server), also when `cancel` is a
                # nested run's own event: what the improver made of its refused calls is no result.
                raise Cancelled()
            solution = out.value if out.error is None else None
            if out.error is not None:
                val, test = 0.0, (0.0 if with_test else None)
            elif with_test:
                val, test = self.score_val_and_test(solution, f"{path}/final", cancel=cancel, kept=kept)
            else:
                val, test = self.score_downstream(solution, f"{path}/final", "val", cancel=cancel,
                                                  kept=kept), None
        self.emit(ev.RunFinished(solution=self.store.put_text(solution) if solution else None,
                                 val=val, test=test, error=out.error, seconds=round(out.seconds, 4),
                                 lm_uses=lm.uses, utility_uses=utility.uses), path)
        return val, test, out.error

    def meta_score(self, improver: str | None, path: str, *, with_test: bool,
                   cancel: CancelFlag | None = None) -> MetaScore:
        """û(improver): the mean downstream val score over `meta_runs` improver runs."""
        if not improver or not improver.strip():
            return MetaScore(0.0, 0.0 if with_test else None, ["empty improver"])
        n = self.settings.meta_runs
        with ThreadPoolExecutor(max_workers=n, thread_name_prefix="meta-run") as pool:
            futures = [pool.submit(self._improver_run, improver, f"{path}/r{j}", with_test, cancel)
                       for j in range(1, n + 1)]
            results = [f.result() for f in futures]
        val = sum(r[0] for r in results) / n
        test = sum(r[1] for r in results) / n if with_test else None
        return MetaScore(val, test, [r[2] for r in results if r[2]], tuple(r[:2] for r in results))

    def score_candidate(self, source: str | None, path: str, parent: str | None, role: str, *,
                        with_test: bool, cancel: CancelFlag | None = None) -> MetaScore:
        self.emit(ev.CandidateProposed(role=role, source=self.store.put_text(source) if source else None,
                                       parent=self.store.put_text(parent) if parent else None), path)
        flag_candidate(self.store.append, source, path, "improver")  # static safety checks, before it runs
        with self._cancellation_recorded(path):
            result = self.meta_score(source, path, with_test=with_test, cancel=cancel)
        errors = result.errors
        self.emit(ev.CandidateScored(role=role, score=result.val, test=result.test if with_test else None,
                                     error=errors[0] if errors else None,
                                     failed_runs=len(errors) if errors else None), path)
        return result

    # -- the loop -------------------------------------------------------------------------
    def score_seed(self) -> None:
        """Iteration 0: û of the seed improver, the baseline every later iteration is judged by."""
        st = self.state
        self.emit(ev.IterationStarted(iteration=0, improver=self.store.put_text(st.improver)), "it0")
        result = self.score_candidate(st.improver, "it0/check", None, "seed", with_test=True)
        st.improver_val, st.seed_scored = result.val, True
        self.emit(ev.IterationAccepted(iteration=0, improver=self.store.put_text(st.improver),
                                       val=result.val, test=result.test, rule=self.settings.acceptance), "it0")

    def iterate(self, t: int) -> None:
        s, st = self.settings, self.state
        path = f"it{t}"
        current = st.improver
        self.emit(ev.IterationStarted(iteration=t, improver=self.store.put_text(current)), path)
        candidates = [0]
        lock = threading.Lock()

        def meta_utility(source: str, use: int) -> float:
            with lock:
                candidates[0] += 1
                k = candidates[0]
            return self.score_candidate(source, f"{path}/c{k}", current, "candidate", with_test=False,
                                        cancel=utility.cancel).val

        utility = Utility(self.meta.displayed, s.meta_utility_budget, meta_utility, parent=self.cancel)
        lm = self.lm.handle(path, s.lm_budget, s.max_responses_per_call)
        out = run_improver(current, current, utility, lm, limits=self.limits,
                           time_limit=s.improver_time_limit, seed=self._seed(path), cancel=self.cancel,
                           wall_limit=self._wall_limit(True))
        proposed = out.value if out.error is None else None
        check = self.score_candidate(proposed, f"{path}/check", current, "check", with_test=True)
        failed = out.error is not None or not proposed
        if failed:
            reason = f"the improver failed: {out.error}" if out.error else "the improver returned no program"
        elif check.val == 0:
            reason = "the new improver scored 0"
        elif s.acceptance == "best" and st.improver_val is not None and check.val <= st.improver_val:
            reason = f"not better than the current improver ({check.val:.4f} <= {st.improver_val:.4f})"
        else:
            reason = None
        if reason is None:
            st.improver, st.improver_val = proposed, check.val
            self.emit(ev.IterationAccepted(iteration=t, improver=self.store.put_text(proposed),
                                           val=check.val, test=check.test, rule=s.acceptance), path)
        else:
            self.emit(ev.IterationRejected(iteration=t, kept=self.store.put_text(current), reason=reason,
                                           val=check.val, test=check.test, rule=s.acceptance), path)
        st.iterations_done = t

    def prepare_resume(self) -> None:
        """Continue from the log (see resume.py): restore the LM totals and the LM record; an
        unfinished iteration is re-executed, its recorded calls answered from the record,
        and its partial events are marked superseded by the RESUMED event."""
        events = list(self.store.events())
        if not any(e.path for e in events):
            return  # a fresh session
        interrupted = find_interrupted(events)
        book = Book.from_events(events, self.store.text)
        if interrupted is None:
            self.lm.restore(last_totals(effective(events)), book)
            nxt = self.state.iterations_done + 1 if self.state.seed_scored else 0
            self.emit(ev.Resumed(iteration=nxt, superseded_from=None, recorded_calls=0))
            return
        self.lm.restore(interrupted.totals, book)
        self.emit(ev.Resumed(iteration=interrupted.iteration, superseded_from=interrupted.superseded_from,
                             recorded_calls=interrupted.recorded_calls))

    def pause_if_stopped(self, resume: str, switch: str = SWITCH_SERVER) -> str | None:
        """After a Cancelled: when the LM service stopped the work (a cap, a failing server:
        lm/service.py), let the calls in flight be recorded (they are paid for; a resume reuses
        them), write the PAUSED event and return its reason (the one `paused:` line a command
        prints); None when it did not. `resume`: the command that continues, `switch`: how it
        moves to another server."""
        stop = self.lm.stop
        if stop is None:
            return None
        self.lm.drain(timeout=stop.drain_timeout)
        paused = ev.Paused(**stop.pause_data(resume, switch))
        self.emit(paused)
        return paused.reason

    def run(self, iterations: int | None = None) -> str:
        """Run (or continue) the session up to `iterations`; returns why it stopped:
        "finished", "cancelled" or "capped" (a session cap or a failing LM server paused it)."""
        total = iterations if iterations is not None else self.settings.iterations
        self.prepare_resume()
        try:
            if not self.state.seed_scored:
                self.gate.passage(ITERATION)
                self.score_seed()
            while self.state.iterations_done < total:
                self.gate.passage(ITERATION)
                self.iterate(self.state.iterations_done + 1)
        except Cancelled:
            if self.pause_if_stopped(f"stop-tui run --resume {cli_name(self.store.folder)}") is not None:
                return "capped"
            self.lm.drain(timeout=10.0)  # a quit: the calls in flight get a little time to be recorded
            self.emit(ev.Paused(reason="stopped by the user; resume to continue"))
            return "cancelled"
        self.emit(ev.SessionFinished(iterations_completed=self.state.iterations_done, reason="done"))
        return "finished"
