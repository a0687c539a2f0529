"""Tasks as data: each folder under tasks/ holds task.toml, seed.py, utility.py (displayed to
the LM) and, for downstream tasks, evaluate.py (the executed utility, trusted side).

A folder is validated when it is loaded; every problem names the file and what is wrong with
it (a missing file, TOML that does not parse, a seed without its entry function, an
evaluate.py without `evaluate(run, split[, settings])`, a task.toml field of the wrong type,
...). task.toml may carry a `[settings]` table of scalar values (e.g. `time_limit = 0.01`); they
reach evaluate.py as its third argument when it takes one, and `--set KEY=VALUE` overrides are
checked against the type each default declares (`parse_settings`). `evaluation_time_limit`
bounds one whole evaluation (evaluate.py included; see scoring.py).
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import math
import tomllib
from collections.abc import Sequence
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
DEFAULT_EVALUATION_TIME_LIMIT = 300.0  # seconds for one whole evaluation (task.toml may change it)
# task.toml's top-level fields and the type each must have (anything else is refused: a typo
# such as a top-level `time_limit` would otherwise be ignored silently).
FIELDS: dict[str, tuple[type, ...]] = {
    "name": (str,), "title": (str,), "kind": (str,), "entry": (str,), "description": (str,),
    "settings": (dict,), "evaluation_time_limit": (int, float),
}
_TYPE_NAMES = {str: "a string", dict: "a table", int: "a number", float: "a number"}


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
    evaluation_time_limit: float = DEFAULT_EVALUATION_TIME_LIMIT  # seconds, evaluate.py included

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
    for key, value in settings.items():
        if not isinstance(value, SETTING_TYPES):
            raise UserError(f"task folder {folder}: task.toml setting {key!r} must be a number, "
                            f"a string or a boolean (got {type(value).__name__})")
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"task folder {folder}: task.toml setting {key!r} must be a finite "
                            f"number (got {value})")
    return dict(settings)


def _check_fields(folder: Path, config: dict[str, Any]) -> None:
    """Every top-level field of task.toml is known and of its type; an error names the field."""
    for key, value in config.items():
        types = FIELDS.get(key)
        if types is None:
            raise UserError(f"task folder {folder}: task.toml has an unknown field {key!r} "
                            f"(fields: {', '.join(FIELDS)}; task settings go under [settings])")
        if isinstance(value, bool) or not isinstance(value, types):
            raise UserError(f"task folder {folder}: task.toml field {key!r} must be "
                            f"{_TYPE_NAMES[types[0]]} (got {type(value).__name__} {value!r:.40})")
    for key in ("name", "entry"):
        if key in config and not config[key].strip():
            raise UserError(f"task folder {folder}: task.toml field {key!r} is empty")
    limit = config.get("evaluation_time_limit")
    if limit is not None and not (math.isfinite(limit) and limit > 0):
        raise UserError(f"task folder {folder}: task.toml field 'evaluation_time_limit' must be "
                        f"a positive number of seconds (got {limit})")


def _load(folder: Path) -> Task:
    try:
        config = tomllib.loads(_read(folder, "task.toml"))
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"task folder {folder}: task.toml is not valid TOML ({exc})") from None
    _check_fields(folder, config)
    name = config.get("name", folder.name)
    kind = config.get("kind", "solution")
    if kind not in KINDS:
        raise UserError(f"task folder {folder}: task.toml kind must be one of {', '.join(KINDS)} "
                        f"(got {kind!r})")
    entry = config.get("entry", "improve_algorithm" if kind == META else "algorithm")
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
        name=name, folder=folder, title=config.get("title", name), kind=kind, entry=entry,
        description=config.get("description", "").strip(), seed=seed, displayed=displayed,
        evaluator=None if kind == META else _load_evaluator(folder, name), settings=settings,
        evaluation_time_limit=float(config.get("evaluation_time_limit", DEFAULT_EVALUATION_TIME_LIMIT)),
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


def task_names() -> list[str]:
    root = tasks_dir()
    return sorted(p.name for p in root.iterdir() if (p / "task.toml").exists()) if root.is_dir() else []


def downstream_task(name_or_path: str) -> Task:
    """`load_task` for the commands that score solutions (score, run, new): the improvers' own
    tasks (meta, meta_sandbox) are refused."""
    task = load_task(name_or_path)
    if task.kind != "solution":
        raise UserError(f"{name_or_path} is not a downstream task (it holds the seed improver; "
                        f"downstream tasks: {', '.join(downstream_names())})")
    return task


def downstream_names() -> list[str]:
    """The catalogue's downstream tasks: what `--task` of run, score, baseline and transfer takes."""
    names = []
    for name in task_names():
        try:
            if load_task(name).kind == "solution":
                names.append(name)
        except UserError:
            continue
    return names


# -- settings given on the command line (--set KEY=VALUE) ------------------------------------

def _kind_of(default: Any) -> str:
    if isinstance(default, bool):
        return "boolean"
    return "number" if isinstance(default, int | float) else "string"


def _setting_value(item: str, key: str, raw: str, task: Task) -> Any:
    kind = _kind_of(task.settings[key])
    expected = {"boolean": "true or false", "number": "a number", "string": "a string"}[kind]
    problem = (f"--set {item!r}: task {task.name}'s setting {key} is {expected} "
               f"(its default: {task.settings[key]!r})")
    try:
        parsed = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = raw
    if kind == "string":
        return parsed if isinstance(parsed, str) else raw
    if kind == "boolean":
        if not isinstance(parsed, bool):
            raise UserError(problem)
        return parsed
    if isinstance(parsed, bool) or not isinstance(parsed, int | float) or not math.isfinite(parsed):
        raise UserError(problem)
    return parsed


def parse_settings(items: Sequence[str], tasks: Sequence[Task]) -> dict[str, Any]:
    """`--set KEY=VALUE` overrides for `tasks`: each KEY must be a setting one of them declares
    in task.toml [settings], and each VALUE of the type its default has (a number, true/false,
    or a string), for every task that declares it."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(f"--set {item!r}: use KEY=VALUE")
        declaring = [t for t in tasks if key in t.settings]
        if not declaring:
            if len(tasks) == 1:
                raise UserError(f"task {tasks[0].name} has no setting {key} "
                                f"(its settings: {', '.join(tasks[0].settings) or 'none'})")
            raise UserError(f"no task among {', '.join(t.name for t in tasks)} has a setting {key}")
        values = [_setting_value(item, key, raw.strip(), t) for t in declaring]
        out[key] = values[0]
    return out
