"""The zygote's view of the processes it can see, and how a run's processes are killed.

Standard library only: the zygote loads it inside the sandbox (see zygote.py).

The zygote is a child subreaper: whatever a run forks, daemonises or moves to a new session is
re-parented to it when its parent dies. So a run's processes are its leader's descendants, every
process of its own uid (when it has one) and every orphan re-parented to the zygote.
"""

import os
import signal
import time


def table():
    """pid -> (ppid, uid, zombie) for every process this zygote can see."""
    found = {}
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
        found[int(name)] = (int(rest[1]), uid, rest[0] in ("Z", "X"))
    return found


def _kill(pids):
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def kill_run(leader, live, uid, me, leaders, reap):
    """SIGKILL a run's leader (if `live`), its descendants, every process of its `uid` and every
    orphan re-parented to the zygote `me` that is no run's leader (`leaders`), until none is
    left; `reap()` collects the dead in between. Returns how many could not be killed (0
    unless the kernel refuses)."""
    victims = set()
    for _ in range(50):
        procs = table()
        victims = set()
        if live and leader in procs and not procs[leader][2]:
            victims.add(leader)
        children = {}
        for pid, (ppid, _, _) in procs.items():
            children.setdefault(ppid, []).append(pid)
        # its tree, and the trees of orphans (never those of the other runs' leaders)
        stack = [leader] + [pid for pid in children.get(me, []) if pid not in leaders]
        while stack:
            pid = stack.pop()
            for kid in children.get(pid, []):
                if not procs[kid][2]:
                    victims.add(kid)
                stack.append(kid)
        for pid in children.get(me, []):  # orphans re-parented to us
            if pid not in leaders and not procs[pid][2]:
                victims.add(pid)
        if uid is not None:
            victims.update(p for p, (_, owner, zombie) in procs.items() if owner == uid and not zombie)
        victims.discard(me)
        if not victims:
            break
        _kill(victims)
        reap()
        time.sleep(0.002)
    return len(victims)


def kill_orphans(me, leaders):
    """Kill the processes re-parented to the zygote `me` that are no run's leader."""
    try:
        procs = table()
    except OSError:
        return
    _kill(pid for pid, (ppid, _, zombie) in procs.items()
          if ppid == me and pid not in leaders and not zombie)
