"""The warm pool's fast path (issue 13): spares, one trip per call, seeds, the time breakdown.

Every run is a spare process the zygote forked and confined before it was asked for, handed its
sockets at the spawn; a call is one trip (the staging notice goes on a datagram socket the
kernel stamps); the candidate's derived generators travel as seeds. None of it may change a
score or drop a protection: runs started back to back are each confined, a spare that dies is
replaced, random programs score exactly as before, and the breakdown the benchmark prints adds
up.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import pytest
from conftest import skip_unless

from stop_tui.engine.candidate_rng import CandidateRng
from stop_tui.engine.sandbox import trace
from stop_tui.engine.sandbox.isolation import UID_MAX, UID_MIN, PoolConfig
from stop_tui.engine.sandbox.pool import Pool, default_pool
from stop_tui.engine.sandbox.process import Sandbox
from stop_tui.engine.scoring import score_solution
from stop_tui.engine.tasks import load_task

pytestmark = pytest.mark.timeout(180)

LPN = load_task("lpn")
PROTECTIONS = default_pool().describe()["protections"]

# Random programs, scored before the generators travelled as seeds (the states were sent then):
# the same numbers, to the last bit, for both secrets and the reference generators.
USES_RANDOM = "import random\ndef algorithm(a, b, test):\n    return [int(random.random() < 0.5) for _ in range(len(test))]\n"
USES_BOTH = ("import random\nimport numpy as np\ndef algorithm(a, b, test):\n    return [int((random.random()"
             " + np.random.random() + np.random.normal()) > 1.0) for _ in range(len(test))]\n")
BEFORE = {
    ("random", "val"): {"11": 0.5075000000000002, "22": 0.5125000000000001, "reference": 0.4475000000000002},
    ("random", "test"): {"11": 0.4850000000000003, "22": 0.49800000000000033, "reference": 0.5120000000000003},
    ("both", "val"): {"11": 0.48500000000000015, "22": 0.5025000000000001, "reference": 0.4950000000000001},
    ("both", "test"): {"11": 0.5270000000000004, "22": 0.4920000000000003, "reference": 0.4940000000000003},
    ("seed", "val"): {"11": 0.4950000000000001, "22": 0.4700000000000001, "reference": 0.5275000000000002},
    ("seed", "test"): {"11": 0.4830000000000003, "22": 0.4810000000000003, "reference": 0.5070000000000003},
}
SOURCES = {"random": USES_RANDOM, "both": USES_BOTH, "seed": LPN.seed}




@pytest.mark.parametrize(("program", "split"), sorted(BEFORE))
def test_random_programs_score_exactly_as_before(program, split):
    for key, want in BEFORE[(program, split)].items():
        if key == "reference":
            got = score_solution(LPN, SOURCES[program], split, settings={"rng": "reference"})
        else:
            got = score_solution(LPN, SOURCES[program], split, rng=CandidateRng("secret", key * 32))
        assert got.error is None, got.error
        assert got.score == want, (key, got.score)


WHO = r'''
import os, socket

def algorithm(name):
    try:
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).close()
        sockets = "allowed"
    except OSError:
        sockets = "refused"
    with open(name, "w") as f:
        f.write(name)
    try:
        open("/stop-fast-path-probe", "w").close()
        root = "writable"
    except OSError:
        root = "read-only"
    return {"uid": os.getuid(), "pid": os.getpid(), "sockets": sockets, "root": root,
            "files": sorted(os.listdir(".")), "env": sorted(os.environ)}
'''


def test_runs_started_back_to_back_are_each_confined():
    """Six runs open at once, started one right after the other (each takes the spare made
    after the one before, or one made at its spawn): each has its own uid, its own scratch,
    no sockets, a read-only root and a clean environment."""
    with contextlib.ExitStack() as stack:
        boxes = [stack.enter_context(Sandbox(WHO, "algorithm")) for _ in range(6)]
        outs = [box.call((f"mine-{i}",), 10) for i, box in enumerate(boxes)]
    for i, out in enumerate(outs):
        assert out.error is None, out.error
        assert out.value["files"] == [f"mine-{i}"]  # its own scratch: nobody else's file
        assert out.value["sockets"] == "refused"
        assert out.value["root"] == "read-only"
        assert "HOME" in out.value["env"] and not any("KEY" in k for k in out.value["env"])
    assert len({out.value["pid"] for out in outs}) == 6
    if PROTECTIONS.get("unprivileged_uid") and os.geteuid() == 0:
        uids = {out.value["uid"] for out in outs}
        assert len(uids) == 6 and all(UID_MIN <= uid < UID_MAX for uid in uids)


def _descendants(pid: int) -> list[int]:
    found, stack = [], [pid]
    while stack:
        current = stack.pop()
        try:
            for task in Path(f"/proc/{current}/task").iterdir():
                kids = [int(k) for k in (task / "children").read_text().split()]
                found += kids
                stack += kids
        except OSError:
            continue
    return found


def _ns_pid(pid: int) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    return next((int(line.split()[-1]) for line in status.splitlines() if line.startswith("NSpid:")), None)


def _spares(pool: Pool) -> list[int]:
    """The pool's processes on a run's uid that are not zombies: with no run open, its spare."""
    found = []
    for pid in _descendants(pool.worker_pid):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        uid = int(fields["Uid"].split()[0])
        if UID_MIN <= uid < UID_MAX and not fields["State"].strip().startswith(("Z", "X")):
            found.append(pid)
    return found


def test_a_spare_that_dies_is_replaced():
    skip_unless(os.geteuid() == 0 and PROTECTIONS.get("unprivileged_uid"), "spares have their own uid as root")
    pool = Pool(PoolConfig())
    try:
        with Sandbox(WHO, "algorithm", pool=pool) as box:
            first = box.call(("first",), 10)
        assert first.error is None
        deadline = time.monotonic() + 10
        # the run exits; the spare made after it was handed over is announced and has its uid
        while time.monotonic() < deadline:
            spares = _spares(pool)
            if pool.spare_pid not in (None, first.value["pid"]) and len(spares) == 1 \
                    and _ns_pid(spares[0]) == pool.spare_pid:
                break
            time.sleep(0.05)
        assert len(spares) == 1 and _ns_pid(spares[0]) == pool.spare_pid != first.value["pid"], \
            (spares, pool.spare_pid)
        os.kill(spares[0], 9)
        while pool.spare_pid is not None and time.monotonic() < deadline + 10:
            time.sleep(0.01)  # the worker saw it die
        assert pool.spare_pid is None
        for name in ("second", "third"):  # the next runs get new spares
            with Sandbox(WHO, "algorithm", pool=pool) as box:
                out = box.call((name,), 10)
            assert out.error is None, out.error
            assert out.value["files"] == [name] and out.value["sockets"] == "refused"
    finally:
        pool.close()


def test_the_breakdown_adds_up():
    """Traced, an evaluation reports each set-up step once, each call's steps 20 times, and
    the spans on the engine's wait add up to no more than the evaluation took."""
    score_solution(LPN, LPN.seed, "val")  # a spare ready, as in the benchmark
    with trace.recording() as recorder:
        started = time.monotonic_ns()
        result = score_solution(LPN, LPN.seed, "val")
        took = time.monotonic_ns() - started
    assert result.error is None
    for step in ("fork (zygote -> fresh run process)",
                 "namespace and mount set-up (own mount namespace, tmpfs scratch)",
                 "uid drop (groups, gid, uid, parent-death signal again)",
                 "seccomp load (build and install the filter)",
                 "warm-up: the call path once on made-up data (first-use costs, child.warm_up)"):
        counts = [recorder.count.get(name, 0) for name in (step, trace.IN_ADVANCE + step)]
        assert sum(counts) == 1, (step, counts)
    for name in trace.CALL_SPANS.values():
        assert recorder.count[name] == 20, name
    assert recorder.count["call: RNG derivation in the engine (keyed by the secret)"] == 20
    assert recorder.count["call: input encoding in the engine (arrays, RNG, JSON)"] == 20
    on_wait = sum(total for name, total in recorder.total.items() if not name.startswith(trace.IN_ADVANCE))
    assert 0 < on_wait <= took
    # outside the block nothing is recorded, and runs are not asked for marks
    score_solution(LPN, LPN.seed, "val")
    assert recorder.count["call: input encoding in the engine (arrays, RNG, JSON)"] == 20
    assert trace.active() is None


