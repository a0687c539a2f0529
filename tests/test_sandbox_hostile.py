"""Hostile programs against the sandbox (issue 5, "What must hold").

Each program is LM-written in spirit: a solution or an improver that tries to read secrets,
write outside its scratch, fill the disk, reach the network, outlive its evaluation, take the
engine down, change its own score or spend LM budget it was not given. For each we assert that
the engine survives, reports a clear reason, leaks nothing, leaves nothing running and scores
correctly. Everything runs in the real sandbox (bubblewrap when installed, see `stop-tui doctor`).
"""

from __future__ import annotations

import ast
import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest
from conftest import PROGRAMS, ROOT, STRICT, skip_unless

from stop_tui.engine.improver import Utility, run_improver
from stop_tui.engine.lm.base import Completions
from stop_tui.engine.lm.service import LMService
from stop_tui.engine.sandbox.isolation import (
    UID_MAX,
    UID_MIN,
    PoolConfig,
    prefix_readable_by_others,
)
from stop_tui.engine.sandbox.pool import Pool, default_pool
from stop_tui.engine.sandbox.process import Limits, Sandbox
from stop_tui.engine.scoring import score_solution
from stop_tui.engine.tasks import load_task

pytestmark = pytest.mark.timeout(120)

MODE = default_pool().describe()["mode"]
PROTECTIONS = default_pool().describe()["protections"]
ROOT_USER = os.geteuid() == 0
# The daemon programs exec Python; in the fallback modes a run's uid may not read the prefix.
EXEC_OK = MODE == "bwrap" or not ROOT_USER or prefix_readable_by_others()


def has(protection: str) -> bool:
    """Whether the engine's sandbox has `protection` (the checks that rely on it apply);
    where STOP_TUI_REQUIRE_BWRAP=1 it must."""
    active = bool(PROTECTIONS.get(protection))
    if STRICT and not active:
        pytest.fail(f"the sandbox lacks {protection} (STOP_TUI_REQUIRE_BWRAP=1; see stop-tui doctor)")
    return active


def needs_exec() -> None:
    skip_unless(EXEC_OK, "runs cannot exec Python here (prefix unreadable)")


def needs_root(what: str) -> None:
    skip_unless(ROOT_USER, f"{what} needs root")
ZEROS = (PROGRAMS / "lpn_zeros.py").read_text()
ZEROS_VAL = 0.5025  # all zeros on lpn, val, measured with the released code


