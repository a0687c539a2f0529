"""Transfer: does an improver carry over to other tasks? (the paper's transfer table,
arXiv 2310.02304)

For each downstream task it measures three things, in the paper's order:
  u(s)    the task's seed solution, scored by the executed utility;
  û(I0)   the seed improver's meta-utility on that task;
  û(IT)   the given improver's meta-utility on that task.
Each is measured `runs` times. One run of û is one `Engine.meta_score` call (`meta_runs`
improver runs, each with a fresh LM budget); the 95 % interval is taken over the individual
improver runs (their downstream scores), for u(s) over the runs. The headline split is test,
as in the paper's table; val is reported beside it.

The tasks are measured side by side (`lanes_at_once` of them: as many as it takes for their
improver runs to fill the LM requests allowed in flight, `--max-concurrency`), each task's units
in the order above, so one task's LM calls go out while another's programs are scored; the
table keeps the order the tasks were asked in.

Everything is recorded in a session (meta kind "transfer"): the engine's own events for every
LM call and improver run, plus one `transfer_started` / `transfer_scored` pair per task /
improver / run, so a long run shows progress and a resume skips what is done.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stop_tui.engine import candidate_rng
from stop_tui.engine import events as ev
from stop_tui.engine.errors import Cancelled, UserError
from stop_tui.engine.gate import ITERATION
from stop_tui.engine.history import History
from stop_tui.engine.lock import acquire
from stop_tui.engine.report.paper import transfer_table
from stop_tui.engine.resume import effective, last_totals
from stop_tui.engine.settings import Settings
from stop_tui.engine.stats import mean_ci
from stop_tui.engine.store import SessionStore, SessionUnreadable, cli_name, session_folder
from stop_tui.engine.tasks import downstream_names, load_task, parse_settings

if TYPE_CHECKING:
    from stop_tui.engine.lm.caps import SharedBudget
    from stop_tui.engine.session import Session

KIND = "transfer"
WHO = ("seed_solution", "seed_improver", "improver")
LABELS = {"seed_solution": "u(s)", "seed_improver": "û(I0)", "improver": "û(IT)"}
DEFAULT_TASKS = ("grid", "mqa", "sat", "maxcut", "parity")

# The paper's transfer table (GPT-4, an improver self-improved on LPN only): u(s), û(I0), û(IT)
# per task, from engine/report/paper_numbers.toml (which says where in arXiv 2310.02304).
PAPER = transfer_table()

Echo = Callable[[str], None]


# -- the improver to evaluate --------------------------------------------------------------

def resolve_improver(spec: str, sessions_dir: Path) -> tuple[str, str]:
    """(source, description) for FILE, SESSION or SESSION:ITERATION (the improver the session
    held after that iteration; without one, its current improver)."""
    path = Path(spec)
    if path.is_file():
        try:
            source = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read {path}: {exc}") from None
        if "improve_algorithm" not in source:
            raise UserError(f"{path} defines no improve_algorithm(initial_solution, utility, language_model)")
        return source, str(path)
    session, iteration = spec, None
    head, sep, tail = spec.rpartition(":")
    if sep and tail.isdigit():
        session, iteration = head, int(tail)
    try:
        store = SessionStore.open(sessions_dir, session, readonly=True)
    except SessionUnreadable:
        raise
    except UserError:
        raise UserError(f"--improver {spec!r} is neither a file nor a session in {sessions_dir}") from None
    try:
        store.verify()
        history = History.read(store)
        done = [row.iteration for row in history.iterations]
        if not done:
            raise UserError(f"session {store.id} has no scored improver yet")
        if iteration is None:
            iteration = done[-1]
        if iteration not in done:
            raise UserError(f"session {store.id} has no iteration {iteration} "
                            f"(done: {', '.join(map(str, done))})")
        source = store.text(history.held_improver(iteration))
        if not source:
            raise UserError(f"session {store.id}: the improver of iteration {iteration} is missing")
        return source, f"{store.id}:{iteration}"
    finally:
        store.close()


# -- the session -----------------------------------------------------------------------------

@dataclass
class Plan:
    tasks: list[str]
    runs: int
    improver: str  # its source
    improver_label: str  # FILE or SESSION:ITERATION, as resolved
    task_settings: dict[str, Any] = field(default_factory=dict)  # --set, applied where a task has it


def make_plan(tasks: list[str], runs: int, improver: str, sessions_dir: Path,
              task_settings: list[str]) -> Plan:
    """The plan of a new transfer: downstream `tasks` only, the improver resolved (FILE,
    SESSION or SESSION:ITERATION), `task_settings` (KEY=VALUE) parsed against the tasks."""
    for name in tasks:
        if load_task(name).kind != "solution":
            raise UserError(f"{name} is not a downstream task (tasks: {', '.join(downstream_names())})")
    source, label = resolve_improver(improver, sessions_dir)
    overrides = parse_settings(task_settings, [load_task(name) for name in tasks])
    return Plan(tasks, runs, source, label, overrides)


@dataclass
class Outcome:
    state: str  # "finished", "cancelled" (the user stopped it) or "capped" (the LM service paused it)
    rows: list[dict[str, Any]]
    paused_reason: str | None = None  # when capped: the PAUSED event's reason


@dataclass
class Transfer:
    session: Session
    plan: Plan

    @property
    def resume_command(self) -> str:
        return f"stop-tui transfer --resume {cli_name(self.session.store.folder)}"

    def run(self, echo: Echo | None = None) -> Outcome:
        """Measure what is not recorded yet, then the table (TRANSFER_FINISHED). A ctrl+c or a stop of
        the LM service (a cap, a failing server) leaves the session paused; closes the session."""
        store, session = self.session.store, self.session
        try:
            execute(session, self.plan, echo)
            table = rows(store, self.plan)
            store.append(ev.event(ev.TransferFinished(rows=table)))
            store.append(ev.event(ev.SessionFinished(iterations_completed=0, reason="done")))
            return Outcome("finished", table)
        except KeyboardInterrupt:
            session.gate.cancel()
            store.append(ev.event(ev.Paused(reason="stopped by the user; resume to continue")))
            if echo:
                echo(f"stopped; continue with: {self.resume_command}")
            return Outcome("cancelled", rows(store, self.plan))
        except Cancelled:
            paused = session.engine.pause_if_stopped(self.resume_command, switch="add --base-url URL")
            return Outcome("capped" if paused is not None else "cancelled", rows(store, self.plan), paused)
        finally:
            session.close()


def start(sessions_dir: Path, plan: Plan, settings: Settings, backend, base_url: str | None,
          name: str | None = None, shared: SharedBudget | None = None) -> Transfer:
    """A new transfer session (locked by this process) for `plan`; `name`: its folder's name
    (default: the time, then `-transfer`; a sweep names a run's transfer after the run);
    `shared`: a sweep's cost pool (wire_session)."""
    from stop_tui.engine.session import wire_session

    store = SessionStore.create(sessions_dir, {
        "kind": KIND, "task": ",".join(plan.tasks), "tasks": plan.tasks, "runs": plan.runs,
        "model": backend.model, "settings": settings.to_dict(), "base_url": base_url,
        "improver": None, "improver_label": plan.improver_label, "task_settings": plan.task_settings,
        **candidate_rng.session_meta(settings.seed),
    }, name=name or datetime.now(UTC).strftime("%Y%m%d-%H%M%S") + "-transfer")
    lock = acquire(store.folder)
    store.set_meta({"improver": store.put_text(plan.improver)})
    store.append(ev.event(ev.SessionStarted(task=",".join(plan.tasks), model=backend.model,
                                            settings=settings.to_dict(), resumed=False, kind=KIND)))
    return Transfer(wire_session(store, settings, plan.tasks[0], backend, lock=lock, shared=shared), plan)


def reopen(sessions_dir: Path, session_id: str, base_url: str | None = None,
           shared: SharedBudget | None = None) -> Transfer:
    """A saved transfer session, locked, its LM totals and record restored (a unit cut short
    gets the answers it already paid for from the record, not the server): the recorded model,
    on `base_url` when given, else on the recorded server. `shared`: a sweep's cost pool."""
    from stop_tui.engine.session import claim, make_backend, wire_session

    lock = claim(session_folder(sessions_dir, session_id))  # released by Session.close()
    store = SessionStore(lock.folder)
    meta = store.meta()
    if meta.get("kind") != KIND:
        store.close()
        lock.release()
        raise UserError(f"session {store.id} is not a transfer session")
    plan = Plan(meta["tasks"], int(meta["runs"]), store.text(meta["improver"]) or "",
                meta.get("improver_label", "?"), meta.get("task_settings", {}))
    settings = Settings.from_dict(meta.get("settings", {}))
    backend = make_backend(meta.get("model", "local"), base_url or meta.get("base_url"))
    session = wire_session(store, settings, plan.tasks[0], backend, lock=lock, shared=shared)
    restore_lm(session)
    return Transfer(session, plan)


def restore_lm(session: Session) -> None:
    """On resume: the session's LM totals so far, and its record (RESUMED)."""
    from stop_tui.engine.lm.record import Book

    store, lm = session.store, session.engine.lm
    events = list(store.events())
    lm.restore(last_totals(effective(events)), Book.from_events(events, store.text))
    store.append(ev.event(ev.Resumed(kind=KIND)))


# -- measuring -------------------------------------------------------------------------------

def recorded(store: SessionStore) -> dict[tuple[str, str, int], ev.TransferScored]:
    """Each measured (task, who, run) unit's scores."""
    return recorded_in(store.events(kinds=(ev.TRANSFER_SCORED,)))


def recorded_in(events: Iterable[ev.Event]) -> dict[tuple[str, str, int], ev.TransferScored]:
    """`recorded` from a session's events (a reader that has them already: `stop-tui report`)."""
    return {(e.payload.task, e.payload.who, int(e.payload.run)): e.payload
            for e in events if e.kind == ev.TRANSFER_SCORED}


def lanes_at_once(settings: Settings, tasks: int) -> int:
    """How many tasks are measured at once: enough that the improver runs in flight (each
    unit of û runs `meta_runs` of them) can fill the LM requests allowed in flight
    (`max_concurrency`), which the LM service enforces session-wide; at least one task."""
    return max(1, min(tasks, math.ceil(settings.max_concurrency / max(1, settings.meta_runs))))


def execute(session: Session, plan: Plan, echo: Echo | None = None) -> None:
    """Measure every (task, who, run) not yet recorded; each is committed as it completes.
    The tasks are measured side by side (`lanes_at_once`; one thread per task, each in the
    paper's order: u(s), then û(I0), then û(IT)), so that one task's LM calls go out while
    another's programs are scored. Every unit passes the gate first (as an iteration does),
    so a stop lands between units; when one task stops (a stop, a cap, a failing server, an
    error) the others stop too, and this returns when all have ended."""
    done = recorded(session.store)
    width = lanes_at_once(session.settings, len(plan.tasks))
    with ThreadPoolExecutor(max_workers=width, thread_name_prefix="transfer") as pool:
        lanes = [pool.submit(_measure_task, session, plan, name, done, echo) for name in plan.tasks]
        try:
            first = wait(lanes, return_when=FIRST_EXCEPTION)
        except BaseException:  # ctrl+c in this thread: every task stops at its next gate or call
            session.gate.cancel()
            wait(lanes)
            raise
        failed = [f for f in first.done if not f.cancelled() and f.exception() is not None]
        if failed:
            for lane in lanes:
                lane.cancel()  # tasks not started yet never start
            session.gate.cancel()
            wait(lanes)
            # A real failure before the Cancelled it caused in the other tasks.
            errors = [f.exception() for f in lanes if not f.cancelled() and f.exception() is not None]
            raise next((e for e in errors if not isinstance(e, Cancelled)), errors[0])


def _measure_task(session: Session, plan: Plan, name: str,
                  done: dict[tuple[str, str, int], ev.TransferScored], echo: Echo | None) -> None:
    """One task's units in order, those not in `done`."""
    store, gate = session.store, session.gate
    task = load_task(name)
    known = {k: v for k, v in plan.task_settings.items() if k in task.settings}
    if known:
        task = replace(task, settings={**task.settings, **known})
    engine = session.engine_for(task)
    for who in WHO:
        for k in range(1, plan.runs + 1):
            if (name, who, k) in done:
                continue
            gate.passage(ITERATION)
            path = f"{name}/{who}/n{k}"
            store.append(ev.event(ev.TransferStarted(task=name, who=who, run=k), path))
            if echo:
                echo(f"{name}: {LABELS[who]} run {k}/{plan.runs} ...")
            if who == "seed_solution":
                val, test = engine.score_val_and_test(task.seed, f"{path}/val", f"{path}/test")
                scored = ev.TransferScored(task=name, who=who, run=k, val=val, test=test)
            else:
                source = engine.meta.seed if who == "seed_improver" else plan.improver
                result = engine.meta_score(source, path, with_test=True)
                scored = ev.TransferScored(
                    task=name, who=who, run=k, val=result.val, test=result.test,
                    run_vals=[val for val, _ in result.runs], run_tests=[test for _, test in result.runs],
                    errors=result.errors[:5])
            store.append(ev.event(scored, path))
            if echo:
                echo(f"{name}: {LABELS[who]} run {k}/{plan.runs}: test {scored.test:.4f}, "
                     f"val {scored.val:.4f}")


def rows(store: SessionStore, plan: Plan) -> list[dict[str, Any]]:
    """The table: per task, each `who`'s test mean and 95 % interval (val beside it) over what
    is recorded, and the paper's numbers where it has them."""
    return table(recorded(store), plan.tasks, plan.runs)


def table(done: dict[tuple[str, str, int], ev.TransferScored], tasks: list[str], runs: int) -> list[dict[str, Any]]:
    """`rows` from the recorded units (`recorded`) of a transfer of `tasks`, `runs` each."""
    out = []
    for name in tasks:
        row: dict[str, Any] = {"task": name}
        for who in WHO:
            results = [done[(name, who, k)] for k in range(1, runs + 1) if (name, who, k) in done]
            if who == "seed_solution":
                tests = [r.test for r in results]
                vals = [r.val for r in results]
            else:  # each improver run's scores (a unit recorded without them: its mean)
                tests = [x for r in results for x in (r.run_tests if r.run_tests is not None else [r.test])]
                vals = [x for r in results for x in (r.run_vals if r.run_vals is not None else [r.val])]
            m, ci = mean_ci(tests)
            vm, vci = mean_ci(vals)
            row[who] = {"test": m, "ci95": ci, "val": vm, "val_ci95": vci, "n": len(tests),
                        "runs": len(results)}
        paper = PAPER.get(name)
        row["paper"] = dict(zip(WHO, paper, strict=True)) if paper else None
        out.append(row)
    return out
