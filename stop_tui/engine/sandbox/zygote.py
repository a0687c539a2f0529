"""The warm sandbox worker (a "zygote"): numpy preloaded, one fresh forked child per run.

Started by path inside the isolation (bubblewrap, or the kernel fallback) as
`python -I zygote.py CTRL_FD`; it imports nothing from stop_tui and only the standard library
until the engine's config names what to preload. The engine talks to it over a SOCK_SEQPACKET
socket: one JSON object per packet, with file descriptors attached (SCM_RIGHTS) to `spawn`.

    engine -> zygote   {"op": "config", ...}                       once, first
    zygote -> engine   {"op": "ready", "checks": {...}}
    engine -> zygote   {"op": "spawn", "id", "limits"} + [socket fd, output fd]
    zygote -> engine   {"op": "spawned", "id", "pid"}  or  {"op": "failed", "id", "error"}
    engine -> zygote   {"op": "kill", "id"}
    zygote -> engine   {"op": "killed", "id", "left"}
    zygote -> engine   {"op": "exit", "id", "status"}              when a run's process ends

Each run: fork, new session, parent-death signal, its own unprivileged uid when the zygote is
root (so process rlimits bind and runs cannot signal each other or the zygote), rlimits
(address space, processes, files, file size, no core), its own scratch (a private size-capped
tmpfs in its own mount namespace where the zygote may mount, else a directory), stdout and
stderr to the engine's output file, then child.serve() on the run's socket. The zygote is a
child subreaper: whatever a run forks, daemonises or moves to a new session is re-parented
here when its parent dies, so killing a run kills its process tree, every process of its uid
and every orphan, until none is left.
"""

import ctypes
import importlib.util
import json
import os
import resource
import select
import shutil
import signal
import socket
import sys
import threading
import time

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
_libc = ctypes.CDLL(None, use_errno=True)


def _prctl(option, value):
    zero = ctypes.c_ulong(0)
    return _libc.prctl(option, ctypes.c_ulong(value), zero, zero, zero) == 0


# seccomp, installed in each run after its uid drop (and inherited by all it starts):
# - no sockets (network, loopback and unix alike; the engine's socket is inherited,
#   socketpair() stays allowed) nor io_uring instances (which can open sockets): EACCES;
# - no namespaces of any kind: unshare() and setns() refused, clone() refused when its flags ask
#   for a CLONE_NEW* namespace (fork, vfork and threads stay allowed), clone3() answers ENOSYS
#   (seccomp cannot read its flags, they sit in a struct; glibc then falls back to clone(),
#   which is checked). A user namespace would hand the run root-like capabilities over its
#   own mounts (a tmpfs past its scratch cap) and a much wider kernel surface;
# - no mounts (old and new mount API), pivot_root, chroot, ptrace, bpf, perf events,
#   userfaultfd or kernel keyrings: nothing a run needs, all kernel attack surface: EPERM;
# - no SysV shared memory, semaphores or message queues, no POSIX message queues (they live in
#   the worker's IPC namespace, shared by all runs and outliving each one): EPERM. POSIX shared
#   memory and semaphores are files in /dev/shm, which runs cannot write.
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
CLONE_NEW_ANY = (0x00000080 | 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000
                 | 0x20000000 | 0x40000000)  # NEWTIME NEWNS NEWCGROUP NEWUTS NEWIPC NEWUSER NEWPID NEWNET
