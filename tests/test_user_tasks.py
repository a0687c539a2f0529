"""Your own tasks: `stop-tui tasks new` scaffolds a folder that loads, scores and runs; broken
folders are refused with the missing or broken part named."""

from __future__ import annotations

import json
import random
import shutil

import pytest
from conftest import stop_tui
from scripted_server import ScriptedLMServer
from task_helpers import RETURNS_0, write_task

from stop_tui.engine.errors import UserError
from stop_tui.engine.scoring import score_solution
from stop_tui.engine.tasks import load_task

SORTER = "def algorithm(numbers):\n    return sorted(numbers)\n"


def seed_expected(base: int, count: int) -> float:
    """The scaffold's example: the seed returns the list unchanged; a position scores when it
    already holds the sorted value."""
    total = 0.0
    for i in range(count):
        rng = random.Random(base + i)
        numbers = [rng.randint(-100, 100) for _ in range(rng.randint(1, 50))]
        target = sorted(numbers)
        total += sum(a == b for a, b in zip(numbers, target, strict=True)) / len(target) / count
    return total


@pytest.fixture(scope="module")
def scaffold(tmp_path_factory):
    parent = tmp_path_factory.mktemp("user")
    proc = stop_tui("tasks", "new", "mytask", "--dir", str(parent))
    assert proc.returncode == 0, proc.stderr
    assert "created" in proc.stdout and "stop-tui score --task" in proc.stdout
    return parent / "mytask"


def test_scaffold_has_the_four_files_and_validates(scaffold):
    assert sorted(p.name for p in scaffold.iterdir()) == ["evaluate.py", "seed.py", "task.toml", "utility.py"]
    task = load_task(str(scaffold))
    assert task.name == "mytask" and task.kind == "solution" and task.entry == "algorithm"
    assert task.settings == {"time_limit": 1.0} and task.takes_settings
    assert "fill in" in (scaffold / "task.toml").read_text().lower() or "Fill in" in (scaffold / "task.toml").read_text()
    assert "never executed" in task.displayed  # utility.py says what it is for


def test_scaffold_scores_through_the_cli_as_derived(scaffold, tmp_path):
    proc = stop_tui("score", "--task", str(scaffold), "--split", "test", "--json", str(scaffold / "seed.py"))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["score"] == pytest.approx(seed_expected(5678, 50), abs=1e-12)
    solver = tmp_path / "sorter.py"
    solver.write_text(SORTER)
    proc = stop_tui("score", "--task", str(scaffold), "--json", str(solver))
    assert json.loads(proc.stdout)["score"] == 1.0


def test_relative_folder_paths_work(scaffold):
    proc = stop_tui("score", "--task", "./mytask", "./mytask/seed.py", cwd=scaffold.parent)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("mytask val:")


def run_on(folder, sessions_dir, program: str, *, iterations: int, timeout: float = 300):
    """`stop-tui run --json` on a user task, quick preset, a scripted LM answering every request
    with `program` in a python fence."""

    def responder(body, index):
        return f"Here it is.\n```python\n{program}```\n"

    with ScriptedLMServer(responder) as server:
        return stop_tui("run", "--task", str(folder), "--model", "scripted", "--base-url", server.base_url,
                        "--preset", "quick", "--iterations", str(iterations), "--sessions-dir",
                        str(sessions_dir), "--json", timeout=timeout)


def test_a_run_on_the_user_task(scaffold, sessions_dir):
    proc = run_on(scaffold, sessions_dir, SORTER, iterations=0)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["seed_meta_utility"] == 1.0


def test_the_catalogue_still_lists(tmp_path):
    proc = stop_tui("tasks")
    assert proc.returncode == 0
    names = [line.split()[0] for line in proc.stdout.splitlines()]
    assert {"lpn", "parity", "grid", "mqa", "sat", "maxcut", "meta"} <= set(names)
    rows = json.loads(stop_tui("tasks", "--json").stdout)
    assert {r["name"] for r in rows} >= {"grid", "sat"}


@pytest.mark.parametrize("args,message", [(["new", "9bad"], "task name"), (["new", "a/b"], "task name")])
def test_bad_names_are_refused(args, message, tmp_path):
    proc = stop_tui("tasks", *args, "--dir", str(tmp_path))
    assert proc.returncode == 2 and message in proc.stderr


def test_an_existing_folder_is_not_overwritten(scaffold):
    proc = stop_tui("tasks", "new", "mytask", "--dir", str(scaffold.parent))
    assert proc.returncode == 2 and "already exists" in proc.stderr


