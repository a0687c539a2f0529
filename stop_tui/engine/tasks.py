"""Tasks as data: each folder under tasks/ holds task.toml, seed.py, utility.py (displayed to
the LM) and, for downstream tasks, evaluate.py (the executed utility, trusted side)."""

from __future__ import annotations

import importlib.util
import tomllib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from stop_tui.engine.errors import UserError
from stop_tui.engine.paths import tasks_dir

META = "meta"


@dataclass(frozen=True)
class Task:
    name: str
    folder: Path
    title: str
    kind: str  # "solution" (downstream task) or "meta"
    entry: str  # the function a program for this task defines
    description: str
    seed: str  # seed program source
    displayed: str  # utility.str: what the LM is shown
    evaluator: ModuleType | None  # evaluate.py (None for meta)

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(getattr(self.evaluator, "SPLITS", {"val": None, "test": None}))


def _read(folder: Path, name: str) -> str:
    path = folder / name
    try:
        text = path.read_text()
    except OSError:
        raise UserError(f"task folder {folder} is missing {name}") from None
    if not text.strip():
        raise UserError(f"task folder {folder}: {name} is empty")
    return text


def _load_evaluator(folder: Path, name: str) -> ModuleType:
    path = folder / "evaluate.py"
    if not path.exists():
        raise UserError(f"task folder {folder} is missing evaluate.py")
    spec = importlib.util.spec_from_file_location(f"stop_tui_task_{name}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise UserError(f"task {name}: evaluate.py fails to import ({type(exc).__name__}: {exc})") from None
    if not callable(getattr(module, "evaluate", None)):
        raise UserError(f"task {name}: evaluate.py defines no evaluate(run, split)")
    return module


_cache: dict[Path, Task] = {}


def load_task(name_or_path: str) -> Task:
    """A task by catalogue name (`lpn`) or by folder path (`./my_task`)."""
    candidate = Path(name_or_path)
    if "/" in name_or_path or name_or_path.startswith("."):
        folder = candidate
        if not folder.is_dir():
            raise UserError(f"no task folder at {folder}")
    else:
        folder = tasks_dir() / name_or_path
        if not folder.is_dir() or not (folder / "task.toml").exists():
            known = ", ".join(t for t in task_names() if t != META) or "none"
            raise UserError(f"unknown task {name_or_path!r} (known: {known})")
    folder = folder.resolve()
    if folder in _cache:
        return _cache[folder]
    try:
        config = tomllib.loads(_read(folder, "task.toml"))
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"task folder {folder}: task.toml is not valid TOML ({exc})") from None
    name = str(config.get("name", folder.name))
    kind = str(config.get("kind", "solution"))
    task = Task(
        name=name, folder=folder, title=str(config.get("title", name)), kind=kind,
        entry=str(config.get("entry", "improve_algorithm" if kind == META else "algorithm")),
        description=str(config.get("description", "")).strip(),
        seed=_read(folder, "seed.py"), displayed=_read(folder, "utility.py"),
        evaluator=None if kind == META else _load_evaluator(folder, name),
    )
    _cache[folder] = task
    return task


def task_names() -> list[str]:
    root = tasks_dir()
    return sorted(p.name for p in root.iterdir() if (p / "task.toml").exists()) if root.is_dir() else []