_SYSCALLS = {  # machine -> AUDIT_ARCH, x32 bit, syscall numbers
    "x86_64": (0xC000003E, True, {
        "socket": 41, "io_uring_setup": 425, "clone": 56, "clone3": 435, "unshare": 272,
        "setns": 308, "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161,
        "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432,
        "fspick": 433, "mount_setattr": 442, "ptrace": 101, "bpf": 321, "perf_event_open": 298,
        "userfaultfd": 323, "add_key": 248, "request_key": 249, "keyctl": 250,
        "shmget": 29, "shmat": 30, "shmctl": 31, "shmdt": 67, "semget": 64, "semop": 65,
        "semctl": 66, "semtimedop": 220, "msgget": 68, "msgsnd": 69, "msgrcv": 70, "msgctl": 71,
        "mq_open": 240, "mq_unlink": 241, "mq_timedsend": 242, "mq_timedreceive": 243,
        "mq_notify": 244, "mq_getsetattr": 245}),
    "aarch64": (0xC00000B7, False, {
        "socket": 198, "io_uring_setup": 425, "clone": 220, "clone3": 435, "unshare": 97,
        "setns": 268, "mount": 40, "umount2": 39, "pivot_root": 41, "chroot": 51,
        "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432,
        "fspick": 433, "mount_setattr": 442, "ptrace": 117, "bpf": 280, "perf_event_open": 241,
        "userfaultfd": 282, "add_key": 217, "request_key": 218, "keyctl": 219,
        "shmget": 194, "shmat": 196, "shmctl": 195, "shmdt": 197, "semget": 190, "semop": 193,
        "semctl": 191, "semtimedop": 192, "msgget": 186, "msgsnd": 189, "msgrcv": 188,
        "msgctl": 187, "mq_open": 180, "mq_unlink": 181, "mq_timedsend": 182,
        "mq_timedreceive": 183, "mq_notify": 184, "mq_getsetattr": 185}),
}
_REFUSED_EACCES = ("socket", "io_uring_setup")
_REFUSED_EPERM = ("unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "open_tree",
                  "move_mount", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
                  "ptrace", "bpf", "perf_event_open", "userfaultfd", "add_key", "request_key",
                  "keyctl") + (
    # SysV IPC and POSIX message queues live in the worker's IPC namespace, shared by every
    # run and outliving each: a run could leave a big segment behind or read another's data.
    "shmget", "shmat", "shmctl", "shmdt", "semget", "semop", "semctl", "semtimedop", "msgget",
    "msgsnd", "msgrcv", "msgctl", "mq_open", "mq_unlink", "mq_timedsend", "mq_timedreceive",
    "mq_notify", "mq_getsetattr")


# A private scratch per run: the forked run enters its own mount namespace and mounts its own
# size-capped tmpfs over the scratch folder (while it still holds CAP_SYS_ADMIN, before the uid
# drop clears every capability). Its writes cannot fill another run's space, and they vanish
# with the namespace when its last process dies. In the fallback modes (host file system) the
# rest of the file system is made read-only in that namespace first.
CLONE_NEWNS = 0x00020000
MS_NOSUID, MS_NODEV, MS_REC, MS_PRIVATE = 0x2, 0x4, 0x4000, 1 << 18
NR_MOUNT_SETATTR = 442  # x86_64 and aarch64 alike
AT_RECURSIVE = 0x8000
MOUNT_ATTR_RDONLY = 0x1


_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def _private_scratch(path, size_bytes, uid, read_only_rest):
    """In this (forked) process: own mount namespace, the rest read-only if asked, a fresh tmpfs
    of `size_bytes` at `path` owned by `uid`. Returns an error string, or None on success."""
    if _libc.unshare(CLONE_NEWNS) != 0:
        return f"unshare(CLONE_NEWNS): {os.strerror(ctypes.get_errno())}"
    # Nothing mounted here may propagate back to the worker's (or the host's) namespace.
    if _libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        return f"mount private: {os.strerror(ctypes.get_errno())}"
    if read_only_rest:
        attr = _MountAttr(MOUNT_ATTR_RDONLY, 0, 0, 0)
        if _libc.syscall(ctypes.c_long(NR_MOUNT_SETATTR), ctypes.c_int(-100), b"/",
                         ctypes.c_uint(AT_RECURSIVE), ctypes.byref(attr),
                         ctypes.c_size_t(ctypes.sizeof(attr))) != 0:
            return f"mount_setattr read-only: {os.strerror(ctypes.get_errno())}"
    owner = uid if uid is not None else os.getuid()
    inodes = max(1024, size_bytes // 4096)
    options = f"size={int(size_bytes)},nr_inodes={inodes},mode=0700,uid={owner},gid={owner}"
    if _libc.mount(b"tmpfs", path.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, options.encode()) != 0:
        return f"mount tmpfs: {os.strerror(ctypes.get_errno())}"
    return None


class _Filter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte),
                ("k", ctypes.c_uint32)]


class _Program(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_Filter))]


