"""One run of a sweep, as a Ray task runs it (driver.py submits them; nothing here imports Ray).

`run_one` opens the run's session by its folder name (a pure function of its (task, model,
seed): layout.RunKey.name) or creates it there, and runs it to its end or its cap. A task that
Ray retries after its worker died, or a `sweep --resume` after the driver died, finds the log
and resumes the session from it exactly (engine/resume.py: no request already answered is sent
again). A finished run is read, never written. A run whose own code fails has an ERROR event
recorded in its log (Ray does not retry it: `retry_exceptions=False`).

`transfer_one` does the same for the transfer evaluation of a finished run's final improver
(engine/transfer.py), in the folder `RunKey.transfer_name`.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from stop_tui.engine import events as ev
from stop_tui.engine.errors import UserError
from stop_tui.engine.history import History
from stop_tui.engine.lock import SessionBusy, acquire, holder
from stop_tui.engine.store import DB_NAME, SessionStore
from stop_tui.engine.sweep.layout import RunKey, Sweep, SweepSpec, read_sweep

# A session's lock can outlive its worker for a moment (the old worker still closing, or still
# running when the driver died and a resume started): how long a task waits for it.
BUSY_PATIENCE_S = 60.0

FINISHED = "finished"
FAILED = "failed"
UNREADABLE = "unreadable"


def run_settings(spec: SweepSpec, key: RunKey, *, iterations: bool = True,
                 max_concurrency: int | None = None):
    """The settings of run `key`: what `stop-tui run --preset P --seed S --iterations N` with
    the sweep's LM options gives (the sweep's --max-cost is the sweep's, not a session cap)."""
    from stop_tui.engine.session import session_settings

    lm = {k: v for k, v in spec.lm.items() if k != "cap_cost_usd"}
    if max_concurrency is not None:
        lm["max_concurrency"] = max_concurrency
    return session_settings(spec.preset or "paper", seed=key.seed,
                            iterations=spec.iterations if iterations else None, **lm)


def recorded_state(folder: Path) -> str | None:
    """The state a session's log records (new, running, paused, finished; "unreadable" for a
    damaged one); None: no session."""
    if not (Path(folder) / DB_NAME).exists():
        return None
    try:
        store = SessionStore(folder, readonly=True)
        try:
            return History.read(store).state
        finally:
            store.close()
    except UserError:
        return UNREADABLE


def run_one(sessions_dir: Path, sweep_id: str, key: RunKey, *, pool: Any = None,
            max_concurrency: int | None = None) -> dict[str, Any]:
    """Run (or continue) one run of a sweep to its end or its cap: {"run", "outcome", "summary"}
    (outcome: finished | capped | cancelled | failed; "error" when failed). `pool`: the sweep's
    cost pool (a Ray actor, cost_pool.py), `max_concurrency`: the run's LM requests in flight
    (its share of the endpoint)."""
    sweep = read_sweep(Path(sessions_dir) / sweep_id)
    folder = sweep.run_folder(key)
    if recorded_state(folder) == FINISHED:
        return _result(key.name, folder, FINISHED)
    try:
        session = _wait_free(lambda: _open_run(sweep, key, pool, max_concurrency), folder)
    except UserError as exc:
        return _failed(key.name, folder, str(exc))
    return _drive(key.name, session, lambda: _stoppable(session, session.engine.run))


def transfer_one(sessions_dir: Path, sweep_id: str, key: RunKey, *, pool: Any = None,
                 max_concurrency: int | None = None) -> dict[str, Any]:
    """The transfer evaluation of run `key`'s final improver on the sweep's --transfer tasks
    (what `stop-tui transfer --improver RUN --tasks ...` does), created or continued in its
    folder `key.transfer_name`."""
    sweep = read_sweep(Path(sessions_dir) / sweep_id)
    folder = sweep.transfer_folder(key)
    name = key.transfer_name
    if recorded_state(folder) == FINISHED:
        return _result(name, folder, FINISHED)
    try:
        job = _wait_free(lambda: _open_transfer(sweep, key, pool, max_concurrency), folder)
    except UserError as exc:
        return _failed(name, folder, str(exc))
    return _drive(name, job.session, lambda: _stoppable(job.session, lambda: job.run().state),
                  closes=True)  # job.run() closes the session


def finished_result(folder: Path) -> dict[str, Any]:
    """The result of a session already finished (read, not run)."""
    return _result(Path(folder).name, folder, FINISHED)


def read_marker(path: str) -> str:
    """The storage check's worker side: the marker the driver wrote, or why it cannot be read."""
    try:
        return Path(path).read_text()
    except OSError as exc:
        return f"cannot read {path} there: {exc.strerror or exc}"


def record_failure(folder: Path, message: str) -> bool:
    """An ERROR event in the log of the session in `folder` (when nobody runs it): the driver's
    record of a task Ray gave up on (its worker died more often than it retries)."""
    if not (Path(folder) / DB_NAME).exists() or holder(folder) is not None:
        return False
    try:
        lock = acquire(Path(folder))
    except SessionBusy:
        return False
    try:
        store = SessionStore(folder)
        try:
            store.append(ev.event(ev.Error(message=message)))
        finally:
            store.close()
    except UserError:  # a damaged session: left as it is (the result carries the message)
        return False
    finally:
        lock.release()
    return True


# -- opening ---------------------------------------------------------------------------------

