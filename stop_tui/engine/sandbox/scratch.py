"""A private scratch per run, set up in the forked run before it drops its uid.

Standard library only: the zygote loads it inside the sandbox (see zygote.py).

The run enters its own mount namespace and mounts its own size-capped tmpfs over the scratch
folder (while it still holds CAP_SYS_ADMIN, before the uid drop clears every capability). Its
writes cannot fill another run's space, and they vanish with the namespace when its last
process dies. In the fallback modes (host file system) the rest of the file system is made
read-only in that namespace first.
"""

import ctypes
import os

CLONE_NEWNS = 0x00020000
MS_NOSUID, MS_NODEV, MS_REC, MS_PRIVATE = 0x2, 0x4, 0x4000, 1 << 18
NR_MOUNT_SETATTR = 442  # x86_64 and aarch64 alike
AT_FDCWD = -100
AT_RECURSIVE = 0x8000
MOUNT_ATTR_RDONLY = 0x1

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def make_private(path, size_bytes, uid, read_only_rest):
    """In this (forked) process: own mount namespace, the rest read-only if asked, a fresh tmpfs
    of `size_bytes` at `path` owned by `uid`. Returns an error string, or None on success."""
    if _libc.unshare(CLONE_NEWNS) != 0:
        return f"unshare(CLONE_NEWNS): {os.strerror(ctypes.get_errno())}"
    # Nothing mounted here may propagate back to the worker's (or the host's) namespace.
    if _libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        return f"mount private: {os.strerror(ctypes.get_errno())}"
    if read_only_rest:
        attr = _MountAttr(MOUNT_ATTR_RDONLY, 0, 0, 0)
        if _libc.syscall(ctypes.c_long(NR_MOUNT_SETATTR), ctypes.c_int(AT_FDCWD), b"/",
                         ctypes.c_uint(AT_RECURSIVE), ctypes.byref(attr),
                         ctypes.c_size_t(ctypes.sizeof(attr))) != 0:
            return f"mount_setattr read-only: {os.strerror(ctypes.get_errno())}"
    owner = uid if uid is not None else os.getuid()
    inodes = max(1024, size_bytes // 4096)
    options = f"size={int(size_bytes)},nr_inodes={inodes},mode=0700,uid={owner},gid={owner}"
    if _libc.mount(b"tmpfs", path.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, options.encode()) != 0:
        return f"mount tmpfs: {os.strerror(ctypes.get_errno())}"
    return None
