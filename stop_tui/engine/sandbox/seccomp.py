"""The seccomp filter each run installs after its uid drop (inherited by all it starts).

Standard library only: the zygote loads it inside the sandbox (see zygote.py).

- no sockets (network, loopback and unix alike; the engine's socket is inherited,
  socketpair() stays allowed) nor io_uring instances (which can open sockets): EACCES;
- no namespaces of any kind: unshare() and setns() refused, clone() refused when its flags ask
  for a CLONE_NEW* namespace (fork, vfork and threads stay allowed), clone3() answers ENOSYS
  (seccomp cannot read its flags, they sit in a struct; glibc then falls back to clone(),
  which is checked). A user namespace would hand the run root-like capabilities over its
  own mounts (a tmpfs past its scratch cap) and a much wider kernel surface;
- no mounts (old and new mount API), pivot_root, chroot, ptrace, bpf, perf events,
  userfaultfd or kernel keyrings: nothing a run needs, all kernel attack surface: EPERM;
- no SysV shared memory, semaphores or message queues, no POSIX message queues (they live in
  the worker's IPC namespace, shared by all runs and outliving each one): EPERM. POSIX shared
  memory and semaphores are files in /dev/shm, which runs cannot write.
"""

import ctypes
import os

PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
CLONE_NEWUSER = 0x10000000
CLONE_NEWNS = 0x00020000
CLONE_NEW_ANY = (0x00000080 | 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000
                 | 0x20000000 | 0x40000000)  # NEWTIME NEWNS NEWCGROUP NEWUTS NEWIPC NEWUSER NEWPID NEWNET
EPERM, EACCES, ENOSYS = 1, 13, 38

# Each machine: its AUDIT_ARCH and whether it has the x32 ABI (whose numbers are refused).
ARCHES = {"x86_64": (0xC000003E, True), "aarch64": (0xC00000B7, False)}
# Syscall numbers: name -> (x86_64, aarch64).
_NUMBERS = {
    "socket": (41, 198), "io_uring_setup": (425, 425), "clone": (56, 220), "clone3": (435, 435),
    "unshare": (272, 97), "setns": (308, 268), "mount": (165, 40), "umount2": (166, 39),
    "pivot_root": (155, 41), "chroot": (161, 51), "open_tree": (428, 428),
    "move_mount": (429, 429), "fsopen": (430, 430), "fsconfig": (431, 431),
    "fsmount": (432, 432), "fspick": (433, 433), "mount_setattr": (442, 442),
    "ptrace": (101, 117), "bpf": (321, 280), "perf_event_open": (298, 241),
    "userfaultfd": (323, 282), "add_key": (248, 217), "request_key": (249, 218),
    "keyctl": (250, 219),
    "shmget": (29, 194), "shmat": (30, 196), "shmctl": (31, 195), "shmdt": (67, 197),
    "semget": (64, 190), "semop": (65, 193), "semctl": (66, 191), "semtimedop": (220, 192),
    "msgget": (68, 186), "msgsnd": (69, 189), "msgrcv": (70, 188), "msgctl": (71, 187),
    "mq_open": (240, 180), "mq_unlink": (241, 181), "mq_timedsend": (242, 182),
    "mq_timedreceive": (243, 183), "mq_notify": (244, 184), "mq_getsetattr": (245, 185),
}
REFUSED_EACCES = ("socket", "io_uring_setup")
REFUSED_EPERM = ("unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "open_tree",
                 "move_mount", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
                 "ptrace", "bpf", "perf_event_open", "userfaultfd", "add_key", "request_key",
                 "keyctl") + (
    # SysV IPC and POSIX message queues live in the worker's IPC namespace, shared by every
    # run and outliving each: a run could leave a big segment behind or read another's data.
    "shmget", "shmat", "shmctl", "shmdt", "semget", "semop", "semctl", "semtimedop", "msgget",
    "msgsnd", "msgrcv", "msgctl", "mq_open", "mq_unlink", "mq_timedsend", "mq_timedreceive",
    "mq_notify", "mq_getsetattr")

_libc = ctypes.CDLL(None, use_errno=True)


def numbers(machine):
    """name -> syscall number on `machine`, or None when the filter does not know it."""
    if machine not in ARCHES:
        return None
    column = list(ARCHES).index(machine)
    return {name: nrs[column] for name, nrs in _NUMBERS.items()}


class _Filter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte),
                ("k", ctypes.c_uint32)]


class _Program(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_Filter))]


def filter_program(machine):
    """The seccomp BPF program for `machine` as (code, jt, jf, k) tuples, or None."""
    nr = numbers(machine)
    if nr is None:
        return None
    audit_arch, x32 = ARCHES[machine]
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
    code += [(jeq, "eacces", 0, nr[name]) for name in REFUSED_EACCES]
    code += [(jeq, "eperm", 0, nr[name]) for name in REFUSED_EPERM]
    code += [
        (jeq, "enosys", 0, nr["clone3"]),
        (jeq, 0, "allow", nr["clone"]),
        (ld, 0, 0, 16),  # the low 32 bits of args[0], clone's flags (all the kernel reads)
        (jset, "eperm", "allow", CLONE_NEW_ANY),
    ]
    labels = {"allow": 0x7FFF0000, "eperm": errno | EPERM, "eacces": errno | EACCES,
              "enosys": errno | ENOSYS}
    at = {}
    for name, action in labels.items():
        at[name] = len(code)
        code.append((ret, 0, 0, action))

    def offset(i, target):
        return at[target] - i - 1 if isinstance(target, str) else target

    return [(c, offset(i, jt), offset(i, jf), k) for i, (c, jt, jf, k) in enumerate(code)]


def install():
    """Install the seccomp filter in this process (and everything it starts). True on success."""
    program_code = filter_program(os.uname().machine)
    if program_code is None:
        return False
    filters = (_Filter * len(program_code))(*[_Filter(*c) for c in program_code])
    program = _Program(len(program_code), filters)
    zero = ctypes.c_ulong(0)
    if _libc.prctl(PR_SET_NO_NEW_PRIVS, ctypes.c_ulong(1), zero, zero, zero) != 0:
        return False
    return _libc.prctl(PR_SET_SECCOMP, ctypes.c_ulong(SECCOMP_MODE_FILTER), ctypes.byref(program),
                       zero, zero) == 0