def test_the_spares_warm_up_leaves_a_run_starting_as_it_would_without_it():
    """child.warm_up (run by every spare before its run is known) seeds the generators on the
    way: it puts them back, so a program that draws before any seeding draws what it would have."""
    import random

    import numpy as np

    from stop_tui.engine.sandbox import child

    random.seed(7)
    np.random.seed(7)
    before = random.getstate(), np.random.get_state()
    child.warm_up()
    assert random.getstate() == before[0]
    after = np.random.get_state()
    assert after[0] == before[1][0] and (after[1] == before[1][1]).all() and after[2:] == before[1][2:]


HOLDS_A_CHILD = r"""
import os, time

CHILD = []

def algorithm(op):
    if op == "start":
        pid = os.fork()
        if pid == 0:
            time.sleep(60)
            os._exit(0)
        CHILD.append(pid)
        return pid
    return os.waitpid(CHILD[0], os.WNOHANG)[0] == 0  # still running
"""


def test_a_run_ending_leaves_the_processes_of_other_runs_alone():
    """Run A forks a helper; run B starts, ends and is swept: A's helper still runs (and goes
    when A does)."""
    with Sandbox(HOLDS_A_CHILD, "algorithm") as a:
        assert a.call(("start",), 10).error is None
        with Sandbox("def algorithm():\n    return 1\n", "algorithm") as b:
            assert b.call((), 10).value == 1
        time.sleep(1.0)  # B exits, is reaped and its tree swept
        out = a.call(("check",), 10)
        assert out.error is None and out.value is True, out
