"""Sweeps built without Ray, for the readers' tests (status, list/show, the TUI's sweep screen):
real sessions run on the scripted LM server (one finished, one paused at a cap), copied into
the sweep layout under their runs' folder names, and made into the other states a reader must
tell apart (failed: an ERROR event; running: a held lock; interrupted: a start with no end)."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from lm_helpers import responder, run_args, stop_tui
from scripted_server import ScriptedLMServer

from stop_tui.engine import events as ev
from stop_tui.engine.store import SessionStore
from stop_tui.engine.sweep.layout import RunKey, Sweep, SweepSpec, create_sweep


@dataclass(frozen=True)
class Sources:
    """Two finished-by-their-process sessions: `finished` (1 quick iteration) and `capped`
    (paused by --max-calls 1 during iteration 1)."""

    finished: Path
    capped: Path
    finished_summary: dict
    capped_summary: dict


def make_sources(folder: Path) -> Sources:
    with ScriptedLMServer(responder) as server:
        done = stop_tui(*run_args(server, folder / "done", "--json"))
        assert done.returncode == 0, done.stderr
        capped = stop_tui(*run_args(server, folder / "capped", "--json", "--max-calls", "1"))
        assert capped.returncode == 3, capped.stderr
    a, b = json.loads(done.stdout), json.loads(capped.stdout)
    return Sources(Path(a["session_dir"]), Path(b["session_dir"]), a, b)


def place(source: Path, sweep: Sweep, key: RunKey, *, transfer: bool = False) -> Path:
    """A copy of session folder `source` as run `key`'s session (or its transfer's)."""
    target = sweep.transfer_folder(key) if transfer else sweep.run_folder(key)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("lock"))
    return target


def append(folder: Path, *payloads: ev.Payload) -> None:
    store = SessionStore(folder)
    try:
        for payload in payloads:
            store.append(ev.event(payload))
    finally:
        store.close()


def new_sweep(sessions: Path, *, models=("scripted", "other"), seeds=(0, 1, 2), transfer=(),
              name: str = "sw") -> Sweep:
    return create_sweep(sessions, SweepSpec(tasks=("lpn",), models=tuple(models), seeds=tuple(seeds),
                                            preset="quick", iterations=1, transfer=tuple(transfer)), name=name)
