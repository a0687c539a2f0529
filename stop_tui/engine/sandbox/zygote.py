"""The warm sandbox worker (a "zygote"): numpy preloaded, one fresh forked child per run.

Started by path inside the isolation (bubblewrap, or the kernel fallback) as
`python -I zygote.py CTRL_FD`; it imports nothing from stop_tui and only the standard library
until the engine's config names what to preload. Its own modules, bound beside it, are imported
as the package `stop_sandbox` (with -I the script's folder is not on sys.path, and it must not
be: runs would import from it). The engine talks to it over a SOCK_SEQPACKET socket: one JSON
object per packet, with file descriptors attached (SCM_RIGHTS) to `spawn`.

    engine -> zygote   {"op": "config", ...}                       once, first
    zygote -> engine   {"op": "ready", "checks": {...}}            (probes.checks)
    engine -> zygote   {"op": "spawn", "id", "limits"} + [socket fd, output fd, notice fd]
    zygote -> engine   {"op": "spawned", "id", "pid"}  or  {"op": "failed", "id", "error"}
    engine -> zygote   {"op": "kill", "id"}
    zygote -> engine   {"op": "killed", "id", "left"}
    engine -> zygote   {"op": "release", "id", "grace"}    the engine hung up on the run: it gets
                                                       `grace` s to exit, then is killed
    zygote -> engine   {"op": "exit", "id", "status"}              when a run's process ends
    zygote -> engine   {"op": "spare", "pid"}                      the next run's process is made
                                                       (pid null: it died before its run)

Each run's process is made before it is asked for (the spare: prepare_spare), then handed its
run: fork, new session, parent-death signal, its own scratch (a private size-capped tmpfs in its
own mount namespace where the zygote may mount, else a directory: scratch.py), its own
unprivileged uid when the zygote is root (so process rlimits bind and runs cannot signal each
other or the zygote), the seccomp filter (seccomp.py), a clean environment; then it waits on a
socket of its own. A spawn hands it the run's socket, output file and notice socket; it takes
stdout and stderr to the output file, lowers its rlimits (address space, processes, files, file
size, no core) and serves child.serve() on the run's socket. A spare is confined exactly as a
run: nothing of the run's reaches it before it is. The zygote is a child subreaper: whatever a run forks, daemonises or moves
to a new session is re-parented here when its parent dies, so killing a run kills its process
tree, every process of its uid and every orphan, until none is left (proctable.py).
"""

import ctypes
import gc
import importlib.machinery
import importlib.util
import json
import os
import resource
import select
import shutil
import signal
import socket
import sys
import time


def _package(name, folder):
    """Make `folder` importable as the package `name` (without putting it on sys.path)."""
    spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
    spec.submodule_search_locations = [folder]
    sys.modules[name] = importlib.util.module_from_spec(spec)


_package("stop_sandbox", os.path.dirname(os.path.abspath(__file__)))
from stop_sandbox import probes, proctable, scratch, seccomp  # noqa: E402

SPARE = "spare"  # by_pid's entry for the spare: a leader, not a run yet
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
_libc = ctypes.CDLL(None, use_errno=True)


def _prctl(option, value):
    zero = ctypes.c_ulong(0)
    return _libc.prctl(option, ctypes.c_ulong(value), zero, zero, zero) == 0


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[name] = module
    return module


