"""A session's summary, derived from its event log alone (run --json, list, show, the TUI)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stop_tui.engine.errors import UserError
from stop_tui.engine.history import History
from stop_tui.engine.store import SessionStore, SessionUnreadable, list_sessions


def summarize(store: SessionStore) -> dict[str, Any]:
    meta = store.meta()
    history = History.read(store)  # superseded events (a partial iteration a resume re-ran) skipped
    rows = []
    for row in history.iterations:
        out = {"iteration": row.iteration, "accepted": row.accepted, "candidate_val": row.candidate_val,
               "candidate_test": row.candidate_test, "reason": row.reason}
        if row.iteration > 0:  # the accepted improver's val (and test) meta-utility after it
            out["val"], out["test"] = row.val, row.test
        rows.append(out)
    return {
        "session": store.id,
        "session_dir": str(store.folder.resolve()),
        "kind": meta.get("kind", "stop"),  # stop, transfer or baseline
        "task": meta.get("task"),
        "model": meta.get("model"),
        "base_url": meta.get("base_url"),
        # The model refuses custom temperatures (a reasoning model): the paper's are not used.
        "lm_fixed_temperature": bool(meta.get("lm_fixed_temperature")),
        "preset": meta.get("settings", {}).get("preset"),
        "seed": meta.get("settings", {}).get("seed"),
        "created": meta.get("created"),
        "state": history.state,
        "iterations_completed": len(history.meta_utility),
        "iterations_planned": meta.get("settings", {}).get("iterations"),
        "seed_meta_utility": history.seed_meta_utility,
        "seed_meta_utility_test": history.seed_meta_utility_test,
        "meta_utility": history.meta_utility,
        "meta_utility_test": history.meta_utility_test,
        "best_meta_utility": history.best_meta_utility,
        "iterations": rows,
        "candidates_scored": history.candidates_scored,
        "candidates_failed": history.candidates_failed,
        "paused_reason": history.paused_reason,
        "resumes": history.resumes,
        "replay_of": meta.get("replay_of"),
        "lm": {**history.lm_totals, "max_concurrency_reached": history.peak_concurrency,
               "replayed_calls": history.replayed_calls,
               "max_concurrency": meta.get("settings", {}).get("max_concurrency")},
    }


def read_summary(folder: Path) -> dict[str, Any]:
    """The summary of the session in `folder`, read read-only (a running session included);
    UserError (SessionUnreadable) when it cannot be read."""
    store = SessionStore(folder, readonly=True)
    try:
        return summarize(store)
    finally:
        store.close()


def summaries(sessions_dir: Path) -> Iterator[tuple[Path, dict[str, Any] | None, str | None]]:
    """(folder, summary, None) for each session in `sessions_dir`, read read-only, oldest first;
    (folder, None, reason) for one that cannot be read: a damaged (or foreign-locked) session
    does not hide the others (`list`, the TUI's picker)."""
    for folder in list_sessions(sessions_dir):
        try:
            summary = read_summary(folder)
        except UserError as exc:
            yield folder, None, exc.reason if isinstance(exc, SessionUnreadable) else str(exc)
            continue
        yield folder, summary, None
