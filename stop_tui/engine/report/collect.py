"""Read one session folder into a report's RunRow (read-only: works on a live session)."""

from __future__ import annotations

from pathlib import Path

from stop_tui.engine import events as ev
from stop_tui.engine.history import History
from stop_tui.engine.report.model import RunRow
from stop_tui.engine.store import SessionStore, SessionUnreadable


def _last_error(history_events: list[ev.Event]) -> str | None:
    """The last ERROR's message, unless the session was resumed after it (the run went on)."""
    last = None
    for e in history_events:
        if e.kind == ev.ERROR:
            last = e
        elif e.kind == ev.RESUMED:
            last = None
    if last is None:
        return None
    data = last.data
    return str(data.get("message") or data.get("error") or data)


def row_of(session: str, folder: Path, history: History, meta: dict, events: list[ev.Event]) -> RunRow:
    """A RunRow from a session's History (and its meta and events, for the seed and errors)."""
    val = (history.seed_meta_utility, *history.meta_utility) if history.seed_scored else ()
    test = (history.seed_meta_utility_test, *history.meta_utility_test) if history.seed_scored else ()
    best = history.best
    scored = [t for t, v in enumerate(val) if v is not None]
    final_t = scored[-1] if scored else None
    final_val = val[final_t] if final_t is not None else None
    gain = final_val - val[0] if final_val is not None and val and val[0] is not None else None
    usage = history.lm_by_iteration
    top = max([len(val) - 1, *usage.keys()], default=-1)
    lm = history.lm_totals
    failed = _last_error(events) if history.state != "finished" else None
    return RunRow(
        session=session, folder=str(folder), model=meta.get("model"), seed=meta.get("settings", {}).get("seed"),
        state=history.state, val=tuple(val), test=tuple(test),
        best_t=best.iteration if best else (0 if val and val[0] is not None else None),
        best_val=history.best_meta_utility, final_t=final_t, final_val=final_val, gain=gain,
        calls=int(lm.get("calls") or 0),
        tokens=int((lm.get("prompt_tokens") or 0) + (lm.get("completion_tokens") or 0)),
        dollars=float(lm.get("cost_usd") or 0.0),
        spend_by_iteration=tuple(float(usage.get(t, {}).get("cost_usd") or 0.0) for t in range(top + 1)),
        tokens_by_iteration=tuple(int((usage.get(t, {}).get("prompt_tokens") or 0)
                                      + (usage.get(t, {}).get("completion_tokens") or 0))
                                  for t in range(top + 1)),
        failed=failed)


def unreadable_row(session: str, folder: Path, reason: str) -> RunRow:
    """The RunRow of a session whose log cannot be read: state "unreadable", `failed` the reason."""
    return RunRow(session=session, folder=str(folder), seed=None, state="unreadable", val=(), test=(),
                  best_t=None, best_val=None, final_t=None, final_val=None, gain=None, calls=0,
                  tokens=0, dollars=0.0, spend_by_iteration=(), tokens_by_iteration=(), failed=reason)


def read_log(folder: Path) -> tuple[dict, list[ev.Event]]:
    """(meta, events) of the session in `folder`, read once, read-only (a live session too);
    SessionUnreadable when it cannot be read."""
    store = SessionStore(folder, readonly=True)
    try:
        return store.meta(), list(store.events())
    finally:
        store.close()


def run_row(folder: Path, session: str | None = None) -> tuple[RunRow, dict]:
    """(RunRow, meta) of the session in `folder`, read read-only; an unreadable session is a
    RunRow with state "unreadable" and the reason in `failed` (meta {})."""
    session = session or folder.name
    try:
        meta, events = read_log(folder)
    except SessionUnreadable as exc:
        return unreadable_row(session, folder, exc.reason), {}
    history = History(events, session_id=session)
    return row_of(session, folder, history, meta, events), meta