class Zygote:
    def __init__(self, ctrl, config, per_run_scratch):
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
        self.per_run = per_run_scratch
        self.env = {str(k): str(v) for k, v in config.get("env", {}).items()}
        self.runs = {}  # run id -> {"pid", "uid", "dir"}
        self.by_pid = {}  # leader pid -> run id
        self.free_slots = list(range(int(config.get("slots", 4096))))
        self.spare = None  # the next run's process, confined and waiting (prepare_spare)
        self.lost_spares = {}  # pid -> spare that failed its hand-over, until it is reaped
        self.dying = False
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
            self.die()  # the engine is gone: so are we (and, with us, the pid namespace)

    def die(self, *_):
        """Kill every run's processes, then leave: the engine died (the parent-death signal is
        SIGTERM, handled here) or hung up. Without a pid namespace (plain mode) nothing else
        would: what a run started in another session would outlive a SIGKILLed engine."""
        if os.getpid() != self.me:  # a run, forked but its signals not reset yet
            os._exit(1)
        if self.dying:  # called again from within (a send that failed while killing)
            return
        self.dying = True
        try:
            for run in list(self.runs.values()):
                self.kill_tree(run)
            proctable.kill_orphans(self.me, ())
        finally:
            os._exit(0)

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
                    self.spawn(message, fds, time.monotonic_ns())
                elif op == "kill":
                    self.kill(message.get("id"))
                elif op == "release":
                    self.release(message.get("id"), message.get("grace"))
                elif op == "shutdown":
                    return
                else:
                    for fd in fds:
                        os.close(fd)
            self.reap()
            now = time.monotonic()
            for run in [r for r in self.runs.values() if r.get("deadline", now + 1) <= now]:
                run.pop("deadline")
                self.kill_tree(run)  # released and still there: killed (reap sends its exit)
            if now - self.last_sweep > 0.1:
                self.last_sweep = now
                self.sweep()

    # -- runs -------------------------------------------------------------------------
    def spawn(self, message, fds, received):
        """A run: the spare gets its socket, output file and notice socket (and the next spare
        is made). Without a spare ready (the first, or one that died) one is made now."""
        run_id = message.get("id")
        run, error = None, "no free sandbox slot"
        self.reap()  # (a spare that died since is not handed a run)
        if len(fds) == 3:
            for _ in range(2):  # (a spare that died before its hand-over is replaced once)
                if self.spare is None:
                    error = self.prepare_spare() or error
                run = self.hand_over(fds, message.get("limits") or {}, received)
                if run is not None:
                    break
        if run is None:
            for fd in fds:
                os.close(fd)
            self.send({"op": "failed", "id": run_id, "error": error})
            return
        self.runs[run_id] = run
        self.by_pid[run["pid"]] = run_id
        self.send({"op": "spawned", "id": run_id, "pid": run["pid"]})
        self.prepare_spare()

    def prepare_spare(self):
        """Have the next run's process ready: forked, confined and waiting for its sockets, so
        that a spawn costs handing them over (the fork and the set-up happen while the engine
        does something else). Returns why it could not, or None."""
        if self.spare is not None or self.dying:
            return None
        if not self.free_slots:
            return "no free sandbox slot"
        spare = self.new_process()
        if isinstance(spare, str):
            return spare
        self.spare = spare
        self.by_pid[spare["pid"]] = SPARE
        self.send({"op": "spare", "pid": spare["pid"]})
        return None

    def hand_over(self, fds, limits, received):
        """Give the spare this run's socket, output file and notice socket (the zygote's
        copies are closed then); the run's record, or None when there is no spare or it died."""
        spare, self.spare = self.spare, None
        if spare is None:
            return None
        ctrl = spare.pop("ctrl")
        try:
            socket.send_fds(ctrl, [json.dumps({"limits": limits, "received": received}).encode()],
                            list(fds))
            handed = True
        except OSError:
            handed = False
        finally:
            ctrl.close()
        if not handed:  # it died: reaped as a spare (slot and folder freed then)
            self.lost_spares[spare["pid"]] = spare
            try:
                os.kill(spare["pid"], signal.SIGKILL)
            except OSError:
                pass
            return None
        for fd in fds:
            os.close(fd)
        return spare

    def new_process(self):
        """Fork a spare: a run's process with its own slot (uid) and scratch, set up (session,
        scratch, uid drop, seccomp, environment), then waiting on a socket of its own for its
        run. Returns its record, or why it could not be made."""
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
            self.free_slots.append(slot)
            return f"scratch: {exc}"
        ours, its = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        begun = time.monotonic_ns()
        gc.freeze()  # what the zygote made since: out of the runs' collections (no copy-on-write)
        pid = os.fork()
        if pid == 0:  # the run
            code = 1
            try:
                ours.close()
                marks = [["prepare", begun], ["forked", time.monotonic_ns()]]
                if self.confine(uid, directory, marks):
                    try:
                        sys.modules["stop_sandbox_child"].warm_up()
                    except Exception:  # noqa: BLE001 - it only saves time: the run goes on cold
                        pass
                    marks.append(["warm", time.monotonic_ns()])
                    first = _wait_for_run(its, marks)
                    if first is not None:
                        self.serve_run(*first, uid, marks)
                code = 0
            finally:
                os._exit(code)
        its.close()
        return {"pid": pid, "uid": uid, "dir": directory, "slot": slot, "live": True, "ctrl": ours}

    def confine(self, uid, directory, marks):
        """In a freshly forked process: everything of a run's confinement. `marks`: [name,
        CLOCK_MONOTONIC ns] after each step (the engine asks for them only to show where the
        time goes: trace.py). False when a step failed (the process must then leave)."""
        def mark(name):
            marks.append([name, time.monotonic_ns()])

        self.ctrl.close()
        signal.set_wakeup_fd(-1)
        os.close(self.wakeup)
        os.close(self._wakeup_w)
        os.setsid()
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != self.me:
            return False
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):  # (the run's output file replaces 1 and 2 when it is handed over)
            os.dup2(null, fd)
        os.close(null)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        try:
            with open("/proc/self/oom_score_adj", "w") as f:
                f.write("1000")  # under memory pressure, runs die first, never the zygote
        except OSError:
            pass
        mark("process")
        if directory is None:  # its own tmpfs, in its own mount namespace
            if scratch.make_private(self.scratch, self.scratch_bytes, uid, self.read_only_rest):
                return False  # never run a program with less confinement than was reported
            directory = self.scratch
        os.chdir(directory)
        mark("scratch")
        if uid is not None:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # a change of uid cleared it
            if os.getppid() != self.me:
                return False
        mark("uid")
        if self.config.get("no_sockets", True) and not seccomp.install():
            return False  # never run a program with less confinement than was reported
        mark("seccomp")
        os.umask(0o077)
        os.environ.clear()
        os.environ.update(self.env)
        os.environ.update({"HOME": directory, "TMPDIR": directory})
        mark("env")
        return True

    def serve_run(self, sock_fd, out_fd, notice_fd, limits, uid, marks):
        """The confined process becomes the run: its output file, its rlimits (lowered here,
        as the run's own uid: lowering needs no privilege), then child.serve()."""
        os.dup2(out_fd, 1)
        os.dup2(out_fd, 2)
        os.close(out_fd)
        _set_limits(limits, uid is not None)
        marks.append(["output", time.monotonic_ns()])
        child = sys.modules["stop_sandbox_child"]
        try:
            child.serve(socket.socket(fileno=sock_fd), marks, socket.socket(fileno=notice_fd))
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

    def release(self, run_id, grace):
        run = self.runs.get(run_id)
        if run is not None:
            try:
                grace = min(max(float(grace), 0.0), 10.0)
            except (TypeError, ValueError):
                grace = 0.0
            run["deadline"] = time.monotonic() + grace

    def kill_tree(self, run):
        """Kill the run and everything it started (see proctable.kill_run). Returns how many
        could not be killed."""
        return proctable.kill_run(run["pid"], run["live"], run["uid"], self.me, self.by_pid, self.reap)

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
            if run_id == SPARE:  # a spare that died before it was handed a run
                self.spare_gone(pid)
                continue
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

    def spare_gone(self, pid):
        if self.spare is not None and self.spare["pid"] == pid:
            self.spare.pop("ctrl").close()
            spare, self.spare = self.spare, None
            self.send({"op": "spare", "pid": None})
        else:
            spare = self.lost_spares.pop(pid, None)
        if spare is not None:
            if spare["dir"] is not None:
                shutil.rmtree(spare["dir"], ignore_errors=True)
            self.free_slots.append(spare["slot"])

    def sweep(self):
        """Kill orphans: processes re-parented to the zygote that are no run's leader."""
        proctable.kill_orphans(self.me, self.by_pid)


