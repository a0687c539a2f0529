"""`build_report(sessions_dir, names)`: the Report of sweeps and sessions, from their folders
alone (read-only: live sessions can be reported while they run).

- Runs are grouped by (task, model, preset) (aggregate.group: the curve with 95 % intervals
  over runs, the runs that gained at least 3 points over T=0).
- The transfer table, per (source task, model): for each downstream task, u(s), û(I0) and
  û(IT) on the test split, each an interval over the transfer sessions (one per run's improver:
  the session's mean over its improver runs), with the paper's numbers beside them.
- The safety table: the runs' audits (engine/audit.py) summed, per kind and role, with Wilson
  intervals; `use_sandbox_off` per model over the runs of the sandbox_flag_experiment, beside
  the paper's rate for that model.
- Spend per run and transfer session, and in total; runs that failed, cannot be read or have
  not started, with the reason.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stop_tui.engine import events as ev
from stop_tui.engine.audit import ROLES, audit_events, summed
from stop_tui.engine.history import History
from stop_tui.engine.report import paper
from stop_tui.engine.report.aggregate import group_key, groups, interval
from stop_tui.engine.report.collect import read_log, row_of
from stop_tui.engine.report.model import Group, Report, RunRow, SafetyRow, Spend, TransferRow
from stop_tui.engine.report.targets import NOT_STARTED, UNREADABLE, Target, resolve
from stop_tui.engine.stats import wilson
from stop_tui.engine.store import DB_NAME, SessionStore, SessionUnreadable
from stop_tui.engine.transfer import WHO, recorded_in, table

ANY = "any kind"
USE_SANDBOX_OFF = "use_sandbox_off"


def _source_task(folder: Path, meta: dict[str, Any]) -> str:
    """The task the evaluated improver was self-improved on: the task of the session its label
    names (SESSION:ITERATION, beside the transfer session: a sweep's run), else the label (a file)."""
    label = str(meta.get("improver_label") or "?")
    session, sep, tail = label.rpartition(":")
    if not (sep and tail.isdigit()):
        session = label
    run = folder.parent / session
    if session and (run / DB_NAME).exists():
        try:
            store = SessionStore(run, readonly=True)
            try:
                return str(store.meta().get("task"))
            finally:
                store.close()
        except SessionUnreadable:
            pass
    return label


def _unreadable(target: Target, reason: str | None, failed: list[tuple[str, str]]) -> None:
    """A sweep's run that cannot be read is listed; a session named on its own is an error."""
    if not target.in_sweep:
        raise SessionUnreadable(target.id, reason or "unreadable")
    failed.append((target.id, f"unreadable: {reason}"))


def _read(target: Target, failed: list[tuple[str, str]]) -> tuple[RunRow, dict[str, Any], list[ev.Event]] | None:
    """(RunRow, meta, events) of the target's session, read once (read-only); None when it
    cannot be read (listed in `failed`, or an error when it was named on its own)."""
    if target.kind == UNREADABLE:
        _unreadable(target, target.reason, failed)
        return None
    try:
        meta, events = read_log(target.folder)
    except SessionUnreadable as exc:
        _unreadable(target, exc.reason, failed)
        return None
    row = row_of(target.id, target.folder, History(events, session_id=target.id), meta, events)
    if row.failed:
        failed.append((target.id, row.failed))
    return row, meta, events


def _groups(runs: Sequence[Target], failed: list[tuple[str, str]]) -> tuple[list[Group], dict[str, list[dict]]]:
    keyed: list[tuple[tuple[str, str, str | None], RunRow]] = []
    audits: dict[str, list[dict]] = defaultdict(list)  # model -> its runs' audits
    for target in runs:
        if target.kind == NOT_STARTED:
            failed.append((target.id, "not started yet"))
            continue
        read = _read(target, failed)
        if read is None:
            continue
        row, meta, events = read
        model = str(meta.get("model"))
        keyed.append((group_key(meta), row))
        audits[model].append(audit_events(events))
    return groups(keyed), audits


def _transfers(targets: Sequence[Target], failed: list[tuple[str, str]]):
    sessions: list[RunRow] = []
    means: dict[tuple[str, str], dict[str, dict[str, list[float]]]] = {}
    for target in targets:
        read = _read(target, failed)
        if read is None:
            continue
        row, meta, events = read
        sessions.append(row)
        per_task = means.setdefault((_source_task(target.folder, meta), str(meta.get("model"))), {})
        for line in table(recorded_in(events), list(meta.get("tasks") or []), int(meta.get("runs") or 0)):
            slot = per_task.setdefault(line["task"], {who: [] for who in WHO})
            for who in WHO:
                if line[who]["test"] is not None:
                    slot[who].append(line[who]["test"])
    known, source = paper.transfer_table(), paper.transfer_source()
    rows = {key: tuple(TransferRow(task=task, seed_solution=interval(w["seed_solution"]),
                                   seed_improver=interval(w["seed_improver"]), improver=interval(w["improver"]),
                                   paper=known.get(task), paper_source=source if task in known else None)
                       for task, w in per_task.items())
            for key, per_task in sorted(means.items())}
    return rows, sessions


def _safety_row(kind: str, role: str, attempts: int, candidates: int, **extra: Any) -> SafetyRow:
    lo, hi = wilson(attempts, candidates)
    return SafetyRow(kind=kind, role=role, attempts=attempts, candidates=candidates,
                     rate=attempts / candidates if candidates else None, lo=lo, hi=hi, **extra)


def _safety(audits: dict[str, list[dict]]) -> tuple[SafetyRow, ...]:
    total = summed([a for model in sorted(audits) for a in audits[model]])
    rows = [_safety_row(k["kind"], role, k[role]["attempts"], k[role]["candidates"])
            for k in total["kinds"] for role in ROLES]
    rows += [_safety_row(ANY, role, total["flagged"][role]["attempts"], total["flagged"][role]["candidates"])
             for role in ROLES]
    for model in sorted(audits):
        off = summed(audits[model])["use_sandbox_off"]
        rows.append(_safety_row(USE_SANDBOX_OFF, "improver", off["attempts"], off["candidates"], model=model,
                                paper=paper.use_sandbox_off(model), paper_source=paper.use_sandbox_off_source()))
    return tuple(rows)


def build_report(sessions_dir: Path, names: Sequence[str]) -> Report:
    """The report of `names` (sweeps and sessions: engine/report/targets.py); UserError on bad input."""
    targets = resolve(Path(sessions_dir), list(names))
    failed: list[tuple[str, str]] = []
    groups, audits = _groups(targets.runs, failed)
    transfer, transfer_sessions = _transfers(targets.transfers, failed)
    rows = [r for g in groups for r in g.runs] + transfer_sessions
    spend = Spend(calls=sum(r.calls for r in rows), tokens=sum(r.tokens for r in rows),
                  dollars=sum(r.dollars for r in rows))
    return Report(title=targets.title, groups=tuple(groups), transfer=transfer, safety=_safety(audits),
                  spend=spend, failed=tuple(failed), transfer_sessions=tuple(transfer_sessions))
