"""The sandbox's engine-side temporary folders, named for the process that made them.

Each `Sandbox` keeps its run's output in one (`out`); a pool in the fallback modes keeps the
runs' shared scratch in one (`scratch`). A killed or crashed engine cannot remove them, so the
next engine to start a pool removes every such folder whose owner is gone, as stale cgroups
are (pool.py). A folder is named `stop-sandbox-<kind>-<pid>.<start>-<random>`: the owner's pid
and its start time (clock ticks since boot), so a pid reused by another process does not keep
a dead engine's folder alive. Folders whose owner cannot be told are left alone.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

PREFIX = "stop-sandbox-"
KINDS = ("out", "scratch")


def _start_time(pid: int) -> str | None:
    """The process's start time (field 22 of /proc/PID/stat), None when it is not running."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return fields[19] if len(fields) > 19 else None


def _owner_tag() -> str:
    return f"{os.getpid()}.{_start_time(os.getpid()) or 0}"


def make(kind: str) -> Path:
    """A fresh private folder of `kind` (one of KINDS) in the system's temporary folder."""
    assert kind in KINDS
    return Path(tempfile.mkdtemp(prefix=f"{PREFIX}{kind}-{_owner_tag()}-"))


def _owner_alive(tag: str) -> bool | None:
    """True / False when the owner named by `tag` is running / gone; None when unknown."""
    pid_text, _, start = tag.partition(".")
    if not pid_text.isdigit() or not start.isdigit():
        return None
    pid = int(pid_text)
    running = _start_time(pid)
    if running is not None:
        return start == "0" or running == start
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True  # it answers kill(0) but /proc does not show it: assume it runs


def remove_stale(folder: Path | None = None) -> list[Path]:
    """Remove the sandbox folders in `folder` (default: the temporary folder) whose owning
    process is gone. Returns what was removed."""
    root = Path(folder) if folder is not None else Path(tempfile.gettempdir())
    try:
        found = list(root.glob(PREFIX + "*"))
    except OSError:
        return []
    removed = []
    for path in found:
        kind, _, rest = path.name[len(PREFIX):].partition("-")
        tag = rest.split("-", 1)[0]
        if kind not in KINDS or not path.is_dir() or path.is_symlink():
            continue
        if _owner_alive(tag) is False:
            shutil.rmtree(path, ignore_errors=True)
            if not path.exists():
                removed.append(path)
    return removed