def _open_run(sweep: Sweep, key: RunKey, pool: Any, max_concurrency: int | None):
    from stop_tui.engine.session import make_backend, new_session, open_session

    folder, spec = sweep.run_folder(key), sweep.spec
    shared = _shared(pool, key.name)
    if (folder / DB_NAME).exists():
        overrides = {"max_concurrency": max_concurrency} if max_concurrency is not None else None
        return open_session(sweep.folder, key.name, overrides=overrides, shared=shared)
    _clear_unborn(folder)
    settings = run_settings(spec, key, max_concurrency=max_concurrency)
    backend = make_backend(key.model, spec.base_url, sessions_dir=sweep.folder,
                           max_concurrency=settings.max_concurrency, timeout=settings.lm_timeout)
    return new_session(sweep.folder, key.task, settings, backend, base_url=spec.base_url,
                       name=key.name, shared=shared)


def _open_transfer(sweep: Sweep, key: RunKey, pool: Any, max_concurrency: int | None):
    from stop_tui.engine import transfer
    from stop_tui.engine.session import make_backend

    folder, spec = sweep.transfer_folder(key), sweep.spec
    shared = _shared(pool, key.transfer_name)
    if (folder / DB_NAME).exists():
        return transfer.reopen(sweep.folder, key.transfer_name, spec.base_url, shared=shared)
    _clear_unborn(folder)
    plan = transfer.make_plan(list(spec.transfer), 1, key.name, sweep.folder, [])
    settings = run_settings(spec, key, iterations=False, max_concurrency=max_concurrency)
    backend = make_backend(key.model, spec.base_url, sessions_dir=sweep.folder,
                           max_concurrency=settings.max_concurrency, timeout=settings.lm_timeout)
    return transfer.start(sweep.folder, plan, settings, backend, spec.base_url,
                          name=key.transfer_name, shared=shared)


def _shared(pool: Any, run: str):
    """The run's share of the sweep's cost pool (a SharedBudget, lm/caps.py); None: no pool."""
    if pool is None:
        return None
    from stop_tui.engine.sweep.cost_pool import bind

    return bind(pool, run)


def _clear_unborn(folder: Path) -> None:
    """A run folder left without session.db (its task died while creating it: SessionStore
    writes session.db whole, under another name first) is removed, so the run is created in
    it again instead of beside it (`<name>-2`)."""
    if folder.exists() and not (folder / DB_NAME).exists():
        if holder(folder) is not None:
            raise SessionBusy(folder, holder(folder))
        shutil.rmtree(folder)


def _wait_free(open_it, folder: Path, patience: float = BUSY_PATIENCE_S):
    """open_it(), waiting while the session's lock is held by another process (a worker that
    died has released it, or will in a moment)."""
    deadline = time.monotonic() + patience
    while True:
        try:
            return open_it()
        except SessionBusy:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


# -- running ---------------------------------------------------------------------------------

def _stoppable(session, run):
    """run() on a thread of its own; a KeyboardInterrupt here (the driver's `ray.cancel` of the
    task on ctrl+c) stops it as `stop-tui run`'s first ctrl+c does: the gate is cancelled, the
    LM calls in flight get their time to be recorded (they are paid for), the session pauses.
    So does the end of the worker's parent (the raylet of a local instance whose driver died)."""
    box: dict[str, Any] = {}
    done = threading.Event()  # not Thread.join: a join cut short by KeyboardInterrupt can
    # leave the thread reading as ended while it runs (CPython before 3.13)

    def target() -> None:
        try:
            box["outcome"] = run()
        except BaseException as exc:  # noqa: BLE001 - handed to the task's thread
            box["error"] = exc
        finally:
            done.set()

    parent = os.getppid()  # in a Ray worker: its raylet
    threading.Thread(target=target, name="sweep-run", daemon=True).start()
    while not done.is_set():
        try:
            done.wait(0.2)
        except KeyboardInterrupt:
            session.gate.cancel()
        if os.getppid() != parent:  # the raylet died (the driver's local instance ended): Ray
            session.gate.cancel()  # ends this worker in a few seconds; stop writing before
    if "error" in box:
        raise box["error"]
    return box["outcome"]


def _drive(name: str, session, run, *, closes: bool = False) -> dict[str, Any]:
    """run() -> its result; the run's own failure is recorded as an ERROR event (its first line
    the exception, then the traceback). `closes`: run() closes the session itself."""
    folder = session.store.folder
    try:
        outcome = run()
    except Exception as exc:  # noqa: BLE001 - the run's own failure: recorded, not retried
        message = str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
        detail = f"{message}\n{traceback.format_exc(limit=8)}"
        if closes:  # the session is closed and its lock released: written under a new lock
            record_failure(folder, detail)
        else:
            try:
                session.store.append(ev.event(ev.Error(message=detail)))
            finally:
                session.close()
        return _failed(name, folder, message, recorded=True)
    if not closes:
        session.close()
    return _result(name, folder, outcome)


def _failed(name: str, folder: Path, message: str, *, recorded: bool = False) -> dict[str, Any]:
    if not recorded:
        record_failure(folder, message)
    out = _result(name, folder, FAILED)
    out["error"] = message
    return out


def _result(name: str, folder: Path, outcome: str) -> dict[str, Any]:
    from stop_tui.engine.summary import read_summary

    summary = None
    if (Path(folder) / DB_NAME).exists():
        try:
            summary = read_summary(Path(folder))
        except UserError:
            pass  # a damaged session: no summary
    return {"run": name, "outcome": outcome, "summary": summary}