def _filter_program(machine):
    """The seccomp BPF program for `machine` as (code, jt, jf, k) tuples, or None."""
    spec = _SYSCALLS.get(machine)
    if spec is None:
        return None
    audit_arch, x32, nr = spec
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    errno = 0x00050000  # SECCOMP_RET_ERRNO | errno
    # Jump targets are labels (str), resolved to relative offsets below.
    code = [
        (ld, 0, 0, 4),  # seccomp_data.arch
        (jeq, 0, "eacces", audit_arch),  # a foreign syscall ABI: refuse everything
        (ld, 0, 0, 0),  # seccomp_data.nr
    ]
    if x32:
        code.append((jge, "eacces", 0, 0x40000000))  # x32 ABI numbers: refuse
    code += [(jeq, "eacces", 0, nr[name]) for name in _REFUSED_EACCES]
    code += [(jeq, "eperm", 0, nr[name]) for name in _REFUSED_EPERM]
    code += [
        (jeq, "enosys", 0, nr["clone3"]),
        (jeq, 0, "allow", nr["clone"]),
        (ld, 0, 0, 16),  # the low 32 bits of args[0], clone's flags (all the kernel reads)
        (jset, "eperm", "allow", CLONE_NEW_ANY),
    ]
    labels = {"allow": 0x7FFF0000, "eperm": errno | 1, "eacces": errno | 13, "enosys": errno | 38}
    at = {}
    for name, action in labels.items():
        at[name] = len(code)
        code.append((ret, 0, 0, action))

    def offset(i, target):
        return at[target] - i - 1 if isinstance(target, str) else target

    return [(c, offset(i, jt), offset(i, jf), k) for i, (c, jt, jf, k) in enumerate(code)]


def _install_filter():
    """Install the seccomp filter in this process (and everything it starts). True on success."""
    program_code = _filter_program(os.uname().machine)
    if program_code is None:
        return False
    filters = (_Filter * len(program_code))(*[_Filter(*c) for c in program_code])
    program = _Program(len(program_code), filters)
    zero = ctypes.c_ulong(0)
    if _libc.prctl(PR_SET_NO_NEW_PRIVS, ctypes.c_ulong(1), zero, zero, zero) != 0:
        return False
    return _libc.prctl(PR_SET_SECCOMP, ctypes.c_ulong(SECCOMP_MODE_FILTER), ctypes.byref(program),
                       zero, zero) == 0


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[name] = module
    return module