# -- helpers ------------------------------------------------------------------------------
def _is_a_spare(pid: int, parents: dict[int, int], pools: tuple[Pool, ...]) -> bool:
    """Whether `pid` (a host pid) is the spare of one of `pools`: the next run's process, made
    in advance and waiting for its run (it is no run's, and runs nothing)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    inner = next((int(line.split()[-1]) for line in status.splitlines() if line.startswith("NSpid:")), None)
    for pool in pools:
        worker, ancestor = pool.worker_pid, pid
        if pool.spare_pid is None or worker is None or inner != pool.spare_pid:
            continue
        for _ in range(64):
            ancestor = parents.get(ancestor, 0)
            if ancestor == worker:
                return True
            if ancestor <= 1:
                break
    return False


def run_uid_processes(*pools: Pool) -> list[int]:
    """Processes (seen from the host) that run under a sandbox run's uid and descend from this
    test process (other engines on the machine have their own runs); the spares of the
    engine's pool and of `pools` are no run's."""
    parents: dict[int, int] = {}
    candidates = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            uid = entry.stat().st_uid
        except (OSError, IndexError):
            continue
        parents[int(entry.name)] = int(fields[1])
        if UID_MIN <= uid < UID_MAX and fields[0] not in ("Z", "X"):
            candidates.append(int(entry.name))
    candidates = [pid for pid in candidates if not _is_a_spare(pid, parents, (default_pool(), *pools))]
    me = os.getpid()

    def mine(pid: int) -> bool:
        for _ in range(64):
            pid = parents.get(pid, 0)
            if pid == me:
                return True
            if pid <= 1:
                return False
        return False

    return [pid for pid in candidates if mine(pid)]


def describe(pids: list[int]) -> list[str]:
    out = []
    for pid in pids:
        try:
            status = dict(line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":\t" in line)
            out.append(f"{pid} ppid={status.get('PPid')} state={status.get('State')} uid={status.get('Uid')} "
                       f"threads={status.get('Threads')}")
        except OSError:
            out.append(f"{pid} gone")
    return out


def marked_processes(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def wait_until(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@pytest.fixture(autouse=True)
def nothing_left_running():
    """After every hostile program: no process of any run is left, and the pool still works."""
    yield
    if ROOT_USER:
        assert wait_until(lambda: not run_uid_processes()), f"left running: {describe(run_uid_processes())}"
    with Sandbox("def algorithm(x):\n    return x + 1\n", "algorithm") as box:
        assert box.call((41,), 5.0).value == 42, "the sandbox no longer works after the test"


def run_program(source: str, args: tuple = (), time_limit: float = 5.0, *, limits: Limits = Limits(),
                entry: str = "algorithm"):
    started = time.monotonic()
    with Sandbox(source, entry, limits=limits) as box:
        if box.load_error:
            out = None
            error = box.load_error
        else:
            out = box.call(args, time_limit)
            error = out.error
        tail = box.output_tail()
    return out, error, time.monotonic() - started, tail


# -- secrets -------------------------------------------------------------------------------
READ_SECRETS = r'''
import os, glob

def algorithm(home, secret_file, project_file, session_file):
    found = {"env": {k: v for k, v in os.environ.items()}}
    for name, path in (("secret_file", secret_file), ("project_file", project_file),
                       ("session_file", session_file)):
        try:
            with open(path) as f:
                found[name] = f.read()
        except OSError as exc:
            found[name] = None
    try:
        found["home"] = os.listdir(home)
    except OSError:
        found["home"] = None
    found["proc_environ"] = []
    for path in glob.glob("/proc/*/environ"):
        try:
            with open(path, "rb") as f:
                found["proc_environ"].append(f.read().decode("latin-1"))
        except OSError:
            pass
    return found
'''


def test_secrets_are_invisible(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    secret = home / ".secret_token"
    secret.write_text("TOP-SECRET-FILE")
    for path in (tmp_path, home):
        path.chmod(0o755)
    secret.chmod(0o644)
    sessions = tmp_path / "sessions" / "someone-else"
    sessions.mkdir(parents=True)
    (sessions / "notes.txt").write_text("OTHER-SESSION")
    for path in (tmp_path / "sessions", sessions):
        path.chmod(0o755)
    (sessions / "notes.txt").chmod(0o644)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-PLANTED-SECRET")
    monkeypatch.setenv("STOP_TEST_SECRET", "PLANTED-ENV")
    out, error, _, _ = run_program(READ_SECRETS, (str(home), str(secret), str(ROOT / "pyproject.toml"),
                                                  str(sessions / "notes.txt")))
    assert error is None, error
    found = out.value
    text = repr(found)
    private = has("private_filesystem")
    for planted in ("sk-PLANTED-SECRET", "PLANTED-ENV") + (("TOP-SECRET-FILE", "OTHER-SESSION") if private else ()):
        assert planted not in text
    assert set(found["env"]) <= {"PATH", "LANG", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                 "MKL_NUM_THREADS", "PYTHONDONTWRITEBYTECODE", "PYTHONHASHSEED",
                                 "HOME", "TMPDIR", "PWD", "LC_CTYPE"}
    if private:
        assert found["project_file"] is None and found["home"] is None


# -- writing, disk -------------------------------------------------------------------------
WRITE_OUTSIDE = r'''
import os

def algorithm(targets):
    results = {}
    for path in targets:
        try:
            with open(path, "w") as f:
                f.write("pwned")
            results[path] = "written"
        except OSError as exc:
            results[path] = type(exc).__name__
    with open("mine.txt", "w") as f:
        f.write("ok")
    results["scratch"] = open("mine.txt").read()
    return results
'''


def test_cannot_write_outside_its_scratch(tmp_path):
    victim_dir = tmp_path / "victim"
    victim_dir.mkdir(mode=0o777)
    victim_dir.chmod(0o777)  # even a world-writable folder on the host is out of reach
    targets = [str(victim_dir / "x.txt"), str(ROOT / "pwned.txt"), "/tmp/stop-pwned.txt",
               "/sandbox/lib/child.py", str(Path(__file__).resolve())]
    out, error, _, _ = run_program(WRITE_OUTSIDE, (targets,))
    assert error is None, error
    assert out.value["scratch"] == "ok"
    assert not (ROOT / "pwned.txt").exists()
    assert "pwned" not in Path(__file__).read_text().split("WRITE_OUTSIDE")[0][-50:]
    if has("private_filesystem"):  # the fallback modes protect only what the run's uid may not write
        assert not Path("/tmp/stop-pwned.txt").exists()
        assert not (victim_dir / "x.txt").exists()
        assert all(out.value[t] != "written" for t in targets)


FILL_DISK = r'''
def algorithm(megabytes):
    chunk = b"x" * (1 << 20)
    written = 0
    try:
        with open("big.bin", "wb") as f:
            for _ in range(megabytes):
                f.write(chunk)
                written += 1
    except OSError as exc:
        return {"written_mb": written, "error": type(exc).__name__ + ": " + str(exc)}
    return {"written_mb": written, "error": None}
'''


def test_file_size_is_capped():
    out, error, _, _ = run_program(FILL_DISK, (64,), limits=Limits(output_kb=4096))
    assert error is None, error
    assert out.value["written_mb"] <= 4
    assert "File too large" in out.value["error"]


FILL_AND_HOLD = r'''
import os

def algorithm(files):
    total = 0
    chunk = b"f" * (512 << 10)
    error = None
    try:
        for i in range(files):
            with open(f"fill{i}.bin", "wb") as f:
                f.write(chunk)
            total += 1
    except OSError as exc:
        error = exc.errno
    # the run stays alive (the engine has not closed it): its files hold the space
    return {"files": total, "errno": error, "paths": [os.path.abspath(f"fill{i}.bin") for i in range(total)][:50]}
'''


def test_scratch_cannot_fill_the_disk():
    skip_unless(has("scratch_size_cap"), "no size-capped tmpfs scratch here (see stop-tui doctor)")
    cap = PoolConfig().scratch_mb
    out, error, _, _ = run_program(FILL_AND_HOLD, (4 * cap,), time_limit=30)
    assert error is None, error
    assert out.value["errno"] == 28 and out.value["files"] <= 2 * cap + 1  # ENOSPC at the cap

LOOK_AND_WRITE = r'''
import os

def algorithm(others, megabytes):
    st = os.statvfs(".")
    out = {"listing": sorted(os.listdir(".")), "free_mb": st.f_bavail * st.f_frsize / 2**20,
           "others": [p for p in others if os.path.exists(p)]}
    for i in range(megabytes * 2):
        with open(f"mine{i}.bin", "wb") as f:
            f.write(b"m" * (512 << 10))
    out["written_mb"] = sum(os.path.getsize(f"mine{i}.bin") for i in range(megabytes * 2)) / 2**20
    return out
'''

WRITER_ZEROS = r'''
import numpy as np

def algorithm(train_samples, train_parity, test_samples):
    for i in range(4):  # 2 MB of scratch per call; an OSError here would cost the score
        with open(f"w{i}.bin", "wb") as f:
            f.write(b"w" * (512 << 10))
    return np.zeros(len(test_samples), dtype=int)
'''


def _pool_for(mode: str) -> Pool | None:
    if mode == "default":
        skip_unless(has("per_run_scratch"), "runs share one scratch here (see stop-tui doctor)")
        return None
    needs_root("the unshare fallback")
    pool = Pool(PoolConfig(mode=mode))
    per_run = pool.describe()["protections"]["per_run_scratch"]
    if not per_run:
        pool.close()
    skip_unless(per_run, f"no private scratch per run in {mode} mode here")
    return pool


@pytest.mark.parametrize("mode", ["default", "unshare"])
def test_a_full_scratch_hurts_no_other_run_and_nothing_outlives_its_run(mode):
    """Two runs at once: one fills its scratch to the cap and holds it, the other still has
    its whole scratch, writes, and scores exactly as its predictions deserve. The next run
    finds nothing of either."""
    pool = _pool_for(mode)
    cap = PoolConfig().scratch_mb
    try:
        with Sandbox(FILL_AND_HOLD, "algorithm", pool=pool) as hog:
            full = hog.call((4 * cap,), 30)
            assert full.error is None, full.error
            assert full.value["errno"] == 28 and full.value["files"] <= 2 * cap + 1  # ENOSPC
            paths = full.value["paths"]
            # the hog is alive and full; a second run, at the same time:
            with Sandbox(LOOK_AND_WRITE, "algorithm", pool=pool) as other:
                seen = other.call((paths, 32), 30)
            assert seen.error is None, seen.error
            assert seen.value["listing"] == [] and seen.value["others"] == []
            assert seen.value["free_mb"] >= 0.9 * cap and seen.value["written_mb"] == 32
            if pool is None:  # and a candidate scored meanwhile writes freely, scores exactly
                result = score_solution(load_task("lpn"), WRITER_ZEROS, "val")
                assert result.error is None and result.score == pytest.approx(ZEROS_VAL)
        # the hog is gone: the next run sees none of its files and the whole cap free
        with Sandbox(LOOK_AND_WRITE, "algorithm", pool=pool) as after:
            seen = after.call((paths, 0), 10)
        assert seen.error is None, seen.error
        assert seen.value["listing"] == [] and seen.value["others"] == []
        assert seen.value["free_mb"] >= 0.9 * cap
        if pool is not None:  # the host's file system: read-only to the run but for its scratch
            with Sandbox(WRITE_OUTSIDE, "algorithm", pool=pool) as box:
                out = box.call((["/tmp/stop-pwned.txt", "/var/tmp/stop-pwned.txt"],), 10)
            assert out.error is None, out.error
            assert out.value["scratch"] == "ok"
            assert not Path("/tmp/stop-pwned.txt").exists() and not Path("/var/tmp/stop-pwned.txt").exists()
    finally:
        if pool is not None:
            pool.close()


FLOOD_OUTPUT = r'''
import sys

def algorithm():
    line = "z" * 1023 + "\n"
    for _ in range(20000):  # 20 MB
        sys.stdout.write(line)
    return "done"
'''


def test_output_flood_is_bounded():
    out, error, _, tail = run_program(FLOOD_OUTPUT, (), limits=Limits(output_kb=256))
    # Either the write fails inside the program (a clear error) or it finishes; the engine's
    # copy of the output never exceeds the cap.
    assert error is None or "File too large" in error or "Errno 27" in error, error
    assert len(tail) <= 2000


# -- network -------------------------------------------------------------------------------
CONNECT = r'''
import socket

def algorithm(port):
    results = {}
    for host, p in (("127.0.0.1", port), ("8.8.8.8", 53), ("::1", port)):
        try:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            s = socket.socket(family, socket.SOCK_STREAM)
            s.settimeout(1)
            s.connect((host, p))
            results[host] = "connected"
        except OSError as exc:
            results[host] = type(exc).__name__
    try:
        socket.getaddrinfo("example.com", 80)
        results["dns"] = "resolved"
    except OSError as exc:
        results["dns"] = type(exc).__name__
    return results
'''


def test_no_network_not_even_loopback():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    listener.settimeout(0.5)
    try:
        out, error, _, _ = run_program(CONNECT, (listener.getsockname()[1],), time_limit=10)
        with pytest.raises(TimeoutError):
            listener.accept()
    finally:
        listener.close()
    assert error is None, error
    assert "connected" not in out.value.values() and out.value["dns"] != "resolved"


OWN_SERVER = r'''
import socket

def algorithm():
    results = {}
    for name, family in (("inet", socket.AF_INET), ("inet6", socket.AF_INET6), ("unix", socket.AF_UNIX)):
        try:
            s = socket.socket(family, socket.SOCK_STREAM)
            s.close()
            results[name] = "created"
        except OSError as exc:
            results[name] = type(exc).__name__
    a, b = socket.socketpair()  # harmless, and what asyncio / multiprocessing need
    a.sendall(b"ok")
    results["socketpair"] = b.recv(2).decode()
    return results
'''


def test_no_sockets_at_all_not_even_a_private_loopback_server():
    """Runs share a network namespace with each other; with no sockets they cannot meet there."""
    out, error, _, _ = run_program(OWN_SERVER, ())
    assert error is None, error
    assert out.value == {"inet": "PermissionError", "inet6": "PermissionError",
                         "unix": "PermissionError", "socketpair": "ok"}


# -- namespaces and the kernel surface ------------------------------------------------------
# A run must not create (or join) a namespace of any kind: in a user namespace of its own it
# would hold capabilities over its own mounts (a tmpfs past its scratch cap) and reach much more
# of the kernel. The seccomp filter refuses unshare/setns, clone with a CLONE_NEW* flag, and
# answers clone3 with ENOSYS (glibc then uses clone, which is checked); fork and threads work.
NAMESPACE_ATTEMPTS = r"""
import ctypes, errno, os, shutil, sys, threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

