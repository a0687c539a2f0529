"""Helpers for the task tests: run a program in process (to check the executed utilities'
arithmetic against hand-derived expectations) and in the real sandbox (score_solution)."""

from __future__ import annotations

import random
import time

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
