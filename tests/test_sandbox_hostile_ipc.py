"""Hostile programs against the sandbox: shared memory between runs (issue 14, item 4).

SysV shared memory, semaphores and message queues and POSIX message queues live in an IPC
namespace, not in a process: a run could leave a big segment behind (host memory, after the
run ended) or read what another run left there. Runs are refused all of them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_sandbox_hostile import ZEROS_VAL

from stop_tui.engine.sandbox.isolation import PoolConfig
from stop_tui.engine.sandbox.pool import Pool, default_pool
from stop_tui.engine.sandbox.process import Sandbox
from stop_tui.engine.scoring import score_solution
from stop_tui.engine.tasks import load_task

pytestmark = pytest.mark.timeout(120)

KEY = 0x570B1C  # a fixed SysV key: what run B would look for
SIZE = 64 << 20

IPC_ATTEMPTS = r'''
import ctypes, errno, os

libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
KEY, SIZE = %d, %d


def err():
    return errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))


def leave_segment():
    """Run A: a 64 MB segment under a known key, every page written, left behind."""
    segment = libc.shmget(KEY, SIZE, 0o1666)  # IPC_CREAT | 0666
    if segment < 0:
        return {"shmget": err()}
    address = libc.shmat(segment, None, 0)
    if address in (None, ctypes.c_void_p(-1).value):
        return {"shmget": "created", "shmat": err()}
    ctypes.memset(address, 0x41, SIZE)
    ctypes.memmove(address, b"secret of run A", 15)
    return {"shmget": "created", "shmat": "attached"}


def find_segment():
    """Run B: look for run A's segment and read it."""
    segment = libc.shmget(KEY, 0, 0)
    if segment < 0:
        return {"shmget": err()}
    address = libc.shmat(segment, None, 0o10000)  # SHM_RDONLY
    if address in (None, ctypes.c_void_p(-1).value):
        return {"shmget": "found", "shmat": err()}
    return {"shmget": "found", "data": ctypes.string_at(address, 15).decode()}


def others():
    out = {}
    out["semget"] = "created" if libc.semget(KEY + 1, 1, 0o1600) >= 0 else err()
    out["msgget"] = "created" if libc.msgget(KEY + 2, 0o1600) >= 0 else err()
    libc.mq_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_uint, ctypes.c_void_p]
    queue = libc.mq_open(b"/stop-hostile-queue", os.O_RDWR | os.O_CREAT, 0o600, None)
    out["mq_open"] = "created" if queue >= 0 else err()
    if queue >= 0:
        libc.mq_unlink(b"/stop-hostile-queue")
    return out


def algorithm(step):
    return {"leave": leave_segment, "find": find_segment, "others": others}[step]()
''' % (KEY, SIZE)


def host_shmem_kb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("Shmem:"):
            return int(line.split()[1])
    raise AssertionError("no Shmem line in /proc/meminfo")


def host_has_key(key: int) -> bool:
    try:
        lines = Path("/proc/sysvipc/shm").read_text().splitlines()[1:]
    except OSError:
        return False
    return any(int(line.split()[0]) == key for line in lines if line.split())


def one_run(step: str, pool: Pool | None) -> dict:
    with Sandbox(IPC_ATTEMPTS, "algorithm", pool=pool) as box:
        out = box.call((step,), 20.0)
    assert out.error is None, out.error
    return out.value


@pytest.mark.parametrize("mode", ["default", "plain"])
def test_a_segment_left_by_one_run_is_refused_and_invisible_to_the_next(mode):
    pool = None if mode == "default" else Pool(PoolConfig(mode=mode))
    try:
        protections = (pool or default_pool()).describe()["protections"]
        before = host_shmem_kb()
        a = one_run("leave", pool)
        after = host_shmem_kb()
        b = one_run("find", pool)
        rest = one_run("others", pool)
    finally:
        if pool is not None:
            pool.close()
    assert a == {"shmget": "EPERM"}, a
    assert after - before < (SIZE >> 10) // 2, f"host Shmem grew by {after - before} kB after run A"
    assert not host_has_key(KEY)
    assert b == {"shmget": "EPERM"}, b  # (not ENOENT: the call itself is refused)
    assert rest == {"semget": "EPERM", "msgget": "EPERM", "mq_open": "EPERM"}, rest
    assert protections.get("no_shared_ipc") is True  # (doctor lists it, probed at worker start)


IPC_SOLUTION = IPC_ATTEMPTS.replace("def algorithm(step):", "def unused(step):") + r'''
import numpy as np


def algorithm(train_samples, train_parity, test_samples):
    escaped = leave_segment().get("shmget") == "created" or "created" in others().values()
    return (np.ones if escaped else np.zeros)(len(test_samples), dtype=int)
'''


def test_a_solution_trying_shared_memory_scores_like_its_predictions():
    result = score_solution(load_task("lpn"), IPC_SOLUTION, "val")
    assert result.error is None, result.error
    assert result.score == pytest.approx(ZEROS_VAL)  # all ones (IPC got through) otherwise
    assert not host_has_key(KEY)
