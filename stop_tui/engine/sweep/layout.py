"""What a sweep is on disk: a folder in the sessions dir holding `sweep.json` (its spec) and one
normal session folder per run, named from the run's (task, model, seed).

    sessions/<sweep>/sweep.json
    sessions/<sweep>/<task>-<model>-s<seed>/session.db            the STOP run
    sessions/<sweep>/<task>-<model>-s<seed>-transfer/session.db   its transfer evaluation

A run's folder name is a pure function of its key, so a retried Ray task or a `sweep --resume`
after the driver died finds the run's log and resumes it instead of starting it again. Every
run is an ordinary session: `stop-tui show SWEEP/RUN`, `audit`, `resume` read it as one."""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stop_tui.engine.errors import UserError

SWEEP_FILE = "sweep.json"
TRANSFER_SUFFIX = "-transfer"


def parse_seeds(text: str) -> tuple[int, ...]:
    """`0-24`, `3`, `0,2,5-7` -> the seeds in order, each once; UserError when empty or bad."""
    seeds: list[int] = []
    for part in filter(None, (p.strip() for p in str(text).split(","))):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if m is None:
            raise UserError(f"--seeds: {part!r} is not a seed or a range like 0-24")
        lo, hi = int(m[1]), int(m[2] if m[2] is not None else m[1])
        seeds += [s for s in range(lo, hi + 1) if s not in seeds]
    if not seeds:
        raise UserError(f"--seeds {text!r} names no seed (e.g. 0-24)")
    return tuple(seeds)


def parse_list(option: str, text: str | None) -> tuple[str, ...]:
    """`a,b,c` -> ('a', 'b', 'c'); None -> ()."""
    items = tuple(filter(None, (p.strip() for p in (text or "").split(","))))
    if text is not None and not items:
        raise UserError(f"{option} {text!r} names nothing")
    return items


def slug(text: str) -> str:
    """A model or task name as a folder-name part: `local:/m/x.gguf` -> `local-x.gguf`."""
    name = Path(text).name if "/" in text else text
    return re.sub(r"[^A-Za-z0-9._]+", "-", name).strip("-") or "x"


@dataclass(frozen=True, order=True)
class RunKey:
    task: str
    model: str
    seed: int

    @property
    def name(self) -> str:
        return f"{slug(self.task)}-{slug(self.model)}-s{self.seed}"

    @property
    def transfer_name(self) -> str:
        return self.name + TRANSFER_SUFFIX


@dataclass(frozen=True)
class SweepSpec:
    """What `stop-tui sweep` was asked; stored in sweep.json and read back by --resume."""

    tasks: tuple[str, ...]
    models: tuple[str, ...]
    seeds: tuple[int, ...]
    preset: str | None = None
    iterations: int | None = None
    base_url: str | None = None
    transfer: tuple[str, ...] = ()
    max_cost: float | None = None
    max_parallel: int | None = None
    requests_per_endpoint: int | None = None
    lm: dict[str, Any] = field(default_factory=dict)  # the LM options given (lm_options.py)

    def runs(self) -> list[RunKey]:
        """Every run, in the order they are started: seed-major, so early results span models."""
        return [RunKey(t, m, s) for s in self.seeds for t in self.tasks for m in self.models]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SweepSpec:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for key in ("tasks", "models", "seeds", "transfer"):
            known[key] = tuple(known.get(key) or ())
        return cls(**known)


@dataclass(frozen=True)
class Sweep:
    folder: Path
    spec: SweepSpec
    created: str

    @property
    def id(self) -> str:
        return self.folder.name

    def run_folder(self, key: RunKey) -> Path:
        return self.folder / key.name

    def transfer_folder(self, key: RunKey) -> Path:
        return self.folder / key.transfer_name


def is_sweep(folder: Path) -> bool:
    return (Path(folder) / SWEEP_FILE).is_file()


def create_sweep(sessions_dir: Path, spec: SweepSpec, name: str | None = None) -> Sweep:
    """A new sweep folder (named `name`, else `sweep-<UTC time>-<task>`), its spec written whole
    (to a temporary name, then renamed)."""
    sessions_dir = Path(sessions_dir)
    base = name or datetime.now(UTC).strftime("sweep-%Y%m%d-%H%M%S") + f"-{slug(spec.tasks[0])}"
    folder, k = sessions_dir / base, 1
    while folder.exists():
        if name is not None:
            raise UserError(f"{folder} already exists (continue it with `stop-tui sweep --resume {base}`)")
        k += 1
        folder = sessions_dir / f"{base}-{k}"
    try:
        folder.mkdir(parents=True)
    except OSError as exc:
        raise UserError(f"cannot create the sweep folder {folder}: {exc.strerror or exc}") from None
    return save_spec(Sweep(folder, spec, datetime.now(UTC).isoformat(timespec="seconds")), spec)


def save_spec(sweep: Sweep, spec: SweepSpec) -> Sweep:
    """`spec` written as the sweep's, whole (to a temporary name, then renamed): e.g. a higher
    --max-cost given to `sweep --resume`."""
    draft = sweep.folder / (SWEEP_FILE + ".new")
    draft.write_text(json.dumps({"kind": "sweep", "created": sweep.created, "spec": spec.to_dict()}, indent=2))
    os.replace(draft, sweep.folder / SWEEP_FILE)
    return Sweep(sweep.folder, spec, sweep.created)


def read_sweep(folder: Path) -> Sweep:
    """The sweep in `folder`; UserError when it has no readable sweep.json."""
    folder = Path(folder)
    try:
        data = json.loads((folder / SWEEP_FILE).read_text())
        return Sweep(folder, SweepSpec.from_dict(data["spec"]), str(data.get("created", "")))
    except FileNotFoundError:
        raise UserError(f"no sweep at {folder} (see `stop-tui list`)") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"the sweep at {folder} is unreadable ({SWEEP_FILE}: {exc})") from None


def sweep_folder(sessions_dir: Path, name: str) -> Path:
    """The folder of sweep `name` (an id in `sessions_dir`, or a path); UserError if none."""
    path = Path(name)
    folder = path if is_sweep(path) else Path(sessions_dir) / name
    if not is_sweep(folder):
        raise UserError(f"no sweep at {folder} (see `stop-tui list`)")
    return folder


def list_sweeps(sessions_dir: Path) -> list[Path]:
    sessions_dir = Path(sessions_dir)
    if not sessions_dir.is_dir():
        return []
    return sorted(p for p in sessions_dir.iterdir() if is_sweep(p))
