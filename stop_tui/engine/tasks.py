"""Tasks as data: each folder under tasks/ holds task.toml, seed.py, utility.py (displayed to
the LM) and, for downstream tasks, evaluate.py (the executed utility, trusted side).

A folder is validated when it is loaded; every problem names the file and what is wrong with
it (a missing file, TOML that does not parse, a seed without its entry function, an
evaluate.py without `evaluate(run, split[, settings])`, ...). task.toml may carry a
`[settings]` table of scalar values (e.g. `time_limit = 0.01`); they reach evaluate.py as its
third argument when it takes one.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from stop_tui.engine.errors import UserError
from stop_tui.engine.paths import tasks_dir

META = "meta"
KINDS = ("solution", META)
FILES = ("task.toml", "seed.py", "utility.py", "evaluate.py")
SPLIT_NAMES = ("val", "test")
SETTING_TYPES = (bool, int, float, str)


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
    settings: dict[str, Any] = field(default_factory=dict)  # task.toml [settings]

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(getattr(self.evaluator, "SPLITS", {"val": None, "test": None}))

    @property
    def takes_settings(self) -> bool:
        """Whether evaluate.py's `evaluate` accepts the settings as a third argument."""
        return self.evaluator is not None and _takes_settings(self.evaluator.evaluate)


def _takes_settings(function: Any) -> bool:
    try:
        params = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError):
        return False
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return True
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 3


def _read(folder: Path, name: str) -> str:
    path = folder / name
    if not path.is_file():
        raise UserError(f"task folder {folder} is missing {name}")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"task folder {folder}: cannot read {name} ({exc})") from None
    if not text.strip():
        raise UserError(f"task folder {folder}: {name} is empty")
    return text


def _parse(folder: Path, name: str, text: str) -> ast.Module:
    try:
        return ast.parse(text, filename=name)
    except SyntaxError as exc:
        raise UserError(f"task folder {folder}: {name} has a syntax error on line {exc.lineno}: "
                        f"{exc.msg}") from None


def _defines(tree: ast.Module, function: str) -> bool:
    return any(isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == function
               for node in tree.body)


def _load_evaluator(folder: Path, name: str) -> ModuleType:
    path = folder / "evaluate.py"
    _parse(folder, "evaluate.py", _read(folder, "evaluate.py"))
    spec = importlib.util.spec_from_file_location(f"stop_tui_task_{name}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise UserError(f"task {name}: evaluate.py fails to import ({type(exc).__name__}: {exc})") from None
    evaluate = getattr(module, "evaluate", None)
    if not callable(evaluate):
        raise UserError(f"task {name}: evaluate.py defines no evaluate(run, split[, settings])")
    try:
        params = [p for p in inspect.signature(evaluate).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)]
    except (TypeError, ValueError):
        params = []
    if len(params) < 2 and not any(p.kind is p.VAR_POSITIONAL for p in params):
        raise UserError(f"task {name}: evaluate.py's evaluate must take (run, split) or "
                        "(run, split, settings)")
    splits = getattr(module, "SPLITS", None)
    if splits is not None:
        if not isinstance(splits, dict) or not all(isinstance(k, str) for k in splits):
            raise UserError(f"task {name}: evaluate.py's SPLITS must be a dict keyed by split name")
        missing = [s for s in SPLIT_NAMES if s not in splits]
        if missing:
            raise UserError(f"task {name}: evaluate.py's SPLITS lacks {', '.join(missing)}")
    return module


def _settings(folder: Path, config: dict[str, Any]) -> dict[str, Any]:
    settings = config.get("settings", {})
    if not isinstance(settings, dict):
        raise UserError(f"task folder {folder}: task.toml's settings must be a table ([settings])")
    for key, value in settings.items():
        if not isinstance(value, SETTING_TYPES):
            raise UserError(f"task folder {folder}: task.toml setting {key!r} must be a number, "
                            f"a string or a boolean (got {type(value).__name__})")
    return dict(settings)


def _load(folder: Path) -> Task:
    try:
        config = tomllib.loads(_read(folder, "task.toml"))
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"task folder {folder}: task.toml is not valid TOML ({exc})") from None
    name = str(config.get("name", folder.name))
    kind = str(config.get("kind", "solution"))
    if kind not in KINDS:
        raise UserError(f"task folder {folder}: task.toml kind must be one of {', '.join(KINDS)} "
                        f"(got {kind!r})")
    entry = str(config.get("entry", "improve_algorithm" if kind == META else "algorithm"))
    if not entry.isidentifier():
        raise UserError(f"task folder {folder}: task.toml entry {entry!r} is not a function name")
    seed = _read(folder, "seed.py")
    if not _defines(_parse(folder, "seed.py", seed), entry):
        raise UserError(f"task folder {folder}: seed.py defines no function {entry}() "
                        "(task.toml's entry)")
    displayed = _read(folder, "utility.py")
    _parse(folder, "utility.py", displayed)
    settings = _settings(folder, config)
    return Task(
        name=name, folder=folder, title=str(config.get("title", name)), kind=kind, entry=entry,
        description=str(config.get("description", "")).strip(), seed=seed, displayed=displayed,
        evaluator=None if kind == META else _load_evaluator(folder, name), settings=settings,
    )


_cache: dict[Path, tuple[tuple, Task]] = {}


def _stamp(folder: Path) -> tuple:
    stamps = []
    for name in FILES:
        try:
            st = (folder / name).stat()
            stamps.append((name, st.st_mtime_ns, st.st_size))
        except OSError:
            stamps.append((name, None, None))
    return tuple(stamps)


def load_task(name_or_path: str) -> Task:
    """A task by catalogue name (`lpn`) or by folder path (`./my_task`); validated on load."""
    candidate = Path(name_or_path)
    if "/" in name_or_path or name_or_path.startswith("."):
        folder = candidate
        if not folder.is_dir():
            raise UserError(f"no task folder at {folder}")
    else:
        folder = tasks_dir() / name_or_path
        if not folder.is_dir() or not (folder / "task.toml").exists():
            raise UserError(f"unknown task {name_or_path!r} (tasks: {', '.join(downstream_names()) or 'none'})")
    folder = folder.resolve()
    stamp = _stamp(folder)
    cached = _cache.get(folder)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    task = _load(folder)
    _cache[folder] = (stamp, task)
    return task


IMPROVER_TASKS = (META, "meta_sandbox")  # the meta level's tasks; every other one is downstream


def downstream_names() -> list[str]:
    """The catalogue's downstream tasks: what `--task` of run, score, baseline and transfer takes."""
    return [t for t in task_names() if t not in IMPROVER_TASKS]


def task_names() -> list[str]:
    root = tasks_dir()
    return sorted(p.name for p in root.iterdir() if (p / "task.toml").exists()) if root.is_dir() else []
