"""The cgroups that hold every sandbox of a pool together (best effort).

A pids and a memory cgroup per pool, named stop-tui-<engine pid>-<n>, v1 or v2, where this
process may create them; the pool's worker joins them before it starts. Empty ones left by
engines that were killed are removed by the next pool.
"""

from __future__ import annotations

import os
import time
from pathlib import Path


class Cgroups:
    """Best effort: a pids and a memory cgroup holding every sandbox of this pool."""

    def __init__(self, name: str, pids_max: int, memory_bytes: int) -> None:
        self.dirs: list[Path] = []
        self.active: dict[str, bool] = {"pids": False, "memory": False}
        own = _own_cgroups()
        for controller, knob, value in (("pids", ("pids.max",), pids_max),
                                        ("memory", ("memory.limit_in_bytes", "memory.max"), memory_bytes)):
            base = _controller_dir(controller, own)
            if base is None:
                continue
            _remove_stale(base)
            folder = base / name
            try:
                folder.mkdir()
            except OSError:
                continue
            self.dirs.append(folder)
            for k in knob:
                try:
                    (folder / k).write_text(str(value))
                    self.active[controller] = True
                    break
                except OSError:
                    continue

    @property
    def procs_files(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.dirs]

    def remove(self) -> None:
        for folder in self.dirs:
            for _ in range(50):
                try:
                    folder.rmdir()
                    break
                except OSError:
                    time.sleep(0.02)


def _remove_stale(base: Path) -> None:
    """Empty cgroups left by engines that were killed (named stop-tui-<pid>-<n>)."""
    try:
        stale = list(base.glob("stop-tui-*"))
    except OSError:
        return
    for folder in stale:
        try:
            pid = int(folder.name.split("-")[2])
            os.kill(pid, 0)
            continue  # its engine is alive
        except (ValueError, IndexError):
            continue
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        try:
            folder.rmdir()  # fails, harmlessly, if processes are still inside
        except OSError:
            pass


def _own_cgroups() -> dict[str, str]:
    own: dict[str, str] = {}
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for c in controllers.split(",") if controllers else ["unified"]:
                own[c] = path
    except (OSError, ValueError):
        pass
    return own


def _controller_dir(controller: str, own: dict[str, str]) -> Path | None:
    root = Path("/sys/fs/cgroup")
    v1 = root / controller
    if v1.is_dir() and (v1 / "cgroup.procs").exists():
        return v1 / own.get(controller, "/").lstrip("/")
    if (root / "cgroup.controllers").exists():  # pure cgroup v2
        folder = root / own.get("unified", "/").lstrip("/")
        try:
            if controller in (folder / "cgroup.subtree_control").read_text().split():
                return folder
        except OSError:
            return None
    return None


def machine_memory() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 8 << 30