BROKEN = [
    ("seed.py", None, "missing seed.py"),
    ("utility.py", None, "missing utility.py"),
    ("evaluate.py", None, "missing evaluate.py"),
    ("task.toml", None, "missing task.toml"),
    ("seed.py", "", "seed.py is empty"),
    ("task.toml", "name = [", "task.toml is not valid TOML"),
    ("task.toml", 'name = "x"\nkind = "other"\n', "kind must be one of"),
    ("task.toml", 'name = "x"\n[settings]\nlimits = [1, 2]\n', "setting 'limits'"),
    ("seed.py", "def solve(x):\n    return x\n", "seed.py defines no function algorithm()"),
    ("utility.py", "def utility(s):\n    return (\n", "utility.py has a syntax error on line"),
    ("evaluate.py", "import no_such_module_here\n", "evaluate.py fails to import"),
    ("evaluate.py", "def score(run, split):\n    return 0\n", "defines no evaluate"),
    ("evaluate.py", "def evaluate(run):\n    return 0\n", "must take (run, split)"),
    ("evaluate.py", "SPLITS = {'val': (1, 2)}\n\ndef evaluate(run, split):\n    return 0\n", "SPLITS lacks test"),
]


@pytest.mark.parametrize("name,text,message", BROKEN)
def test_broken_folders_name_the_part(scaffold, tmp_path, name, text, message):
    folder = tmp_path / "broken"
    shutil.copytree(scaffold, folder)
    if text is None:
        (folder / name).unlink()
    else:
        (folder / name).write_text(text)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        load_task(str(folder))


def test_the_cli_says_what_is_broken_with_exit_2(scaffold, tmp_path):
    folder = tmp_path / "broken"
    shutil.copytree(scaffold, folder)
    (folder / "evaluate.py").unlink()
    proc = stop_tui("score", "--task", str(folder), str(scaffold / "seed.py"))
    assert proc.returncode == 2
    assert "missing evaluate.py" in proc.stderr and "Traceback" not in proc.stderr


def test_edits_are_picked_up_and_a_failing_evaluate_is_a_score_with_a_reason(scaffold, tmp_path):
    folder = tmp_path / "edited"
    shutil.copytree(scaffold, folder)
    assert score_solution(load_task(str(folder)), SORTER, "val").score == 1.0
    (folder / "evaluate.py").write_text(
        "SPLITS = {'val': (1, 1), 'test': (2, 1)}\n\n\ndef evaluate(run, split):\n    return 1 / 0\n")
    result = score_solution(load_task(str(folder)), SORTER, "val")
    assert result.score == 0.0 and "ZeroDivisionError" in result.error


def test_lpn_keeps_its_two_argument_evaluate():
    lpn = load_task("lpn")
    assert not lpn.takes_settings and lpn.settings == {}
    assert score_solution(lpn, "import numpy as np\n\ndef algorithm(a, b, c):\n    return np.zeros(len(c))\n",
                          "val").score == pytest.approx(0.5025, abs=1e-12)


def test_limits_are_judged_on_the_candidates_own_time(tmp_path):
    # A big input makes the sandbox round trip longer than the limit; the candidate answers at
    # once. The engine stages the inputs first and starts its clock at `go`, so the transport
    # is not charged to the candidate (and the time is still measured outside the child).
    folder = write_task(tmp_path / "bigin", (
        "import time\n\nSPLITS = {'val': (0, 3), 'test': (0, 3)}\n\n\n"
        "def evaluate(run, split, settings):\n"
        "    limit, walls, ok = settings['time_limit'], [], 0\n"
        "    for _ in range(3):\n"
        "        started = time.perf_counter()\n"
        "        out = run(list(range(300_000)), time_limit=limit)\n"
        "        walls.append(time.perf_counter() - started)\n"
        "        ok += out.error is None and out.value == 300_000 and out.seconds <= limit\n"
        "    return ok / 3, f'min wall {min(walls):.4f}'\n"),
        seed="def algorithm(xs):\n    return len(xs)\n", toml="[settings]\ntime_limit = 0.01\n")
    task = load_task(str(folder))
    result = score_solution(task, task.seed, "val")
    assert result.score == 1.0, result.error
    assert float(result.error.split()[-1]) > 0.01  # the round trip alone would have failed it


@pytest.mark.parametrize("returned,score,reason", [
    ("0.25", 0.25, None), ("(0.5, None)", 0.5, None), ("(2.0, 'x')", 1.0, "x"),
    ("__import__('numpy').float32(0.5)", 0.5, None),
    ("(1, 2, 3)", 0.0, "evaluate.py returned a tuple of 3, not (score, error)"),
    ("'high'", 0.0, "evaluate.py returned a str score ('high'), not a number"),
    ("('0.5', None)", 0.0, "evaluate.py returned a str score ('0.5'), not a number"),
    ("True", 0.0, "evaluate.py returned a bool score (True), not a number"),
    ("(None, 'oops')", 0.0, "evaluate.py returned a NoneType score (None), not a number"),
    ("(float('nan'), None)", 0.0, "evaluate.py returned a NaN score"),
    ("__import__('numpy').float64('nan')", 0.0, "evaluate.py returned a NaN score"),
    ("(float('inf'), None)", 0.0, "evaluate.py returned an infinite score (inf)"),
    ("(float('-inf'), 'x')", 0.0, "evaluate.py returned an infinite score (-inf)"),
])
def test_what_evaluate_returns_is_checked(tmp_path, returned, score, reason):
    folder = write_task(tmp_path / "ret", f"def evaluate(run, split):\n    return {returned}\n")
    result = score_solution(load_task(str(folder)), RETURNS_0, "val")
    assert result.score == score
    assert (result.error is None) if reason is None else (reason in result.error)


