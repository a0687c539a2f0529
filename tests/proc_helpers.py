"""The host's process table as tests read it: what a process started, and what of it still runs.

A process is named by (pid, start time): a pid the kernel hands out again later is not the same
process. Zombies count as gone (they run nothing; their parent has not reaped them yet).

    tree = descendants(engine.pid)        # before killing it: the sandbox, the local model, ...
    os.kill(engine.pid, signal.SIGKILL)
    left = wait_gone(tree, 3.0)           # what still runs after 3 s (empty: all gone)
    assert not left, describe(left)
"""

from __future__ import annotations

import os
import time
from pathlib import Path

Process = tuple[int, str]  # (pid, start time in clock ticks since boot)


def _stat(pid: int | str) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state first), None once gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _live() -> dict[int, tuple[int, str]]:
    """pid -> (ppid, start time) of every process that is not a zombie."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat(entry)) is not None and fields[0] not in ("Z", "X"):
            found[int(entry)] = (int(fields[1]), fields[19])
    return found


def descendants(root: int) -> set[Process]:
    """Every live descendant of `root` (not `root` itself)."""
    live = _live()
    tree = {root}
    grew = True
    while grew:
        found = {pid for pid, (parent, _) in live.items() if parent in tree} - tree
        tree |= found
        grew = bool(found)
    return {(pid, live[pid][1]) for pid in tree - {root} if pid in live}


def process(pid: int) -> Process | None:
    """The live process `pid` is now, if any."""
    fields = _stat(pid)
    return (pid, fields[19]) if fields is not None and fields[0] not in ("Z", "X") else None


def marked(marker: str) -> set[Process]:
    """Live processes (but this one) whose command line or name (/proc/PID/comm: at most 15
    bytes, set with prctl PR_SET_NAME) contains `marker`."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                if (marker.encode() in Path(f"/proc/{entry}/cmdline").read_bytes()
                        or marker in Path(f"/proc/{entry}/comm").read_text()):
                    found.add(process(int(entry)))
            except OSError:
                continue
    return found - {None}


def still_running(processes: set[Process]) -> set[Process]:
    return {p for p in processes if process(p[0]) == p}


def wait_gone(processes: set[Process], timeout: float) -> set[Process]:
    """Wait until none of `processes` runs, at most `timeout` seconds; what still runs then."""
    deadline = time.monotonic() + timeout
    while (left := still_running(processes)) and time.monotonic() < deadline:
        time.sleep(0.02)
    return left


def describe(processes: set[Process]) -> str:
    """One line per process: pid, parent, session and command line (for failure messages)."""
    lines = []
    for pid, _ in sorted(processes):
        fields = _stat(pid)
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            argv = "?"
        where = f"ppid={fields[1]} sid={fields[3]}" if fields else "gone"
        lines.append(f"{pid} {where}: {argv[:200]}")
    return "\n".join(lines)
