"""One --max-cost for a whole sweep: every run reserves from one pool of dollars.

A run's LM service asks the pool before each call it sends (after the session's own caps),
with the call's worst case (lm/caps.py `call_worst_case`), and settles it when the call ended
with what it cost. A call is granted only while what every run spent, plus what the calls in
flight of every run hold, plus this call's worst case stays within the cap: the sum over the
sweep never passes it. A refused call is not sent and its run pauses like a capped session
(PAUSED with cap --max-cost); `sweep --resume SWEEP --max-cost HIGHER` raises the cap.

A run's spend is what its log says (`logged_cost_usd` of its BUDGET events): read for every
run when the pool is made, and again when a run (re)starts (`join`), which also drops the
reservations a dead worker left behind. `CostPool` is plain Python (thread-safe); the sweep
runs it as a Ray actor (`make_pool`) and each run's task talks to it through `bind`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from stop_tui.engine import events as ev
from stop_tui.engine.lm.caps import logged_cost_usd
from stop_tui.engine.store import DB_NAME, SessionStore, cli_name
from stop_tui.engine.sweep.layout import Sweep

SLACK_USD = 1e-12  # float sums: a call that exactly fills the cap is granted


class CostPool:
    """Dollars shared by the runs of a sweep. `spent`: run name -> spent so far (its log)."""

    def __init__(self, cap_usd: float | None, spent: dict[str, float],
                 resume: str | None = None) -> None:
        self.cap_usd = cap_usd
        self.resume = resume  # the command that continues the sweep (shown when a run pauses)
        self._spent = {run: float(usd) for run, usd in spent.items()}
        self._reserved: dict[str, float] = {}
        self._lock = threading.Lock()

    def join(self, run: str, spent_usd: float) -> None:
        with self._lock:
            self._spent[run] = float(spent_usd)
            self._reserved.pop(run, None)

    def reserve(self, run: str, usd: float | None) -> str | None:
        with self._lock:
            if self.cap_usd is not None:
                if usd is None:
                    return ("the sweep's --max-cost needs the model's price, and it is not in the "
                            "price table (prices.toml)")
                spent, held = sum(self._spent.values()), sum(self._reserved.values())
                if spent + held + usd > self.cap_usd + SLACK_USD:
                    return (f"the next LM call could pass the sweep's cost cap (${spent:.4f} spent "
                            f"by its runs, ${held:.4f} held by calls in flight, up to ${usd:.4f} "
                            f"for this call; --max-cost {self.cap_usd:g})")
            self._reserved[run] = self._reserved.get(run, 0.0) + (usd or 0.0)
            return None

    def settle(self, run: str, reserved_usd: float | None, spent_usd: float) -> None:
        with self._lock:
            left = self._reserved.get(run, 0.0) - (reserved_usd or 0.0)
            if left > SLACK_USD:
                self._reserved[run] = left
            else:
                self._reserved.pop(run, None)  # none left (or dropped by a join meanwhile)
            self._spent[run] = self._spent.get(run, 0.0) + float(spent_usd or 0.0)

    def raise_cap(self, cap_usd: float | None) -> None:
        with self._lock:
            self.cap_usd = cap_usd

    def get_resume(self) -> str | None:
        return self.resume

    def state(self) -> dict[str, Any]:
        with self._lock:
            runs = sorted(set(self._spent) | set(self._reserved))
            return {"cap_usd": self.cap_usd, "spent_usd": sum(self._spent.values()),
                    "reserved_usd": sum(self._reserved.values()),
                    "runs": {run: {"spent_usd": self._spent.get(run, 0.0),
                                   "reserved_usd": self._reserved.get(run, 0.0)} for run in runs}}


def run_spent(sweep: Sweep) -> dict[str, float]:
    """What each session of `sweep` spent, from its log, by folder name: every run (0 for one
    not started) and every transfer session there is."""
    spent = {}
    for key in sweep.spec.runs():
        for folder in (sweep.run_folder(key), sweep.transfer_folder(key)):
            if (folder / DB_NAME).exists():
                spent[folder.name] = session_spent(folder)
        spent.setdefault(key.name, 0.0)
    return spent


def session_spent(folder: Path) -> float:
    """What the session in `folder` spent on its LM, as its log says (lm/caps.py)."""
    store = SessionStore(folder, readonly=True)
    try:
        return logged_cost_usd(e.data for e in store.events(kinds=(ev.BUDGET,)))
    finally:
        store.close()


def resume_command(sweep: Sweep) -> str:
    return f"stop-tui sweep --resume {cli_name(sweep.folder)}"


def pool_from_logs(sweep: Sweep, cap_usd: float | None) -> CostPool:
    """The pool of `sweep` with cap `cap_usd`, the spend of every run read from its log."""
    return CostPool(cap_usd, run_spent(sweep), resume_command(sweep))


# -- Ray ------------------------------------------------------------------------------------
class _PoolActor(CostPool):
    """The actor: made from the sweep's logs, so that Ray restarting it (its node died) starts
    from what the runs recorded. Its calls run one at a time (one thread, in order)."""

    def __init__(self, sweep: Sweep, cap_usd: float | None, resume: str) -> None:
        super().__init__(cap_usd, run_spent(sweep), resume)


def ray_actor():
    """The Ray actor class of the pool (needs no CPU: it only counts)."""
    import ray

    return ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)(_PoolActor)


def make_pool(sweep: Sweep, cap_usd: float | None):
    """A Ray actor handle of `sweep`'s pool (call from the driver, after ray.init). It lives as
    long as the driver; pass the handle to every run's task and `bind` it there."""
    sweep = replace(sweep, folder=sweep.folder.resolve())  # the actor may run elsewhere
    return ray_actor().remote(sweep, cap_usd, resume_command(sweep))


@dataclass
class _LocalBudget:
    pool: CostPool
    run: str

    @property
    def resume(self) -> str | None:
        return self.pool.resume

    def join(self, spent_usd: float) -> None:
        self.pool.join(self.run, spent_usd)

    def reserve(self, usd: float | None) -> str | None:
        return self.pool.reserve(self.run, usd)

    def settle(self, reserved_usd: float | None, spent_usd: float) -> None:
        self.pool.settle(self.run, reserved_usd, spent_usd)


class _RayBudget:
    """A run's side of the actor: every call waits for its answer (so they stay in order). A
    pool that cannot be reached grants nothing: the run pauses at its next call."""

    def __init__(self, handle, run: str) -> None:
        import ray

        self._ray, self.handle, self.run = ray, handle, run
        self.resume = ray.get(handle.get_resume.remote())

    def join(self, spent_usd: float) -> None:
        self._ray.get(self.handle.join.remote(self.run, spent_usd))

    def reserve(self, usd: float | None) -> str | None:
        try:
            return self._ray.get(self.handle.reserve.remote(self.run, usd))
        except self._ray.exceptions.RayError as exc:
            return f"the sweep's cost pool does not answer ({type(exc).__name__})"

    def settle(self, reserved_usd: float | None, spent_usd: float) -> None:
        try:
            self._ray.get(self.handle.settle.remote(self.run, reserved_usd, spent_usd))
        except self._ray.exceptions.RayError:
            pass  # the pool is gone: the next reserve is refused


def bind(pool, run: str):
    """The SharedBudget (lm/caps.py) of run `run` on `pool`: a CostPool, or a handle from
    make_pool. Pass it as `shared=` to new_session / open_session."""
    if isinstance(pool, CostPool):
        return _LocalBudget(pool, run)
    return _RayBudget(pool, run)
