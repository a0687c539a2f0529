"""The random generators a candidate solution starts in (trusted side).

The released code runs a candidate right after drawing its instance, so the candidate's
`random` / `np.random` continue the instance generators' streams. Those states give the
instance away: with `random.getstate()` equal to `random.Random(seed).getstate()`, a solution
can search the seeds, find its instance's and regenerate the instance, hidden labels included.

So by default (task setting `rng = "secret"`) each instance's generators are keyed by a secret
per session: seeded from HMAC-SHA256(secret, the instance generators' states), deterministic
(a replay or a resume of the session gives every random program the same generators and the
same scores) but underivable without the secret, which never leaves the trusted side: it is
recorded in the session's meta (`rng_secret`), and only generator states derived from it reach
the sandbox. `rng = "reference"` (`--set rng=reference`, any task) gives the released code's
behaviour, for exact reproduction of its numbers for random programs. Programs that draw no
random numbers score the same either way.

A new session's secret is HMAC(this user's key, the session seed): sessions with the same seed
on one machine agree (as runs with a scripted LM are expected to), and the key (0600, in the
user's state folder) is out of every run's reach. Where no key can be kept, it is random.
Scoring outside a session (`stop-tui score`) uses the secret of a session with seed 0.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import random
import secrets
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stop_tui.engine.errors import UserError

SETTING = "rng"
SECRET, REFERENCE = "secret", "reference"
MODES = (SECRET, REFERENCE)
ENGINE_SETTINGS: dict[str, Any] = {SETTING: SECRET}  # task settings every task has
META_KEY = "rng_secret"


def check_mode(value: object) -> str:
    if value not in MODES:
        raise UserError(f"task setting rng must be {' or '.join(MODES)} (got {value!r})")
    return str(value)


def _key_file() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "stop-tui" / "rng.key"


def _user_key() -> bytes | None:
    path = _key_file()
    try:
        data = path.read_bytes()
        if len(data) >= 32:
            return data[:32]
    except OSError:
        pass
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another engine made it just now
        try:
            data = path.read_bytes()
        except OSError:
            return None
        return data[:32] if len(data) >= 32 else None
    except OSError:
        return None
    key = secrets.token_bytes(32)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    return key


def new_secret(seed: int) -> str:
    """The secret of a new session with this seed (hex)."""
    key = _user_key()
    if key is None:
        return secrets.token_hex(32)
    return hmac.new(key, f"stop-tui session seed {seed}".encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Seeds:
    """Derived generators, as the seeds they are made from: the candidate's `random` starts as
    `random.Random(py)`, its `np.random` as `np.random.RandomState(np)` (the sandbox seeds its
    own generators with them: the same states, with nothing to build, copy or send here)."""

    py: int | None
    np: tuple[int, ...] | None

    def objects(self) -> tuple:
        """The (random.Random, np.random.RandomState) pair these seeds make."""
        derived_np = None
        if self.np is not None:
            import numpy as np

            derived_np = np.random.RandomState(np.array(self.np, dtype=np.uint32))
        return (random.Random(self.py) if self.py is not None else None), derived_np


@dataclass(frozen=True)
class CandidateRng:
    """How a candidate's generators are set: `mode` secret or reference, and the secret."""

    mode: str = SECRET
    secret: str = ""

    def generators(self, reference: tuple | None) -> tuple | Seeds | None:
        """What the candidate starts in, for an instance whose own generators are `reference`
        (a (random.Random, np.random.RandomState) pair): that pair itself in reference mode,
        else the Seeds of generators keyed by the secret."""
        if reference is None or self.mode == REFERENCE:
            return reference
        py_rng, np_rng = reference
        np_state = None
        if np_rng is not None:
            _, keys, pos, has_gauss, cached = np_rng.get_state()
            np_state = (keys.astype("<u4").tobytes(), pos, has_gauss, cached)
        return _seeds(self.secret, py_rng.getstate() if py_rng is not None else None, np_state)


@functools.lru_cache(maxsize=4096)
def _seeds(secret: str, py_state: tuple | None, np_state: tuple | None) -> Seeds:
    """The Seeds for instance generators in these states. Cached: an evaluation draws the same
    instances every time (a split's seeds are fixed), and the key is the states themselves."""
    digest = hmac.new(bytes.fromhex(secret), _state_bytes(py_state, np_state), hashlib.sha256).digest()
    return Seeds(int.from_bytes(digest, "big") if py_state is not None else None,
                 struct.unpack("<8I", digest) if np_state is not None else None)


def _state_bytes(py_state: tuple | None, np_state: tuple | None) -> bytes:
    parts = [repr(py_state).encode() if py_state is not None else b"-"]
    if np_state is not None:
        keys, pos, has_gauss, cached = np_state
        parts.append(keys + f"/{pos}/{has_gauss}/{cached!r}".encode())
    return b"|".join(parts)


@functools.cache
def outside_session() -> CandidateRng:
    """Scoring outside a session (`stop-tui score`): as in a session of the default seed, 0."""
    return CandidateRng(SECRET, new_secret(0))


def for_session(meta: dict[str, Any]) -> CandidateRng:
    """A session's candidate generators, from its meta. A session recorded before secrets
    were (no `rng_secret`) ran with the reference generators: so it resumes and replays."""
    secret = meta.get(META_KEY)
    chosen = (meta.get("task_settings") or {}).get(SETTING)
    if chosen is not None:
        return CandidateRng(check_mode(chosen), secret or outside_session().secret)
    return CandidateRng(SECRET, secret) if secret else CandidateRng(REFERENCE, "")


def session_meta(seed: int, source_meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """The meta a new session records: its secret (a replay keeps the original's)."""
    if source_meta is not None:
        return {META_KEY: source_meta[META_KEY]} if source_meta.get(META_KEY) else {}
    return {META_KEY: new_secret(seed)}


def reference_on(meta: dict[str, Any]) -> bool:
    """Whether the session was asked for the reference generators (`--set rng=reference`):
    `show` and the TUI header say so."""
    return (meta.get("task_settings") or {}).get(SETTING) == REFERENCE
