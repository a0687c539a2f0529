"""Hostile programs against the sandbox's clock: work before the clock starts (issue 14, item 2).

A call's inputs are staged (decoded) in the candidate's own process before the call starts,
so a candidate can hook the decoding and compute there. Staging is on the clock: a candidate
doing 3 s of work per instance in the staging step against LPN's 2 s limit fails, and a
staging hook that never returns is killed on time.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from stop_tui.engine.sandbox.process import Sandbox
from stop_tui.engine.scoring import score_solution
from stop_tui.engine.tasks import load_task

pytestmark = pytest.mark.timeout(180)

# The staging hook: wraps the child's own decoding (reached by its module name), does the real
# work there (brute force, padded to 3 s) and leaves the answer for `algorithm` to return at once.
STAGING_HOOK = r'''
import itertools, sys, time
import numpy as np

child = sys.modules["stop_sandbox_child"]
decode = child._decode
ANSWER = []
WORK_SECONDS = __SECONDS__


def hooked(value, *blobs):
    out = decode(value, *blobs)
    if isinstance(out, list) and len(out) == 3 and all(hasattr(x, "shape") for x in out):
        started = time.perf_counter()
        train, labels, test = out
        best = min(itertools.product((0, 1), repeat=train.shape[1]),
                   key=lambda m: int(np.sum((train @ np.array(m)) % 2 != labels)))
        ANSWER[:] = [(test @ np.array(best)) % 2]
        while time.perf_counter() - started < WORK_SECONDS:
            pass
    return out


child._decode = hooked


def algorithm(train_samples, train_parity, test_samples):
    return ANSWER[0] if ANSWER else np.zeros(len(test_samples), dtype=int)
'''


def test_work_in_the_staging_step_is_on_the_clock():
    started = time.monotonic()
    result = score_solution(load_task("lpn"), STAGING_HOOK.replace("__SECONDS__", "3.0"), "val")
    took = time.monotonic() - started
    assert result.score == 1e-6, result  # LPN's failure score (it scored 1.0 off the clock)
    assert result.error.startswith("instance 0: timed out after 2 s (staging its inputs took 3.")
    assert took < 15, took  # failed at the first instance, not after 20 x 3 s


def test_a_staging_hook_that_never_returns_is_killed_on_time():
    hook = STAGING_HOOK.replace("__SECONDS__", "600.0")
    with Sandbox(hook, "algorithm") as box:
        started = time.monotonic()
        out = box.call((np.zeros((5, 10), int), np.zeros(5, int), np.zeros((2, 10), int)), 1.0)
        took = time.monotonic() - started
        assert not box.alive()
    assert out.error == "timed out after 2 s (staging its inputs)", out.error
    assert took < 5, took


def test_honest_staging_of_a_big_input_costs_little():
    big = np.arange(1 << 20, dtype=np.int64)  # 8 MB
    with Sandbox("def algorithm(x):\n    return int(x.sum())\n", "algorithm") as box:
        out = box.call((big,), 2.0)
    assert out.error is None and out.value == int(big.sum())
    assert out.seconds < 1.0, out.seconds


# The same work in the staging step, by a candidate that first closes its staging-notice socket
# (found among its file descriptors): with no notice, staging runs to the result on the clock.
NO_NOTICE = r'''
import socket

for fd in range(3, 256):
    try:
        found = socket.socket(fileno=fd)
    except OSError:
        continue
    if found.type == socket.SOCK_DGRAM:
        found.close()
    else:
        found.detach()
''' + STAGING_HOOK


def test_work_in_the_staging_step_is_on_the_clock_without_the_notice_too():
    result = score_solution(load_task("lpn"), NO_NOTICE.replace("__SECONDS__", "3.0"), "val")
    assert result.score == 1e-6, result
    # With no notice the engine cannot tell staging from the call until the result: it reads
    # as a staging overrun when the result comes within limit + 1 s, else as a time-out.
    assert result.error.startswith(("instance 0: timed out after 2 s (staging its inputs took 3.",
                                    "instance 0: timed out after 3 s (staging its inputs)")), result.error