def _proc_table():
    """pid -> (ppid, uid, zombie) for every process this zygote can see."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read().decode("ascii", "replace")
            rest = stat[stat.rindex(")") + 2:].split()
            uid = os.stat(f"/proc/{name}").st_uid
        except (OSError, ValueError):
            continue
        table[int(name)] = (int(rest[1]), uid, rest[0] in ("Z", "X"))
    return table


class Zygote:
    def __init__(self, ctrl, config):
        self.ctrl = ctrl
        self.config = config
        self.me = os.getpid()
        self.root = os.geteuid() == 0 and config.get("uid_base") is not None
        self.uid_base = int(config.get("uid_base") or 0)
        self.scratch = config["scratch"]
        self.scratch_bytes = int(config.get("scratch_bytes") or 0)
        self.read_only_rest = bool(config.get("read_only_rest"))
        # Each run its own tmpfs (when the probe at start-up showed it works), else a folder
        # of the shared scratch.
        self.per_run = bool(config.get("_per_run_scratch"))
        self.env = {str(k): str(v) for k, v in config.get("env", {}).items()}
        self.runs = {}  # run id -> {"pid", "uid", "dir"}
        self.by_pid = {}  # leader pid -> run id
        self.free_slots = list(range(int(config.get("slots", 4096))))
        self.last_sweep = 0.0
        self.wakeup, self._wakeup_w = os.pipe()
        os.set_blocking(self.wakeup, False)
        os.set_blocking(self._wakeup_w, False)
        signal.set_wakeup_fd(self._wakeup_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)

    # -- messages ---------------------------------------------------------------------
    def send(self, message):
        try:
            self.ctrl.send(json.dumps(message).encode())
        except OSError:
            os._exit(0)  # the engine is gone: so are we (and, with us, the pid namespace)

    def serve(self):
        while True:
            ready, _, _ = select.select([self.ctrl, self.wakeup], [], [], 0.05)
            if self.wakeup in ready:  # SIGCHLD: reap now, not at the next tick
                try:
                    while os.read(self.wakeup, 512):
                        pass
                except OSError:
                    pass
            if self.ctrl in ready:
                try:
                    data, fds, _, _ = socket.recv_fds(self.ctrl, 1 << 20, 4)
                except OSError:
                    return
                if not data:
                    return
                try:
                    message = json.loads(data)
                except ValueError:
                    for fd in fds:
                        os.close(fd)
                    continue
                op = message.get("op")
                if op == "spawn":
                    self.spawn(message, fds)
                elif op == "kill":
                    self.kill(message.get("id"))
                elif op == "shutdown":
                    return
                else:
                    for fd in fds:
                        os.close(fd)
            self.reap()
            now = time.monotonic()
            if now - self.last_sweep > 0.1:
                self.last_sweep = now
                self.sweep()

    # -- runs -------------------------------------------------------------------------
    def spawn(self, message, fds):
        run_id = message.get("id")
        if len(fds) != 2 or not self.free_slots:
            for fd in fds:
                os.close(fd)
            self.send({"op": "failed", "id": run_id, "error": "no free sandbox slot"})
            return
        sock_fd, out_fd = fds
        slot = self.free_slots.pop(0)
        uid = self.uid_base + slot if self.root else None
        directory = None if self.per_run else os.path.join(self.scratch, f"run{slot}")
        try:
            if directory is not None:
                shutil.rmtree(directory, ignore_errors=True)
                os.mkdir(directory, 0o700)
                if uid is not None:
                    os.chown(directory, uid, uid)
        except OSError as exc:
            os.close(sock_fd)
            os.close(out_fd)
            self.free_slots.append(slot)
            self.send({"op": "failed", "id": run_id, "error": f"scratch: {exc}"})
            return
        pid = os.fork()
        if pid == 0:  # the run
            code = 1
            try:
                self.become_run(sock_fd, out_fd, uid, directory, message.get("limits") or {})
                code = 0
            finally:
                os._exit(code)
        os.close(sock_fd)
        os.close(out_fd)
        self.runs[run_id] = {"pid": pid, "uid": uid, "dir": directory, "slot": slot, "live": True}
        self.by_pid[pid] = run_id
        self.send({"op": "spawned", "id": run_id, "pid": pid})

    def become_run(self, sock_fd, out_fd, uid, directory, limits):
        self.ctrl.close()
        signal.set_wakeup_fd(-1)
        os.close(self.wakeup)
        os.close(self._wakeup_w)
        os.setsid()
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != self.me:
            return
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out_fd, 1)
        os.dup2(out_fd, 2)
        os.close(null)
        os.close(out_fd)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        try:
            with open("/proc/self/oom_score_adj", "w") as f:
                f.write("1000")  # under memory pressure, runs die first, never the zygote
        except OSError:
            pass
        if directory is None:  # its own tmpfs, in its own mount namespace
            if _private_scratch(self.scratch, self.scratch_bytes, uid, self.read_only_rest):
                return  # never run a program with less confinement than was reported
            directory = self.scratch
        os.chdir(directory)
        _set_limits(limits, uid is not None)
        if uid is not None:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
        if self.config.get("no_sockets", True) and not _install_filter():
            return  # never run a program with less confinement than was reported
        os.umask(0o077)
        os.environ.clear()
        os.environ.update(self.env)
        os.environ.update({"HOME": directory, "TMPDIR": directory})
        child = sys.modules["stop_sandbox_child"]
        try:
            child.serve(socket.socket(fileno=sock_fd))
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except Exception:
                    pass

    def kill(self, run_id):
        run = self.runs.get(run_id)
        left = 0
        if run is not None:
            left = self.kill_tree(run)
        self.send({"op": "killed", "id": run_id, "left": left})

    def kill_tree(self, run):
        """SIGKILL the run's leader, its descendants, every process of its uid and every orphan,
        until none is left. Returns how many could not be killed (0 unless the kernel refuses)."""
        victims = set()
        for _ in range(50):
            table = _proc_table()
            victims = set()
            if run["live"] and run["pid"] in table and not table[run["pid"]][2]:
                victims.add(run["pid"])
            children = {}
            for pid, (ppid, _, _) in table.items():
                children.setdefault(ppid, []).append(pid)
            stack = [run["pid"]] + children.get(self.me, [])
            while stack:
                pid = stack.pop()
                for kid in children.get(pid, []):
                    if not table[kid][2]:
                        victims.add(kid)
                    stack.append(kid)
            for pid in children.get(self.me, []):  # orphans re-parented to us
                if pid not in self.by_pid and not table[pid][2]:
                    victims.add(pid)
            if run["uid"] is not None:
                victims.update(p for p, (_, uid, z) in table.items() if uid == run["uid"] and not z)
            victims.discard(self.me)
            if not victims:
                break
            for pid in victims:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            self.reap()
            time.sleep(0.002)
        return len(victims)

    def reap(self):
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            run_id = self.by_pid.pop(pid, None)
            if run_id is None:
                continue  # an orphan: reaped
            run = self.runs.pop(run_id, None)
            if run is None:
                continue
            run["live"] = False
            self.kill_tree(run)  # whatever the run left behind dies with it
            if run["dir"] is not None:  # (a private tmpfs went with its mount namespace)
                shutil.rmtree(run["dir"], ignore_errors=True)
            self.free_slots.append(run["slot"])
            code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
            self.send({"op": "exit", "id": run_id, "status": code})

    def sweep(self):
        """Kill orphans: processes re-parented to the zygote that are no run's leader."""
        try:
            table = _proc_table()
        except OSError:
            return
        for pid, (ppid, _, zombie) in table.items():
            if ppid == self.me and pid not in self.by_pid and not zombie:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass


