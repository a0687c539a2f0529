"""Untrusted code (LM-written solutions and improvers) runs here, in sandboxed child processes.

protections.py  the protections' names (doctor, the SANDBOX event, the pool) and meanings
isolation.py    how workers are confined (bubblewrap, or unshare / rlimits as a fallback)
pool.py         the warm, confined zygote that forks a fresh process per run
cgroups.py      the pids and memory cgroups around all of a pool's sandboxes
tempdirs.py     the engine's temporary folders (and those of dead engines)
process.py      Sandbox: the engine side of one run (spawn, talk, time limits, kill)
trace.py        where a run's time goes, recorded when a bench asks (bench/sandbox_pool.py)

Inside the sandbox (standalone, standard library only; loaded by path, not as stop_tui):
zygote.py       the worker itself: its protocol loop, forking and setting up each run (ahead)
seccomp.py      the seccomp filter each run installs
scratch.py      each run's private, size-capped tmpfs scratch
proctable.py    the processes the worker sees, and killing a run's whole tree
probes.py       what the worker checks of its own confinement at start-up
child.py        one run: loads the program, answers calls, proxies improvers' LM/utility calls
"""
