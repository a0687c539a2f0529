"""What any reader shows of a sweep (`stop-tui list`, `show SWEEP`, the sweep's progress, the
TUI's table of runs): one `RunStatus` per run, read from the run's session folder alone.

A run's state:
    pending   no session yet (or one that never started an iteration)
    running   a process holds its lock (engine/lock.py)
    failed    its log's last ERROR event came after its last SESSION_STARTED / RESUMED / finish
    finished  its log says SESSION_FINISHED
    capped    paused by a cap (the PAUSED event names the cap)
    paused    paused otherwise (stopped by the user, the LM server kept failing), or a run whose
              process died mid-iteration (no one holds its lock): resuming continues it

Reading is cheap to repeat: a `StatusReader` keeps each run's `History` and, on the next call,
folds only the events committed since (and reads nothing when neither `session.db` nor its
`-wal` file changed size or time). Nothing here creates or changes a file.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from stop_tui.engine import events as ev
from stop_tui.engine.errors import UserError
from stop_tui.engine.history import History
from stop_tui.engine.lock import holder
from stop_tui.engine.report.aggregate import GAIN
from stop_tui.engine.settings import preset
from stop_tui.engine.stats import mean_ci
from stop_tui.engine.store import DB_NAME, SessionStore, SessionUnreadable
from stop_tui.engine.sweep.layout import RunKey, Sweep, list_sweeps, read_sweep

STATES = ("pending", "running", "paused", "capped", "failed", "finished")
_TICK_NS = 100_000_000  # a file changed this recently is read again on the next call
INTERRUPTED = "interrupted (no process runs it); resuming continues it"


@dataclass(frozen=True)
class RunStatus:
    key: RunKey
    folder: Path
    state: str  # one of STATES
    iteration: int  # iterations completed
    iterations: int  # planned (the run's settings; the spec's until it exists)
    best: float | None  # best val meta-utility so far (None before the seed improver scored)
    cost_usd: float | None  # the run's own LM spend (None: an unpriced model, or no session yet)
    tokens: int  # prompt + completion tokens
    calls: int
    reason: str | None  # why paused / capped / failed
    transfer: str | None  # the state of its transfer session (None: none asked)
    holder: dict[str, Any] | None = None  # who runs it now ({pid, host, since}), if anyone
    transfer_cost_usd: float | None = None  # the transfer session's LM use
    transfer_tokens: int = 0
    transfer_calls: int = 0
    seed_best: float | None = None  # the seed improver's val meta-utility (T=0), None before
    final: float | None = None  # the val meta-utility of the improver held last (I_T so far)

    @property
    def name(self) -> str:
        return self.key.name

    @property
    def reason_line(self) -> str | None:
        """The reason's first line (a failure's message is followed by its traceback)."""
        return self.reason.strip().splitlines()[0] if self.reason and self.reason.strip() else None

    def to_dict(self) -> dict[str, Any]:
        return {"run": self.key.name, "task": self.key.task, "model": self.key.model,
                "seed": self.key.seed, "folder": str(self.folder), "state": self.state,
                "iteration": self.iteration, "iterations": self.iterations, "best": self.best,
                "cost_usd": self.cost_usd, "tokens": self.tokens, "calls": self.calls,
                "reason": self.reason, "transfer": self.transfer, "holder": self.holder,
                "transfer_cost_usd": self.transfer_cost_usd, "transfer_tokens": self.transfer_tokens,
                "transfer_calls": self.transfer_calls, "seed_best": self.seed_best,
                "final": self.final}


@dataclass(frozen=True)
class _Seen:
    """What one session's log says, as of the last read."""

    state: str
    iteration: int = 0
    iterations: int | None = None
    best: float | None = None
    seed_best: float | None = None
    final: float | None = None
    cost_usd: float | None = None
    tokens: int = 0
    calls: int = 0
    reason: str | None = None


_PENDING = _Seen("pending")


