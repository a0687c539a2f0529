"""Untrusted code (LM-written solutions and improvers) runs here, in sandboxed child processes.

isolation.py  how workers are confined (bubblewrap, or unshare / rlimits as a fallback)
pool.py       the warm, confined zygote that forks a fresh process per run
zygote.py     the worker itself (standalone, stdlib only)
child.py      one run: loads the program, answers calls, proxies improvers' LM/utility calls
process.py    Sandbox: the engine side of one run (spawn, talk, time limits, kill)
"""


def protections() -> dict[str, bool]:
    """Which protections are active on this machine (name -> bool); starts the pool."""
    from stop_tui.engine.sandbox.pool import protections as current

    return current()
