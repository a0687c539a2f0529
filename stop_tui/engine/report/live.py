"""Many sessions read as their logs grow (the TUI's compare screen): one RunRow per session
folder (collect.row_of) and the runs grouped by (task, model, preset) (aggregate.group).

`LiveRuns.read()` is cheap to repeat: each folder is an engine/sweep/status.SessionLog, which
stats `session.db` and its `-wal` first and folds only the events committed since the last read;
a folder whose log did not move keeps the RunRow made last time. Nothing here writes a file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stop_tui.engine.lock import holder
from stop_tui.engine.report.aggregate import groups as groups_of
from stop_tui.engine.report.collect import row_of, unreadable_row
from stop_tui.engine.report.model import Group, RunRow
from stop_tui.engine.store import list_sessions
from stop_tui.engine.sweep.layout import list_sweeps
from stop_tui.engine.sweep.status import SessionLog


@dataclass(frozen=True)
class LiveRun:
    """One compared session as of the last read."""

    row: RunRow
    task: str | None
    model: str | None
    preset: str | None
    planned: int | None  # iterations its settings plan (None: not known yet)
    holder: dict[str, Any] | None = None  # who runs it now ({pid, host, since}), if anyone
    kind: str = "stop"  # the session's kind (meta "kind"): only STOP runs have curves

    @property
    def key(self) -> tuple[str, str, str | None]:
        """The group it belongs to: (task, model, preset)."""
        return (self.task or "?", self.model or "?", self.preset)


class LiveRuns:
    """`read()` of a fixed list of (name, session folder), as often as wanted (one reader per
    thread)."""

    def __init__(self, sessions: Sequence[tuple[str, Path]]) -> None:
        self.sessions = [(name, Path(folder)) for name, folder in sessions]
        self._logs = {folder: SessionLog(folder) for _name, folder in self.sessions}
        self._made: dict[Path, tuple[tuple, LiveRun]] = {}

    def read(self) -> tuple[LiveRun, ...]:
        return tuple(self._run(name, folder) for name, folder in self.sessions)

    def _run(self, name: str, folder: Path) -> LiveRun:
        log = self._logs[folder]
        who = holder(folder)  # first: once it is gone, the log read after it has its last events
        log.read()
        meta = log.meta
        stamp = (log.history.last_seq, log.unreadable, who, repr(meta))
        made = self._made.get(folder)
        if made is not None and made[0] == stamp:
            return made[1]
        if log.unreadable is not None:
            row = unreadable_row(name, folder, log.unreadable)
        else:  # row_of reads its events only for the last error
            row = row_of(name, folder, log.history, meta, [log.last_error] if log.last_error else [])
        settings = meta.get("settings") if isinstance(meta.get("settings"), dict) else {}
        planned = settings.get("iterations")
        run = LiveRun(row=row, task=_text(meta.get("task")), model=_text(meta.get("model")),
                      preset=_text(settings.get("preset")),
                      planned=planned if isinstance(planned, int) and not isinstance(planned, bool) else None,
                      holder=who, kind=_text(meta.get("kind")) or "stop")
        self._made[folder] = (stamp, run)
        return run


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def groups(runs: Sequence[LiveRun]) -> tuple[Group, ...]:
    """The runs grouped by (task, model, preset), in that order (as `stop-tui report` lists
    them); each group's curve and gain count from aggregate.group. Unreadable runs and sessions of
    another kind (transfer, baseline) are left out: they have no STOP curve."""
    return tuple(groups_of((run.key, run.row) for run in runs
                           if run.row.state != "unreadable" and run.kind == "stop"))


def sessions_in(folder: Path) -> list[tuple[str, Path]]:
    """(name, session folder) for every session in `folder` (a sessions dir, or a sweep's
    folder) and every run of each sweep in it (named `SWEEP/RUN`, as `show` takes it): what the
    compare screen offers. Their kinds are not checked here (LiveRun.kind says)."""
    out = [(p.name, p) for p in list_sessions(folder)]
    for sweep in list_sweeps(folder):
        out += [(f"{sweep.name}/{p.name}", p) for p in list_sessions(sweep)]
    return out