# -- a buggy evaluate.py (issue 15 items 9 and 18) -----------------------------------------

ONE_RUN = "    out = run([3, 1, 2], time_limit=1.0)\n"


def test_sys_exit_in_evaluate_is_its_error_not_an_exit_code(tmp_path):
    folder = write_task(tmp_path / "exits", "import sys\n\n\ndef evaluate(run, split):\n" + ONE_RUN
                        + "    sys.exit(3)\n", seed=SORTER)
    proc = stop_tui("score", "--task", str(folder), "--json", str(folder / "seed.py"))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["score"] == 0.0 and result["error"] == "evaluate.py called sys.exit(3)"
    text = stop_tui("score", "--task", str(folder), str(folder / "seed.py"))
    assert text.returncode == 0
    assert text.stdout.strip() == "exits val: 0.000000  (evaluate.py called sys.exit(3))"


HANGS = {
    "a loop that never calls run": "    while True:\n        pass\n",
    "a loop that calls run forever and catches Exception":
        "    while True:\n        try:\n            run([1], time_limit=1.0)\n        except Exception:\n"
        "            pass\n",
    "a call that blocks in C": "    import time\n    time.sleep(3600)\n",
    "a run with an endless time limit": "    run([1], time_limit=1e9)\n",
}
SLEEPER = "import time\n\n\ndef algorithm(xs):\n    time.sleep(3600)\n"


@pytest.mark.slow
@pytest.mark.parametrize("body", list(HANGS.values()), ids=list(HANGS))
def test_an_evaluation_past_its_time_limit_is_abandoned_with_the_reason(tmp_path, body):
    endless = "1e9" in body  # the candidate sleeps; the call's own limit would never end it
    folder = write_task(tmp_path / "hangs", "def evaluate(run, split):\n" + ("" if endless else ONE_RUN) + body,
                        seed=SORTER, toml="evaluation_time_limit = 2\n")
    solution = tmp_path / "sleeper.py"
    solution.write_text(SLEEPER if endless else SORTER)
    proc = stop_tui("score", "--task", str(folder), "--json", str(solution), timeout=60)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["score"] == 0.0
    assert result["error"] == ("evaluate.py did not finish within the evaluation time limit of 2 s "
                               "(task.toml evaluation_time_limit); abandoned")
    assert 2.0 <= result["seconds"] < 6.0


def test_an_abandoned_python_loop_really_ends(tmp_path):
    import threading
    import time

    folder = write_task(tmp_path / "spins", "def evaluate(run, split):\n" + HANGS["a loop that never calls run"],
                        seed=SORTER, toml="evaluation_time_limit = 0.5\n")
    result = score_solution(load_task(str(folder)), SORTER, "val")
    assert "did not finish" in result.error
    deadline = time.monotonic() + 5
    while any(t.name == "evaluate-spins" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(t.name == "evaluate-spins" for t in threading.enumerate())


@pytest.mark.slow
def test_a_run_on_a_task_whose_evaluate_exits_or_hangs_does_not_stall(tmp_path, sessions_dir):
    exits = write_task(tmp_path / "exits", "import sys\n\n\ndef evaluate(run, split):\n    sys.exit(3)\n",
                       seed=SORTER)
    hangs = write_task(tmp_path / "hangs", "def evaluate(run, split):\n    while True:\n        pass\n",
                       seed=SORTER, toml="evaluation_time_limit = 1\n")
    for folder in (exits, hangs):
        proc = run_on(folder, sessions_dir, SORTER, iterations=0, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["seed_meta_utility"] == 0.0


PRINTS = ("import os\n\n\ndef evaluate(run, split):\n    print('evaluate says hello')\n"
          "    out = run([3, 1, 2], time_limit=1.0)\n    print('value', out.value)\n"
          "    return float(out.value == [1, 2, 3]), out.error\n")
NOISY = ("import os\nimport sys\nprint('candidate top level')\n\n\ndef algorithm(xs):\n"
         "    print('candidate says hi')\n    os.write(1, b'raw fd 1\\n')\n    sys.stdout.flush()\n"
         "    return sorted(xs)\n")


def test_what_evaluate_and_the_candidate_print_never_reaches_the_json(tmp_path):
    folder = write_task(tmp_path / "prints", PRINTS, seed=SORTER)
    solution = tmp_path / "noisy.py"
    solution.write_text(NOISY)
    proc = stop_tui("score", "--task", str(folder), "--json", str(solution))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)  # the whole of stdout is the JSON line
    assert result["score"] == 1.0 and result["error"] is None
    assert "evaluate says hello" in proc.stderr and "value [1, 2, 3]" in proc.stderr
    assert "candidate" not in proc.stdout + proc.stderr and "raw fd" not in proc.stdout + proc.stderr


def test_run_json_parses_with_a_printing_evaluate(tmp_path, sessions_dir):
    folder = write_task(tmp_path / "prints", PRINTS, seed=SORTER)
    proc = run_on(folder, sessions_dir, NOISY, iterations=1)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["iterations_completed"] == 1 and "evaluate says hello" in proc.stderr