CLONE_NEW = {"USER": 0x10000000, "NS": 0x00020000, "PID": 0x20000000, "NET": 0x40000000,
             "IPC": 0x08000000, "UTS": 0x04000000, "CGROUP": 0x02000000, "TIME": 0x00000080}
NR = {"x86_64": {"clone": 56, "clone3": 435, "setns": 308},
      "aarch64": {"clone": 220, "clone3": 435, "setns": 268}}[os.uname().machine]
libc = ctypes.CDLL(None, use_errno=True)
IN_CHILD = "import ctypes; c = ctypes.CDLL(None, use_errno=True); print(c.unshare(0x10000000), ctypes.get_errno())"


def name_of(value, err):
    return "created" if value >= 0 else errno.errorcode.get(err, str(err))


def raw(nr, *args):
    ctypes.set_errno(0)
    return libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args]), ctypes.get_errno()


def attempts(exec_ok):
    out = {}
    if hasattr(os, "unshare"):  # Python 3.12+
        try:
            os.unshare(os.CLONE_NEWUSER)
            out["os.unshare"] = "created"
        except OSError as exc:
            out["os.unshare"] = errno.errorcode[exc.errno]
    for name, flag in CLONE_NEW.items():
        ctypes.set_errno(0)
        out["unshare " + name] = name_of(libc.unshare(flag), ctypes.get_errno())
    for ns in ("user", "net", "mnt"):  # join another's namespace (init's, else its own)
        try:
            fd = os.open("/proc/1/ns/" + ns, os.O_RDONLY)
        except OSError:
            fd = os.open("/proc/self/ns/" + ns, os.O_RDONLY)
        out["setns " + ns] = name_of(*raw(NR["setns"], fd, 0))
        os.close(fd)
    for name, flag in CLONE_NEW.items():
        if name == "TIME":
            continue  # clone() reads that bit as part of the exit signal: only unshare/clone3 have it
        pid, err = raw(NR["clone"], flag | 17, 0, 0, 0, 0)  # | SIGCHLD, no new stack: a fork
        if pid == 0:
            os._exit(0)
        if pid > 0:
            os.waitpid(pid, 0)
        out["clone " + name] = name_of(pid, err)
    out["clone3"] = name_of(*raw(NR["clone3"], 0, 0))
    # what the user namespace was for: a tmpfs of its own, past the scratch cap
    os.makedirs("big", exist_ok=True)
    ctypes.set_errno(0)
    out["mount tmpfs"] = name_of(libc.mount(b"tmpfs", b"big", b"tmpfs", ctypes.c_ulong(0), b"size=4g"),
                                 ctypes.get_errno())
    if shutil.which("unshare"):  # (posix_spawn: subprocess may not be importable here)
        argv = [shutil.which("unshare"), "-U", "-r", "true"]
        r, w = os.pipe()
        pid = os.posix_spawn(argv[0], argv, {}, file_actions=[(os.POSIX_SPAWN_DUP2, w, 2)])
        os.close(w)
        code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        said = os.read(r, 4096).decode(errors="replace")
        os.close(r)
        out["unshare(1) -U"] = "created" if code == 0 else ("EPERM" if "not permitted" in said else said)
    if exec_ok:  # the filter is inherited across exec
        import subprocess
        proc = subprocess.run([sys.executable, "-c", IN_CHILD], capture_output=True, text=True)
        value, err = proc.stdout.split()
        out["exec'd unshare"] = name_of(int(value), int(err))
    return out