def _set_limits(limits, unprivileged):
    def cap(which, value):
        if value:
            value = int(value)
            try:
                resource.setrlimit(which, (value, value))
            except (ValueError, OSError):
                pass

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    cap(resource.RLIMIT_AS, (limits.get("memory_mb") or 0) * 1024 * 1024)
    cap(resource.RLIMIT_FSIZE, (limits.get("output_kb") or 0) * 1024)
    cap(resource.RLIMIT_NOFILE, limits.get("open_files") or 0)
    if unprivileged:  # RLIMIT_NPROC counts per uid: meaningful only with the run's own uid
        cap(resource.RLIMIT_NPROC, limits.get("processes") or 0)
    cap(resource.RLIMIT_CPU, limits.get("cpu_seconds") or 0)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the cap fail instead of killing


def _checks(config):
    """What the zygote can see of its own confinement (reported to the engine)."""
    checks = {}
    try:  # an own network namespace has no interface but its private loopback
        with open("/proc/net/dev") as f:
            names = {line.split(":")[0].strip() for line in f.readlines()[2:]}
        checks["network_isolated"] = names <= {"lo"}
    except OSError:
        checks["network_isolated"] = False
    try:
        checks["pid_namespace"] = all(int(p) < 100 for p in os.listdir("/proc") if p.isdigit()) and os.getpid() < 10
    except OSError:
        checks["pid_namespace"] = False
    checks["subreaper"] = bool(config.get("_subreaper"))
    checks["per_run_scratch"] = bool(config.get("_per_run_scratch"))
    checks["per_run_scratch_error"] = config.get("_per_run_scratch_error")
    checks["read_only_rest"] = bool(config.get("_per_run_scratch")) and bool(config.get("read_only_rest"))
    checks.update(_probe_filter())
    return checks


