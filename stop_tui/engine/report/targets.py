"""What `stop-tui report SWEEP|SESSION...` reads: the names given, resolved to session folders.

A sweep expands to its runs (in the sweep's order) and the `-transfer` sessions of those that
have one; a session is an id in the sessions dir, a folder, or `SWEEP/RUN`. The same folder
named twice (a sweep and one of its runs) is read once. A report combines STOP runs and
transfer sessions; anything else, or a name that is no session, an unreadable session named on
its own, or a sweep none of whose runs has started, is a UserError (one line). Inside a sweep,
an unreadable or unstarted run is kept, with its reason, so that the report lists it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from stop_tui.engine.errors import UserError
from stop_tui.engine.store import DB_NAME, SessionStore, SessionUnreadable, session_folder
from stop_tui.engine.sweep.layout import is_sweep, read_sweep
from stop_tui.engine.transfer import KIND as TRANSFER

STOP = "stop"
UNREADABLE = "unreadable"
NOT_STARTED = "not started"
COMBINED = (STOP, TRANSFER)  # the kinds a report reads


@dataclass(frozen=True)
class Target:
    id: str  # as `show` takes it: the session's id, or "SWEEP/RUN" for a sweep's run
    folder: Path
    kind: str  # stop | transfer | unreadable | not started
    reason: str | None = None  # why it cannot be read (unreadable), or "not started"
    in_sweep: bool = False  # found by expanding a sweep (else named: unreadable is an error)


@dataclass(frozen=True)
class Targets:
    title: str  # the sweep's id, the session's id, or "N sessions"
    runs: tuple[Target, ...]  # STOP sessions, and the unreadable or unstarted runs of a sweep
    transfers: tuple[Target, ...]


def _kind(folder: Path) -> str:
    """The session's kind from its meta (SessionUnreadable when it cannot be read)."""
    store = SessionStore(folder, readonly=True)
    try:
        return str(store.meta().get("kind", STOP))
    finally:
        store.close()


def _session_id(folder: Path) -> str:
    return f"{folder.parent.name}/{folder.name}" if is_sweep(folder.parent) else folder.name


def _sweep_targets(folder: Path) -> list[Target]:
    sweep = read_sweep(folder)
    found: list[Target] = []
    started = 0
    for key in sweep.spec.runs():
        run = sweep.run_folder(key)
        ident = f"{sweep.id}/{key.name}"
        if not (run / DB_NAME).exists():
            found.append(Target(ident, run, NOT_STARTED, NOT_STARTED, in_sweep=True))
            continue
        started += 1
        try:
            kind = _kind(run)
        except SessionUnreadable as exc:
            found.append(Target(ident, run, UNREADABLE, exc.reason, in_sweep=True))
            continue
        found.append(Target(ident, run, kind, in_sweep=True))
        transfer = sweep.transfer_folder(key)
        if (transfer / DB_NAME).exists():
            try:
                found.append(Target(f"{sweep.id}/{key.transfer_name}", transfer, _kind(transfer), in_sweep=True))
            except SessionUnreadable as exc:
                found.append(Target(f"{sweep.id}/{key.transfer_name}", transfer, UNREADABLE, exc.reason,
                                    in_sweep=True))
    if not started:
        raise UserError(f"sweep {sweep.id} has no run to report yet: none has started "
                        f"(see `stop-tui show {sweep.id}`)")
    return found


def _session_target(sessions_dir: Path, name: str) -> Target:
    folder = session_folder(sessions_dir, name)  # UserError: no session there
    kind = _kind(folder)  # SessionUnreadable (a UserError): one line
    if kind not in COMBINED:
        raise UserError(f"session {name} is a {kind} session: a report reads STOP runs and their "
                        "transfer sessions")
    return Target(_session_id(folder), folder, kind)


def resolve(sessions_dir: Path, names: list[str]) -> Targets:
    """The sessions that `names` (sweeps and sessions) stand for; UserError on bad input."""
    if not names:
        raise UserError("name a sweep or at least one session (see `stop-tui list`)")
    seen: set[Path] = set()
    runs: list[Target] = []
    transfers: list[Target] = []
    for name in names:
        sweep = next((f.resolve() for f in (Path(name), Path(sessions_dir) / name) if is_sweep(f)), None)
        found = _sweep_targets(sweep) if sweep is not None else [_session_target(sessions_dir, name)]
        for target in found:
            where = target.folder.resolve()
            if where in seen:
                continue
            seen.add(where)
            if target.kind == TRANSFER:
                transfers.append(target)
            elif target.kind in (STOP, UNREADABLE, NOT_STARTED):
                runs.append(target)
            else:
                raise UserError(f"{target.id} in sweep {name} is a {target.kind} session: a report "
                                "reads STOP runs and their transfer sessions")
    if len(names) == 1:
        title = sweep.name if sweep is not None else (runs or transfers)[0].id
    else:
        title = f"{len(runs) + len(transfers)} sessions"
    return Targets(title, tuple(runs), tuple(transfers))