def still_works(exec_ok):
    out = {}
    sums = []
    threads = [threading.Thread(target=lambda i=i: sums.append(int(np.arange(i + 1).sum())))
               for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out["threads"] = sorted(sums)
    with ThreadPoolExecutor(4) as pool:
        out["thread pool"] = sum(pool.map(lambda x: x * x, range(10)))
    pid = os.fork()
    if pid == 0:
        os._exit(int(np.linalg.solve(np.eye(2) * 2, np.array([6.0, 0.0]))[0]))
    out["fork"] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    argv = [sys.executable, "-c", "import sys; sys.exit(5)"] if exec_ok else [shutil.which("false")]
    if argv[0]:
        pid = os.posix_spawn(argv[0], argv, {})  # glibc: clone3 (ENOSYS), then clone
        out["posix_spawn"] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    if exec_ok:
        import subprocess
        out["subprocess"] = subprocess.run(argv).returncode
    return out
"""

NAMESPACES = NAMESPACE_ATTEMPTS + r"""

def algorithm(exec_ok):
    return {"attempts": attempts(exec_ok), "works": still_works(exec_ok)}
"""

# A solution that scores all-zeros if every attempt is refused and all-ones if one succeeds.
NAMESPACE_SOLUTION = NAMESPACE_ATTEMPTS + r"""
ESCAPED = []


def algorithm(train_samples, train_parity, test_samples):
    if not ESCAPED:
        ESCAPED.append("created" in attempts(False).values() or still_works(False)["fork"] != 3)
    return (np.ones if ESCAPED[0] else np.zeros)(len(test_samples), dtype=int)
"""

NAMESPACE_IMPROVER = NAMESPACE_ATTEMPTS + r"""

def improve_algorithm(initial_solution, utility, language_model):
    report = {"attempts": attempts(EXEC_OK), "works": still_works(EXEC_OK)}
    report["score"] = utility(initial_solution)
    return repr(report)
"""


def check_namespace_report(report: dict, exec_ok: bool) -> None:
    attempts = report["attempts"]
    assert "created" not in attempts.values(), attempts
    for key, value in attempts.items():
        if key.startswith(("unshare ", "setns ", "clone ")) or key in ("os.unshare", "exec'd unshare"):
            assert value == "EPERM", (key, value)
    assert attempts["clone3"] == "ENOSYS"
    assert attempts["mount tmpfs"] == "EPERM"
    assert attempts.get("unshare(1) -U", "EPERM") == "EPERM"
    assert len([k for k in attempts if k.startswith("clone ")]) == 7
    if exec_ok:
        assert attempts["exec'd unshare"] == "EPERM"
    works = report["works"]
    assert works["threads"] == [0, 1, 3, 6] and works["thread pool"] == 285 and works["fork"] == 3
    if "posix_spawn" in works:
        assert works["posix_spawn"] == (5 if exec_ok else 1)
    if exec_ok:
        assert works["subprocess"] == 5


@pytest.mark.parametrize("mode", ["default", "unshare", "plain"])
def test_no_namespaces_of_any_kind_but_threads_and_fork_work(mode):
    if mode == "unshare":
        needs_root("the unshare fallback")
    pool = None if mode == "default" else Pool(PoolConfig(mode=mode))
    try:
        protections = (pool.describe() if pool else default_pool().describe())["protections"]
        assert protections["no_namespaces"] and protections["kernel_surface"]
        exec_ok = EXEC_OK if mode == "default" else (not ROOT_USER or prefix_readable_by_others())
        with Sandbox(NAMESPACES, "algorithm", pool=pool) as box:
            out = box.call((exec_ok,), 20)
        assert out.error is None, out.error
        check_namespace_report(out.value, exec_ok)
        if mode != "default":  # the host's file system: the unshare(1) binary is there to try
            assert out.value["attempts"]["unshare(1) -U"] == "EPERM"
            assert "posix_spawn" in out.value["works"]
    finally:
        if pool is not None:
            pool.close()


def test_a_solution_trying_namespaces_scores_like_its_predictions():
    result = score_solution(load_task("lpn"), NAMESPACE_SOLUTION, "val")
    assert result.error is None, result.error
    assert result.score == pytest.approx(ZEROS_VAL)  # all ones (an escape) would score otherwise


def test_an_improver_trying_namespaces_is_refused_and_still_scores():
    source = NAMESPACE_IMPROVER.replace("EXEC_OK", repr(EXEC_OK))
    out, backend, lm, utility, scored = run_hostile_improver(source)
    assert out.error is None, out.error
    report = ast.literal_eval(out.value)  # our own repr of plain data from the test program
    check_namespace_report(report, EXEC_OK)
    assert report["score"] == 0.5 and utility.uses == 1 and scored == [ZEROS]
    assert backend.requests == 0


KERNEL_SURFACE = r"""
import ctypes, errno, os, signal, time

import numpy as np

NR = {"x86_64": {"ptrace": 101, "bpf": 321, "perf_event_open": 298, "userfaultfd": 323,
                 "keyctl": 250, "add_key": 248, "request_key": 249, "fsopen": 430,
                 "pivot_root": 155, "umount2": 166},
      "aarch64": {"ptrace": 117, "bpf": 280, "perf_event_open": 241, "userfaultfd": 282,
                  "keyctl": 219, "add_key": 217, "request_key": 218, "fsopen": 430,
                  "pivot_root": 41, "umount2": 39}}[os.uname().machine]
libc = ctypes.CDLL(None, use_errno=True)


def raw(nr, *args):
    ctypes.set_errno(0)
    args = [a if isinstance(a, (bytes, ctypes.Array)) else ctypes.c_long(a) for a in args]
    value = libc.syscall(ctypes.c_long(nr), *args)
    return "ok" if value >= 0 else errno.errorcode.get(ctypes.get_errno(), "?")


def algorithm():
    out = {}
    kid = os.fork()  # a process of its own: ptrace would be allowed without the filter
    if kid == 0:
        time.sleep(30)
        os._exit(0)
    out["ptrace attach"] = raw(NR["ptrace"], 16, kid, 0, 0)  # PTRACE_ATTACH
    os.kill(kid, signal.SIGKILL)
    os.waitpid(kid, 0)
    attr = ctypes.create_string_buffer(128)
    out["bpf"] = raw(NR["bpf"], 0, attr, 128)  # BPF_MAP_CREATE
    out["perf_event_open"] = raw(NR["perf_event_open"], attr, 0, -1, -1, 0)
    out["userfaultfd"] = raw(NR["userfaultfd"], 0x80000 | 1)  # O_CLOEXEC | UFFD_USER_MODE_ONLY
    out["keyctl"] = raw(NR["keyctl"], 0, -3, 1)  # the session keyring's id
    out["add_key"] = raw(NR["add_key"], b"user", b"stop", b"x", 1, -3)
    out["request_key"] = raw(NR["request_key"], b"user", b"stop", 0, 0)
    out["fsopen"] = raw(NR["fsopen"], b"tmpfs", 0)
    out["pivot_root"] = raw(NR["pivot_root"], b".", b".")
    out["umount2"] = raw(NR["umount2"], b"/proc", 2)  # MNT_DETACH
    ctypes.set_errno(0)
    out["chroot"] = "ok" if libc.chroot(b".") == 0 else errno.errorcode.get(ctypes.get_errno(), "?")
    out["numpy"] = float(np.linalg.det(np.eye(3) * 2))
    return out
"""


def test_kernel_surface_is_refused_and_numpy_still_works():
    out, error, _, _ = run_program(KERNEL_SURFACE, (), time_limit=10)
    assert error is None, error
    report = dict(out.value)
    assert report.pop("numpy") == pytest.approx(8.0)
    assert report == {name: "EPERM" for name in report} and len(report) == 11, report


# -- outliving the evaluation ------------------------------------------------------------
ESCAPE = r'''
import os, sys, time

def algorithm(marker):
    # a daemon: double fork, new session, exec a long sleeper that carries the marker
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(600)", marker])
        os._exit(0)
    # a plain child in its own process group
    if os.fork() == 0:
        os.setpgid(0, 0)
        os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(600)", marker])
    time.sleep(0.5)
    return "left children behind"
'''


def test_daemons_and_new_sessions_die_with_the_run():
    needs_exec()
    marker = f"stop-escape-{os.getpid()}-{time.monotonic_ns()}"
    out, error, _, _ = run_program(ESCAPE, (marker,))
    assert error is None, error
    assert out.value == "left children behind"
    assert wait_until(lambda: not marked_processes(marker)), "a daemon survived the run"


ESCAPE_NO_EXEC = r'''
import os, time

def algorithm():
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            time.sleep(600)
        os._exit(0)
    time.sleep(0.3)
    return "left children behind"
'''

ESCAPE_AND_HANG = ESCAPE.replace('return "left children behind"', "time.sleep(600)")


def test_killed_run_takes_its_daemons_along():
    needs_exec()
    marker = f"stop-escape-hang-{os.getpid()}-{time.monotonic_ns()}"
    out, error, elapsed, _ = run_program(ESCAPE_AND_HANG, (marker,), time_limit=1.0)
    assert error is not None and "timed out" in error
    assert elapsed < 8
    assert wait_until(lambda: not marked_processes(marker)), "a daemon survived the kill"


# Processes that stay until the engine dies: a new session whose leader stays (a true daemon,
# its parent gone, is killed by the zygote's orphan sweep within 0.1 s: too briefly to be seen
# reliably on a loaded machine) with a child, and a child in its own process group.
SESSIONS_AND_HANG = r'''
import os, sys, time

def algorithm(marker):
    sleeper = [sys.executable, "-c", "import time; time.sleep(600)", marker]
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            os.execv(sys.executable, sleeper)
        os.execv(sys.executable, sleeper)
    if os.fork() == 0:
        os.setpgid(0, 0)
        os.execv(sys.executable, sleeper)
    time.sleep(600)
'''


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def test_nothing_survives_a_killed_engine(tmp_path):
    """kill -9 of the engine mid-run: the worker, the run and what it started in other
    sessions and process groups all go with it."""
    needs_exec()
    import subprocess
    import sys

    marker = f"stop-orphan-{os.getpid()}-{time.monotonic_ns()}"
    script = tmp_path / "engine.py"
    script.write_text(
        "import sys\n"
        "from stop_tui.engine.sandbox.pool import default_pool\n"
        "from stop_tui.engine.sandbox.process import Sandbox\n"
        f"SOURCE = {SESSIONS_AND_HANG!r}\n"
        "box = Sandbox(SOURCE, 'algorithm')\nbox.start()\n"
        "print('started', box.load_error or default_pool().worker_pid, flush=True)\n"
        f"print(box.call(({marker!r},), 60), flush=True)\n")
    engine = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                              cwd=ROOT)
    try:
        started, worker = engine.stdout.readline().split(maxsplit=1)
        assert started == "started" and worker.strip().isdigit(), worker
        assert wait_until(lambda: len(marked_processes(marker)) >= 3 or engine.poll() is not None, 30)
        ended = f"the engine ended: {engine.stdout.read()}" if engine.poll() is not None else ""
        assert len(marked_processes(marker)) >= 3, f"the run's processes never started {ended}"
    finally:
        engine.kill()
        engine.wait()
    assert wait_until(lambda: not marked_processes(marker) and not _running(int(worker)), 10), \
        f"outlived the engine: {describe(marked_processes(marker))}, worker running: {_running(int(worker))}"


FORK_BOMB = r'''
import os, time

def algorithm():
    children = 0
    try:
        while children < 100000:
            pid = os.fork()
            if pid == 0:
                time.sleep(600)
                os._exit(0)
            children += 1
    except OSError as exc:
        return {"children": children, "error": type(exc).__name__}
    return {"children": children, "error": None}
'''


def test_fork_bomb_is_bounded_and_cleaned_up():
    skip_unless(has("process_limit"), "the per-run process limit needs the per-run uid (root)")
    out, error, _, _ = run_program(FORK_BOMB, (), time_limit=20, limits=Limits(processes=64))
    assert error is None, error
    assert out.value["children"] < 64 and out.value["error"] in ("BlockingIOError", "OSError")


# -- taking the engine down ---------------------------------------------------------------
SIGNALS = r'''
import os, signal

def algorithm(engine_pid):
    results = {}
    for name, action in (("engine", lambda: os.kill(engine_pid, signal.SIGKILL)),
                         ("parent", lambda: os.kill(os.getppid(), signal.SIGKILL)),
                         ("init", lambda: os.kill(1, signal.SIGKILL)),
                         ("engine_group", lambda: os.killpg(engine_pid, signal.SIGKILL))):
        try:
            action()
            results[name] = "sent"
        except OSError as exc:
            results[name] = type(exc).__name__
    return results
'''


def test_cannot_signal_the_engine_or_the_worker():
    out, error, _, _ = run_program(SIGNALS, (os.getpid(),))
    assert error is None, error
    assert "sent" not in out.value.values(), out.value
    assert default_pool().describe()["mode"] == MODE


KILL_ALL = r'''
import os, signal

def algorithm():
    try:
        os.kill(-1, signal.SIGKILL)  # every process this uid may signal (itself excepted)
    except ProcessLookupError:
        pass  # there was nobody else to signal
    return "still here"
'''


def test_kill_everything_hurts_only_the_run():
    out, error, _, _ = run_program(KILL_ALL, ())
    assert error is None and out.value == "still here"


MEMORY = r'''
def algorithm(gigabytes):
    block = bytearray(gigabytes << 30)
    return len(block)
'''


def test_memory_bomb_fails_inside_the_sandbox():
    out, error, _, _ = run_program(MEMORY, (64,), limits=Limits(memory_mb=1024))
    assert error is not None and "MemoryError" in error


@pytest.mark.parametrize("body, what", [
    ("while True:\n        pass", "cpu spin"),
    ("import time\n    time.sleep(600)", "sleep"),
    ("import os\n    r, w = os.pipe()\n    os.read(r, 1)", "blocking read"),
    ("import signal, time\n    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n    while True:\n        time.sleep(0.01)", "ignores SIGTERM"),
])
def test_hangs_are_killed_on_time(body, what):
    source = f"def algorithm():\n    {body}\n"
    out, error, elapsed, _ = run_program(source, (), time_limit=0.5)
    assert error == "timed out after 1.5 s", (what, error)
    assert elapsed < 5, (what, elapsed)


def test_top_level_spin_fails_at_load():
    out, error, elapsed, _ = run_program("while True:\n    pass\ndef algorithm():\n    return 1\n",
                                         limits=Limits(load_seconds=1.0))
    assert error == "loading the program (its top-level code) timed out after 1 s"
    assert elapsed < 5


@pytest.mark.parametrize("source, expected", [
    # forges a reply to the next call on the engine's socket, then answers this one
    ('import os, json, socket\n'
     'def algorithm():\n'
     '    for fd in range(3, 64):\n'
     '        try:\n'
     '            s = socket.socket(fileno=os.dup(fd))\n'
     '        except OSError:\n'
     '            continue\n'
     '        s.sendall(json.dumps({"op": "result", "n": 99, "value": 1.0}).encode() + b"\\n")\n'
     '    return 0\n', "protocol violation"),
    ('import os\n'
     'def algorithm():\n'
     '    for fd in range(3, 64):\n'
     '        try:\n'
     '            os.write(fd, b"{not json\\n")\n'
     '        except OSError:\n'
     '            pass\n'
     '    import time; time.sleep(5)\n', "protocol violation"),
    ('def algorithm():\n    x = []\n    for _ in range(5000):\n        x = [x]\n    return x\n', "nested too deeply"),
    ('def algorithm():\n    return "x" * (40 << 20)\n', "reply too large"),
    ('def algorithm():\n    return object()\n', "cannot return a object"),
    ('import sys\ndef algorithm():\n    sys.exit(3)\n', "SystemExit"),
    ('import os\ndef algorithm():\n    os._exit(7)\n', "exited (code 7)"),
])
def test_malformed_and_forged_replies_are_rejected(source, expected):
    out, error, _, _ = run_program(source, (), time_limit=3)
    assert error is not None and expected in error, error


# -- scoring -------------------------------------------------------------------------------
HOSTILE_BUT_ZEROS = r'''
import os, socket, numpy as np

def algorithm(train_samples, train_parity, test_samples):
    for path in (__EVALUATOR__, os.path.expanduser("~/.bashrc")):  # the task's evaluator, a dotfile
        try:
            open(path).read()
        except OSError:
            pass
    try:
        socket.create_connection(("127.0.0.1", 22), timeout=0.1)
    except OSError:
        pass
    try:
        os.kill(os.getppid(), 9)
    except OSError:
        pass
    return np.zeros(len(test_samples), dtype=int)
'''.replace("__EVALUATOR__", repr(str(ROOT / "tasks" / "lpn" / "evaluate.py")))

LABEL_HUNTER = r'''
import gc, sys, numpy as np

def algorithm(train_samples, train_parity, test_samples):
    # look for the test labels anywhere in this process: they are not here
    for obj in gc.get_objects():
        if isinstance(obj, np.ndarray) and obj.shape == (20,) and obj is not train_parity:
            return obj
    return np.zeros(len(test_samples), dtype=int)
'''


def test_hostile_solution_scores_like_its_predictions():
    lpn = load_task("lpn")
    assert score_solution(lpn, ZEROS, "val").score == pytest.approx(ZEROS_VAL)
    assert score_solution(lpn, HOSTILE_BUT_ZEROS, "val").score == pytest.approx(ZEROS_VAL)
    hunted = score_solution(lpn, LABEL_HUNTER, "val")
    assert hunted.error is None and hunted.score < 0.7


@pytest.mark.parametrize("ret, score, reason", [
    ("np.zeros((len(test_samples), 1), dtype=int)", ZEROS_VAL, None),  # the reference's shape bug
    ("np.zeros(1000, dtype=int)", 1e-6, "unusable predictions"),
    # plain data that is not predictions: nothing matches, nothing is decoded engine-side
    ("{'__ndarray__': [1] * 20, 'dtype': 'int64', 'shape': [20]}", 0.0, None),
    ("'1' * 20", 0.0, None),
])
def test_odd_returns_score_as_specified(ret, score, reason):
    source = f"import numpy as np\ndef algorithm(train_samples, train_parity, test_samples):\n    return {ret}\n"
    result = score_solution(load_task("lpn"), source, "val")
    assert result.score == pytest.approx(score)
    assert (result.error is None) if reason is None else (reason in (result.error or ""))
    assert result.score <= 1.0


def test_slow_solution_fails_by_engine_clock():
    source = ("import time, numpy as np\ndef algorithm(a, b, c):\n"
              "    time.sleep(2.2)\n    return np.zeros(len(c), dtype=int)\n")
    result = score_solution(load_task("lpn"), source, "val")
    assert result.score == pytest.approx(1e-6)
    assert "instance 0" in result.error and ("took" in result.error or "timed out" in result.error)


# -- improvers: the LM budget and the proxies ---------------------------------------------
class CountingBackend:
    """Answers every request with the all-zeros solution; counts what reaches it."""

    model = "scripted"
    price_key = "local"
    honours_n = True

    def __init__(self) -> None:
        self.requests = 0
        self.lock = threading.Lock()

    def request(self, system, user, *, n, temperature, max_tokens, seed=None) -> Completions:
        with self.lock:
            self.requests += 1
        return Completions(texts=[f"```python\n{ZEROS}```"] * n, prompt_tokens=10, completion_tokens=5)

    complete = request

    def close(self) -> None:
        pass


def run_hostile_improver(source: str, *, lm_budget: int = 2, utility_budget: int = 3,
                         time_limit: float = 20.0):
    backend = CountingBackend()
    events: list = []
    service = LMService(backend, max_tokens=64, seed=0, emit=events.append, put_text=lambda t: str(hash(t)))
    lm = service.handle("t/r1", lm_budget, 2)
    scored: list[str] = []

    def score(src: str, use: int) -> float:
        scored.append(src)
        return 0.5

    utility = Utility("def utility(s): ...", utility_budget, score)
    try:
        out = run_improver(source, ZEROS, utility, lm, limits=Limits(), time_limit=time_limit, seed=1)
    finally:
        service.close()
    return out, backend, lm, utility, scored


BUDGET_GRABBER = r'''
def improve_algorithm(initial_solution, utility, language_model):
    language_model.budget = 1000
    language_model._uses = 0
    utility.budget = 1000
    replies, errors = [], []
    for _ in range(5):
        try:
            replies += language_model.prompt("x", "improve", n_responses=1)
        except Exception as exc:
            errors.append(str(exc))
    scores = [utility(initial_solution) for _ in range(6)]
    return repr({"replies": len(replies), "errors": errors, "scores": scores})
'''


def test_improver_cannot_raise_its_budgets():
    out, backend, lm, utility, scored = run_hostile_improver(BUDGET_GRABBER)
    assert out.error is None, out.error
    report = ast.literal_eval(out.value)  # our own repr of plain data from the test program
    assert report["replies"] == 2 and backend.requests == 2
    assert len(report["errors"]) == 3 and all("budget" in e for e in report["errors"])
    assert utility.uses == 3 and len(scored) == 3
    assert report["scores"] == [0.5, 0.5, 0.5, 0.0, 0.0, 0.0]


OWN_CLIENT = r'''
import os, socket

def improve_algorithm(initial_solution, utility, language_model):
    attempts = {}
    try:
        import openai
        attempts["openai"] = "imported"
    except Exception as exc:
        attempts["openai"] = type(exc).__name__
    for host, port in (("api.openai.com", 443), ("127.0.0.1", int(os.environ.get("PORT", "8080")))):
        try:
            socket.create_connection((host, port), timeout=1)
            attempts[host] = "connected"
        except OSError as exc:
            attempts[host] = type(exc).__name__
    attempts["key"] = os.environ.get("OPENAI_API_KEY")
    return repr(attempts)
'''


def test_improver_cannot_reach_an_lm_of_its_own(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-PLANTED")
    out, backend, lm, _, _ = run_hostile_improver(OWN_CLIENT)
    assert out.error is None, out.error
    attempts = ast.literal_eval(out.value)
    assert "connected" not in attempts.values() and attempts["key"] is None
    if has("private_filesystem"):  # the venv's packages are not visible
        assert attempts["openai"] == "ModuleNotFoundError"
    assert backend.requests == 0 and lm.uses == 0


RPC_FLOOD = r'''
import threading

def improve_algorithm(initial_solution, utility, language_model):
    results = []
    def hammer():
        try:
            results.append(utility(initial_solution))
        except Exception as exc:
            results.append(str(exc))
    threads = [threading.Thread(target=hammer) for _ in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return repr(results)
'''


def test_improver_rpc_flood_is_bounded():
    out, _, _, utility, scored = run_hostile_improver(RPC_FLOOD, utility_budget=5)
    assert out.error is None, out.error
    assert utility.uses == 5 and len(scored) == 5


SPIN_IMPROVER = "def improve_algorithm(initial_solution, utility, language_model):\n    while True:\n        pass\n"


def test_improver_spin_is_killed_at_its_time_limit():
    started = time.monotonic()
    out, *_ = run_hostile_improver(SPIN_IMPROVER, time_limit=1.0)
    assert out.error == "timed out after 1 s"
    assert time.monotonic() - started < 8


def test_hostile_improvers_are_contained(tmp_path, monkeypatch):
    """The solution-side attacks, from inside improve_algorithm (with its proxies around)."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-PLANTED-SECRET")
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-FILE")
    secret.chmod(0o644)
    tmp_path.chmod(0o755)
    marker = f"stop-improver-escape-{os.getpid()}-{time.monotonic_ns()}"
    cases = [
        (READ_SECRETS, (str(tmp_path), str(secret), str(ROOT / "pyproject.toml"), str(secret))),
        *([(ESCAPE, (marker,))] if EXEC_OK else []),
        (SIGNALS, (os.getpid(),)),
        (WRITE_OUTSIDE, ([str(ROOT / "pwned.txt"), "/tmp/stop-pwned.txt"],)),
    ]
    for program, args in cases:
        source = program + f"\n\ndef improve_algorithm(initial_solution, utility, language_model):\n" \
                           f"    return repr(algorithm(*{args!r}))\n"
        out, backend, lm, utility, _ = run_hostile_improver(source)
        assert out.error is None, out.error
        for planted in ("sk-PLANTED-SECRET",) + (("TOP-SECRET-FILE",) if has("private_filesystem") else ()):
            assert planted not in out.value
        assert "'sent'" not in out.value and backend.requests == 0
    assert wait_until(lambda: not marked_processes(marker))
    assert not (ROOT / "pwned.txt").exists()
    if has("private_filesystem"):
        assert not Path("/tmp/stop-pwned.txt").exists()
    Path("/tmp/stop-pwned.txt").unlink(missing_ok=True)


