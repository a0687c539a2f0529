"""Helpers for the task tests: run a program in process (to check the executed utilities'
arithmetic against hand-derived expectations) and in the real sandbox (score_solution), and
write a user task's folder."""

from __future__ import annotations

import random
import time
from pathlib import Path

import numpy as np

from stop_tui.engine.sandbox.process import Outcome


def in_process(function, *, calls: list | None = None):
    """A `run` for evaluate(): calls `function` here, with the generators' states adopted as
    the sandbox child does, and plain JSON-like values back (numpy arrays -> lists)."""

    def run(*args, time_limit, rng=None):
        if calls is not None:
            calls.append((args, time_limit))
        if rng is not None:
            random.setstate(rng[0].getstate())
            np.random.set_state(rng[1].get_state())
        started = time.perf_counter()
        try:
            value = function(*args)
        except Exception as exc:
            return Outcome(error=f"{type(exc).__name__}: {exc}", seconds=time.perf_counter() - started)
        seconds = time.perf_counter() - started
        if hasattr(value, "tolist"):
            value = value.tolist()
        return Outcome(value=value, seconds=seconds)

    return run


def fixed(outcomes):
    """A `run` that answers with the given Outcome objects in turn (for timing/validation)."""
    queue = list(outcomes)

    def run(*args, time_limit, rng=None):
        return queue.pop(0) if len(queue) > 1 else queue[0]

    return run


RETURNS_0 = "def algorithm():\n    return 0\n"


def write_task(folder: Path, evaluate: str, *, seed: str = RETURNS_0, toml: str = "") -> Path:
    """A user task's four files in the new `folder`: task.toml names the task after the folder
    (`toml`: the rest of it), seed.py is `seed`, utility.py a placeholder, evaluate.py `evaluate`."""
    folder.mkdir()
    (folder / "task.toml").write_text(f'name = "{folder.name}"\n{toml}')
    (folder / "seed.py").write_text(seed)
    (folder / "utility.py").write_text("def utility(s):\n    return 0\n")
    (folder / "evaluate.py").write_text(evaluate)
    return folder