def _probe_private_scratch(config):
    """Fork a throwaway child that sets up a private scratch as a run would (as the uid a run
    would get, when root) and checks it: writable, capped, the rest read-only when asked.
    Returns None when it works, else why not."""
    if not config.get("scratch_bytes") or config.get("per_run_scratch") is False:
        return "switched off (PoolConfig.per_run_scratch=False)"
    uid = None
    if os.geteuid() == 0 and config.get("uid_base") is not None:
        uid = int(config["uid_base"])  # no run exists yet: slot 0's uid is free
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(reader)
        error = "probe failed"
        try:
            size = 1 << 20
            error = _private_scratch(config["scratch"], size, uid, bool(config.get("read_only_rest")))
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
                elif config.get("read_only_rest") and os.access("/", os.W_OK):
                    error = "the rest of the file system is still writable"
        except BaseException as exc:  # noqa: BLE001 - reported, never raised
            error = f"{type(exc).__name__}: {exc}"
        finally:
            os.write(writer, (error or "").encode()[:500])
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader, "rb") as f:
        error = f.read().decode("utf-8", "replace")
    os.waitpid(pid, 0)
    return error or None


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
    spec = _SYSCALLS.get(os.uname().machine)
    if spec is None:
        result["seccomp_error"] = f"no seccomp filter for {os.uname().machine}"
        return result
    nr = spec[2]
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(reader)
        found = dict(result, seccomp_error="the filter could not be installed")
        try:
            if _install_filter():
                found["seccomp_error"] = None
                refused = []
                for family in (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX):
                    try:
                        socket.socket(family, socket.SOCK_STREAM).close()
                        refused.append(False)
                    except OSError:
                        refused.append(True)
                found["no_sockets"] = all(refused)
                eperm = []
                eperm.append(_syscall(nr["unshare"], 0x10000000)[1])  # CLONE_NEWUSER
                eperm.append(_syscall(nr["unshare"], CLONE_NEWNS)[1])
                ns = os.open("/proc/self/ns/net", os.O_RDONLY)
                eperm.append(_syscall(nr["setns"], ns, 0)[1])
                os.close(ns)
                for flags in (0x10000000, CLONE_NEWNS, 0x20000000, 0x40000000):
                    value, err = _syscall(nr["clone"], flags | signal.SIGCHLD, 0, 0, 0, 0)
                    if value == 0:
                        os._exit(0)  # (got through: the copy leaves at once)
                    if value > 0:
                        os.waitpid(value, 0)
                    eperm.append(err)
                clone3 = _syscall(nr["clone3"], 0, 0)[1]
                found["no_namespaces"] = all(e == 1 for e in eperm) and clone3 == 38  # ENOSYS
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
                found["kernel_surface"] = all(v == -1 and e == 1 for v, e in surface)
                create = 0o1600  # IPC_CREAT | 0600, key IPC_PRIVATE (0)
                ipc = {"shmget": _syscall(nr["shmget"], 0, 1 << 20, create),
                       "semget": _syscall(nr["semget"], 0, 1, create),
                       "msgget": _syscall(nr["msgget"], 0, create),
                       "mq_open": _syscall(nr["mq_open"], b"stop-probe", os.O_RDWR | os.O_CREAT,
                                           0o600, 0)}
                found["no_shared_ipc"] = all(v == -1 and e == 1 for v, e in ipc.values())
                # (whatever got through is removed again: IPC_RMID, mq_unlink)
                for call, remove in (("shmget", "shmctl"), ("semget", "semctl"), ("msgget", "msgctl")):
                    if ipc[call][0] >= 0:
                        _syscall(nr[remove], ipc[call][0], 0, 0, 0)
                if ipc["mq_open"][0] >= 0:
                    os.close(ipc["mq_open"][0])
                    _syscall(nr["mq_unlink"], b"stop-probe")
                # what runs need must still work: fork, and threads (glibc: clone3 -> clone)
                kid = os.fork()
                if kid == 0:
                    os._exit(7)
                _, status = os.waitpid(kid, 0)
                ran = []
                thread = threading.Thread(target=ran.append, args=(1,))
                thread.start()
                thread.join(5)
                if not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 7) or ran != [1]:
                    found["seccomp_error"] = "fork or threads fail under the filter"
                    found["no_namespaces"] = found["kernel_surface"] = False
                    found["no_shared_ipc"] = False
        except BaseException as exc:  # noqa: BLE001 - reported, never raised
            found["seccomp_error"] = f"{type(exc).__name__}: {exc}"
        finally:
            os.write(writer, json.dumps(found).encode()[:2000])
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    try:
        result.update({k: v for k, v in json.loads(data).items() if k in result})
    except ValueError:
        result["seccomp_error"] = "the probe died"
    return result


def main():
    ctrl = socket.socket(fileno=int(sys.argv[1]))
    if ctrl.type != socket.SOCK_SEQPACKET:
        sys.exit("zygote: control socket must be SOCK_SEQPACKET")
    data = ctrl.recv(1 << 20)
    config = json.loads(data)
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    config["_subreaper"] = _prctl(PR_SET_CHILD_SUBREAPER, 1)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    sys.path[:0] = [p for p in config.get("paths", []) if p not in sys.path]
    _load("stop_sandbox_child", config["child"])
    if config.get("helpers"):
        _load("helpers", config["helpers"])
    for module in config.get("preload", []):
        try:
            __import__(module)
        except ImportError:
            pass
    os.makedirs(config["scratch"], exist_ok=True)
    config["_per_run_scratch_error"] = _probe_private_scratch(config)
    config["_per_run_scratch"] = config["_per_run_scratch_error"] is None
    zygote = Zygote(ctrl, config)
    zygote.send({"op": "ready", "checks": _checks(config), "pid": os.getpid()})
    try:
        zygote.serve()
    finally:
        for run in list(zygote.runs.values()):
            zygote.kill_tree(run)
        os._exit(0)


if __name__ == "__main__":
    main()
