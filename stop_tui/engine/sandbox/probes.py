"""What the zygote checks of its own confinement when it starts, reported to the engine.

Standard library only: the zygote loads it inside the sandbox (see zygote.py). The checks are
reported under the protection names of protections.py (CHECKED_LIVE), plus two notes that say
why a check failed (NOTES). The per-run scratch and the seccomp filter are each tried for real
in a throwaway forked child, set up as a run would be.
"""

import ctypes
import json
import os
import signal
import socket
import threading

from . import scratch, seccomp

NOTES = ("per_run_scratch_error", "seccomp_error")
_libc = ctypes.CDLL(None, use_errno=True)


def checks(config, subreaper, scratch_error):
    """protection name -> bool for what the worker can see (and the NOTES)."""
    found = {}
    try:  # an own network namespace has no interface but its private loopback
        with open("/proc/net/dev") as f:
            names = {line.split(":")[0].strip() for line in f.readlines()[2:]}
        found["no_network"] = names <= {"lo"}
    except OSError:
        found["no_network"] = False
    try:
        found["pid_namespace"] = all(int(p) < 100 for p in os.listdir("/proc") if p.isdigit()) and os.getpid() < 10
    except OSError:
        found["pid_namespace"] = False
    found["kill_descendants"] = bool(subreaper)
    found["per_run_scratch"] = scratch_error is None
    found["per_run_scratch_error"] = scratch_error
    if config.get("read_only_rest"):  # the host's file system: a cap binds only if all else is read-only
        found["scratch_size_cap"] = scratch_error is None
    found.update(_probe_filter())
    return found


def _in_child(work):
    """Run `work()` in a throwaway forked child: (its JSON-able value, None), or (None, why not)
    when the child died before it could answer."""
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(reader)
        value = None
        try:
            value = work()
        finally:
            os.write(writer, json.dumps(value).encode())
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    try:
        return json.loads(data), None
    except ValueError:
        return None, "the probe died"


def private_scratch(config):
    """Fork a throwaway child that sets up a private scratch as a run would (as the uid a run
    would get, when root) and checks it: writable, capped, the rest read-only when asked.
    Returns None when it works, else why not."""
    if not config.get("scratch_bytes") or config.get("per_run_scratch") is False:
        return "switched off (PoolConfig.per_run_scratch=False)"
    uid = None
    if os.geteuid() == 0 and config.get("uid_base") is not None:
        uid = int(config["uid_base"])  # no run exists yet: slot 0's uid is free
    read_only_rest = bool(config.get("read_only_rest"))

    def work():
        try:
            size = 1 << 20
            error = scratch.make_private(config["scratch"], size, uid, read_only_rest)
            if error is None and uid is not None:
                os.setgroups([])
                os.setresgid(uid, uid, uid)
                os.setresuid(uid, uid, uid)
            if error is None:
                st = os.statvfs(config["scratch"])
                path = os.path.join(config["scratch"], "probe")
                written = 0
                try:
                    with open(path, "wb") as f:
                        for _ in range(4):
                            f.write(b"p" * size)
                            f.flush()
                            written += 1
                except OSError:
                    pass
                if st.f_blocks * st.f_frsize > 2 * size or written >= 2:
                    error = "the private scratch is not size-capped"
                elif read_only_rest and os.access("/", os.W_OK):
                    error = "the rest of the file system is still writable"
            return error
        except BaseException as exc:  # noqa: BLE001 - reported, never raised
            return f"{type(exc).__name__}: {exc}"[:500]

    error, died = _in_child(work)
    return died or error or None


def _syscall(nr, *args):
    """A raw syscall: (return value, errno). Integer or bytes arguments."""
    ctypes.set_errno(0)
    value = _libc.syscall(ctypes.c_long(nr), *[a if isinstance(a, bytes) else ctypes.c_long(a)
                                              for a in args])
    return value, ctypes.get_errno()