# -- the kernel fallback -------------------------------------------------------------------
def test_unshare_fallback_still_isolates(tmp_path, monkeypatch):
    needs_root("the unshare fallback")
    pool = Pool(PoolConfig(mode="unshare"))
    try:
        info = pool.describe()
        assert info["mode"] == "unshare"
        assert {"bubblewrap", "private_filesystem"} <= set(info["missing"])
        assert info["protections"]["no_network"] and info["protections"]["pid_namespace"]
        monkeypatch.setenv("STOP_TEST_SECRET", "PLANTED-ENV")
        with Sandbox(ESCAPE_NO_EXEC, "algorithm", pool=pool) as box:
            assert box.call((), 5).value == "left children behind"
        assert wait_until(lambda: not run_uid_processes(pool))
        with Sandbox("import os\ndef algorithm():\n    return dict(os.environ)\n", "algorithm", pool=pool) as box:
            assert "STOP_TEST_SECRET" not in box.call((), 5).value
        with Sandbox(CONNECT, "algorithm", pool=pool) as box:
            assert "connected" not in box.call((9,), 10).value.values()
    finally:
        pool.close()


def test_plain_mode_reports_what_is_missing():
    pool = Pool(PoolConfig(mode="plain"))
    try:
        info = pool.describe()
        assert info["mode"] == "plain"
        assert {"no_network", "pid_namespace", "private_filesystem"} <= set(info["missing"])
        assert info["protections"]["no_sockets"]  # seccomp needs no namespace
        assert info["protections"]["no_namespaces"] and info["protections"]["kernel_surface"]
        with Sandbox(OWN_SERVER, "algorithm", pool=pool) as box:
            assert box.call((), 5).value["inet"] == "PermissionError"
        with Sandbox("def algorithm():\n    return 1\n", "algorithm", pool=pool) as box:
            assert box.call((), 5).value == 1
    finally:
        pool.close()


def test_worker_death_is_survived():
    """The zygote itself is killed mid-run: the run fails with a reason, the next one works."""
    pool = Pool()
    try:
        with Sandbox("import time\ndef algorithm():\n    time.sleep(30)\n", "algorithm", pool=pool) as box:
            assert box.load_error is None  # the worker is up and the run loaded: now kill it
            threading.Timer(0.5, lambda: os.killpg(pool._proc.pid, signal.SIGKILL)).start()
            out = box.call((), 10)
        assert out.error is not None and "sandbox process" in out.error
        with Sandbox("def algorithm():\n    return 2\n", "algorithm", pool=pool) as box:
            assert box.call((), 5).value == 2
    finally:
        pool.close()