def _wait_for_run(sock, marks):
    """In a spare: wait for the run's sockets and output file (and its limits) from the zygote.
    (socket fd, output fd, notice fd, limits), or None when the zygote gave none."""
    try:
        data, fds, _, _ = socket.recv_fds(sock, 1 << 16, 3)
    except OSError:
        return None
    finally:
        sock.close()
    if len(fds) != 3 or not data:
        for fd in fds:
            os.close(fd)
        return None
    message = json.loads(data)
    marks += [["spawn", int(message["received"])], ["handed", time.monotonic_ns()]]
    return (*fds, message.get("limits") or {})


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


def main():
    ctrl = socket.socket(fileno=int(sys.argv[1]))
    if ctrl.type != socket.SOCK_SEQPACKET:
        sys.exit("zygote: control socket must be SOCK_SEQPACKET")
    parent = os.getppid()  # alive: the engine armed our parent-death signal (SIGKILL) before exec
    data = ctrl.recv(1 << 20)
    config = json.loads(data)
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # (started by hand, or from an engine that did not)
    subreaper = _prctl(PR_SET_CHILD_SUBREAPER, 1)
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
    # Everything imported so far is shared with every run, page for page: frozen, no run's
    # garbage collection walks it (which would write to every object, copying every page).
    gc.collect()
    gc.freeze()
    scratch_error = probes.private_scratch(config)
    zygote = Zygote(ctrl, config, per_run_scratch=scratch_error is None)
    signal.signal(signal.SIGTERM, zygote.die)
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)  # from now on the parent's death is zygote.die()
    if os.getppid() != parent:
        zygote.die()
    zygote.send({"op": "ready", "checks": probes.checks(config, subreaper, scratch_error),
                 "pid": os.getpid()})
    zygote.prepare_spare()
    try:
        zygote.serve()
    finally:
        zygote.die()


if __name__ == "__main__":
    main()