class SessionLog:
    """One session folder, read incrementally: the History so far and the few events that
    decide its state (the last start, finish, error and pause). Also read by the TUI's compare
    screen (engine/report/live.py)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._reset()

    def _reset(self, inode: int | None = None) -> None:
        self.signature: tuple | None = None
        self.inode = inode
        self.history = History()
        self.meta: dict[str, Any] = {}
        self.started = self.finished = self.errored = 0  # seq of the last such event
        self.error: str | None = None
        self.last_error: ev.Event | None = None  # the last ERROR event
        self.unreadable: str | None = None  # why the log cannot be read, if it cannot
        self.cap: str | None = None  # the last PAUSED event's cap
        self.seen = _PENDING

    def read(self) -> _Seen:
        db = self.folder / DB_NAME
        try:
            st = db.stat()
        except OSError:
            self._reset()
            return _PENDING
        signature = (st.st_ino, st.st_mtime_ns, st.st_size, *_stat(db.with_name(DB_NAME + "-wal")))
        if signature == self.signature:
            return self.seen
        if st.st_ino != self.inode:  # a new database in the folder: start over
            self._reset(st.st_ino)
        try:
            store = SessionStore(self.folder, readonly=True)
            try:
                self.meta = store.meta()
                for event in store.events(after=self.history.last_seq):
                    self._fold(event)
            finally:
                store.close()
        except SessionUnreadable as exc:
            self.unreadable = exc.reason
            self.signature, self.seen = signature, _Seen("failed", reason=f"unreadable: {exc.reason}")
            return self.seen
        except UserError:  # locked by a foreign program for a moment: what was read before stands
            return self.seen
        self.unreadable = None
        # A file's time has a coarse tick: a commit in the same tick as this read, of the same
        # size (a WAL that wrapped), would leave the signature as it is. Read again next time.
        recent = time.time_ns() - max(signature[1], signature[3]) < _TICK_NS
        self.signature, self.seen = None if recent else signature, self._summary()
        return self.seen

    def _fold(self, event: ev.Event) -> None:
        self.history.add(event)
        kind = event.kind
        if kind in (ev.SESSION_STARTED, ev.RESUMED):
            self.started, self.cap = event.seq, None
        elif kind == ev.SESSION_FINISHED:
            self.finished = event.seq
        elif kind == ev.ERROR:
            self.errored, self.error, self.last_error = event.seq, event.payload.message, event
        elif kind == ev.PAUSED:
            self.cap = event.payload.cap

    def _summary(self) -> _Seen:
        h = self.history
        lm = h.lm_totals
        planned = (self.meta.get("settings") or {}).get("iterations")
        common = {"iteration": h.iterations_done,
                  "iterations": planned if isinstance(planned, int) else None,
                  "best": h.best_meta_utility, "seed_best": h.seed_meta_utility,
                  "final": _last_scored([h.seed_meta_utility, *h.meta_utility]),
                  "cost_usd": _cost(lm.get("cost_usd")),
                  "tokens": int(lm.get("prompt_tokens") or 0) + int(lm.get("completion_tokens") or 0),
                  "calls": int(lm.get("calls") or 0)}
        if self.errored > max(self.started, self.finished):
            return _Seen("failed", reason=self.error, **common)
        if h.state == "finished":
            return _Seen("finished", **common)
        if h.state == "paused":
            return _Seen("capped" if self.cap else "paused", reason=h.paused_reason, **common)
        if h.state == "running":  # its process died mid-iteration
            return _Seen("paused", reason=INTERRUPTED, **common)
        return _Seen("pending", **common)


def _last_scored(values: list[float | None]) -> float | None:
    scored = [v for v in values if v is not None]
    return scored[-1] if scored else None


def _cost(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _stat(path: Path) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return (0, -1)
    return (st.st_mtime_ns, st.st_size)


def _planned(sweep: Sweep) -> int:
    if sweep.spec.iterations is not None:
        return sweep.spec.iterations
    try:
        return preset(sweep.spec.preset or "paper").iterations
    except UserError:
        return 0


class StatusReader:
    """`status()` of one sweep, as often as wanted: only what changed since the last call is
    read (one reader per thread)."""

    def __init__(self, sweep: Sweep) -> None:
        self.sweep = sweep
        self._logs: dict[Path, SessionLog] = {}

    def _seen(self, folder: Path) -> tuple[_Seen, dict[str, Any] | None]:
        log = self._logs.get(folder)
        if log is None:
            log = self._logs[folder] = SessionLog(folder)
        who = holder(folder)  # first: once it is gone, the log read after it has its last events
        seen = log.read()
        if who is not None:
            return replace(seen, state="running", reason=None), who
        return seen, None

    def status(self) -> list[RunStatus]:
        sweep, planned = self.sweep, _planned(self.sweep)
        out = []
        for key in sweep.spec.runs():
            folder = sweep.run_folder(key)
            seen, who = self._seen(folder)
            transfer, t = None, _PENDING
            if sweep.spec.transfer:
                t, _who = self._seen(sweep.transfer_folder(key))
                transfer = t.state
            out.append(RunStatus(
                key=key, folder=folder, state=seen.state, iteration=seen.iteration,
                iterations=seen.iterations if seen.iterations is not None else planned,
                best=seen.best, cost_usd=seen.cost_usd, tokens=seen.tokens, calls=seen.calls,
                reason=seen.reason, transfer=transfer, holder=who, transfer_cost_usd=t.cost_usd,
                transfer_tokens=t.tokens, transfer_calls=t.calls, seed_best=seen.seed_best,
                final=seen.final))
        return out


def sweep_status(sweep: Sweep) -> list[RunStatus]:
    """One RunStatus per `sweep.spec.runs()`, in that order (read afresh)."""
    return StatusReader(sweep).status()


def totals(runs: list[RunStatus]) -> dict[str, Any]:
    """{"runs": N, one count per state (STATES), "cost_usd", "tokens", "calls", "transfers"
    (the transfers of the finished runs, per state)}: spend and use summed over the runs and their transfers
    (cost_usd None when no run has a priced spend)."""
    out: dict[str, Any] = {"runs": len(runs), **dict.fromkeys(STATES, 0)}
    costs = [c for r in runs for c in (r.cost_usd, r.transfer_cost_usd) if c is not None]
    transfers: dict[str, int] = {}
    for r in runs:
        out[r.state] += 1
        if r.transfer is not None and r.state == "finished":  # a transfer follows its finished run
            transfers[r.transfer] = transfers.get(r.transfer, 0) + 1
    out["cost_usd"] = round(sum(costs), 6) if costs else None
    out["tokens"] = sum(r.tokens + r.transfer_tokens for r in runs)
    out["calls"] = sum(r.calls + r.transfer_calls for r in runs)
    out["transfers"] = transfers
    return out


def states_line(counts: dict[str, Any]) -> str:
    """'2 finished, 1 running, 1 pending' (the states with runs, in STATES order reversed)."""
    parts = [f"{counts[s]} {s}" for s in reversed(STATES) if counts.get(s)]
    return ", ".join(parts) or "no runs"


def sweep_state(counts: dict[str, Any]) -> str:
    """The sweep's one word, from `totals()`: finished (every run and every transfer asked
    finished), failed (every run ended, some failed), running (a run or a transfer is), capped
    (one waits on a cap), pending (nothing started), else paused (nothing runs: `stop-tui sweep
    --resume` continues it)."""
    runs, transfers = counts.get("runs", 0), counts.get("transfers") or {}
    ended = counts.get("finished", 0) + counts.get("failed", 0)
    transfers_ended = sum(transfers.values()) == transfers.get("finished", 0) + transfers.get("failed", 0)
    if runs and ended == runs and transfers_ended:
        return "failed" if counts.get("failed") or transfers.get("failed") else "finished"
    if counts.get("running") or transfers.get("running"):
        return "running"
    if counts.get("capped") or transfers.get("capped"):
        return "capped"
    if counts.get("pending", 0) == runs:
        return "pending"
    return "paused"


def best_of(runs: list[RunStatus]) -> float | None:
    """The best val meta-utility over the runs (None before any scored)."""
    scored = [r.best for r in runs if r.best is not None]
    return max(scored) if scored else None


def by_model(runs: list[RunStatus]) -> list[dict[str, Any]]:
    """Per (task, model), over its finished runs: how many, the mean best val meta-utility with
    its 95 % interval, the mean gain of its final improver over the seed improver, and how many
    gained GAIN or more (report/aggregate.py: the same rule as `stop-tui report`)."""
    groups: dict[tuple[str, str], list[RunStatus]] = {}
    for r in runs:
        groups.setdefault((r.key.task, r.key.model), []).append(r)
    out = []
    for (task, model), group in groups.items():
        done = [r for r in group if r.state == "finished" and r.best is not None]
        gains = [r.final - r.seed_best for r in done if r.seed_best is not None and r.final is not None]
        best_mean, best_ci = mean_ci([r.best for r in done])
        gain_mean = sum(gains) / len(gains) if gains else None  # (may be negative: no clipped interval)
        out.append({"task": task, "model": model, "runs": len(group), "finished": len(done),
                    "best_mean": best_mean, "best_ci": best_ci, "gain_mean": gain_mean,
                    "gained": sum(g >= GAIN - 1e-12 for g in gains), "gain_threshold": GAIN})
    return out


def sweep_summary(sweep: Sweep, runs: list[RunStatus] | None = None) -> dict[str, Any]:
    """The sweep, its totals and its runs (`show SWEEP --json`, list rows, the TUI's picker)."""
    runs = sweep_status(sweep) if runs is None else runs
    counts = totals(runs)
    return {"sweep": sweep.id, "kind": "sweep", "folder": str(sweep.folder.resolve()),
            "created": sweep.created, "state": sweep_state(counts), "spec": sweep.spec.to_dict(),
            "best_meta_utility": best_of(runs), "totals": counts, "by_model": by_model(runs),
            "runs": [r.to_dict() for r in runs]}


def sweep_summaries(sessions_dir: Path) -> Iterator[tuple[Path, dict[str, Any] | None, str | None]]:
    """(folder, summary, None) for each sweep in `sessions_dir`, oldest first; (folder, None,
    reason) for one whose sweep.json cannot be read (the others are still listed)."""
    for folder in list_sweeps(sessions_dir):
        try:
            sweep = read_sweep(folder)
        except UserError as exc:
            yield folder, None, str(exc)
            continue
        yield folder, sweep_summary(sweep), None
