"""The sandbox's protections: one name each, and what it means.

These names are the one vocabulary: `stop-tui doctor` lists them with their meaning, the
SANDBOX event carries them (`protections: {name: bool}`, `missing: [name]`), the pool reports
them, and the worker's live checks at start-up are reported under the same names (probes.py).
Some follow from the mode alone (isolation.plan); those in CHECKED_LIVE are probed inside the
worker every time it starts.
"""

from __future__ import annotations

DESCRIPTIONS = {
    "bubblewrap": "bubblewrap confines the workers (strongest mode)",
    "no_network": "own network namespace: no interface but a private loopback (host unreachable)",
    "no_sockets": "seccomp: runs cannot create sockets (network, loopback and unix alike)",
    "no_namespaces": "seccomp: runs cannot create or join namespaces (unshare, setns, clone with CLONE_NEW*, clone3): no user namespace, no mounts of their own",
    "kernel_surface": "seccomp: runs cannot mount, chroot, pivot_root, ptrace, or use bpf, perf events, userfaultfd or kernel keyrings",
    "no_shared_ipc": "seccomp: runs cannot use SysV shared memory, semaphores or message queues, nor POSIX message queues: nothing shared between runs, nothing left behind",
    "pid_namespace": "own pid namespace: the engine and the TUI are invisible and unsignalable",
    "private_filesystem": "only the Python prefix, numpy and the sandbox scripts are visible, read-only (no home, project, sessions)",
    "scratch_size_cap": "a run can write only to a size-capped tmpfs: the disk cannot be filled",
    "per_run_scratch": "each run has its own size-capped tmpfs scratch (own mount namespace): a run cannot fill another's space, and what it wrote vanishes with it",
    "unprivileged_uid": "each run has its own unprivileged uid (rlimits bind; runs cannot signal each other)",
    "process_limit": "a per-run process limit that binds (RLIMIT_NPROC on an unprivileged uid)",
    "memory_limit": "address-space limit per process (RLIMIT_AS)",
    "file_size_limit": "file-size limit per run (RLIMIT_FSIZE): output cannot grow without bound",
    "clean_environment": "no inherited environment (no API keys)",
    "new_session": "runs are in their own session (no controlling terminal)",
    "die_with_parent": "workers die when the engine dies",
    "kill_descendants": "killing a run kills everything it started (subreaper + uid/tree sweep)",
    "pool_cgroup": "a cgroup caps the memory and process count of all sandboxes together",
}
NAMES = tuple(DESCRIPTIONS)

# What the worker checks of its own confinement when it starts (probes.checks reports these
# names). scratch_size_cap is checked there too in the modes on the host's file system (a cap
# binds only if everything else is read-only); in bwrap mode it follows from the mode.
CHECKED_LIVE = ("no_network", "pid_namespace", "kill_descendants", "no_sockets", "no_namespaces",
                "kernel_surface", "no_shared_ipc", "per_run_scratch")


def none_active() -> dict[str, bool]:
    """Every protection, none active (a sandbox that could not start)."""
    return {name: False for name in NAMES}


def missing(protections: dict[str, bool]) -> list[str]:
    """The names of the protections that are not active, in the order doctor lists them."""
    return [name for name in NAMES if not protections.get(name)]
