"""How sandbox workers are confined: bubblewrap when it works, else what the kernel gives.

Modes, strongest first (`STOP_TUI_SANDBOX=bwrap|unshare|plain` forces one):

- ``bwrap``: bubblewrap with new pid, network (loopback included), ipc, uts and cgroup
  namespaces, a private root that holds only read-only binds of the Python prefix, the system
  libraries, the preloaded packages (numpy) and the sandbox scripts, no inherited environment,
  every capability dropped except the few the zygote needs to hand each run its own mount
  namespace, tmpfs scratch and unprivileged uid, --die-with-parent, --new-session.
- ``unshare``: unshare(1) of the network and pid namespaces (with /proc remounted), the same
  uid drop, rlimits and sessions; the file system is the host's (runs read what `nobody` may),
  made read-only in each run's own mount namespace but for its private tmpfs scratch.
- ``plain``: rlimits, sessions, the uid drop and a subreaper; as root also the read-only host
  and the private scratch per run.

Scratch: wherever the zygote holds CAP_SYS_ADMIN (root; in bwrap by --cap-add), each run gets
its own mount namespace with its own tmpfs of `scratch_mb` at the scratch path, so one run
cannot fill another's space and nothing it wrote survives it (`per_run_scratch`). Elsewhere
(not root) runs share the scratch: one size-capped tmpfs in bwrap mode, a host folder otherwise.

Whatever the mode, the pool reports which protections (protections.py) are active; nothing is
silent.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from stop_tui.engine.sandbox.protections import NAMES

HERE = Path(__file__).resolve().parent
ZYGOTE = HERE / "zygote.py"
CHILD = HERE / "child.py"
HELPERS = HERE.parent / "extract.py"
# The zygote's own modules (standard library only), bound beside it in the bwrap root.
ZYGOTE_MODULES = ("seccomp.py", "scratch.py", "proctable.py", "probes.py")
MODES = ("bwrap", "unshare", "plain")
# Runs get uids from a block picked at random per worker (when the engine is root), so that two
# engines on one machine never share a uid: a run's kill(-1) or process count cannot touch
# another engine's runs.
UID_MIN = 200_000
UID_SLOTS = 4096  # uids (concurrent runs) per block
UID_BLOCKS = 4000
UID_MAX = UID_MIN + UID_SLOTS * UID_BLOCKS
SAFE_ENV = {
    "PATH": "/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONHASHSEED": "0",
}
# Imported once by the zygote, so every run has them for free. In the fallback modes this also
# matters for correctness: a run's uid may not be able to read the Python prefix (pyenv under a
# 0700 /root), so only what the zygote imported is importable there.
STDLIB_PRELOAD = (
    "encodings.idna", "json", "random", "math", "cmath", "heapq", "bisect", "itertools",
    "collections", "functools", "operator", "re", "copy", "string", "textwrap", "difflib",
    "statistics", "fractions", "decimal", "numbers", "array", "struct", "typing", "dataclasses",
    "enum", "abc", "contextlib", "warnings", "traceback", "threading", "queue",
    "concurrent.futures", "concurrent.futures.thread",  # (ThreadPoolExecutor loads lazily)
    "datetime", "time", "hashlib", "pprint", "ast", "base64", "glob",
    "fnmatch", "os.path", "tempfile", "io", "csv", "pickle", "zlib", "uuid", "signal",
)
NUMPY_PRELOAD = ("numpy.linalg", "numpy.fft", "numpy.random", "numpy.polynomial")

# In the bwrap root, where things are bound.
BOX_LIB = "/sandbox/lib"
BOX_SITE = "/sandbox/site"
BOX_SCRATCH = "/scratch"

@dataclass
class PoolConfig:
    preload: tuple[str, ...] = ("numpy",)
    scratch_mb: int = 256  # the size cap of each run's own scratch tmpfs (and of the shared
    # scratch tmpfs of bwrap mode, used only where runs cannot have their own)
    per_run_scratch: bool = True  # False: never try a private tmpfs per run
    pool_processes: int = 1024  # pids cgroup cap for all sandboxes together
    pool_memory_fraction: float = 0.75  # memory cgroup cap, fraction of the machine's RAM
    mode: str | None = None  # None: STOP_TUI_SANDBOX or the strongest that works


@dataclass
class Launch:
    """A way to start the zygote."""

    mode: str
    argv: list[str]
    zygote_config: dict
    host_scratch: Path | None = None  # non-bwrap modes: a host directory the runs work in
    static: dict[str, bool] = field(default_factory=dict)


def privileged() -> bool:
    return os.geteuid() == 0


def requested_mode() -> str | None:
    value = os.environ.get("STOP_TUI_SANDBOX", "").strip().lower()
    return value if value in MODES else None


def candidate_modes(config: PoolConfig) -> list[str]:
    forced = config.mode or requested_mode()
    if forced:
        return [forced]
    modes = []
    if shutil.which("bwrap"):
        modes.append("bwrap")
    if shutil.which("unshare") and privileged():
        modes.append("unshare")
    modes.append("plain")
    return modes


def python_executable() -> str:
    return os.path.realpath(sys.executable)


def package_dirs(preload: tuple[str, ...]) -> list[Path]:
    """Folders to bind for the preloaded packages (and their bundled `<name>.libs`)."""
    found: list[Path] = []
    for name in preload:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        if spec is None:
            continue
        if spec.submodule_search_locations:
            folder = Path(list(spec.submodule_search_locations)[0]).resolve()
            found.append(folder)
            libs = folder.parent / f"{folder.name}.libs"
            if libs.is_dir():
                found.append(libs)
        elif spec.origin:
            found.append(Path(spec.origin).resolve())
    return found


def _dirs_for(path: str, made: set[str], args: list[str]) -> None:
    """--dir every missing ancestor with mode 0755 (bwrap would copy restrictive modes)."""
    parts = Path(path).parts
    for i in range(2, len(parts)):
        ancestor = str(Path(*parts[:i]))
        if ancestor not in made:
            made.add(ancestor)
            args += ["--perms", "0755", "--dir", ancestor]


def bwrap_argv(config: PoolConfig) -> tuple[list[str], dict]:
    prefix = os.path.realpath(sys.base_prefix)
    exe = python_executable()
    args = ["bwrap"]
    if privileged():
        # Root needs no user namespace (bwrap would map only uid 0 and forbid the uid drop).
        args += ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
                 "--unshare-cgroup-try", "--cap-drop", "ALL"]
        # CAP_SYS_ADMIN: the zygote gives each run its own mount namespace and tmpfs scratch;
        # the run loses it, with every other capability, at its uid drop.
        for cap in ("CAP_SETUID", "CAP_SETGID", "CAP_KILL", "CAP_CHOWN", "CAP_DAC_OVERRIDE",
                    "CAP_FOWNER", "CAP_SYS_ADMIN"):
            args += ["--cap-add", cap]
    else:
        args += ["--unshare-all"]
    args += ["--die-with-parent", "--new-session", "--clearenv", "--hostname", "sandbox"]
    made: set[str] = set()
    _dirs_for(prefix + "/x", made, args)
    args += ["--ro-bind", prefix, prefix]
    if not exe.startswith(prefix + "/"):
        _dirs_for(exe, made, args)
        args += ["--ro-bind", exe, exe]
    for lib in ("/usr/lib", "/usr/lib64", "/usr/lib32"):
        if os.path.isdir(lib) and not os.path.islink(lib) and not prefix.startswith(lib + "/") and prefix != "/usr":
            _dirs_for(lib + "/x", made, args)
            args += ["--ro-bind", lib, lib]
    for lib in ("/lib", "/lib64", "/lib32"):
        if os.path.islink(lib):
            args += ["--symlink", os.readlink(lib), lib]
        elif os.path.isdir(lib):
            args += ["--ro-bind", lib, lib]
    if os.path.exists("/etc/ld.so.cache"):
        args += ["--perms", "0755", "--dir", "/etc", "--ro-bind", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    args += ["--proc", "/proc", "--dev", "/dev",
             "--perms", "0755", "--dir", "/sandbox",
             "--perms", "0755", "--dir", BOX_LIB,
             "--perms", "0755", "--dir", BOX_SITE]
    scripts = [(ZYGOTE, "zygote.py"), (CHILD, "child.py"), (HELPERS, "helpers.py")]
    scripts += [(HERE / name, name) for name in ZYGOTE_MODULES]
    for source, name in scripts:
        args += ["--ro-bind", str(source), f"{BOX_LIB}/{name}"]
    for folder in package_dirs(config.preload):
        args += ["--ro-bind", str(folder), f"{BOX_SITE}/{folder.name}"]
    args += ["--size", str(config.scratch_mb * 1024 * 1024), "--perms", "0711", "--tmpfs", BOX_SCRATCH,
             "--size", "1048576", "--perms", "0755", "--tmpfs", "/dev/shm"]
    for key, value in SAFE_ENV.items():
        args += ["--setenv", key, value]
    args += ["--setenv", "HOME", BOX_SCRATCH, "--chdir", BOX_SCRATCH, "--",
             exe, "-I", "-S", f"{BOX_LIB}/zygote.py"]
    zygote_config = {"paths": [BOX_SITE], "child": f"{BOX_LIB}/child.py",
                     "helpers": f"{BOX_LIB}/helpers.py", "scratch": BOX_SCRATCH}
    return args, zygote_config


def bound_paths() -> list[str]:
    """Host paths the bwrap mode makes visible at the same place (read-only)."""
    argv, _ = bwrap_argv(PoolConfig())
    return [argv[i + 2] for i, a in enumerate(argv) if a in ("--ro-bind", "--ro-bind-try")
            and not argv[i + 2].startswith("/sandbox")]


def plan(mode: str, config: PoolConfig, host_scratch: Path | None) -> Launch:
    """The command that starts a zygote in `mode` (its control fd number is appended)."""
    uid_base = UID_MIN + secrets.randbelow(UID_BLOCKS) * UID_SLOTS if privileged() else None
    root = privileged()
    static = {name: False for name in NAMES}
    static.update(memory_limit=True, file_size_limit=True, clean_environment=True,
                  new_session=True,
                  # every mode, a SIGKILLed engine included: the worker's parent-death signal
                  # (engine/lifetime.py); the zygote then kills what its runs started (its
                  # SIGTERM), and a pid namespace, where there is one, takes the rest along
                  die_with_parent=True,
                  unprivileged_uid=True,  # root: a uid per run; otherwise the user's own
                  process_limit=root)
    if mode == "bwrap":
        argv, zconf = bwrap_argv(config)
        static.update(bubblewrap=True, private_filesystem=True, scratch_size_cap=True)
        # per_run_scratch: the zygote's probe says (see pool.py)
        launch = Launch(mode, argv, zconf, None, static)
    else:
        assert host_scratch is not None
        paths = sorted({str(p.parent) for p in package_dirs(config.preload)})
        zconf = {"paths": paths, "child": str(CHILD), "helpers": str(HELPERS),
                 "scratch": str(host_scratch)}
        argv = [python_executable(), "-I", "-S", str(ZYGOTE)]
        if mode == "unshare":  # its parent-death signal: the pool's launcher arms it
            argv = ["unshare", "--net", "--pid", "--fork", "--kill-child", "--mount-proc", *argv]
        launch = Launch(mode, argv, zconf, host_scratch, static)
    preload = list(config.preload) + list(STDLIB_PRELOAD)
    if "numpy" in config.preload:
        preload += list(NUMPY_PRELOAD)
    launch.zygote_config.update({"uid_base": uid_base, "slots": UID_SLOTS, "env": dict(SAFE_ENV),
                                 "preload": preload,
                                 "scratch_bytes": config.scratch_mb * 1024 * 1024,
                                 "per_run_scratch": config.per_run_scratch,
                                 # the host's file system: read-only to runs, but for their scratch
                                 "read_only_rest": mode != "bwrap"})
    return launch


def prefix_readable_by_others() -> bool:
    """Can any user read the Python prefix (needed in the fallback modes for imports the zygote
    did not preload)?"""
    path = Path(os.path.realpath(sys.base_prefix))
    for folder in [path, *path.parents]:
        try:
            if not folder.stat().st_mode & 0o001:
                return False
        except OSError:
            return False
    return True
