"""A session's summary, derived from its event log alone (run --json, list, show, the TUI)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stop_tui.engine import events as ev
from stop_tui.engine.errors import UserError
from stop_tui.engine.resume import effective_events
from stop_tui.engine.store import SessionStore, SessionUnreadable, list_sessions

LM_KEYS = ("calls", "requests", "retries", "completions", "failed", "prompt_tokens",
           "completion_tokens", "reasoning_tokens", "cost_usd")


def summarize(store: SessionStore) -> dict[str, Any]:
    meta = store.meta()
    lm = {key: 0 for key in LM_KEYS}
    per_iteration: dict[int, dict[str, Any]] = {}
    candidates = failed = 0
    state = "new"
    paused: str | None = None
    peak = replayed = resumes = 0
    # Superseded events (an interrupted iteration that a resume re-executed) are skipped.
    for event in effective_events(store):
        d = event.data
        if event.kind == ev.BUDGET:
            lm = {key: d.get(key, 0) for key in LM_KEYS}
        elif event.kind == ev.LM_REPLY:
            peak = max(peak, int(d.get("concurrency", 0) or 0))
            replayed += bool(d.get("replayed"))
        elif event.kind == ev.RESUMED:
            resumes += 1
            state, paused = "running", None
        elif event.kind in (ev.ITERATION_ACCEPTED, ev.ITERATION_REJECTED):
            if not isinstance(d.get("iteration"), int):
                raise SessionUnreadable(store.id, f"event {event.seq} ({event.kind}) has no iteration number")
            per_iteration[d["iteration"]] = {
                "iteration": d["iteration"], "accepted": event.kind == ev.ITERATION_ACCEPTED,
                "candidate_val": d.get("val"), "candidate_test": d.get("test"),
                "reason": d.get("reason")}
        elif event.kind == ev.CANDIDATE_SCORED and d.get("role") == "candidate":
            candidates += 1
            failed += bool(d.get("error")) and d.get("score", 0) == 0
        elif event.kind == ev.ITERATION_STARTED:
            state = "running"
        elif event.kind == ev.PAUSED:
            state, paused = "paused", d.get("reason")
        elif event.kind == ev.SESSION_FINISHED:
            state = "finished"
    # The accepted improver's val (and test) meta-utility after each iteration.
    vals: list[float] = []
    tests: list[float | None] = []
    current: tuple[float | None, float | None] = (None, None)
    seed = per_iteration.get(0)
    if seed:
        current = (seed["candidate_val"], seed["candidate_test"])
    for t in sorted(k for k in per_iteration if k > 0):
        row = per_iteration[t]
        if row["accepted"]:
            current = (row["candidate_val"], row["candidate_test"])
        row["val"], row["test"] = current
        vals.append(current[0])
        tests.append(current[1])
    scored = [v for v in [seed["candidate_val"] if seed else None, *vals] if v is not None]
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
        "state": state,
        "iterations_completed": len(vals),
        "iterations_planned": meta.get("settings", {}).get("iterations"),
        "seed_meta_utility": seed["candidate_val"] if seed else None,
        "seed_meta_utility_test": seed["candidate_test"] if seed else None,
        "meta_utility": vals,
        "meta_utility_test": tests,
        "best_meta_utility": max(scored) if scored else None,
        "iterations": [per_iteration[k] for k in sorted(per_iteration)],
        "candidates_scored": candidates,
        "candidates_failed": failed,
        "paused_reason": paused,
        "resumes": resumes,
        "replay_of": meta.get("replay_of"),
        "lm": {**lm, "max_concurrency_reached": peak, "replayed_calls": replayed,
               "max_concurrency": meta.get("settings", {}).get("max_concurrency")},
    }


def summaries(sessions_dir: Path) -> Iterator[tuple[Path, dict[str, Any] | None, str | None]]:
    """(folder, summary, None) for each session in `sessions_dir`, read read-only, oldest first;
    (folder, None, reason) for one that cannot be read: a damaged (or foreign-locked) session
    does not hide the others (`list`, the TUI's picker)."""
    for folder in list_sessions(sessions_dir):
        try:
            store = SessionStore(folder, readonly=True)
            try:
                summary = summarize(store)
            finally:
                store.close()
        except UserError as exc:
            yield folder, None, exc.reason if isinstance(exc, SessionUnreadable) else str(exc)
            continue
        yield folder, summary, None
