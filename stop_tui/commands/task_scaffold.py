"""`stop-tui tasks new NAME`: a task folder to fill in (it loads and scores as written).

The scaffold is a small working task (sort a list of integers) so that `stop-tui score --task
./NAME ./NAME/seed.py` and `stop-tui run --task ./NAME` work at once; every file says in
comments what to replace.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from stop_tui.engine.errors import UserError

TASK_TOML = '''# A stop-tui task. Fill in the fields, then check it with:
#   stop-tui score --task {path} {path}/seed.py
name = "{name}"
title = "{name}: describe the task in a few words"
kind = "solution"            # a downstream task (the only kind users add)
entry = "algorithm"          # the function every solution defines (seed.py, evaluate.py's run)
description = """
What a solution must do and how it is scored, for people (shown by `stop-tui tasks`).
"""

# Settings reach evaluate.py as evaluate(run, split, settings). Numbers, strings or booleans.
[settings]
time_limit = 1.0             # seconds per instance (judged on the outcome's .seconds)
'''

SEED_PY = '''# The seed solution: the program STOP starts from. It must define the entry function named
# in task.toml (`algorithm`), taking the inputs evaluate.py passes to run(...) and returning
# plain data (numbers, strings, lists, dicts, numpy arrays). It runs in the sandbox with
# Python's `random` and numpy's legacy generator already seeded per instance.
# Replace this deliberately weak example (it returns the list unchanged).


def algorithm(numbers):
    return list(numbers)
'''

UTILITY_PY = '''# The DISPLAYED utility: the source text the language model is shown as `utility.str`.
# It should explain the task and the score; it is never executed by stop-tui. Keep it short
# and readable, draw a few unseeded instances, and state a strict time limit. Never put the
# executed utility's seeds or instances here.
import random
import time


def utility(algorithm_str: str):
    """Scores a sorting algorithm (higher is better, at most 1).

    The solution defines algorithm(numbers): it returns the integers in ascending order.
    """
    try:
        namespace = {}
        exec(algorithm_str, namespace)
        algorithm = namespace["algorithm"]
    except Exception:
        return 0

    total, n_instances = 0.0, 5
    for _ in range(n_instances):
        numbers = [random.randint(-100, 100) for _ in range(random.randint(1, 50))]
        started = time.time()
        try:
            answer = list(algorithm(list(numbers)))
        except Exception:
            continue
        if time.time() - started > 0.1 or len(answer) != len(numbers):
            continue
        target = sorted(numbers)
        total += sum(a == b for a, b in zip(answer, target)) / len(target) / n_instances
    return total
'''

EVALUATE_PY = '''"""The EXECUTED utility (trusted side; never shown to the language model).

stop-tui calls evaluate(run, split, settings) and expects (score, error): score in [0, 1]
(clamped), error None or a short reason. `run(*inputs, time_limit=..., rng=(py_rng, np_rng))`
executes the candidate's entry function in the sandbox on the inputs and returns an outcome
with .value (the answer, as plain JSON data: lists, not tuples or arrays), .error (None or why
it failed: an exception, a timeout, a crash) and .seconds (how long the call took, as the
sandbox measures it). Judge time limits on .seconds. The candidate only ever
sees the inputs; labels and answers stay here. Validate .value before you use it.
"""

import random

import numpy as np

# split name -> (base seed, number of instances). Both "val" and "test" are required.
SPLITS = {"val": (4321, 20), "test": (5678, 50)}


def make_instance(seed: int):
    """Draw one instance from generators seeded with `seed` (replace with your own)."""
    py_rng, np_rng = random.Random(seed), np.random.RandomState(seed)
    numbers = [py_rng.randint(-100, 100) for _ in range(py_rng.randint(1, 50))]
    # The candidate starts with its `random` / `np.random` in these generators' states.
    return (numbers,), sorted(numbers), (py_rng, np_rng)


def score_answer(value, target) -> tuple[float, str | None]:
    """Score one answer in [0, 1] (replace with your own); a reason when it is unusable."""
    if not isinstance(value, list) or len(value) != len(target):
        return 0.0, "not a list of the right length"
    return sum(a == b for a, b in zip(value, target)) / len(target), None


def evaluate(run, split, settings):
    time_limit = float(settings.get("time_limit", 1.0))
    base, n_instances = SPLITS[split]
    total, problems = 0.0, []
    for i in range(n_instances):
        inputs, target, rng = make_instance(base + i)
        out = run(*inputs, time_limit=time_limit, rng=rng)
        if out.error is not None:
            problems.append(f"instance {i}: {out.error}")
            continue  # this instance scores 0; return (0.0, reason) here to fail the whole score
        if out.seconds > time_limit:
            problems.append(f"instance {i}: took {out.seconds:.3f} s")
            continue
        score, problem = score_answer(out.value, target)
        if problem:
            problems.append(f"instance {i}: {problem}")
        total += score / n_instances
    return total, (f"{len(problems)} instance(s) scored 0; first: {problems[0]}" if problems else None)
'''

NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
MAX_NAME = 64  # it names a folder, and every session of the task


def add_subparser(tasks_parser: argparse.ArgumentParser) -> None:
    sub = tasks_parser.add_subparsers(dest="tasks_command", metavar="SUBCOMMAND",
                                      help="new: scaffold a task folder of your own")
    p = sub.add_parser("new", help="scaffold a task folder to fill in (loads and scores as written)")
    p.add_argument("name", help="task name (letters, digits, - and _)")
    p.add_argument("--dir", type=Path, default=Path("."), help="where to create NAME/ (default .)")


def scaffold(name: str, parent: Path) -> Path:
    if not NAME.match(name):
        raise UserError(f"task name {name[:40]!r}: use letters, digits, - and _ (starting with a letter)")
    if len(name) > MAX_NAME:
        raise UserError(f"task name {name[:20]}...: at most {MAX_NAME} characters (got {len(name)})")
    folder = Path(parent) / name
    try:
        if folder.exists():
            raise UserError(f"{folder} already exists")
        folder.mkdir(parents=True)
    except OSError as exc:
        raise UserError(f"cannot create {folder}: {exc.strerror or exc}") from None
    shown = folder.as_posix() if folder.is_absolute() or folder.as_posix().startswith(".") else f"./{folder.as_posix()}"
    files = {"task.toml": TASK_TOML.format(name=name, path=shown), "seed.py": SEED_PY,
             "utility.py": UTILITY_PY, "evaluate.py": EVALUATE_PY}
    for filename, text in files.items():
        (folder / filename).write_text(text)
    return folder


def cmd_tasks_new(args: argparse.Namespace) -> int:
    from stop_tui.engine.tasks import load_task

    folder = scaffold(args.name, args.dir)
    shown = folder.as_posix() if folder.is_absolute() or folder.as_posix().startswith(".") else f"./{folder.as_posix()}"
    load_task(shown)  # the scaffold must load and validate as written
    print(f"created {shown}/ (task.toml, seed.py, utility.py, evaluate.py)\n"
          f"try:  stop-tui score --task {shown} {shown}/seed.py\n"
          f"      stop-tui run --task {shown} --preset quick --iterations 1")
    return 0