def _probe_filter():
    """Fork a throwaway child, install the filter as a run would, try what it must refuse.

    The child is the worker's uid (root, with CAP_SYS_ADMIN in bwrap mode): without the filter
    most of these would work, so each must fail with the filter's errno. The arguments are
    chosen so that nothing would change even if a call got through (an unknown file system
    type, a missing path, an invalid request). Fork and a thread must still work under the
    filter. Returns {"no_sockets", "no_namespaces", "kernel_surface", "no_shared_ipc",
    "seccomp_error"}."""
    result = {"no_sockets": False, "no_namespaces": False, "kernel_surface": False,
              "no_shared_ipc": False, "seccomp_error": None}
    nr = seccomp.numbers(os.uname().machine)
    if nr is None:
        result["seccomp_error"] = f"no seccomp filter for {os.uname().machine}"
        return result

    def work():
        found = dict(result, seccomp_error="the filter could not be installed")
        try:
            if seccomp.install():
                found["seccomp_error"] = None
                found.update(_refused(nr))
                if not _runs_still_work():
                    found["seccomp_error"] = "fork or threads fail under the filter"
                    found["no_namespaces"] = found["kernel_surface"] = False
                    found["no_shared_ipc"] = False
        except BaseException as exc:  # noqa: BLE001 - reported, never raised
            found["seccomp_error"] = f"{type(exc).__name__}: {exc}"[:500]
        return found

    found, died = _in_child(work)
    if died:
        result["seccomp_error"] = died
    else:
        result.update({k: v for k, v in found.items() if k in result})
    return result


def _refused(nr):
    """Under the filter: what each protection it gives must refuse, tried (name -> refused)."""
    refused = []
    for family in (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX):
        try:
            socket.socket(family, socket.SOCK_STREAM).close()
            refused.append(False)
        except OSError:
            refused.append(True)
    found = {"no_sockets": all(refused)}
    eperm = []
    eperm.append(_syscall(nr["unshare"], seccomp.CLONE_NEWUSER)[1])
    eperm.append(_syscall(nr["unshare"], seccomp.CLONE_NEWNS)[1])
    ns = os.open("/proc/self/ns/net", os.O_RDONLY)
    eperm.append(_syscall(nr["setns"], ns, 0)[1])
    os.close(ns)
    for flags in (seccomp.CLONE_NEWUSER, seccomp.CLONE_NEWNS, 0x20000000, 0x40000000):  # + NEWPID, NEWNET
        value, err = _syscall(nr["clone"], flags | signal.SIGCHLD, 0, 0, 0, 0)
        if value == 0:
            os._exit(0)  # (got through: the copy leaves at once)
        if value > 0:
            os.waitpid(value, 0)
        eperm.append(err)
    clone3 = _syscall(nr["clone3"], 0, 0)[1]
    found["no_namespaces"] = all(e == seccomp.EPERM for e in eperm) and clone3 == seccomp.ENOSYS
    surface = [
        _syscall(nr["mount"], b"none", b"/stop-probe-missing", b"stop-probe-nofs", 0, 0),
        _syscall(nr["umount2"], b"/stop-probe-missing", 0),
        _syscall(nr["fsopen"], b"stop-probe-nofs", 0),
        _syscall(nr["chroot"], b"/stop-probe-missing"),
        _syscall(nr["pivot_root"], b"/stop-probe-missing", b"/stop-probe-missing"),
        _syscall(nr["ptrace"], -1, 0, 0, 0),
        _syscall(nr["bpf"], -1, 0, 0),
        _syscall(nr["perf_event_open"], 0, 0, -1, -1, 0),
        _syscall(nr["userfaultfd"], -1),
        _syscall(nr["keyctl"], -1, 0, 0, 0, 0),
    ]
    found["kernel_surface"] = all(v == -1 and e == seccomp.EPERM for v, e in surface)
    create = 0o1600  # IPC_CREAT | 0600, key IPC_PRIVATE (0)
    ipc = {"shmget": _syscall(nr["shmget"], 0, 1 << 20, create),
           "semget": _syscall(nr["semget"], 0, 1, create),
           "msgget": _syscall(nr["msgget"], 0, create),
           "mq_open": _syscall(nr["mq_open"], b"stop-probe", os.O_RDWR | os.O_CREAT, 0o600, 0)}
    found["no_shared_ipc"] = all(v == -1 and e == seccomp.EPERM for v, e in ipc.values())
    # (whatever got through is removed again: IPC_RMID, mq_unlink)
    for call, remove in (("shmget", "shmctl"), ("semget", "semctl"), ("msgget", "msgctl")):
        if ipc[call][0] >= 0:
            _syscall(nr[remove], ipc[call][0], 0, 0, 0)
    if ipc["mq_open"][0] >= 0:
        os.close(ipc["mq_open"][0])
        _syscall(nr["mq_unlink"], b"stop-probe")
    return found


def _runs_still_work():
    """What runs need must still work under the filter: fork, and threads (glibc: clone3 -> clone)."""
    kid = os.fork()
    if kid == 0:
        os._exit(7)
    _, status = os.waitpid(kid, 0)
    ran = []
    thread = threading.Thread(target=ran.append, args=(1,))
    thread.start()
    thread.join(5)
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 7 and ran == [1]
